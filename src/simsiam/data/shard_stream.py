"""Sequential reading of WebDataset shards (``data.shard_order: sequential``): each DataLoader
worker of each process reads its own contiguous run of samples, shard after shard, for
shared file systems that serve large sequential reads best.

Per epoch the shards are put in a seeded order (seed, epoch), their training samples
concatenated, and the sequence cut into contiguous runs: process ``rank`` takes the
``rank``-th of ``world_size`` equal parts, and inside it worker ``w`` of ``W`` a run of
whole batches (the part's ``G = N // (batch x world_size)`` batches dealt out ``G // W``
each, one more to the first ``G % W``); the tail that fills no batch is left out, as the
sampler does. A worker reads its run in file order (each member by its offset, the offsets
increasing), passes it through a seeded shuffle buffer (``data.shuffle_buffer`` samples;
seed, epoch, rank, worker), and yields whole batches of crops
(:func:`~simsiam.data.stream.stream_crops`). So every image is read at most once per epoch
over all processes and workers, every process makes the same ``G`` steps, and the order
is a function of (seed, epoch, rank, worker count): the loop takes the workers' batches in
turn (:func:`schedule`, put in that order in the main process), and a run resumed inside
an epoch has each worker skip the batches it had delivered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from simsiam.data.sampling import view_seed
from simsiam.data.shards import ShardMember
from simsiam.data.stream import (
    BadFiles,
    StreamViewLoader,
    collate_crops,
    crops_or_reason,
    worker_init,
)

_SHARD_ORDER_STREAM = 0x5A4D_0D3E  # view_seed stream of the epoch's shard order


def worker_batches(total: int, workers: int) -> list[int]:
    """``total`` batches dealt out to ``workers``: ``total // workers`` each, one more to
    the first ``total % workers``."""
    return [total // workers + (w < total % workers) for w in range(workers)]


def schedule(counts: Sequence[int]) -> list[tuple[int, int]]:
    """The epoch's batches in the order the loop takes them: ``(worker, its batch number)``,
    in turn from the workers that still have batches."""
    left, done, out, w = list(counts), [0] * len(counts), [], 0
    for _ in range(sum(counts)):
        while left[w] == 0:
            w = (w + 1) % len(counts)
        out.append((w, done[w]))
        left[w] -= 1
        done[w] += 1
        w = (w + 1) % len(counts)
    return out


def delivered(counts: Sequence[int], steps: int) -> list[int]:
    """How many batches each worker had delivered after the first ``steps`` batches of
    :func:`schedule`."""
    done = [0] * len(counts)
    for w, _ in schedule(counts)[:steps]:
        done[w] += 1
    return done


def shard_runs_of(sources: Sequence[ShardMember]) -> list[list[tuple[int, ShardMember]]]:
    """The samples grouped by shard (in the order the shards first appear), each shard's in
    file order: ``(dataset index, member)``."""
    groups: dict[str, list[tuple[int, ShardMember]]] = {}
    for i, m in enumerate(sources):
        groups.setdefault(m.shard, []).append((i, m))
    return [sorted(g, key=lambda item: item[1].offset) for g in groups.values()]


class ShardRuns(IterableDataset):
    """The batches of one process (see the module docstring), each worker its own run.

    Args:
        shard_samples: per shard, its training samples in file order as ``(dataset
            index, ShardMember)``.
        names: each dataset index's name (``shard.tar/key``).
        specs, seed, draft: the crops (as :class:`~simsiam.data.stream.StreamViews`).
        batch_size, rank, world_size, workers: the split.
        buffer: shuffle buffer size in samples (1: file order).
    """

    def __init__(self, shard_samples: Sequence[Sequence[tuple[int, ShardMember]]],
                 names: Sequence[str], specs, seed: int, batch_size: int, rank: int,
                 world_size: int, workers: int, buffer: int, draft: bool = True) -> None:
        self.shard_samples, self.names, self.specs = shard_samples, names, list(specs)
        self.seed, self.batch_size, self.rank, self.world_size = seed, batch_size, rank, \
            world_size
        self.workers, self.buffer, self.draft = max(1, workers), max(1, buffer), draft
        self.n = sum(len(s) for s in shard_samples)
        self.epoch, self.skip = 0, [0] * self.workers

    @property
    def steps(self) -> int:
        """Batches per epoch on every process."""
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, steps_done: int = 0) -> None:
        """Select the epoch and how many of its batches this process already took."""
        self.epoch = epoch
        self.skip = delivered(worker_batches(self.steps, self.workers), steps_done)

    def run(self, worker: int) -> list[tuple[int, ShardMember]]:
        """Worker ``worker``'s contiguous run of samples this epoch, in file order."""
        g = torch.Generator().manual_seed(view_seed(self.seed, self.epoch, _SHARD_ORDER_STREAM))
        order = torch.randperm(len(self.shard_samples), generator=g).tolist()
        seq = [s for j in order for s in self.shard_samples[j]]
        part = self.steps * self.batch_size
        counts = worker_batches(self.steps, self.workers)
        lo = self.rank * part + sum(counts[:worker]) * self.batch_size
        return seq[lo: lo + counts[worker] * self.batch_size]

    def _shuffled(self, run: list[tuple[int, ShardMember]], worker: int) -> Iterator:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        buf: list[tuple[int, ShardMember]] = []
        for item in run:
            buf.append(item)
            if len(buf) >= self.buffer:
                yield buf.pop(int(rng.integers(len(buf))))
        while buf:
            yield buf.pop(int(rng.integers(len(buf))))

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        workers = range(self.workers) if info is None else [worker]
        for w in workers:  # in this process (no workers): every run in turn, as delivered
            yield from self._batches(w)

    def _batches(self, worker: int):
        batch, bad, done = [], [], 0
        for index, member in self._shuffled(self.run(worker), worker):
            if done < self.skip[worker]:  # resumed: batches delivered before, not decoded
                batch.append(None)
            else:
                g = torch.Generator().manual_seed(view_seed(self.seed, self.epoch, index))
                crops, why = crops_or_reason(member, self.names[index], self.specs, g,
                                             self.draft)
                if why is not None:
                    bad.append(why)
                    continue  # the batch is filled by the next sample of the run
                batch.append((crops, index, []))
            if len(batch) == self.batch_size:
                if done >= self.skip[worker]:
                    yield collate_crops(batch)[:2] + (bad, (worker, done))
                batch, bad, done = [], [], done + 1


class ShardStreamLoader(StreamViewLoader):
    """:class:`~simsiam.data.stream.StreamViewLoader`'s batches from :class:`ShardRuns`:
    ``(x1, x2, ..., index)`` on ``device``, ``.sampler.set_epoch(epoch, start)``.

    A damaged sample is skipped and named; its batch is filled from the rest of the run,
    so a worker with damaged samples may end one batch short (the epoch then has fewer
    steps on that process; with one process the loop simply goes on to the next epoch).
    """

    def __init__(self, shard_samples, names, augment, batch_size: int, seed: int,
                 device: torch.device, num_workers: int = 2, strict: bool = False,
                 draft: bool = True, rank: int = 0, world_size: int = 1,
                 buffer: int = 1000) -> None:
        self.augment, self.batch_size, self.seed, self.device = augment, batch_size, seed, device
        self.bad = BadFiles(strict)
        self.rank = rank if world_size > 1 else None
        self.world_size = world_size
        self.dataset = ShardRuns(shard_samples, names, augment.crop_specs(), seed, batch_size,
                                 rank, world_size, num_workers, buffer, draft)
        self.sampler = _RunSampler(self.dataset, batch_size * world_size)
        self.loader = DataLoader(self.dataset, batch_size=None, num_workers=num_workers,
                                 worker_init_fn=worker_init if num_workers else None,
                                 pin_memory=device.type == "cuda")

    def __len__(self) -> int:
        return self.dataset.steps - self.sampler.start // (self.batch_size * self.world_size)

    def _batches(self, first: int) -> Iterator:
        """The workers' batches in :func:`schedule`'s order from step ``first`` (the
        DataLoader starts its turns at worker 0 whatever was delivered before a resume)."""
        wanted = schedule(worker_batches(self.dataset.steps, self.dataset.workers))[first:]
        pending: dict[tuple[int, int], tuple] = {}
        pos = 0
        for *batch, tag in self.loader:
            pending[tuple(tag)] = batch
            while pos < len(wanted) and wanted[pos] in pending:
                yield pending.pop(wanted[pos])
                pos += 1
        yield from (pending[k] for k in wanted[pos:] if k in pending)  # runs cut short


class _RunSampler:
    """The ``sampler`` the loop talks to: ``set_epoch(epoch, start)`` with ``start`` in
    samples over all processes (a multiple of the global batch)."""

    def __init__(self, runs: ShardRuns, global_batch: int) -> None:
        self.runs, self.global_batch, self.epoch, self.start = runs, global_batch, 0, 0
        self.world_size = runs.world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self.runs.set_epoch(epoch, start // self.global_batch)
