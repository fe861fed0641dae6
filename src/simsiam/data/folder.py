"""Image folders: find the images and their class labels.

Layout (torchvision ImageFolder style): ``root/<class>/**/<image>``. Classes are the
sorted names of the immediate subfolders; images may sit in nested folders below their
class folder. Hidden files and folders (``.*``), ``Thumbs.db`` and files whose extension is
not an image extension (case-insensitive) are not indexed. Image extensions
(:data:`IMAGE_EXTENSIONS`) are the photo and image formats the installed Pillow reads
(JPEG as ``.jpg .jpeg .jpe .jfif``, PNG, GIF, BMP, TIFF, WebP, AVIF, PNM, JPEG 2000, HEIC
with ``pillow-heif``); files that look like images but cannot be read here (HEIC without
``pillow-heif``, camera raw such as ``.cr2 .nef .dng``, AVIF with a Pillow built without
it) are left out with one :class:`~simsiam.errors.DataWarning` that counts them, names a
few and says how to convert them. Symlinked folders are
followed, each real folder once (no endless loops); a broken file link is indexed and
then reported as undecodable. Labels are used only for
evaluation (kNN monitor); pretraining never reads them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from simsiam.data.decode import pillow_reads
from simsiam.errors import DataError, DataWarning
from simsiam.fileio import display_path

# endings of photographs and ordinary image files: indexed when Pillow reads them here
PHOTO_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".gif", ".webp", ".tif",
     ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".jp2", ".heic", ".heif"})
# camera raw files: images, but not something Pillow decodes
RAW_EXTENSIONS = frozenset(
    {".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf",
     ".rw2", ".raf", ".pef", ".srw", ".x3f", ".raw", ".rwl", ".3fr", ".iiq"})
IMAGE_EXTENSIONS = frozenset(e for e in PHOTO_EXTENSIONS if pillow_reads(e))
# files that look like images but cannot be read by this installation: reported
UNREADABLE_EXTENSIONS = (PHOTO_EXTENSIONS - IMAGE_EXTENSIONS) | RAW_EXTENSIONS
# what to do about each kind of unreadable file
_FIXES = {".heic": "HEIC/HEIF: or pip install pillow-heif, which simsiam then uses",
          ".heif": "HEIC/HEIF: or pip install pillow-heif, which simsiam then uses",
          ".avif": "AVIF: or pip install -U pillow, 11.3 or later reads AVIF",
          ".webp": "WebP: or install a Pillow built with WebP (pip install -U pillow)",
          ".jp2": "JPEG 2000: or install a Pillow built with OpenJPEG (pip install -U pillow)"}
_RAW_FIX = "camera raw: export them from a raw converter such as darktable or dcraw"


def _kind(name: str) -> str | None:
    """``"image"`` (indexed), ``"unreadable"`` (looks like an image, reported) or None."""
    if name.startswith("."):
        return None
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return "unreadable" if ext in UNREADABLE_EXTENSIONS else None


def _is_image_name(name: str) -> bool:
    return _kind(name) == "image"


def unreadable_words(root: Path, unreadable: list[Path]) -> str:
    """The words for image-like files under ``root`` that cannot be read here: how many,
    of which kinds, a few of them (relative to ``root``) and the fix for each kind."""
    exts = [p.suffix.lower() for p in unreadable]
    kinds = ", ".join(f"{exts.count(e)} {e}" for e in sorted(set(exts)))
    shown = ", ".join(f"'{display_path(p.relative_to(root))}'" for p in unreadable[:3])
    more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    fixes = sorted({_FIXES.get(e, _RAW_FIX) for e in exts})
    return (f"{len(unreadable)} file(s) look like images but cannot be read by the installed "
            f"Pillow and are left out ({kinds}: {shown}{more}); convert them to JPEG or PNG "
            f"({'; '.join(fixes)})")


def _walk_images(folder: Path, unreadable: list[Path]) -> list[Path]:
    """Image files below ``folder``, following symlinked folders but each real folder
    once (a link back up the tree would otherwise repeat images without end); image-like
    files that cannot be read here are appended to ``unreadable``."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            kind = _kind(f)
            if kind is not None:
                (found if kind == "image" else unreadable).append(Path(dirpath) / f)
    return found


def scan_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Index an ImageFolder-style directory.

    Args:
        root: a directory with one subfolder per class. A directory with images but no
            subfolders is read as a single unnamed class (label 0).

    Returns:
        ``(paths, labels, classes)``: paths sorted by class then path, labels an int64
        array ``(N,)`` indexing ``classes``.

    Warns:
        DataWarning: files that look like images but cannot be read by the installed
            Pillow (:data:`UNREADABLE_EXTENSIONS`) were found and left out.

    Raises:
        DataError: ``root`` does not exist, is not a directory, or holds no image files
            (naming the unreadable ones, if any).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder '{root}' does not exist; pass --data with a folder of "
                        "images (flat, or one subfolder per class) or 'cifar10'")
    if not root.is_dir():
        raise DataError(f"data path '{root}' is a file, not a folder of images")
    classes = class_folders(root)
    paths: list[Path] = []
    labels: list[int] = []
    unreadable: list[Path] = []
    if classes:
        for idx, name in enumerate(classes):
            found = _walk_images(root / name, unreadable)
            paths += found
            labels += [idx] * len(found)
        keep = [i for i, c in enumerate(classes) if c in {classes[label] for label in labels}]
        if len(keep) != len(classes):  # drop class folders that hold no images
            remap = {old: new for new, old in enumerate(keep)}
            classes = [classes[i] for i in keep]
            labels = [remap[label] for label in labels]
    else:
        names = sorted(os.listdir(root))
        paths = [root / f for f in names if _is_image_name(f)]
        unreadable = [root / f for f in names if _kind(f) == "unreadable"]
        labels = [0] * len(paths)
        classes = [""]
    if not paths:
        also = f"; {unreadable_words(root, unreadable)}" if unreadable else ""
        raise DataError(f"data folder '{display_path(root)}' holds no image files that can "
                        f"be read here (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} in "
                        f"it and its subfolders){also}")
    if unreadable:
        warnings.warn(DataWarning(f"data folder '{display_path(root)}': "
                                  f"{unreadable_words(root, unreadable)}"), stacklevel=2)
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


def split_roots(root: Path) -> tuple[Path, Path | None]:
    """``(train root, test root or None)``: ``root/train`` with ``root/test`` (or ``val``)
    when ``root`` has a ``train/`` subfolder, else ``(root, None)``."""
    if (root / "train").is_dir():
        for name in ("test", "val"):
            if (root / name).is_dir():
                return root / "train", root / name
        return root / "train", None
    return root, None


def class_folders(root: Path) -> list[str]:
    """The class folder names under ``root`` (non-hidden subfolders, sorted), empty or not."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def labelled_test_files(train_root: Path, test_root: Path,
                         classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The test split's files, labelled by class folder NAME with the training split's
    label numbers (``classes``: the training classes that hold images).

    A class folder with no images in one split is named in a :class:`DataWarning` and
    evaluation goes ahead on the classes that have images in both: held-out images of a
    class with no training image are left out (no kNN or probe can predict it), and a
    training class with no held-out image is simply not measured. Labels never shift.

    Raises:
        DataError: the two splits' class folder names differ (a folder in one is missing
            from the other: named).
    """
    tp, tl, tc = scan_image_folder(test_root)
    train_names, test_names = class_folders(train_root), class_folders(test_root)
    if train_names != test_names:
        only_train = sorted(set(train_names) - set(test_names))
        only_test = sorted(set(test_names) - set(train_names))
        raise DataError(f"class folders of '{test_root}' and '{train_root}' differ: only in "
                        f"{train_root.name}/: {only_train[:5]}, only in {test_root.name}/: "
                        f"{only_test[:5]}; use the same class folder names in both")
    index = {name: i for i, name in enumerate(classes)}
    no_train = [c for c in tc if c not in index]
    no_test = [c for c in classes if c not in set(tc)]
    if no_train:
        dropped = int(sum((tl == tc.index(c)).sum() for c in no_train))
        warnings.warn(DataWarning(
            f"class folder(s) {no_train} of '{train_root}' hold no images: their {dropped} "
            f"held-out images in '{test_root}' are left out of evaluation (no training image "
            "to match them); the other classes are evaluated as usual"), stacklevel=4)
    if no_test:
        warnings.warn(DataWarning(
            f"class folder(s) {no_test} of '{test_root}' hold no images: evaluation goes "
            f"ahead on the other {len(classes) - len(no_test)} classes (training never reads "
            "labels)"), stacklevel=4)
    keep = [i for i, label in enumerate(tl) if tc[label] in index]
    return [tp[i] for i in keep], np.asarray([index[tc[tl[i]]] for i in keep], dtype=np.int64)


def holdout_by_class(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Bool ``(N,)``: a seeded ``round(fraction x n_c)`` of each class's samples held out."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held[rng.choice(idx, size=int(round(len(idx) * fraction)), replace=False)] = True
    return held
