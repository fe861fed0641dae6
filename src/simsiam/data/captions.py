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
  read with the ``webdataset`` library in shard order (no shuffling). A sample is
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

import csv
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from simsiam.config import DataConfig
from simsiam.data.cache import (
    cache_key,
    decode_bytes_to_cache,
    decode_to_cache,
    default_cache_dir,
    header_size,
    square_side,
    uniform_square_side,
)
from simsiam.data.dataset import CapWarning, DataSplits, ImageSet
from simsiam.data.folder import first_per_class
from simsiam.errors import DataError, DataWarning
from simsiam.fileio import atomic_write

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TABLE_NAMES = tuple(f"captions{suffix}" for suffix in TABLE_SUFFIXES)
IMAGE_COLUMNS = ("image", "filepath", "file", "path", "image_path")
CAPTION_COLUMNS = ("caption", "text", "title", "sentence")
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LISTED_BAD_ROWS = 20  # bad rows named in the warning; the rest are counted
_INDEX_VERSION = 1


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


@dataclass
class CaptionRows:
    """The usable rows of a caption source, one entry per image.

    Attributes:
        paths: each image's path (a file, or ``shard.tar/key``), in order of first
            appearance.
        captions: each image's captions (stripped, at least one) in row order.
        bad: ``(where, reason)`` of each row left out, in source order (``line 7`` of a
            table, ``'a.tar' key '000012'`` of shards).
        rows: the rows (samples) read, good and bad.
        image_root: the folder a table's image paths were read relative to (None for
            shards).
    """

    paths: list[str]
    captions: list[list[str]]
    bad: list[tuple[str, str]]
    rows: int
    image_root: str | None = None


# ---------------------------------------------------------------- caption tables


def _pick_column(columns: list[str], wanted: str | None, defaults: tuple[str, ...],
                 table: Path, what: str) -> str:
    settings = "data.image_column / data.caption_column"
    if wanted is not None:
        if wanted in columns:
            return wanted
        raise DataError(f"caption table '{table}' has no column '{wanted}' "
                        f"(data.{what}_column); its columns are {columns}: set "
                        f"{settings} to the names of its image and caption columns")
    by_lower: dict[str, str] = {}
    for c in columns:
        by_lower.setdefault(c.lower(), c)
    found = next((by_lower[d] for d in defaults if d in by_lower), None)
    if found is None:
        raise DataError(f"caption table '{table}' has no {what} column: its columns are "
                        f"{columns}, none of {list(defaults)}; set {settings} to the names "
                        "of its image and caption columns")
    return found


def _columns(columns: list[str], table: Path, image_column: str | None,
             caption_column: str | None) -> tuple[str, str]:
    image = _pick_column(columns, image_column, IMAGE_COLUMNS, table, "image")
    caption = _pick_column(columns, caption_column, CAPTION_COLUMNS, table, "caption")
    if image == caption:
        raise DataError(f"caption table '{table}': the image column and the caption column "
                        f"are both '{image}'; set data.image_column / data.caption_column to "
                        "two different columns")
    return image, caption


# A record: (line, image, caption, None) or (line, None, None, why the row is malformed).
_Record = tuple[int, str | None, str | None, str | None]


def _delimited_records(f: IO[str], table: Path, tsv: bool, image_column: str | None,
                       caption_column: str | None) -> Iterator[_Record]:
    reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv
              else csv.reader(f))
    header: list[str] | None = None
    image = caption = 0
    start = 1  # the line a row starts on (a quoted CSV field may span lines)
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(field.strip() for field in row):
                continue  # a blank line
            if header is None:
                header = [c.strip() for c in row]
                names = _columns(header, table, image_column, caption_column)
                image, caption = header.index(names[0]), header.index(names[1])
                continue
            if len(row) != len(header):
                hint = ("a tab inside a field?" if tsv else
                        "a field holding a comma must be in double quotes")
                yield (line, None, None, f"{len(row)} fields where the header has "
                       f"{len(header)} ({hint})")
                continue
            yield line, row[image], row[caption], None
    except csv.Error as exc:
        raise DataError(f"caption table '{table}' line {reader.line_num}: {exc}; fix the "
                        "row (standard CSV quoting: a field holding a comma, a quote or a "
                        "line break in double quotes, a quote inside doubled)") from exc
    if header is None:
        raise DataError(f"caption table '{table}' is empty: expected a header row naming an "
                        "image column and a caption column, then one row per caption")


def _jsonl_records(f: IO[str], table: Path, image_column: str | None,
                   caption_column: str | None) -> Iterator[_Record]:
    names: tuple[str, str] | None = None
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, None, None, f"not valid JSON ({exc.msg}, column {exc.colno})"
            continue
        if not isinstance(obj, dict):
            yield line, None, None, f"not a JSON object (a {type(obj).__name__})"
            continue
        if names is None:  # the first object's keys are the table's columns
            names = _columns(list(obj), table, image_column, caption_column)
        values = []
        for name in names:
            value = obj.get(name)
            if value is None:
                yield line, None, None, f"no field '{name}'"
                break
            if not isinstance(value, str):
                yield line, None, None, f"field '{name}' is a {type(value).__name__}, not text"
                break
            values.append(value)
        else:
            yield line, values[0], values[1], None


def _records(table: Path, image_column: str | None,
             caption_column: str | None) -> list[_Record]:
    suffix = table.suffix.lower()
    line = 0
    try:
        with open(table, encoding="utf-8-sig", newline="") as f:
            if suffix == ".jsonl":
                it = _jsonl_records(f, table, image_column, caption_column)
            else:
                it = _delimited_records(f, table, suffix == ".tsv", image_column,
                                        caption_column)
            records = []
            for record in it:
                records.append(record)
                line = record[0]
    except UnicodeDecodeError as exc:
        raise DataError(f"caption table '{table}' is not UTF-8 text (after line {line}: "
                        f"{exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"cannot read caption table '{table}': {exc}") from exc
    return records


def _image_root(table: Path, image_root: str | None, records: list[_Record]) -> Path:
    """``data.image_root``, else the table's folder, else its ``images/`` when the first
    image paths are found there and not beside the table."""
    if image_root:
        return Path(image_root).expanduser()
    here = table.parent
    sample = [r[1].strip() for r in records if r[1] and r[1].strip()][:50]
    if any((here / v).is_file() for v in sample):
        return here
    if (here / "images").is_dir() and any((here / "images" / v).is_file() for v in sample):
        return here / "images"
    return here


def read_caption_table(table: str | Path, image_root: str | None = None,
                       image_column: str | None = None,
                       caption_column: str | None = None) -> CaptionRows:
    """The images of a caption table (CSV, TSV or JSONL; see the module docstring) with
    their captions, and the bad rows (not reported here: see :func:`load_caption_data`).

    Args:
        table: the table file.
        image_root: the folder its image paths are relative to (default: the table's
            folder, or its ``images/``).
        image_column, caption_column: the columns (default: the first present of
            :data:`IMAGE_COLUMNS` and of :data:`CAPTION_COLUMNS`).

    Returns:
        :class:`CaptionRows` whose paths are the image files (existing, not yet decoded).

    Raises:
        DataError: the table does not exist, is not UTF-8, is empty or has unparseable
            CSV; it lacks the image or the caption column (names its columns and the
            settings ``data.image_column`` / ``data.caption_column``).
    """
    table = Path(table).expanduser()
    if not table.is_file():
        what = "is a folder, not a file" if table.is_dir() else "does not exist"
        raise DataError(f"caption table '{table}' {what}; pass --data a .csv, .tsv or .jsonl "
                        "file with an image column and a caption column")
    records = _records(table, image_column, caption_column)
    if not records:
        raise DataError(f"caption table '{table}' has no rows below its header; add one row "
                        "per caption (image, caption)")
    root = _image_root(table, image_root, records)
    index: dict[str, int] = {}
    exists: dict[str, bool] = {}
    paths: list[str] = []
    captions: list[list[str]] = []
    bad: list[tuple[str, str]] = []
    for line, image, caption, malformed in records:
        where = f"line {line}"
        if malformed is not None or image is None or caption is None:
            bad.append((where, malformed or "malformed row"))
            continue
        if not image.strip():
            bad.append((where, "empty image path"))
            continue
        path = str(root / image.strip())
        if path not in exists:
            exists[path] = os.path.isfile(path)
        if not exists[path]:
            bad.append((where, f"image '{image.strip()}' not found (no file '{path}')"))
            continue
        text = caption.strip()
        if not text:
            bad.append((where, "empty caption"))
            continue
        if path not in index:
            index[path] = len(paths)
            paths.append(path)
            captions.append([])
        captions[index[path]].append(text)
    return CaptionRows(paths, captions, bad, len(records), str(root))


# ---------------------------------------------------------------- WebDataset shards


def shard_paths(pattern: str) -> list[Path]:
    """The shard files of a WebDataset pattern, in order: braces expanded by the
    ``webdataset`` library (``a/{000..009}.tar``; ``::`` joins patterns), ``~`` expanded.

    Raises:
        DataError: a shard does not exist (names the first and the count), or the pattern
            is a URL (only local files are read).
    """
    from webdataset.shardlists import expand_urls

    if "://" in pattern or pattern.startswith("pipe:"):
        raise DataError(f"data.source = '{pattern}': only local WebDataset shards are read; "
                        "download the shards and pass their local path pattern")
    shards = [Path(u).expanduser() for u in expand_urls(pattern)]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise DataError(f"WebDataset shard '{missing[0]}' does not exist ({len(missing)} of "
                        f"the {len(shards)} shards of '{pattern}' are missing); check the "
                        "pattern (braces such as {00000..00099} expand to each shard)")
    return shards


def _samples(shard: Path) -> Iterator[dict]:
    """The samples of one shard, in order (webdataset groups the files by key)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    try:
        with open(shard, "rb") as stream:
            yield from group_by_keys(tar_file_expander([{"url": str(shard),
                                                         "stream": stream}]))
    except Exception as exc:  # tarfile, IO and grouping errors: the shard is damaged
        text = str(exc.args[0]).split(" @ ")[0] if exc.args else ""  # webdataset adds " @ "
        raise DataError(f"cannot read WebDataset shard '{shard}': {type(exc).__name__}: "
                        f"{text}; check that it is a whole tar file (write or download it "
                        "again)") from exc


def _sample_caption(sample: dict) -> tuple[str | None, str | None]:
    """``(caption, None)``, or ``(None, why the sample has none)``."""
    if "txt" in sample:
        try:
            text = sample["txt"].decode("utf-8")
        except UnicodeDecodeError:
            return None, "its .txt is not UTF-8 text"
    elif "json" in sample:
        try:
            obj = json.loads(sample["json"])
        except ValueError:
            return None, "its .json is not valid JSON"
        text = obj.get("caption") if isinstance(obj, dict) else None
        if not isinstance(text, str):
            return None, "no caption (its .json has no text field 'caption')"
    else:
        return None, "no caption (no .txt, nor .json with a 'caption' field)"
    text = text.strip()
    return (text, None) if text else (None, "empty caption")


@dataclass
class _ShardIndex:
    """The usable samples of the shards: ``rows`` with, per image, ``(shard, ordinal in
    the shard, image extension)`` and the header size (None: unreadable)."""

    rows: CaptionRows
    members: list[tuple[int, int, str]]
    sizes: list[tuple[int, int] | None]


def _index_shards(shards: list[Path], cache_dir: Path, progress: bool) -> _ShardIndex:
    """Read every sample's key, caption and image size once; cached by the shards' stats."""
    head = f"shard-index v{_INDEX_VERSION} {cache_key(shards, 0)}"
    key = hashlib.sha256(head.encode()).hexdigest()[:32]
    cached = cache_dir / "captions" / f"{key}.json"
    try:
        info = json.loads(cached.read_text(encoding="utf-8"))
        return _ShardIndex(
            CaptionRows(info["paths"], info["captions"],
                        [(str(w), str(r)) for w, r in info["bad"]], int(info["rows"])),
            [(int(s), int(o), str(e)) for s, o, e in info["members"]],
            [None if s is None else (int(s[0]), int(s[1])) for s in info["sizes"]])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # no entry, or a damaged one: index again
    paths: list[str] = []
    captions: list[list[str]] = []
    bad: list[tuple[str, str]] = []
    members: list[tuple[int, int, str]] = []
    sizes: list[tuple[int, int] | None] = []
    rows = 0
    for si, shard in enumerate(tqdm(shards, desc="index shards", unit="shard",
                                    mininterval=1.0, disable=not progress)):
        for ordinal, sample in enumerate(_samples(shard)):
            rows += 1
            where = f"'{shard}' key '{sample['__key__']}'"
            ext = next((e for e in SHARD_IMAGE_EXTENSIONS if e in sample), None)
            caption, reason = _sample_caption(sample)
            if ext is None:
                reason = "no image (no .jpg, .jpeg, .png or .webp)"
            if reason is not None or caption is None:
                bad.append((where, reason or "no caption"))
                continue
            paths.append(f"{shard}/{sample['__key__']}")
            captions.append([caption])
            members.append((si, ordinal, ext))
            sizes.append(header_size(sample[ext]))
    index = _ShardIndex(CaptionRows(paths, captions, bad, rows), members, sizes)
    text = json.dumps({"paths": paths, "captions": captions, "bad": bad, "rows": rows,
                       "members": members, "sizes": sizes}, ensure_ascii=False)
    try:
        atomic_write(cached, lambda t: t.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot write the shard index under '{cached.parent}': {exc}; set "
                        "data.cache_dir or SIMSIAM_CACHE_DIR to a writable folder") from exc
    return index


def _shard_blobs(shards: list[Path], members: list[tuple[int, int, str]]) -> Iterator[bytes]:
    """The image bytes of ``members`` (in shard order), streamed from the shards."""
    for si in sorted({m[0] for m in members}):
        wanted = [(o, e) for s, o, e in members if s == si]
        pos = 0
        for ordinal, sample in enumerate(_samples(shards[si])):
            if pos < len(wanted) and ordinal == wanted[pos][0]:
                if wanted[pos][1] not in sample:
                    break
                yield sample[wanted[pos][1]]
                pos += 1
            if pos == len(wanted):
                break
        if pos < len(wanted):
            raise DataError(f"WebDataset shard '{shards[si]}' changed while it was read (its "
                            f"sample {wanted[pos][0]} is not as indexed); run again")


# ---------------------------------------------------------------- loading


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


def _image_set(paths: list[str], captions: list[list[str]], images: np.ndarray,
               kept: np.ndarray) -> ImageSet:
    return ImageSet(images, np.zeros(len(kept), dtype=np.int64), [""],
                    [paths[i] for i in kept], [captions[i] for i in kept])


def _decode_table(rows: CaptionRows, sel: np.ndarray, cfg: DataConfig, cache_dir: Path,
                  split: str, progress: bool) -> tuple[ImageSet, int]:
    files = [Path(rows.paths[i]) for i in sel]
    side = cfg.cache_side or uniform_square_side(files) or round(cfg.image_size * 8 / 7)
    dec = decode_to_cache(files, side, cache_dir, desc=f"decode {split}", progress=progress,
                          strict=cfg.strict)
    return (_image_set([rows.paths[i] for i in sel], [rows.captions[i] for i in sel],
                       dec.images, dec.kept), len(dec.skipped))


def _decode_shards(shards: list[Path], index: _ShardIndex, sel: np.ndarray, cfg: DataConfig,
                   cache_dir: Path, split: str, progress: bool) -> tuple[ImageSet, int]:
    members = [index.members[i] for i in sel]
    names = [index.rows.paths[i] for i in sel]
    side = (cfg.cache_side or square_side(index.sizes[i] for i in sel)
            or round(cfg.image_size * 8 / 7))
    h = hashlib.sha256(f"shards {cache_key(shards, side)}\n".encode())
    h.update(json.dumps(members).encode())
    dec = decode_bytes_to_cache(h.hexdigest()[:32], names, _shard_blobs(shards, members),
                                side, cache_dir, desc=f"decode {split}", progress=progress,
                                strict=cfg.strict)
    return (_image_set(names, [index.rows.captions[i] for i in sel], dec.images, dec.kept),
            len(dec.skipped))


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
        DataError: the table or a shard is missing, unreadable or lacks the columns; no
            row is usable; with ``cfg.strict``, a bad row or an undecodable image.
    """
    source = cfg.source.strip()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    shards: list[Path] = []
    index: _ShardIndex | None = None
    if source.lower().endswith(".tar"):
        shards = shard_paths(source)
        index = _index_shards(shards, cache_dir, progress)
        rows, unit = index.rows, "sample"
    else:
        rows = read_caption_table(source, cfg.image_root, cfg.image_column, cfg.caption_column)
        unit = "row"
    _report_bad(rows, source, cfg.strict, unit, _root_hint(rows, cfg.image_root))
    train_idx, test_idx, held_out, capped = _split(len(rows.paths), cfg, seed)
    if not len(train_idx):
        raise DataError(f"'{source}' leaves no training image: data.holdout_fraction = "
                        f"{cfg.holdout_fraction} holds out all {len(rows.paths)} of its images; "
                        "lower it, or add images")

    def decode(sel: np.ndarray, split: str) -> tuple[ImageSet, int]:
        if index is not None:
            return _decode_shards(shards, index, sel, cfg, cache_dir, split, progress)
        return _decode_table(rows, sel, cfg, cache_dir, split, progress)

    train, skipped = decode(train_idx, "train")
    test = None
    if len(test_idx):
        test, test_skipped = decode(test_idx, "test")
        skipped += test_skipped
    return DataSplits(train, test, cfg.source, len(rows.paths), 0, held_out, capped, skipped)
