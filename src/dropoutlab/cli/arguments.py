"""argparse types shared by every command: integers with a stated range, paths, devices, names.

Each type checks its value when the command line is parsed, so a bad value is one line
(``dropoutlab CMD: error: argument --X: …``, exit status 2) before any work starts. Path types
use :mod:`dropoutlab.atomic_io`'s checks; the device type uses
:func:`dropoutlab.provenance.check_device`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from dropoutlab.atomic_io import (
    check_input_dir,
    check_input_file,
    check_output_dir,
    check_output_file,
)
from dropoutlab.errors import DropoutlabError

__all__ = [
    "MAX_COUNT",
    "MAX_SEED",
    "MAX_THREADS",
    "add_precision_argument",
    "data_dir",
    "device",
    "input_file",
    "int_range",
    "non_empty",
    "output_dir",
    "output_file",
    "store_file",
]

MAX_SEED = 2**63 - 1  # SQLite's INTEGER is a signed 64-bit number; seeds are stored there
MAX_COUNT = 2**31 - 1  # sizes, epochs, updates: far beyond any run, far below any overflow
MAX_THREADS = 4096  # torch and the process pool take C ints; no machine has more cores


def int_range(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{low}, {high}], got {text!r}; pass a whole number "
                f"in that range")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def _path_type(check: Callable[[str, str], Path], name: str) -> Callable[[str], Path]:
    """Wrap an :mod:`atomic_io` check as an argparse type (argparse names the flag)."""

    def parse(text: str) -> Path:
        try:
            return check(text, "it")
        except DropoutlabError as err:
            message = str(err)
            raise argparse.ArgumentTypeError(message.removeprefix("it ")) from None

    parse.__name__ = name
    return parse


def _store(text: str, what: str) -> Path:
    """A store path for reading: when something is there it must be a regular file."""
    path = Path(text)
    if path.exists() or path.is_symlink():
        return check_input_file(path, what, hint="pass the path of an SQLite results store")
    return path


input_file = _path_type(lambda t, w: check_input_file(t, w), "file")


def data_dir(text: str) -> str:
    """argparse type: an existing folder, kept as the text given (it goes into run configs,
    whose hashes must not depend on how the path was parsed)."""
    _folder(text)
    return text


_folder = _path_type(
    lambda t, w: check_input_dir(t, w, hint="pass the folder that holds the data files"),
    "folder")
output_dir = _path_type(check_output_dir, "output folder")
output_file = _path_type(check_output_file, "output file")
store_file = _path_type(_store, "store file")


def device(text: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N``, and CUDA only where it is present."""
    from dropoutlab.provenance import check_device

    try:
        check_device(text, "it")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("it ")) from None
    return text


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision fp32|bf16|auto`` (default: what the config says, fp32 unless set)."""
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                        help="fp32, bf16 mixed precision (bf16 products and activations, fp32 "
                        "weights and metrics), or auto: bf16 where the hardware multiplies bf16 "
                        "natively (dropoutlab info says what auto gives here)")


def non_empty(text: str) -> str:
    """argparse type: any text but the empty (or blank) string."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty value, got {text!r}; leave "
                                         f"the flag out to use the default")
    return text
