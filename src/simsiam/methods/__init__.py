"""Self-supervised methods: each owns its heads, loss, config section and rules.

Every method is a :class:`~simsiam.methods.base.Method` (see that module for the
interface) registered in :data:`METHODS` under the name of its config section
``model.<name>``. Adding a method is one file with its class and its ``Settings``
dataclass, one entry here and one field in :class:`simsiam.config.ModelConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simsiam.errors import ConfigError
from simsiam.methods.base import (
    Method,
    RunShape,
    Traits,
    param_group,
    small_images,
    step_metrics,
)
from simsiam.methods.byol import BYOL, BYOLConfig
from simsiam.methods.clip import CLIP, CLIPConfig
from simsiam.methods.losses import (
    cross_entropy_similarity,
    negative_cosine,
    siamese_loss,
    symmetric_negative_cosine,
)
from simsiam.methods.mocov2 import MoCoV2, MoCoV2Config
from simsiam.methods.simclr import SimCLR, SimCLRConfig
from simsiam.methods.simsiam import SimSiam, SimSiamConfig, SimSiamOutput
from simsiam.methods.swav import SwAV, SwAVConfig
from simsiam.models.backbones import build_backbone, feature_dim

if TYPE_CHECKING:
    from simsiam.config import ModelConfig

METHODS: dict[str, type[Method]] = {m.name: m for m in (SimSiam, SimCLR, MoCoV2, BYOL, SwAV,
                                                        CLIP)}

# Each method's table row (SIMSIAM.md section 6): (negatives, momentum encoder, queue).
TRAITS: dict[str, Traits] = {name: m.traits for name, m in METHODS.items()}


def method_class(method: str) -> type[Method]:
    """The registered class of ``method``.

    Raises:
        ConfigError: ``method`` is not registered (the message lists those that are).
    """
    if method not in METHODS:
        raise ConfigError(f"method = {method!r} is unknown: choose one of {tuple(METHODS)}")
    return METHODS[method]


def build_method(method: str, model: ModelConfig, image_size: int = 224,
                 steps_per_epoch: int = 0) -> Method:
    """Build the method named ``method`` from ``model``: the backbone of ``model.backbone``,
    ``model.stem`` and ``model.zero_init_residual`` (with ``model.image_init``, its weights
    then loaded from that file, before the method copies it into momentum encoders), the
    rest from the method's own section ``model.<method>``; with ``model.lock_image`` the
    method then locks its image tower (:meth:`Method.lock_image`).

    Args:
        method: a key of :data:`METHODS`.
        model: the ``model`` config section.
        image_size: side of the training views (settings left null take the published
            value for CIFAR-size views, at most 64 px, or ImageNet-size ones).
        steps_per_epoch: optimizer steps per epoch (settings counted in epochs, such as
            SwAV's prototype freeze, become step counts).

    Raises:
        ConfigError: unknown method, backbone or stem; a ``model.image_init`` file that
            cannot be read or whose keys or shapes do not fit the backbone (naming the file
            and the keys); ``model.lock_image`` for a method that cannot lock.
    """
    cls = method_class(method)
    backbone = build_backbone(model.backbone, model.stem, model.zero_init_residual)
    if model.image_init is not None:
        from simsiam.eval.loading import load_image_init

        load_image_init(backbone, model.image_init)
    built = cls.from_config(getattr(model, method), backbone, feature_dim(model.backbone),
                            image_size, steps_per_epoch)
    if model.lock_image:
        built.lock_image()
    return built


__all__ = ["BYOL", "BYOLConfig", "CLIP", "CLIPConfig", "METHODS", "Method", "MoCoV2",
           "MoCoV2Config", "RunShape",
           "SimCLR", "SimCLRConfig", "SimSiam", "SimSiamConfig", "SimSiamOutput", "SwAV",
           "SwAVConfig", "TRAITS", "Traits", "build_method", "cross_entropy_similarity",
           "method_class", "negative_cosine", "param_group", "siamese_loss", "small_images",
           "step_metrics", "symmetric_negative_cosine"]
