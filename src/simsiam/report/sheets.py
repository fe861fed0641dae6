"""Pictures of images: a contact sheet of nearest neighbours, and a 2-D map drawn with
thumbnails of the images themselves (matplotlib, Agg backend; PNG files written
atomically).

- :func:`contact_sheet` (``simsiam neighbors --query``): one row per query image, the
  query first (framed), then its neighbours, each titled with its cosine similarity and
  file name.
- :func:`thumbnail_map` (``simsiam report``): small thumbnails at their positions in a
  2-D embedding (t-SNE, PCA, ...), so what lies close together can be seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402
from PIL import Image  # noqa: E402

from simsiam.fileio import atomic_write, display_path  # noqa: E402

__all__ = ["contact_sheet", "thumbnail_map"]

_DPI = 100


def _short(name: str, width: int = 26) -> str:
    """``name`` as :func:`display_path` shows it, cut in the middle to at most ``width``
    characters."""
    name = display_path(name)
    if len(name) <= width:
        return name
    half = (width - 1) // 2
    return f"{name[:half]}\u2026{name[-(width - 1 - half):]}"


def _save_png(fig, path: Path, dpi: int) -> None:
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def _check_images(images: np.ndarray, what: str) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{what} must be (N, S, S, 3) uint8, got {images.shape} "
                         f"{images.dtype}")


def contact_sheet(query_images: np.ndarray, query_names: Sequence[str],
                  neighbor_images: np.ndarray, neighbor_names: Sequence[Sequence[str]],
                  similarities: np.ndarray, path: str | Path, title: str | None = None,
                  cell_inches: float = 1.6) -> Path:
    """Write a PNG grid: row i is query i (framed in red) and then its k neighbours.

    Args:
        query_images: ``(M, S, S, 3)`` uint8.
        query_names: M titles of the queries (file names).
        neighbor_images: ``(M, k, S2, S2, 3)`` uint8, most similar first.
        neighbor_names: M lists of k file names.
        similarities: ``(M, k)`` cosine similarities, shown with 3 decimals.
        path: the PNG file (parent folders are created; written atomically).
        title: a line above the grid (None: none).
        cell_inches: width and height of one image cell, in inches (100 dpi).

    Returns:
        ``path`` as a Path. The image is ``(k + 1) x cell_inches x 100`` pixels wide and
        about ``M x (cell_inches + 0.35) x 100`` high.

    Raises:
        ValueError: shapes that do not agree (M, k), or images that are not uint8 RGB.
    """
    query_images = np.asarray(query_images)
    neighbor_images = np.asarray(neighbor_images)
    similarities = np.asarray(similarities, dtype=np.float64)
    _check_images(query_images, "query_images")
    m = len(query_images)
    if m == 0:
        raise ValueError("contact_sheet needs at least one query")
    if neighbor_images.ndim != 5 or neighbor_images.shape[:1] != (m,):
        raise ValueError(f"neighbor_images must be (M={m}, k, S, S, 3), got "
                         f"{neighbor_images.shape}")
    k = neighbor_images.shape[1]
    _check_images(neighbor_images.reshape(-1, *neighbor_images.shape[2:]), "neighbor_images")
    if similarities.shape != (m, k) or len(query_names) != m or len(neighbor_names) != m \
            or any(len(row) != k for row in neighbor_names):
        raise ValueError(f"similarities {similarities.shape}, {len(query_names)} query names "
                         f"and neighbour names must all be for M={m} queries x k={k}")
    head = 0.4 if title else 0.0
    fig, axes = plt.subplots(m, k + 1, squeeze=False,
                             figsize=((k + 1) * cell_inches, m * (cell_inches + 0.35) + head))
    for i in range(m):
        cells = [(query_images[i], f"query\n{_short(query_names[i])}", True)]
        cells += [(neighbor_images[i, j],
                   f"{similarities[i, j]:.3f}\n{_short(neighbor_names[i][j])}", False)
                  for j in range(k)]
        for ax, (img, label, is_query) in zip(axes[i], cells, strict=True):
            ax.imshow(img, interpolation="lanczos")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7, pad=2)
            for spine in ax.spines.values():
                spine.set_visible(is_query)
                spine.set_color("red")
                spine.set_linewidth(2.0)
    if title:
        fig.suptitle(display_path(title), fontsize=9)
    fig.tight_layout(pad=0.3)
    path = Path(path)
    _save_png(fig, path, _DPI)
    return path


def thumbnail_map(xy: np.ndarray, images: np.ndarray, path: str | Path, title: str = "",
                  max_thumbs: int = 150, thumb_px: int = 24, seed: int = 0,
                  figsize: tuple[float, float] = (8.0, 7.0), dpi: int = 110) -> Path:
    """Write a PNG map: every point of ``xy`` as a grey dot, and a seeded subset of at
    most ``max_thumbs`` of them drawn as thumbnails of their images at their positions.

    Args:
        xy: ``(N, 2)`` float positions (any units, e.g. a t-SNE map).
        images: ``(N, S, S, 3)`` uint8 RGB, row i drawn at ``xy[i]`` (a memory map is
            fine: only the drawn rows are read).
        path: the PNG file (parent folders are created; written atomically).
        title: the axes title.
        max_thumbs: at most this many thumbnails; when N is larger a subset drawn with
            ``numpy.random.default_rng(seed)`` (the same subset for the same N and seed).
        thumb_px: side of each thumbnail in pixels of the saved PNG.
        seed: seed of the subset.
        figsize, dpi: figure size in inches and resolution in dots per inch.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``xy`` is not ``(N, 2)``, ``images`` not ``(N, S, S, 3)`` uint8 with
            the same N, or ``max_thumbs`` / ``thumb_px`` below 1.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be (N, 2), got {xy.shape}")
    _check_images(images, "images")
    if len(images) != len(xy):
        raise ValueError(f"{len(xy)} positions but {len(images)} images")
    if max_thumbs < 1 or thumb_px < 1:
        raise ValueError(f"max_thumbs ({max_thumbs}) and thumb_px ({thumb_px}) must be >= 1")
    n = len(xy)
    if n > max_thumbs:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_thumbs, replace=False))
    else:
        idx = np.arange(n)
    fig, ax = plt.subplots(figsize=figsize)
    ax.scatter(xy[:, 0], xy[:, 1], s=3, color="0.6", zorder=1)
    # OffsetImage sizes an image in points (1/72 in): zoom 72/dpi draws 1 pixel as 1 pixel.
    for i in idx:
        thumb = Image.fromarray(np.asarray(images[i])).resize((thumb_px, thumb_px),
                                                              Image.BILINEAR)
        box = AnnotationBbox(OffsetImage(np.asarray(thumb), zoom=72.0 / dpi), tuple(xy[i]),
                             frameon=True, pad=0.05, bboxprops={"lw": 0.4, "ec": "0.3"})
        box.set_zorder(2)
        ax.add_artist(box)
    if n:
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        ax.set_xlim(lo[0] - 0.05 * span[0], hi[0] + 0.05 * span[0])
        ax.set_ylim(lo[1] - 0.05 * span[1], hi[1] + 0.05 * span[1])
    ax.set(xticks=[], yticks=[])
    ax.set_title(display_path(title) or f"{len(idx)} of {n} images at their 2-D positions",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    _save_png(fig, path, dpi)
    return path
