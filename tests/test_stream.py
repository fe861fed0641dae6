"""The stream input path: crops of the whole image, the same views as the cache path, and
damaged files (simsiam.data.stream)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from simsiam.augment.batched import BatchedViewAugment, CropSpec
from simsiam.config import AugmentConfig, DataConfig
from simsiam.data.dataset import load_data
from simsiam.data.stream import (
    FileImages,
    StreamViewLoader,
    draft_scale,
    draw_boxes,
    stream_crops,
)
from simsiam.errors import DataError, DataWarning

SPEC = CropSpec((0.2, 1.0), (3 / 4, 4 / 3), 32)
N = 4000
EDGE = 20  # columns of each marked edge


def _edges_image(path: Path) -> None:
    """400 x 100: grey, the leftmost 20 columns pure red, the rightmost 20 pure blue."""
    a = np.full((100, 400, 3), 128, dtype=np.uint8)
    a[:, :EDGE] = (255, 0, 0)
    a[:, -EDGE:] = (0, 0, 255)
    Image.fromarray(a).save(path)


def _torchvision_boxes(n: int) -> np.ndarray:
    torch.manual_seed(0)
    img = torch.zeros(3, 100, 400)
    return np.array([RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3])
                     for _ in range(n)], dtype=np.float64)  # (top, left, h, w)


def test_crop_boxes_come_from_the_whole_image_as_torchvision_draws_them():
    g = torch.Generator().manual_seed(1)
    ours = np.array([draw_boxes(400, 100, [SPEC], g)[0] for _ in range(N)], dtype=np.float64)
    ref = _torchvision_boxes(N)
    for name, col in (("x centre", lambda b: b[:, 1] + b[:, 3] / 2),
                      ("y centre", lambda b: b[:, 0] + b[:, 2] / 2),
                      ("width", lambda b: b[:, 3])):
        stat = ks_2samp(col(ours), col(ref))
        assert stat.pvalue > 0.001, (name, stat)
    # the edges are covered at torchvision's rate (and at all: a centre square of the
    # cache, columns 150-249, never reaches them)
    left_ours, left_ref = (ours[:, 1] < EDGE).mean(), (ref[:, 1] < EDGE).mean()
    right_ours = (ours[:, 1] + ours[:, 3] > 400 - EDGE).mean()
    right_ref = (ref[:, 1] + ref[:, 3] > 400 - EDGE).mean()
    sigma = np.sqrt(left_ref * (1 - left_ref) / N) * np.sqrt(2)
    assert left_ref > 0.03 and right_ref > 0.03
    assert abs(left_ours - left_ref) < 4.5 * sigma + 1e-9
    assert abs(right_ours - right_ref) < 4.5 * sigma + 1e-9


def test_streamed_crops_show_the_marked_edges_at_the_boxes_rate(tmp_path):
    path = tmp_path / "wide.png"
    _edges_image(path)
    g = torch.Generator().manual_seed(2)
    red = blue = 0
    n = 600
    for _ in range(n):
        crop = stream_crops(path, [SPEC], g)[0].astype(int)
        assert crop.shape == (32, 32, 3) and crop.dtype == np.int64
        red += bool(((crop[..., 0] - crop[..., 2]) > 40).any())
        blue += bool(((crop[..., 2] - crop[..., 0]) > 40).any())
    ref = _torchvision_boxes(4000)
    rate_left = (ref[:, 1] < EDGE).mean()  # boxes that include a red column
    rate_right = (ref[:, 1] + ref[:, 3] > 400 - EDGE).mean()
    tol = 4.5 * np.sqrt(rate_left * (1 - rate_left) / n) + 0.02
    assert abs(red / n - rate_left) < tol, (red / n, rate_left)
    assert abs(blue / n - rate_right) < tol, (blue / n, rate_right)


def test_stream_and_cache_give_the_same_views_for_the_same_crop_parameters():
    rng = np.random.default_rng(0)
    side = 64
    img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    img = np.array(Image.fromarray(img).resize((side, side)))  # some smooth structure too
    images = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).repeat(16, 1, 1, 1)
    aug = BatchedViewAugment(AugmentConfig(recipe="byol"), 32)  # blur, solarize per view
    for view in (0, 1):
        p = aug.sample(torch.Generator().manual_seed(view), 16, side, side, view=view)
        cache_views = aug.apply(images.clone(), p)
        pil = Image.fromarray(img)
        crops = np.stack([np.array(pil.crop((int(p.left[i]), int(p.top[i]),
                                             int(p.left[i] + p.width[i]),
                                             int(p.top[i] + p.height[i]))).resize(
                                                 (32, 32), Image.BILINEAR, reducing_gap=None))
                          for i in range(16)])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2)
        from simsiam.augment.batched import resized_crop
        exact = resized_crop(images, p.top, p.left, p.height, p.width, 32)
        assert (x.float() - exact).abs().max() <= 1.0 + 1e-3  # PIL's uint8 rounding only
        stream_views = aug.finish(x.float() / 255.0, p)
        std = torch.tensor(aug.std).view(1, 3, 1, 1)
        diff = ((stream_views - cache_views) * std).abs()
        # the crops differ by PIL's uint8 rounding (<= 1/255), which brightness, contrast
        # and saturation factors (each <= 1.4) can scale up to ~2.7/255
        assert diff.max() <= 4.0 / 255, float(diff.max())
        assert diff.mean() <= 0.5 / 255, float(diff.mean())


def test_draft_scale_keeps_every_crop_at_least_the_view_size():
    assert draft_scale([(0, 0, 900, 1000)], [224]) == 4
    assert draft_scale([(0, 0, 900, 1000), (0, 0, 300, 300)], [224, 224]) == 1
    assert draft_scale([(0, 0, 2000, 2000)], [224]) == 8


def test_draft_decoding_gives_nearly_the_full_decode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    drafted = []  # the decoded sizes: the test must see a reduced decode happen
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size, *args, **kw):
        out = real(self, mode, size, *args, **kw)
        drafted.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((1600, 1200), Image.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=95)
    spec = CropSpec((0.5, 1.0), (3 / 4, 4 / 3), 64)
    a = stream_crops(path, [spec], torch.Generator().manual_seed(0), draft=True)[0]
    assert drafted and max(drafted[0]) < 1600  # decoded at 1/2, 1/4 or 1/8 size
    b = stream_crops(path, [spec], torch.Generator().manual_seed(0), draft=False)[0]
    assert len(drafted) == 1  # draft=False decodes at full size
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3.0


def _folder(tmp_path: Path, n: int = 12, bad: bool = True) -> Path:
    root = tmp_path / "photos" / "all"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        size = (60 + 7 * i, 40 + 3 * i)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            root / f"{i:02d}.jpg")
    if bad:  # a header that reads, pixels cut off: found only when decoded
        data = (root / "05.jpg").read_bytes()
        (root / "05.jpg").write_bytes(data[: len(data) // 3])
        (root / "zz.jpg").write_bytes(b"not an image")  # found by the header check
    return tmp_path / "photos"


def _loader(source: Path, strict: bool = False, workers: int = 0) -> StreamViewLoader:
    cfg = DataConfig(source=str(source), image_size=32, holdout_fraction=0.0, strict=strict)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_data(cfg, pipeline="stream", progress=False)
    assert splits.pipeline == "stream" and isinstance(splits.train.images, FileImages)
    assert splits.skipped == 1 and any("zz.jpg" in str(w.message) for w in caught)
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 32)
    return StreamViewLoader(splits.train.images.sources, splits.train.images.names, aug, 4, 0,
                            torch.device("cpu"), num_workers=workers, strict=strict)


def test_the_stream_replaces_a_damaged_file_and_names_it(tmp_path):
    loader = _loader(_folder(tmp_path))
    loader.sampler.set_epoch(0)
    with pytest.warns(DataWarning, match="05.jpg"):
        batches = list(loader)
    assert len(batches) == len(loader) == 3  # 12 files, 1 unreadable header: 11 // 4
    for x1, x2, index in batches:
        assert x1.shape == x2.shape == (4, 3, 32, 32) and x1.dtype == torch.float32
        assert index.shape == (4,)


def test_strict_stops_on_a_damaged_file(tmp_path):
    source = _folder(tmp_path)
    cfg = DataConfig(source=str(source), image_size=32, holdout_fraction=0.0, strict=True)
    with pytest.raises(DataError, match="zz.jpg"):
        load_data(cfg, pipeline="stream", progress=False)
    (source / "all" / "zz.jpg").unlink()
    splits = load_data(cfg, pipeline="stream", progress=False)
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 32)
    loader = StreamViewLoader(splits.train.images.sources, splits.train.images.names, aug, 11,
                              0, torch.device("cpu"), num_workers=0, strict=True)
    loader.sampler.set_epoch(0)
    with pytest.raises(DataError, match="05.jpg"):
        list(loader)


def test_views_do_not_depend_on_workers_and_resume_inside_an_epoch(tmp_path):
    source = _folder(tmp_path, bad=False)
    a, b = _loader_plain(source, 0), _loader_plain(source, 2)
    a.sampler.set_epoch(1)
    b.sampler.set_epoch(1)
    whole = list(a)
    for (x1, x2, i), (y1, y2, j) in zip(whole, list(b), strict=True):
        assert torch.equal(i, j) and torch.equal(x1, y1) and torch.equal(x2, y2)
    a.sampler.set_epoch(1, start=4)  # resumed after one step
    rest = list(a)
    assert all(torch.equal(p, q) for u, v in zip(rest, whole[1:], strict=True)
               for p, q in zip(u, v, strict=True))


def _loader_plain(source: Path, workers: int) -> StreamViewLoader:
    cfg = DataConfig(source=str(source), image_size=32, holdout_fraction=0.0)
    splits = load_data(cfg, pipeline="stream", progress=False)
    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 32)
    return StreamViewLoader(splits.train.images.sources, splits.train.images.names, aug, 4, 0,
                            torch.device("cpu"), num_workers=workers)


def test_auto_streams_mixed_sizes_and_caches_uniform_squares(tmp_path, cifar_dir):
    mixed = _folder(tmp_path, bad=False)
    cfg = DataConfig(source=str(mixed), image_size=32, holdout_fraction=0.0)
    assert load_data(cfg, pipeline="auto", progress=False).pipeline == "stream"
    cfg = DataConfig(source=str(cifar_dir), image_size=32, per_class=5, test_per_class=2)
    splits = load_data(cfg, pipeline="auto", progress=False)
    assert splits.pipeline == "cache" and isinstance(splits.train.images, np.ndarray)


def test_file_images_decode_like_the_cache(tmp_path):
    from simsiam.data.cache import read_rgb

    source = _folder(tmp_path, bad=False) / "all"
    paths = sorted(source.iterdir())
    lazy = FileImages(paths, [str(p) for p in paths], 36)
    assert lazy.shape == (12, 36, 36, 3) and len(lazy) == 12
    assert np.array_equal(lazy[3], read_rgb(paths[3], 36))
    assert np.array_equal(lazy[2:5], np.stack([read_rgb(p, 36) for p in paths[2:5]]))
    sub = lazy.take([7, 1])
    assert isinstance(sub, FileImages) and np.array_equal(sub[0], read_rgb(paths[7], 36))


def test_pipeline_settings_are_checked_and_named(tmp_path):
    from simsiam.config import load_config
    from simsiam.errors import ConfigError

    with pytest.raises(ConfigError, match="data.pipeline.*'auto', 'cache', 'stream', 'dali'"):
        load_config("demo-cpu", {"data.pipeline": "gpu"})
    with pytest.raises(ConfigError, match="augment.backend=batched"):
        load_config("demo-cpu", {"data.pipeline": "stream", "augment.backend": "per_image"})


def test_describe_says_what_auto_resolves_to(tmp_path, capsys):
    from simsiam.cli import main

    source = _folder(tmp_path, bad=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: simsiam\ndata:\n  source: {source}\n  image_size: 32\n"
                   "model:\n  backbone: resnet18\n")
    assert main(["describe", "--config", str(cfg)]) == 0
    assert f"data.pipeline auto -> stream for '{source}'" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_streams_photos_and_records_the_pipeline(tmp_path):
    from simsiam.config import load_config
    from simsiam.train import pretrain, read_metrics

    source = _folder(tmp_path, n=16, bad=False)
    cfg = load_config("demo-cpu", {"data.source": str(source), "data.per_class": None,
                                   "data.holdout_fraction": 0.25, "data.num_workers": 1,
                                   "train.batch_size": 4, "train.epochs": 1,
                                   "train.out": str(tmp_path / "run"), "eval.knn_every": 0,
                                   "eval.knn_at_start": False})
    res = pretrain(cfg, progress=False)
    setup = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "setup"][0]
    assert setup["pipeline"] == "stream" and setup["train_images"] == 12
    assert res.steps == 3 and np.isfinite(res.epoch_loss[1])


def test_streamed_squares_are_read_for_the_monitor_as_the_cache_reads_them(tmp_path):
    root = tmp_path / "sq" / "all"
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    cfg = DataConfig(source=str(tmp_path / "sq"), image_size=32, holdout_fraction=0.2)
    splits = load_data(cfg, pipeline="stream", progress=False)
    assert splits.pipeline == "stream"
    assert splits.train.images.shape[1:] == splits.test.images.shape[1:] == (40, 40, 3)
    assert np.array_equal(splits.train.images[0], np.asarray(Image.open(splits.train.paths[0])))
