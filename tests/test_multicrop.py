"""Multi-crop views (SwAV): sizes, the crop-area range of each kind, independence, the
loader's view tuple, and the config rules that keep it away from two-view methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simsiam.augment.multicrop import BatchedMultiCrop, small_crop_size
from simsiam.config import AugmentConfig, load_config
from simsiam.data.device_loader import BatchedViewLoader
from simsiam.errors import ConfigError


def _images(n: int = 64, side: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def test_small_size_follows_swav_ratio():
    assert small_crop_size(224, None) == 96  # SwAV: 2x224 + 6x96
    assert small_crop_size(32, None) == 14
    assert small_crop_size(32, 18) == 18


def test_two_large_and_six_small_views_with_their_own_area_ranges():
    cfg = AugmentConfig(crop_scale=[0.14, 1.0], small_crops=6, blur_prob=0.0)
    mc = BatchedMultiCrop(cfg, 32)
    imgs = _images()
    views = mc.views(imgs, torch.Generator().manual_seed(5))
    assert mc.num_views == 8 and len(views) == 8
    assert [tuple(v.shape) for v in views] == [(64, 3, 32, 32)] * 2 + [(64, 3, 14, 14)] * 6
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    # The same generator stream, drawn by hand: the large crops' boxes come from
    # crop_scale, the small ones' from small_crop_scale, in that order.
    g = torch.Generator().manual_seed(5)
    for k, view in enumerate(views):
        aug = mc.large_aug if k < 2 else mc.small_aug
        p = aug.sample(g, 64, 32, 32)
        assert torch.equal(aug.apply(imgs, p), view), k
        area = (p.height * p.width).double() / (32 * 32)
        lo, hi = (0.14, 1.0) if k < 2 else (0.05, 0.14)
        # integer boxes: the area fraction may round a little past the range
        assert area.min() >= lo - 0.02 and area.max() <= hi + 0.03, (k, area.min(), area.max())
        if k >= 2:
            assert area.mean() < 0.12  # never a large crop
    small = torch.stack(views[2:])
    for a in range(6):  # each small view has its own parameters
        for b in range(a + 1, 6):
            assert not torch.equal(small[a], small[b])


def test_loader_yields_all_views_then_indices():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    mc = BatchedMultiCrop(AugmentConfig(small_crops=3, small_size=6), 12)
    loader = BatchedViewLoader(images, mc, 8, seed=1, device=torch.device("cpu"))
    loader.sampler.set_epoch(0)
    batch = next(iter(loader))
    assert len(batch) == 2 + 3 + 1
    assert [tuple(v.shape) for v in batch[:-1]] == [(8, 3, 12, 12)] * 2 + [(8, 3, 6, 6)] * 3
    assert batch[-1].dtype == torch.int64 and batch[-1].shape == (8,)


@pytest.mark.parametrize("over,field", [
    ({"augment.small_crops": 6}, "augment.small_crops"),  # SimSiam takes two views
    ({"augment.small_crops": -1}, "augment.small_crops"),
    ({"augment.small_size": 0}, "augment.small_size"),
    ({"augment.small_crop_scale": [0.2, 0.1]}, "augment.small_crop_scale"),
])
def test_bad_multi_crop_settings_are_rejected_naming_the_field(over, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config("demo-cpu", over)


def test_auto_amp_takes_float32_on_cpu_when_small_crops_reach_a_1x1_strided_conv():
    """SwAV's 14 px small crops of 32 px images with the ImageNet stem give layer4's
    stride-2 conv a 1x1 input, where PyTorch's CPU bf16 kernel returns garbage weight
    gradients (BENCHMARKS.md); the compare run of SwAV went NaN at step 3 that way."""
    from simsiam.train.step import smallest_strided_input, use_bf16

    assert small_crop_size(32, None) == 14
    assert [smallest_strided_input("imagenet", s) for s in (14, 16, 17, 32, 224)] == \
        [1, 1, 2, 2, 14]
    assert [smallest_strided_input("cifar", s) for s in (4, 8, 14, 32)] == [1, 2, 4, 8]
    cpu = torch.device("cpu")
    assert not use_bf16("auto", cpu, "imagenet", 14)
    assert use_bf16("bf16", cpu, "imagenet", 14)  # asked for explicitly: the guards watch
    assert use_bf16("auto", torch.device("cuda"), "imagenet", 14)  # GPU kernels are fine
