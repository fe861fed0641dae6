"""Resource exhaustion in the training loop, told in one line (exit code 6).

Two failures end a run for want of a machine resource, not for a fault in its input:

- a step that runs out of memory: ``torch.OutOfMemoryError`` on a GPU; on the CPU the
  allocator's ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory: you tried to
  allocate N bytes", e.g. under a ``ulimit -v`` / RLIMIT_AS, or with overcommit off), or
  Python's ``MemoryError``;
- a DataLoader worker killed by SIGKILL (what the kernel's out-of-memory killer sends
  when the machine runs out of memory) or by a bus error (its shared memory, ``/dev/shm``,
  is full). PyTorch's SIGCHLD handler raises "DataLoader worker (pid N) is killed by
  signal: Killed." in the training process at once, wherever it is, or its queue check
  "DataLoader worker (pid(s) N) exited unexpectedly" within 5 s (measured on 2 loaded
  cores: 0.1 s; 5 s), so the run ends rather than waiting for a batch.

:func:`resource_error` reads such an exception as a :class:`~simsiam.errors.ResourceError`
whose message names the settings to lower with their values (``train.batch_size``,
``data.image_size``; ``eval.batch_size`` inside the kNN monitor; ``data.num_workers`` for
a killed worker), the checkpoint kept and the command that continues the run
(:func:`simsiam.launch.resume_command`, shell-quoted). Nothing is saved after the failure
(the state in memory may be half a step), so the last checkpoint written stays the one to
resume from. Any other exception is left alone. (The workers left alive are ended at the
command's exit: :func:`simsiam.cli.end_worker_processes`.)
"""

from __future__ import annotations

import re
import signal
import threading

import torch

from simsiam.errors import ResourceError
from simsiam.eval.monitor import Monitor
from simsiam.launch import resume_command

__all__ = ["MEMORY_MARKERS", "exhaustion_kind", "raise_if_exhausted", "resource_error"]

# Texts of the RuntimeErrors that mean "out of memory" (the CPU allocator's, CUDA's own
# error code, Apple's MPS backend); torch.OutOfMemoryError and MemoryError are read by type.
MEMORY_MARKERS = ("DefaultCPUAllocator", "can't allocate memory", "CUDA out of memory",
                  "CUDA error: out of memory", "MPS backend out of memory",
                  # what oneDNN and thread creation report when the address space runs out
                  # (seen under `prlimit --as`); the line quotes torch's words for these
                  "could not create a primitive", "Resource temporarily unavailable")

# torch's SIGCHLD handler: "DataLoader worker (pid 123) is killed by signal: Killed. "
# (SIGKILL; "Bus error": out of shared memory); its queue check: "DataLoader worker
# (pid(s) 123, 124) exited unexpectedly". A worker that crashed (another signal, an exit
# code) is not a resource running out and is not matched.
_WORKER = re.compile(r"DataLoader worker \((?:pid (\d+)\) is killed by signal: "
                     r"(Killed|Bus error)|pid\(s\) ([\d, ]+)\) exited unexpectedly)")
_ASKED_BYTES = re.compile(r"tried to allocate (\d+) bytes")
_ASKED_TEXT = re.compile(r"[Tt]ried to allocate ([\d.]+ [KMGT]?i?B)")


def _from_loader(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a batch came from DataLoader workers (a frame of
    ``torch.utils.data`` or ``multiprocessing`` on its traceback)."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name.startswith(("torch.utils.data", "multiprocessing")):
            return True
        tb = tb.tb_next
    return False


def exhaustion_kind(exc: BaseException) -> str | None:
    """``"memory"`` (out of memory), ``"worker"`` (a DataLoader worker killed; also the
    ``EOFError`` / ``ConnectionResetError`` of a worker that died while it passed a batch)
    or None for any other exception."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return "memory"
    if isinstance(exc, (EOFError, ConnectionResetError)) and _from_loader(exc):
        return "worker"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if any(marker in text for marker in MEMORY_MARKERS):
            return "memory"
        if _WORKER.search(text):
            return "worker"
    return None


def _asked(text: str) -> str:
    """`` (the allocator could not get 12.0 GiB more)`` from the allocator's message (its
    size in GiB, or MiB under 1 GiB), or ''."""
    found = _ASKED_BYTES.search(text)
    if found:
        n = int(found.group(1))
        size = f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
        return f" (the allocator could not get {size} more)"
    found = _ASKED_TEXT.search(text)
    return f" (the allocator could not get {found.group(1)} more)" if found else ""


def _worker_line(text: str) -> str:
    """What happened to the worker, from torch's message."""
    found = _WORKER.search(text)
    if found is None:  # the pipe broke while a batch was passed
        return ("a DataLoader worker ended while it passed a batch (as when the kernel's "
                "out-of-memory killer ends one)")
    pid, signal_name, pids = found.groups()
    if signal_name == "Killed":
        return (f"a DataLoader worker (pid {pid}) was killed by SIGKILL (the kernel's "
                "out-of-memory killer sends it when memory runs out)")
    if signal_name == "Bus error":
        return (f"a DataLoader worker (pid {pid}) died of a bus error (its shared memory, "
                "/dev/shm, is full)")
    return (f"DataLoader worker(s) (pid {pids}) ended unexpectedly (as when the kernel's "
            "out-of-memory killer ends one)")


def _in_monitor(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside the kNN monitor (a frame of :class:`Monitor`'s
    module on its traceback), whose batch is ``eval.batch_size``."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == Monitor.__module__:
            return True
        tb = tb.tb_next
    return False


def resource_error(exc: BaseException, cfg, step: int, checkpointer) -> ResourceError | None:
    """The :class:`ResourceError` that tells ``exc`` in one line, or None when ``exc`` is
    not resource exhaustion (see :func:`exhaustion_kind`; the caller re-raises it).

    Out of memory names ``train.batch_size`` and ``data.image_size`` (inside the kNN
    monitor ``eval.batch_size`` first: an ``eval.*`` key, which ``--resume`` may change);
    a killed worker names ``data.num_workers`` first, and its resume command lowers it
    (also a key ``--resume`` may change).

    Args:
        exc: what the training loop raised.
        cfg: the run's :class:`~simsiam.config.Config` (the values named).
        step: the steps completed (``RunState.step``).
        checkpointer: the run's :class:`~simsiam.train.checkpoint.Checkpointer` (its
            ``kept()`` sentence, ``out`` and ``last_saved``).

    Example (a worker killed after a checkpoint; one line)::

        a DataLoader worker (pid 4242) was killed by SIGKILL (...) after step 12: lower
        data.num_workers = 2, or train.batch_size = 256 or data.image_size = 224 (...);
        the last checkpoint, R/checkpoints/last.pt (epoch 1, step 10), is kept; continue
        with fewer workers: simsiam pretrain --config 'my runs/config.yaml' --out
        'my runs' --set data.num_workers=1 --resume
    """
    kind = exhaustion_kind(exc)
    if kind is None:
        return None
    smaller = (f"train.batch_size = {cfg.train.batch_size} or data.image_size = "
               f"{cfg.data.image_size}")
    extra: list[str] = []
    if kind == "worker":
        fewer = cfg.data.num_workers // 2
        head = (f"{_worker_line(str(exc))} after step {step}: lower data.num_workers = "
                f"{cfg.data.num_workers}, or {smaller}")
        extra = ["--set", f"data.num_workers={fewer}"]
        then = "continue with fewer workers"
        again = f"run the command again with --set data.num_workers={fewer} and --overwrite"
    elif _in_monitor(exc):
        head = (f"out of memory in the kNN monitor after step {step}{_asked(str(exc))}: lower "
                f"eval.batch_size = {cfg.eval.batch_size} (its batch), or {smaller}")
        then = "continue with a smaller batch by adding --set eval.batch_size=N to"
        again = "run the command again with --set eval.batch_size=N (smaller) and --overwrite"
    else:
        head = f"out of memory after step {step}{_asked(str(exc))}: lower {smaller}"
        then = "to continue this run as it is once memory is free"
        again = "run the command again with smaller values and --overwrite"
    if kind == "memory" and not _asked(str(exc)) and str(exc).strip():
        head += f" (torch: {str(exc).strip().splitlines()[0][:80]!r})"  # the basis, seen
    tail = (f"{then}: {resume_command(checkpointer.out, extra=extra)}"
            if checkpointer.last_saved is not None else again)
    return ResourceError(f"{head} (a smaller batch or image size is a new run: --resume keeps "
                         f"a run's settings); {checkpointer.kept('last checkpoint')}; {tail}")


def raise_if_exhausted(exc: BaseException, cfg, step: int, checkpointer) -> None:
    """Raise :func:`resource_error`'s :class:`ResourceError` (from ``exc``) when ``exc`` is
    resource exhaustion; return otherwise, for the caller to re-raise ``exc``."""
    error = resource_error(exc, cfg, step, checkpointer)
    if error is not None:
        if threading.current_thread() is threading.main_thread():
            # torch's SIGCHLD handler would raise again for the next worker that ends
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise error from exc
