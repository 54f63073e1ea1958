"""Whether a cache folder or file may hold code this process loads (compiled kernels).

A shared library loaded with ``ctypes``/``torch.ops.load_library`` runs as the current user, so
whoever can write it, or the folder it sits in, can run code as that user. A folder or file is
*trusted* when it is owned by the current user (or root) and no one else can write it: not
group- or other-writable, and not a symbolic link; and every folder above it is owned by the
user or root and either not writable by others or sticky (like ``/tmp``, where no one can
rename another user's entries).

:func:`trusted_cache_dir` gives the folder to use: the preferred one when it is trusted (it is
created private, 0700, when missing), else a private per-user folder, with a warning.
:func:`check_trusted` refuses an untrusted path with a :class:`UntrustedPathError` that says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from dropoutlab.errors import PathError

__all__ = [
    "UntrustedPathError",
    "check_trusted",
    "private_cache_dir",
    "trusted_cache_dir",
    "trusted_dir",
    "untrusted_reason",
]

log = logging.getLogger(__name__)

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class UntrustedPathError(PathError):
    """A cache folder or file that another user could have written; nothing is loaded from it."""


def _owner_ok(info: os.stat_result) -> bool:
    return info.st_uid in (os.geteuid(), 0)


def untrusted_reason(path: str | Path) -> str | None:
    """Why ``path`` (file or folder) must not be trusted, or None when it may be.

    A missing path is untrusted ("does not exist").
    """
    path = Path(path).absolute()
    try:
        info = path.lstat()
    except OSError as err:
        return f"cannot be inspected ({err.strerror or err})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return "is neither a folder nor a regular file"
    if info.st_uid != os.geteuid():
        return f"is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_mode & _OTHERS_WRITE:
        return f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    for parent in path.parents:
        try:
            above = parent.stat()
        except OSError as err:
            return f"has a parent {str(parent)!r} that cannot be inspected ({err.strerror})"
        if not _owner_ok(above):
            return f"lies in {str(parent)!r}, owned by uid {above.st_uid}"
        if above.st_mode & _OTHERS_WRITE and not above.st_mode & stat.S_ISVTX:
            return (f"lies in {str(parent)!r}, which others can write (mode "
                    f"{stat.S_IMODE(above.st_mode):o}, not sticky)")
    return None


def trusted_dir(path: str | Path) -> bool:
    """Whether ``path`` is an existing folder this process may load code from."""
    return Path(path).is_dir() and untrusted_reason(path) is None


def check_trusted(path: str | Path, what: str = "cache path") -> Path:
    """Return ``Path(path)``, or raise when code must not be loaded from it.

    Raises:
        UntrustedPathError: the path is missing, a symlink, not owned by this user, writable by
            others, or in a folder others can rename it in.
    """
    reason = untrusted_reason(path)
    if reason is not None:
        raise UntrustedPathError(
            f"{what} must be owned by this user and writable by no one else, got "
            f"{str(path)!r}, which {reason}; remove it, or set DROPOUTLAB_CACHE to a private "
            f"folder")
    return Path(path)


def private_cache_dir(name: str = "kernels") -> Path:
    """A folder only this user can write: ``<tmp>/dropoutlab-<uid>/<name>``, mode 0700.

    If another user planted that name first, a fresh ``mkdtemp`` folder is used instead.
    """
    base = Path(tempfile.gettempdir()) / f"dropoutlab-{os.geteuid()}"
    folder = base / name
    with contextlib.suppress(OSError):
        base.mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    if untrusted_reason(folder) is None:
        return folder
    return Path(tempfile.mkdtemp(prefix=f"dropoutlab-{name}-"))


def trusted_cache_dir(preferred: str | Path) -> Path:
    """``preferred`` when it is (or can be created as) a trusted folder, else a private one.

    A missing ``preferred`` is created with mode 0700. When it is not trusted, a warning says
    why and :func:`private_cache_dir` is returned, so nothing planted there is ever loaded.
    """
    preferred = Path(preferred)
    if not preferred.exists() and not preferred.is_symlink():
        try:
            preferred.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            log.warning("cannot create the cache folder %s (%s); using a private one",
                        preferred, err.strerror or err)
            return private_cache_dir(preferred.name)
    reason = untrusted_reason(preferred)
    if reason is None:
        return preferred
    fallback = private_cache_dir(preferred.name)
    log.warning("not loading code from the cache folder %s: it %s; using %s instead (set "
                "DROPOUTLAB_CACHE to a private folder)", preferred, reason, fallback)
    return fallback
