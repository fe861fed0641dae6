"""WebDataset shards as caption data: index the samples once, decode the chosen images.

See :mod:`simsiam.data.captions` (the sources and rules): a sample is ``{key}.jpg`` (or
``.jpeg``, ``.png``, ``.webp``) with ``{key}.txt`` or ``{key}.json`` holding ``"caption"``;
its image path is ``shard.tar/key``. Shards are read in order, their files grouped into
samples by :func:`~simsiam.data.shard_tar.tar_samples` (webdataset's rule; a shard whose
files would be lost or misread, or that is cut short, is refused there with a DataError
naming it, before any image is decoded); the index (keys, captions, image sizes) is
cached beside the decoded images and keyed by the shards' paths, sizes and modification
times, so a second load opens no shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simsiam.data.cache import cache_key, decode_bytes_to_cache, header_size, square_side
from simsiam.data.config import DataConfig
from simsiam.data.shard_tar import IMAGE_EXTENSIONS, tar_samples
from simsiam.data.tables import CaptionRows
from simsiam.data.types import ImageSet
from simsiam.errors import DataError
from simsiam.fileio import atomic_write

SHARD_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS
# 2: byte offsets, samples without captions (labels from .cls/.json); 3: indexed only when
# the shard passes simsiam.data.shard_tar's checks (an index of version 2 may hold a shard
# whose files fall apart, so it is not reused)
_INDEX_VERSION = 3


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


class ShardMember:
    """The bytes of one file inside a tar shard, read by offset (a picklable image source
    for the stream path: :class:`~simsiam.data.stream.FileImages`).

    A shard cut short after it was indexed (found only mid-run, as its images are read)
    raises OSError naming the shard and the byte; the stream skips that image and names
    it in its DataWarning (``--strict``: DataError), and the next run indexes the shard
    again (its size changed) and stops before training naming it."""

    def __init__(self, shard: str, offset: int, size: int) -> None:
        self.shard, self.offset, self.size = shard, offset, size

    def __call__(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"WebDataset shard '{self.shard}' is cut short: it ends before byte "
                          f"{self.offset + self.size:,}, the end of this image (it changed "
                          "after it was indexed; the next run indexes it again)")
        return data


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


def _sample_class(sample: dict) -> str | None:
    """The class name of a sample: its ``.json``'s ``"class"`` (written by ``simsiam
    shard``), else its ``.cls`` (webdataset's integer label, as text), else None."""
    if "json" in sample:
        try:
            obj = json.loads(sample["json"])
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("class"), (str, int)):
            return str(obj["class"])
    if "cls" in sample:
        try:
            return str(int(sample["cls"].decode("ascii").strip()))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def _sample_split(sample: dict) -> str:
    """``"test"`` when a sample's .json says ``"split": "test"``, else ``"train"``."""
    try:
        obj = json.loads(sample.get("json", b"{}"))
    except ValueError:
        return "train"
    return "test" if isinstance(obj, dict) and obj.get("split") == "test" else "train"


@dataclass
class ShardImage:
    """Every sample of the shards that holds an image, whether or not it has a caption.

    Attributes (one entry per such sample, in shard order):
        names: ``shard.tar/key``.
        members: ``(shard, ordinal in the shard, image extension)``.
        where: ``(byte offset of the image's data in its tar, size)``.
        sizes: header size ``(w, h)``, None when the header cannot be read.
        classes: the class name (:func:`_sample_class`), None when the sample has none.
        captions: the caption, or None; ``why``: the reason there is none.
        splits: ``"test"`` for a sample whose .json says ``"split": "test"``, else ``"train"``.
    """

    names: list[str]
    members: list[tuple[int, int, str]]
    where: list[tuple[int, int]]
    sizes: list[tuple[int, int] | None]
    classes: list[str | None]
    captions: list[str | None]
    why: list[str | None]
    splits: list[str]


@dataclass
class ShardIndex:
    """The samples of ``shards``: ``rows`` (caption data: the samples with an image and a
    caption) with, per image, ``(shard, ordinal in the shard, image extension)`` and the
    header size (None: unreadable); ``images``: every sample with an image (image data for
    the methods that need no captions, :mod:`simsiam.data.shard_images`)."""

    shards: list[Path]
    rows: CaptionRows
    members: list[tuple[int, int, str]]
    sizes: list[tuple[int, int] | None]
    images: ShardImage | None = None

    @property
    def has_captions(self) -> bool:
        """Whether any sample has a caption (then the shards are caption data)."""
        return bool(self.rows.paths)

    def decode(self, sel: np.ndarray, cfg: DataConfig, cache_dir: Path, split: str,
               progress: bool) -> tuple[ImageSet, int]:
        """The images of samples ``sel`` with their captions, decoded from the shards'
        bytes like folder images, and how many were skipped."""
        dec = decode_members(self.shards, [self.members[i] for i in sel],
                             [self.rows.paths[i] for i in sel], [self.sizes[i] for i in sel],
                             cfg, cache_dir, split, progress)
        return self.rows.image_set(sel, dec.images, dec.kept), len(dec.skipped)


def decode_members(shards: list[Path], members: list[tuple[int, int, str]], names: list[str],
                   sizes: list[tuple[int, int] | None], cfg: DataConfig, cache_dir: Path,
                   split: str, progress: bool):
    """The images ``members`` of ``shards`` decoded to the cache like folder images
    (:func:`~simsiam.data.cache.decode_bytes_to_cache`: skipped or ``strict``)."""
    side = cfg.cache_side or square_side(sizes) or round(cfg.image_size * 8 / 7)
    h = hashlib.sha256(f"shards {cache_key(shards, side)}\n".encode())
    h.update(json.dumps(members).encode())
    return decode_bytes_to_cache(h.hexdigest()[:32], names, _shard_blobs(shards, members),
                                 side, cache_dir, desc=f"decode {split}", progress=progress,
                                 strict=cfg.strict)


def _load_index(shards: list[Path], info: dict) -> ShardIndex:
    sizes = [None if s is None else (int(s[0]), int(s[1])) for s in info["sizes"]]
    im = info["images"]
    return ShardIndex(
        shards, CaptionRows(info["paths"], info["captions"],
                            [(str(w), str(r)) for w, r in info["bad"]], int(info["rows"])),
        [(int(s), int(o), str(e)) for s, o, e in info["members"]], sizes,
        ShardImage(im["names"], [(int(s), int(o), str(e)) for s, o, e in im["members"]],
                   [(int(a), int(b)) for a, b in im["where"]],
                   [None if s is None else (int(s[0]), int(s[1])) for s in im["sizes"]],
                   im["classes"], im["captions"], im["why"], im["splits"]))


def index_shards(shards: list[Path], cache_dir: Path, progress: bool) -> ShardIndex:
    """Read every sample's key, caption, class, image size and offset once; cached by the
    shards' stats (a shard is read by :func:`~simsiam.data.shard_tar.tar_samples`).

    Raises:
        DataError: a shard cannot be read, is cut short or damaged, or holds files the
            grouping would lose (a sample's files apart, several images in one sample);
            named with the fix, before any image is decoded. The index cannot be written.
    """
    head = f"shard-index v{_INDEX_VERSION} {cache_key(shards, 0)}"
    key = hashlib.sha256(head.encode()).hexdigest()[:32]
    cached = cache_dir / "captions" / f"{key}.json"
    try:
        return _load_index(shards, json.loads(cached.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # no entry, or a damaged one: index again
    im = ShardImage([], [], [], [], [], [], [], [])
    bad: list[tuple[str, str]] = []  # as caption data: no image, or no caption
    keep: list[int] = []  # the samples of im with a caption
    rows = 0
    for si, shard in enumerate(tqdm(shards, desc="index shards", unit="shard",
                                    mininterval=1.0, disable=not progress)):
        for ordinal, sample in enumerate(tar_samples(shard)):
            rows += 1
            where = f"'{shard}' key '{sample['__key__']}'"
            ext = next((e for e in SHARD_IMAGE_EXTENSIONS if e in sample), None)
            if ext is None:
                bad.append((where, "no image (no .jpg, .jpeg, .png or .webp)"))
                continue
            caption, reason = _sample_caption(sample)
            if caption is None:
                bad.append((where, reason or "no caption"))
            else:
                keep.append(len(im.names))
            im.names.append(f"{shard}/{sample['__key__']}")
            im.members.append((si, ordinal, ext))
            im.where.append(sample["__where__"][ext])
            im.sizes.append(header_size(sample[ext]))
            im.classes.append(_sample_class(sample))
            im.captions.append(caption)
            im.why.append(reason)
            im.splits.append(_sample_split(sample))
    info = {"paths": [im.names[i] for i in keep], "captions": [[im.captions[i]] for i in keep],
            "bad": bad, "rows": rows, "members": [im.members[i] for i in keep],
            "sizes": [im.sizes[i] for i in keep], "images": im.__dict__}
    text = json.dumps(info)  # \u escapes: names that are not UTF-8 (surrogates) round-trip
    try:
        atomic_write(cached, lambda t: t.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot write the shard index under '{cached.parent}': {exc}; set "
                        "data.cache_dir or SIMSIAM_CACHE_DIR to a writable folder") from exc
    return _load_index(shards, json.loads(text))


def _shard_blobs(shards: list[Path], members: list[tuple[int, int, str]]) -> Iterator[bytes]:
    """The image bytes of ``members`` (in shard order), streamed from the shards."""
    for si in sorted({m[0] for m in members}):
        wanted = [(o, e) for s, o, e in members if s == si]
        pos = 0
        for ordinal, sample in enumerate(tar_samples(shards[si])):
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
