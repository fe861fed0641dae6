"""``simsiam neighbors``'s outputs: every image's neighbours as a .json or .csv file
(:func:`write_neighbors_file`) and the images of the contact sheet (:func:`image_at`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simsiam.data import ImageSet
from simsiam.eval.neighbors import NeighborIndex
from simsiam.fileio import atomic_write, display_path

__all__ = ["image_at", "write_neighbors_file"]


def write_neighbors_file(out: Path, checkpoint: str, data: str, index: NeighborIndex,
                         sims: np.ndarray, idx: np.ndarray) -> None:
    """Every image's neighbours, written atomically. ``.json``: ``{checkpoint, data, k,
    neighbors: [{path, neighbors: [{path, similarity}]}]}``; ``.csv``:
    ``path,rank,neighbor,similarity``. ``sims``/``idx``: ``(N, k)`` from
    :meth:`NeighborIndex.search`. Paths are written as :func:`display_path` shows them
    (a name that is not valid UTF-8 with ``\\xNN`` escapes)."""
    shown = [display_path(p) for p in index.paths]
    if out.suffix.lower() == ".json":
        record = {"checkpoint": display_path(str(checkpoint)), "data": display_path(str(data)),
                  "k": int(idx.shape[1]),
                  "neighbors": [{"path": shown[i], "neighbors": [
                      {"path": shown[j], "similarity": round(float(s), 6)}
                      for j, s in zip(idx[i], sims[i], strict=True)]}
                      for i in range(len(index))]}
        text = json.dumps(record, indent=1)
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "rank", "neighbor", "similarity"])
        for i in range(len(index)):
            for r, (j, s) in enumerate(zip(idx[i], sims[i], strict=True), start=1):
                w.writerow([shown[i], r, shown[j], f"{float(s):.6f}"])
        text = buf.getvalue()
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def image_at(sets: Sequence[ImageSet], offsets: np.ndarray, i: int) -> np.ndarray:
    """Row ``i`` of the index: the uint8 image ``(S, S, 3)`` of the set it falls in
    (``offsets``: the cumulative sizes of ``sets``, starting at 0)."""
    part = int(np.searchsorted(offsets, i, side="right")) - 1
    return np.asarray(sets[part].images[i - offsets[part]])
