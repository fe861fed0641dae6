"""Optimization: the ``optim.*`` config section (:mod:`.config`, torch-free), the optimizer
factory (:mod:`.factory`), the learning-rate schedule (:mod:`.schedule`) and the
global-batch plan (:mod:`.plan`: steps per epoch and the peak lr over the processes).

Public names are imported on first use (PEP 562), so that ``simsiam.optim.config`` loads
without torch.
"""

from __future__ import annotations

from simsiam.lazy import LazyExports

_EXPORTS = {
    "OptimConfig": "config", "OPTIMIZERS": "factory", "build_optimizer": "factory",
    "LrSchedule": "schedule", "cosine_lr": "schedule", "predictor_lr": "schedule",
    "scaled_lr": "schedule", "BatchPlan": "plan", "LR_SCALINGS": "plan",
    "batch_plan": "plan", "check_global_batch": "plan", "peak_lr": "plan",
}

__all__ = sorted(_EXPORTS)

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names
