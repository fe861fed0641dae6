"""View recipes (augmentations) for the methods: per image (:mod:`.views`) and on whole
batches on the training device (:mod:`.batched`, :mod:`.multicrop`)."""

from simsiam.augment.batched import BatchedSimSiamAugment, BatchedViewAugment
from simsiam.augment.multicrop import BatchedMultiCrop, small_crop_size
from simsiam.augment.recipes import RECIPES, recipe_values, resolve_views
from simsiam.augment.views import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SimSiamAugment,
    ViewAugment,
    ViewParams,
    eval_transform,
    normalization,
)

__all__ = ["BatchedMultiCrop", "BatchedSimSiamAugment", "BatchedViewAugment", "CIFAR10_MEAN",
           "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "RECIPES", "SimSiamAugment",
           "ViewAugment", "ViewParams", "eval_transform", "normalization", "recipe_values",
           "resolve_views", "small_crop_size"]
