"""Decoded-image cache: decode a list of image files once into a uint8 array on disk.

The array ``(M, S, S, 3)`` uint8 (RGB) is a ``.npy`` file under the cache directory, keyed
by a hash of the files' paths, sizes and modification times and of S, so a changed
folder is decoded again and an unchanged one is memory-mapped in milliseconds. Files
are written to a temporary name and renamed, so a crash never leaves a half-written
cache under the final name. Images held in memory rather than in files (the samples of
WebDataset shards, :mod:`simsiam.data.captions`) go through the same decoder and cache
(:func:`decode_bytes_to_cache`, keyed by the caller from the files they come from).

Decoding (:func:`read_rgb`): EXIF orientation is applied; 16-bit greyscale is scaled to
8 bits; alpha is dropped and palette images take their palette colours (the pixels
torchvision's ``ImageFolder`` loader would give); CMYK, greyscale and the other PIL modes
are converted to RGB.

Size policy: if every image is S x S already (CIFAR), pixels are stored unchanged.
Otherwise each image is resized so its shorter side is S (bilinear, antialiased) and
centre-cropped to S x S, exactly as torchvision's ``Resize(S)`` then ``CenterCrop(S)`` do
on a PIL image (same output sizes, same offsets, same PIL filter).

Bad-file policy: files that cannot be decoded (truncated, empty, not an image, a mode
PIL cannot convert, a decompression bomb) are found while decoding, before any training
step. By default they are skipped with one :class:`~simsiam.errors.DataWarning` that names
each of them and the count (M images remain, M <= N); with ``strict=True`` the first one
raises :class:`~simsiam.errors.DataError` naming it. The skipped list is kept beside the
cache entry, so a later run warns the same way without decoding again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from simsiam.errors import DataError, DataWarning
from simsiam.fileio import atomic_write, remove_stale_temps, reserve_space

# what a full disk's error suggests for the cache (besides freeing space)
CACHE_ELSEWHERE = "point data.cache_dir or SIMSIAM_CACHE_DIR at a disk with room"

CACHE_VERSION = 3  # 3: the resize and crop of torchvision's Resize + CenterCrop
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_T = TypeVar("_T")


def default_cache_dir() -> Path:
    """``$SIMSIAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/simsiam``, else ``~/.cache/simsiam``."""
    if os.environ.get("SIMSIAM_CACHE_DIR"):
        return Path(os.environ["SIMSIAM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsiam"


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _SIXTEEN_BIT or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        if im.mode in _SIXTEEN_BIT or a.max(initial=0) > 255:  # 16-bit data in any container
            a = a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":  # float images: [0, 1] if they fit, else [0, 255]
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if a.min(initial=0) >= 0 and a.max(initial=0) <= 1 else a
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL's advice for palette transparency; alpha dropped below
    return im if im.mode == "RGB" else im.convert("RGB")


def _read(src: str | Path | bytes, side: int) -> np.ndarray:
    """One image (a file, or its bytes) as ``(side, side, 3)`` uint8; raises what PIL raises."""
    with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as raw:
        raw.load()  # decode now: truncation surfaces here
        im = _to_rgb(ImageOps.exif_transpose(raw))
    if im.size != (side, side):
        # torchvision's Resize(side) and CenterCrop(side) on a PIL image, to the pixel: the
        # longer side int(side x long / short), the crop offset int(round(excess / 2))
        w, h = im.size
        nw, nh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = int(round((nw - side) / 2.0)), int(round((nh - side) / 2.0))
        im = im.crop((left, top, left + side, top + side))
    return np.asarray(im, dtype=np.uint8)


def _reason(exc: Exception) -> str:
    # PIL names an in-memory image (a shard's sample) by its buffer's repr
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "(bytes in memory)", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_rgb(path: str | Path, side: int) -> np.ndarray:
    """Decode one image file to ``(side, side, 3)`` uint8 RGB.

    Reads by content, not by extension (a PNG named ``.jpg`` is fine). Applies the EXIF
    orientation, converts the mode (see the module docstring), then resizes the shorter
    side to ``side`` (bilinear, antialiased) and centre-crops, unless already square of
    that side.

    Raises:
        DataError: the file is empty, truncated, not an image, in a mode that cannot be
            converted, or larger than PIL's decompression-bomb limit (names the file).
    """
    return _read_named(path, side, str(path))


def read_rgb_bytes(data: bytes, side: int, name: str) -> np.ndarray:
    """:func:`read_rgb` for an image held in memory (e.g. a WebDataset sample's ``.jpg``):
    the same decoding, resize and centre crop, so the same bytes give the same pixels.

    Args:
        data: the encoded image (any format PIL reads).
        side: the output side S.
        name: where the bytes come from, for the error message (``shard.tar/key``).

    Returns:
        ``(side, side, 3)`` uint8 RGB.

    Raises:
        DataError: the bytes are empty, truncated or not an image (names ``name``).
    """
    return _read_named(data, side, name)


def _read_named(src: str | Path | bytes, side: int, name: str) -> np.ndarray:
    """:func:`_read`, a damaged image raising :class:`DataError` that names ``name``."""
    try:
        return _read(src, side)
    except MemoryError:
        raise
    except Exception as exc:  # PIL plugins raise many types on damaged files
        raise DataError(f"cannot decode image '{name}': {_reason(exc)}") from exc


def _read_or_reason(src: Path | bytes, side: int) -> np.ndarray | str:
    """:func:`_read`'s image, or for a damaged file the reason it cannot be decoded."""
    try:
        return _read(src, side)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: its reason, reported later
        return _reason(exc)


def header_size(src: str | Path | bytes) -> tuple[int, int] | None:
    """``(width, height)`` from an image's header (a file or its bytes), or None when it
    cannot be read (the decoder reports such images)."""
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            return im.size
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - unreadable images are reported by the decoder
        return None


def square_side(sizes: Iterable[tuple[int, int] | None]) -> int | None:
    """S if every known size (None: unreadable, ignored) is the same S x S, else None."""
    seen = set()
    for size in sizes:
        if size is not None:
            seen.add(tuple(size))
            if len(seen) > 1:
                return None
    if len(seen) != 1:
        return None
    (w, h), = seen
    return w if w == h else None


def uniform_square_side(paths: list[Path]) -> int | None:
    """S if every readable image header says S x S, else None (reads headers only, and
    stops at the first image of another size).

    Unreadable files are ignored here; :func:`decode_to_cache` deals with them.
    """
    return square_side(header_size(p) for p in paths)


def cache_key(paths: list[Path], side: int) -> str:
    """Hex digest over (path, size, mtime) of every file and the stored side S."""
    h = hashlib.sha256(f"v{CACHE_VERSION} side={side}\n".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError as exc:  # a broken link or a vanished file: decoded as a failure
            h.update(f"{p}\tunreadable {exc.errno}\n".encode())
    return h.hexdigest()[:32]


@dataclass
class Decoded:
    """The result of :func:`decode_to_cache`.

    Attributes:
        images: ``(M, S, S, 3)`` uint8 RGB, a read-only memory map.
        kept: ``(M,)`` int64, the index in ``paths`` of each row of ``images``.
        skipped: ``(path, reason)`` of each file that could not be decoded (N - M of them).
    """

    images: np.ndarray
    kept: np.ndarray
    skipped: list[tuple[str, str]]


def _skip_warning(skipped: list[tuple[str, str]], total: int, desc: str,
                  stacklevel: int = 3) -> None:
    if not skipped:
        return
    lines = "\n  ".join(f"{p}: {reason}" for p, reason in skipped)
    warnings.warn(f"{desc}: skipped {len(skipped)} of {total} image files that cannot be "
                  f"decoded (they are left out of the run; pass --strict to stop on the "
                  f"first instead):\n  {lines}", DataWarning, stacklevel=stacklevel)


def _strict_error(skipped: list[tuple[str, str]], total: int) -> DataError:
    path, reason = skipped[0]
    return DataError(f"cannot decode image '{path}': {reason}. --strict (data.strict) stops "
                     f"on the first file that cannot be decoded ({len(skipped)} of {total} "
                     "found so far); remove or replace it, or drop --strict to skip such "
                     "files with a warning")


def _cached(final: Path, meta: Path, n: int, side: int) -> Decoded | None:
    """The cache entry if it is whole and consistent, else None (it is decoded again)."""
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        kept = np.asarray(info["kept"], dtype=np.int64)
        skipped = [(str(p), str(r)) for p, r in info["skipped"]]
        arr = np.load(final, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (arr.shape != (len(kept), side, side, 3) or arr.dtype != np.uint8
            or len(kept) + len(skipped) != n):
        return None
    return Decoded(arr, kept, skipped)


def _map_ahead(fn: Callable[[_T], np.ndarray | str], items: Iterable[_T],
               threads: int) -> Iterator[np.ndarray | str]:
    """``fn`` over ``items`` in threads, in order, with at most ``4 x threads`` items in
    flight (a stream of image bytes is not all held in memory; a strict stop cancels the
    rest)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 4 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def decode_to_cache(paths: list[Path], side: int, cache_dir: Path, desc: str = "decode",
                    threads: int | None = None, progress: bool = True,
                    strict: bool = False) -> Decoded:
    """Decode ``paths`` once to ``(M, side, side, 3)`` uint8, memory-mapped from the cache.

    Decodes (with a progress bar) only when no cache entry matches the files. Files that
    cannot be decoded are skipped with a :class:`DataWarning` naming each (see the module
    docstring), or with ``strict`` the first raises.

    Raises:
        DataError: ``strict`` and a file cannot be decoded; no file at all can be decoded;
            or the cache directory cannot be written.
    """
    return _decode_cached(cache_key(paths, side), [str(p) for p in paths], paths, side,
                          Path(cache_dir), desc, threads, progress, strict)


def decode_bytes_to_cache(key: str, names: list[str], blobs: Iterable[bytes], side: int,
                          cache_dir: Path, desc: str = "decode", threads: int | None = None,
                          progress: bool = True, strict: bool = False) -> Decoded:
    """:func:`decode_to_cache` for images held in memory: the same decoding (see
    :func:`read_rgb_bytes`), cache entry, skipping and ``strict`` stop.

    Args:
        key: the cache entry's name; the caller derives it from everything the pixels
            depend on (e.g. :func:`cache_key` of the shard files, ``side`` and ``names``).
        names: one name per image (``shard.tar/key``), for warnings and errors.
        blobs: the encoded images in the order of ``names``; iterated (lazily, a few ahead
            of the decoder) only when no cache entry matches ``key``.
        side, cache_dir, desc, threads, progress, strict: as for :func:`decode_to_cache`.

    Returns:
        :class:`Decoded`, whose ``kept`` index ``names``.

    Raises:
        DataError: as :func:`decode_to_cache`; also when ``blobs`` ends before ``names``.
    """
    return _decode_cached(key, names, blobs, side, Path(cache_dir), desc, threads, progress,
                          strict)


def _decode_cached(key: str, names: list[str], items: Iterable[Path] | Iterable[bytes],
                   side: int, cache_dir: Path, desc: str, threads: int | None,
                   progress: bool, strict: bool) -> Decoded:
    """The cache entry ``key`` of the images ``items`` (files or bytes, named ``names``),
    decoded now unless it exists."""
    cache_dir = cache_dir / "decoded"
    final, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    hit = _cached(final, meta, len(names), side) if final.exists() else None
    if hit is not None:
        if strict and hit.skipped:
            raise _strict_error(hit.skipped, len(names))
        _skip_warning(hit.skipped, len(names), desc, stacklevel=4)
        return hit
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create cache directory '{cache_dir}': {exc}; set "
                        "data.cache_dir or SIMSIAM_CACHE_DIR to a writable folder") from exc
    for prefix in (f"{key}.npy.tmp-", f"{key}.npy.compact-"):
        remove_stale_temps(cache_dir, prefix)  # left by a decode that was killed
    tmp = cache_dir / f"{key}.npy.tmp-{os.getpid()}"
    compact = cache_dir / f"{key}.npy.compact-{os.getpid()}"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(names), side, side, 3))
    reserve_space(tmp, final, CACHE_ELSEWHERE)
    decoded = _map_ahead(partial(_read_or_reason, side=side), items,
                         threads or min(8, os.cpu_count() or 1))
    try:
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        count = 0
        for i, img in enumerate(tqdm(decoded, total=len(names), desc=desc, unit="img",
                                     mininterval=1.0, disable=not progress)):
            if i >= len(names):
                raise DataError(f"{desc}: more images than the {len(names)} names given "
                                f"(after '{names[-1]}'); the source changed while it was "
                                "read: run again")
            count += 1
            if isinstance(img, str):
                skipped.append((names[i], img))
                if strict:
                    raise _strict_error(skipped, len(names))
            else:
                out[len(kept)] = img  # rows packed in order; bad files leave no gap
                kept.append(i)
        if count < len(names):
            raise DataError(f"{desc}: the source gave {count} images for {len(names)} names "
                            f"(missing from '{names[count]}' on); it changed while it was "
                            "read: run again")
        if not kept:
            raise DataError(f"none of the {len(names)} image files could be decoded (first: "
                            f"'{skipped[0][0]}': {skipped[0][1]}); check the data source")
        src = tmp
        if skipped:  # keep only the decoded rows: copy them into an array of M rows
            small = np.lib.format.open_memmap(compact, mode="w+", dtype=np.uint8,
                                              shape=(len(kept), side, side, 3))
            reserve_space(compact, final, CACHE_ELSEWHERE)
            for a in range(0, len(kept), 4096):
                b = min(a + 4096, len(kept))
                small[a:b] = out[a:b]
            small.flush()
            del small
            src = compact
        out.flush()
        del out
        with open(src, "rb+") as f:
            os.fsync(f.fileno())
        text = json.dumps({"n": len(names), "side": side, "first": names[0],
                           "kept": kept, "skipped": skipped})
        atomic_write(meta, lambda t: t.write_text(text, encoding="utf-8"))
        os.replace(src, final)
    finally:
        decoded.close()  # stops the decoder threads (a strict stop or an error)
        for leftover in (tmp, compact):
            if leftover.exists():
                leftover.unlink()
    _skip_warning(skipped, len(names), desc, stacklevel=4)
    return Decoded(np.load(final, mmap_mode="r"), np.asarray(kept, dtype=np.int64), skipped)
