"""Collectives for losses and evaluation that need the whole global batch or dataset.

Every function here is the identity (or the local computation) when no process group
is initialised or the world size is 1, so methods and evaluation call them
unconditionally. Gathers assume every process holds the same number of rows, which
the distributed sampler guarantees for training batches; evaluation pads its shards to
equal length and drops the padding after gathering (:func:`shard_bounds`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from simsiam.distributed.context import rank, world_size


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather on dim 0; the gradient of this process's rows is the sum of every
    process's gradient for them (reduce-scatter), so each loss term that uses another
    process's rows sends its gradient back to the process that computed them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        w, r = dist.get_world_size(), dist.get_rank()
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = torch.empty_like(grad.chunk(w)[r])
            dist.reduce_scatter_tensor(out, grad)
            return out
        summed = grad.clone()  # gloo has no reduce-scatter: all-reduce, keep our rows
        dist.all_reduce(summed)
        return summed.chunk(w)[r].contiguous()


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over processes; the gradient is summed over processes too (the sum's adjoint)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every process, in rank order: ``(n, ...)`` -> ``(world * n, ...)``, with graph.

    This process's rows sit at ``rank * n``. Used by SimCLR's NT-Xent (negatives from the
    whole global batch, gradient through all of them, as in SimCLR section 2.2 / B.1).
    Every process must pass the same shape.
    """
    return _GatherWithGrad.apply(x) if world_size() > 1 else x


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """:func:`gather_with_grad` without a graph (MoCo's keys before enqueueing, features)."""
    return _all_gather(x) if world_size() > 1 else x


def all_reduce_sum(x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """Sum of ``x`` over processes (a new tensor; ``x`` is not modified).

    ``grad=True`` keeps the graph: the gradient of the sum is summed over processes, as
    SyncBatchNorm's statistics need.
    """
    if world_size() == 1:
        return x
    if grad:
        return _AllReduceWithGrad.apply(x)
    out = x.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out)
    return out


@torch.no_grad()
def global_logsumexp(x: torch.Tensor, dim: int | None = None, keepdim: bool = False
                     ) -> torch.Tensor:
    """``logsumexp`` of ``x`` over ``dim`` (``None``: all elements) and over every process's
    ``x``, no graph. Stable: the maximum is reduced first (SwAV's Sinkhorn on the global
    batch).
    """
    if dim is None:
        x, dim = x.flatten(), 0
    if world_size() == 1:
        return torch.logsumexp(x, dim=dim, keepdim=keepdim)
    m = x.amax(dim=dim, keepdim=True)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = (x - m).exp().sum(dim=dim, keepdim=True)
    dist.all_reduce(s)
    out = s.log() + m
    return out if keepdim else out.squeeze(dim)


def shard_bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """The contiguous rows ``[start, stop)`` of ``n`` that process ``rank_`` handles.

    Shards are ``ceil(n / world)`` long except the last ones (possibly empty), so
    gathering every shard padded to ``ceil(n / world)`` and keeping the first ``n`` rows
    restores the original order with each row exactly once.
    """
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    per = -(-n // world)
    return min(n, rank_ * per), min(n, (rank_ + 1) * per)


@torch.no_grad()
def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`shard_bounds`: every process's rows ``(stop - start, ...)`` ->
    all ``n`` rows in order, on every process. Pads to equal length for the collective
    and drops the padding, so each row appears exactly once.
    """
    w = world_size()
    if w == 1:
        return local
    per = -(-n // w)
    padded = local.new_zeros((per, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = gather_no_grad(padded)
    keep = []
    for r in range(w):
        start, stop = shard_bounds(n, r, w)
        keep.append(gathered[r * per: r * per + stop - start])
    return torch.cat(keep)
