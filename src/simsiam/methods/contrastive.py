"""Losses of the comparison systems: SimCLR, MoCo v2, BYOL and SwAV.

Source: SIMSIAM.md section 6 and the papers it names: Chen et al. 2020 (SimCLR, section 2.1,
the NT-Xent loss), He et al. 2020 / Chen et al. 2020 (MoCo, eq. 1, and MoCo v2), Grill et
al. 2020 (BYOL, eq. 2), Caron et al. 2020 (SwAV, section 3.1, eq. 3 and the Sinkhorn-Knopp
algorithm of Appendix A.1). Written from the formulas, not from any reference code.

Every loss is computed in float32 with autocast switched off inside, as
:func:`simsiam.methods.losses.negative_cosine` is, so a bfloat16 forward pass changes the
inputs' precision, never the loss arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from simsiam.distributed.ops import all_reduce_sum, global_logsumexp, world_size


def check_two_views(method: str, views: list[torch.Tensor]) -> None:
    """Raise ValueError unless ``views`` holds exactly two tensors."""
    if len(views) != 2:
        raise ValueError(f"{method} takes exactly 2 views, got {len(views)}; set "
                         "augment.small_crops=0 (only SwAV takes multi-crop views)")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
            gathered: tuple[torch.Tensor, torch.Tensor] | None = None,
            offset: int = 0) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2N views of a batch, mean over the 2N anchors, float32.

    Each row of ``z1`` and ``z2`` is an anchor; its positive is its partner (the same
    image's other view) and every other view of the candidate set, except itself, is a
    negative. With ``u`` the l2-normalised views and ``s(a, b) = u_a . u_b / T``::

        l(a) = -s(a, pos(a)) + log sum_{b != a} exp(s(a, b))

    Args:
        z1, z2: the projections of the two views, ``(N, d)``, any float dtype, with graph.
        temperature: T > 0 (0.5 on CIFAR, 0.1 at large batch on ImageNet).
        gathered: for data parallelism, the views of all workers ``(z1_all, z2_all)``, each
            ``(M, d)`` and holding this worker's rows at ``offset:offset + N`` (the caller
            gathers them and substitutes its own ``z1``/``z2`` there if the gradient must
            flow). The candidates are then all 2M views; the anchors stay the local 2N.
            ``None``: the candidates are ``z1`` and ``z2`` themselves (M = N, offset 0).
        offset: this worker's first row in ``gathered``.

    Returns:
        A float32 scalar: the mean of ``l(a)`` over the local 2N anchors. With the
        gathered set, the mean of every worker's value is the single-device loss of the
        whole batch.

    Raises:
        ValueError: shapes that do not match, N < 1, T <= 0, or rows out of range.
    """
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 1:
        raise ValueError(f"nt_xent needs z1 and z2 of one shape (N, d) with N >= 1, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent needs a temperature > 0, got {temperature}")
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        anchors = F.normalize(torch.cat([z1.float(), z2.float()]), dim=1)  # (2N, d)
        if gathered is None:
            m, candidates = n, anchors
        else:
            a_all, b_all = gathered
            m = a_all.shape[0]
            if b_all.shape != a_all.shape or a_all.shape[1:] != z1.shape[1:] \
                    or not 0 <= offset <= m - n:
                raise ValueError(f"nt_xent: gathered views {tuple(a_all.shape)} and "
                                 f"{tuple(b_all.shape)} cannot hold the local {tuple(z1.shape)} "
                                 f"at offset {offset}")
            candidates = F.normalize(torch.cat([a_all.float(), b_all.float()]), dim=1)
        logits = anchors @ candidates.T / temperature  # (2N, 2M)
        local = torch.arange(n, device=z1.device)
        self_idx = torch.cat([offset + local, m + offset + local])  # each anchor in candidates
        pos_idx = torch.cat([m + offset + local, offset + local])  # its partner
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[torch.arange(2 * n, device=z1.device), self_idx] = True
        return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), pos_idx)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
             temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE: logits ``[q.k, q.queue^T] / T``, the positive at index 0, float32.

    Args:
        q: queries ``(B, d)`` from the query encoder, with graph; l2-normalised here.
        k: keys ``(B, d)`` from the momentum encoder (computed under no_grad by the caller);
            l2-normalised here.
        queue: negatives ``(L, d)``, used as they are (the queue stores normalised keys).
        temperature: T > 0 (0.2 in MoCo v2).

    Returns:
        A float32 scalar: mean over the B queries of ``-log softmax(logits)[0]``.

    Raises:
        ValueError: shapes that do not match, or T <= 0.
    """
    if q.dim() != 2 or q.shape != k.shape or queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce needs q, k of shape (B, d) and a queue (L, d), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)} and {tuple(queue.shape)}")
    if temperature <= 0:
        raise ValueError(f"info_nce needs a temperature > 0, got {temperature}")
    with torch.autocast(device_type=q.device.type, enabled=False):
        qn = F.normalize(q.float(), dim=1)
        kn = F.normalize(k.float(), dim=1)
        pos = (qn * kn).sum(dim=1, keepdim=True)  # (B, 1)
        neg = qn @ queue.float().T  # (B, L)
        logits = torch.cat([pos, neg], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)


def byol_loss(p: torch.Tensor, z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """BYOL's ``2 - 2 cos(p, z)``, mean over the batch, float32 scalar in [0, 4].

    Equal to the squared distance of the l2-normalised vectors (BYOL eq. 2).

    Args:
        p: online predictions ``(B, d)``, with graph.
        z: target projections ``(B, d)``, already detached by the caller.
        eps: lower bound on each norm (an all-zero row gives cosine 0, not NaN).
    """
    with torch.autocast(device_type=p.device.type, enabled=False):
        p32, z32 = p.float(), z.float()
        p32 = p32 / p32.norm(dim=-1, keepdim=True).clamp_min(eps)
        z32 = z32 / z32.norm(dim=-1, keepdim=True).clamp_min(eps)
        return (2 - 2 * (p32 * z32).sum(dim=-1)).mean()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
             distributed: bool = False) -> torch.Tensor:
    """SwAV's soft codes by Sinkhorn-Knopp (SwAV section 3.1 and Appendix A.1), no gradient.

    Starts from ``exp(scores / epsilon)`` (held as its logarithm, so no entry underflows
    to 0 at a small epsilon) and alternately rescales it so each prototype
    (column) holds mass 1/K and each sample (row) mass 1/B, ``iterations`` times, then
    multiplies by B. The last rescaling is over rows, so every row of the result sums to 1
    exactly (up to rounding) after any number of iterations; the columns sum to B/K only
    as the iteration converges (3 iterations in SwAV, already close).

    Args:
        scores: ``(B, K)`` prototype scores (cosines of normalised z and prototypes), any
            float dtype; computed in float32 with autocast off.
        epsilon: the entropy weight (0.05 in SwAV); smaller gives sharper codes.
        iterations: rounds of (column, row) rescaling, >= 1.
        distributed: the batch is split over the processes of a data-parallel run; the
            sums over samples (and B) then run over the global batch, as in SwAV's
            distributed Sinkhorn, so each process gets its rows of the global codes.

    Returns:
        Codes Q ``(B, K)``, float32, non-negative, rows summing to 1, no graph.

    Raises:
        ValueError: not a 2-D tensor, epsilon <= 0 or iterations < 1.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn needs (B, K) scores, got {tuple(scores.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn needs epsilon > 0 and iterations >= 1, got "
                         f"epsilon={epsilon} iterations={iterations}")
    b, k = scores.shape
    lse = global_logsumexp if distributed and world_size() > 1 else torch.logsumexp
    if distributed and world_size() > 1:  # the global number of rows (they may differ)
        b = int(all_reduce_sum(torch.tensor([b], device=scores.device)).item())
    with torch.autocast(device_type=scores.device.type, enabled=False):
        # In log space, so a small epsilon cannot underflow a whole column to 0 (NaN).
        log_q = scores.float() / epsilon
        log_q = log_q - lse(log_q.flatten(), dim=0)  # total mass 1
        log_k, log_b = math.log(k), math.log(b)
        for _ in range(iterations):
            log_q = log_q - lse(log_q, dim=0, keepdim=True) - log_k  # prototype: 1/K
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_b  # sample: 1/B
        return torch.exp(log_q + log_b)


def swav_loss(scores_per_view: Sequence[torch.Tensor],
              codes_per_large_view: Sequence[torch.Tensor],
              temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction over all views (SwAV eq. 3 with multi-crop), float32.

    View ``i`` (``i < len(codes_per_large_view)``, the large views come first) has codes
    ``q_i``; every other view ``j`` predicts them::

        l(i, j) = -mean_b sum_k q_i[b, k] log softmax(s_j[b] / T)[k]
        loss    = mean_i [ sum_{j != i} l(i, j) / (V - 1) ]

    with V the number of views, as in the SwAV paper's multi-crop loss (each code's
    prediction averaged over the V - 1 other views, then averaged over the coded views).

    Args:
        scores_per_view: V tensors ``(B, K)``: scores of every view (large, then small)
            against the normalised prototypes, with graph.
        codes_per_large_view: the codes of the first views, ``(B, K)`` each, no graph
            (from :func:`sinkhorn`).
        temperature: T > 0 (0.1 in SwAV).

    Returns:
        A float32 scalar.

    Raises:
        ValueError: fewer than 2 views, no codes, more codes than views, mismatched
            shapes, or T <= 0.
    """
    v, n_codes = len(scores_per_view), len(codes_per_large_view)
    if v < 2 or not 1 <= n_codes <= v:
        raise ValueError(f"swav_loss needs at least 2 views and 1..{max(v, 1)} coded views, got "
                         f"{v} views and {n_codes} codes")
    if temperature <= 0:
        raise ValueError(f"swav_loss needs a temperature > 0, got {temperature}")
    shape = scores_per_view[0].shape
    if any(s.shape != shape for s in scores_per_view) or \
            any(c.shape != shape for c in codes_per_large_view):
        raise ValueError(f"swav_loss needs every score and code tensor of one shape (B, K), got "
                         f"{[tuple(s.shape) for s in scores_per_view]} and "
                         f"{[tuple(c.shape) for c in codes_per_large_view]}")
    device = scores_per_view[0].device
    with torch.autocast(device_type=device.type, enabled=False):
        log_p = [torch.log_softmax(s.float() / temperature, dim=1) for s in scores_per_view]
        total = torch.zeros((), dtype=torch.float32, device=device)
        for i, codes in enumerate(codes_per_large_view):
            q = codes.float()
            sub = sum(-(q * log_p[j]).sum(dim=1).mean() for j in range(v) if j != i)
            total = total + sub / (v - 1)
        return total / n_codes
