"""The optimizer factory, now :mod:`simsiam.optim.factory` (re-exported here)."""

from simsiam.optim.factory import OPTIMIZERS, build_optimizer

__all__ = ["OPTIMIZERS", "build_optimizer"]
