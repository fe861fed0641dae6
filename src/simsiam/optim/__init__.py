"""Optimization: the ``optim.*`` config section (:mod:`.config`, torch-free), the optimizer
factory (:mod:`.factory`), the learning-rate schedule (:mod:`.schedule`) and the
global-batch plan (:mod:`.plan`: steps per epoch and the peak lr over the processes).

Public names are imported on first use (PEP 562), so that ``simsiam.optim.config`` loads
without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OptimConfig": "config", "OPTIMIZERS": "factory", "build_optimizer": "factory",
    "LrSchedule": "schedule", "cosine_lr": "schedule", "predictor_lr": "schedule",
    "scaled_lr": "schedule", "BatchPlan": "plan", "LR_SCALINGS": "plan",
    "batch_plan": "plan", "check_global_batch": "plan", "peak_lr": "plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'simsiam.optim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"simsiam.optim.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
