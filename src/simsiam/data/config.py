"""``data.*``: the config section of the data sources, owned by this layer (torch-free, so
that the config schema loads without torch; assembled in :mod:`simsiam.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """Where images come from and how many are used.

    ``source`` is an ImageFolder-style directory (class subfolders; with ``train/`` and
    ``test/`` or ``val/`` inside, those are the splits), ``cifar10`` / ``cifar100``
    (torchvision's download, stored under the cache directory), or images with captions:
    a CSV/TSV/JSONL caption table or WebDataset shards (:mod:`simsiam.data.captions`).
    """

    source: str = ""  # a folder, cifar10 / cifar100, a caption table or shards
    image_size: int = 224  # side of each augmented view, pixels
    per_class: int | None = None  # at most this many training images per class
    test_per_class: int | None = None  # at most this many held-out images per class
    holdout_fraction: float = 0.1  # held out for the kNN monitor when there is no test split
    cache_dir: str | None = None  # default: $SIMSIAM_CACHE_DIR or ~/.cache/simsiam
    cache_side: int | None = None  # decoded side for folders of mixed sizes; default 8/7 x size
    num_workers: int = 2  # DataLoader worker processes for augmentation
    strict: bool = False  # undecodable image files: False skips them with a warning, True stops
    resident_max_mb: int = 4096  # batched path: hold the decoded images on the device up to this
    # Pretraining input (simsiam.data.stream): "cache" decodes every image once to a square
    # (whole images when all are one square size, else centre squares of cache_side);
    # "stream" decodes each file every epoch in the workers, crops from the whole image;
    # "dali": as stream, decoded and cut by NVIDIA DALI on the GPU (pip extra [dali]; the
    # stream path runs instead, with a notice, without DALI or a GPU);
    # "auto": cache when every image is one square no larger than cache_side, else stream.
    pipeline: str = "auto"
    jpeg_draft: bool = True  # stream: decode a JPEG at 1/2, 1/4, 1/8 size when every crop allows
    # Streamed WebDataset shards: "offset" reads each sample by its byte offset in the
    # sampler's shuffled order (as a folder); "sequential": each worker of each process
    # reads a contiguous run of samples shard after shard through a shuffle buffer of
    # shuffle_buffer samples (simsiam.data.shard_stream: for shared file systems)
    shard_order: str = "offset"
    shuffle_buffer: int = 1000
    # "auto": class subfolder names are labels (for the kNN monitor and probes only; one
    # class, e.g. a flat folder, is unlabelled); "none": ignore them (label-free signals only)
    labels: str = "auto"
    # Caption tables (CSV/TSV/JSONL, CLIP; simsiam.data.captions): the folder the image
    # column's paths are relative to (default: the table's folder, else its images/), and
    # the two columns (default: the first of image/filepath/file/path/image_path, and of
    # caption/text/title/sentence).
    image_root: str | None = None
    image_column: str | None = None
    caption_column: str | None = None
