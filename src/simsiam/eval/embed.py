"""Embedding export: backbone (pool5) features of every image with paths and labels.

Formats, chosen by the output file's extension:

- ``.npz`` (numpy): ``features`` float32 ``(N, C)``, ``labels`` int64 ``(N,)``, ``paths``,
  ``splits`` and ``classes`` (strings); ``np.load(f)["features"]``.
- ``.csv`` (pandas, spreadsheets): one row per image, columns ``path, split, label,
  class, f0 .. f{C-1}``; ``pd.read_csv(f)``.

Features are the raw pool5 outputs of the backbone in eval mode (not l2-normalised).
Paths and class names are written as :func:`~simsiam.fileio.display_path` shows them: a
file name that is not valid UTF-8 (Latin-1 ``caf\\xe9.jpg``) appears with ``\\xNN``
escapes, the same in both formats.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simsiam.data.types import ImageSet
from simsiam.distributed import rank
from simsiam.errors import ConfigError
from simsiam.eval.knn import extract_features
from simsiam.fileio import atomic_write, display_path

FORMATS = (".npz", ".csv")


def export_embeddings(backbone: nn.Module, sets: dict[str, ImageSet], out: str | Path,
                      image_size: int, normalize: str, device: torch.device | str = "cpu",
                      batch_size: int = 512) -> tuple[int, int]:
    """Write the features of every image in ``sets`` (split name -> images) to ``out``.

    Returns:
        ``(rows, feature width)`` written.

    Raises:
        ConfigError: ``out`` has an extension other than .npz or .csv.
    """
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out '{out}': use a file ending in {' or '.join(FORMATS)}")
    feats, labels, paths, splits = [], [], [], []
    classes = [display_path(c) for c in next(iter(sets.values())).classes]
    for split, images in sets.items():
        feats.append(extract_features(backbone, images.images, image_size, normalize, device,
                                      batch_size, l2_normalize=False).cpu())
        labels.append(images.labels)
        paths += [display_path(p) for p in images.paths]
        splits += [split] * len(images)
    x = torch.cat(feats).numpy().astype(np.float32)
    y = np.concatenate(labels).astype(np.int64)
    if out.suffix == ".npz":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, features=x, labels=y, paths=np.array(paths), splits=np.array(splits),
                         classes=np.array(classes))
    else:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["path", "split", "label", "class"] +
                           [f"f{i}" for i in range(x.shape[1])])
                for i in range(len(y)):
                    w.writerow([paths[i], splits[i], int(y[i]), classes[y[i]]] +
                               [f"{v:.7g}" for v in x[i]])
    if rank() == 0:  # under torchrun every process extracted its shard; rank 0 writes
        atomic_write(out, write)
    return len(y), x.shape[1]
