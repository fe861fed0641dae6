"""Peak memory of a run, for the metrics and the benchmarks."""

from __future__ import annotations

import resource

import torch


def peak_memory_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or this process's peak resident set
    (``ru_maxrss``; a process-wide maximum since it started), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
