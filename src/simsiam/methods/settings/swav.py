"""SwAV's section ``model.swav`` and card (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simsiam.methods.card import MethodCard


@dataclass
class SwAVConfig:
    """``model.swav`` (SIMSIAM.md section 6; SwAV sections 3.1-3.2 and Appendix A).

    The feature queue (SwAV: 3,840 rows from epoch 15 when the batch is under 256 on
    ImageNet) is off by default; set ``queue_size`` to use it.
    """

    dim: int = 128  # projection width
    hidden_dim: int = 2048  # projector hidden width
    num_prototypes: int = 3000  # K
    temperature: float = 0.1  # T of the swapped prediction
    sinkhorn_epsilon: float = 0.05  # entropy regularisation of the Sinkhorn-Knopp codes
    sinkhorn_iterations: int = 3  # Sinkhorn-Knopp iterations
    freeze_prototypes_epochs: float = 1.0  # prototypes frozen for the first epoch
    queue_size: int = 0  # feature-queue rows (0: none; SwAV uses 3,840 at small batches)
    queue_start_epochs: float = 15.0  # the queue fills from this epoch on


def published_optim(image_size: int) -> dict[str, Any]:
    """LARS over every parameter (apex LARC in ``main_swav.py``), lr 0.3 x batch/256
    (4.8 at 4,096), weight decay 1e-6, per-step cosine after 10 warm-up epochs."""
    return {"optim.optimizer": "lars", "optim.base_lr": 0.3, "optim.weight_decay": 1e-6,
            "optim.warmup_epochs": 10, "optim.schedule": "step"}


CARD = MethodCard(name="swav", settings=SwAVConfig, view_recipe="swav", multi_crop=True,
                  published={"augment.small_crops": 6}, published_optim=published_optim)
