"""Data: image folders and torchvision datasets, decoded once into a uint8 cache."""

from simsiam.data.dataset import (
    EpochShuffleSampler,
    ImageSet,
    TwoViewDataset,
    load_splits,
    view_seed,
)
from simsiam.data.folder import first_per_class, scan_image_folder

__all__ = ["ImageSet", "TwoViewDataset", "EpochShuffleSampler", "load_splits", "view_seed",
           "first_per_class", "scan_image_folder"]
