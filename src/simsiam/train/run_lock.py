"""Own a run directory while a run uses it: ``RUN/run.lock``, an OS-level lock.

Two processes on one run directory ruin it: a second ``--resume`` trains on top of the
first, an ``--overwrite`` deletes the files of a run that is still writing them. A run
holds an exclusive ``fcntl.flock`` on ``RUN/run.lock`` (which names its pid, host and start
time) from its first check to its end; a second run on the same directory is refused at
once, naming the holder. The operating system drops the lock when the holder exits, also
on ``kill -9`` or a crash, so a stale ``run.lock`` never blocks anything: it is taken over.
(Locks on network file systems are as good as the file system's ``flock``; on NFS v4 and
Lustre it works across hosts, on some older mounts only within one host.)

Under ``torchrun`` rank 0 takes the lock for the whole job (:func:`hold_run_dir`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from simsiam.errors import ConfigError

__all__ = ["LOCK_NAME", "RunLock", "check_not_in_use", "hold_run_dir", "in_use_error"]

LOCK_NAME = "run.lock"


class RunLock:
    """An exclusive lock on ``out/run.lock``; a context manager.

    ``acquire()`` creates ``out`` if needed (and, on :meth:`release`, removes it again when
    this lock made it and it is still empty), writes ``pid=… host=… started=…`` into the
    lock file and keeps the file open and locked until :meth:`release`.

    Raises:
        ConfigError: (from :meth:`acquire`) another live process holds the lock: names its
            pid and host and what to do.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring); returns ``self``."""
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"output path '{self.out}' is a file; choose a directory for "
                              "--out")
        if not self.out.exists():
            self.out.mkdir(parents=True)
            self._made_dir = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                self._undo_dir()
                raise in_use_error(self.out, holder) from None
            if _same_file(fd, self.path):  # not unlinked by a holder releasing meanwhile
                break
            os.close(fd)
        text = f"pid={os.getpid()} host={socket.gethostname()} started={time.ctime()}\n"
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and remove ``run.lock`` (and ``out`` if this lock made it and it
        is empty). Safe to call twice."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        self._undo_dir()

    def _undo_dir(self) -> None:
        if self._made_dir:
            try:
                self.out.rmdir()  # only when empty: a refused run leaves nothing
            except OSError:
                pass
            self._made_dir = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 256, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def in_use_error(out: Path, holder: str) -> ConfigError:
    """The refusal of a run directory held by another live run (``holder``: the text of
    its ``run.lock``, e.g. ``pid=123 host=node1 started=...``)."""
    who = f" ({holder})" if holder else ""
    return ConfigError(f"output directory '{out}' is in use by a run that is still going"
                       f"{who}: wait for it to end, or stop it (Ctrl-C, or kill -TERM its "
                       "pid: it saves a checkpoint first), then --resume; or choose another "
                       "--out")


def check_not_in_use(out: str | Path) -> None:
    """Refuse ``out`` when a live run holds its lock; changes nothing (creates no folder,
    takes no lock that outlives the call).

    Raises:
        ConfigError: as :meth:`RunLock.acquire`.
    """
    path = Path(out) / LOCK_NAME
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # gone meanwhile, or unreadable: the real lock is taken later
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise in_use_error(Path(out), _read_holder(fd)) from None
    finally:
        os.close(fd)


def hold_run_dir(lock: RunLock, ctx) -> None:
    """Rank 0 takes ``lock``; every process of the job is refused together when it could
    not (``ctx``: a :class:`~simsiam.distributed.DistContext`, whose ``any_flag`` is a
    collective), so no process waits for one that stopped.

    Raises:
        ConfigError: the directory is in use (rank 0 names the holder).
    """
    refusal: ConfigError | None = None
    if ctx.is_main:
        try:
            lock.acquire()
        except ConfigError as exc:
            refusal = exc
    if ctx.any_flag(refusal is not None):
        raise refusal or ConfigError(f"output directory '{lock.out}' is refused on rank 0 "
                                     "(in use by another run: see rank 0's message)")
