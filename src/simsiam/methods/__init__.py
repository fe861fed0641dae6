"""Self-supervised methods: each owns its heads and loss, nothing else."""

from __future__ import annotations

from simsiam.config import ModelConfig
from simsiam.errors import ConfigError
from simsiam.methods.losses import (
    cross_entropy_similarity,
    negative_cosine,
    siamese_loss,
    symmetric_negative_cosine,
)
from simsiam.methods.simsiam import SimSiam, SimSiamOutput
from simsiam.models.backbones import build_backbone, feature_dim


def build_method(method: str, model: ModelConfig) -> SimSiam:
    """Build the method named ``method`` on the backbone described by ``model``.

    Raises:
        ConfigError: unknown method, backbone or stem.
    """
    if method != "simsiam":
        raise ConfigError(f"method = {method!r} is unknown: choose 'simsiam'")
    c = feature_dim(model.backbone)
    backbone = build_backbone(model.backbone, model.stem, model.zero_init_residual)
    return SimSiam(backbone, c, dim=model.dim,
                   proj_hidden_dim=model.proj_hidden_dim, pred_hidden_dim=model.pred_hidden_dim,
                   proj_layers=model.proj_layers, stop_gradient=model.stop_gradient,
                   predictor=model.predictor,
                   bn=(model.proj_hidden_bn, model.proj_out_bn, model.pred_hidden_bn,
                       model.pred_out_bn),
                   similarity=model.similarity, symmetric=model.symmetric)


__all__ = ["SimSiam", "SimSiamOutput", "build_method", "cross_entropy_similarity",
           "negative_cosine", "siamese_loss", "symmetric_negative_cosine"]
