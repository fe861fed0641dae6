"""BYOL's section ``model.byol`` and card (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simsiam.methods.card import MethodCard


@dataclass
class BYOLConfig:
    """``model.byol`` (SIMSIAM.md section 6; BYOL section 3.3). Its optimizer (LARS, lr
    0.2 x batch/256, wd 1.5e-6) is :meth:`BYOL.published_optim`."""

    dim: int = 256  # projection width
    hidden_dim: int = 4096  # hidden width of projector and predictor
    base_tau: float = 0.996  # target EMA momentum at step 0, rising to 1 (cosine)


def published_optim(image_size: int) -> dict[str, Any]:
    """LARS, lr 0.2 x batch/256, weight decay 1.5e-6, per-step cosine after 10 warm-up
    epochs (BYOL has no CIFAR recipe: the same at every view size)."""
    return {"optim.optimizer": "lars", "optim.base_lr": 0.2, "optim.weight_decay": 1.5e-6,
            "optim.warmup_epochs": 10, "optim.schedule": "step"}


CARD = MethodCard(name="byol", settings=BYOLConfig, view_recipe="byol",
                  published_optim=published_optim)
