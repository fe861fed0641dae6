"""Backbones: torchvision ResNets with their classifier removed.

Source: SIMSIAM.md section 2 (torchvision ResNet, ``zero_init_residual=True``, fc replaced)
and Appendix D of the paper (the "CIFAR variant": 3x3 stride-1 first conv, no max-pool).
The module keeps torchvision's attribute names, so its ``state_dict()`` has exactly the
keys of a torchvision ResNet without ``fc.*`` and loads into one (after the same stem
change for the CIFAR variant).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from simsiam.errors import ConfigError

_FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
BACKBONES = tuple(_FEATURE_DIMS)  # the torchvision ResNets a run can use
STEMS = ("imagenet", "cifar")  # 7x7 stride-2 conv + max-pool, or 3x3 stride-1 (Appendix D)


def feature_dim(name: str) -> int:
    """Width c of the pooled (pool5) features of backbone ``name``.

    Raises:
        ConfigError: ``name`` is not one of resnet18, resnet34, resnet50.
    """
    if name not in _FEATURE_DIMS:
        raise ConfigError(f"model.backbone = {name!r} is unknown: choose one of "
                          f"{tuple(_FEATURE_DIMS)}")
    return _FEATURE_DIMS[name]


def torchvision_resnet(name: str, stem: str = "imagenet", num_classes: int = 1000,
                       zero_init_residual: bool = True) -> nn.Module:
    """A plain torchvision ResNet (with fc), with the CIFAR stem applied if asked.

    This is what an exported backbone loads into: ``model.load_state_dict(sd, strict=False)``
    then reports only ``fc.weight`` and ``fc.bias`` missing.

    Args:
        name: resnet18, resnet34 or resnet50.
        stem: "imagenet" (7x7 stride-2 conv + max-pool) or "cifar" (3x3 stride-1, no pool).
        num_classes: width of the fc layer.
        zero_init_residual: start each residual branch's last BN weight at 0 (official
            SimSiam code); False is torchvision's default.

    Raises:
        ConfigError: unknown ``name`` or ``stem``.
    """
    feature_dim(name)
    net = getattr(tvm, name)(weights=None, num_classes=num_classes,
                             zero_init_residual=zero_init_residual)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    elif stem != "imagenet":
        raise ConfigError(f"model.stem = {stem!r} is unknown: choose 'imagenet' or 'cifar'")
    return net


def build_backbone(name: str = "resnet50", stem: str = "imagenet",
                   zero_init_residual: bool = True) -> nn.Module:
    """A torchvision ResNet whose ``fc`` is ``nn.Identity``: images -> pool5 features.

    Input ``(B, 3, H, W)`` float; output ``(B, c)`` with c = :func:`feature_dim` (512 for
    ResNet-18/34, 2048 for ResNet-50). Built with ``zero_init_residual=True`` as in the
    official SimSiam code unless told otherwise.

    Raises:
        ConfigError: unknown ``name`` or ``stem``.
    """
    net = torchvision_resnet(name, stem, zero_init_residual=zero_init_residual)
    net.fc = nn.Identity()
    return net


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (``requires_grad`` ones only when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict with torchvision key names, contiguous CPU tensors.

    Strips a ``module.`` prefix left by DistributedDataParallel or ``_orig_mod.`` left by
    ``torch.compile``, so downstream loaders never see wrapper names.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in backbone.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value.detach().cpu().contiguous()
    return out
