"""The registry of methods (:data:`METHODS`) and :func:`build_method`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from simsiam.errors import ConfigError
from simsiam.methods.base import Method, Traits
from simsiam.methods.byol import BYOL
from simsiam.methods.clip import CLIP
from simsiam.methods.mocov2 import MoCoV2
from simsiam.methods.simclr import SimCLR
from simsiam.methods.simsiam import SimSiam
from simsiam.methods.swav import SwAV
from simsiam.models.backbones import build_backbone, feature_dim

if TYPE_CHECKING:
    from simsiam.config.schema import ModelConfig

__all__ = ["METHODS", "TRAITS", "batch_options", "build_method", "method_class"]

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
                 steps_per_epoch: int = 0, backbone: nn.Module | None = None) -> Method:
    """Build the method named ``method`` from ``model`` on ``backbone``, the rest from the
    method's own section ``model.<method>``; with ``model.lock_image`` the method then
    locks its image tower (:meth:`Method.lock_image`).

    The backbone is the caller's: a run starting from ``model.image_init`` builds it with
    :func:`simsiam.weights.initial_backbone` (the file's weights loaded) and passes it, so
    the method copies the loaded weights into its momentum encoders. ``None``: a fresh
    backbone of ``model.backbone``, ``model.stem`` and ``model.zero_init_residual``
    (random weights, ``model.image_init`` not read).

    Args:
        method: a key of :data:`METHODS`.
        model: the ``model`` config section.
        image_size: side of the training views (settings left null take the published
            value for CIFAR-size views, at most 64 px, or ImageNet-size ones).
        steps_per_epoch: optimizer steps per epoch (settings counted in epochs, such as
            SwAV's prototype freeze, become step counts).
        backbone: the image backbone (``feature_dim(model.backbone)`` wide), or None.

    Raises:
        ConfigError: unknown method, backbone or stem; ``model.lock_image`` for a method
            that cannot lock.
    """
    cls = method_class(method)
    if backbone is None:
        backbone = build_backbone(model.backbone, model.stem, model.zero_init_residual)
    built = cls.from_config(getattr(model, method), backbone, feature_dim(model.backbone),
                            image_size, steps_per_epoch)
    if model.lock_image:
        built.lock_image()
    return built


def batch_options(method: str, model: ModelConfig) -> dict[str, Any]:
    """The options ``method``'s batches need, from its section ``model.<method>`` (its
    card's ``batch_options``: CLIP's ``context_length``; none for the others), for
    :func:`simsiam.data.loaders.make_batches`.

    Raises:
        ConfigError: ``method`` is not registered.
    """
    return method_class(method).card.batch_options(getattr(model, method))
