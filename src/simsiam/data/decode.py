"""Decoding one image, shared by the decoded cache (:mod:`.cache`), the streamed views
(:mod:`.stream`) and DALI (:mod:`.dali`): the mode conversion, EXIF orientation, resize and
centre crop of :func:`read_rgb`, the header reads, and the wording of a file that cannot be
decoded (skipped with a warning, or the ``strict`` stop).

Decoding (:func:`read_rgb`): EXIF orientation is applied; 16-bit greyscale is scaled to
8 bits; alpha is dropped and palette images take their palette colours (the pixels
torchvision's ``ImageFolder`` loader would give); CMYK, greyscale and the other PIL modes
are converted to RGB. An image that is not ``side`` x ``side`` is resized so its shorter side
is ``side`` and centre-cropped, as torchvision's ``Resize`` then ``CenterCrop`` on a PIL image.

Formats: whatever the installed Pillow opens (:func:`pillow_reads`); HEIC/HEIF photos too
when the optional ``pillow-heif`` package is installed (its Pillow opener is registered
when this module is imported).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, features

from simsiam.errors import DataError, DataWarning

try:  # optional: HEIC/HEIF photos (phones) through pillow-heif, when it is installed
    from pillow_heif import register_heif_opener
except ImportError:
    HEIF_PLUGIN = False
else:
    register_heif_opener(avif=False)  # AVIF stays with Pillow's own plugin
    HEIF_PLUGIN = True

__all__ = ["HEIF_PLUGIN", "ImageSource", "SIXTEEN_BIT", "decode_reason", "header_size",
           "open_image", "oriented_size", "pillow_reads", "read_image", "read_named",
           "read_rgb", "read_rgb_bytes", "skip_warning", "strict_error", "to_rgb"]

# Pillow formats that decode only when Pillow was built with this codec or module
_NEEDS = {"JPEG": "jpg", "PNG": "zlib", "JPEG2000": "jpg_2000", "WEBP": "webp",
          "AVIF": "avif"}

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# EXIF orientations that swap width and height (transpose, rotations by 90 and 270)
SWAPS = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112
# Source of one image's bytes: a file path, or a callable returning the bytes (a shard
# member read by offset, :mod:`simsiam.data.wds`).
ImageSource = Path | str | Callable[[], bytes]


def pillow_reads(extension: str) -> bool:
    """Whether the installed Pillow (with its plugins) opens and decodes files ending in
    ``extension`` (``".avif"``, any case): a format registered for it that Pillow can open,
    built with the codec the format needs (``PIL.features``)."""
    fmt = Image.registered_extensions().get(extension.lower())
    if fmt is None or fmt not in Image.OPEN:
        return False
    need = _NEEDS.get(fmt)
    return need is None or bool(features.check(need))


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in SIXTEEN_BIT or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        if im.mode in SIXTEEN_BIT or a.max(initial=0) > 255:  # 16-bit data in any container
            a = a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":  # float images: [0, 1] if they fit, else [0, 255]
        a = np.asarray(im, dtype=np.float64)
        a = a * 255.0 if a.min(initial=0) >= 0 and a.max(initial=0) <= 1 else a
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL's advice for palette transparency; alpha dropped below
    return im if im.mode == "RGB" else im.convert("RGB")


def read_image(src: str | Path | bytes, side: int) -> np.ndarray:
    """One image (a file, or its bytes) as ``(side, side, 3)`` uint8; raises what PIL raises."""
    with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as raw:
        raw.load()  # decode now: truncation surfaces here
        im = to_rgb(ImageOps.exif_transpose(raw))
    if im.size != (side, side):
        # torchvision's Resize(side) and CenterCrop(side) on a PIL image, to the pixel: the
        # longer side int(side x long / short), the crop offset int(round(excess / 2))
        w, h = im.size
        nw, nh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
        im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
        left, top = int(round((nw - side) / 2.0)), int(round((nh - side) / 2.0))
        im = im.crop((left, top, left + side, top + side))
    return np.asarray(im, dtype=np.uint8)


def decode_reason(exc: Exception) -> str:
    # PIL names an in-memory image (a shard's sample) by its buffer's repr
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "(bytes in memory)", str(exc)).strip()
    # a file name that is not UTF-8, quoted by repr: its byte 0xNN as \xNN (display_path)
    text = re.sub(r"\\udc([89a-f][0-9a-f])", r"\\x\1", text)
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
    return read_named(path, side, str(path))


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
    return read_named(data, side, name)


def read_named(src: str | Path | bytes, side: int, name: str) -> np.ndarray:
    """:func:`read_image`, a damaged image raising :class:`DataError` that names ``name``."""
    try:
        return read_image(src, side)
    except MemoryError:
        raise
    except Exception as exc:  # PIL plugins raise many types on damaged files
        raise DataError(f"cannot decode image '{name}': {decode_reason(exc)}") from exc


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


def skip_warning(skipped: list[tuple[str, str]], total: int, desc: str,
                  stacklevel: int = 3) -> None:
    if not skipped:
        return
    lines = "\n  ".join(f"{p}: {reason}" for p, reason in skipped)
    warnings.warn(f"{desc}: skipped {len(skipped)} of {total} image files that cannot be "
                  f"decoded (they are left out of the run; pass --strict to stop on the "
                  f"first instead):\n  {lines}", DataWarning, stacklevel=stacklevel)


def strict_error(skipped: list[tuple[str, str]], total: int) -> DataError:
    path, reason = skipped[0]
    return DataError(f"cannot decode image '{path}': {reason}. --strict (data.strict) stops "
                     f"on the first file that cannot be decoded ({len(skipped)} of {total} "
                     "found so far); remove or replace it, or drop --strict to skip such "
                     "files with a warning")


def open_image(src: ImageSource) -> Image.Image:
    if callable(src):
        return Image.open(io.BytesIO(src()))
    return Image.open(src)


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the image as shown (after its EXIF orientation)."""
    w, h = im.size
    try:
        turned = im.getexif().get(EXIF_ORIENTATION) in SWAPS
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the image as stored
        turned = False
    return (h, w) if turned else (w, h)
