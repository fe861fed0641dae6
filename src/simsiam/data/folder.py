"""Image folders: find the images and their class labels.

Layout (torchvision ImageFolder style): ``root/<class>/**/<image>``. Classes are the
sorted names of the immediate subfolders; images may sit in nested folders below their
class folder. Hidden files and folders (``.*``), ``Thumbs.db`` and files whose extension is
not an image extension (case-insensitive) are not indexed. Symlinked folders are
followed, each real folder once (no endless loops); a broken file link is indexed and
then reported as undecodable. Labels are used only for
evaluation (kNN monitor); pretraining never reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from simsiam.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: Path) -> list[Path]:
    """Image files below ``folder``, following symlinked folders but each real folder
    once (a link back up the tree would otherwise repeat images without end)."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if _is_image_name(f)]
    return found


def scan_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Index an ImageFolder-style directory.

    Args:
        root: a directory with one subfolder per class. A directory with images but no
            subfolders is read as a single unnamed class (label 0).

    Returns:
        ``(paths, labels, classes)``: paths sorted by class then path, labels an int64
        array ``(N,)`` indexing ``classes``.

    Raises:
        DataError: ``root`` does not exist, is not a directory, or holds no image files.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder '{root}' does not exist; pass --data with a folder of "
                        "images (flat, or one subfolder per class) or 'cifar10'")
    if not root.is_dir():
        raise DataError(f"data path '{root}' is a file, not a folder of images")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    if classes:
        for idx, name in enumerate(classes):
            found = _walk_images(root / name)
            paths += found
            labels += [idx] * len(found)
        keep = [i for i, c in enumerate(classes) if c in {classes[label] for label in labels}]
        if len(keep) != len(classes):  # drop class folders that hold no images
            remap = {old: new for new, old in enumerate(keep)}
            classes = [classes[i] for i in keep]
            labels = [remap[label] for label in labels]
    else:
        paths = [root / f for f in sorted(os.listdir(root)) if _is_image_name(f)]
        labels = [0] * len(paths)
        classes = [""]
    if not paths:
        raise DataError(f"data folder '{root}' holds no image files (looked for "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))} in it and its subfolders)")
    return paths, np.asarray(labels, dtype=np.int64), classes


def first_per_class(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` samples of each class, in their original order.

    Args:
        labels: int array ``(N,)``.
        limit: at most this many per class; None keeps everything.

    Returns:
        int64 indices, ascending.
    """
    if limit is None:
        return np.arange(len(labels), dtype=np.int64)
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:limit]] = True
    return np.flatnonzero(keep).astype(np.int64)
