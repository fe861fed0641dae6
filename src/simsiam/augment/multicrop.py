"""Multi-crop views (SwAV): a few large crops and several small, low-coverage crops.

Source: SIMSIAM.md section 6 (SwAV: "multi-crop (2x224 + 6x96)") and Caron et al.,
"Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (NeurIPS
2020), section 3.2: the large crops cover area fractions in (0.14, 1) of the image, the
small ones (0.05, 0.14); every crop gets the same colour, grayscale, blur and flip
recipe (the run's, :mod:`simsiam.augment.recipes`; SwAV's own by default). The second large
crop takes the recipe's second-view values, every other crop the first view's. Codes are
computed on the large crops only and predicted from all crops.

Every view is made by :class:`~simsiam.augment.batched.BatchedViewAugment` on the
whole batch (per-sample parameters, one batched resample), so the small crops cost one
extra pass each at their own (small) size.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from simsiam.augment.batched import BatchedViewAugment, CropSpec
from simsiam.augment.config import AugmentConfig


def small_crop_size(image_size: int, small_size: int | None) -> int:
    """Side of the small crops: ``small_size``, or SwAV's ratio 96/224 of the large side.

    >>> small_crop_size(224, None), small_crop_size(32, None), small_crop_size(32, 16)
    (96, 14, 16)
    """
    return small_size if small_size is not None else max(1, round(image_size * 96 / 224))


class BatchedMultiCrop:
    """``large`` views at ``image_size`` and ``small`` views at ``small_size`` per image.

    Args:
        cfg: the view recipe; the large crops use ``cfg.crop_scale``, the small ones
            ``cfg.small_crop_scale``; ``cfg.small_crops`` is the number of small views.
        image_size: side of the large views, pixels.
        large: number of large views (2 in SwAV).
        compile: as in :class:`BatchedViewAugment`.

    ``views(images, g)`` takes uint8 ``(B, 3, H, W)`` images and a generator on their
    device and returns a list: ``large`` float32 tensors ``(B, 3, image_size, image_size)``
    followed by ``cfg.small_crops`` tensors ``(B, 3, s, s)``, s from
    :func:`small_crop_size`, all normalised, every view with its own random parameters.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, large: int = 2,
                 compile: bool = False) -> None:
        if large < 1:
            raise ValueError(f"BatchedMultiCrop needs at least one large crop, got {large}")
        self.large, self.small = large, cfg.small_crops
        self.small_size = small_crop_size(image_size, cfg.small_size)
        self.large_aug = BatchedViewAugment(cfg, image_size, compile=compile)
        # The small crops: the recipe resolved at the large size (blur follows the large
        # view size), with their own area range and size, and the large views'
        # normalisation.
        small_cfg = replace(self.large_aug.cfg, crop_scale=list(cfg.small_crop_scale))
        self.small_aug = BatchedViewAugment(small_cfg, self.small_size, compile=compile)
        self.small_aug.mean, self.small_aug.std = self.large_aug.mean, self.large_aug.std

    @property
    def num_views(self) -> int:
        """Views per image: large + small."""
        return self.large + self.small

    def views(self, images: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """The large views, then the small ones (see the class docstring)."""
        return ([self.large_aug(images, g, i) for i in range(self.large)]
                + [self.small_aug(images, g, 0) for _ in range(self.small)])

    def crop_specs(self) -> list[CropSpec]:
        """The crop of each view: the large ones, then the small ones."""
        return (self.large_aug.crop_specs()[:1] * self.large
                + self.small_aug.crop_specs()[:1] * self.small)

    def views_from_crops(self, crops: list[torch.Tensor], g: torch.Generator
                         ) -> list[torch.Tensor]:
        """:meth:`views` of crops cut elsewhere (uint8, one per :meth:`crop_specs`), drawn
        from ``g`` in the same order."""
        return ([self.large_aug.finish_crops(c, g, i) for i, c in enumerate(crops[:self.large])]
                + [self.small_aug.finish_crops(c, g, 0) for c in crops[self.large:]])
