"""WebDataset shards as image data, for every method: labels from each sample's class.

Shards whose samples have no caption (e.g. written by ``simsiam shard``,
:mod:`simsiam.data.shard_writer`) are read as an image folder is: each sample's class is
its ``.json``'s ``"class"`` or its ``.cls`` (webdataset's integer label); a sample whose
``.json`` says ``"split": "test"`` is held out (a folder's ``test/``), otherwise a seeded
``data.holdout_fraction`` of each class is. The training images are decoded to the cache
(``data.pipeline`` cache) or streamed (stream: each image read by its byte offset
in the tar, :class:`~simsiam.data.shards.ShardMember`, decoded every epoch by the stream
path's workers). Shards with captions are caption data (:mod:`simsiam.data.captions`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from simsiam.data.cache import square_side
from simsiam.data.config import DataConfig
from simsiam.data.folder import first_per_class, holdout_by_class
from simsiam.data.shards import ShardIndex, ShardMember, decode_members, index_shards, shard_paths
from simsiam.data.types import DataSplits, ImageSet
from simsiam.errors import DataError, DataWarning


def image_shards(cfg: DataConfig, cache_dir: Path, progress: bool) -> ShardIndex | None:
    """The index of ``data.source`` when it is WebDataset shards without captions; None
    for caption data (a table, or shards with captions).

    Raises:
        DataError: as :func:`~simsiam.data.shards.index_shards` (a shard cut short, or
            whose files would be lost to webdataset's grouping), before any decode.
    """
    if not cfg.source.strip().lower().endswith(".tar"):
        return None
    index = index_shards(shard_paths(cfg.source.strip()), cache_dir, progress)
    return None if index.has_captions else index


def _class_order(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def _labels(index: ShardIndex, source: str) -> tuple[np.ndarray, list[str]]:
    im = index.images
    named = [c for c in im.classes if c is not None]
    if len(named) < len(im.classes):
        if named:
            warnings.warn(DataWarning(
                f"'{source}': {len(im.classes) - len(named):,} of {len(im.classes):,} samples "
                "have no class (.cls, or .json 'class'): the shards are read without labels "
                "(label-free signals only)"), stacklevel=4)
        return np.zeros(len(im.classes), dtype=np.int64), [""]
    classes = sorted(set(named), key=_class_order)
    pos = {c: i for i, c in enumerate(classes)}
    return np.asarray([pos[c] for c in named], dtype=np.int64), classes


def load_shard_images(index: ShardIndex, cfg: DataConfig, seed: int, cache_dir: Path,
                      progress: bool, pipeline: str = "cache") -> DataSplits:
    """The training and held-out images of image shards (see the module docstring).

    Raises:
        DataError: no sample holds an image; ``strict`` and an unreadable image.
    """
    im = index.images
    if not im.names:
        raise DataError(f"WebDataset shards '{cfg.source}' hold no image (no .jpg, .jpeg, "
                        ".png or .webp in {index.rows.rows:,} samples)")
    labels, classes = _labels(index, cfg.source)
    test = np.asarray([c == "test" for c in im.splits], dtype=bool)
    held = test if test.any() else (holdout_by_class(labels, cfg.holdout_fraction, seed)
                                    if cfg.holdout_fraction > 0 else np.zeros_like(test))
    train_idx, test_idx = np.flatnonzero(~held), np.flatnonzero(held)
    found = len(train_idx)
    train_idx = train_idx[first_per_class(labels[train_idx], cfg.per_class)]
    test_idx = test_idx[first_per_class(labels[test_idx], cfg.test_per_class)]
    if not len(train_idx) and test.all():
        raise DataError(f"'{cfg.source}': all {len(test):,} samples are marked \"split\": "
                        "\"test\" (held out): add the shards with the training samples to "
                        "the pattern")
    if not len(train_idx):
        raise DataError(f"'{cfg.source}' leaves no training image: data.holdout_fraction = "
                        f"{cfg.holdout_fraction} holds out all of them; lower it")
    if pipeline == "auto":
        limit = cfg.cache_side or round(cfg.image_size * 8 / 7)
        side = square_side(im.sizes[i] for i in train_idx)
        pipeline = "cache" if side is not None and side <= limit else "stream"
    train, skipped = (_decoded(index, train_idx, labels, classes, cfg, cache_dir, "train",
                               progress) if pipeline == "cache"
                      else _streamed(index, train_idx, labels, classes, cfg))
    test_set = None
    if len(test_idx):
        test_set, more = _decoded(index, test_idx, labels, classes, cfg, cache_dir, "test",
                                  progress)
        skipped += more
    return DataSplits(train, test_set, cfg.source, found, int(test.sum()),
                      0 if test.any() else int(held.sum()), found - len(train_idx), skipped,
                      pipeline=pipeline)


def _decoded(index: ShardIndex, sel: np.ndarray, labels: np.ndarray, classes: list[str],
             cfg: DataConfig, cache_dir: Path, split: str, progress: bool
             ) -> tuple[ImageSet, int]:
    im = index.images
    names = [im.names[i] for i in sel]
    dec = decode_members(index.shards, [im.members[i] for i in sel], names,
                         [im.sizes[i] for i in sel], cfg, cache_dir, split, progress)
    return (ImageSet(dec.images, labels[sel][dec.kept], classes, [names[i] for i in dec.kept]),
            len(dec.skipped))


def _streamed(index: ShardIndex, sel: np.ndarray, labels: np.ndarray, classes: list[str],
              cfg: DataConfig) -> tuple[ImageSet, int]:
    """The training samples to stream (their header read when indexed; the unreadable
    ones skipped, or ``strict``: the first raises)."""
    from simsiam.data.stream import FileImages, usable

    im = index.images
    found = len(sel)
    sel = sel[usable([im.sizes[i] for i in sel], [im.names[i] for i in sel], cfg.strict,
                     "stream train")]
    sources = [ShardMember(str(index.shards[im.members[i][0]]), *im.where[i]) for i in sel]
    names = [im.names[i] for i in sel]
    # the cache's side, so the monitor reads training and held-out images alike
    side = (cfg.cache_side or square_side(im.sizes[i] for i in sel)
            or round(cfg.image_size * 8 / 7))
    return (ImageSet(FileImages(sources, names, side), labels[sel], classes, names),
            found - len(sel))
