"""Image folders and the decoded cache."""

import os

import numpy as np
import pytest
from PIL import Image

from simsiam.config import DataConfig
from simsiam.data import first_per_class, load_splits, scan_image_folder
from simsiam.data.cache import decode_to_cache
from simsiam.errors import DataError


def make_folder(root, sizes=(8, 8), per_class=3):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c / "nested").mkdir(parents=True)
        for i in range(per_class):
            sub = root / c / ("nested" if i == 0 else "")
            Image.fromarray(rng.integers(0, 255, (*sizes, 3), dtype=np.uint8)).save(
                sub / f"{i}.PNG" if i == 1 else sub / f"{i}.jpg")
        (root / c / "notes.txt").write_text("not an image")
        (root / c / ".hidden.jpg").write_bytes(b"")
    (root / ".git").mkdir()
    return root


def test_scan_finds_images_with_labels(tmp_path):
    paths, labels, classes = scan_image_folder(make_folder(tmp_path))
    assert classes == ["cat", "dog"]
    assert len(paths) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(p.suffix.lower() in (".jpg", ".png") for p in paths)


def test_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no image files"):
        scan_image_folder(tmp_path / "empty")


def test_first_per_class():
    labels = np.array([0, 1, 0, 1, 0, 2])
    assert first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 5]
    assert first_per_class(labels, None).tolist() == list(range(6))


def test_cache_is_reused_and_invalidated(tmp_path):
    root = make_folder(tmp_path / "imgs")
    paths, _, _ = scan_image_folder(root)
    cache = tmp_path / "cache"
    a = decode_to_cache(paths, 8, cache)
    assert a.shape == (6, 8, 8, 3) and a.dtype == np.uint8
    assert np.array_equal(a[1], np.asarray(Image.open(paths[1]).convert("RGB")))
    entries = sorted((cache / "decoded").glob("*.npy"))
    assert len(entries) == 1
    mtime = entries[0].stat().st_mtime_ns
    decode_to_cache(paths, 8, cache)  # unchanged folder: no new entry, not rewritten
    assert sorted((cache / "decoded").glob("*.npy")) == entries
    assert entries[0].stat().st_mtime_ns == mtime
    os.utime(paths[0], ns=(1, 1))  # a changed file: decoded again under a new key
    decode_to_cache(paths, 8, cache)
    assert len(list((cache / "decoded").glob("*.npy"))) == 2


def test_mixed_sizes_are_resized_and_centre_cropped(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (40, 20), (255, 0, 0)).save(root / "a" / "wide.png")
    Image.new("RGB", (10, 10), (0, 255, 0)).save(root / "a" / "small.png")
    train, test = load_splits(DataConfig(source=str(root), image_size=14, holdout_fraction=0.0,
                                         cache_dir=str(tmp_path / "c")))
    assert test is None and train.images.shape == (2, 16, 16, 3)  # 8/7 x 14
    assert train.images[1, :, :, 0].min() == 255  # wide.png: red everywhere after the crop


def test_split_folders_and_holdout(tmp_path):
    make_folder(tmp_path / "d" / "train")
    make_folder(tmp_path / "d" / "test", per_class=2)
    train, test = load_splits(DataConfig(source=str(tmp_path / "d"), image_size=8,
                                         cache_dir=str(tmp_path / "c"), per_class=2))
    assert len(train) == 4 and len(test) == 4
    train, test = load_splits(DataConfig(source=str(tmp_path / "d" / "train"), image_size=8,
                                         cache_dir=str(tmp_path / "c"), holdout_fraction=0.34))
    assert len(test) == 2 and len(train) == 4
    assert set(test.paths).isdisjoint(train.paths)


def test_damaged_cache_entry_is_decoded_again(tmp_path):
    root = make_folder(tmp_path / "imgs")
    paths, _, _ = scan_image_folder(root)
    cache = tmp_path / "cache"
    good = np.array(decode_to_cache(paths, 8, cache))
    entry = next((cache / "decoded").glob("*.npy"))
    entry.write_bytes(b"not a numpy file")
    again = decode_to_cache(paths, 8, cache)
    assert np.array_equal(np.asarray(again), good)


def test_loader_with_worker_processes_equals_in_process(tmp_path):
    import torch

    from simsiam.config import load_config
    from simsiam.data import ImageSet
    from simsiam.train.trainer import make_loader

    rng = np.random.default_rng(0)
    images = ImageSet(rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8),
                      np.zeros(24, dtype=np.int64), ["x"], [str(i) for i in range(24)])
    batches = {}
    for workers in (0, 2):
        cfg = load_config(None, {"data.image_size": 16, "data.num_workers": workers,
                                 "train.batch_size": 8, "train.seed": 5})
        loader = make_loader(images, cfg, torch.device("cpu"))
        loader.sampler.set_epoch(1)
        batches[workers] = list(loader)
    assert len(batches[0]) == 3
    for (a1, a2, ai), (b1, b2, bi) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(ai, bi) and torch.equal(a1, b1) and torch.equal(a2, b2)


def test_every_undecodable_file_is_named_at_once(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "cat" / "notes.jpg").write_text("a text file named like an image")
    (root / "dog" / "empty.png").write_bytes(b"")
    paths, _, _ = scan_image_folder(root)
    with pytest.raises(DataError, match="2 of 8 image files cannot be decoded") as err:
        decode_to_cache(paths, 8, tmp_path / "cache", progress=False)
    assert "notes.jpg" in str(err.value) and "empty.png" in str(err.value)
    assert not list((tmp_path / "cache" / "decoded").glob("*.npy"))  # nothing half-written
