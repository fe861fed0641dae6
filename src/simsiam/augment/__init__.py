"""View recipes (augmentations) for the methods: per image (:mod:`.views`) and on whole
batches on the training device (:mod:`.batched`, :mod:`.multicrop`)."""

from simsiam.augment.batched import BatchedSimSiamAugment
from simsiam.augment.multicrop import BatchedMultiCrop, small_crop_size
from simsiam.augment.views import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SimSiamAugment,
    ViewParams,
    eval_transform,
    normalization,
)

__all__ = ["BatchedMultiCrop", "BatchedSimSiamAugment", "CIFAR10_MEAN", "CIFAR10_STD",
           "IMAGENET_MEAN", "IMAGENET_STD", "SimSiamAugment", "ViewParams", "eval_transform",
           "normalization", "small_crop_size"]
