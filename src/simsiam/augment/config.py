"""``augment.*``: the config section of the view recipes, owned by this layer (torch-free,
so that the config schema loads without torch; assembled in :mod:`simsiam.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AugmentConfig"]


@dataclass
class AugmentConfig:
    """The view recipe. Null values are the recipe's (:mod:`simsiam.augment.recipes`):
    ``recipe`` ``auto`` is the run's method's own, as its authors ran it (SimSiam / MoCo v2:
    SIMSIAM.md section 3; SimCLR, BYOL, SwAV, CLIP: their code), resolved when the config
    is loaded; a value given here (or with ``--set``) replaces the recipe's."""

    recipe: str = "auto"  # auto (the method's own) | simsiam | mocov2 | simclr | byol | swav | clip
    crop_scale: list[float] | None = None  # crop area fraction; SimSiam 0.2-1, SimCLR 0.08-1
    # aspect-ratio range of the random resized crop
    crop_ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    jitter_prob: float | None = None  # colour jitter probability per view (SimSiam 0.8)
    brightness: float | None = None  # colour-jitter strengths (SimSiam 0.4/0.4/0.4/0.1)
    contrast: float | None = None  # colour-jitter contrast strength
    saturation: float | None = None  # colour-jitter saturation strength
    hue: float | None = None  # colour-jitter hue strength
    grayscale_prob: float | None = None  # grayscale probability per view (SimSiam 0.2)
    # Gaussian blur and solarize: view 1's (and any view after the second), then view 2's;
    # a view-1 value given without its view2_ key sets both views.
    blur_prob: float | None = None
    view2_blur_prob: float | None = None
    solarize_prob: float | None = None
    view2_solarize_prob: float | None = None
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    flip_prob: float | None = None
    normalize: str = "auto"  # auto: CIFAR-10 statistics for views <= 32 px, else ImageNet
    # "batched": whole batches on the training device (simsiam.augment.batched, the fast
    # path); "per_image": torchvision's kernels one image at a time in DataLoader workers.
    backend: str = "batched"
    # batched: compiled view kernels (torch.compile, a one-off cost kept in the compile
    # cache): on the CPU the whole post-crop recipe over cache-sized chunks, on CUDA each
    # colour-jitter operation. null (auto): on for CPU views of 128 px and more.
    compile: bool | None = None
    # Multi-crop (SwAV, SIMSIAM.md section 6): extra small views per image, batched only.
    small_crops: int = 0  # SwAV on ImageNet: 6 (with 2 large crops of crop_scale [0.14, 1])
    small_size: int | None = None  # side of the small crops; None: image_size x 96/224
    # crop area fraction of the small crops (SwAV multi-crop)
    small_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
