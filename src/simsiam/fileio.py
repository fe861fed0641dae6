"""Crash-safe file writes shared by checkpoints, exports, metrics and the decoded cache.

A write goes to a temporary file beside the target, is flushed and fsync'ed, then renamed
over the target (``os.replace`` is atomic on POSIX), and the folder is fsync'ed, so a
crash or ``kill -9`` at any moment leaves either the old file or the new one, never a
mixture. Temporary names end in the writer's pid, so a leftover of a killed writer can be
recognised and removed.

Also the ground floor of reading and showing what users give: their text files, as UTF-8
with a byte order mark allowed (:func:`read_utf8_text`, one message for any other
encoding), and file names that are not UTF-8, shown with ``\\xNN`` escapes
(:func:`display_path`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from simsiam.errors import ConfigError, DataError, DiskFullError

# torch.save's C++ writer reports a full disk as a RuntimeError with one of these
_TORCH_WRITE_FAILED = ("file write failed", "unexpected pos")
# writers that report the OS error in their own exception's text (safetensors)
_NO_SPACE_WORDS = ("No space left on device", "os error 28", "Disk quota exceeded")
_NEARLY_FULL = 64 << 20  # bytes: a failed torch write with less free space is a full disk


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


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (or an exception it was raised from or during) says the disk is
    full: an ``OSError`` with ENOSPC or EDQUOT, an error whose text carries the OS's "No
    space left on device" (safetensors' ``SafetensorError``), or torch.save's C++
    ``RuntimeError`` for a failed write when ``folder``'s file system has less than 64 MiB
    free."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(seen) for m in _NO_SPACE_WORDS):  # safetensors' Rust I/O error
            return True
        if isinstance(seen, RuntimeError) and any(m in str(seen) for m in _TORCH_WRITE_FAILED):
            free = _free_bytes(folder)
            if free is not None and free < _NEARLY_FULL:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_error(path: Path, elsewhere: str = "choose another output folder"
                    ) -> DiskFullError:
    """The one error of a write that did not fit: the path, the space left, what is kept
    and what to do (free space, or ``elsewhere``)."""
    kept = ("the file already there is unchanged" if path.exists()
            else "nothing was written there")
    return DiskFullError(f"no space left on device writing '{path}': {kept} and no "
                         f"temporary file is left; free some space (or {elsewhere}) and run "
                         "the command again")


def reserve_space(tmp: Path, final: Path, elsewhere: str) -> None:
    """Allocate the whole of the memory-mapped file ``tmp`` on disk now (the decoded
    cache): writing pages of a sparse map on a full disk would kill the process (SIGBUS)
    instead of raising.

    Raises:
        DiskFullError: the disk cannot hold it (``tmp`` is removed; the error names
            ``final`` and suggests ``elsewhere``).
    """
    try:
        with open(tmp, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
    except OSError as exc:
        if is_disk_full(exc, tmp.parent):
            tmp.unlink(missing_ok=True)
            raise disk_full_error(final, elsewhere) from None
        # file systems without fallocate (EOPNOTSUPP, EINVAL): pages are written as they come
    except AttributeError:  # no posix_fallocate on this platform
        pass


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then atomically rename the result to ``path``.

    The temporary file is ``.<name>.tmp-<pid>`` beside ``path``; one left by a killed
    process is deleted by the next write to the same path.

    Raises:
        DiskFullError: the disk filled up (:func:`is_disk_full`): one short error naming
            the path; the file that was at ``path`` is unchanged, the temporary is gone.
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
    except Exception as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full_error(path) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def display_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as text that can be printed and written to a UTF-8 file.

    A file name that is not valid UTF-8 (Latin-1 ``caf\\xe9.jpg``) reaches Python as a
    ``str`` holding surrogate escapes (``'caf\\udce9.jpg'``): it opens the file, but
    printing it or writing it as UTF-8 raises ``UnicodeEncodeError``. Here each byte that
    is not UTF-8 is shown as ``\\xNN`` (``'caf\\\\xe9.jpg'``, 11 characters); valid names,
    non-ASCII ones included, are returned unchanged. Also safe for whole messages that
    hold such a name. To open the file, keep the original ``str`` (``os.fsencode`` gives
    its bytes back); the shown form is for people, CSV and JSON.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    if text.isascii():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name gives: escape it as is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _encoding_guess(data: bytes) -> tuple[str, str]:
    """What a text that is not UTF-8 probably is: ``(words for a message, iconv name)``."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "it starts with a UTF-16 byte order mark", "UTF-16"
    if b"\x00" in data[:4096]:
        return "it holds NUL bytes, as UTF-16 text does", "UTF-16"
    return "it looks like Latin-1 or Windows-1252", "WINDOWS-1252"


def not_utf8_error(path: str | Path, what: str, exc: UnicodeDecodeError,
                   where: str) -> DataError:
    """The one error of a user's text file that is not UTF-8 (class names, templates,
    caption tables, configs): the file, ``where`` in it (``"line 3, byte offset 17"``), the
    byte that is not UTF-8, the encoding it probably is and the fix (save it as UTF-8).

    Args:
        path: the file, ``what``: what it is for (``"--classnames file"``).
        exc: the decode error (its ``object`` is the text's bytes or a chunk of them).
        where: where in the file the error is, in words.
    """
    said, iconv = _encoding_guess(exc.object)
    byte = exc.object[exc.start:exc.start + 1].hex()
    return DataError(f"{what} '{display_path(path)}' is not UTF-8 text ({where}: byte 0x{byte}, "
                     f"{exc.reason}; {said}); save it as UTF-8 (an editor's 'save as' "
                     f"encoding, or iconv -f {iconv} -t UTF-8 OLD > NEW) and run again")


def read_utf8_text(path: str | Path, what: str) -> str:
    """The text of a user's file, read as UTF-8; a byte order mark at the start is
    dropped. Newlines are left as they are (``str.splitlines`` takes CRLF).

    Args:
        path: the file. what: what it is for, for messages (``"--templates file"``).

    Raises:
        DataError: the file cannot be read (the OS's reason), or is not UTF-8
            (:func:`not_utf8_error`: the file, line, byte offset, encoding and fix).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} '{display_path(path)}': "
                        f"{exc.strerror or exc}") from exc
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = data[:offset].count(b"\n") + 1
        where = f"line {line}, byte offset {offset}"
        raise not_utf8_error(path, what, exc, where) from None


def default_cache_dir() -> Path:
    """``$SIMSIAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/simsiam``, else ``~/.cache/simsiam``."""
    if os.environ.get("SIMSIAM_CACHE_DIR"):
        return Path(os.environ["SIMSIAM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsiam"


MIN_FREE_BYTES = 16 << 20  # a folder whose file system has less free is refused up front


def check_writable(path: str | Path, what: str, fix: str) -> None:
    """Refuse, before any work, a folder that a command will write into but cannot.

    ``path`` need not exist: its first existing ancestor must then be a folder in which
    the missing ones can be made. The test is a real one (a temporary file created and
    removed there), so a read-only mount, missing permissions (also for root on a
    read-only file system) and a full disk are all found; less than
    :data:`MIN_FREE_BYTES` (16 MiB) free counts as full. Nothing is left behind.

    Args:
        path: the folder the command writes into (``--out``, the cache folder).
        what: how the user gave it, for the message (``"--out"``, ``"data.cache_dir"``).
        fix: what to do instead (``"choose another --out"``).

    Raises:
        ConfigError: one line naming ``what``, the path, why (read-only file system,
            permission denied, a file in the way, no space left) and ``fix``.
    """
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        why = (f"'{probe}' is a file" if probe != path else "it is a file, not a folder")
        raise ConfigError(f"{what} '{path}' cannot be written: {why}; {fix}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".simsiam-write-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.EROFS:
            why = "read-only file system"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            why = f"permission denied in '{probe}'"
        raise ConfigError(f"{what} '{path}' cannot be written: {why}; {fix}") from None
    free = _free_bytes(probe)
    if free is not None and free < MIN_FREE_BYTES:
        raise ConfigError(f"{what} '{path}' cannot be written: no space left on its file "
                          f"system ({free >> 20} MiB free); free some space, or {fix}")


def check_cache_writable(cache_dir: str | Path | None = None) -> None:
    """:func:`check_writable` for the decoded-image cache: ``cache_dir`` (``data.cache_dir``)
    or, when None, :func:`default_cache_dir`; the message names which and its fix.

    Raises:
        ConfigError: as :func:`check_writable`.
    """
    if cache_dir:
        check_writable(cache_dir, "data.cache_dir", "set data.cache_dir to a writable folder")
    else:
        check_writable(default_cache_dir(), "the cache folder",
                       "set SIMSIAM_CACHE_DIR to a writable folder (for pretrain also: "
                       "data.cache_dir)")


def read_jsonl(path: str | Path) -> tuple[list[dict], str | None]:
    """The records of a JSON-lines file, and a warning when its last line was torn.

    A crash (or a full disk) in the middle of an append can leave the last line cut
    short. That line is dropped and described in the returned warning text; a bad line
    anywhere else means the file was damaged otherwise, and is refused.

    Returns:
        ``(records, warning)``: the decoded objects in order (blank lines ignored) and
        None, or the text of a warning naming the file and the line dropped.

    Raises:
        ConfigError: a line other than the last is not JSON (names the file and line).
        OSError: the file cannot be read.
    """
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ConfigError(f"'{path}' line {number} is not a JSON record (the file "
                                  "was changed by hand or damaged); restore it, or delete "
                                  "that line") from None
            return records, (f"'{path}': its last line ({number}) was cut short (a crash "
                             f"while it was written) and is skipped: {line[:60]!r}")
    return records, None
