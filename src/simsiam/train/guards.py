"""Non-finite values in a run: the loss (counted on the device every step) and the
parameters (checked before every checkpoint), with the messages the user sees.

A finite loss does not prove finite weights: weights that never reach the output (the
off-centre taps of a 3x3 convolution on a 1x1 feature map, e.g. ResNet layer4 at 16 px
with the ImageNet stem) can turn NaN unseen. On this project's CPU with bf16 autocast,
PyTorch 2.14's convolution backward gives exactly those taps NaN weight gradients
(reproduced in BENCHMARKS.md's notes); a NaN there would poison the backbone as soon as
it sees larger images.
"""

from __future__ import annotations

import torch
from torch import nn


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters holding NaN or inf (one pass, one host sync per tensor)."""
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def nonfinite_loss_error(step: int, epoch: int, kept: str) -> FloatingPointError:
    """The error for a NaN/inf loss first seen at ``step`` (1-based) of ``epoch`` (0-based)."""
    return FloatingPointError(
        f"the loss became NaN or infinite at step {step} (epoch {epoch + 1}); stopped "
        f"without saving, {kept}. Lower optim.base_lr or check the data, and start a new "
        "run (another --out, or --overwrite)")


def nonfinite_parameters_error(bad: list[str], step: int, epoch: int,
                               kept: str) -> FloatingPointError:
    """The error for parameters ``bad`` found non-finite after ``step`` of ``epoch``."""
    return FloatingPointError(
        f"{len(bad)} parameter tensor(s) hold NaN or infinite values after step {step} "
        f"(epoch {epoch + 1}) although the loss stayed finite, first {bad[0]!r}; stopped "
        f"without saving, {kept}. On a CPU with bf16, convolutions on 1x1-pixel feature "
        "maps (ResNet layer4 at 16 px with the ImageNet stem) can get such gradients: "
        "use --set train.amp=fp32, larger images, or model.stem=cifar")


class NonFiniteGuard:
    """Watches a run for NaN/inf: the loss at every step, counted on the device (no host
    sync), checked at log steps and before every checkpoint; the parameters before every
    checkpoint. A failed check logs a ``nonfinite`` record and raises
    :class:`FloatingPointError` (exit code 3), before anything is saved after it.

    Args:
        device: the training device.
        first_step: the run's step count when the guard starts (after a resume).
    """

    def __init__(self, device: torch.device, first_step: int = 0) -> None:
        self.first_step = first_step
        self.bad = torch.zeros((), dtype=torch.long, device=device)  # non-finite losses
        self.clean = torch.zeros((), dtype=torch.long, device=device)  # steps before the first

    def observe(self, loss: torch.Tensor) -> None:
        """Count one step's (detached) loss."""
        self.bad += ~torch.isfinite(loss)
        self.clean += self.bad == 0

    def check_loss(self, epoch: int, logger, kept: str) -> None:
        """Raise if any process saw a non-finite loss (a collective under torchrun).

        ``epoch``: 0-based index of the epoch in progress; ``kept``: the checkpointer's
        sentence on what is left (:meth:`Checkpointer.kept`).
        """
        from simsiam.distributed.ops import all_reduce_sum

        if all_reduce_sum(self.bad).item() == 0:  # any process's NaN stops all of them
            return
        step = self.first_step + int(self.clean.item()) + 1
        logger.log({"kind": "nonfinite", "step": step, "epoch": epoch})
        raise nonfinite_loss_error(step, epoch, kept)

    def check_parameters(self, model: nn.Module, step: int, epoch: int, logger,
                         kept: str) -> None:
        """Raise if a parameter of ``model`` holds NaN or inf after ``step`` of ``epoch``
        (0-based index of the epoch the step belongs to)."""
        bad = nonfinite_parameters(model)
        if bad:
            logger.log({"kind": "nonfinite", "step": step, "epoch": epoch, "parameters": bad})
            raise nonfinite_parameters_error(bad, step, epoch, kept)
