"""Datasets: decoded images in memory, the train/held-out split, and the two-view dataset.

A source is an ImageFolder-style directory or ``cifar10`` / ``cifar100`` (torchvision),
or a caption table / WebDataset shards (:mod:`simsiam.data.captions`: images with their
captions, for CLIP). For a directory with ``train/`` and ``test/`` (or ``val/``) subfolders
those are the splits; otherwise a seeded ``holdout_fraction`` of each class is held out for
the kNN monitor. Labels are read for evaluation only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from simsiam.config import DataConfig
from simsiam.data.cache import (
    decode_to_cache,
    default_cache_dir,
    square_side,
    uniform_square_side,
)
from simsiam.data.folder import (
    first_per_class,
    holdout_by_class,
    labelled_test_files,
    scan_image_folder,
    split_roots,
)
from simsiam.errors import DataError, DataWarning

TORCHVISION_SOURCES = ("cifar10", "cifar100")
# view_seed(seed, epoch, _ORDER_STREAM) seeds the shuffle; sample indices never reach it.
_ORDER_STREAM = 2**31 - 1


@dataclass
class ImageSet:
    """Decoded images with labels, and with captions when the source has them.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB, possibly a read-only memory map.
        labels: ``(N,)`` int64 class indices (evaluation only).
        classes: class names, ``labels`` index into it.
        paths: the source of each image (file path, ``cifar10/train/123``, or for a
            WebDataset shard ``shard.tar/key``).
        captions: one list of captions (at least one, in the source's order) per image,
            aligned with ``images``; None for sources without captions (folders, CIFAR).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    captions: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        """Whether the labels mean anything: two classes or more. A flat folder (or one
        class folder, or ``data.labels: none``) is unlabelled: no accuracy is computed."""
        return len(self.classes) > 1

    def without_labels(self) -> ImageSet:
        """The same images as one unnamed class (``data.labels: none``)."""
        return ImageSet(self.images, np.zeros(len(self), dtype=np.int64), [""], self.paths,
                        self.captions)

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices`` (a copy for a memory map's fancy indexing), with their
        captions."""
        indices = np.asarray(indices, dtype=np.int64)
        captions = None if self.captions is None else [self.captions[i] for i in indices]
        images = (self.images.take(indices) if hasattr(self.images, "take")
                  else self.images[indices])  # files to stream stay lazy
        return ImageSet(images, self.labels[indices], self.classes,
                        [self.paths[i] for i in indices], captions)


@dataclass
class DataSplits:
    """The splits of a source and how they were made: the numbers of the start-up summary.

    Attributes:
        train, test: the training images and the held-out images (None: none).
        source: ``data.source`` as given.
        found: images in the source's training part (files of a folder, or samples; for
            caption data the images with a usable row).
        test_found: images in the source's own test split (``test/``, ``val/``, CIFAR's
            test set); 0 when the held-out images come out of the training part.
        held_out: images held out of the training part (``data.holdout_fraction``).
        capped: training images left out by ``data.per_class``.
        skipped: image files that could not be decoded (named in a DataWarning).
        folder: whether the source is a folder (not a torchvision dataset).
        pipeline: how the training images are read: ``cache`` (decoded once) or ``stream``
            (decoded from the files every epoch; ``train.images`` is lazy).
    """

    train: ImageSet
    test: ImageSet | None
    source: str
    found: int
    test_found: int = 0
    held_out: int = 0
    capped: int = 0
    skipped: int = 0
    folder: bool = True
    pipeline: str = "cache"


class CapWarning(DataWarning):
    """``data.per_class`` left out images of a folder (names both numbers)."""


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
              pipeline: str = "cache") -> DataSplits:
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

    Raises:
        DataError: the source is empty, missing or unreadable (names the path); with
            ``cfg.strict``, a file that cannot be decoded (or a bad row of a caption table).
    """
    from simsiam.data.captions import is_caption_source, load_caption_data

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
        from simsiam.data.shard_images import image_shards, load_shard_images

        index = image_shards(cfg, cache_dir, progress)
        splits = (load_caption_data(cfg, seed, progress) if index is None
                  else load_shard_images(index, cfg, seed, cache_dir, progress, pipeline))
    else:
        splits = _load_folder(cfg, seed, cache_dir, progress, pipeline)
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
                 pipeline: str = "cache") -> DataSplits:
    """Folders: choose the files first (split, cap), then decode only those."""
    train_root, test_root = split_roots(Path(cfg.source).expanduser())
    paths, labels, classes = scan_image_folder(train_root)
    found, held_out = len(paths), 0
    test_files: tuple[list[Path], np.ndarray] | None = None
    if test_root is not None:
        test_files = labelled_test_files(train_root, test_root, classes)
    elif cfg.holdout_fraction > 0:
        held = holdout_by_class(labels, cfg.holdout_fraction, seed)
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
    from simsiam.data.stream import FileImages, check_headers

    names = [str(p) for p in paths]
    kept, sizes = check_headers(paths, names, cfg.strict, "stream train")
    # the cache's side, so the monitor reads training and held-out images alike
    side = cfg.cache_side or square_side(sizes) or round(cfg.image_size * 8 / 7)
    images = FileImages([paths[i] for i in kept], [names[i] for i in kept], side)
    return (ImageSet(images, labels[kept], classes, [names[i] for i in kept]),
            len(paths) - len(kept))


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the views of sample ``index`` in ``epoch`` (independent streams)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class TwoViewDataset(Dataset):
    """Item ``i`` -> ``(x1, x2, i)``: two independent augmented views of image ``i``.

    The views are a pure function of (seed, epoch, index): each item seeds its own
    ``torch.Generator`` with :func:`view_seed`, so they do not depend on worker count,
    batch order or what ran before, and a resumed run draws the same views.

    Args:
        images: ``(N, H, W, 3)`` uint8.
        augment: callable ``(uint8 (3, H, W), generator, view) -> float (3, S, S)``
            (``view`` 0 or 1: the recipe's per-view probabilities).
        seed: the run's seed.
    """

    def __init__(self, images: np.ndarray, augment, seed: int) -> None:
        self.images = images
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views are drawn (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``key`` is an index (epoch from :meth:`set_epoch`) or ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        img = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)
        g = torch.Generator().manual_seed(view_seed(self.seed, epoch, index))
        return self.augment(img, g, 0), self.augment(img, g, 1), index


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, i)`` for a permutation of ``range(n)`` drawn from (seed, epoch).

    Carrying the epoch in each key lets persistent DataLoader workers draw that epoch's
    views without being told; the order is reproducible and resumable, also from inside
    an epoch: ``set_epoch(epoch, start)`` skips the first ``start`` keys of that epoch's
    permutation (a run resumed after ``start / batch`` steps).

    Data parallelism (``world_size`` > 1, the role of torch's DistributedSampler with
    ``set_epoch``): every process draws the same permutation, cut into global batches of
    ``batch_size`` (the tail that fills no global batch is dropped, so every process makes
    the same number of steps); process ``rank`` yields the ``rank``-th slice of
    ``batch_size / world_size`` keys of each. Together the processes see exactly the
    global batches a single process would, each image at most once per epoch.

    Args:
        n: dataset size.
        seed: the run's seed.
        batch_size: the global batch (needed when ``world_size`` > 1).
        rank, world_size: this process and the number of processes.

    Raises:
        ValueError: a rank outside ``0..world_size-1`` or a global batch that the world
            size does not divide.
    """

    def __init__(self, n: int, seed: int, batch_size: int | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if world_size > 1 and (batch_size is None or batch_size % world_size):
            raise ValueError(f"the global batch {batch_size} must be a multiple of the world "
                             f"size {world_size}")
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch, and the number of its keys already consumed (0..n; with
        several processes, counted over all of them: a multiple of the global batch)."""
        if not 0 <= start <= self.n:
            raise ValueError(f"start={start} is outside 0..{self.n}")
        if self.world_size > 1 and start % self.batch_size:
            raise ValueError(f"start={start} is not a multiple of the global batch "
                             f"{self.batch_size}")
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(view_seed(self.seed, self.epoch, _ORDER_STREAM))
        order = torch.randperm(self.n, generator=g).tolist()
        if self.world_size == 1:
            return order[self.start:]
        gb, per = self.batch_size, self.batch_size // self.world_size
        lo, hi = self.rank * per, (self.rank + 1) * per
        return [i for b in range(self.start, self.n // gb * gb, gb)
                for i in order[b + lo: b + hi]]

    def __iter__(self):
        return iter((self.epoch, i) for i in self._order())

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n - self.start
        return (self.n // self.batch_size * self.batch_size - self.start) // self.world_size
