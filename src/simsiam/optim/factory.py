"""The optimizer factory: one place that turns a method's parameter groups into an optimizer.

Used by the trainer, ``simsiam bench`` and the benchmarks. ``optim.optimizer`` names the
optimizer (:data:`OPTIMIZERS`); a method's published settings may choose another one.
Each group carries the method's flags (:mod:`simsiam.methods.base`): ``no_weight_decay``
is applied here (the group's weight decay becomes 0); ``fixed_lr`` is applied by the
schedule (:class:`simsiam.optim.schedule.LrSchedule`).

Source: SIMSIAM.md section 3 (SGD, momentum 0.9, weight decay on all parameters);
LARS (You et al. 2017) as SimCLR, BYOL and SwAV ran it, from ``timm.optim.Lars``;
AdamW (Loshchilov and Hutter 2019, decoupled weight decay) with CLIP's betas and eps
(Radford et al. 2021, section 2.5 and Table 20: beta2 0.98, eps 1e-6) from
``optim.betas`` and ``optim.eps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from simsiam.optim.config import OptimConfig


def _sgd(groups: list[dict[str, Any]], optim: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (SIMSIAM.md section 3); ``fused``: one kernel for the whole update
    on CPU and CUDA, the same update rule."""
    return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay, fused=True)


def _adamw(groups: list[dict[str, Any]], optim: OptimConfig,
           lr: float) -> torch.optim.Optimizer:
    """AdamW: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, then
    ``w <- w (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`` with
    ``(b1, b2)`` = ``optim.betas``, ``eps`` = ``optim.eps`` and ``wd`` the group's weight
    decay (``optim.weight_decay``, 0 in a ``no_weight_decay`` group); ``fused``: one
    kernel for the whole update, the same rule."""
    b1, b2 = optim.betas
    return torch.optim.AdamW(groups, lr=lr, betas=(float(b1), float(b2)), eps=optim.eps,
                             weight_decay=optim.weight_decay, fused=True)


def _lars(groups: list[dict[str, Any]], optim: OptimConfig,
          lr: float) -> torch.optim.Optimizer:
    """LARS, ``timm.optim.Lars`` with trust coefficient 0.001 and no clipping: for each
    parameter ``p`` with gradient ``g`` and its group's weight decay ``wd``, the step uses
    ``(g + wd p) * 0.001 ||p|| / (||g|| + wd ||p|| + 1e-8)`` (unchanged where ``||p||`` or
    ``||g||`` is 0), then momentum (``optim.momentum``) and the lr.

    Which parameters adapt follows the groups' flags, as each author's code does: a
    ``no_weight_decay`` group (SimCLR's and BYOL's biases and BN parameters,
    :func:`simsiam.methods.base.decay_groups`) is neither decayed nor adapted (plain SGD
    with momentum); every other group is always adapted (SwAV wraps SGD in apex's
    ``LARC(trust_coefficient=0.001, clip=False)``, which adapts every parameter). The
    trust ratio is apex LARC's ``||g|| + wd ||p||``; SimCLR's and BYOL's own LARS divide
    by ``||g + wd p||`` instead, equal when ``g`` and ``p`` are aligned and close when
    ``wd`` is small (1e-6 there)."""
    from timm.optim import Lars

    for g in groups:
        g["always_adapt"] = not g["no_weight_decay"]
    return Lars(groups, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                trust_coeff=0.001, trust_clip=False)


# name -> (groups, the optim section, initial lr) -> optimizer
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], Any, float], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "lars": _lars,
    "adamw": _adamw,
}


def build_optimizer(groups: list[dict[str, Any]], optim: OptimConfig,
                    lr: float) -> torch.optim.Optimizer:
    """The optimizer ``optim.optimizer`` over ``groups`` (a method's ``param_groups()``).

    Args:
        groups: dicts with ``params`` and optionally ``name``, ``fixed_lr`` and
            ``no_weight_decay`` (kept in the optimizer's groups, so the schedule and a
            resumed run see them).
        optim: the ``optim`` config section (the optimizer's name, weight decay; SGD's
            momentum, AdamW's betas and eps).
        lr: the initial lr of every group (the schedule sets it before each step).

    Raises:
        KeyError: an optimizer name that :data:`OPTIMIZERS` lacks (the config check
            refuses it first, naming ``optim.optimizer``).
    """
    prepared = []
    for g in groups:
        g = dict(g)
        g.setdefault("fixed_lr", False)
        g.setdefault("no_weight_decay", False)
        if g["no_weight_decay"]:
            g["weight_decay"] = 0.0
        prepared.append(g)
    return OPTIMIZERS[optim.optimizer](prepared, optim, lr)
