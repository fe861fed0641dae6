"""The global-batch plan, now :mod:`simsiam.optim.plan` (re-exported here)."""

from simsiam.optim.plan import LR_SCALINGS, BatchPlan, batch_plan, check_global_batch, peak_lr

__all__ = ["BatchPlan", "LR_SCALINGS", "batch_plan", "check_global_batch", "peak_lr"]
