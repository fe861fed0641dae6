"""Similarity search over a folder of images: the index behind ``simsiam neighbors``.

The index holds the l2-normalised pool5 features of every image of a folder, so the
cosine similarity of two images is the dot product of their rows. A search is exact:
a brute-force matrix product on the device, in blocks of the bank and of the queries
(memory stays bounded whatever the folder's size), or, when ``faiss`` is installed and
the folder holds more than ``brute_force_max`` images, faiss's exact ``IndexFlatIP``
(the same neighbours; faiss is optional and not a dependency of this package).

Built indexes are kept as ``.npz`` files under ``default_cache_dir()/neighbors/``, named
by a hash of the checkpoint file (resolved path, size, modification time), of the
folder's images (path, size, modification time of each and the decoded side, as the
decoded-image cache keys them), of the input side and of the normalisation: a second
search with the same checkpoint and folder loads the features instead of running the
backbone, and a changed image or checkpoint builds a new index.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simsiam.choices import BRUTE_FORCE_MAX
from simsiam.data.cache import cache_key, default_cache_dir, read_rgb
from simsiam.errors import DataError
from simsiam.eval.knn import extract_features
from simsiam.fileio import atomic_write

__all__ = ["BRUTE_FORCE_MAX", "INDEX_VERSION", "NeighborIndex", "build_index",
           "faiss_available", "index_cache_path", "query_features"]

INDEX_VERSION = 1
# Above this many images a search uses faiss's exact IndexFlatIP when faiss imports.
# Brute force: bank rows x query rows per similarity block (float32: 128 MiB at most).
_BANK_BLOCK = 65_536
_QUERY_BLOCK = 512
# Images per feature-extraction call while building (features move to the CPU after each).
_EXTRACT_BLOCK = 2048


def faiss_available() -> bool:
    """Whether ``import faiss`` works (faiss-cpu or faiss-gpu; optional)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class NeighborIndex:
    """Cosine-similarity search over a fixed set of l2-normalised feature rows.

    Args:
        features: ``(N, c)`` float32, one unit-norm row per image (cast to float32 and
            made C-contiguous; a numpy array or a CPU/GPU tensor).
        paths: the image of each row, ``len(paths) == N``.

    Attributes:
        features: ``(N, c)`` float32 numpy array.
        paths: list of N strings.
        cache_path: the ``.npz`` file the index was loaded from or saved to (None: none).
        reused: True when :func:`build_index` loaded it from ``cache_path``.

    Raises:
        ValueError: ``features`` is not 2-D, or its row count differs from ``len(paths)``.
    """

    def __init__(self, features: np.ndarray | torch.Tensor, paths: Sequence[str]) -> None:
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"features must be (N, c), got shape {features.shape}")
        if len(paths) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(paths)} paths")
        self.features = features
        self.paths = [str(p) for p in paths]
        self.cache_path: Path | None = None
        self.reused = False
        self._on_device: dict[str, torch.Tensor] = {}
        self._faiss = None  # the faiss IndexFlatIP, built on first use

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        """Feature width c."""
        return self.features.shape[1]

    def uses_faiss(self, brute_force_max: int = BRUTE_FORCE_MAX) -> bool:
        """Whether :meth:`search` with this ``brute_force_max`` goes through faiss: more
        than ``brute_force_max`` rows and ``import faiss`` works."""
        return len(self) > brute_force_max and faiss_available()

    def search(self, queries: np.ndarray | torch.Tensor, k: int,
               exclude: Sequence[int | None] | None = None,
               device: torch.device | str = "cpu", brute_force_max: int = BRUTE_FORCE_MAX,
               bank_block: int = _BANK_BLOCK, query_block: int = _QUERY_BLOCK
               ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows most cosine-similar to each query, most similar first (exact).

        Args:
            queries: ``(M, c)`` float, unit-norm rows (the same feature space).
            k: neighbours per query, >= 1. When fewer candidates exist (``N``, or ``N - 1``
                when ``exclude`` names a row for any query) it is reduced to that number.
            exclude: per query a row index never returned for it (the query itself when
                it is one of the indexed images), or None; ``len(exclude) == M``.
            device: where the brute-force products run (ignored by the faiss path, CPU).
            brute_force_max: up to this many rows brute force; above it faiss when it
                imports (see :meth:`uses_faiss`), else still brute force.
            bank_block, query_block: brute-force block sizes (rows of the index, rows of
                the queries) bounding the similarity block to ``bank_block x query_block``
                float32 values.

        Returns:
            ``(sims, idx)``: ``(M, k')`` float32 cosine similarities in [-1, 1] (descending
            per row) and ``(M, k')`` int64 row indices into :attr:`paths`, with ``k'`` the
            reduced ``k``.

        Raises:
            ValueError: ``k < 1``; no candidate left; ``queries`` not ``(M, c)``;
                ``exclude`` of the wrong length or naming a row outside ``0..N-1``.
        """
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().float().cpu().numpy()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (M, {self.dim}), got shape {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        m, n = len(queries), len(self)
        excl = np.full(m, -1, dtype=np.int64)
        if exclude is not None:
            if len(exclude) != m:
                raise ValueError(f"exclude has {len(exclude)} entries for {m} queries")
            for i, e in enumerate(exclude):
                if e is not None:
                    if not 0 <= int(e) < n:
                        raise ValueError(f"exclude[{i}] = {e} is outside 0..{n - 1}")
                    excl[i] = int(e)
        k = min(k, n - int((excl >= 0).any()))
        if k < 1:
            raise ValueError(f"no candidates: the index holds {n} image(s) and each query "
                             "excludes itself")
        if m == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if self.uses_faiss(brute_force_max):
            return self._search_faiss(queries, k, excl)
        return self._search_brute(queries, k, excl, torch.device(device), bank_block,
                                  query_block)

    def _bank(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._on_device:
            bank = torch.from_numpy(self.features)  # shares memory on the CPU
            self._on_device[key] = bank if device.type == "cpu" else bank.to(device)
        return self._on_device[key]

    @torch.no_grad()
    def _search_brute(self, queries: np.ndarray, k: int, excl: np.ndarray,
                      device: torch.device, bank_block: int, query_block: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        bank = self._bank(device)
        n = len(bank)
        out_s = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        for q0 in range(0, len(queries), query_block):
            q = torch.from_numpy(queries[q0:q0 + query_block]).to(device)
            ex = torch.from_numpy(excl[q0:q0 + query_block]).to(device)
            rows = torch.arange(len(q), device=device)
            best_s = torch.full((len(q), 0), -torch.inf, device=device)
            best_i = torch.zeros((len(q), 0), dtype=torch.int64, device=device)
            for b0 in range(0, n, bank_block):
                sims = q @ bank[b0:b0 + bank_block].T  # (m, b) cosine similarities
                local = ex - b0
                hit = (local >= 0) & (local < sims.shape[1])
                sims[rows[hit], local[hit]] = -torch.inf
                s, i = sims.topk(min(k, sims.shape[1]), dim=1)
                best_s, order = torch.cat([best_s, s], 1).topk(
                    min(k, best_s.shape[1] + s.shape[1]), dim=1)
                best_i = torch.cat([best_i, i + b0], 1).gather(1, order)
            out_s[q0:q0 + len(q)] = best_s.cpu().numpy()
            out_i[q0:q0 + len(q)] = best_i.cpu().numpy()
        return out_s, out_i

    def _search_faiss(self, queries: np.ndarray, k: int, excl: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        index = self._faiss
        if index is None:
            index = faiss.IndexFlatIP(self.dim)
            index.add(self.features)
            self._faiss = index
        extra = int((excl >= 0).any())
        sims, idx = index.search(queries, k + extra)
        if not extra:
            return sims.astype(np.float32), idx.astype(np.int64)
        out_s = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        for r in range(len(queries)):
            keep = idx[r] != excl[r]
            out_s[r], out_i[r] = sims[r][keep][:k], idx[r][keep][:k]
        return out_s, out_i

    def save(self, path: str | Path, meta: dict[str, str] | None = None) -> None:
        """Write ``features``, ``paths`` and ``meta`` (strings) to ``path`` (.npz),
        atomically (a crash leaves the old file or none)."""
        meta = dict(meta or {})

        def write(tmp: Path) -> None:
            buf = io.BytesIO()  # np.savez on a name would append ".npz" to the temp name
            np.savez(buf, features=self.features, paths=np.asarray(self.paths, dtype=str),
                     version=np.asarray(INDEX_VERSION),
                     meta_keys=np.asarray(list(meta), dtype=str),
                     meta_values=np.asarray(list(meta.values()), dtype=str))
            tmp.write_bytes(buf.getvalue())

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path, paths: Sequence[str] | None = None) -> NeighborIndex | None:
        """The index saved at ``path``, or None when the file is missing, unreadable, of
        another version, or (given ``paths``) indexes other images than ``paths``."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) != INDEX_VERSION:
                    return None
                stored = [str(p) for p in z["paths"]]
                features = z["features"]
        except (OSError, ValueError, KeyError):
            return None
        if (features.ndim != 2 or len(features) != len(stored)
                or (paths is not None and list(map(str, paths)) != stored)):
            return None
        index = cls(features, stored)
        index.cache_path = Path(path)
        return index


def index_cache_path(checkpoint: str | Path, sets: Sequence[tuple[Sequence[str], int]],
                     image_size: int, normalize: str, cache_dir: str | Path | None = None
                     ) -> Path:
    """Where the index of these images under this checkpoint is kept.

    Args:
        checkpoint: the weights file (its resolved path, size and mtime_ns are hashed).
        sets: ``(paths, side)`` of each decoded part of the folder (train, then test), as
            :func:`simsiam.data.cache.cache_key` keys the decoded images.
        image_size: input side in pixels fed to the backbone.
        normalize: the input normalisation (auto|cifar10|imagenet).
        cache_dir: default :func:`~simsiam.data.cache.default_cache_dir`.

    Returns:
        ``CACHE/neighbors/<sha256>.npz`` (not created here).
    """
    ckpt = Path(checkpoint).resolve()
    st = ckpt.stat()
    h = hashlib.sha256(os.fsencode(f"neighbors v{INDEX_VERSION}\n{ckpt}\t{st.st_size}\t"
                                   f"{st.st_mtime_ns}\nimage_size={image_size} "
                                   f"normalize={normalize}\n"))
    for paths, side in sets:
        h.update(f"{len(paths)} {cache_key([Path(p) for p in paths], side)}\n".encode())
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "neighbors" / f"{h.hexdigest()}.npz"


def build_index(backbone: nn.Module, images: np.ndarray | Sequence[np.ndarray],
                paths: Sequence[str], image_size: int, normalize: str,
                device: torch.device | str = "cpu", cache: str | Path | None = None,
                batch_size: int = 256, progress: bool = False) -> NeighborIndex:
    """The index of ``images``: loaded from ``cache`` when that file indexes exactly
    ``paths``, else extracted (l2-normalised pool5 features) and saved to ``cache``.

    Args:
        backbone: images -> ``(B, c)`` features (run in eval mode, see
            :func:`~simsiam.eval.knn.extract_features`).
        images: ``(N, S, S, 3)`` uint8 (a memory map is fine), or a sequence of such
            arrays (e.g. a folder's train and test parts), indexed in order without being
            concatenated in memory.
        paths: the N images' paths, in the same order.
        image_size, normalize: the backbone's input side (pixels) and normalisation.
        device: where the backbone runs; the index itself lives on the CPU.
        cache: the ``.npz`` file to reuse or write (see :func:`index_cache_path`); None
            neither reads nor writes.
        batch_size: images per forward pass.
        progress: a progress bar over the images while extracting.

    Returns:
        A :class:`NeighborIndex` with ``(N, c)`` float32 unit-norm features; its
        ``reused`` says whether it came from ``cache``, ``cache_path`` where it is kept.

    Raises:
        ValueError: the image count differs from ``len(paths)``.
    """
    parts = [images] if isinstance(images, np.ndarray) else list(images)
    total = sum(len(p) for p in parts)
    if total != len(paths):
        raise ValueError(f"{total} images but {len(paths)} paths")
    if cache is not None:
        hit = NeighborIndex.load(cache, paths)
        if hit is not None:
            hit.reused = True
            return hit
    from tqdm import tqdm

    feats = []
    with tqdm(total=total, desc="index", unit="img", disable=not progress,
              mininterval=1.0) as bar:
        for part in parts:
            for a in range(0, len(part), _EXTRACT_BLOCK):
                block = part[a:a + _EXTRACT_BLOCK]
                feats.append(extract_features(backbone, block, image_size, normalize, device,
                                              batch_size).cpu().numpy())
                bar.update(len(block))
    index = NeighborIndex(np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
                          paths)
    if cache is not None:
        index.save(cache, {"image_size": str(image_size), "normalize": normalize})
        index.cache_path = Path(cache)
    return index


def query_features(backbone: nn.Module, files: Sequence[str | Path], side: int,
                   image_size: int, normalize: str, device: torch.device | str = "cpu",
                   batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features of query image files, decoded exactly as the folder's images are.

    Args:
        files: M image files (any readable image; see
            :func:`~simsiam.data.cache.read_rgb`).
        side: the side the folder's images are stored at (its decoded array's
            ``shape[1]``): a query file that is one of them then gives the same feature.
        image_size, normalize, device, batch_size: as for :func:`build_index`.

    Returns:
        ``(features, images)``: ``(M, c)`` float32 unit-norm rows and the decoded
        ``(M, side, side, 3)`` uint8 images.

    Raises:
        DataError: a file is missing or cannot be decoded (names it).
    """
    decoded = []
    for f in files:
        if not Path(f).is_file():
            raise DataError(f"query image '{f}' does not exist (or is not a file); pass "
                            "existing image files to --query")
        decoded.append(read_rgb(f, side))
    images = (np.stack(decoded) if decoded
              else np.zeros((0, side, side, 3), dtype=np.uint8))
    if not len(images):
        return np.zeros((0, 0), np.float32), images
    feats = extract_features(backbone, images, image_size, normalize, device, batch_size)
    return feats.cpu().numpy().astype(np.float32), images
