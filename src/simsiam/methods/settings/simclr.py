"""SimCLR's section ``model.simclr`` and card (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simsiam.methods.card import MethodCard, small_images


@dataclass
class SimCLRConfig:
    """``model.simclr`` (SIMSIAM.md section 6; SimCLR section 2.1, Appendix B.9). Its
    optimizer (LARS) is :meth:`SimCLR.published_optim`."""

    dim: int = 128  # output width of the projector
    hidden_dim: int | None = None  # projector hidden width; None: the backbone's width c
    temperature: float | None = None  # None: 0.5 for views <= 64 px (CIFAR), else 0.1


def published_optim(image_size: int) -> dict[str, Any]:
    """LARS with a per-step cosine after a 10-epoch warm-up (google-research/simclr):
    on CIFAR-size views lr 1.0 x batch/256 and weight decay 1e-4 (its README's CIFAR-10
    command; Appendix B.9), else 0.3 x batch/256 and 1e-6 (ImageNet)."""
    lr, wd = (1.0, 1e-4) if small_images(image_size) else (0.3, 1e-6)
    return {"optim.optimizer": "lars", "optim.base_lr": lr, "optim.weight_decay": wd,
            "optim.warmup_epochs": 10, "optim.schedule": "step"}


CARD = MethodCard(name="simclr", settings=SimCLRConfig, view_recipe="simclr",
                  published_optim=published_optim)
