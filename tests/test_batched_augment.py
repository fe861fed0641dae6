"""Batched augmentation against torchvision: per-op outputs, parameter distributions, the
whole recipe against the per-image path, and the device loader's resumable order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from simsiam.augment import batched as B
from simsiam.augment.views import SimSiamAugment, ViewParams
from simsiam.config import AugmentConfig
from simsiam.data.device_loader import BatchedViewLoader

TOL = 1e-3  # the bound, on [0, 1] images


@pytest.fixture
def images():
    return torch.rand(24, 3, 36, 40, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("size,shape", [(32, (36, 40)), (24, (96, 120)), (64, (64, 64))])
def test_resized_crop_equals_torchvision_up_and_down(size, shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, *shape, generator=g)
    top, left, h, w = B.sample_crops(g, 16, *shape, (0.08, 1.0), (3 / 4, 4 / 3))
    out = B.resized_crop(x, top, left, h, w, size)
    ref = torch.stack([TF.resized_crop(x[i], int(top[i]), int(left[i]), int(h[i]), int(w[i]),
                                       [size, size], antialias=True) for i in range(16)])
    assert out.shape == (16, 3, size, size) and out.dtype == torch.float32
    assert (out - ref).abs().max() < TOL


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_jitter_ops_equal_torchvision_per_sample(images, name):
    g = torch.Generator().manual_seed(2)
    n = len(images)
    if name == "hue":
        factors = torch.rand(n, generator=g) - 0.5  # the whole range [-0.5, 0.5]
    else:
        factors = torch.rand(n, generator=g) * 1.6 + 0.2
    ours = getattr(B, f"adjust_{name}")(images.clone(), factors)
    tv = getattr(TF, f"adjust_{name}")
    ref = torch.stack([tv(images[i], float(factors[i])) for i in range(n)])
    assert (ours - ref).abs().max() < TOL


def test_hue_keeps_greys_and_rotates_pure_colours():
    x = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]).view(2, 3, 1, 1)
    out = B.adjust_hue(x, torch.tensor([1 / 3, 0.25]))
    assert torch.allclose(out[0].flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # red->green
    assert torch.allclose(out[1], x[1])


def test_grayscale_blur_flip_equal_torchvision(images):
    ours = B.rgb_to_grayscale(images).expand(-1, 3, -1, -1)
    assert (ours - TF.rgb_to_grayscale(images, num_output_channels=3)).abs().max() < TOL
    sigma = torch.linspace(0.1, 2.0, len(images))
    blurred = B.gaussian_blur(images, sigma)
    for i, s in enumerate(sigma.tolist()):
        k = 2 * math.ceil(3 * s) + 1
        assert (blurred[i] - TF.gaussian_blur(images[i], [k, k], [s, s])).abs().max() < TOL
    assert not torch.allclose(blurred[-1], images[-1], atol=0.01)  # sigma 2 does blur


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


@pytest.mark.parametrize("shape,scale", [((32, 32), (0.2, 1.0)), ((224, 300), (0.08, 1.0))])
def test_crop_area_and_ratio_distributions_match_torchvision(shape, scale):
    n = 4000
    ratio = (3 / 4, 4 / 3)
    top, left, h, w = B.sample_crops(torch.Generator().manual_seed(3), n, *shape, scale, ratio)
    torch.manual_seed(3)
    img = torch.zeros(1, *shape)
    ref = np.array([RandomResizedCrop.get_params(img, list(scale), list(ratio))
                    for _ in range(n)], dtype=np.float64)  # (top, left, h, w)
    ours = torch.stack([top, left, h, w], 1).double().numpy()
    area = shape[0] * shape[1]
    crit = 1.95 * math.sqrt(2 / n)  # two-sample KS at alpha = 0.001
    assert _ks(ours[:, 2] * ours[:, 3] / area, ref[:, 2] * ref[:, 3] / area) < crit
    assert _ks(np.log(ours[:, 3] / ours[:, 2]), np.log(ref[:, 3] / ref[:, 2])) < crit
    # Position: the crop centre is uniform over where it fits, as torchvision's.
    assert _ks(ours[:, 0] + ours[:, 2] / 2, ref[:, 0] + ref[:, 2] / 2) < crit
    assert ((ours[:, 0] >= 0) & (ours[:, 0] + ours[:, 2] <= shape[0])).all()
    assert ((ours[:, 1] >= 0) & (ours[:, 1] + ours[:, 3] <= shape[1])).all()


def test_crop_fallback_is_torchvision_central_crop():
    # No try can fit a 0.9-area crop with ratio in [3/4, 4/3] into a 10 x 100 image.
    top, left, h, w = B.sample_crops(torch.Generator().manual_seed(0), 5, 10, 100, (0.9, 1.0),
                                     (3 / 4, 4 / 3))
    torch.manual_seed(0)
    expected = RandomResizedCrop.get_params(torch.zeros(1, 10, 100), [0.9, 1.0], [3 / 4, 4 / 3])
    assert all(tuple(int(t[i]) for t in (top, left, h, w)) == tuple(expected) for i in range(5))


def test_probabilities_and_independence_per_sample():
    aug = B.BatchedSimSiamAugment(AugmentConfig(), 96)
    n = 20000
    p = aug.sample(torch.Generator().manual_seed(4), n, 110, 110)
    for field, prob in (("jitter", 0.8), ("grayscale", 0.2), ("blur", 0.5), ("flip", 0.5)):
        rate = getattr(p, field).float().mean().item()
        assert abs(rate - prob) < 4 * math.sqrt(prob * (1 - prob) / n), field
    orders = {tuple(o) for o in p.order[:2000].tolist()}
    assert len(orders) == 24  # every order of the four jitter operations occurs
    f = p.factors
    assert f[:, :3].min() >= 0.6 and f[:, :3].max() <= 1.4 and f[:, 3].abs().max() <= 0.1
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    boxes = set(zip(p.top[:100].tolist(), p.height[:100].tolist(), strict=True))
    assert len(boxes) > 50  # drawn per sample, not shared
    again = aug.sample(torch.Generator().manual_seed(4), n, 110, 110)
    assert torch.equal(again.factors, p.factors) and torch.equal(again.top, p.top)


def test_whole_recipe_equals_the_per_image_path_for_the_same_parameters():
    cfg = AugmentConfig(blur_prob=0.5)
    size = 40
    batched = B.BatchedSimSiamAugment(cfg, size)
    per_image = SimSiamAugment(cfg, size)
    imgs = torch.randint(0, 256, (64, 3, 48, 44), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(5))
    p = batched.sample(torch.Generator().manual_seed(6), 64, 48, 44)
    assert p.jitter.any() and p.grayscale.any() and p.blur.any() and p.flip.any()
    out = batched.apply(imgs, p)
    for i in range(64):
        f = p.factors[i].tolist()
        vp = ViewParams(int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]),
                        bool(p.jitter[i]), p.order[i].tolist(), f[0], f[1], f[2], f[3],
                        bool(p.grayscale[i]), float(p.sigma[i]) if p.blur[i] else None,
                        bool(p.flip[i]))
        ref = per_image.apply(imgs[i].float() / 255, vp)  # float input: no uint8 rounding
        assert (out[i] - ref).abs().max() < 4 * TOL, i  # normalised: / std (~0.25)


def test_device_loader_resumes_mid_epoch_and_streams_like_resident():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 12, 12, 3), dtype=np.uint8)
    aug = B.BatchedSimSiamAugment(AugmentConfig(), 8)
    full = BatchedViewLoader(images, aug, 8, seed=3, device=torch.device("cpu"))
    streamed = BatchedViewLoader(images, aug, 8, seed=3, device=torch.device("cpu"),
                                 resident_max_bytes=0)
    assert full.resident and not streamed.resident and len(full) == 6
    full.sampler.set_epoch(2)
    batches = list(full)
    assert len(batches) == 6 and batches[0][0].shape == (8, 3, 8, 8)
    streamed.sampler.set_epoch(2, start=3 * 8)  # resumed after 3 batches
    rest = list(streamed)
    assert len(rest) == 3
    for (a1, a2, ai), (b1, b2, bi) in zip(batches[3:], rest, strict=True):
        assert torch.equal(ai, bi) and torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(batches[0][0], batches[0][1])  # two different views
    seen = torch.cat([idx for _, _, idx in batches])
    assert len(set(seen.tolist())) == 48  # each image at most once per epoch
    full.sampler.set_epoch(3)
    assert not torch.equal(next(iter(full))[2], batches[0][2])  # reshuffled per epoch


def test_bench_measures_three_rates_and_memory():
    from simsiam.bench import format_table, run_bench
    from simsiam.config import load_config

    cfg = load_config("demo-cpu", {"train.batch_size": 8, "model.simsiam.proj_hidden_dim": 64,
                                   "model.simsiam.dim": 64, "model.simsiam.pred_hidden_dim": 16})
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    res = run_bench(cfg, images, warmup=1, windows=2, steps_per_window=2)
    for rate in (res.data, res.model, res.full):
        assert 0 < rate[1] <= rate[0] <= rate[2]
    assert res.peak_mib > 100 and res.mfu is None  # CPU: resident set; no MFU
    table = format_table(cfg, res)
    assert "data pipeline alone" in table and "full training step" in table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_views_equal_cpu_views_for_the_same_parameters():
    """The CUDA path (every jitter op on the whole batch, torch.where selects) against
    the CPU path (only the selected samples compute each op)."""
    cfg = AugmentConfig(blur_prob=0.5)
    aug = B.BatchedSimSiamAugment(cfg, 40)
    imgs = torch.randint(0, 256, (64, 3, 48, 44), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(5))
    p = aug.sample(torch.Generator().manual_seed(6), 64, 48, 44)
    cpu = aug.apply(imgs, p)
    moved = B.BatchViewParams(**{k: v.cuda() for k, v in vars(p).items()})
    gpu = aug.apply(imgs.cuda(), moved).cpu()
    assert (gpu - cpu).abs().max() < 1e-3
