"""One optimizer step of a method, and the choice of bfloat16 autocast for it.

Source: SIMSIAM.md section 3 (SGD on the symmetric loss); the precision rule is this
project's (docs/benchmarks.md "Speed"; BENCHMARKS.md "bf16 convolution on 1x1 inputs").
"""

from __future__ import annotations

from typing import Any

import torch

from simsiam.augment.multicrop import small_crop_size
from simsiam.config import Config


def smallest_strided_input(stem: str, side: int) -> int:
    """Side of the smallest input any stride-2 convolution of a torchvision ResNet sees for
    ``side`` px views: the stem's conv1 (ImageNet stem, then the max-pool) and the first
    convolutions of layer2, layer3 and layer4 (each halves, rounding up)."""
    sides = []
    if stem != "cifar":
        sides.append(side)
        side = -(-side // 2)  # conv1, stride 2
        side = -(-side // 2)  # max-pool, stride 2
    for _ in range(3):  # layer2, layer3, layer4
        sides.append(side)
        side = -(-side // 2)
    return min(sides)


def use_bf16(amp: str, device: torch.device, stem: str = "cifar",
             min_side: int | None = None) -> bool:
    """Whether to run the forward pass under bfloat16 autocast (see ``train.amp``).

    ``auto``: on CUDA; on CPUs with native bf16, unless a stride-2 convolution would see
    a 1x1 input (the smallest views, ``min_side`` px, with ``stem``): PyTorch's CPU bf16
    kernel gives garbage weight gradients there (BENCHMARKS.md, "bf16 convolution on
    1x1 inputs"), so those runs take float32.
    """
    if amp != "auto":
        return amp == "bf16"
    if device.type == "cuda":
        return True
    if min_side is not None and smallest_strided_input(stem, min_side) < 2:
        return False
    try:  # native bf16 on this CPU; emulated bf16 would be slower than float32
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def bf16_for_run(cfg: Config, device: torch.device) -> bool:
    """:func:`use_bf16` for a run's settings; its smallest views are the small crops of
    multi-crop (SwAV) when it has any, else ``data.image_size``."""
    side = cfg.data.image_size
    if cfg.augment.small_crops:
        side = min(side, small_crop_size(side, cfg.augment.small_size))
    return use_bf16(cfg.train.amp, device, cfg.model.stem, side)


def train_step(model, optimizer: torch.optim.Optimizer, inputs: Any,
               bf16: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer step of ``model`` (a method: ``inputs -> (loss, metrics)``).

    ``inputs`` is a batch's ``inputs`` (for the image methods the list of views, each
    ``(B, 3, H, W)``), already on the device of the optimizer's parameters. The forward
    pass runs under bfloat16 autocast when ``bf16``; the method computes its loss in
    float32. Returns the detached loss and the method's metrics (no host sync).
    """
    device_type = optimizer.param_groups[0]["params"][0].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss, metrics = model(inputs)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), metrics
