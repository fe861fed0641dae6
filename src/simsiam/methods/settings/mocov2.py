"""MoCo v2's section ``model.mocov2`` and card (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simsiam.methods.card import MethodCard


@dataclass
class MoCoV2Config:
    """``model.mocov2`` (SIMSIAM.md section 6; MoCo v2: 2-layer MLP head c -> c -> 128, T = 0.2;
    facebookresearch/moco ``builder.py``: the hidden width is the backbone's, ``dim_mlp``)."""

    dim: int = 128  # output width of the head
    hidden_dim: int | None = None  # hidden width of the head; None: the backbone's width c
    shuffle_bn: bool = True  # split-batch BN + shuffled keys on one device (MoCo's demo)
    bn_splits: int = 8  # BN groups per batch on one device (the demo's 8 "GPUs")
    temperature: float = 0.2  # InfoNCE temperature
    momentum: float | None = None  # key encoder EMA; None: 0.99 for views <= 64 px, else 0.999
    queue_size: int | None = None  # negatives; None: 4,096 for views <= 64 px, else 65,536


def published_optim(image_size: int) -> dict[str, Any]:
    """SGD with lr 0.03 at batch 256 (MoCo v2; momentum and weight decay the preset's)."""
    return {"optim.base_lr": 0.03}


CARD = MethodCard(name="mocov2", settings=MoCoV2Config, view_recipe="mocov2",
                  published_optim=published_optim)
