"""Backbones: torchvision ResNets with their classifier removed, or any timm model.

Source: SIMSIAM.md section 2 (torchvision ResNet, ``zero_init_residual=True``, fc replaced)
and Appendix D of the paper (the "CIFAR variant": 3x3 stride-1 first conv, no max-pool).
The module keeps torchvision's attribute names, so its ``state_dict()`` has exactly the
keys of a torchvision ResNet without ``fc.*`` and loads into one (after the same stem
change for the CIFAR variant).

``timm/<name>`` is any model of timm (``timm.list_models()``), built with
``timm.create_model(name, pretrained=False, num_classes=0)``: its classifier removed, so it
maps images to its pooled features (``num_features`` wide), and its ``state_dict()`` keeps
timm's key names. timm is imported only when such a name is used, so ``import simsiam``
stays fast. ``model.stem`` and ``model.zero_init_residual`` apply to the torchvision
ResNets only (timm's ResNets start each residual branch's last BN at 0 themselves).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from simsiam.errors import ConfigError

_FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
BACKBONES = tuple(_FEATURE_DIMS)  # the torchvision ResNets a run can use; or timm/<name>
STEMS = ("imagenet", "cifar")  # 7x7 stride-2 conv + max-pool, or 3x3 stride-1 (Appendix D)
TIMM_PREFIX = "timm/"  # model.backbone = timm/<name>: any model timm lists


def is_timm(name: str) -> bool:
    """Whether backbone ``name`` is a timm model (``timm/<name>``)."""
    return name.startswith(TIMM_PREFIX)


def timm_name(name: str) -> str:
    """The timm model name of ``timm/<name>`` (``timm/resnet18`` -> ``resnet18``)."""
    return name[len(TIMM_PREFIX):]


def _timm() -> Any:
    """The ``timm`` module, imported on first use (it takes seconds to import)."""
    import timm

    return timm


def timm_model_known(name: str) -> bool:
    """Whether timm has model ``name`` (without the ``timm/`` prefix): a registered
    architecture, with or without a pretrained tag (``resnet18``, ``resnet18.a1_in1k``)."""
    timm = _timm()
    return bool(name) and "*" not in name and (timm.is_model(name) or name in
                                                timm.list_models(pretrained=True))


def timm_hint(name: str) -> str:
    """How to find a timm model near ``name``: up to three close names and the
    ``timm.list_models`` pattern of its family (``resnet999`` -> ``'*resnet*'``)."""
    import difflib

    timm = _timm()
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    letters = re.match(r"[a-z]+", name.lower())
    family = letters.group(0) if letters else "resnet"
    near = f"did you mean {', '.join(TIMM_PREFIX + c for c in close)}? " if close else ""
    return f"{near}see timm.list_models('*{family}*') for the names"


def _build_timm(name: str) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=0)`` (pooled features).

    Raises:
        ConfigError: timm has no model ``name``.
    """
    if not timm_model_known(name):
        raise ConfigError(f"model.backbone = {TIMM_PREFIX + name!r} is unknown to timm: "
                          f"{timm_hint(name)}")
    return _timm().create_model(name, pretrained=False, num_classes=0)


def timm_feature_dim(net: nn.Module) -> int:
    """Width of what a timm model built with ``num_classes=0`` returns: its
    ``head_hidden_size`` when it has one (models with a layer between the pooling and the
    classifier, e.g. MobileNetV3's 1x1 conv head: ``mobilenetv3_small_050`` has
    ``num_features`` 288 but returns 1024), else its ``num_features``."""
    return int(getattr(net, "head_hidden_size", None) or net.num_features)


@functools.cache
def _timm_feature_dim(name: str) -> int:
    """:func:`timm_feature_dim` of timm model ``name``, built once on the meta device (no
    memory, no initialisation); on the CPU if the model cannot be built there."""
    try:
        with torch.device("meta"):
            net = _build_timm(name)
    except ConfigError:
        raise
    except Exception:  # a model whose construction needs real tensors
        net = _build_timm(name)
    return timm_feature_dim(net)


@functools.cache
def _meta_timm(name: str) -> nn.Module | None:
    """timm model ``name`` built on the meta device, in eval mode; None if it cannot be
    built there."""
    try:
        with torch.device("meta"):
            return _build_timm(name).eval()
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a model whose construction needs real tensors
        return None


def _meta_forward_error(net: nn.Module, side: int) -> str | None:
    """What a forward pass of two ``side`` x ``side`` images on the meta device raises
    (shapes only: no memory, no arithmetic), or None when it runs."""
    try:
        with torch.no_grad():
            net(torch.empty(2, 3, side, side, device="meta"))
    except Exception as exc:  # noqa: BLE001 - the model's own shape check, in its words
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


@functools.cache
def timm_input_problem(name: str, side: int) -> tuple[int, str] | None:
    """Whether timm model ``name`` (without ``timm/``) cannot run on ``side`` x ``side``
    images, as a ViT made for 224 px cannot at 32 (its patch embedding asserts the size).

    Tried with shapes only: the model built on the meta device and run on two images of
    ``side`` and of its own size (timm's ``pretrained_cfg["input_size"]``).

    Returns:
        None when it runs at ``side`` (or when that cannot be told: the model cannot be
        built on the meta device, or fails at its own size too); else ``(its own side,
        the error it raises at side)``.

    Raises:
        ConfigError: timm has no model ``name``.
    """
    net = _meta_timm(name)
    if net is None:
        return None
    error = _meta_forward_error(net, side)
    if error is None:
        return None
    own = int(getattr(net, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-1])
    if own == side or _meta_forward_error(net, own) is not None:
        return None  # not a matter of size (or an op the meta device lacks)
    return own, error


def feature_dim(name: str) -> int:
    """Width c of the pooled (pool5) features of backbone ``name``: 512 for ResNet-18/34,
    2048 for ResNet-50; for ``timm/<name>`` the model's pooled width (its
    ``num_features``, or ``head_hidden_size`` where timm puts a layer after the pooling;
    see :func:`timm_feature_dim`), cached: the model is built once per process, on the
    meta device.

    Raises:
        ConfigError: ``name`` is not one of resnet18, resnet34, resnet50 or a timm model.
    """
    if is_timm(name):
        return _timm_feature_dim(timm_name(name))
    if name not in _FEATURE_DIMS:
        raise ConfigError(f"model.backbone = {name!r} is unknown: choose one of "
                          f"{tuple(_FEATURE_DIMS)} or timm/<name> (any timm model, e.g. "
                          "timm/resnet18)")
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


class SmallMapConv2d(nn.Conv2d):
    """A 3x3 convolution with padding 1 that computes a 1x1 output as a matrix product.

    When the output is one pixel (a 1x1 input at stride 1, a 1x1 or 2x2 input at stride 2:
    ResNet's layer4 at 32 px with the ImageNet stem), only the ``H x W`` taps that overlap
    the input, ``weight[:, :, 1:1 + H, 1:1 + W]``, see it, so the output is
    ``x.reshape(N, C*H*W) @ taps.reshape(O, C*H*W).T``: the same value (to float rounding)
    and the same gradients (the other taps get exactly 0, as a convolution gives them).
    PyTorch's CPU (oneDNN) convolution backward on such maps costs about 8x its forward
    (BENCHMARKS.md), and in bf16 gives the unused taps garbage at stride 2 on 1x1 inputs;
    the matrix product has neither problem. Larger maps run the convolution. Same
    parameters and ``state_dict`` as ``nn.Conv2d``.

    Input ``(N, C, H, W)``; output ``(N, O, H', W')`` as ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride[0]
        if (h + 2 - 3) // s + 1 == 1 and (w + 2 - 3) // s + 1 == 1 and h <= 2 and w <= 2:
            taps = self.weight[:, :, 1:1 + h, 1:1 + w].reshape(self.out_channels, c * h * w)
            return F.linear(x.reshape(n, c * h * w), taps, self.bias).view(n, -1, 1, 1)
        return super().forward(x)


def use_small_map_convs(net: nn.Module) -> nn.Module:
    """Replace every plain 3x3, padding-1 ``nn.Conv2d`` of ``net`` by a
    :class:`SmallMapConv2d` holding the same parameter objects; returns ``net``."""
    for parent in list(net.modules()):
        for child_name, m in list(parent.named_children()):
            if (type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.padding == (1, 1)
                    and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"
                    and m.stride[0] == m.stride[1]):
                new = SmallMapConv2d(m.in_channels, m.out_channels, 3, m.stride, 1,
                                     bias=m.bias is not None, device="meta")
                new.weight, new.bias = m.weight, m.bias
                setattr(parent, child_name, new)
    return net


def build_backbone(name: str = "resnet50", stem: str = "imagenet",
                   zero_init_residual: bool = True) -> nn.Module:
    """A torchvision ResNet whose ``fc`` is ``nn.Identity``, or a timm model without its
    classifier: images -> pooled features.

    Input ``(B, 3, H, W)`` float; output ``(B, c)`` with c = :func:`feature_dim` (512 for
    ResNet-18/34, 2048 for ResNet-50, ``num_features`` for ``timm/<name>``). A ResNet is
    built with ``zero_init_residual=True`` as in the official SimSiam code unless told
    otherwise; a timm model with ``timm.create_model(name, pretrained=False,
    num_classes=0)`` (its own initialisation; it takes only the "imagenet" stem, its own).

    Raises:
        ConfigError: unknown ``name`` or ``stem``, or the "cifar" stem with a timm model.
    """
    if is_timm(name):
        if stem != "imagenet":
            raise ConfigError(f"model.stem = {stem!r} is for the torchvision ResNets only: "
                              f"{name} keeps its own stem; set model.stem=imagenet")
        return _build_timm(timm_name(name))
    net = torchvision_resnet(name, stem, zero_init_residual=zero_init_residual)
    net.fc = nn.Identity()
    return use_small_map_convs(net)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters (``requires_grad`` ones only when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict with torchvision (or timm) key names, contiguous CPU
    tensors, none sharing memory with another (safetensors refuses shared tensors, which
    some timm models tie).

    Strips a ``module.`` prefix left by DistributedDataParallel or ``_orig_mod.`` left by
    ``torch.compile``, so downstream loaders never see wrapper names.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in backbone.state_dict().items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(storage)
        out[key] = tensor
    return out
