"""Collapse measures (torch only, the ground floor): the paper's std of Figure 2 and
the effective rank of RankMe.

- :func:`collapse_std` (SIMSIAM.md section 4; paper section 4.1): l2-normalise each output
  z, take the standard deviation over the batch for each channel, average over channels.
  A healthy encoder stays near 1/sqrt(d) (0.0221 for d = 2048); one collapsed to a
  constant is near 0. Blind spot: when z leaves an affine-free BatchNorm (SimSiam's
  default projector) every channel has zero mean and unit variance over the batch
  whatever the network does, so the std stays near 1/sqrt(d) even when z has collapsed to
  a few directions.
- :func:`effective_rank` (Garrido et al., "RankMe", ICML 2023, eq. 1): exp of the entropy
  of the normalised singular values of the embedding matrix: how many directions the
  batch really spans, whatever the scale of each channel. Compared with
  :func:`rank_reference`, the effective rank of an isotropic Gaussian matrix of the same
  shape.
"""

from __future__ import annotations

import functools
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


@torch.no_grad()
def effective_rank(z: torch.Tensor, max_rows: int | None = None,
                   eps: float = 1e-7) -> torch.Tensor:
    """RankMe's effective rank of the rows of ``z``: ``exp(-sum_k p_k log p_k)`` with
    ``p_k = sigma_k / sum_j sigma_j + eps`` over the singular values ``sigma`` (Garrido et
    al. 2023, eq. 1, with their eps = 1e-7).

    Args:
        z: ``(n, d)`` embeddings, any float dtype (computed in float32, no centering).
        max_rows: use only the first rows (bounds the cost: an SVD of ``(n, d)``).
        eps: added to every ``p_k``.

    Returns:
        A 0-dim float32 tensor on z's device (no host sync), between 1 and ``min(n, d)``
        (up to eps): 1 for a rank-1 matrix, k for k orthonormal columns.

    Raises:
        ValueError: not a 2-D tensor with at least one row.
    """
    if z.dim() != 2 or z.shape[0] < 1:
        raise ValueError(f"effective_rank needs a (n, d) tensor with n >= 1, got "
                         f"{tuple(z.shape)}")
    rows = z.detach()[:max_rows].float() if max_rows else z.detach().float()
    with torch.autocast(device_type=rows.device.type, enabled=False):
        s = torch.linalg.svdvals(rows)
        p = s / s.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
        return torch.exp(-(p * p.log()).sum())


@functools.lru_cache(maxsize=64)
def rank_reference(n: int, d: int, draws: int = 3) -> float:
    """The healthy reference of :func:`effective_rank` for an ``(n, d)`` batch: the mean
    effective rank of ``draws`` isotropic standard Gaussian ``(n, d)`` matrices (fixed
    seed, on the CPU; cached). Close to ``min(n, d)`` when n and d differ a lot
    (Marchenko-Pastur: the singular values spread as n and d approach each other), e.g.
    about 0.97 x 128 for a batch of 128 rows of d = 2048.

    Raises:
        ValueError: n or d below 1.
    """
    if n < 1 or d < 1:
        raise ValueError(f"rank_reference needs n, d >= 1, got n={n} d={d}")
    g = torch.Generator().manual_seed(0)
    ranks = [effective_rank(torch.randn(n, d, generator=g)).item()
             for _ in range(draws)]
    return sum(ranks) / draws


def healthy_std(dim: int) -> float:
    """1/sqrt(d): the collapse metric of d-dimensional unit vectors spread isotropically."""
    return 1.0 / math.sqrt(dim)


__all__ = ["collapse_std", "effective_rank", "healthy_std", "rank_reference"]
