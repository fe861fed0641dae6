"""``simsiam shard FOLDER OUT --shard-size N``: an image folder written once as WebDataset
shards, labels kept, so that a large collection reads as a few big files.

Every image of FOLDER (class subfolders; ``train/`` and ``test/`` or ``val/`` inside are
the splits, as for ``--data FOLDER``) becomes one sample: ``{key}.jpg`` (or ``.png``,
``.webp``: the file's own bytes, unchanged; other formats are stored as PNG), ``{key}.cls``
(the class index as text, webdataset's convention) and ``{key}.json`` with ``"class"``
(the folder name), ``"split"`` and ``"path"`` (relative to FOLDER; a name that is not
valid UTF-8 written with ``\\xNN`` escapes). Keys are the sample's
number, 8 digits. Shards are ``OUT/shard-000000.tar``, ... of at most N samples, training
images first, then the held-out ones in shards of their own; each is written to a
temporary name and renamed, and no existing file is replaced. Files whose header cannot
be read are left out with a warning (``--strict``: the first stops), as pretraining does.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from simsiam.data.cache import header_size
from simsiam.data.folder import labelled_test_files, scan_image_folder, split_roots
from simsiam.errors import DataError, DataWarning
from simsiam.fileio import atomic_write, display_path

KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


@dataclass
class ShardResult:
    """What :func:`write_shards` wrote: the shard paths, samples per split, skipped files."""

    shards: list[Path]
    samples: dict[str, int]
    skipped: int

    @property
    def pattern(self) -> str:
        """The brace pattern of every shard, for ``--data``."""
        first, last = self.shards[0], self.shards[-1]
        lo, hi = first.stem.split("-")[-1], last.stem.split("-")[-1]
        return str(first.parent / f"shard-{{{lo}..{hi}}}.tar") if lo != hi else str(first)


def _encoded(path: Path) -> tuple[bytes, str]:
    """The file's bytes and webdataset extension (PNG for formats shards do not keep)."""
    with Image.open(path) as im:
        ext = KEPT_FORMATS.get(im.format or "")
        if ext is not None:
            return path.read_bytes(), ext
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue(), "png"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o444
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: str | Path, out: str | Path, shard_size: int, strict: bool = False,
                 progress: bool = True) -> ShardResult:
    """Write the images of ``folder`` into shards of ``shard_size`` samples under ``out``.

    Raises:
        DataError: ``folder`` is not an image folder; a shard already exists in ``out``
            (named; nothing is replaced); ``strict`` and a file whose header cannot be read.
        DiskFullError: the disk filled up (the shard being written is removed).
    """
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: use 1 or more samples per shard")
    base, out = Path(folder).expanduser(), Path(out).expanduser()
    if not base.is_dir():
        raise DataError(f"simsiam shard: FOLDER '{base}' is not a folder: give a folder of "
                        "images (flat, or one subfolder per class; train/ and test/ kept)")
    if out.exists() and not out.is_dir():
        raise DataError(f"simsiam shard: OUT '{out}' is a file, not a folder: give a folder "
                        "for the shards (it is created if missing)")
    train_root, test_root = split_roots(base)
    paths, labels, classes = scan_image_folder(train_root)
    parts = [("train", paths, labels)]
    if test_root is not None:  # classes matched by folder name, as pretraining reads them
        parts.append(("test", *labelled_test_files(train_root, test_root, classes)))
    samples: list[tuple[str, Path, int, str]] = []
    skipped: list[tuple[str, str]] = []
    for split, files, labs in parts:
        for p, label in zip(files, labs, strict=True):
            if header_size(p) is None:
                skipped.append((str(p), "cannot read the image header"))
                if strict:
                    raise DataError(f"cannot read image '{p}' (not an image, empty or "
                                    "damaged): --strict stops on the first such file; "
                                    "remove or replace it, or drop --strict to leave such "
                                    "files out with a warning")
                continue
            samples.append((split, p, int(label), classes[label]))
    if skipped:
        lines = "\n  ".join(f"{p}: {r}" for p, r in skipped)
        warnings.warn(DataWarning(f"shard: left out {len(skipped)} of "
                                  f"{len(samples) + len(skipped)} image files whose header "
                                  f"cannot be read (--strict stops instead):\n  {lines}"),
                      stacklevel=2)
    groups = [[s for s in samples if s[0] == part[0]] for part in parts]
    chunks = [g[i:i + shard_size] for g in groups for i in range(0, len(g), shard_size)]
    targets = [out / f"shard-{i:06d}.tar" for i in range(len(chunks))]
    existing = [t for t in targets if t.exists()]
    if existing:
        raise DataError(f"'{existing[0]}' already exists ({len(existing)} of the "
                        f"{len(targets)} shards to write): choose an empty OUT folder; "
                        "nothing was replaced")
    key = 0
    bar = tqdm(total=len(samples), desc="shard", unit="img", disable=not progress,
               mininterval=1.0)
    for target, chunk in zip(targets, chunks, strict=True):
        entries = []
        for split, path, label, name in chunk:
            data, ext = _encoded(path)
            meta = {"class": display_path(name), "split": split,  # names as text: \xNN
                    "path": display_path(path.relative_to(base))}
            entries.append((f"{key:08d}", ext, data, str(label).encode(),
                            json.dumps(meta, ensure_ascii=False).encode()))
            key += 1
        atomic_write(target, lambda tmp, entries=entries: _write_tar(tmp, entries))
        bar.update(len(chunk))
    bar.close()
    return ShardResult(targets, {part[0]: len(g) for part, g in zip(parts, groups, strict=True)},
                       len(skipped))


def _write_tar(tmp: Path, entries: list[tuple[str, str, bytes, bytes, bytes]]) -> None:
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, ext, data, cls, meta in entries:
            _add(tar, f"{key}.{ext}", data)
            _add(tar, f"{key}.cls", cls)
            _add(tar, f"{key}.json", meta)
