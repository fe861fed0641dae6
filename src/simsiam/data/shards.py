"""WebDataset shards as caption data: index the samples once, decode the chosen images.

See :mod:`simsiam.data.captions` (the sources and rules): a sample is ``{key}.jpg`` (or
``.jpeg``, ``.png``, ``.webp``) with ``{key}.txt`` or ``{key}.json`` holding ``"caption"``;
its image path is ``shard.tar/key``. Shards are read in order with the ``webdataset``
library; the index (keys, captions, image sizes) is cached beside the decoded images and
keyed by the shards' paths, sizes and modification times, so a second load opens no shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from simsiam.config import DataConfig
from simsiam.data.cache import cache_key, decode_bytes_to_cache, header_size, square_side
from simsiam.data.dataset import ImageSet
from simsiam.data.tables import CaptionRows
from simsiam.errors import DataError
from simsiam.fileio import atomic_write

SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_INDEX_VERSION = 1


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
class ShardIndex:
    """The usable samples of ``shards``: ``rows`` with, per image, ``(shard, ordinal in
    the shard, image extension)`` and the header size (None: unreadable)."""

    shards: list[Path]
    rows: CaptionRows
    members: list[tuple[int, int, str]]
    sizes: list[tuple[int, int] | None]

    def decode(self, sel: np.ndarray, cfg: DataConfig, cache_dir: Path, split: str,
               progress: bool) -> tuple[ImageSet, int]:
        """The images of samples ``sel`` with their captions, decoded from the shards'
        bytes like folder images, and how many were skipped."""
        members = [self.members[i] for i in sel]
        names = [self.rows.paths[i] for i in sel]
        side = (cfg.cache_side or square_side(self.sizes[i] for i in sel)
                or round(cfg.image_size * 8 / 7))
        h = hashlib.sha256(f"shards {cache_key(self.shards, side)}\n".encode())
        h.update(json.dumps(members).encode())
        dec = decode_bytes_to_cache(h.hexdigest()[:32], names,
                                    _shard_blobs(self.shards, members), side, cache_dir,
                                    desc=f"decode {split}", progress=progress,
                                    strict=cfg.strict)
        return self.rows.image_set(sel, dec.images, dec.kept), len(dec.skipped)


def index_shards(shards: list[Path], cache_dir: Path, progress: bool) -> ShardIndex:
    """Read every sample's key, caption and image size once; cached by the shards' stats."""
    head = f"shard-index v{_INDEX_VERSION} {cache_key(shards, 0)}"
    key = hashlib.sha256(head.encode()).hexdigest()[:32]
    cached = cache_dir / "captions" / f"{key}.json"
    try:
        info = json.loads(cached.read_text(encoding="utf-8"))
        return ShardIndex(
            shards, CaptionRows(info["paths"], info["captions"],
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
    index = ShardIndex(shards, CaptionRows(paths, captions, bad, rows), members, sizes)
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
