"""Learning-rate schedule: linear scaling, optional linear warmup, cosine decay.

Source: SIMSIAM.md section 3 and paper section 4: lr = base_lr x batch_size / 256; cosine
decay to 0 over the run, evaluated once per epoch in the official code (``schedule:
epoch``) or at every step (``schedule: step``); no warmup in the paper except for batches
of 1024 and more (Table 2: 10 epochs). The predictor may keep the initial lr (Table 1c).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule: ``base_lr * batch_size / 256``."""
    return base_lr * batch_size / 256


def cosine_lr(peak_lr: float, epoch: int, step_in_epoch: int, steps_per_epoch: int,
              epochs: int, warmup_epochs: float = 0.0, per_step: bool = False) -> float:
    """The encoder lr at (``epoch``, ``step_in_epoch``), both counted from 0.

    During warmup the lr rises linearly per step: ``peak * min(1, (s + 1) / warmup_steps)``
    for global step s (a warm-up of a fractional number of steps never overshoots the
    peak). Afterwards ``peak * 0.5 * (1 + cos(pi * progress))`` with progress
    ``(t - warmup) / (epochs - warmup)``, where t is the epoch index (per-epoch schedule)
    or the fractional epoch ``epoch + step_in_epoch / steps_per_epoch`` (per-step).

    Example: peak 0.1 (base 0.05 at batch 512), 10 epochs, epoch 3 -> 0.0793893.
    """
    global_step = epoch * steps_per_epoch + step_in_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    if global_step < warmup_steps:
        return peak_lr * min(1.0, (global_step + 1) / warmup_steps)
    t = epoch + step_in_epoch / steps_per_epoch if per_step else float(epoch)
    t = max(t, warmup_epochs)
    progress = (t - warmup_epochs) / (epochs - warmup_epochs)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def predictor_lr(peak_lr: float, encoder_lr: float, fixed: bool) -> float:
    """The lr of a ``fixed_lr`` group such as SimSiam's predictor: the initial (peak) lr when
    ``fixed`` (Table 1c), else the encoder's."""
    return peak_lr if fixed else encoder_lr


@dataclass(frozen=True)
class LrSchedule:
    """The run's lr at every step, written into the optimizer's groups.

    ``peak_lr`` is the scaled lr (:func:`scaled_lr` of the global batch). Every group
    follows :func:`cosine_lr`, except a group flagged ``fixed_lr`` by its method (SimSiam's
    predictor with ``fix_pred_lr``, Table 1c), which keeps ``peak_lr``.
    """

    peak_lr: float
    steps_per_epoch: int
    epochs: int
    warmup_epochs: float = 0.0
    per_step: bool = False

    def lr(self, epoch: int, step_in_epoch: int) -> float:
        """The scheduled lr at (``epoch``, ``step_in_epoch``), both from 0."""
        return cosine_lr(self.peak_lr, epoch, step_in_epoch, self.steps_per_epoch, self.epochs,
                         self.warmup_epochs, self.per_step)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step_in_epoch: int) -> float:
        """Set every group's lr for the coming step; return the scheduled lr."""
        lr = self.lr(epoch, step_in_epoch)
        for group in optimizer.param_groups:
            group["lr"] = predictor_lr(self.peak_lr, lr, bool(group.get("fixed_lr")))
        return lr
