"""Collapse metric of the paper's Figure 2.

Source: SIMSIAM.md section 4; paper section 4.1: l2-normalise each output z, take the
standard deviation over the batch for each channel, average over channels. A healthy
encoder stays near 1/sqrt(d) (0.0221 for d = 2048); a collapsed one is near 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def collapse_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the per-channel std over the batch of l2-normalised ``z``.

    Args:
        z: ``(B, d)`` with B >= 2, any float dtype (computed in float32).

    Returns:
        A 0-dim float32 tensor on z's device (no host sync; call ``.item()`` to log);
        compare with :func:`healthy_std` (1/sqrt(d)).

    Raises:
        ValueError: fewer than two rows or not a 2-D tensor.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"collapse_std needs a (B, d) tensor with B >= 2, got {tuple(z.shape)}")
    zn = F.normalize(z.detach().float(), dim=1)
    return zn.std(dim=0).mean()


def healthy_std(dim: int) -> float:
    """1/sqrt(d): the collapse metric of d-dimensional unit vectors spread isotropically."""
    return 1.0 / math.sqrt(dim)
