"""How this process was launched, read from the environment only (no torch): whether it
prints results (rank 0 of a torchrun launch, or a single process), how to start the
command again (:mod:`simsiam.distributed.context` re-exports both) and the command that
continues a run (:func:`resume_command`, every "continue with" line prints it)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

__all__ = ["launched_as_main", "launcher", "resume_command"]


def launched_as_main() -> bool:
    """Rank 0 of a torchrun launch (its ``RANK`` variable), or a single process: the one
    that prints results. Readable before and after the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def launcher() -> str:
    """How to start this command again: ``simsiam``, or under torchrun
    ``torchrun --nproc_per_node=N -m simsiam`` (with a note for several nodes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return "simsiam"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = "" if local == world else " (on every node, with the same rendezvous options)"
    return f"torchrun --nproc_per_node={local}{nodes} -m simsiam"


def resume_command(out: str | Path, command: str = "pretrain", extra: Sequence[str] = ()) -> str:
    """The command that continues the run in ``out``: ``LAUNCHER COMMAND --config
    OUT/config.yaml --out OUT [EXTRA...] --resume`` (LAUNCHER: :func:`launcher`), every
    argument quoted with :func:`shlex.quote`, so the line pastes into a POSIX shell as it
    is, with spaces or quotes in the paths (``shlex.split`` of it gives the paths back).

    Example: ``simsiam pretrain --config 'my runs/a/config.yaml' --out 'my runs/a' --resume``.
    """
    out = Path(out)
    args = ["--config", str(out / "config.yaml"), "--out", str(out), *extra, "--resume"]
    return f"{launcher()} {command} {shlex.join(args)}"
