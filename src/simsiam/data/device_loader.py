"""The fast input path: decoded images on the training device, views made a batch at a time.

Per-image augmentation in DataLoader workers delivers a few thousand views per second,
far below what a GPU consumes on 32 px images. Here the decoded uint8 images (the cache
of :mod:`simsiam.data.cache`) are copied once to the device when they fit under
``resident_max_bytes`` (CIFAR-10: 150 MB), otherwise gathered from the memory map per
batch; each batch's two views are made by :class:`BatchedSimSiamAugment` on the device,
with one generator per batch seeded from (seed, epoch, batch number). The shuffle order
is :class:`EpochShuffleSampler`'s, so a run resumed inside an epoch draws the same
batches and the same views as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from simsiam.augment.batched import BatchedSimSiamAugment
from simsiam.augment.multicrop import BatchedMultiCrop
from simsiam.data.sampling import EpochShuffleSampler

# view_seed-style stream tag for the batched views (distinct from the shuffle's stream).
_VIEW_STREAM = 0x5EED_B47C


def batch_seed(seed: int, epoch: int, batch: int, rank: int | None = None) -> int:
    """A 63-bit seed for the views of batch ``batch`` of ``epoch`` (on process ``rank`` of
    a data-parallel run; ``None`` alone, which keeps single-process runs' views)."""
    entropy = [seed, epoch, batch, _VIEW_STREAM] + ([] if rank is None else [rank])
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


class BatchedViewLoader:
    """Iterates ``(x1, x2, ..., index)``: the views of each full batch (drop_last), float32
    on ``device`` (``(B, 3, S, S)``; multi-crop adds smaller ones), then the int64 dataset
    indices ``(B,)`` (on the CPU).

    Args:
        images: ``(N, H, W, 3)`` uint8, e.g. a memory map of the decoded cache.
        augment: the batched view recipe: anything with ``views(images, g) -> list`` (the
            two SimSiam views, or :class:`~simsiam.augment.multicrop.BatchedMultiCrop`).
        batch_size: images per batch on this process (the global batch / world size).
        seed: the run's seed (shuffle and views).
        device: where views are made and returned.
        resident_max_bytes: copy the whole array to ``device`` if it is at most this big.
        rank, world_size: data parallelism (see :class:`EpochShuffleSampler`): this
            process's slice of each global batch. Its views come from a generator seeded
            with the rank too, so the processes draw independent views (the per-image
            DataLoader path draws each image's views from the image's index instead, the
            same views as one process).

    Use ``loader.sampler.set_epoch(epoch, start)`` before iterating, as with the
    DataLoader path.
    """

    def __init__(self, images: np.ndarray, augment: BatchedSimSiamAugment | BatchedMultiCrop,
                 batch_size: int, seed: int, device: torch.device,
                 resident_max_bytes: int = 4 << 30, rank: int = 0, world_size: int = 1) -> None:
        self.augment, self.batch_size, self.seed, self.device = augment, batch_size, seed, device
        self.sampler = EpochShuffleSampler(len(images), seed, batch_size * world_size, rank,
                                           world_size)
        self.rank = rank if world_size > 1 else None
        self.resident = images.nbytes <= resident_max_bytes
        if self.resident:  # (N, 3, H, W) uint8 on the device, once
            host = torch.from_numpy(np.array(images))  # a writable copy of the memory map
            self.images = host.to(device).permute(0, 3, 1, 2).contiguous()
        else:
            self.images = images

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        if self.resident:
            return self.images[idx.to(self.device, non_blocking=True)]
        rows = torch.from_numpy(np.asarray(self.images[np.sort(idx.numpy())]))
        order = torch.argsort(torch.argsort(idx))  # back from sorted reads to batch order
        batch = rows[order].permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch, start, bs = self.sampler.epoch, self.sampler.start, self.batch_size
        order = torch.tensor([i for _, i in self.sampler], dtype=torch.int64)
        first = start // (bs * self.sampler.world_size)  # steps of this epoch already done
        for b in range(len(order) // bs):
            idx = order[b * bs:(b + 1) * bs]
            imgs = self._gather(idx)
            g = torch.Generator(self.device).manual_seed(batch_seed(self.seed, epoch, first + b,
                                                                      self.rank))
            yield (*self.augment.views(imgs, g), idx)
