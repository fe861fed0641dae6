"""The normalisation statistics of the views (torch-free): ``augment.normalize`` as numbers.

Sources: CIFAR-10's per-channel mean and std of the training images (as the SimSiam CIFAR
demo and torchvision's references use), ImageNet's of torchvision's models.
"""

from __future__ import annotations

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "normalization",
           "resolved_normalize"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization(name: str, image_size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel for ``name`` in auto|cifar10|imagenet.

    ``auto`` gives the CIFAR-10 statistics for views of 32 px or less, else ImageNet's.
    """
    if name == "cifar10" or (name == "auto" and image_size <= 32):
        return CIFAR10_MEAN, CIFAR10_STD
    return IMAGENET_MEAN, IMAGENET_STD


def resolved_normalize(normalize: str, image_size: int) -> str:
    """``augment.normalize`` with "auto" resolved as the views do (:func:`normalization`):
    "cifar10" for ``image_size`` <= 32 px, else "imagenet"; "cifar10" and "imagenet" as
    they are."""
    return "cifar10" if normalization(normalize, image_size)[0] == CIFAR10_MEAN else "imagenet"
