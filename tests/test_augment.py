"""View recipe: independent draws, seed reproducibility, crop parameters, size defaults."""

import math

import numpy as np
import pytest
import torch

from simsiam.augment.views import (
    CIFAR10_MEAN,
    IMAGENET_MEAN,
    SimSiamAugment,
    blur_probability,
    eval_transform,
    normalization,
    sample_crop,
)
from simsiam.config import AugmentConfig
from simsiam.data import EpochShuffleSampler, TwoViewDataset


def image(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)


def test_two_views_differ_and_seed_reproduces_them():
    images = np.stack([image(i).permute(1, 2, 0).numpy() for i in range(4)])
    ds = TwoViewDataset(images, SimSiamAugment(AugmentConfig(), 32), seed=7)
    v1, v2, idx = ds[(0, 2)]
    assert idx == 2 and v1.shape == (3, 32, 32) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)
    w1, w2, _ = TwoViewDataset(images, SimSiamAugment(AugmentConfig(), 32), seed=7)[(0, 2)]
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    o1, _, _ = TwoViewDataset(images, SimSiamAugment(AugmentConfig(), 32), seed=8)[(0, 2)]
    assert not torch.equal(v1, o1)  # another seed, other views
    n1, _, _ = ds[(1, 2)]
    assert not torch.equal(v1, n1)  # another epoch, other views


def test_sampler_is_a_seeded_permutation_per_epoch():
    s = EpochShuffleSampler(50, seed=3)
    first = list(s)
    assert sorted(i for _, i in first) == list(range(50)) and {e for e, _ in first} == {0}
    assert list(EpochShuffleSampler(50, seed=3)) == first
    s.set_epoch(1)
    second = list(s)
    assert [i for _, i in second] != [i for _, i in first] and second[0][0] == 1


def test_crop_boxes_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = sample_crop(g, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32
        areas.append(h * w / 1024)
        ratios.append(w / h)
    areas = np.array(areas)
    assert areas.min() >= 0.2 * 0.85 and areas.max() <= 1.0
    # target area fraction is U(0.2, 1): mean 0.6 before rounding/rejection
    assert 0.5 < areas.mean() < 0.65
    assert np.mean(np.log(ratios)) == pytest.approx(0.0, abs=0.05)


def test_size_aware_defaults():
    cfg = AugmentConfig()
    assert blur_probability(cfg, 32) == 0.0 and blur_probability(cfg, 224) == 0.5
    assert normalization("auto", 32)[0] == CIFAR10_MEAN
    assert normalization("auto", 224)[0] == IMAGENET_MEAN


def test_identity_recipe_gives_normalised_input():
    cfg = AugmentConfig(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], jitter_prob=0.0,
                        grayscale_prob=0.0, flip_prob=0.0, normalize="cifar10")
    img = image(3)
    view = SimSiamAugment(cfg, 32)(img, torch.Generator().manual_seed(0))
    ref = eval_transform(img.permute(1, 2, 0)[None], 32, "cifar10")[0]
    assert torch.allclose(view, ref, atol=1e-6)
    mean, std = normalization("cifar10", 32)
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    manual = (img.float() / 255 - mean) / std
    assert torch.allclose(view, manual, atol=1e-5)


def test_grayscale_and_flip_params_apply():
    aug = SimSiamAugment(AugmentConfig(normalize="imagenet"), 32)
    g = torch.Generator().manual_seed(0)
    p = aug.sample(g, 32, 32)
    p.jitter, p.blur_sigma, p.grayscale, p.flip = False, None, True, False
    p.top, p.left, p.height, p.width = 0, 0, 32, 32
    x = aug.apply(image(1), p)
    std = torch.tensor(aug.std)[:, None, None]
    mean = torch.tensor(aug.mean)[:, None, None]
    raw = x * std + mean
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)
    p.grayscale, p.flip = False, True
    flipped = aug.apply(image(1), p)
    p.flip = False
    assert torch.allclose(flipped, aug.apply(image(1), p).flip(-1))
    assert math.isclose(blur_probability(AugmentConfig(blur_prob=0.3), 32), 0.3)
