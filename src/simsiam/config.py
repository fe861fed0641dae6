"""Run configuration: typed sections, YAML presets, validation with clear errors.

The schema is a tree of dataclasses read through OmegaConf's structured configs, so an
unknown key or a value of the wrong type in a YAML file is rejected by OmegaConf before
any work starts; :func:`validate` then checks ranges and choices. Defaults follow the
paper's ImageNet recipe (SIMSIAM.md section 3); ``configs/cifar10.yaml`` holds the
CIFAR recipe of Appendix D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from simsiam.errors import ConfigError

BACKBONES = ("resnet18", "resnet34", "resnet50")
STEMS = ("imagenet", "cifar")
METHODS = ("simsiam", "simclr", "mocov2", "byol", "swav")
MULTI_CROP_METHODS: tuple[str, ...] = ("swav",)  # methods that take more than two views
DEVICES = ("auto", "cpu", "cuda")
NORMALIZE = ("auto", "cifar10", "imagenet")
SCHEDULES = ("epoch", "step")
AMP = ("auto", "bf16", "fp32")
AUG_BACKENDS = ("batched", "per_image")
PREDICTORS = ("mlp", "none", "fixed")
SIMILARITIES = ("cosine", "cross_entropy")


@dataclass
class DataConfig:
    """Where images come from and how many are used.

    ``source`` is an ImageFolder-style directory (class subfolders; with ``train/`` and
    ``test/`` or ``val/`` inside, those are the splits) or ``cifar10`` / ``cifar100``
    (torchvision's download, stored under the cache directory).
    """

    source: str = ""
    image_size: int = 224  # side of each augmented view, pixels
    per_class: int | None = None  # at most this many training images per class
    test_per_class: int | None = None  # at most this many held-out images per class
    holdout_fraction: float = 0.1  # held out for the kNN monitor when there is no test split
    cache_dir: str | None = None  # default: $SIMSIAM_CACHE_DIR or ~/.cache/simsiam
    cache_side: int | None = None  # decoded side for folders of mixed sizes; default 8/7 x size
    num_workers: int = 2  # DataLoader worker processes for augmentation
    strict: bool = False  # undecodable image files: False skips them with a warning, True stops
    resident_max_mb: int = 4096  # batched path: hold the decoded images on the device up to this


@dataclass
class AugmentConfig:
    """The SimSiam / MoCo-v2 view recipe (SIMSIAM.md section 3), applied to both views."""

    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float | None = None  # None: 0.5 for views larger than 32 px, else 0 (no blur)
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    flip_prob: float = 0.5
    normalize: str = "auto"  # auto: CIFAR-10 statistics for views <= 32 px, else ImageNet
    # "batched": whole batches on the training device (simsiam.augment.batched, the fast
    # path); "per_image": torchvision's kernels one image at a time in DataLoader workers.
    backend: str = "batched"
    compile: bool = False  # batched: torch.compile the colour-jitter kernels (one-off cost)
    # Multi-crop (SwAV, SIMSIAM.md section 6): extra small views per image, batched only.
    small_crops: int = 0  # SwAV on ImageNet: 6 (with 2 large crops of crop_scale [0.14, 1])
    small_size: int | None = None  # side of the small crops; None: image_size x 96/224
    small_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])


@dataclass
class ModelConfig:
    """Backbone and heads (SIMSIAM.md section 2)."""

    backbone: str = "resnet50"
    stem: str = "imagenet"  # "cifar": 3x3 stride-1 first conv, no max-pool
    # Official SimSiam: each residual branch's last BN starts at 0. False is torchvision's
    # (and lightly's) default, which learns faster in runs of a few hundred steps.
    zero_init_residual: bool = True
    proj_layers: int = 3  # 3 on ImageNet, 2 on CIFAR
    proj_hidden_dim: int | None = None  # default: the backbone's feature width c
    dim: int = 2048  # d, the projector's output width
    pred_hidden_dim: int | None = None  # default: d / 4
    # The paper's ablations (SIMSIAM.md section 5); the defaults are the paper's method.
    stop_gradient: bool = True  # Fig. 2: off collapses
    predictor: str = "mlp"  # Table 1: "mlp" | "none" (p = z, collapses) | "fixed" (random init)
    proj_hidden_bn: bool = True  # Table 3: BN in the projector's hidden layers
    proj_out_bn: bool = True  # Table 3: affine-free BN on the projector's output
    pred_hidden_bn: bool = True  # Table 3: BN in the predictor's hidden layer
    pred_out_bn: bool = False  # Table 3: BN on the predictor's output (unstable with all on)
    similarity: str = "cosine"  # section 4.5: "cosine" | "cross_entropy" (softmax over d)
    symmetric: bool = True  # section 4.6: False uses only D(p1, stopgrad(z2))
    # The comparison methods (SIMSIAM.md section 6); null = the method's published value.
    temperature: float | None = None  # SimCLR 0.5 (CIFAR), MoCo v2 0.2, SwAV 0.1
    ema_momentum: float | None = None  # MoCo v2 key encoder 0.99 (CIFAR) / 0.999; BYOL 0.996
    queue_size: int | None = None  # MoCo v2 negatives: 4096 (CIFAR) / 65536 (ImageNet)
    num_prototypes: int = 3000  # SwAV K
    sinkhorn_epsilon: float = 0.05  # SwAV
    sinkhorn_iterations: int = 3  # SwAV
    freeze_prototypes_epochs: float = 1.0  # SwAV: prototypes frozen for the first epoch
    swav_queue_size: int = 0  # SwAV feature queue rows (0: none; 3840 at small batch)
    swav_queue_start_epochs: float = 15.0  # SwAV: the queue fills from this epoch on


@dataclass
class OptimConfig:
    """SGD with a cosine schedule (SIMSIAM.md section 3)."""

    base_lr: float = 0.05  # lr = base_lr x batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Linear warmup before the cosine decay. None: the paper's rule (Table 2), 10 epochs
    # when the batch is 1024 or more, else none; resolved when the config is loaded.
    warmup_epochs: float | None = None
    fix_pred_lr: bool = True  # predictor keeps the initial lr (Table 1c)
    schedule: str = "epoch"  # cosine evaluated per "epoch" (official code) or per "step"


@dataclass
class TrainConfig:
    """The run: length, batch, device, output and logging."""

    epochs: int = 100
    batch_size: int = 512
    seed: int = 0
    device: str = "auto"
    out: str = "runs/simsiam"
    log_every: int = 10  # steps between metric records
    save_every: int = 0  # also keep checkpoints/epoch_NNNN.pt every N epochs; 0 = only last.pt
    channels_last: bool = False
    compile: bool = False  # torch.compile the method (model + loss) for the training step
    # bfloat16 autocast (the loss stays float32): "auto" = on CUDA, and on CPUs with native
    # bf16 (AVX512-BF16 or AMX); "bf16" = always; "fp32" = float32 everywhere.
    amp: str = "auto"


@dataclass
class EvalConfig:
    """kNN monitor (SIMSIAM.md section 4)."""

    knn_every: int = 1  # epochs between kNN evaluations; 0 switches the monitor off
    knn_k: int = 200
    knn_t: float = 0.1
    knn_at_start: bool = False  # also evaluate the randomly initialised encoder
    batch_size: int = 512  # feature-extraction batch
    online_probe: bool = True  # BN + Linear on detached backbone features, own SGD
    probe_lr: float = 0.1  # the online probe's lr (SGD, momentum 0.9, constant)
    collapse_ratio: float = 0.3  # guard threshold, as a fraction of 1/sqrt(d)
    collapse_patience: int = 100  # steps under the threshold before the guard fires
    stop_on_collapse: bool = False  # stop the run (last checkpoint kept) when it fires


@dataclass
class Config:
    """A whole run."""

    method: str = "simsiam"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _wrap(exc: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    msg = str(exc).splitlines()[0]
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        return ConfigError(f"{where}: unknown config key '{key}': {msg}. Check the spelling "
                           "against the presets in configs/ (every key is in "
                           "src/simsiam/config.py)")
    return ConfigError(f"{where}: bad value for '{key}': {msg}. Give a value of the key's "
                       "type (see configs/ or src/simsiam/config.py)")


PRESET_DIR = Path(__file__).resolve().parent / "configs"


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (``configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path as given, or the shipped preset of that name (``cifar10``, ``demo-cpu``).

    Raises:
        ConfigError: neither a file nor a preset name.
    """
    p = Path(path)
    if p.is_file():
        return p
    preset = PRESET_DIR / f"{p.stem}.yaml"
    if p.parent == Path(".") and preset.is_file():
        return preset
    raise ConfigError(f"config file '{p}' does not exist; pass a YAML file or one of the "
                      f"presets {preset_names()}")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML preset, apply dotted-key overrides, validate, and return a Config.

    When the overrides switch the file's method to another (``--method byol`` on a
    SimSiam preset), that method's published settings ``configs/methods/METHOD.yaml`` are
    merged over the file (they replace the preset's SimSiam heads), then the overrides.
    A file that names its method itself (a run's ``config.yaml``) is read as it is.

    Args:
        path: a YAML file whose keys are a subset of :class:`Config`, or the name of a
            shipped preset (see :func:`resolve_config_path`); None for defaults.
        overrides: ``{"train.epochs": 5, ...}`` applied after the file (CLI flags).

    Raises:
        ConfigError: the file is missing, a key is unknown, a value has the wrong type,
            or :func:`validate` rejects a value. The message names the file and key.
    """
    schema = OmegaConf.structured(Config)
    where = str(path) if path is not None else "defaults"
    if path is not None:
        p = resolve_config_path(path)
        try:
            loaded = OmegaConf.load(p)
        except Exception as exc:  # yaml.YAMLError and friends
            raise ConfigError(f"config file '{p}' is not valid YAML: {exc}") from exc
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file '{p}' must hold a mapping of sections, "
                              f"not a {type(loaded).__name__}")
        try:
            schema = OmegaConf.merge(schema, loaded)
        except OmegaConfBaseException as exc:
            raise _wrap(exc, where) from exc
    method = (overrides or {}).get("method")
    overlay = PRESET_DIR / "methods" / f"{method}.yaml"
    if method not in (None, schema.get("method")) and overlay.is_file():
        schema = OmegaConf.merge(schema, OmegaConf.load(overlay))  # the method's settings
    for key, value in (overrides or {}).items():
        try:
            OmegaConf.update(schema, key, value, merge=True, force_add=False)
        except OmegaConfBaseException as exc:
            raise _wrap(exc, f"override {key}={value!r}") from exc
    cfg: Config = OmegaConf.to_object(schema)  # type: ignore[assignment]
    if cfg.optim.warmup_epochs is None:
        cfg.optim.warmup_epochs = float(auto_warmup_epochs(cfg.train.batch_size))
    validate(cfg, where)
    return cfg


def small_images(image_size: int) -> bool:
    """Whether the CIFAR-scale defaults of the comparison methods apply (views <= 64 px)."""
    return image_size <= 64


def resolved_queue_size(m: ModelConfig, image_size: int) -> int:
    """MoCo v2's queue length: ``model.queue_size``, else 4,096 on CIFAR-size views and
    65,536 on ImageNet-size ones (SIMSIAM.md section 6)."""
    if m.queue_size is not None:
        return m.queue_size
    return 4096 if small_images(image_size) else 65536


def auto_warmup_epochs(batch_size: int) -> int:
    """The paper's warmup rule (Table 2): 10 epochs for batches of 1024 or more, else 0."""
    return 10 if batch_size >= 1024 else 0


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what a run directory's config.yaml holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain nested dicts (for JSON and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def _need(cond: bool, where: str, key: str, value: Any, fix: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed: {fix}")


def validate(cfg: Config, where: str = "config") -> None:
    """Check ranges and choices that the types alone cannot express.

    Raises:
        ConfigError: naming the field, its value and the fix.
    """
    n = _need
    n(cfg.method in METHODS, where, "method", cfg.method, f"choose one of {METHODS}")
    d, a, m, o, t, e = cfg.data, cfg.augment, cfg.model, cfg.optim, cfg.train, cfg.eval
    n(d.image_size >= 8, where, "data.image_size", d.image_size, "use at least 8 pixels")
    for key in ("per_class", "test_per_class", "cache_side"):
        v = getattr(d, key)
        n(v is None or v > 0, where, f"data.{key}", v, "use a positive integer or null")
    n(0.0 <= d.holdout_fraction < 1.0, where, "data.holdout_fraction", d.holdout_fraction,
      "use a fraction in [0, 1)")
    n(d.num_workers >= 0, where, "data.num_workers", d.num_workers, "use 0 or more")
    n(len(a.crop_scale) == 2 and 0 < a.crop_scale[0] <= a.crop_scale[1] <= 1, where,
      "augment.crop_scale", a.crop_scale, "use [min, max] with 0 < min <= max <= 1")
    n(len(a.crop_ratio) == 2 and 0 < a.crop_ratio[0] <= a.crop_ratio[1], where,
      "augment.crop_ratio", a.crop_ratio, "use [min, max] with 0 < min <= max")
    n(len(a.blur_sigma) == 2 and 0 < a.blur_sigma[0] <= a.blur_sigma[1], where,
      "augment.blur_sigma", a.blur_sigma, "use [min, max] with 0 < min <= max")
    for key in ("jitter_prob", "grayscale_prob", "flip_prob", "blur_prob"):
        v = getattr(a, key)
        n(v is None or 0.0 <= v <= 1.0, where, f"augment.{key}", v, "use a probability in [0, 1]")
    for key in ("brightness", "contrast", "saturation"):
        v = getattr(a, key)
        n(v >= 0, where, f"augment.{key}", v, "use a non-negative strength")
    n(0 <= a.hue <= 0.5, where, "augment.hue", a.hue, "use a value in [0, 0.5]")
    n(a.backend in AUG_BACKENDS, where, "augment.backend", a.backend,
      f"choose one of {AUG_BACKENDS}")
    n(a.small_crops >= 0, where, "augment.small_crops", a.small_crops, "use 0 or more")
    n(a.small_size is None or a.small_size >= 1, where, "augment.small_size", a.small_size,
      "use a positive side in pixels or null")
    n(len(a.small_crop_scale) == 2 and 0 < a.small_crop_scale[0] <= a.small_crop_scale[1] <= 1,
      where, "augment.small_crop_scale", a.small_crop_scale,
      "use [min, max] with 0 < min <= max <= 1")
    n(a.small_crops == 0 or a.backend == "batched", where, "augment.small_crops", a.small_crops,
      "multi-crop views are made by the batched backend only: set augment.backend=batched")
    n(a.small_crops == 0 or cfg.method in MULTI_CROP_METHODS, where, "augment.small_crops",
      a.small_crops, f"method {cfg.method!r} takes exactly two views: set augment.small_crops=0")
    n(d.resident_max_mb >= 0, where, "data.resident_max_mb", d.resident_max_mb, "use 0 or more")
    n(a.normalize in NORMALIZE, where, "augment.normalize", a.normalize,
      f"choose one of {NORMALIZE}")
    n(m.backbone in BACKBONES, where, "model.backbone", m.backbone, f"choose one of {BACKBONES}")
    n(m.stem in STEMS, where, "model.stem", m.stem, f"choose one of {STEMS}")
    n(m.predictor in PREDICTORS, where, "model.predictor", m.predictor,
      f"choose one of {PREDICTORS}")
    n(m.similarity in SIMILARITIES, where, "model.similarity", m.similarity,
      f"choose one of {SIMILARITIES}")
    n(m.temperature is None or m.temperature > 0, where, "model.temperature", m.temperature,
      "use a positive temperature or null")
    n(m.ema_momentum is None or 0 <= m.ema_momentum <= 1, where, "model.ema_momentum",
      m.ema_momentum, "use a value in [0, 1] or null")
    for key in ("queue_size", "num_prototypes", "sinkhorn_iterations"):
        v = getattr(m, key)
        n(v is None or v >= 1, where, f"model.{key}", v, "use a positive integer")
    n(m.sinkhorn_epsilon > 0, where, "model.sinkhorn_epsilon", m.sinkhorn_epsilon,
      "use a positive value such as 0.05")
    n(m.freeze_prototypes_epochs >= 0, where, "model.freeze_prototypes_epochs",
      m.freeze_prototypes_epochs, "use 0 or more epochs")
    n(m.swav_queue_size >= 0, where, "model.swav_queue_size", m.swav_queue_size,
      "use 0 (no queue) or a number of rows such as 3840")
    n(m.swav_queue_start_epochs >= 0, where, "model.swav_queue_start_epochs",
      m.swav_queue_start_epochs, "use 0 or more epochs")
    n(cfg.method != "swav" or not m.swav_queue_size
      or m.swav_queue_start_epochs < cfg.train.epochs, where, "model.swav_queue_start_epochs",
      m.swav_queue_start_epochs, f"the SwAV queue (model.swav_queue_size = "
      f"{m.swav_queue_size}) would start filling after the last of train.epochs = "
      f"{cfg.train.epochs} and never be used: lower model.swav_queue_start_epochs or set "
      "model.swav_queue_size=0")
    if cfg.method == "mocov2":
        q = resolved_queue_size(m, d.image_size)
        n(q % t.batch_size == 0, where, "model.queue_size", q,
          f"the MoCo queue must be a multiple of train.batch_size ({t.batch_size}): use e.g. "
          f"{max(1, q // t.batch_size) * t.batch_size}")
    n(m.proj_layers in (1, 2, 3), where, "model.proj_layers", m.proj_layers, "use 1, 2 or 3")
    n(m.dim > 0, where, "model.dim", m.dim, "use a positive width such as 2048")
    for key in ("proj_hidden_dim", "pred_hidden_dim"):
        v = getattr(m, key)
        n(v is None or v > 0, where, f"model.{key}", v, "use a positive width or null")
    n(m.pred_hidden_dim is not None or m.dim >= 4, where, "model.dim", m.dim,
      "use at least 4 so that the predictor's hidden width d/4 is positive")
    n(math.isfinite(o.base_lr) and o.base_lr > 0, where, "optim.base_lr", o.base_lr,
      "use a positive learning rate such as 0.05")
    n(0 <= o.momentum < 1, where, "optim.momentum", o.momentum, "use a value in [0, 1)")
    n(o.weight_decay >= 0, where, "optim.weight_decay", o.weight_decay, "use 0 or more")
    n(o.schedule in SCHEDULES, where, "optim.schedule", o.schedule, f"choose one of {SCHEDULES}")
    n(t.epochs > 0, where, "train.epochs", t.epochs, "use a positive number of epochs")
    n(0 <= o.warmup_epochs < t.epochs, where, "optim.warmup_epochs", o.warmup_epochs,
      f"it must be 0 or more and fewer than train.epochs ({t.epochs}): raise --epochs or "
      "lower it, e.g. --set optim.warmup_epochs=0"
      + (" (unset, it is 10 for batches of 1024 or more: paper Table 2)"
         if t.batch_size >= 1024 else ""))
    n(t.batch_size >= 2, where, "train.batch_size", t.batch_size,
      "use 2 or more (BatchNorm needs at least 2 samples per batch)")
    n(t.device in DEVICES, where, "train.device", t.device, f"choose one of {DEVICES}")
    n(t.amp in AMP, where, "train.amp", t.amp, f"choose one of {AMP}"
      + (" (YAML reads off/no/on/yes as true/false; write fp32 or bf16)"
         if t.amp in ("True", "False") else ""))
    n(0 <= t.seed < 2**63, where, "train.seed", t.seed, "use an integer from 0 to 2**63 - 1")
    n(t.save_every >= 0, where, "train.save_every", t.save_every,
      "use 0 (keep only last.pt) or a positive number of epochs")
    n(t.log_every > 0, where, "train.log_every", t.log_every, "use a positive number of steps")
    n(bool(t.out), where, "train.out", t.out, "name an output directory")
    n(e.knn_every >= 0, where, "eval.knn_every", e.knn_every, "use 0 (off) or a positive number")
    n(e.knn_k > 0, where, "eval.knn_k", e.knn_k, "use a positive k such as 200")
    n(e.knn_t > 0, where, "eval.knn_t", e.knn_t, "use a positive temperature such as 0.1")
    n(e.batch_size > 0, where, "eval.batch_size", e.batch_size, "use a positive batch size")
    n(e.probe_lr > 0, where, "eval.probe_lr", e.probe_lr, "use a positive lr such as 0.1")
    n(0 < e.collapse_ratio < 1, where, "eval.collapse_ratio", e.collapse_ratio,
      "use a fraction of 1/sqrt(d) in (0, 1), e.g. 0.3")
    n(e.collapse_patience > 0, where, "eval.collapse_patience", e.collapse_patience,
      "use a positive number of steps")
