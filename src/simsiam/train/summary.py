"""What a run is about to do, in one block printed before the first step (also under
``--no-progress``), and the one line per epoch printed without a progress bar.

The block answers what a user of their own folder cannot see otherwise: how many images
were found, skipped, held out and capped; the size, decode side and normalisation numbers
of the views; whether there are labels (no accuracy is computed without them); the steps,
lr and warm-up; device, precision and method.
"""

from __future__ import annotations

from typing import Any

from simsiam.augment.batched import view_kernels
from simsiam.augment.multicrop import small_crop_size
from simsiam.augment.stats import normalization
from simsiam.config import Config
from simsiam.data.types import DataSplits
from simsiam.distributed import BatchPlan


def _recipe_words(a: Any, image_size: int) -> str:
    """``recipe byol: crop area 0.08-1, jitter ..., blur p 1/0.1 (views 1/2), solarize p
    0/0.2 (views 1/2)`` (a resolved augment section; a per-view pair only where the views
    differ; SwAV's small crops when there are any)."""
    def pair(one: float, two: float) -> str:
        return f"{one:g}" if one == two else f"{one:g}/{two:g} (views 1/2)"

    words = f"recipe {a.recipe}: crop area {a.crop_scale[0]:g}-{a.crop_scale[1]:g}, " \
            f"jitter {a.brightness:g}/{a.contrast:g}/{a.saturation:g}/{a.hue:g} p " \
            f"{a.jitter_prob:g}, blur p {pair(a.blur_prob, a.view2_blur_prob)}"
    if a.solarize_prob or a.view2_solarize_prob:
        words += f", solarize p {pair(a.solarize_prob, a.view2_solarize_prob)}"
    if a.small_crops:
        side = small_crop_size(image_size, a.small_size)
        words += (f", + {a.small_crops} small crops of {side} px, area "
                  f"{a.small_crop_scale[0]:g}-{a.small_crop_scale[1]:g}")
    return words


def _n(x: int) -> str:
    return f"{x:,}"


def eval_transform_spec(image_size: int, normalize: str) -> dict[str, Any]:
    """The evaluation transform (monitor, ``knn``, ``linear``, ``embed``, ``neighbors``) as
    numbers, for a folder of photos decoded at the default side ``resize`` =
    round(8/7 x ``crop``): the shorter side resized to ``resize`` and a centre square of
    ``resize`` kept (the decoded cache, :mod:`simsiam.data.cache`), then a centre crop of
    ``crop`` (:func:`simsiam.augment.views.eval_transform`), scaled to [0, 1] and
    normalised with ``mean`` and ``std``; ``torchvision`` spells it with
    ``torchvision.transforms.v2`` on a PIL image (the README's snippet, tested to cosine
    >= 0.999). Images that are all ``crop`` x ``crop`` (CIFAR) are used as they are."""
    mean, std = normalization(normalize, image_size)
    side = round(image_size * 8 / 7)
    return {"resize": side, "decode_crop": side, "crop": image_size,
            "interpolation": "bilinear", "antialias": True, "mean": list(mean),
            "std": list(std),
            "torchvision": f"Resize({side}), CenterCrop({side}), CenterCrop({image_size}), "
                           "ToImage(), ToDtype(torch.float32, scale=True), Normalize(mean, std)",
            "square_images_of_crop_size": "used as they are"}


def _data_lines(s: DataSplits, cfg: Config) -> list[str]:
    d = cfg.data
    parts = [f"{_n(s.found)} found"]
    if s.folder:  # only the files kept after the cap are decoded (and so checked)
        decoded = len(s.train) + (len(s.test) if s.test is not None else 0) + s.skipped
        parts.append(f"{_n(s.skipped)} of the {_n(decoded)} decoded skipped (undecodable)")
    if s.held_out:
        parts.append(f"{_n(s.held_out)} held out for evaluation "
                     f"(data.holdout_fraction {d.holdout_fraction:g}, seed {cfg.train.seed})")
    if s.capped:
        parts.append(f"{_n(s.capped)} capped by data.per_class = {d.per_class}")
    test = len(s.test) if s.test is not None else 0
    where = f"its test split ({_n(s.test_found)} found)" if s.test_found else "held out"
    lines = [f"  images    {', '.join(parts)}",
             f"            -> {_n(len(s.train))} training, {_n(test)} for evaluation ({where})"]
    if not test:
        lines.append("  monitor   off: no held-out images (data.holdout_fraction = 0 and no "
                     "test/ folder), so nothing is measured during training")
    if s.train.labelled:
        lines.append(f"  labels    {len(s.train.classes)} classes (used by the kNN monitor and "
                     "the online probe only; training never reads them)")
    else:
        why = ("data.labels = none" if d.labels == "none"
               else "images with captions, no classes" if s.train.captions is not None
               else "one class: a folder without class subfolders")
        lines.append(f"  labels    none ({why}): no kNN or probe accuracy; the monitor "
                     "reports label-free signals")
    return lines


def lr_rule(plan: BatchPlan, base_lr: float) -> str:
    """The peak lr and the rule that made it (``plan.lr_scaling``, ``optim.lr_scaling``):
    ``lr 0.4 = base_lr 0.8 x 128/256`` (linear) or ``lr 0.0005 = base_lr 0.0005 (not
    scaled by the batch: optim.lr_scaling none)``."""
    if plan.lr_scaling == "none":
        return (f"lr {plan.peak_lr:g} = base_lr {base_lr:g} (not scaled by the batch: "
                "optim.lr_scaling none)")
    return f"lr {plan.peak_lr:g} = base_lr {base_lr:g} x {plan.global_batch}/256"


def _input_words(splits: DataSplits, side: int, d) -> str:
    """Where the crops come from: the decoded cache's squares, or the whole files."""
    if splits.pipeline == "cache":
        chosen = "auto -> cache" if d.pipeline == "auto" else "cache"
        return f"of images stored at {side} px (data.pipeline {chosen})"
    draft = ", JPEG draft decoding" if d.jpeg_draft and splits.pipeline == "stream" else ""
    if d.shard_order == "sequential" and d.source.strip().lower().endswith(".tar"):
        draft += f", shards read sequentially (shuffle buffer {d.shuffle_buffer})"
    chosen = f"auto -> {splits.pipeline}" if d.pipeline == "auto" else splits.pipeline
    return (f"of whole images decoded every epoch (data.pipeline {chosen}, "
            f"{d.num_workers} workers{draft})")


def run_view_kernels(cfg: Config, device: str) -> str | None:
    """"compiled" or "eager": how the batched views' operations after the crop run on
    ``device`` (:func:`~simsiam.augment.batched.view_kernels`); None for ``per_image``."""
    if cfg.augment.backend != "batched":
        return None
    return view_kernels(cfg.augment.compile, cfg.data.image_size, device)


def _kernel_words(cfg: Config, device: str) -> str:
    """``batched, compiled kernels`` / ``batched, eager kernels`` / ``per_image``."""
    kernels = run_view_kernels(cfg, device)
    return cfg.augment.backend if kernels is None else f"batched, {kernels} kernels"


def startup_summary(splits: DataSplits, cfg: Config, plan: BatchPlan, device: str,
                    bf16: bool, resumed_step: int | None = None) -> str:
    """The start-up block (several lines, no trailing newline)."""
    a, d, m = cfg.augment, cfg.data, cfg.model
    mean, std = normalization(a.normalize, d.image_size)
    stats = "CIFAR-10" if mean[0] == 0.4914 else "ImageNet"
    side = splits.train.images.shape[1]
    total = plan.steps_per_epoch * cfg.train.epochs
    warm = cfg.optim.warmup_epochs or 0
    head = f"simsiam: {cfg.method} with a {m.backbone} backbone ({m.stem} stem) on '{d.source}'"
    if resumed_step is not None:
        head += f", resumed at step {resumed_step}"
    lines = [head] + _data_lines(splits, cfg) + [
        f"  views     {d.image_size} px crops {_input_words(splits, side, d)} "
        f"({_kernel_words(cfg, device)}), "
        f"{_recipe_words(a, d.image_size)}, "  # resolved once, by load_config
        f"normalised with {stats} mean "
        f"{tuple(round(x, 4) for x in mean)} std {tuple(round(x, 4) for x in std)}",
        f"  steps     {plan.steps_per_epoch} per epoch x {cfg.train.epochs} epochs = {total} "
        f"(batch {plan.global_batch}, {cfg.optim.optimizer} "
        f"{lr_rule(plan, cfg.optim.base_lr)}, wd {cfg.optim.weight_decay:g}, warm-up {warm:g} "
        f"epoch{'' if warm == 1 else 's'})",
        f"  device    {device}, {'bfloat16 autocast' if bf16 else 'float32'}, "
        f"{plan.world_size} process{'es' if plan.world_size > 1 else ''}",
        f"  out       {cfg.train.out}"]
    return "\n".join(lines)


def setup_record(splits: DataSplits, plan: BatchPlan, ctx, bf16: bool,
                 step: int, cfg: Config) -> dict[str, Any]:
    """The ``setup`` record of ``metrics.jsonl``: the batch plan, processes, device and
    precision, the data counts of the start-up block and how the views' kernels ran
    (:func:`run_view_kernels`; ``ctx``: the run's
    :class:`~simsiam.distributed.DistContext`)."""
    test = len(splits.test) if splits.test is not None else 0
    return {"kind": "setup", "step": step, "world_size": ctx.world_size,
            "global_batch": plan.global_batch, "per_device_batch": plan.per_device,
            "steps_per_epoch": plan.steps_per_epoch, "peak_lr": plan.peak_lr,
            "backend": ctx.backend or "none", "sync_bn": ctx.distributed,
            "device": str(ctx.device), "bf16": bf16, "images_found": splits.found,
            "images_skipped": splits.skipped, "images_held_out": splits.held_out,
            "images_capped": splits.capped, "train_images": len(splits.train),
            "eval_images": test, "labelled": splits.train.labelled,
            "pipeline": splits.pipeline,
            "view_kernels": run_view_kernels(cfg, str(ctx.device))}


def epoch_line(epoch: int, epochs: int, loss: float, seconds: float,
               evaluation: str | None) -> str:
    """``epoch 3/20: loss -0.5123, 41.2 s`` and the monitor's figures when it ran."""
    line = f"epoch {epoch}/{epochs}: loss {loss:.4f}, {seconds:.1f} s"
    return f"{line}; {evaluation}" if evaluation else line
