"""Caption tables (CSV, TSV, JSONL) as caption data; the rows every caption source yields.

See :mod:`simsiam.data.captions` for the formats, the column and image-root rules and the
treatment of bad rows; :mod:`simsiam.data.shards` reads WebDataset shards into the same
:class:`CaptionRows`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from simsiam.data.cache import decode_to_cache, uniform_square_side
from simsiam.data.config import DataConfig
from simsiam.data.types import ImageSet
from simsiam.errors import DataError
from simsiam.fileio import not_utf8_error, read_utf8_text

IMAGE_COLUMNS = ("image", "filepath", "file", "path", "image_path")
CAPTION_COLUMNS = ("caption", "text", "title", "sentence")


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

    def image_set(self, sel: np.ndarray, images: np.ndarray, kept: np.ndarray) -> ImageSet:
        """Entries ``sel`` decoded as ``images``, of which ``kept`` (indices into ``sel``)
        survived decoding: one unnamed class with their paths and captions."""
        return ImageSet(images, np.zeros(len(kept), dtype=np.int64), [""],
                        [self.paths[sel[i]] for i in kept],
                        [self.captions[sel[i]] for i in kept])


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
        read_utf8_text(table, "caption table")  # raises the one message: line, byte, fix
        raise not_utf8_error(table, "caption table", exc, f"after line {line}") from exc
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


# ---------------------------------------------------------------- loading


@dataclass
class CaptionTable:
    """A caption table's rows, decoded like a folder's files (:mod:`simsiam.data.cache`)."""

    rows: CaptionRows

    def decode(self, sel: np.ndarray, cfg: DataConfig, cache_dir: Path, split: str,
               progress: bool) -> tuple[ImageSet, int]:
        """The images of rows ``sel`` with their captions, and how many were skipped."""
        files = [Path(self.rows.paths[i]) for i in sel]
        side = cfg.cache_side or uniform_square_side(files) or round(cfg.image_size * 8 / 7)
        dec = decode_to_cache(files, side, cache_dir, desc=f"decode {split}",
                              progress=progress, strict=cfg.strict)
        return self.rows.image_set(sel, dec.images, dec.kept), len(dec.skipped)
