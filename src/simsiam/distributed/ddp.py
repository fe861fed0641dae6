"""DistributedDataParallel around a method, the way the trainer uses it."""

from __future__ import annotations

import torch

from simsiam.distributed.context import DistContext


def wrap_ddp(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over the processes).

    Weights and buffers are broadcast from rank 0 once, not at every step: SyncBatchNorm's
    running statistics, the MoCo queue and the EMA targets are computed identically on
    every process.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False,
                                   gradient_as_bucket_view=True)
