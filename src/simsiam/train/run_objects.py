"""What the training loop works with: :class:`Run`, built once by the trainer's ``_build``
(:mod:`simsiam.train.trainer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from simsiam.config import Config
from simsiam.distributed import DistContext
from simsiam.eval.collapse import CollapseGuard
from simsiam.eval.monitor import Monitor
from simsiam.eval.probe import OnlineProbe
from simsiam.methods import Method
from simsiam.optim.plan import BatchPlan
from simsiam.optim.schedule import LrSchedule
from simsiam.train.checkpoint import Checkpointer
from simsiam.train.guards import NonFiniteGuard
from simsiam.train.interrupt import StopSignals
from simsiam.train.logger import MetricsLogger, NullLogger

__all__ = ["Run"]


@dataclass
class Run:
    """Everything the loop works with (built once by the trainer)."""

    cfg: Config
    ctx: DistContext
    plan: BatchPlan
    model: Method  # the method itself (evaluation, export, checkpoints)
    step_model: torch.nn.Module  # what the step calls: DDP and/or torch.compile around it
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    loader: Any  # batches of the method's data source, with .sampler
    probe: OnlineProbe | None
    monitor: Monitor
    checkpointer: Checkpointer
    logger: MetricsLogger | NullLogger
    nonfinite: NonFiniteGuard
    collapse: CollapseGuard
    rank_healthy: float  # effective rank of an isotropic batch of the rows logged
    signals: StopSignals
    bf16: bool
    memory_format: torch.memory_format
    progress: bool

    def stop_requested(self) -> bool:
        """Whether a stop signal reached any process (a collective: all ask together)."""
        return self.ctx.any_flag(self.signals.signum is not None)
