"""File-system checks and atomic writes: the one way dropoutlab reads paths and writes outputs.

Every file written for the user (``train --out``, ``report --out``, ``export --out``) goes
through :func:`atomic_write`: a temporary file created exclusively (``O_EXCL``, unique name) in
the target's folder, flushed to disk, then renamed over the target. So a reader never sees half a
file, a failed write leaves the old file as it was, and a symlink planted at the target (or at a
predictable temporary name) is replaced, never written through.

The ``check_*`` functions refuse a path that cannot work *before* anything is done (a folder
where a file is wanted, a file under a file, a FIFO, read-only media), and
:func:`describe_os_error` turns an ``OSError`` into words. Every message names the argument,
says what was expected and what was found, and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dropoutlab.errors import PathError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "check_input_dir",
    "check_input_file",
    "check_output_dir",
    "check_output_file",
    "describe_os_error",
    "make_output_dir",
]

# The process umask, read once (os.umask can only be read by setting it): outputs get the
# permissions a plain open() would give them, not mkstemp's private 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a parent of it is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "too many symbolic links",
    errno.ENOENT: "it does not exist",
}


def describe_os_error(err: OSError) -> str:
    """A short reason for ``err`` ("the disk is full", "the file system is read-only", …)."""
    if err.errno in _REASONS:
        return _REASONS[err.errno]
    return err.strerror or str(err)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a regular file"


def _stat(path: Path, what: str) -> os.stat_result | None:
    """``os.stat`` of ``path`` (following links), or None when nothing is there."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PathError(f"{what} must be a usable path, got {str(path)!r} "
                        f"({describe_os_error(err)}); pass a path that is not under a "
                        f"file") from None


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _writable_folder(folder: Path, what: str, target: Path) -> None:
    """Refuse when ``folder`` (an existing ancestor of ``target``) cannot take new files."""
    if not folder.is_dir():
        raise PathError(f"{what} must be a path in a folder, but {str(folder)!r} is a file, "
                          f"got {str(target)!r}; pass a path that is not under a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = ("the file system is read-only" if _read_only_fs(folder)
                  else "permission denied")
        raise PathError(f"{what} must be writable, but {str(folder)!r} is not ({reason}), "
                          f"got {str(target)!r}; pass a path on writable media")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_input_file(path: str | Path, what: str, *, hint: str = "pass an existing file"
                     ) -> Path:
    """Refuse anything but an existing, readable regular file; returns ``Path(path)``.

    Raises:
        PathError: ``path`` does not exist, is a folder, FIFO or device, or is unreadable.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PathError(f"{what} must be an existing file, got {str(path)!r}, which does "
                          f"not exist; {hint}") from None
    except OSError as err:
        raise PathError(f"{what} must be a readable file, got {str(path)!r} "
                          f"({describe_os_error(err)}); {hint}") from None
    if not stat.S_ISREG(info.st_mode):
        raise PathError(f"{what} must be a regular file, got {str(path)!r}, which is "
                          f"{_kind(info.st_mode)}; {hint}")
    if not os.access(path, os.R_OK):
        raise PathError(f"{what} must be a readable file, got {str(path)!r} (permission "
                          f"denied); {hint}")
    return path


def check_input_dir(path: str | Path, what: str, *, hint: str = "pass an existing folder"
                    ) -> Path:
    """Refuse anything but an existing, readable folder; returns ``Path(path)``."""
    path = Path(path)
    info = _stat(path, what)
    if info is None:
        raise PathError(f"{what} must be an existing folder, got {str(path)!r}, which does "
                          f"not exist; {hint}")
    if not stat.S_ISDIR(info.st_mode):
        raise PathError(f"{what} must be a folder, got {str(path)!r}, which is "
                          f"{_kind(info.st_mode)}; {hint}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PathError(f"{what} must be a readable folder, got {str(path)!r} (permission "
                          f"denied); {hint}")
    return path


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse a folder path that cannot be created or written; creates nothing.

    Raises:
        PathError: ``path`` is a file (or FIFO …), lies under a file, or sits on read-only
            media or in a folder this user cannot write.
    """
    path = Path(path)
    info = _stat(path, what)
    if info is not None and not stat.S_ISDIR(info.st_mode):
        raise PathError(f"{what} must be a folder, got {str(path)!r}, which is "
                          f"{_kind(info.st_mode)}; pass a folder path (it is created if needed)")
    _writable_folder(_nearest_existing(path), what, path)
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Refuse a file path that cannot be written (a folder, a FIFO, under a file, read-only)."""
    path = Path(path)
    info = _stat(path, what)
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise PathError(f"{what} must be a file path, got {str(path)!r}, which is "
                          f"{_kind(info.st_mode)}; pass the path of a file to (over)write")
    _writable_folder(_nearest_existing(path.parent), what, path)
    return path


def make_output_dir(path: str | Path, what: str, *, allow_symlink: bool = True) -> Path:
    """Create the folder ``path`` (and its parents) for outputs; returns it.

    Args:
        path: The folder.
        what: How messages name it (e.g. "`--out`").
        allow_symlink: Accept ``path`` being a symlink to a folder. Folders the library names
            itself inside an output folder pass False, so a planted link cannot redirect them.
    """
    path = Path(path)
    if not allow_symlink and path.is_symlink():
        raise PathError(f"{what} must be a real folder, got {str(path)!r}, which is a "
                          f"symbolic link; remove the link and run again")
    check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PathError(f"{what} {str(path)!r} cannot be created: {describe_os_error(err)}; "
                          f"pass a folder on writable media") from None
    return path


def _discard(tmp: str) -> None:
    """Remove a temporary file; a failure here must not hide the error being raised."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *,
                 what: str = "output file") -> Path:
    """Write ``path`` via a unique temporary file in its folder and an atomic rename.

    Args:
        path: The file to write; its folder must exist. A symlink there is replaced.
        write: Called with the temporary file, open for binary writing.
        what: How messages name the file (e.g. "`--out`").

    Returns:
        ``Path(path)``.

    Raises:
        PathError: the file cannot be written (full disk, read-only media, permission, a
            folder in the way); the old file, if any, is unchanged and no temporary is left.
    """
    path = Path(path)
    check_output_file(path, what)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise PathError(f"cannot write {what} {str(path)!r}: {describe_os_error(err)}; "
                          f"pass a path on writable media with free space") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise PathError(f"cannot write {what} {str(path)!r}: {describe_os_error(err)}; "
                          f"the previous file (if any) is unchanged; free space or pass a path "
                          f"on writable media") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, *, what: str = "output file") -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    data = text.encode("utf-8")

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    return atomic_write(path, write, what=what)
