"""Sampling: per-sample view seeds (:func:`view_seed`), the seeded two-view dataset of the
per-image path (:class:`TwoViewDataset`) and the resumable epoch shuffle
(:class:`EpochShuffleSampler`), shared by every loader."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochShuffleSampler", "TwoViewDataset", "view_seed"]

# view_seed(seed, epoch, _ORDER_STREAM) seeds the shuffle; sample indices never reach it.
_ORDER_STREAM = 2**31 - 1


def view_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the views of sample ``index`` in ``epoch`` (independent streams)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class TwoViewDataset(Dataset):
    """Item ``i`` -> ``(x1, x2, i)``: two independent augmented views of image ``i``.

    The views are a pure function of (seed, epoch, index): each item seeds its own
    ``torch.Generator`` with :func:`view_seed`, so they do not depend on worker count,
    batch order or what ran before, and a resumed run draws the same views.

    Args:
        images: ``(N, H, W, 3)`` uint8.
        augment: callable ``(uint8 (3, H, W), generator, view) -> float (3, S, S)``
            (``view`` 0 or 1: the recipe's per-view probabilities).
        seed: the run's seed.
    """

    def __init__(self, images: np.ndarray, augment, seed: int) -> None:
        self.images = images
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views are drawn (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``key`` is an index (epoch from :meth:`set_epoch`) or ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        img = torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)
        g = torch.Generator().manual_seed(view_seed(self.seed, epoch, index))
        return self.augment(img, g, 0), self.augment(img, g, 1), index


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, i)`` for a permutation of ``range(n)`` drawn from (seed, epoch).

    Carrying the epoch in each key lets persistent DataLoader workers draw that epoch's
    views without being told; the order is reproducible and resumable, also from inside
    an epoch: ``set_epoch(epoch, start)`` skips the first ``start`` keys of that epoch's
    permutation (a run resumed after ``start / batch`` steps).

    Data parallelism (``world_size`` > 1, the role of torch's DistributedSampler with
    ``set_epoch``): every process draws the same permutation, cut into global batches of
    ``batch_size`` (the tail that fills no global batch is dropped, so every process makes
    the same number of steps); process ``rank`` yields the ``rank``-th slice of
    ``batch_size / world_size`` keys of each. Together the processes see exactly the
    global batches a single process would, each image at most once per epoch.

    Args:
        n: dataset size.
        seed: the run's seed.
        batch_size: the global batch (needed when ``world_size`` > 1).
        rank, world_size: this process and the number of processes.

    Raises:
        ValueError: a rank outside ``0..world_size-1`` or a global batch that the world
            size does not divide.
    """

    def __init__(self, n: int, seed: int, batch_size: int | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if world_size > 1 and (batch_size is None or batch_size % world_size):
            raise ValueError(f"the global batch {batch_size} must be a multiple of the world "
                             f"size {world_size}")
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch, and the number of its keys already consumed (0..n; with
        several processes, counted over all of them: a multiple of the global batch)."""
        if not 0 <= start <= self.n:
            raise ValueError(f"start={start} is outside 0..{self.n}")
        if self.world_size > 1 and start % self.batch_size:
            raise ValueError(f"start={start} is not a multiple of the global batch "
                             f"{self.batch_size}")
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(view_seed(self.seed, self.epoch, _ORDER_STREAM))
        order = torch.randperm(self.n, generator=g).tolist()
        if self.world_size == 1:
            return order[self.start:]
        gb, per = self.batch_size, self.batch_size // self.world_size
        lo, hi = self.rank * per, (self.rank + 1) * per
        return [i for b in range(self.start, self.n // gb * gb, gb)
                for i in order[b + lo: b + hi]]

    def __iter__(self):
        return iter((self.epoch, i) for i in self._order())

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n - self.start
        return (self.n // self.batch_size * self.batch_size - self.start) // self.world_size
