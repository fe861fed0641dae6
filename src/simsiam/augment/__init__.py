"""View recipes (augmentations) for the methods."""

from simsiam.augment.views import SimSiamAugment, ViewParams, eval_transform, normalization

__all__ = ["SimSiamAugment", "ViewParams", "eval_transform", "normalization"]
