"""Data: image folders, torchvision datasets and caption data (tables, WebDataset shards),
decoded once into a uint8 cache or streamed from the files every epoch; the training
loaders and the batches they yield."""

from simsiam.data.batches import ViewBatch, ViewBatches
from simsiam.data.captions import caption_table_in, is_caption_source, load_caption_data
from simsiam.data.dataset import (
    CapWarning,
    DataSplits,
    EpochShuffleSampler,
    ImageSet,
    TwoViewDataset,
    load_data,
    load_splits,
    view_seed,
)
from simsiam.data.device_loader import BatchedViewLoader
from simsiam.data.folder import first_per_class, scan_image_folder
from simsiam.data.loaders import BATCH_LOADERS, make_batches, make_loader
from simsiam.data.stream import (
    FileImages,
    StreamViewLoader,
    StreamViews,
    draw_boxes,
    stream_crops,
)

__all__ = ["BatchedViewLoader", "BATCH_LOADERS", "CapWarning", "DataSplits",
           "EpochShuffleSampler", "ImageSet", "caption_table_in", "is_caption_source",
           "load_caption_data", "load_data",
           "TwoViewDataset", "ViewBatch", "ViewBatches", "first_per_class", "load_splits",
           "make_batches", "make_loader", "scan_image_folder", "view_seed",
           "FileImages", "StreamViewLoader", "StreamViews", "draw_boxes", "stream_crops"]
