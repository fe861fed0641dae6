"""What the config layer knows of a method without importing torch: its :class:`MethodCard`.

Each method's card lives beside its ``Settings`` dataclass in
:mod:`simsiam.methods.settings` (torch-free), and its :class:`~simsiam.methods.base.Method`
class points to it (``Method.card``). The config loader reads the card (published
settings, view recipe, batch kind) before any network exists; the data loaders read the
batch options the card derives from the method's section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MethodCard", "no_batch_options", "no_published_optim", "small_images"]


def small_images(image_size: int) -> bool:
    """Whether the CIFAR-scale published values apply (views of at most 64 px)."""
    return image_size <= 64


def no_published_optim(image_size: int) -> dict[str, Any]:
    """A method whose authors' optimizer is the preset's: no ``optim.*`` settings."""
    return {}


def no_batch_options(settings: Any) -> dict[str, Any]:
    """A method whose batches need nothing from its section: no options."""
    return {}


@dataclass(frozen=True)
class MethodCard:
    """A method as the config and data layers see it.

    Attributes:
        name: the registry key and its config section ``model.<name>``.
        settings: the dataclass of that section (defaults: the published values).
        view_recipe: the :data:`simsiam.augment.recipes.RECIPES` entry ``augment.recipe:
            auto`` stands for (its authors' views).
        batch_kind: what a batch is: ``"views"`` (augmented views of images) or
            ``"captions"`` (one view and a caption's tokens), see :mod:`simsiam.data.batches`.
        published: settings of other sections its authors used (``{"augment.small_crops":
            6}``), applied when ``--method`` switches a preset to this method.
        published_optim: ``image_size -> {"optim.<key>": value}``: its authors' optimizer.
        batch_options: ``settings -> {option: value}`` its batches need (CLIP's
            ``context_length``), passed to :func:`simsiam.data.loaders.make_loader`.
        multi_crop: takes more than two views (``augment.small_crops > 0``).
        can_lock_image: has a second tower that learns against a locked backbone.
    """

    name: str
    settings: type
    view_recipe: str
    batch_kind: str = "views"
    published: dict[str, Any] = field(default_factory=dict)
    published_optim: Callable[[int], dict[str, Any]] = no_published_optim
    batch_options: Callable[[Any], dict[str, Any]] = no_batch_options
    multi_crop: bool = False
    can_lock_image: bool = False
