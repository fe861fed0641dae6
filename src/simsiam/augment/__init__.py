"""View recipes (augmentations) for the methods: per image (:mod:`.views`) and on whole
batches on the training device (:mod:`.batched`, :mod:`.multicrop`); the ``augment.*``
config section (:mod:`.config`), the recipes' values (:mod:`.recipes`) and the
normalisation statistics (:mod:`.stats`), those three torch-free.

Public names are imported on first use (PEP 562), so that the config schema can import
:mod:`.config` without torch.
"""

from __future__ import annotations

from simsiam.lazy import LazyExports

_EXPORTS = {
    "AugmentConfig": "config",
    "BatchedSimSiamAugment": "batched", "BatchedViewAugment": "batched",
    "BatchedMultiCrop": "multicrop", "small_crop_size": "multicrop",
    "RECIPES": "recipes", "recipe_values": "recipes", "resolve_views": "recipes",
    "CIFAR10_MEAN": "stats", "CIFAR10_STD": "stats", "IMAGENET_MEAN": "stats",
    "IMAGENET_STD": "stats", "normalization": "stats", "resolved_normalize": "stats",
    "SimSiamAugment": "views", "ViewAugment": "views", "ViewParams": "views",
    "eval_transform": "views",
}

__all__ = sorted(_EXPORTS)

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names
