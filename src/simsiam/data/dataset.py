"""The data dispatcher: which source a ``data.source`` is, and its images, split in train and
held out (:func:`load_data`, :func:`load_splits`). The types every source returns are
:mod:`.types`, the sampling :mod:`.sampling` (both re-exported here).

A source is an ImageFolder-style directory or ``cifar10`` / ``cifar100`` (torchvision),
or a caption table / WebDataset shards (:mod:`simsiam.data.captions`: images with their
captions, for CLIP). For a directory with ``train/`` and ``test/`` (or ``val/``) subfolders
those are the splits; otherwise a seeded ``holdout_fraction`` of each class is held out for
the kNN monitor. Labels are read for evaluation only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from simsiam.data.cache import (
    decode_to_cache,
    default_cache_dir,
    square_side,
    uniform_square_side,
)
from simsiam.data.captions import is_caption_source, load_caption_data
from simsiam.data.config import DataConfig
from simsiam.data.folder import (
    first_per_class,
    holdout_by_class,
    labelled_test_files,
    scan_image_folder,
    split_roots,
)
from simsiam.data.sampling import EpochShuffleSampler, TwoViewDataset, view_seed
from simsiam.data.shard_images import image_shards, load_shard_images
from simsiam.data.stream import FileImages, check_headers
from simsiam.data.types import CapWarning, DataSplits, ImageSet
from simsiam.errors import DataError, DataWarning

# the types and the sampling (simsiam.data.types, .sampling) are re-exported here
__all__ = ["CapWarning", "DataSplits", "EpochShuffleSampler", "ImageSet", "TORCHVISION_SOURCES",
           "TwoViewDataset", "load_data", "load_splits", "resolve_pipeline", "view_seed"]

TORCHVISION_SOURCES = ("cifar10", "cifar100")


def _decode(paths: list[Path], labels: np.ndarray, classes: list[str], cfg: DataConfig,
            cache_dir: Path, split: str, progress: bool) -> tuple[ImageSet, int]:
    """The decoded images, and the number of files that could not be decoded."""
    side = cfg.cache_side or uniform_square_side(paths) or round(cfg.image_size * 8 / 7)
    dec = decode_to_cache(paths, side, cache_dir, desc=f"decode {split}", progress=progress,
                          strict=cfg.strict)
    return (ImageSet(dec.images, labels[dec.kept], classes, [str(paths[i]) for i in dec.kept]),
            len(dec.skipped))


def _pick(paths: list[Path], labels: np.ndarray, idx: np.ndarray) -> tuple[list[Path], np.ndarray]:
    return [paths[i] for i in idx], labels[idx]


def _from_torchvision(name: str, train: bool, cache_dir: Path) -> ImageSet:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = cache_dir / "torchvision"
    try:
        ds = cls(str(root), train=train, download=True)
    except Exception as exc:  # network errors surface as URLError, OSError, RuntimeError
        raise DataError(f"could not download or read torchvision {name} under '{root}': "
                        f"{exc}. Connect to the internet once, or pass --data with an "
                        "image folder") from exc
    split = "train" if train else "test"
    labels = np.asarray(ds.targets, dtype=np.int64)
    return ImageSet(np.asarray(ds.data, dtype=np.uint8), labels, list(ds.classes),
                    [f"{name}/{split}/{i}" for i in range(len(labels))])


def load_splits(cfg: DataConfig, seed: int = 0,
                progress: bool = True) -> tuple[ImageSet, ImageSet | None]:
    """``(train, test)`` of :func:`load_data` (same arguments, same errors)."""
    splits = load_data(cfg, seed, progress)
    return splits.train, splits.test


def load_data(cfg: DataConfig, seed: int = 0, progress: bool = True,
              pipeline: str = "cache", held_out: frozenset[str] | None = None) -> DataSplits:
    """The training set and the held-out set (None when ``holdout_fraction`` is 0 and
    the source has no test split), with the per-class limits applied, and the counts of
    how they were made.

    Files that cannot be decoded are skipped with a ``DataWarning`` naming each, or with
    ``cfg.strict`` the first raises (see :mod:`simsiam.data.cache`); either way this
    happens here, before any training step. When ``data.per_class`` leaves out images of
    a folder, a :class:`CapWarning` names both numbers. With ``data.labels: none`` the
    class folders are ignored (one unnamed class: no accuracy is computed). A caption
    table or WebDataset shards (:func:`~simsiam.data.captions.is_caption_source`) are read
    by :func:`~simsiam.data.captions.load_caption_data` (images with ``captions``).

    ``pipeline`` (pretraining passes ``data.pipeline``; evaluation keeps ``cache``): with
    ``stream`` (or ``auto`` resolved to stream, :func:`resolve_pipeline`) a
    folder's training images are not decoded here: ``train.images`` is a lazy
    :class:`~simsiam.data.stream.FileImages` of the files whose header reads (the others
    skipped as above); held-out images are decoded to the cache as always.

    ``held_out`` (a resumed run, :mod:`simsiam.data.fingerprint`): the
    names of the images the run held out; a folder without ``test/`` then holds out
    exactly those still present instead of drawing ``holdout_fraction`` anew (images
    added since go to training), so the held-out split never moves under a run. Other
    sources draw their split as always.

    Raises:
        DataError: the source is empty, missing or unreadable (names the path); with
            ``cfg.strict``, a file that cannot be decoded (or a bad row of a caption table).
    """
    if not cfg.source:
        raise DataError("no data source given: pass --data DIR (a folder of images), --data "
                        "cifar10, or a caption table / WebDataset shards (CLIP), or set "
                        "data.source in the config")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if cfg.source in TORCHVISION_SOURCES:
        train = _from_torchvision(cfg.source, True, cache_dir)
        test: ImageSet | None = _from_torchvision(cfg.source, False, cache_dir)
        found, test_found = len(train), len(test)
        train = train.subset(first_per_class(train.labels, cfg.per_class))
        test = test.subset(first_per_class(test.labels, cfg.test_per_class))
        splits = DataSplits(train, test, cfg.source, found, test_found,
                            capped=found - len(train), folder=False)
    elif is_caption_source(cfg.source):
        index = image_shards(cfg, cache_dir, progress)
        splits = (load_caption_data(cfg, seed, progress) if index is None
                  else load_shard_images(index, cfg, seed, cache_dir, progress, pipeline))
    else:
        splits = _load_folder(cfg, seed, cache_dir, progress, pipeline, held_out)
    if pipeline in ("stream", "dali") and splits.pipeline == "cache":
        warnings.warn(DataWarning(f"data.pipeline {pipeline}: '{cfg.source}' is read through "
                                  "the decoded cache (the stream path reads image folders and "
                                  "image shards; caption data and torchvision's datasets are "
                                  "decoded once)"), stacklevel=2)
    if cfg.labels == "none":
        splits.train = splits.train.without_labels()
        if splits.test is not None:
            splits.test = splits.test.without_labels()
    return splits


def resolve_pipeline(pipeline: str, paths: list[Path], cfg: DataConfig) -> str:
    """``data.pipeline`` for these training files: ``auto`` is ``cache`` when every image
    is one square size no larger than the cache's side (stored whole, e.g. CIFAR: crops
    from the cache are crops of the whole image), else ``stream``; others as given."""
    if pipeline != "auto":
        return pipeline
    side = uniform_square_side(paths)
    limit = cfg.cache_side or round(cfg.image_size * 8 / 7)
    return "cache" if side is not None and side <= limit else "stream"


def _load_folder(cfg: DataConfig, seed: int, cache_dir: Path, progress: bool,
                 pipeline: str = "cache", keep_held: frozenset[str] | None = None
                 ) -> DataSplits:
    """Folders: choose the files first (split, cap), then decode only those; ``keep_held``:
    the names to hold out instead of a seeded draw (``held_out`` of :func:`load_data`)."""
    train_root, test_root = split_roots(Path(cfg.source).expanduser())
    paths, labels, classes = scan_image_folder(train_root)
    found, held_out = len(paths), 0
    test_files: tuple[list[Path], np.ndarray] | None = None
    if test_root is not None:
        test_files = labelled_test_files(train_root, test_root, classes)
    elif cfg.holdout_fraction > 0:
        held = (holdout_by_class(labels, cfg.holdout_fraction, seed) if keep_held is None
                else np.asarray([str(p) in keep_held for p in paths], dtype=bool))
        test_files = _pick(paths, labels, np.flatnonzero(held))
        paths, labels = _pick(paths, labels, np.flatnonzero(~held))
        held_out = len(test_files[0])
    before = len(paths)
    paths, labels = _pick(paths, labels, first_per_class(labels, cfg.per_class))
    if len(paths) < before:
        warnings.warn(f"data.per_class = {cfg.per_class} keeps {len(paths):,} of the "
                      f"{before:,} training images of '{train_root}' "
                      f"({before - len(paths):,} left out); "
                      "to train on all of them pass --set data.per_class=null (or a larger "
                      "--per-class)", CapWarning, stacklevel=3)
    pipeline = resolve_pipeline(pipeline, paths, cfg)
    if pipeline == "cache":
        train, skipped = _decode(paths, labels, classes, cfg, cache_dir, "train", progress)
    else:
        train, skipped = _files(paths, labels, classes, cfg)
    test, test_found = None, len(test_files[0]) if test_root is not None else 0
    if test_files is not None:
        tp, tl = _pick(*test_files, first_per_class(test_files[1], cfg.test_per_class))
        if tp:
            test, test_skipped = _decode(tp, tl, classes, cfg, cache_dir, "test", progress)
            skipped += test_skipped
    return DataSplits(train, test, cfg.source, found, test_found, held_out,
                      before - len(paths), skipped, pipeline=pipeline)


def _files(paths: list[Path], labels: np.ndarray, classes: list[str],
           cfg: DataConfig) -> tuple[ImageSet, int]:
    """The training files to stream (those whose header reads), lazily decodable, and the
    number skipped."""
    names = [str(p) for p in paths]
    kept, sizes = check_headers(paths, names, cfg.strict, "stream train")
    # the cache's side, so the monitor reads training and held-out images alike
    side = cfg.cache_side or square_side(sizes) or round(cfg.image_size * 8 / 7)
    images = FileImages([paths[i] for i in kept], [names[i] for i in kept], side)
    return (ImageSet(images, labels[kept], classes, [names[i] for i in kept]),
            len(paths) - len(kept))


