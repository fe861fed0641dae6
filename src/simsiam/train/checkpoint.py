"""Checkpoints and the exported backbone, written atomically and loaded safely.

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed
over the final name (``os.replace`` is atomic on POSIX), so a crash mid-write leaves the
previous file intact. Loading uses ``torch.load(weights_only=True)``, which refuses
pickles that would run code, or safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from simsiam.errors import CheckpointError
from simsiam.fileio import atomic_write, remove_stale_temps

__all__ = ["atomic_write", "remove_stale_temps", "save_checkpoint", "load_checkpoint",
           "save_backbone", "load_backbone_file", "rng_state", "restore_rng_state"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain Python values."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random-generator states a checkpoint keeps: ``torch_rng`` (CPU) and, on a GPU,
    ``cuda_rng`` of ``device`` (rank 0's device under torchrun)."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Set the generators from :func:`rng_state`'s entries of ``state``. ``cuda_rng`` goes
    to ``device`` (older checkpoints hold a list, one state per GPU: its first is used, so
    a run resumes on any number of GPUs)."""
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        rng = state["cuda_rng"]
        torch.cuda.set_rng_state(rng[0] if isinstance(rng, (list, tuple)) else rng, device)


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
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors file '{path}': {exc}") from exc
