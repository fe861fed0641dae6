"""Seconds per batch of queries of ``simsiam neighbors``' exact search, on synthetic
features (no model, no images): random unit vectors, N of them at d = 512.

  python benchmarks/neighbors_search.py                       # N = 10k and 100k, CPU
  python benchmarks/neighbors_search.py --sizes 1000000       # 1M rows (2 GiB of features)

Each size times ``NeighborIndex.search`` for a batch of ``--queries`` queries, each
excluding itself (as ``--query-all`` does), after one untimed warm-up; prints the median
of ``--repeats`` runs. Brute force always; faiss's IndexFlatIP too when faiss imports.
Not run by the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from simsiam.eval import NeighborIndex, faiss_available

__all__ = ["random_unit_features", "time_search"]


def random_unit_features(n: int, dim: int, seed: int = 0, block: int = 100_000) -> np.ndarray:
    """``(n, dim)`` float32 rows of unit l2 norm, drawn in blocks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, block):
        x = rng.standard_normal((min(block, n - a), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[a:a + len(x)] = x
    return out


def time_search(index: NeighborIndex, queries: np.ndarray, k: int, exclude: list[int],
                device: str, brute_force_max: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` searches of the whole query batch (after a warm-up)."""
    index.search(queries, k, exclude, device, brute_force_max)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        index.search(queries, k, exclude, device, brute_force_max)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                        help="index sizes N (default 10000 100000)")
    parser.add_argument("--dim", type=int, default=512, help="feature width (ResNet-18: 512)")
    parser.add_argument("--queries", type=int, default=100, help="queries per batch")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median printed)")
    parser.add_argument("--device", default="cpu", help="brute-force device (cpu, cuda)")
    parser.add_argument("--no-faiss", action="store_true", help="brute force only")
    args = parser.parse_args()
    backends = [("brute-force", 10**12)]
    if faiss_available() and not args.no_faiss:
        backends.append(("faiss IndexFlatIP", 0))
    print(f"neighbors_search: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}, faiss {'yes' if faiss_available() else 'not installed'}")
    for n in args.sizes:
        t0 = time.perf_counter()
        feats = random_unit_features(n, args.dim)
        index = NeighborIndex(feats, [str(i) for i in range(n)])
        made = time.perf_counter() - t0
        m = min(args.queries, n)
        queries, exclude = feats[:m], list(range(m))  # each query excludes itself
        for name, brute_force_max in backends:
            if name.startswith("faiss"):
                index.search(queries[:1], args.k, exclude[:1], "cpu", 0)  # builds faiss index
            times = time_search(index, queries, args.k, exclude, args.device, brute_force_max,
                                args.repeats)
            med = statistics.median(times)
            print(f"neighbors_search: N={n} d={args.dim} queries={m} k={args.k} {name}: "
                  f"{med:.4f} s per batch of {m} queries (median of {args.repeats}, min "
                  f"{min(times):.4f}; {1000 * med / m:.3f} ms/query; features made in "
                  f"{made:.1f} s)", flush=True)
        del index, feats


if __name__ == "__main__":
    main()
