"""The process group of a ``torchrun`` launch, or none for a single process.

``torchrun`` (PyTorch's launcher, also under SLURM and with multi-node rendezvous)
sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
every process it starts; :func:`setup_distributed` reads them. Nothing is initialised
when ``WORLD_SIZE`` is absent or 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from simsiam.errors import ConfigError
from simsiam.launch import launched_as_main, launcher  # noqa: F401 (re-exported)

T = TypeVar("T")
WAIT_TIMEOUT = timedelta(hours=24)  # rank 0 alone decoding a large folder (main_first)


def world_size() -> int:
    """Processes in the default group; 1 when none is initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 when none is initialised."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass
class DistContext:
    """Where this process runs and whom it trains with.

    Attributes:
        rank, world_size, local_rank: from the process group (0, 1, 0 alone).
        device: this process's training device (``cuda:LOCAL_RANK`` under torchrun on GPU).
        backend: ``nccl`` | ``gloo`` | None (single process).
        owns_group: this context created the process group and destroys it in
            :meth:`close` (False when the caller had already initialised one).
        control_group: a gloo group for host-side flags (stop signals), so checking
            them never waits on the GPU stream; the default group on CPU.
        wait_group: a gloo group whose barrier waits up to ``WAIT_TIMEOUT`` for rank 0
            (decoding a large image folder into the cache can take longer than the
            collectives' timeout).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False
    control_group: Any = None
    wait_group: Any = None

    @property
    def distributed(self) -> bool:
        """More than one process: DDP, SyncBatchNorm and the sharded sampler are in use."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes checkpoints and exports."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op alone)."""
        if self.distributed:
            dist.barrier(group=self.control_group)

    def any_flag(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any (no-op alone)."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control_group)
        return bool(t.item())

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then (after a barrier) on the others: rank 0 builds caches
        such as the decoded images, the others then read them."""
        if self.is_main:
            result = fn()
        if self.distributed:
            dist.barrier(group=self.wait_group)
        if not self.is_main:
            result = fn()
        return result

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def resolve_device(name: str, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """``auto`` -> cuda when available, else cpu; under data parallelism on GPU,
    ``cuda:LOCAL_RANK`` (and made the current device).

    Raises:
        ConfigError: cuda without a CUDA device, or no GPU for this LOCAL_RANK.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("train.device = 'cuda' but no CUDA device is available; use "
                              "--device cpu or auto")
        if distributed:
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise ConfigError(f"LOCAL_RANK {local_rank} has no GPU: this node has {count} "
                                  f"CUDA device(s); start torchrun with --nproc_per_node="
                                  f"{count} or fewer")
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
    return torch.device(name)


def setup_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` described, or stay a single process.

    Args:
        device: ``train.device`` (auto|cpu|cuda). Under torchrun on GPU each process takes
            ``cuda:LOCAL_RANK``.
        timeout_s: how long a collective may wait for the slowest process.

    Returns:
        A :class:`DistContext`. With ``WORLD_SIZE`` unset or 1: no process group. With a
        process group already initialised by the caller (tests, notebooks), that one.

    Raises:
        ConfigError: no GPU for this LOCAL_RANK, or ``WORLD_SIZE`` > 1 without the
            rendezvous variables torchrun sets.
    """
    if dist.is_available() and dist.is_initialized():
        w, r = dist.get_world_size(), dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", r))
        dev = resolve_device(device, local, w > 1)
        control = (dist.new_group(backend="gloo") if dist.get_backend() == "nccl" else None)
        wait = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        return DistContext(r, w, local, dev, dist.get_backend(), False, control, wait)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world <= 1:
        return DistContext(device=resolve_device(device, 0, False))
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={env_world} but {missing} are not set: start several "
                          "processes with torchrun (e.g. torchrun --nproc_per_node=2 -m "
                          "simsiam pretrain ...), or unset WORLD_SIZE for one process")
    local = int(os.environ["LOCAL_RANK"])
    dev = resolve_device(device, local, True)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kw = {"device_id": dev} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kw)
    control = dist.new_group(backend="gloo") if backend == "nccl" else None
    wait = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, backend, True,
                       control, wait)
