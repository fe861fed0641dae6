"""The CPU's compiled post-crop kernels (simsiam.augment.fused) against the eager ones."""

from __future__ import annotations

import warnings

import pytest
import torch

import simsiam.augment.fused as fused
from simsiam.augment.batched import AUTO_COMPILE_SIDE, BatchedViewAugment
from simsiam.config import AugmentConfig, load_config
from simsiam.errors import ConfigNotice, DataWarning

SIDE, N = 40, 11
CFG = AugmentConfig(recipe="byol")  # blur on both views, solarize on the second


def _crops(seed: int = 0) -> torch.Tensor:
    """Smooth uint8 images ``(N, 3, SIDE, SIDE)`` (coarse noise, upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (N, 3, 5, 5), generator=g).float()
    return torch.nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear",
                                           align_corners=False).round().clamp(0, 255).byte()


def _params(aug: BatchedViewAugment):
    """View 2's parameters with every branch taken by some samples and left by others."""
    p = aug.sample(torch.Generator().manual_seed(3), N, SIDE, SIDE, view=1)
    alt = torch.arange(N) % 2 == 0
    p.jitter = torch.arange(N) != 4  # sample 4 keeps its colours
    p.blur, p.solarize, p.flip = alt, ~alt, torch.arange(N) % 3 == 0
    p.grayscale = torch.arange(N) % 4 == 1
    p.order[:4] = (torch.arange(4).view(-1, 1) + torch.arange(4)) % 4  # rotations; the rest drawn
    for rnd in range(4):  # each round applies each of the four operations to someone
        assert set(p.order[p.jitter, rnd].tolist()) == {0, 1, 2, 3}
    return p


@pytest.mark.slow
def test_chunked_kernels_equal_the_eager_ones(monkeypatch):
    # three samples per chunk: 11 views make three full chunks and a padded one of two
    monkeypatch.setattr(fused, "CHUNK_BYTES", 3 * 3 * SIDE * SIDE * 4)
    eager = BatchedViewAugment(CFG, SIDE, compile=False)
    compiled = BatchedViewAugment(CFG, SIDE, compile=True)
    p, x = _params(eager), _crops()
    want = eager.finish(x.clone(), p)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = compiled.finish(x.clone(), p)
        got_float = compiled.finish(x.float() / 255.0, p)  # the cache path's input
    assert not [w for w in seen if issubclass(w.category, DataWarning)]  # no failed compile
    notes = [str(w.message) for w in seen if issubclass(w.category, ConfigNotice)]
    assert len(notes) == 1 and f"for {SIDE} px views" in notes[0]  # said once
    assert compiled._chunked is not None and compiled._chunked.failed is None
    assert got.shape == (N, 3, SIDE, SIDE) and got.dtype == torch.float32
    assert (got - want).abs().max() < 2e-5
    assert (got_float - want).abs().max() < 2e-5
    # the views really differ from sample to sample and from the un-augmented crops
    plain = (x.float() / 255.0 - torch.tensor(eager.mean).view(1, 3, 1, 1)) \
        / torch.tensor(eager.std).view(1, 3, 1, 1)
    assert (got - plain).abs().amax(dim=(1, 2, 3)).min() > 0.05


def test_a_failed_compile_warns_once_and_the_eager_kernels_run(monkeypatch):
    def broken(*_):
        raise RuntimeError("Compiler: cc is not found\nmore lines")

    eager = BatchedViewAugment(CFG, SIDE, compile=False)
    compiled = BatchedViewAugment(CFG, SIDE, compile=True)
    p, x = _params(eager), _crops()
    compiled._chunked = fused.ChunkedFinish(eager.mean, eager.std, 2.0)
    compiled._chunked.stages = (broken, broken, broken)
    with pytest.warns(DataWarning, match="cc is not found.*eager kernels run instead"):
        warnings.simplefilter("ignore", ConfigNotice)  # the 'compiling ...' notice before
        first = compiled.finish(x.clone(), p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        second = compiled.finish(x.clone(), p)
    want = eager.finish(x.clone(), p)
    assert torch.equal(first, want) and torch.equal(second, want)


def test_auto_compiles_large_cpu_views_only():
    auto = BatchedViewAugment(AugmentConfig(), AUTO_COMPILE_SIDE, compile=None)
    assert auto.compiles_on("cpu") and not auto.compiles_on("cuda")
    assert not BatchedViewAugment(AugmentConfig(), 96, compile=None).compiles_on("cpu")
    assert not BatchedViewAugment(AugmentConfig(), 224, compile=False).compiles_on("cpu")
    assert BatchedViewAugment(AugmentConfig(), 32, compile=True).compiles_on("cpu")
    assert load_config("demo-cpu").augment.compile is None  # the default is auto
    assert load_config("demo-cpu", {"augment.compile": "false"}).augment.compile is False


def test_blur_kernels_match_torchvision():
    from torchvision.transforms.functional import gaussian_blur

    from simsiam.augment.kernels import blur_kernels

    sigma = torch.tensor([0.3, 1.0, 2.0])
    k = blur_kernels(sigma, 2.0, 64)
    assert k.shape == (3, 13)  # 2 * ceil(3 * 2.0) + 1
    torch.testing.assert_close(k.sum(dim=1), torch.ones(3))
    x = torch.rand(1, 3, 24, 24)
    for i, s in enumerate(sigma.tolist()):
        side = 2 * int(torch.ceil(torch.tensor(3 * s))) + 1
        want = gaussian_blur(x, [side, side], [s, s])
        got = fused.blur(x, k[i:i + 1])
        assert (got - want).abs().max() < 1e-5


def test_the_run_and_bench_say_which_kernels_run_and_bad_values_are_explained():
    from simsiam.errors import ConfigError
    from simsiam.train.summary import run_view_kernels

    photos = load_config("demo-cpu", {"data.image_size": 128, "augment.normalize": "imagenet"})
    assert run_view_kernels(photos, "cpu") == "compiled"
    assert run_view_kernels(photos, "cuda") == "eager"
    assert run_view_kernels(load_config("demo-cpu"), "cpu") == "eager"  # 32 px
    off = load_config("demo-cpu", {"data.image_size": 128, "augment.compile": False})
    assert run_view_kernels(off, "cpu") == "eager"
    per_image = load_config("demo-cpu", {"augment.backend": "per_image"})
    assert run_view_kernels(per_image, "cpu") is None
    with pytest.raises(ConfigError, match=r"'augment.compile'.*true, false or null \(null"):
        load_config("demo-cpu", {"augment.compile": "maybe"})
