"""Decoded-image cache: decode a list of image files once into a uint8 array on disk.

The array ``(M, S, S, 3)`` uint8 (RGB) is a ``.npy`` file under the cache directory, keyed
by a hash of the files' paths, sizes and modification times and of S, so a changed
folder is decoded again and an unchanged one is memory-mapped in milliseconds. Files
are written to a temporary name and renamed, so a crash never leaves a half-written
cache under the final name.

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
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from simsiam.errors import DataError, DataWarning
from simsiam.fileio import atomic_write, remove_stale_temps

CACHE_VERSION = 3  # 3: the resize and crop of torchvision's Resize + CenterCrop
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


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


def _read(path: str | Path, side: int) -> np.ndarray:
    with Image.open(path) as raw:
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
    text = str(exc).strip()
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
    try:
        return _read(path, side)
    except MemoryError:
        raise
    except Exception as exc:  # PIL plugins raise many types on damaged files
        raise DataError(f"cannot decode image '{path}': {_reason(exc)}") from exc


def _read_or_reason(path: Path, side: int) -> np.ndarray | str:
    """:func:`_read`'s image, or for a damaged file the reason it cannot be decoded."""
    try:
        return _read(path, side)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: its reason, reported later
        return _reason(exc)


def uniform_square_side(paths: list[Path]) -> int | None:
    """S if every readable image header says S x S, else None (reads headers only).

    Unreadable files are ignored here; :func:`decode_to_cache` deals with them.
    """
    sides = set()
    for p in paths:
        try:
            with Image.open(p) as im:
                sides.add(im.size)
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - unreadable files are reported by the decoder
            continue
        if len(sides) > 1:
            return None
    if len(sides) != 1:
        return None
    (w, h), = sides
    return w if w == h else None


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


def _skip_warning(skipped: list[tuple[str, str]], total: int, desc: str) -> None:
    if not skipped:
        return
    lines = "\n  ".join(f"{p}: {reason}" for p, reason in skipped)
    warnings.warn(f"{desc}: skipped {len(skipped)} of {total} image files that cannot be "
                  f"decoded (they are left out of the run; pass --strict to stop on the "
                  f"first instead):\n  {lines}", DataWarning, stacklevel=3)


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
    cache_dir = Path(cache_dir) / "decoded"
    key = cache_key(paths, side)
    final, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    hit = _cached(final, meta, len(paths), side) if final.exists() else None
    if hit is not None:
        if strict and hit.skipped:
            raise _strict_error(hit.skipped, len(paths))
        _skip_warning(hit.skipped, len(paths), desc)
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
                                    shape=(len(paths), side, side, 3))
    try:
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            it = pool.map(partial(_read_or_reason, side=side), paths)
            for i, img in enumerate(tqdm(it, total=len(paths), desc=desc, unit="img",
                                         mininterval=1.0, disable=not progress)):
                if isinstance(img, str):
                    skipped.append((str(paths[i]), img))
                    if strict:
                        raise _strict_error(skipped, len(paths))
                else:
                    out[len(kept)] = img  # rows packed in order; bad files leave no gap
                    kept.append(i)
        if not kept:
            raise DataError(f"none of the {len(paths)} image files could be decoded (first: "
                            f"'{skipped[0][0]}': {skipped[0][1]}); check the data folder")
        src = tmp
        if skipped:  # keep only the decoded rows: copy them into an array of M rows
            small = np.lib.format.open_memmap(compact, mode="w+", dtype=np.uint8,
                                              shape=(len(kept), side, side, 3))
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
        text = json.dumps({"n": len(paths), "side": side, "first": str(paths[0]),
                           "kept": kept, "skipped": skipped})
        atomic_write(meta, lambda t: t.write_text(text, encoding="utf-8"))
        os.replace(src, final)
    finally:
        for leftover in (tmp, compact):
            if leftover.exists():
                leftover.unlink()
    _skip_warning(skipped, len(paths), desc)
    return Decoded(np.load(final, mmap_mode="r"), np.asarray(kept, dtype=np.int64), skipped)
