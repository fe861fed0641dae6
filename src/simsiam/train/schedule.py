"""The learning-rate schedule, now :mod:`simsiam.optim.schedule` (re-exported here)."""

from simsiam.optim.schedule import LrSchedule, cosine_lr, predictor_lr, scaled_lr

__all__ = ["LrSchedule", "cosine_lr", "predictor_lr", "scaled_lr"]
