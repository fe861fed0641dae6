"""CLIP's section ``model.clip`` and card (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simsiam.methods.card import MethodCard


@dataclass
class CLIPConfig:
    """``model.clip`` (CLIP section 2.4-2.5 and Table 20; open_clip's ``ViT-B-32`` text
    tower: width 512, 8 heads, 12 layers, context 77, vocabulary 49,408)."""

    embed_dim: int = 512  # the shared image-text embedding width
    context_length: int = 77  # tokens per caption, start and end included; longer ones are cut
    text_width: int = 512  # text transformer width
    text_heads: int = 8  # text transformer attention heads
    text_layers: int = 12  # text transformer layers
    init_temperature: float = 0.07  # logit scale starts at 1 / 0.07
    max_logit_scale: float = 100.0  # the scale exp(t) is clamped to at most this


# The published settings of other sections (CLIP section 2.5; open_clip's training
# defaults): AdamW (betas 0.9/0.98, eps 1e-6, weight decay 0.2 on weights only), the lr
# given directly (not scaled by the batch), warm-up then cosine. Its views (a random crop
# of 90-100% of the image, nothing else) are the "clip" recipe (simsiam.augment.recipes).
PUBLISHED = {
    "optim.optimizer": "adamw", "optim.base_lr": 5e-4, "optim.lr_scaling": "none",
    "optim.weight_decay": 0.2, "optim.betas": [0.9, 0.98], "optim.eps": 1e-6,
    "optim.schedule": "step",
}


def batch_options(settings: CLIPConfig) -> dict[str, Any]:
    """A caption batch's tokens: ``context_length`` per caption (``model.clip``)."""
    return {"context_length": settings.context_length}


CARD = MethodCard(name="clip", settings=CLIPConfig, view_recipe="clip", batch_kind="captions",
                  published=PUBLISHED, batch_options=batch_options, can_lock_image=True)
