"""The weights file formats, written atomically and loaded safely: a training checkpoint
(``torch.save`` of a dict, :data:`FORMAT`) and an exported backbone (safetensors).

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed
over the final name (``os.replace`` is atomic on POSIX; :func:`simsiam.fileio.atomic_write`),
so a crash mid-write leaves the previous file intact. Loading uses
``torch.load(weights_only=True)``, which refuses pickles that would run code, or
safetensors. The run's checkpointing (what goes in, when, the export) is
:class:`simsiam.train.checkpoint.Checkpointer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from simsiam.errors import CheckpointError
from simsiam.fileio import atomic_write

__all__ = ["FORMAT", "load_backbone_file", "load_checkpoint", "save_backbone",
           "save_checkpoint",
           "write_checkpoint"]


def write_checkpoint(state: dict[str, Any], file: str | Path) -> None:
    """Write the checkpoint format (``torch.save`` of a dict of tensors and plain Python
    values) to ``file`` as it is: the writer :func:`save_checkpoint` makes atomic."""
    torch.save(state, file)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    atomic_write(path, lambda tmp: write_checkpoint(state, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, or a file that is not a safe checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"'{path}' is not a checkpoint that loads safely ({type(exc).__name__}). simsiam "
            "loads only tensors and plain values (torch.load with weights_only=True) and never "
            "runs code from a file; pass a RUN/checkpoints/last.pt or a .safetensors backbone"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a dict")
    return obj


def save_backbone(state_dict: dict[str, torch.Tensor], path: str | Path,
                  metadata: dict[str, str]) -> None:
    """Atomically write a backbone state dict (torchvision key names) as safetensors."""
    atomic_write(path, lambda tmp: save_file(state_dict, str(tmp), metadata=metadata))


def load_backbone_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read an exported ``backbone.safetensors``: (state dict, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file '{path}': {exc}") from exc


# The checkpoint layout this version writes. 1: simsiam 0.1 (the same fields, no
# "format" key); 2: adds "format" and optimizer groups carry the method's flags.
FORMAT = 2
