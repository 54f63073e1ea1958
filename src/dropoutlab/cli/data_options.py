"""``--data PATH``, ``--target COLUMN`` and ``--standardize``: a user's own data on any command.

:func:`add_data_arguments` adds the flags; :func:`data_changes` reads and checks the file once
(every problem is one line naming the file, before any run starts), prints what it holds and
how it was split, and returns the config changes: ``data.dataset = "file"``, the absolute
``data.path``, its ``data.sha256`` and ``data.target`` (:mod:`dropoutlab.data.user`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dropoutlab.errors import ConfigError

__all__ = ["add_data_arguments", "data_changes", "input_output"]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--data``, ``--target`` and ``--standardize`` to ``parser``."""
    group = parser.add_argument_group("your own data")
    group.add_argument("--data", metavar="PATH", default=None,
                       help=".npz with x, y (optionally x_val, y_val, x_test, y_test), or a "
                       ".csv/.parquet table with numeric features and a --target column")
    group.add_argument("--target", metavar="COLUMN", default=None,
                       help="the label column of a .csv/.parquet table")
    group.add_argument("--standardize", action="store_true", default=None,
                       help="subtract the training mean of each feature and divide by its "
                       "standard deviation")


def data_changes(args: argparse.Namespace, *, quiet: bool = False) -> dict[str, Any]:
    """Config changes for ``--data``/``--target``/``--standardize`` (empty when none given).

    Raises:
        ConfigError: ``--target`` without ``--data``, or ``--data`` with ``--dataset``.
        DataError: the file is missing or unusable (the message names it and the problem).
    """
    changes: dict[str, Any] = {}
    if getattr(args, "standardize", None):
        changes["data.standardize"] = True
    path = getattr(args, "data", None)
    if path is None:
        if getattr(args, "target", None) is not None:
            raise ConfigError("`--target` names the label column of a --data table; give "
                              "--data PATH too")
        return changes
    if getattr(args, "dataset", None):
        raise ConfigError(f"give either --dataset or --data, not both (got --dataset "
                          f"{args.dataset!r} and --data {path!r})")
    from dropoutlab.data.user import summarize

    info = summarize(path, target=args.target)
    if not quiet:
        sizes = info.sizes
        print(f"data {info.path}: {sizes['train']} training, {sizes['val']} validation, "
              f"{sizes['test']} test rows; {info.num_features} features; "
              f"{len(info.classes)} classes; validation: {info.validation}; "
              f"SHA-256 {info.sha256[:16]}…", file=sys.stderr)
    target = args.target if Path(path).suffix.lower() != ".npz" else None
    changes.update({"data.dataset": "file", "data.path": str(Path(path).resolve()),
                    "data.sha256": info.sha256, "data.target": target,
                    "data.data_dir": None})
    return changes


def input_output(config: Any) -> tuple[int, int]:
    """Input size and number of classes of ``config``'s data (reads a user's file)."""
    if config.data.dataset == "file":
        from dropoutlab.data import read_splits

        raw = read_splits(config.data)
        size = 1
        for n in raw.input_shape:
            size *= int(n)
        return size, raw.num_classes
    dims = {"mnist": (784, 10), "fashion-mnist": (784, 10), "digits": (64, 10),
            "cifar10": (3072, 10), "cifar100": (3072, 100), "svhn": (3072, 10)}
    return dims[config.data.dataset]
