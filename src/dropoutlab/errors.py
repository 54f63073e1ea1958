"""Exceptions that dropoutlab raises on purpose.

Every error a user can cause by bad input derives from :class:`DropoutlabError` (or is a plain
``ValueError``/``TypeError`` from argument validation), so the CLI can print one clear line and
exit with status 2 instead of a traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "DropoutlabError", "PathError", "StoreError"]


class DropoutlabError(Exception):
    """Base class for errors caused by input, data or stored state rather than by a bug."""


class ConfigError(DropoutlabError, ValueError):
    """A configuration value, key or file is invalid; the message names the key and the fix."""


class DataError(DropoutlabError):
    """A data file is missing, truncated or tampered with; the message says which and the fix."""


class StoreError(DropoutlabError):
    """A results store cannot be opened or written; the store is left untouched."""


class PathError(DropoutlabError):
    """A path cannot be used: missing, the wrong kind (folder, file, FIFO), unreadable, or not
    writable (read-only media, full disk); the message names the argument and the fix."""
