"""Training loaders: the batched device path (from decoded images, or crops streamed from
the files: ``data.pipeline``) or the per-image DataLoader path.

``augment.backend`` picks one (SIMSIAM.md section 3 recipe either way); all yield
``(x1, x2, ..., index)`` batches from an :class:`EpochShuffleSampler`, so runs are
reproducible and resumable mid-epoch. :func:`make_batches` gives the trainer the batches
of a method's kind of batch (:mod:`simsiam.data.batches`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from simsiam.augment.batched import BatchedViewAugment, SingleView
from simsiam.augment.multicrop import BatchedMultiCrop
from simsiam.augment.views import ViewAugment
from simsiam.data.batches import CaptionBatches, ViewBatches
from simsiam.data.device_loader import BatchedViewLoader
from simsiam.data.sampling import EpochShuffleSampler, TwoViewDataset
from simsiam.data.stream import FileImages, StreamViewLoader, worker_init
from simsiam.data.types import ImageSet
from simsiam.errors import ConfigError, DataError, DataWarning

if TYPE_CHECKING:  # the run's config: the sections the loaders read (data, augment, train)
    from simsiam.config.schema import Config


def make_loader(train: ImageSet, cfg: Config, device: torch.device, rank: int = 0,
                world_size: int = 1) -> DataLoader | BatchedViewLoader:
    """Batches ``(x1, x2, ..., index)`` of views, shuffled per epoch from the seed.

    ``augment.backend``: ``batched`` makes each batch's views on ``device`` from images
    held there (:class:`BatchedViewLoader`); ``per_image`` uses a DataLoader with
    ``data.num_workers`` worker processes and torchvision's per-image kernels.
    Call ``loader.sampler.set_epoch(epoch, start)`` before each epoch. drop_last: every
    step sees a full batch, so BN statistics and the lr scaling hold.

    With ``world_size`` > 1 each batch is process ``rank``'s slice of the global batch
    ``train.batch_size`` (see :class:`EpochShuffleSampler`), ``batch_size / world_size``
    images.
    """
    per_device = cfg.train.batch_size // world_size
    if cfg.augment.backend == "batched" or isinstance(train.images, FileImages):
        a, size = cfg.augment, cfg.data.image_size
        augment = (BatchedMultiCrop(a, size, compile=a.compile) if a.small_crops
                   else BatchedViewAugment(a, size, compile=a.compile))
        return device_views(train, augment, cfg, device, rank, world_size)
    dataset = TwoViewDataset(train.images, ViewAugment(cfg.augment, cfg.data.image_size),
                             cfg.train.seed)
    workers = cfg.data.num_workers
    sampler = EpochShuffleSampler(len(train), cfg.train.seed, cfg.train.batch_size, rank,
                                  world_size)
    return DataLoader(dataset, batch_size=per_device, sampler=sampler, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=device.type == "cuda",
                      worker_init_fn=worker_init if workers else None)


def input_pipeline(cfg: Config, device: torch.device) -> str:
    """The ``data.pipeline`` a run on ``device`` uses: ``cache`` for the per-image backend;
    ``dali`` only with DALI installed and a GPU, else ``stream`` with a notice naming why."""
    from simsiam.data.dali import dali_or_why

    if cfg.augment.backend != "batched":
        return "cache"
    if cfg.data.pipeline == "dali":
        why = dali_or_why(device)
        if why is not None:
            warnings.warn(DataWarning(f"data.pipeline dali: {why}; the stream path (the same "
                                      "crops, decoded by PIL in the workers) runs instead"),
                          stacklevel=2)
            return "stream"
    return cfg.data.pipeline


def device_views(train: ImageSet, augment, cfg: Config, device: torch.device, rank: int = 0,
                 world_size: int = 1):
    """The loader whose views ``augment`` finishes on ``device``, by where the images are:
    decoded in memory or in the cache (:class:`BatchedViewLoader`: crops cut on the device),
    files to stream (``data.pipeline`` stream: :class:`~simsiam.data.stream.StreamViewLoader`,
    crops cut in the workers; dali with DALI and a GPU, image files:
    :class:`~simsiam.data.dali.DaliViewLoader`). All yield ``(x1, ..., index)`` and have
    ``.sampler``."""
    per_device = cfg.train.batch_size // world_size
    if not isinstance(train.images, FileImages):
        return BatchedViewLoader(train.images, augment, per_device, cfg.train.seed, device,
                                 resident_max_bytes=cfg.data.resident_max_mb << 20,
                                 rank=rank, world_size=world_size)
    from simsiam.data.dali import dali_or_why

    files = all(isinstance(s, (str, Path)) for s in train.images.sources)
    dali = cfg.data.pipeline == "dali" and dali_or_why(device) is None
    if dali and not files:
        warnings.warn(DataWarning("data.pipeline dali reads image files: WebDataset shards "
                                  "are streamed by the stream path (the same crops)"),
                      stacklevel=2)
    elif dali:
        from simsiam.data.dali import DaliViewLoader

        return DaliViewLoader(train.images.sources, train.images.names, augment, per_device,
                              cfg.train.seed, device, max(1, cfg.data.num_workers), rank,
                              world_size, strict=cfg.data.strict)
    if cfg.data.shard_order == "sequential" and not files:
        from simsiam.data.shard_stream import ShardStreamLoader, shard_runs_of

        return ShardStreamLoader(shard_runs_of(train.images.sources), train.images.names,
                                 augment, per_device, cfg.train.seed, device,
                                 cfg.data.num_workers, cfg.data.strict, cfg.data.jpeg_draft,
                                 rank, world_size, cfg.data.shuffle_buffer)
    return StreamViewLoader(train.images.sources, train.images.names, augment, per_device,
                            cfg.train.seed, device, num_workers=cfg.data.num_workers,
                            strict=cfg.data.strict, draft=cfg.data.jpeg_draft, rank=rank,
                            world_size=world_size)


def view_batches(train: ImageSet, cfg: Config, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> ViewBatches:
    """Batches of kind ``views``: :func:`make_loader`'s batches as ``ViewBatch`` objects
    (no batch options)."""
    return ViewBatches(make_loader(train, cfg, device, rank, world_size))


def caption_batches(train: ImageSet, cfg: Config, device: torch.device, rank: int = 0,
                    world_size: int = 1, context_length: int | None = None) -> CaptionBatches:
    """Batches of kind ``captions``: one view of each image, made on ``device`` as the
    batched path makes views (``augment.*``), with one of its captions per epoch as
    ``context_length`` token ids: the method's batch option (its card's
    ``batch_options``); None: the ``context_length`` of the run's method's section.

    Raises:
        DataError: the training images have no captions (an image folder, not a caption
            table or WebDataset shards).
    """
    from simsiam.data.tokens import tokenize_captions

    if train.captions is None:
        raise DataError(f"method {cfg.method!r} learns from captions, and data.source = "
                        f"'{cfg.data.source}' has none: pass --data a caption table (CSV, TSV or "
                        "JSONL with an image and a caption column) or WebDataset shards "
                        "('shards/{00000..00099}.tar' with {key}.jpg and {key}.txt)")
    if context_length is None:
        context_length = getattr(cfg.model, cfg.method).context_length
    tokens, counts = tokenize_captions(train.captions, context_length)
    augment = SingleView(BatchedViewAugment(cfg.augment, cfg.data.image_size,
                                               compile=cfg.augment.compile))
    loader = device_views(train, augment, cfg, device, rank, world_size)
    return CaptionBatches(loader, tokens, counts, cfg.train.seed)


# kind of batch (``Method.batch_kind``) -> its loader (yields batch objects, has .sampler)
BATCH_LOADERS = {"views": view_batches, "captions": caption_batches}


def make_batches(kind: str, train: ImageSet, cfg: Config, device: torch.device,
                 rank: int = 0, world_size: int = 1, **options: Any):
    """The training loader of batches of ``kind`` (``"views"``: :class:`ViewBatches` of
    :func:`make_loader`), yielding batch objects with ``to``, ``inputs`` and ``index``.
    ``options`` are the method's batch options (``MethodCard.batch_options``, e.g. a
    caption batch's ``context_length``), passed to the kind's loader.

    Raises:
        ConfigError: an unknown kind of batch.
    """
    if kind not in BATCH_LOADERS:
        raise ConfigError(f"kind of batch {kind!r} is unknown: choose one of "
                          f"{tuple(BATCH_LOADERS)}")
    return BATCH_LOADERS[kind](train, cfg, device, rank, world_size, **options)
