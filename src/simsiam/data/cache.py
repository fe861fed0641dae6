"""Decoded-image cache: decode a list of image files once into a uint8 array on disk.

The array ``(N, S, S, 3)`` uint8 (RGB) is a ``.npy`` file under the cache directory, keyed
by a hash of the files' paths, sizes and modification times and of S, so a changed
folder is decoded again and an unchanged one is memory-mapped in milliseconds. Files
are written to a temporary name and renamed, so a crash never leaves a half-written
cache under the final name.

Size policy: if every image is S x S already (CIFAR), pixels are stored unchanged.
Otherwise each image is resized so its shorter side is S (bilinear, antialiased) and
centre-cropped to S x S.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from simsiam.errors import DataError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$SIMSIAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/simsiam``, else ``~/.cache/simsiam``."""
    if os.environ.get("SIMSIAM_CACHE_DIR"):
        return Path(os.environ["SIMSIAM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsiam"


def _load_rgb(path: Path, side: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (side, side):
                w, h = im.size
                scale = side / min(w, h)
                nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
                im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
                left, top = (nw - side) // 2, (nh - side) // 2
                im = im.crop((left, top, left + side, top + side))
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image '{path}': {exc}. Remove or replace the file") \
            from exc


def uniform_square_side(paths: list[Path]) -> int | None:
    """S if every image header says S x S, else None (reads headers only)."""
    sides = set()
    for p in paths:
        try:
            with Image.open(p) as im:
                sides.add(im.size)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image '{p}': {exc}. Remove or replace the file") \
                from exc
        if len(sides) > 1:
            return None
    (w, h), = sides
    return w if w == h else None


def cache_key(paths: list[Path], side: int) -> str:
    """Hex digest over (path, size, mtime) of every file and the stored side S."""
    h = hashlib.sha256(f"v{CACHE_VERSION} side={side}\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def decode_to_cache(paths: list[Path], side: int, cache_dir: Path, desc: str = "decode",
                    threads: int | None = None, progress: bool = True) -> np.ndarray:
    """Decoded images ``(N, side, side, 3)`` uint8, memory-mapped from the cache.

    Decodes (with a progress bar) only when no cache entry matches the files.

    Raises:
        DataError: images cannot be decoded (names every such file, after trying them
            all), or the cache directory cannot be written.
    """
    cache_dir = Path(cache_dir) / "decoded"
    key = cache_key(paths, side)
    final = cache_dir / f"{key}.npy"
    if final.exists():
        try:
            arr = np.load(final, mmap_mode="r")
            if arr.shape == (len(paths), side, side, 3) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):  # damaged entry: decode again below
            pass
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create cache directory '{cache_dir}': {exc}; set "
                        "data.cache_dir or SIMSIAM_CACHE_DIR to a writable folder") from exc
    tmp = cache_dir / f"{key}.npy.tmp-{os.getpid()}"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(paths), side, side, 3))
    try:
        def load(p: Path) -> np.ndarray | DataError:
            try:
                return _load_rgb(p, side)
            except DataError as exc:
                return exc

        bad: list[str] = []
        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            it = pool.map(load, paths)
            for i, img in enumerate(tqdm(it, total=len(paths), desc=desc, unit="img",
                                         mininterval=1.0, disable=not progress)):
                if isinstance(img, DataError):
                    bad.append(str(img))
                else:
                    out[i] = img
        if bad:
            shown = "\n  ".join(bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise DataError(f"{len(bad)} of {len(paths)} image files cannot be decoded; "
                            f"remove or replace them:\n  {shown}{more}")
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        (cache_dir / f"{key}.json").write_text(json.dumps(
            {"n": len(paths), "side": side, "first": str(paths[0]), "last": str(paths[-1])}))
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.load(final, mmap_mode="r")
