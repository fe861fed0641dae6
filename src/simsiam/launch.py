"""How this process was launched, read from the environment only (no torch): whether it
prints results (rank 0 of a torchrun launch, or a single process) and how to start the
command again. :mod:`simsiam.distributed.context` re-exports both."""

from __future__ import annotations

import os

__all__ = ["launched_as_main", "launcher"]


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
