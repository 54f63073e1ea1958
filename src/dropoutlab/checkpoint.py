"""Training checkpoints (atomic, ``weights_only`` loading) and stopping cleanly on signals.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(..., weights_only=True)`` (which refuses arbitrary pickled objects) can read it.
It is written to a temporary file in the same folder, flushed to disk and renamed over the old
one, so a crash or Ctrl-C mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch

from dropoutlab.atomic_io import atomic_write, describe_os_error
from dropoutlab.errors import DataError, PathError

__all__ = ["CheckpointError", "StopRequest", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1


class CheckpointError(DataError):
    """A checkpoint is missing, unreadable or belongs to a different run."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (plus a format version) to ``path``.

    Raises:
        CheckpointError: it cannot be written (full disk, read-only media); the previous
            checkpoint is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.save({"format": FORMAT_VERSION, **state}, handle),
                     what="checkpoint")
    except (PathError, OSError) as err:  # the previous checkpoint is intact
        reason = describe_os_error(err) if isinstance(err, OSError) else str(err)
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {reason}; the previous "
                              f"checkpoint is unchanged; free space or pass a writable "
                              f"checkpoint folder") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises:
        CheckpointError: the file does not exist, is not a checkpoint, or has another format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable ({type(err).__name__}); delete it to "
            "start the run afresh"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a dropoutlab checkpoint of format {FORMAT_VERSION}"
        )
    return state


class StopRequest:
    """Turn SIGINT/SIGTERM into a flag the training loop polls between mini-batches.

    Inside ``with StopRequest() as stop:`` the first signal sets ``stop.requested`` so the loop
    can write a checkpoint at a clean point and then raise ``KeyboardInterrupt``; a second signal
    raises at once. Outside the main thread (where Python cannot install handlers) it does
    nothing and signals keep their usual effect. Previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
