"""Data parallelism under ``torchrun``: process group, global-batch plan, collectives, SyncBN.

A run started by ``torchrun --nproc_per_node=N -m simsiam pretrain ...`` finds
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its environment, joins the process group
(NCCL on GPU, gloo on CPU), converts every BatchNorm to :class:`SyncBatchNorm` and
wraps the method in DistributedDataParallel. A plain ``simsiam pretrain`` creates no
process group and no SyncBatchNorm. See :mod:`simsiam.train.trainer` and the docs page
"Several GPUs and nodes" (docs/distributed.md).
"""

from simsiam.distributed.context import DistContext, rank, setup_distributed, world_size
from simsiam.distributed.ops import (
    all_reduce_sum,
    gather_no_grad,
    gather_shards,
    gather_with_grad,
    global_logsumexp,
    shard_bounds,
)
from simsiam.distributed.syncbn import SyncBatchNorm, convert_sync_batchnorm
from simsiam.optim.plan import BatchPlan, batch_plan, check_global_batch

__all__ = ["BatchPlan", "DistContext", "SyncBatchNorm", "all_reduce_sum", "batch_plan",
           "check_global_batch", "convert_sync_batchnorm", "gather_no_grad", "gather_shards",
           "gather_with_grad", "global_logsumexp", "rank", "setup_distributed",
           "shard_bounds", "world_size"]
