"""Caption data (CLIP): images with one or more captions each, from a table or from shards.

Sources (:func:`is_caption_source`):

* A caption table: ``.csv`` (the csv module's standard quoting: a caption holding a comma
  or a quote is in double quotes, a quote inside doubled), ``.tsv`` (one row per line,
  fields separated by tabs, no quoting: quotes are part of the text) or ``.jsonl`` (one
  JSON object per line). A header row (for JSONL the keys of the first object) names the
  image column and the caption column: ``data.image_column`` / ``data.caption_column``,
  by default the first present of :data:`IMAGE_COLUMNS` and of :data:`CAPTION_COLUMNS`
  (in any letter case). Image paths are relative to ``data.image_root`` (a relative root
  is relative to the working directory); by default to the table's folder, or to
  ``images/`` beside the table when the files are there and not beside it. Several rows
  may name one image: the images are kept in order of first appearance, each with its
  captions in row order. :func:`caption_table_in` finds ``captions.csv`` (``.tsv``,
  ``.jsonl``) in a folder.
* WebDataset shards: a ``.tar`` file or a brace pattern (``shards/{00000..00099}.tar``),
  read in shard order (no shuffling), files grouped into samples by webdataset's rule
  (:mod:`simsiam.data.shard_tar`: a sample's files apart in the tar, several images in
  one sample, or a shard cut short are refused naming the shard and the fix). A sample is
  ``{key}.jpg`` (or ``.jpeg``, ``.png``, ``.webp``) with ``{key}.txt`` (its whole text is
  the caption) or ``{key}.json`` with a ``"caption"`` field (img2dataset's layout); its
  image path is ``shard.tar/key``. Shards are indexed once (keys, captions, image sizes),
  the index cached beside the decoded images and keyed by the shards' paths, sizes and
  modification times, so a second load opens no shard.

Captions are stripped of surrounding whitespace, otherwise kept verbatim (commas, quotes,
any Unicode). Bad rows (an image file that does not exist, an empty caption, a row that
is malformed: a JSONL line that is not an object, a missing field, a CSV row with more
or fewer fields than the header, a sample without an image or a caption) are skipped
with one :class:`~simsiam.errors.DataWarning` that counts them and names each (line
number, or shard and key, and the reason); with ``data.strict`` the first raises
:class:`~simsiam.errors.DataError`. Images are decoded exactly as folder images
(:mod:`simsiam.data.cache`: the same resize and centre crop, the same cache, and the same
skip-or-stop for files that cannot be decoded, whose captions go with them).

Splits: caption data is unlabelled (one unnamed class). The held-out split is drawn by
image, never by caption, with ``data.holdout_fraction`` and the run's seed (the same draw
as for a flat folder), so no image's captions are on both sides; ``data.per_class`` caps
the training images and ``data.test_per_class`` the held-out ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from simsiam.data.cache import (
    default_cache_dir,
)
from simsiam.data.config import DataConfig
from simsiam.data.folder import first_per_class
from simsiam.data.tables import (  # noqa: F401 (re-exported)
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    CaptionRows,
    CaptionTable,
    read_caption_table,
)
from simsiam.data.types import CapWarning, DataSplits
from simsiam.errors import DataError, DataWarning

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TABLE_NAMES = tuple(f"captions{suffix}" for suffix in TABLE_SUFFIXES)
LISTED_BAD_ROWS = 20  # bad rows named in the warning; the rest are counted


def is_caption_source(source: str) -> bool:
    """Whether ``data.source`` names caption data: a file ending ``.csv``, ``.tsv`` or
    ``.jsonl`` (any letter case), or WebDataset shards (ends with ``.tar``, possibly a
    brace pattern such as ``shards/{00000..00099}.tar``). A folder is never one, whatever
    its name. The file need not exist (loading it then names it in a DataError)."""
    text = str(source).strip()
    if not text.lower().endswith((*TABLE_SUFFIXES, ".tar")):
        return False
    return not Path(text).expanduser().is_dir()


def caption_table_in(folder: str | Path) -> Path | None:
    """The caption table directly in ``folder`` (the first of ``captions.csv``,
    ``captions.tsv``, ``captions.jsonl`` there), or None (also when ``folder`` is not a
    folder)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None
    return next((folder / n for n in TABLE_NAMES if (folder / n).is_file()), None)


def _root_hint(rows: CaptionRows, image_root: str | None) -> str:
    """For missing image files: the folder their paths were read relative to."""
    if rows.image_root is None or not any("not found (no file" in r for _, r in rows.bad):
        return ""
    how = ("data.image_root" if image_root else "by default the table's folder, or its "
           "images/; set data.image_root to the folder they are relative to")
    return f"; image paths are read relative to '{rows.image_root}' ({how})"


def _report_bad(rows: CaptionRows, source: str, strict: bool, unit: str, hint: str) -> None:
    """One DataWarning naming the bad rows (the first :data:`LISTED_BAD_ROWS`), or with
    ``strict`` a DataError naming the first; a DataError when no row is usable."""
    bad = rows.bad
    if not rows.paths:
        where, reason = bad[0]
        raise DataError(f"'{source}' has no usable {unit}: all {rows.rows:,} are left out "
                        f"(first: {where}: {reason}){hint}")
    if not bad:
        return
    if strict:
        where, reason = bad[0]
        raise DataError(f"'{source}' {where}: {reason}{hint}. --strict (data.strict) stops "
                        f"on the first bad {unit} ({len(bad):,} bad of {rows.rows:,}); fix or "
                        f"remove it, or drop --strict to skip such {unit}s with a warning")
    lines = "\n  ".join(f"{w}: {r}" for w, r in bad[:LISTED_BAD_ROWS])
    more = (f"\n  ... and {len(bad) - LISTED_BAD_ROWS:,} more"
            if len(bad) > LISTED_BAD_ROWS else "")
    warnings.warn(f"'{source}': skipped {len(bad):,} of {rows.rows:,} {unit}s (no image file, "
                  f"an empty caption or malformed; they are left out of the run; pass --strict "
                  f"to stop on the first instead){hint}:\n  {lines}{more}", DataWarning,
                  stacklevel=4)


def _split(n: int, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(train, test, held out, capped)``: the indices of the images in each split (a
    flat folder's seeded draw, by image) and the numbers held out and capped."""
    held = np.zeros(n, dtype=bool)
    if cfg.holdout_fraction > 0:
        rng = np.random.default_rng(seed)
        held[rng.choice(np.arange(n), size=int(round(n * cfg.holdout_fraction)),
                        replace=False)] = True
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
    capped = train[first_per_class(np.zeros(len(train), dtype=np.int64), cfg.per_class)]
    test = test[first_per_class(np.zeros(len(test), dtype=np.int64), cfg.test_per_class)]
    if len(capped) < len(train):
        warnings.warn(f"data.per_class = {cfg.per_class} keeps {len(capped):,} of the "
                      f"{len(train):,} training images of '{cfg.source}' "
                      f"({len(train) - len(capped):,} left out); to train on all of them "
                      "pass --set data.per_class=null (or a larger --per-class)",
                      CapWarning, stacklevel=3)
    return capped, test, int(held.sum()), len(train) - len(capped)


def load_caption_data(cfg: DataConfig, seed: int = 0, progress: bool = True) -> DataSplits:
    """The training and held-out images of a caption table or of WebDataset shards
    (``cfg.source``; see the module docstring), each :class:`ImageSet` with ``captions``.

    Bad rows are skipped with one DataWarning naming each (``cfg.strict``: the first
    raises); the held-out split is drawn by image with ``cfg.holdout_fraction`` and
    ``seed``; ``cfg.per_class`` caps the training images (a :class:`CapWarning` names both
    numbers) and ``cfg.test_per_class`` the held-out ones; then only the chosen images are
    decoded (undecodable ones skipped, or with ``cfg.strict`` the first raises, as for
    folders). The counts: ``found`` images with a usable row, ``held_out``, ``capped``,
    ``skipped`` (undecodable).

    Args:
        cfg: the data section (``source``, ``image_root``, ``image_column``,
            ``caption_column``, ``image_size``, ``cache_side``, ``cache_dir``, ``strict``,
            ``holdout_fraction``, ``per_class``, ``test_per_class``).
        seed: seeds the held-out draw.
        progress: show progress bars while indexing and decoding.

    Returns:
        :class:`DataSplits` with one unnamed class (labels all 0); ``test`` is None when
        no image is held out.

    Raises:
        DataError: the table or a shard is missing, unreadable or lacks the columns; a
            shard is cut short or holds files webdataset's grouping would lose (a sample's
            files apart, several images in one sample: :mod:`simsiam.data.shard_tar`); no
            row is usable; with ``cfg.strict``, a bad row or an undecodable image.
    """
    source = cfg.source.strip()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if source.lower().endswith(".tar"):
        from simsiam.data.shards import index_shards, shard_paths

        data: Any = index_shards(shard_paths(source), cache_dir, progress)
        unit = "sample"
    else:
        data = CaptionTable(read_caption_table(source, cfg.image_root, cfg.image_column,
                                         cfg.caption_column))
        unit = "row"
    rows = data.rows
    _report_bad(rows, source, cfg.strict, unit, _root_hint(rows, cfg.image_root))
    train_idx, test_idx, held_out, capped = _split(len(rows.paths), cfg, seed)
    if not len(train_idx):
        raise DataError(f"'{source}' leaves no training image: data.holdout_fraction = "
                        f"{cfg.holdout_fraction} holds out all {len(rows.paths)} of its images; "
                        "lower it, or add images")
    train, skipped = data.decode(train_idx, cfg, cache_dir, "train", progress)
    test = None
    if len(test_idx):
        test, test_skipped = data.decode(test_idx, cfg, cache_dir, "test", progress)
        skipped += test_skipped
    return DataSplits(train, test, cfg.source, len(rows.paths), 0, held_out, capped, skipped)
