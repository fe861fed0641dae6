"""Crash-safe file writes shared by checkpoints, exports, metrics and the decoded cache.

A write goes to a temporary file beside the target, is flushed and fsync'ed, then renamed
over the target (``os.replace`` is atomic on POSIX), and the folder is fsync'ed, so a
crash or ``kill -9`` at any moment leaves either the old file or the new one, never a
mixture. Temporary names end in the writer's pid, so a leftover of a killed writer can be
recognised and removed.
"""

from __future__ import annotations

import os
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: Path, prefix: str) -> list[Path]:
    """Delete ``folder/<prefix><pid>`` files left by a process that was killed mid-write.

    Files of processes still running are left alone. Returns what was deleted.
    """
    removed = []
    for f in folder.glob(f"{prefix}*"):
        pid = f.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                f.unlink()
                removed.append(f)
            except OSError:
                pass
    return removed


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then atomically rename the result to ``path``.

    The temporary file is ``.<name>.tmp-<pid>`` beside ``path``; one left by a killed
    process is deleted by the next write to the same path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, f".{path.name}.tmp-")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # some writers create 0600 files
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
