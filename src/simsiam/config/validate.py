"""Ranges and choices that the config's types alone cannot express.

One check per section, each taking only the sections it needs; the run's method checks its
own section (:meth:`simsiam.methods.base.Method.check`). Every failure is a
:class:`~simsiam.errors.ConfigError` naming the file (``where``), the key, the value and
the fix.
"""

from __future__ import annotations

import math

from simsiam.augment.multicrop import small_crop_size
from simsiam.augment.recipes import RECIPES
from simsiam.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from simsiam.errors import ConfigError, require
from simsiam.methods.base import Method, RunShape
from simsiam.methods.registry import METHODS
from simsiam.models.backbones import (
    BACKBONES,
    STEMS,
    is_timm,
    timm_hint,
    timm_input_problem,
    timm_model_known,
    timm_name,
)
from simsiam.optim.factory import OPTIMIZERS
from simsiam.optim.plan import LR_SCALINGS

DEVICES = ("auto", "cpu", "cuda")
NORMALIZE = ("auto", "cifar10", "imagenet")
SCHEDULES = ("epoch", "step")
AMP = ("auto", "bf16", "fp32")
AUG_BACKENDS = ("batched", "per_image")
PIPELINES = ("auto", "cache", "stream", "dali")
COLLAPSE_MEASURES = ("auto", "std", "rank")


def validate(cfg: Config, where: str = "config") -> None:
    """Check every section of ``cfg``, then the run's method's own section.

    Raises:
        ConfigError: naming the field, its value and the fix.
    """
    require(cfg.method in METHODS, where, "method", cfg.method,
            f"choose one of {tuple(METHODS)}")
    check_data(cfg.data, where)
    check_augment(cfg.augment, where)
    check_model(cfg.model, where)
    check_input_size(cfg.model, cfg.data, cfg.augment, where)
    check_lock_image(cfg.model, METHODS[cfg.method], where)
    check_optim(cfg.optim, where)
    check_train(cfg.train, where)
    check_warmup(cfg.optim, cfg.train, where)
    check_eval(cfg.eval, where)
    method = METHODS[cfg.method]
    a = cfg.augment
    require(cfg.data.pipeline in ("auto", "cache") or a.backend == "batched", where,
            "data.pipeline", cfg.data.pipeline, "streamed crops are finished by the batched "
            "backend: set augment.backend=batched, or data.pipeline=cache")
    require(a.small_crops == 0 or method.multi_crop, where, "augment.small_crops",
            a.small_crops, f"method {cfg.method!r} takes exactly two views: set "
            "augment.small_crops=0")
    run = RunShape(cfg.data.image_size, cfg.train.batch_size, cfg.train.epochs, a.small_crops)
    method.check(getattr(cfg.model, cfg.method), run, where)


def check_data(d: DataConfig, where: str) -> None:
    """``data.*``: sizes, fractions and workers."""
    require(8 <= d.image_size <= 4096, where, "data.image_size", d.image_size,
            "use 8 to 4096 pixels")
    for key in ("per_class", "test_per_class", "cache_side"):
        v = getattr(d, key)
        require(v is None or v > 0, where, f"data.{key}", v, "use a positive integer or null")
    require(0.0 <= d.holdout_fraction < 1.0, where, "data.holdout_fraction", d.holdout_fraction,
            "use a fraction in [0, 1)")
    require(d.num_workers >= 0, where, "data.num_workers", d.num_workers, "use 0 or more")
    require(d.resident_max_mb >= 0, where, "data.resident_max_mb", d.resident_max_mb,
            "use 0 or more")
    require(d.pipeline in PIPELINES, where, "data.pipeline", d.pipeline,
            f"choose one of {PIPELINES}")
    require(d.shard_order in ("offset", "sequential"), where, "data.shard_order",
            d.shard_order, "use offset or sequential")
    require(d.shuffle_buffer >= 1, where, "data.shuffle_buffer", d.shuffle_buffer,
            "use 1 (file order) or more samples")
    require(d.labels in ("auto", "none"), where, "data.labels", d.labels,
            "use auto (class subfolders are labels; one class is unlabelled) or none")


def _interval(v: list[float], upper: float | None) -> bool:
    return len(v) == 2 and 0 < v[0] <= v[1] and (upper is None or v[1] <= upper)


def check_augment(a: AugmentConfig, where: str) -> None:
    """``augment.*``: the view recipe's ranges, probabilities and backend (null values are
    the recipe's, filled when the config is loaded)."""
    require(a.recipe == "auto" or a.recipe in RECIPES, where, "augment.recipe", a.recipe,
            f"choose auto (the method's own) or one of {tuple(RECIPES)}")
    require(a.crop_scale is None or _interval(a.crop_scale, 1.0), where, "augment.crop_scale",
            a.crop_scale,
            "use [min, max] with 0 < min <= max <= 1")
    require(_interval(a.crop_ratio, None), where, "augment.crop_ratio", a.crop_ratio,
            "use [min, max] with 0 < min <= max")
    require(_interval(a.blur_sigma, None), where, "augment.blur_sigma", a.blur_sigma,
            "use [min, max] with 0 < min <= max")
    for key in ("jitter_prob", "grayscale_prob", "flip_prob", "blur_prob", "view2_blur_prob",
                "solarize_prob", "view2_solarize_prob"):
        v = getattr(a, key)
        require(v is None or 0.0 <= v <= 1.0, where, f"augment.{key}", v,
                "use a probability in [0, 1]")
    for key in ("brightness", "contrast", "saturation"):
        v = getattr(a, key)
        require(v is None or v >= 0, where, f"augment.{key}", v, "use a non-negative strength")
    require(a.hue is None or 0 <= a.hue <= 0.5, where, "augment.hue", a.hue,
            "use a value in [0, 0.5]")
    require(a.backend in AUG_BACKENDS, where, "augment.backend", a.backend,
            f"choose one of {AUG_BACKENDS}")
    require(a.small_crops >= 0, where, "augment.small_crops", a.small_crops, "use 0 or more")
    require(a.small_size is None or a.small_size >= 1, where, "augment.small_size",
            a.small_size, "use a positive side in pixels or null")
    require(_interval(a.small_crop_scale, 1.0), where, "augment.small_crop_scale",
            a.small_crop_scale, "use [min, max] with 0 < min <= max <= 1")
    require(a.small_crops == 0 or a.backend == "batched", where, "augment.small_crops",
            a.small_crops, "multi-crop views are made by the batched backend only: set "
            "augment.backend=batched")
    require(a.normalize in NORMALIZE, where, "augment.normalize", a.normalize,
            f"choose one of {NORMALIZE}")


def check_model(m: ModelConfig, where: str) -> None:
    """``model.*`` shared by every method: the backbone (a torchvision ResNet, or
    ``timm/<name>`` for a model timm has; timm is imported only then) and its stem (the
    "cifar" stem is a torchvision ResNet's only)."""
    if is_timm(m.backbone):
        name = timm_name(m.backbone)
        require(timm_model_known(name), where, "model.backbone", m.backbone,
                f"timm has no model {name!r}: {timm_hint(name)}")
        require(m.stem == "imagenet", where, "model.stem", m.stem,
                f"the 'cifar' stem (3x3 stride-1 first conv, no max-pool) is for the "
                f"torchvision ResNets {BACKBONES} only; {m.backbone} keeps its own stem: set "
                "model.stem=imagenet, or use model.backbone=resnet18 for the CIFAR stem")
    else:
        require(m.backbone in BACKBONES, where, "model.backbone", m.backbone,
                f"choose one of {BACKBONES}, or timm/<name> for any timm model (e.g. "
                "timm/resnet18; see timm.list_models('*resnet*'))")
    require(m.stem in STEMS, where, "model.stem", m.stem, f"choose one of {STEMS}")


def input_size_fix(backbone: str, key: str, side: int, problem: tuple[int, str]) -> str:
    """What to do when ``backbone`` (``timm/<name>``) cannot run at ``side`` px given by
    ``key`` (``problem``: :func:`~simsiam.models.backbones.timm_input_problem`)."""
    own, error = problem
    change = (f"set {key}={own}" if key == "data.image_size" else
              "set augment.small_crops=0 (no small crops)")
    return (f"{backbone} is made for {own} x {own} px inputs and cannot run at {side} x "
            f"{side} ({error}); {change}, or choose a timm model that takes {side} px (a "
            "convolutional one such as timm/resnet18 or timm/convnext_atto takes any size)")


def check_input_size(m: ModelConfig, d: DataConfig, a: AugmentConfig, where: str) -> None:
    """The image sides the backbone is fed (``data.image_size``; ``augment.small_size``
    with multi-crop) are sides a ``timm/<name>`` backbone can run at: a model with a fixed
    input size (a ViT made for 224 px) is refused here, before any data are read, naming
    both sizes (tried with shapes only, on the meta device)."""
    if not is_timm(m.backbone):
        return
    sides = [("data.image_size", d.image_size)]
    if a.small_crops:
        sides.append(("augment.small_size", small_crop_size(d.image_size, a.small_size)))
    for key, side in sides:
        problem = timm_input_problem(timm_name(m.backbone), side)
        if problem is not None:  # require()'s wording
            raise ConfigError(f"{where}: {key} = {side!r} is not allowed: "
                              f"{input_size_fix(m.backbone, key, side, problem)}")


def check_lock_image(m: ModelConfig, method: type[Method], where: str) -> None:
    """``model.lock_image`` (LiT's locked image tower): only for a method with a second
    tower that learns against the locked one (``Method.can_lock_image``), and only on
    weights loaded with ``model.image_init``."""
    if not m.lock_image:
        return
    require(method.can_lock_image, where, "model.lock_image", m.lock_image,
            f"method {method.name!r} has no second tower to train against a locked "
            "backbone (locking its only encoder would leave nothing to learn); only clip "
            "locks its image tower: set model.lock_image=false")
    require(m.image_init is not None, where, "model.lock_image", m.lock_image,
            "locking a randomly initialised tower would train against random features; set "
            "model.image_init to an exported backbone.safetensors or a run directory")


def check_optim(o: OptimConfig, where: str) -> None:
    """``optim.*``: optimizer, lr, momentum, weight decay, schedule, AdamW's betas and eps,
    the lr scaling rule."""
    require(o.optimizer in OPTIMIZERS, where, "optim.optimizer", o.optimizer,
            f"choose one of {tuple(OPTIMIZERS)}")
    require(math.isfinite(o.base_lr) and o.base_lr > 0, where, "optim.base_lr", o.base_lr,
            "use a positive learning rate such as 0.05")
    require(0 <= o.momentum < 1, where, "optim.momentum", o.momentum, "use a value in [0, 1)")
    require(o.weight_decay >= 0, where, "optim.weight_decay", o.weight_decay, "use 0 or more")
    require(o.schedule in SCHEDULES, where, "optim.schedule", o.schedule,
            f"choose one of {SCHEDULES}")
    require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), where, "optim.betas",
            o.betas, "use two values in [0, 1), e.g. [0.9, 0.98] (AdamW's beta1, beta2)")
    require(math.isfinite(o.eps) and o.eps > 0, where, "optim.eps", o.eps,
            "use a small positive value such as 1e-6")
    require(o.lr_scaling in LR_SCALINGS, where, "optim.lr_scaling", o.lr_scaling,
            f"choose one of {LR_SCALINGS} (linear: lr = base_lr x batch/256; none: "
            "lr = base_lr)")


def check_warmup(o: OptimConfig, t: TrainConfig, where: str) -> None:
    """The warm-up must end before the run does (:func:`simsiam.config.load.load_config`
    shortens one that the command line did not set before this check)."""
    require(o.warmup_epochs is not None and 0 <= o.warmup_epochs < t.epochs, where,
            "optim.warmup_epochs", o.warmup_epochs,
            f"it must be 0 or more and fewer than train.epochs ({t.epochs}): raise --epochs or "
            "lower it, e.g. --set optim.warmup_epochs=0")


def check_train(t: TrainConfig, where: str) -> None:
    """``train.*``: length, batch, device, precision, seed, output and logging."""
    require(t.epochs > 0, where, "train.epochs", t.epochs, "use a positive number of epochs")
    require(t.batch_size >= 2, where, "train.batch_size", t.batch_size,
            "use 2 or more (BatchNorm needs at least 2 samples per batch)")
    require(t.device in DEVICES, where, "train.device", t.device, f"choose one of {DEVICES}")
    require(t.amp in AMP, where, "train.amp", t.amp, f"choose one of {AMP}"
            + (" (YAML reads off/no/on/yes as true/false; write fp32 or bf16)"
               if t.amp in ("True", "False") else ""))
    require(0 <= t.seed < 2**63, where, "train.seed", t.seed,
            "use an integer from 0 to 2**63 - 1")
    require(t.save_every >= 0, where, "train.save_every", t.save_every,
            "use 0 (keep only last.pt) or a positive number of epochs")
    require(t.log_every > 0, where, "train.log_every", t.log_every,
            "use a positive number of steps")
    require(bool(t.out), where, "train.out", t.out, "name an output directory")


def check_eval(e: EvalConfig, where: str) -> None:
    """``eval.*``: the kNN monitor, the online probe and the collapse guard."""
    require(e.knn_every >= 0, where, "eval.knn_every", e.knn_every,
            "use 0 (off) or a positive number")
    require(e.label_free_images >= 0, where, "eval.label_free_images", e.label_free_images,
            "use 0 (no copy retrieval) or a number of held-out images such as 512")
    require(e.knn_k > 0, where, "eval.knn_k", e.knn_k, "use a positive k such as 200")
    require(e.knn_t > 0, where, "eval.knn_t", e.knn_t, "use a positive temperature such as 0.1")
    require(e.batch_size > 0, where, "eval.batch_size", e.batch_size,
            "use a positive batch size")
    require(e.probe_lr > 0, where, "eval.probe_lr", e.probe_lr, "use a positive lr such as 0.1")
    require(e.collapse_measure in COLLAPSE_MEASURES, where, "eval.collapse_measure",
            e.collapse_measure, f"choose one of {COLLAPSE_MEASURES}")
    require(0 < e.collapse_ratio < 1, where, "eval.collapse_ratio", e.collapse_ratio,
            "use a fraction of 1/sqrt(d) in (0, 1), e.g. 0.3")
    require(0 < e.rank_ratio < 1, where, "eval.rank_ratio", e.rank_ratio,
            "use a fraction of a healthy batch's effective rank in (0, 1)")
    for key in ("rank_rows", "feature_rank_rows"):
        v = getattr(e, key)
        require(v >= 2, where, f"eval.{key}", v, "use 2 or more rows, e.g. 128")
    require(e.collapse_patience > 0, where, "eval.collapse_patience", e.collapse_patience,
            "use a positive number of steps")
