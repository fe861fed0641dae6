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
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from simsiam.data.decode import decode_reason as _reason
from simsiam.data.decode import (
    header_size,
    read_rgb,
    read_rgb_bytes,
    skip_warning,
    strict_error,
)
from simsiam.data.decode import read_image as _read
from simsiam.errors import DataError
from simsiam.fileio import atomic_write, default_cache_dir, remove_stale_temps, reserve_space

# read_rgb, read_rgb_bytes, header_size (simsiam.data.decode) and default_cache_dir
# (simsiam.fileio) are re-exported here, where they were first
__all__ = ["CACHE_ELSEWHERE", "CACHE_VERSION", "Decoded", "cache_key", "decode_bytes_to_cache",
           "decode_to_cache", "default_cache_dir", "header_size", "read_rgb", "read_rgb_bytes",
           "square_side", "uniform_square_side"]

# what a full disk's error suggests for the cache (besides freeing space)
CACHE_ELSEWHERE = "point data.cache_dir or SIMSIAM_CACHE_DIR at a disk with room"

CACHE_VERSION = 3  # 3: the resize and crop of torchvision's Resize + CenterCrop
_T = TypeVar("_T")


def _read_or_reason(src: Path | bytes, side: int) -> np.ndarray | str:
    """:func:`_read`'s image, or for a damaged file the reason it cannot be decoded."""
    try:
        return _read(src, side)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: its reason, reported later
        return _reason(exc)


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
    """Hex digest over (path, size, mtime) of every file and the stored side S.

    Paths are hashed as the file system's bytes (``os.fsencode``), so a name that is not
    valid UTF-8 (held in ``str`` as surrogate escapes) keys its own entry; other names
    give the same key as before."""
    h = hashlib.sha256(f"v{CACHE_VERSION} side={side}\n".encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(os.fsencode(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n"))
        except OSError as exc:  # a broken link or a vanished file: decoded as a failure
            h.update(os.fsencode(f"{p}\tunreadable {exc.errno}\n"))
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
            raise strict_error(hit.skipped, len(names))
        skip_warning(hit.skipped, len(names), desc, stacklevel=4)
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
                    raise strict_error(skipped, len(names))
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
    skip_warning(skipped, len(names), desc, stacklevel=4)
    return Decoded(np.load(final, mmap_mode="r"), np.asarray(kept, dtype=np.int64), skipped)
