"""Image folders and the decoded cache."""

import os

import numpy as np
import pytest
from PIL import Image

from simsiam.config import DataConfig
from simsiam.data import first_per_class, load_splits, scan_image_folder
from simsiam.data.cache import decode_to_cache
from simsiam.errors import DataError, DataWarning


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
    a = decode_to_cache(paths, 8, cache).images
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
    good = np.array(decode_to_cache(paths, 8, cache).images)
    entry = next((cache / "decoded").glob("*.npy"))
    entry.write_bytes(b"not a numpy file")
    again = decode_to_cache(paths, 8, cache).images
    assert np.array_equal(np.asarray(again), good)


def test_loader_with_worker_processes_equals_in_process(tmp_path):
    import torch

    from simsiam.config import load_config
    from simsiam.data import ImageSet
    from simsiam.data.loaders import make_loader

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


def test_undecodable_files_are_skipped_and_named_or_stop_a_strict_run(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "cat" / "notes.jpg").write_text("a text file named like an image")
    (root / "dog" / "empty.png").write_bytes(b"")
    paths, _, _ = scan_image_folder(root)
    for attempt in ("decode", "cache hit"):  # the cached entry remembers what was skipped
        with pytest.warns(DataWarning, match="skipped 2 of 8 image files") as rec:
            dec = decode_to_cache(paths, 8, tmp_path / "cache", progress=False)
        text = str(rec[0].message)
        assert "notes.jpg" in text and "empty.png" in text, attempt
        assert dec.images.shape == (6, 8, 8, 3)
        assert [paths[i].name for i in dec.kept] == [p.name for p in paths
                                                     if p.name not in ("notes.jpg", "empty.png")]
        for row, i in enumerate(dec.kept):  # each row is its own file's pixels
            assert np.array_equal(dec.images[row], np.asarray(Image.open(paths[i]).convert("RGB")))
    first_bad = next(p for p in paths if p.name in ("notes.jpg", "empty.png"))
    for cache in ("cache", "fresh-cache"):
        with pytest.raises(DataError, match="--strict") as err:
            decode_to_cache(paths, 8, tmp_path / cache, progress=False, strict=True)
        assert f"'{first_bad}'" in str(err.value)
    assert not list((tmp_path / "fresh-cache" / "decoded").glob("*.npy*"))  # nothing half-written


def _jpeg_with_orientation(path, img, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), quality=95)


def make_wild_folder(root):
    """One file of each kind found in real image folders; returns the decodable names."""
    a, b = root / "a", root / "b" / "nested" / "deeper"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(a / "rgb.jpg")
    Image.new("L", (24, 24), 77).save(a / "gray.png")
    Image.new("LA", (24, 24), (90, 0)).save(a / "gray_alpha.png")
    Image.new("RGBA", (24, 24), (10, 200, 30, 0)).save(a / "rgba.png")
    pal = Image.new("P", (24, 24), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    pal.save(a / "palette_transparent.png", transparency=0)
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(a / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((24, 24), 40000, dtype=np.uint16)).save(a / "deep16.png")
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = (255, 0, 0)  # left half red, right half blue
    wide[:, 20:] = (0, 0, 255)
    _jpeg_with_orientation(a / "exif_rotated.jpg", Image.fromarray(wide), 6)
    Image.new("RGB", (24, 24), (0, 128, 0)).save(a / "png_named.jpg", format="PNG")
    Image.new("RGB", (24, 24), (5, 6, 7)).save(a / "UPPER.JPEG")
    Image.new("RGB", (24, 24), (9, 9, 9)).save(b / "nested.png")
    good = ["rgb.jpg", "gray.png", "gray_alpha.png", "rgba.png", "palette_transparent.png",
            "cmyk.jpg", "deep16.png", "exif_rotated.jpg", "png_named.jpg", "UPPER.JPEG",
            "nested.png"]
    # Not indexed: hidden files and folders, Thumbs.db, non-image files.
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (a / "._rgb.jpg").write_bytes(b"\0\5\22\7 AppleDouble")
    (a / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (a / "notes.txt").write_text("not an image")
    (a / "labels.csv").write_text("file,label\n")
    (root / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".ipynb_checkpoints" / "x.png")
    # Indexed but undecodable: skipped with a warning.
    whole = (a / "rgb.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "garbage.jpg").write_bytes(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    return good, ["truncated.jpg", "empty.png", "garbage.jpg"]


def test_images_as_found_in_the_wild(tmp_path):
    import torch

    from simsiam.augment.views import SimSiamAugment
    from simsiam.config import AugmentConfig
    from simsiam.data import TwoViewDataset

    good, bad = make_wild_folder(tmp_path / "wild")
    paths, _, classes = scan_image_folder(tmp_path / "wild")
    assert classes == ["a", "b"]
    assert sorted(p.name for p in paths) == sorted(good + bad)
    cfg = DataConfig(source=str(tmp_path / "wild"), image_size=28, holdout_fraction=0.0,
                     cache_dir=str(tmp_path / "cache"))
    with pytest.warns(DataWarning, match="skipped 3 of 14 image files") as rec:
        train, test = load_splits(cfg)
    assert test is None
    message = str(rec[0].message)
    assert all(str(p) in message for p in paths if p.name in bad)
    assert sorted(os.path.basename(p) for p in train.paths) == sorted(good)
    assert train.images.shape == (11, 32, 32, 3)  # mixed sizes: 8/7 x 28 = 32
    px = {os.path.basename(p): train.images[i].astype(int) for i, p in enumerate(train.paths)}
    assert (px["gray.png"] == 77).all()
    assert (px["gray_alpha.png"] == 90).all()  # alpha dropped, as torchvision's loader does
    assert (px["rgba.png"] == (10, 200, 30)).all()
    assert (px["palette_transparent.png"] == (255, 0, 0)).all()
    assert (px["deep16.png"] == round(40000 / 257)).all()  # 16-bit scaled, not clipped to 255
    assert np.abs(px["cmyk.jpg"] - (255, 0, 0)).max() <= 8
    assert np.abs(px["png_named.jpg"] - (0, 128, 0)).max() == 0
    rot = px["exif_rotated.jpg"]  # orientation 6: shown rotated 90 degrees clockwise
    assert np.abs(rot[:12] - (255, 0, 0)).max() <= 40  # top: the red left half
    assert np.abs(rot[-12:] - (0, 0, 255)).max() <= 40
    views = TwoViewDataset(train.images, SimSiamAugment(AugmentConfig(), 28), seed=0)
    for i in range(len(views)):
        x1, x2, _ = views[i]
        for x in (x1, x2):
            assert x.dtype == torch.float32 and x.shape == (3, 28, 28) and torch.isfinite(x).all()
    with pytest.raises(DataError, match="truncated.jpg|empty.png|garbage.jpg"):
        load_splits(DataConfig(source=cfg.source, image_size=28, holdout_fraction=0.0,
                               cache_dir=cfg.cache_dir, strict=True))


def test_decompression_bombs_are_skipped_and_nothing_decodable_is_an_error(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", sizes=(8, 8))
    big = root / "cat" / "big.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(big)
    paths, _, _ = scan_image_folder(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 256 > 2 x 100: PIL refuses it
    with pytest.warns(DataWarning, match="skipped 1 of 7") as rec:
        dec = decode_to_cache(paths, 8, tmp_path / "cache", progress=False)
    assert "big.png" in str(rec[0].message) and "DecompressionBomb" in str(rec[0].message)
    assert len(dec.kept) == 6
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # now every image is refused
    with pytest.raises(DataError, match="none of the 7 image files could be decoded"):
        decode_to_cache(paths, 8, tmp_path / "cache2", progress=False)


def test_leftovers_of_a_killed_decode_are_removed(tmp_path):
    import subprocess
    import sys

    from simsiam.data.cache import cache_key

    root = make_folder(tmp_path / "imgs")
    paths, _, _ = scan_image_folder(root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # a process that has exited
    folder = tmp_path / "cache" / "decoded"
    folder.mkdir(parents=True)
    stale = folder / f"{cache_key(paths, 8)}.npy.tmp-{pid}"
    stale.write_bytes(b"\0" * 4096)
    mine = folder / f"{cache_key(paths, 8)}.npy.tmp-{os.getppid()}"  # a live process's
    mine.write_bytes(b"")
    decode_to_cache(paths, 8, tmp_path / "cache", progress=False)
    assert not stale.exists() and mine.exists()


def test_symlink_loops_are_walked_once_and_broken_links_are_skipped(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "dog" / "loop").symlink_to(root / "dog")  # a link back up the tree
    (root / "cat" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "cat" / "self.jpg").symlink_to(root / "cat" / "self.jpg")
    paths, labels, _ = scan_image_folder(root)
    assert len(paths) == 8 and labels.tolist() == [0] * 5 + [1] * 3
    with pytest.warns(DataWarning, match="skipped 2 of 8") as rec:
        dec = decode_to_cache(paths, 8, tmp_path / "cache", progress=False)
    assert "dangling.jpg" in str(rec[0].message) and "self.jpg" in str(rec[0].message)
    assert len(dec.kept) == 6


def _class_images(root, counts):
    """``root/<class>/i.png`` for each class, ``counts[class]`` images (0: an empty folder)."""
    rng = np.random.default_rng(1)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")


def test_classes_match_by_folder_name_and_an_empty_one_is_named_not_refused(tmp_path):
    """train/{cat,dog,ship} with test/ship empty: evaluation goes ahead on cat and dog with
    the training label numbers; the reverse leaves ship's held-out images out; folder names
    that truly differ are still refused, naming them."""
    d = tmp_path / "d"
    _class_images(d / "train", {"cat": 3, "dog": 3, "ship": 3})
    _class_images(d / "test", {"cat": 2, "dog": 2, "ship": 0})
    cfg = DataConfig(source=str(d), image_size=8, cache_dir=str(tmp_path / "c"))
    with pytest.warns(DataWarning, match=r"\['ship'\] of .*test.* hold no images"):
        train, test = load_splits(cfg)
    assert train.classes == ["cat", "dog", "ship"] and train.labels.tolist() == [0] * 3 + \
        [1] * 3 + [2] * 3
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert [p.split("/")[-2] for p in map(str, test.paths)] == ["cat", "cat", "dog", "dog"]

    e = tmp_path / "e"
    _class_images(e / "train", {"cat": 3, "dog": 0, "ship": 3})
    _class_images(e / "test", {"cat": 2, "dog": 2, "ship": 2})
    with pytest.warns(DataWarning, match=r"\['dog'\] of .*train.* hold no images: their 2 "):
        train, test = load_splits(DataConfig(source=str(e), image_size=8,
                                             cache_dir=str(tmp_path / "c")))
    assert train.classes == ["cat", "ship"]
    assert test.labels.tolist() == [0, 0, 1, 1]  # ship keeps ship's label, not dog's
    assert [p.split("/")[-2] for p in map(str, test.paths)] == ["cat", "cat", "ship", "ship"]

    f = tmp_path / "f"
    _class_images(f / "train", {"cat": 2, "dog": 2})
    _class_images(f / "test", {"cat": 2, "truck": 2})
    with pytest.raises(DataError, match=r"only in train/: \['dog'\], only in test/: "
                                        r"\['truck'\]"):
        load_splits(DataConfig(source=str(f), image_size=8, cache_dir=str(tmp_path / "c")))
