"""What a run was trained on: a fingerprint of its splits, to check ``--resume`` against.

A run that resumes must continue on the images it started with, and its held-out images
must stay held out (else the monitor would score images the encoder trained on). The
record of one split (:func:`split_record`) is its number of images, a digest over the
sorted ``(name, size in bytes)`` of every image (names as in :attr:`ImageSet.paths`: file
paths, ``shard.tar/key``, ``cifar10/train/7``; size -1 where the name is not a file), and,
up to :data:`NAMES_KEPT` images, the names and sizes themselves, so a change can be named.
Members of a shard are named, not sized: a shard rewritten with the same keys is not
seen (its file size is, when the shard itself is a file named in ``data.source``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from simsiam.data.types import DataSplits, ImageSet

__all__ = ["NAMES_KEPT", "data_changes", "data_record", "held_out_names", "split_moves",
           "split_record"]

NAMES_KEPT = 200_000  # names (and sizes) kept in the record up to this many per split
FORMAT = 1


def _size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except (OSError, ValueError):
        return -1


def split_record(images: ImageSet | None) -> dict[str, Any]:
    """The record of one split: ``n``, ``digest`` (32 hex digits) and, for at most
    :data:`NAMES_KEPT` images, ``files``: ``[name, size]`` pairs sorted by name."""
    if images is None:
        return {"n": 0, "digest": "", "files": []}
    files = sorted((name, _size(name)) for name in images.paths)
    h = hashlib.sha256()
    for name, size in files:
        h.update(f"{name}\t{size}\n".encode("utf-8", "surrogateescape"))
    record: dict[str, Any] = {"n": len(files), "digest": h.hexdigest()[:32]}
    if len(files) <= NAMES_KEPT:
        record["files"] = [list(f) for f in files]
    return record


def data_record(splits: DataSplits) -> dict[str, Any]:
    """The fingerprint of a run's data: ``format``, ``source``, and the ``train`` and
    ``test`` split records (:func:`split_record`)."""
    return {"format": FORMAT, "source": splits.source,
            "train": split_record(splits.train), "test": split_record(splits.test)}


def held_out_names(record: dict[str, Any]) -> frozenset[str] | None:
    """The held-out names of a record, or None when they were not kept (too many)."""
    test = record.get("test", {})
    if "files" not in test:
        return None
    return frozenset(name for name, _ in test["files"])


def _names(split: dict[str, Any]) -> dict[str, int] | None:
    return None if "files" not in split else {name: size for name, size in split["files"]}


def _examples(names: list[str], source: str) -> str:
    """Up to three names, relative to the source folder when below it."""
    prefix = source.rstrip("/") + "/"
    shown = ", ".join(repr(n[len(prefix):] if n.startswith(prefix) else n)
                      for n in names[:3])
    return f" (e.g. {shown})" if names else ""


def data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records, one phrase per split that changed, naming how
    many images were added, removed or changed in size, with examples (counts alone when
    the names were not kept). Empty when nothing changed."""
    changes = []
    for split in ("train", "test"):
        o, n = old.get(split, {}), new[split]
        if o.get("digest") == n["digest"] and o.get("n") == n["n"]:
            continue
        was, now = _names(o), _names(n)
        if was is None or now is None:
            changes.append(f"{split}: {o.get('n', '?')} -> {n['n']} images, contents differ")
            continue
        added = sorted(set(now) - set(was))
        removed = sorted(set(was) - set(now))
        resized = sorted(k for k in set(now) & set(was) if now[k] != was[k])
        parts = [f"{len(v)} {what}{_examples(v, str(new.get('source', '')))}" for what, v in
                 (("added", added), ("removed", removed), ("changed in size", resized)) if v]
        changes.append(f"{split}: {o.get('n')} -> {n['n']} images, " + "; ".join(parts))
    return changes


def split_moves(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(trained_now_held_out, held_out_now_trained)``: names that changed split between
    two records (both empty when the names were not kept)."""
    was_train, was_test = _names(old.get("train", {})), _names(old.get("test", {}))
    now_train, now_test = _names(new["train"]), _names(new["test"])
    if None in (was_train, was_test, now_train, now_test):
        return [], []
    return (sorted(set(was_train) & set(now_test)), sorted(set(was_test) & set(now_train)))
