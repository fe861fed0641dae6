"""What every method is to the rest of the package: one small interface, one registry entry.

A method owns its networks, its loss, its config section (``model.<name>``), the checks of
that section, its optimizer parameter groups and the rules those groups carry. The
trainer, the benchmarks and the evaluation know only this interface (see
``docs/ARCHITECTURE.md``):

- ``Method.Settings``: the dataclass of its section ``model.<name>`` (defaults = the
  published values; ``None`` where the published value depends on the view size);
- ``Method.from_config(settings, backbone, feature_dim, image_size, steps_per_epoch)``;
- ``Method.check(settings, run, where)``: range checks that need the run's shape (batch,
  epochs, views), raising :class:`~simsiam.errors.ConfigError`;
- ``method(inputs) -> (loss, metrics)``: ``inputs`` is what the method's kind of batch
  holds (``batch_kind = "views"``: a list of view batches ``(B, 3, H, W)``);
  ``metrics`` is :func:`step_metrics`: detached 0-dim ``collapse_std``, the ``(B, d)``
  ``embedding`` it is computed on and the ``(B, c)`` backbone ``features``;
- ``method.param_groups()``: optimizer groups with flags the loop applies without knowing
  the method (``fixed_lr``: the lr stays at the peak lr, SimSiam's Table 1c;
  ``no_weight_decay``: weight decay 0 for the group);
- ``method.on_step_end(step, total_steps)``: EMA targets, queues, frozen prototypes;
- ``Method.can_lock_image`` and ``method.lock_image()``: LiT's locked image tower
  (``model.lock_image``), for a method with a second tower that learns against the
  backbone loaded by ``model.image_init``; the others refuse it;
- ``method.backbone``, ``method.dim`` (the width of the embedding the collapse measures
  watch) and ``method.collapse_measure`` (which of them can see a collapse of that
  embedding: ``"std"``, the paper's, or ``"rank"`` when the embedding leaves an
  affine-free BatchNorm, see :mod:`simsiam.measures`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from simsiam.errors import ConfigError
from simsiam.measures import collapse_std
from simsiam.methods.card import MethodCard


class Traits(NamedTuple):
    """A method's row in the seed's comparison table (SIMSIAM.md section 6)."""

    negatives: bool
    momentum_encoder: bool
    queue: bool


@dataclass(frozen=True)
class RunShape:
    """The facts of a run that a method's checks may need (from other config sections).

    Attributes:
        image_size: side of the training views, pixels (``data.image_size``).
        batch_size: the global batch (``train.batch_size``).
        epochs: ``train.epochs``.
        small_crops: extra small views per image (``augment.small_crops``).
    """

    image_size: int
    batch_size: int
    epochs: int
    small_crops: int = 0


def param_group(name: str, modules: Iterable[nn.Module], fixed_lr: bool = False,
                no_weight_decay: bool = False) -> dict[str, Any]:
    """An optimizer parameter group: the trainable parameters of ``modules`` and the flags
    the training loop applies (see the module docstring)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    return {"name": name, "params": params, "fixed_lr": fixed_lr,
            "no_weight_decay": no_weight_decay}


def step_metrics(z: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """What every method's step returns beside its loss, all detached, no host sync:
    ``collapse_std`` of its embedding ``z`` ``(B, d)`` (0-dim), ``embedding`` (``z``
    itself; the loop measures its effective rank on log steps only) and ``features`` (the
    backbone's ``(B, c)`` output of the first view, for the online probe)."""
    return {"collapse_std": collapse_std(z), "embedding": z.detach(),
            "features": features.detach()}


def decay_groups(name: str, modules: Iterable[nn.Module]) -> list[dict[str, Any]]:
    """Two groups of ``modules``' trainable parameters: ``name`` (weights, matrices and
    kernels) and ``name + "_bias_bn"`` (biases and BatchNorm gains and shifts, every 1-D
    parameter) with ``no_weight_decay``: SimCLR's and BYOL's rule (their LARS neither
    decays nor adapts biases and BN parameters; google-research/simclr ``model.py``
    ``exclude_from_weight_decay``, deepmind-research byol ``exclude_bias_and_norm``).
    Empty groups are left out."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    return nonempty({"name": name, "params": [p for p in params if p.ndim > 1],
                     "fixed_lr": False, "no_weight_decay": False},
                    {"name": f"{name}_bias_bn", "params": [p for p in params if p.ndim <= 1],
                     "fixed_lr": False, "no_weight_decay": True})


def nonempty(*groups: dict[str, Any]) -> list[dict[str, Any]]:
    """``groups`` without those that hold no trainable parameter."""
    return [g for g in groups if g["params"]]


class Method(nn.Module):
    """Base class of the self-supervised methods (see the module docstring).

    Subclasses set the class attributes and implement ``from_config``, ``forward`` and
    ``param_groups``; ``check`` and ``on_step_end`` default to doing nothing.

    Class attributes:
        card: the method's :class:`~simsiam.methods.card.MethodCard` (torch-free: its
            section, published settings, view recipe and batch options); the attributes
            below repeat its values.
        name: the registry key and the name of its config section, ``model.<name>``.
        Settings: the dataclass of that section.
        traits: negatives / momentum encoder / queue.
        batch_kind: what a batch is (``"views"``: the augmented views of a batch of
            images with their dataset indices, see :mod:`simsiam.data.batches`).
        multi_crop: takes more than two views (``augment.small_crops > 0``).
        published: settings of other sections that the method's authors used, applied
            when ``--method`` switches a preset to this method (``--set`` still wins);
            their optimizer settings are :meth:`published_optim` (applied unless the
            preset holds its own optimizer for every method, ``optim.method_optimizer``).
        can_lock_image: implements :meth:`lock_image` (``model.lock_image``: a second
            tower learns against a frozen backbone; the config check refuses the key for
            the others).
    """

    card: ClassVar[MethodCard]  # the torch-free facts (simsiam.methods.settings)
    name: ClassVar[str]
    Settings: ClassVar[type]
    traits: ClassVar[Traits]
    batch_kind: ClassVar[str] = "views"
    multi_crop: ClassVar[bool] = False
    published: ClassVar[dict[str, Any]] = {}
    # key prefixes of the method's parts beside backbone.* in a training checkpoint that
    # the evaluation commands recognise and leave out (besides projector/predictor)
    outside_backbone: ClassVar[tuple[str, ...]] = ()
    can_lock_image: ClassVar[bool] = False

    backbone: nn.Module
    dim: int
    collapse_measure: str = "std"  # "rank" when the embedding leaves an affine-free BN

    @classmethod
    def published_optim(cls, image_size: int) -> dict[str, Any]:
        """The optimizer settings the method's authors used at views of ``image_size`` px
        (``optim.*`` keys; e.g. LARS for SimCLR, BYOL and SwAV): its card's."""
        return cls.card.published_optim(image_size)

    @classmethod
    def from_config(cls, settings: Any, backbone: nn.Module, feature_dim: int,
                    image_size: int = 224, steps_per_epoch: int = 0) -> Method:
        """Build the method from its section on ``backbone`` (``feature_dim`` wide)."""
        raise NotImplementedError

    @classmethod
    def check(cls, settings: Any, run: RunShape, where: str) -> None:
        """Raise :class:`~simsiam.errors.ConfigError` for a bad value in ``settings``."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups made with :func:`param_group` (trainable parameters only)."""
        raise NotImplementedError

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after every optimizer step; ``step`` is its 0-based index."""

    def lock_image(self) -> None:
        """Freeze the backbone (LiT's locked image tower; ``model.lock_image``), called by
        :func:`~simsiam.methods.build_method` after ``model.image_init`` is loaded. Methods
        with ``can_lock_image`` implement it.

        Raises:
            ConfigError: always, for a method without a second tower (the config check
                refuses ``model.lock_image`` for it first).
        """
        raise ConfigError(f"model.lock_image = True is not allowed: method {self.name!r} has "
                          "no second tower to train against a locked backbone; only clip "
                          "locks its image tower: set model.lock_image=false")

    def export_extras(self) -> dict[str, dict[str, torch.Tensor]]:
        """Weights the run exports beside ``backbone.safetensors``: ``{file stem: state
        dict}`` (CLIP: ``text_tower``). Default: none."""
        return {}

    def forward(self, inputs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError
