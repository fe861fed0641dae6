"""Data: image folders, torchvision datasets and caption data (tables, WebDataset shards),
decoded once into a uint8 cache or streamed from the files every epoch; the training
loaders and the batches they yield; the ``data.*`` config section (:mod:`.config`,
torch-free).

Public names are imported on first use (PEP 562), so that the config schema can import
:mod:`.config` without torch."""

from __future__ import annotations

from simsiam.lazy import LazyExports

_EXPORTS = {
    "ViewBatch": "batches", "ViewBatches": "batches", "caption_table_in": "captions",
    "is_caption_source": "captions", "load_caption_data": "captions", "CapWarning": "types",
    "DataSplits": "types", "EpochShuffleSampler": "sampling", "ImageSet": "types",
    "TwoViewDataset": "sampling", "load_data": "dataset", "load_splits": "dataset",
    "view_seed": "sampling", "BatchedViewLoader": "device_loader", "first_per_class": "folder",
    "scan_image_folder": "folder", "BATCH_LOADERS": "loaders", "make_batches": "loaders",
    "make_loader": "loaders", "FileImages": "stream", "StreamViewLoader": "stream",
    "StreamViews": "stream", "draw_boxes": "stream", "stream_crops": "stream",
    "DataConfig": "config",
}

__all__ = sorted(_EXPORTS)

_LAZY = LazyExports(__name__, _EXPORTS)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.names
