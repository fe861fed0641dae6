"""A method's view recipe on whole batches of tensors, on the GPU or the CPU.

Same recipes and sampling rules as :mod:`simsiam.augment.views` (the values from
:mod:`simsiam.augment.recipes`; SimSiam's, SIMSIAM.md section 3: RandomResizedCrop(scale=(0.2,
1)), ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8 in a random order per sample, grayscale
p=0.2, Gaussian blur sigma in [0.1, 2] with p=0.5 (none at 32 px, Appendix D), horizontal
flip p=0.5, normalisation; BYOL's adds solarize and a different blur rate per view), but
every random parameter is a tensor with one entry per sample, drawn in one call, and
every pixel operation runs once on the whole batch (the kernels:
:mod:`simsiam.augment.kernels`, re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simsiam.augment.config import AugmentConfig
from simsiam.augment.fused import ChunkedFinish
from simsiam.augment.kernels import (
    GRAY_WEIGHTS,
    JITTER_OPS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_selected,
    as_column,
    gaussian_blur,
    grayscale3,
    hflip,
    resample_weights,
    resized_crop,
    rgb_to_grayscale,
    sample_crops,
    solarize,
)
from simsiam.augment.recipes import resolve_views
from simsiam.augment.views import (
    normalization,
    view_probabilities,
    view_probability,
)

AUTO_COMPILE_SIDE = 128  # augment.compile auto: compiled CPU kernels from this view side up


def view_kernels(compile: bool | None, image_size: int, device: torch.device | str) -> str:
    """How the batched recipe's operations after the crop run on ``device``: "compiled"
    (``compile`` True, or None on a CPU with views of at least ``AUTO_COMPILE_SIDE`` px)
    or "eager". The rule of :meth:`BatchedViewAugment.compiles_on`."""
    if compile is None:
        on = torch.device(device).type == "cpu" and image_size >= AUTO_COMPILE_SIDE
    else:
        on = bool(compile)
    return "compiled" if on else "eager"


__all__ = ["AUTO_COMPILE_SIDE", "BatchViewParams", "BatchedSimSiamAugment",
           "BatchedViewAugment", "CropSpec", "GRAY_WEIGHTS", "JITTER_OPS", "SingleView",
           "adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation",
           "gaussian_blur", "resample_weights", "resized_crop", "rgb_to_grayscale",
           "sample_crops", "solarize", "view_kernels"]


@dataclass
class BatchViewParams:
    """Random parameters of a batch of views; every field has one entry per sample.

    Crop boxes are int64 pixels; ``order`` is ``(B, 4)``, a permutation of the jitter
    operations (0 brightness, 1 contrast, 2 saturation, 3 hue) per sample.
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    jitter: torch.Tensor  # bool
    order: torch.Tensor
    factors: torch.Tensor  # (B, 4) float32: brightness, contrast, saturation, hue
    grayscale: torch.Tensor  # bool
    blur: torch.Tensor  # bool
    sigma: torch.Tensor  # float32
    flip: torch.Tensor  # bool
    solarize: torch.Tensor | None = None  # bool; None: the view is never solarized


@dataclass(frozen=True)
class CropSpec:
    """One view's RandomResizedCrop: area fraction range, aspect ratio range, output side."""

    scale: tuple[float, float]
    ratio: tuple[float, float]
    size: int

class BatchedViewAugment:
    """A view recipe applied to a whole batch at once.

    Args:
        cfg: augmentation strengths and probabilities (as :class:`ViewAugment`; null
            values are the recipe's).
        image_size: side of the output views, pixels.

    ``augment(images, g, view)`` takes uint8 images ``(B, 3, H, W)`` on any device, a
    generator on that device and the view's index (0 or 1: the per-view blur and solarize
    probabilities), and returns normalised float32 views ``(B, 3, image_size,
    image_size)`` with independent random parameters per sample.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int,
                 compile: bool | None = False) -> None:
        self.cfg = resolve_views(cfg, image_size)
        self.size = image_size
        self.blur_probs, self.solarize_probs = view_probabilities(self.cfg)
        self.mean, self.std = normalization(cfg.normalize, image_size)
        # compile (None: auto, see compiles_on): on the CPU the whole finish runs as
        # compiled kernels over cache-sized chunks (simsiam.augment.fused); on CUDA each
        # jitter operation becomes one fused kernel (dynamic batch size).
        self.compile = compile
        self.ops = tuple(torch.compile(op, dynamic=True) for op in JITTER_OPS) if compile \
            else JITTER_OPS
        self._chunked: ChunkedFinish | None = None

    def compiles_on(self, device: torch.device | str) -> bool:
        """Whether :meth:`finish` runs compiled kernels on ``device``: ``compile`` True,
        or None (auto) on a CPU with views of at least ``AUTO_COMPILE_SIDE`` pixels (where
        the compiled chunks pay for their one-off compile; see BENCHMARKS.md)."""
        return view_kernels(self.compile, self.size, device) == "compiled"

    @property
    def blur_prob(self) -> float:
        """View 1's blur probability."""
        return self.blur_probs[0]

    def sample(self, g: torch.Generator, n: int, height: int, width: int,
               device: torch.device | str = "cpu", view: int = 0) -> BatchViewParams:
        """Draw the parameters of ``n`` copies of view ``view`` of ``height`` x ``width``
        images (one more draw for solarize only when the view can be solarized, so a
        recipe without it draws exactly SimSiam's stream)."""
        c = self.cfg
        top, left, h, w = sample_crops(g, n, height, width, tuple(c.crop_scale),
                                       tuple(c.crop_ratio), device)
        u = torch.rand(n, 9, generator=g, device=device)
        lo = (max(0.0, 1 - c.brightness), max(0.0, 1 - c.contrast),
              max(0.0, 1 - c.saturation), -c.hue)
        hi = (1 + c.brightness, 1 + c.contrast, 1 + c.saturation, c.hue)
        factors = torch.stack([lo[k] + (hi[k] - lo[k]) * u[:, k] for k in range(4)], dim=1)
        order = torch.argsort(torch.rand(n, 4, generator=g, device=device), dim=1)
        lo_s, hi_s = c.blur_sigma
        p_sol = view_probability(self.solarize_probs, view)
        sol = torch.rand(n, generator=g, device=device) < p_sol if p_sol > 0 else None
        return BatchViewParams(top, left, h, w, jitter=u[:, 4] < c.jitter_prob, order=order,
                               factors=factors, grayscale=u[:, 5] < c.grayscale_prob,
                               blur=u[:, 6] < view_probability(self.blur_probs, view),
                               sigma=lo_s + (hi_s - lo_s) * u[:, 7], flip=u[:, 8] < c.flip_prob,
                               solarize=sol)

    def apply(self, images: torch.Tensor, p: BatchViewParams) -> torch.Tensor:
        """Apply ``p`` to uint8 images ``(B, 3, H, W)``; returns normalised float32."""
        x = resized_crop(images, p.top, p.left, p.height, p.width, self.size) / 255.0
        return self.finish(x.clamp_(0.0, 1.0), p)

    def finish(self, x: torch.Tensor, p: BatchViewParams) -> torch.Tensor:
        """Everything after the crop: jitter, grayscale, blur, solarize, flip, normalisation.

        Args:
            x: the cropped and resized views ``(B, 3, S, S)``: uint8, or float in [0, 1]
                (modified in place on the CPU).
            p: the views' parameters; the crop box fields are not read.

        Returns:
            normalised float32 ``(B, 3, S, S)``. On the CPU each operation runs on the
            samples that take it only, or (:meth:`compiles_on`) all of them as compiled
            kernels over cache-sized chunks (:class:`~simsiam.augment.fused.ChunkedFinish`);
            on CUDA on the whole batch with ``torch.where`` (no host sync). Same values
            each way, to float32 rounding.
        """
        cpu = x.device.type == "cpu"
        if cpu and self.compiles_on(x.device):
            if self._chunked is None:
                self._chunked = ChunkedFinish(self.mean, self.std, self.cfg.blur_sigma[1])
            out = self._chunked(x, p)
            if out is not None:
                return out
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        x = self._jitter(x, p, JITTER_OPS if cpu else self.ops)
        x = apply_selected(x, p.grayscale, grayscale3)
        if max(self.blur_probs) > 0:
            x = apply_selected(x, p.blur, gaussian_blur, p.sigma, self.cfg.blur_sigma[1])
        if p.solarize is not None:
            x = solarize(x, p.solarize)
        x = apply_selected(x, p.flip, hflip)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def finish_crops(self, crops: torch.Tensor, g: torch.Generator, view: int = 0) -> torch.Tensor:
        """View ``view`` of crops already cut and resized elsewhere (the stream input path's
        workers): uint8 ``(B, 3, S, S)`` -> normalised float32 ``(B, 3, S, S)``.

        The parameters are drawn from ``g`` exactly as :meth:`__call__` draws them (the
        crop boxes too, unused), so a batch draws the same jitter, blur, flip, ... stream
        whichever path cut its crops.
        """
        p = self.sample(g, crops.shape[0], self.size, self.size, crops.device, view)
        return self.finish(crops, p)

    def crop_specs(self) -> list[CropSpec]:
        """The crop of each view (:meth:`views`): area range, aspect range, output side."""
        spec = CropSpec(tuple(self.cfg.crop_scale), tuple(self.cfg.crop_ratio), self.size)
        return [spec] * self.num_views

    def views_from_crops(self, crops: list[torch.Tensor], g: torch.Generator
                         ) -> list[torch.Tensor]:
        """:meth:`views` of crops cut elsewhere, one uint8 tensor per :meth:`crop_specs`."""
        return [self.finish_crops(c, g, i) for i, c in enumerate(crops)]

    def _jitter(self, x: torch.Tensor, p: BatchViewParams, ops) -> torch.Tensor:
        # Round r applies operation order[:, r] to each jittered sample. On the CPU only
        # the samples that need an operation compute it; on CUDA every operation runs on
        # the whole batch and torch.where selects (no host sync for the subset sizes).
        subset = x.device.type == "cpu"
        for r in range(4):
            for k, op in enumerate(ops):
                sel = p.jitter & (p.order[:, r] == k)
                if subset:
                    idx = sel.nonzero().squeeze(1)
                    if len(idx):
                        x[idx] = op(x[idx], p.factors[idx, k])
                else:
                    x = torch.where(as_column(sel), op(x, p.factors[:, k]), x)
        return x

    num_views = 2

    def __call__(self, images: torch.Tensor, g: torch.Generator, view: int = 0) -> torch.Tensor:
        """View ``view`` of each image: uint8 ``(B, 3, H, W)`` -> float32 ``(B, 3, S, S)``."""
        p = self.sample(g, images.shape[0], images.shape[-2], images.shape[-1], images.device,
                        view)
        return self.apply(images, p)

    def views(self, images: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """The two views of each image (view 1, then view 2), drawn one after the other
        from ``g``."""
        return [self(images, g, 0), self(images, g, 1)]


BatchedSimSiamAugment = BatchedViewAugment  # the name before every method had its own recipe


class SingleView:
    """One view per image with ``augment``'s recipe (CLIP's image side: one random crop of
    each image, paired with a caption instead of a second view).

    ``views(images, g) -> [view]``: ``images`` ``(B, 3, H, W)`` uint8 on the device,
    ``view`` ``(B, 3, S, S)`` float32 normalised.
    """

    def __init__(self, augment: BatchedViewAugment) -> None:
        self.augment = augment

    def views(self, images: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
        """The single view of each image, drawn from ``g``."""
        return [self.augment(images, g, 0)]

    def crop_specs(self) -> list[CropSpec]:
        """The crop of the one view (see :meth:`BatchedViewAugment.crop_specs`)."""
        return self.augment.crop_specs()[:1]

    def views_from_crops(self, crops: list[torch.Tensor], g: torch.Generator
                         ) -> list[torch.Tensor]:
        """:meth:`views` of a crop cut elsewhere (uint8 ``(B, 3, S, S)``)."""
        return [self.augment.finish_crops(crops[0], g, 0)]
