"""Global-batch arithmetic for data-parallel runs.

Source: SIMSIAM.md section 3 (lr = base_lr x batch / 256, batch 512 over 8 GPUs in the
paper). ``train.batch_size`` is the global batch, summed over all processes, as in the
official recipe (``--batch-size 512`` on 8 GPUs is 64 per GPU), so one config gives the
same optimisation on 1 GPU or many: the same steps per epoch, the same lr schedule in
global steps. ``optim.lr_scaling: none`` takes ``base_lr`` as the lr itself (CLIP and
open_clip give the lr, not a per-256 rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from simsiam.errors import ConfigError, DataError
from simsiam.optim.schedule import scaled_lr

# optim.lr_scaling: "linear": lr = base_lr x global batch / 256; "none": lr = base_lr
LR_SCALINGS = ("linear", "none")


@dataclass(frozen=True)
class BatchPlan:
    """How one epoch is split over the processes.

    Attributes:
        global_batch: images per optimizer step, all processes together.
        per_device: images per step on each process (``global_batch / world_size``).
        world_size: number of processes.
        steps_per_epoch: ``n_images // global_batch`` (drop_last: every step is full).
        peak_lr: ``base_lr * global_batch / 256`` (``lr_scaling`` "linear"), or
            ``base_lr`` ("none").
        lr_scaling: the rule that made ``peak_lr``, one of :data:`LR_SCALINGS`.
    """

    global_batch: int
    per_device: int
    world_size: int
    steps_per_epoch: int
    peak_lr: float
    lr_scaling: str = "linear"


def peak_lr(base_lr: float, global_batch: int, lr_scaling: str = "linear") -> float:
    """The run's peak lr: ``base_lr * global_batch / 256`` for ``lr_scaling`` "linear"
    (:func:`~simsiam.optim.schedule.scaled_lr`), ``base_lr`` for "none".

    Example: base lr 0.05 at batch 512 -> 0.1 (linear) or 0.05 (none).

    Raises:
        ConfigError: ``lr_scaling`` is not one of :data:`LR_SCALINGS`.
    """
    if lr_scaling == "linear":
        return scaled_lr(base_lr, global_batch)
    if lr_scaling == "none":
        return base_lr
    raise ConfigError(f"optim.lr_scaling = {lr_scaling!r} is unknown: choose one of "
                      f"{LR_SCALINGS}")


def check_global_batch(global_batch: int, world_size: int) -> None:
    """Raise ConfigError unless ``global_batch`` splits into equal per-process batches of
    at least 2 (BatchNorm needs 2 samples per process); the message names the nearest
    batch sizes that work."""
    if world_size < 1 or global_batch < 1:
        raise ConfigError(f"need world_size >= 1 and train.batch_size >= 1, got {world_size} "
                          f"and {global_batch}")
    if global_batch % world_size:
        lo = global_batch // world_size * world_size
        near = " or ".join(str(b) for b in (lo, lo + world_size) if b >= 2 * world_size)
        near = near or f"{2 * world_size} or more"
        raise ConfigError(
            f"train.batch_size = {global_batch} is the global batch (all {world_size} "
            f"processes together) and must be a multiple of the world size {world_size}: "
            f"use {near}")
    if global_batch // world_size < 2:
        raise ConfigError(
            f"train.batch_size = {global_batch} over {world_size} processes leaves "
            f"{global_batch // world_size} image per process; BatchNorm needs at least 2 "
            f"per process: use {2 * world_size} or more")


def batch_plan(n_images: int, global_batch: int, world_size: int, base_lr: float,
               lr_scaling: str = "linear") -> BatchPlan:
    """The step and lr arithmetic of an epoch of ``n_images`` at ``global_batch`` on
    ``world_size`` processes; the peak lr by ``lr_scaling`` (``optim.lr_scaling``, see
    :func:`peak_lr`).

    Example: 1,000 images, global batch 128 (32 per device x 4), base lr 0.05 -> 7 steps
    per epoch (the last 104 images wait for the next epoch's shuffle), peak lr 0.025
    (linear) or 0.05 (none).

    Raises:
        ConfigError: see :func:`check_global_batch`; an unknown ``lr_scaling``.
        DataError: fewer images than one global batch.
    """
    check_global_batch(global_batch, world_size)
    lr = peak_lr(base_lr, global_batch, lr_scaling)
    if n_images < global_batch:
        raise DataError(f"the training set has {n_images} images, fewer than train.batch_size "
                        f"= {global_batch}, so no step would run; lower --batch-size or add "
                        "images")
    return BatchPlan(global_batch, global_batch // world_size, world_size,
                     n_images // global_batch, lr, lr_scaling)
