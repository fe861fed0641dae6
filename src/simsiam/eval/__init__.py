"""Evaluation: the monitor (kNN, label-free signals), collapse measures, probes, embeddings
and similarity search.

Public names (imported on first use, so that importing a leaf such as
``simsiam.eval.collapse`` stays cheap and free of import cycles):

- :func:`alignment`, :func:`uniformity`, :func:`copy_retrieval` (:mod:`.labelfree`);
- :class:`NeighborIndex`, :func:`build_index`, :func:`query_features`,
  :func:`faiss_available` (:mod:`.neighbors`): similarity search;
- :func:`extract_features`, :func:`knn_top1` (:mod:`.knn`).
"""

from __future__ import annotations

from simsiam.lazy import LazyExports

_EXPORTS = {
    "alignment": "labelfree", "uniformity": "labelfree", "copy_retrieval": "labelfree",
    "NeighborIndex": "neighbors", "build_index": "neighbors", "query_features": "neighbors",
    "faiss_available": "neighbors", "extract_features": "knn", "knn_top1": "knn",
}

__all__ = sorted(_EXPORTS)

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names
