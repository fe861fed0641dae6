"""Self-supervised methods: each owns its heads and loss, nothing else.

Every method is an ``nn.Module`` with ``forward(views) -> (loss, metrics)`` (metrics:
``collapse_std`` of its embedding and ``features``, the detached backbone output of the
first view), ``param_groups()`` and ``on_step_end(step, total_steps)``, and exposes its
``backbone``; the trainer needs nothing else.
"""

from __future__ import annotations

from torch import nn

from simsiam.config import METHODS, ModelConfig, resolved_queue_size, small_images
from simsiam.errors import ConfigError
from simsiam.methods.byol import BYOL
from simsiam.methods.losses import (
    cross_entropy_similarity,
    negative_cosine,
    siamese_loss,
    symmetric_negative_cosine,
)
from simsiam.methods.mocov2 import MoCoV2
from simsiam.methods.simclr import SimCLR
from simsiam.methods.simsiam import SimSiam, SimSiamOutput
from simsiam.methods.swav import SwAV
from simsiam.models.backbones import build_backbone, feature_dim

# Each method's table row (SIMSIAM.md section 6, the seed's comparison).
TRAITS = {  # (negatives, momentum encoder, memory bank / queue)
    "simsiam": (False, False, False), "simclr": (True, False, False),
    "mocov2": (True, True, True), "byol": (False, True, False), "swav": (False, False, False),
}


def build_method(method: str, model: ModelConfig, image_size: int = 224,
                 steps_per_epoch: int = 0) -> nn.Module:
    """Build the method named ``method`` on the backbone described by ``model``.

    Args:
        method: simsiam | simclr | mocov2 | byol | swav.
        model: heads and method settings; a null setting takes the method's published
            value, for CIFAR-size views (``image_size`` <= 64) or ImageNet-size ones.
        image_size: side of the training views (picks those defaults).
        steps_per_epoch: optimizer steps per epoch (SwAV freezes its prototypes for
            ``model.freeze_prototypes_epochs`` epochs).

    Raises:
        ConfigError: unknown method, backbone or stem.
    """
    if method not in METHODS:
        raise ConfigError(f"method = {method!r} is unknown: choose one of {METHODS}")
    c = feature_dim(model.backbone)
    backbone = build_backbone(model.backbone, model.stem, model.zero_init_residual)
    small = small_images(image_size)
    if method == "simsiam":
        return SimSiam(backbone, c, dim=model.dim, proj_hidden_dim=model.proj_hidden_dim,
                       pred_hidden_dim=model.pred_hidden_dim, proj_layers=model.proj_layers,
                       stop_gradient=model.stop_gradient, predictor=model.predictor,
                       bn=(model.proj_hidden_bn, model.proj_out_bn, model.pred_hidden_bn,
                           model.pred_out_bn),
                       similarity=model.similarity, symmetric=model.symmetric)
    t, m = model.temperature, model.ema_momentum
    if method == "simclr":
        return SimCLR(backbone, c, dim=model.dim, hidden_dim=model.proj_hidden_dim,
                      temperature=t if t is not None else (0.5 if small else 0.1))
    if method == "mocov2":
        return MoCoV2(backbone, c, dim=model.dim, hidden_dim=model.proj_hidden_dim or 2048,
                      queue_size=resolved_queue_size(model, image_size),
                      momentum=m if m is not None else (0.99 if small else 0.999),
                      temperature=t if t is not None else 0.2)
    if method == "byol":
        return BYOL(backbone, c, dim=model.dim, hidden_dim=model.proj_hidden_dim or 4096,
                    base_tau=m if m is not None else 0.996)
    return SwAV(backbone, c, dim=model.dim, hidden_dim=model.proj_hidden_dim or 2048,
                num_prototypes=model.num_prototypes,
                temperature=t if t is not None else 0.1, epsilon=model.sinkhorn_epsilon,
                sinkhorn_iterations=model.sinkhorn_iterations, large_views=2,
                freeze_prototypes_steps=round(model.freeze_prototypes_epochs * steps_per_epoch),
                queue_length=model.swav_queue_size,
                queue_start_steps=round(model.swav_queue_start_epochs * steps_per_epoch))


__all__ = ["BYOL", "METHODS", "MoCoV2", "SimCLR", "SimSiam", "SimSiamOutput", "SwAV",
           "TRAITS", "build_method", "cross_entropy_similarity", "negative_cosine",
           "siamese_loss", "symmetric_negative_cosine"]
