"""A method's view recipe, one image at a time, with explicit random parameters.

The recipe's values come from :mod:`simsiam.augment.recipes` (SimSiam's, SIMSIAM.md
section 3: RandomResizedCrop(scale=(0.2, 1)), ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8,
grayscale p=0.2, Gaussian blur sigma in [0.1, 2] with p=0.5, horizontal flip p=0.5, and
Appendix D: no blur at 32 px; the other methods' as their authors ran them, with BYOL's
solarize and per-view blur). The operations, in order: crop, colour jitter, grayscale,
blur, solarize (invert values >= 0.5, BYOL), flip, normalisation. Random parameters are
drawn from a ``torch.Generator`` the caller owns, using
the same sampling rules as torchvision's ``RandomResizedCrop.get_params`` and
``ColorJitter.get_params`` (random order of the four jitter operations); the pixel
operations are torchvision's functional kernels. Two views of one image are two
independent draws, and a seeded generator reproduces them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

from simsiam.augment.config import AugmentConfig
from simsiam.augment.recipes import resolve_views
from simsiam.augment.stats import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalization,
    resolved_normalize,
)

# the statistics (simsiam.augment.stats) are re-exported here, where they were first
__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "SOLARIZE_THRESHOLD",
           "SimSiamAugment", "ViewAugment", "ViewParams", "blur_probability", "eval_transform",
           "normalization", "resolved_normalize", "sample_crop", "view_probabilities",
           "view_probability"]

SOLARIZE_THRESHOLD = 0.5  # BYOL: values >= 0.5 become 1 - value


def blur_probability(cfg: AugmentConfig, image_size: int, view: int = 0) -> float:
    """The blur probability of ``view`` (0 or 1): ``cfg``'s, or its recipe's when null
    (SimSiam: 0.5 above 32 px, 0 at 32 px or less, App. D)."""
    r = resolve_views(cfg, image_size)
    return r.view2_blur_prob if view == 1 else r.blur_prob


def view_probabilities(cfg: AugmentConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((blur view 1, blur view 2), (solarize view 1, solarize view 2))`` of a resolved
    ``cfg`` (:func:`~simsiam.augment.recipes.resolve_views`)."""
    return ((cfg.blur_prob, cfg.view2_blur_prob),  # type: ignore[return-value]
            (cfg.solarize_prob, cfg.view2_solarize_prob))


def view_probability(pair: tuple[float, float], view: int) -> float:
    """The value of ``pair`` for view ``view``: the second view (index 1) takes ``pair[1]``,
    every other view ``pair[0]``."""
    return pair[1] if view == 1 else pair[0]


@dataclass
class ViewParams:
    """Random parameters of one view. Crop box in pixels (top, left, height, width)."""

    top: int
    left: int
    height: int
    width: int
    jitter: bool
    order: list[int]  # permutation of 0..3: brightness, contrast, saturation, hue
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale: bool
    blur_sigma: float | None
    flip: bool
    solarize: bool = False


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=g))


def sample_crop(g: torch.Generator, height: int, width: int, scale: tuple[float, float],
                ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """A RandomResizedCrop box (top, left, h, w), by torchvision's get_params algorithm.

    Up to 10 draws of area fraction in ``scale`` and log-uniform aspect ratio in ``ratio``;
    if none fits, a central crop with the ratio clamped into range.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ViewAugment:
    """Draws and applies a view recipe to one image.

    Args:
        cfg: augmentation strengths and probabilities; null values are the recipe's
            (``cfg.recipe``, SimSiam's for ``auto``; see :mod:`simsiam.augment.recipes`).
        image_size: side of the output views, pixels.

    Call ``augment(img, g, view)`` with ``img`` a ``(3, H, W)`` uint8 tensor, a generator
    and the view's index (0 or 1: the per-view blur and solarize probabilities); it returns
    a normalised ``(3, image_size, image_size)`` float32 view.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int) -> None:
        self.cfg = resolve_views(cfg, image_size)
        self.size = image_size
        self.blur_probs, self.solarize_probs = view_probabilities(self.cfg)
        self.mean, self.std = normalization(cfg.normalize, image_size)

    @property
    def blur_prob(self) -> float:
        """View 1's blur probability."""
        return self.blur_probs[0]

    def sample(self, g: torch.Generator, height: int, width: int, view: int = 0) -> ViewParams:
        """Draw the parameters of view ``view`` of an ``height`` x ``width`` image (the
        solarize draw is made only when the view can be solarized, so recipes without it
        draw exactly SimSiam's stream)."""
        c = self.cfg
        top, left, h, w = sample_crop(g, height, width, tuple(c.crop_scale), tuple(c.crop_ratio))
        jitter = _uniform(g, 0, 1) < c.jitter_prob
        order = torch.randperm(4, generator=g).tolist()
        b = _uniform(g, max(0.0, 1 - c.brightness), 1 + c.brightness)
        ct = _uniform(g, max(0.0, 1 - c.contrast), 1 + c.contrast)
        s = _uniform(g, max(0.0, 1 - c.saturation), 1 + c.saturation)
        hue = _uniform(g, -c.hue, c.hue)
        gray = _uniform(g, 0, 1) < c.grayscale_prob
        blur = _uniform(g, 0, 1) < view_probability(self.blur_probs, view)
        sigma = _uniform(g, c.blur_sigma[0], c.blur_sigma[1])
        flip = _uniform(g, 0, 1) < c.flip_prob
        p_sol = view_probability(self.solarize_probs, view)
        solarize = p_sol > 0 and _uniform(g, 0, 1) < p_sol
        return ViewParams(top, left, h, w, jitter, order, b, ct, s, hue, gray,
                          sigma if blur else None, flip, solarize)

    def apply(self, img: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Apply ``p`` to a ``(3, H, W)`` uint8 image; returns normalised float32."""
        x = TF.resized_crop(img, p.top, p.left, p.height, p.width, [self.size, self.size],
                            antialias=True)
        x = TF.to_dtype(x, torch.float32, scale=True)
        if p.jitter:
            for op in p.order:
                if op == 0:
                    x = TF.adjust_brightness(x, p.brightness)
                elif op == 1:
                    x = TF.adjust_contrast(x, p.contrast)
                elif op == 2:
                    x = TF.adjust_saturation(x, p.saturation)
                else:
                    x = TF.adjust_hue(x, p.hue)
        if p.grayscale:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if p.blur_sigma is not None:
            k = 2 * math.ceil(3 * p.blur_sigma) + 1
            x = TF.gaussian_blur(x, [k, k], [p.blur_sigma, p.blur_sigma])
        if p.solarize:
            x = TF.solarize(x, SOLARIZE_THRESHOLD)
        if p.flip:
            x = TF.horizontal_flip(x)
        return TF.normalize(x, self.mean, self.std)

    def __call__(self, img: torch.Tensor, g: torch.Generator, view: int = 0) -> torch.Tensor:
        return self.apply(img, self.sample(g, img.shape[-2], img.shape[-1], view))


SimSiamAugment = ViewAugment  # the name before every method had its own recipe


def eval_transform(images: torch.Tensor, image_size: int, normalize: str) -> torch.Tensor:
    """Evaluation view of a uint8 batch ``(B, H, W, 3)`` -> float32 ``(B, 3, S, S)``.

    Images already ``image_size`` square pass unchanged; others are resized (shorter side
    to image_size x 8/7, the usual 256/224) and centre-cropped, then normalised.
    """
    x = images.permute(0, 3, 1, 2)
    if x.shape[-2:] != (image_size, image_size):
        x = TF.resize(x, [round(image_size * 8 / 7)], antialias=True)
        x = TF.center_crop(x, [image_size, image_size])
    x = TF.to_dtype(x, torch.float32, scale=True)
    mean, std = normalization(normalize, image_size)
    return TF.normalize(x, mean, std)
