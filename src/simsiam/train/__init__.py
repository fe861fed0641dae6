"""Training: schedule, checkpoints, metrics and the pretraining loop."""

from simsiam.train.schedule import cosine_lr, scaled_lr

__all__ = ["cosine_lr", "scaled_lr"]
