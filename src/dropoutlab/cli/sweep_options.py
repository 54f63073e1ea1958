"""The sweep engine's command-line flags, shared by every command that runs a grid.

``add_sweep_arguments(parser)`` adds ``--store``, ``--executor``, ``--ray-address``,
``--workers``, ``--threads-per-run``, ``--retries`` and ``--checkpoint-dir``;
``sweep_options(args)`` turns them into the one :class:`~dropoutlab.sweeps.SweepOptions` that
goes to the driver, and ``run_and_report(jobs, args)`` runs the sweep, prints its summary and
returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dropoutlab.cli.arguments import (
    MAX_COUNT,
    MAX_THREADS,
    int_range,
    non_empty,
    output_dir,
    output_file,
    store_file,
)
from dropoutlab.sweeps import DEFAULT_STORE, SweepOptions

__all__ = ["add_store_argument", "add_sweep_arguments", "run_and_report", "sweep_options"]


# Kept for the commands that import them; every integer flag has a stated range.
positive_int = int_range(1, MAX_COUNT)
non_negative_int = int_range(0, MAX_COUNT)


def add_store_argument(parser: argparse.ArgumentParser, *, write: bool = False) -> None:
    """``--store FILE`` (default ``./dropoutlab-runs/runs.sqlite``); ``write``: it is written."""
    parser.add_argument("--store", type=output_file if write else store_file,
                        default=DEFAULT_STORE, metavar="FILE",
                        help=f"results store (default: {DEFAULT_STORE})")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sweep engine's flags (and ``--store``) to ``parser``."""
    add_store_argument(parser, write=True)
    group = parser.add_argument_group("sweep execution")
    group.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local process pool (default) or a Ray cluster")
    group.add_argument("--ray-address", type=non_empty, metavar="ADDR", default=None,
                       help="Ray cluster address (default: start a local Ray instance)")
    group.add_argument("--workers", type=int_range(1, MAX_THREADS), default=None, metavar="N",
                       help="runs at once (default: cores // threads-per-run)")
    group.add_argument("--threads-per-run", type=int_range(1, MAX_THREADS), default=1,
                       metavar="N", help="torch threads per run (default: 1)")
    group.add_argument("--retries", type=int_range(0, 1000), default=1, metavar="N",
                       help="extra attempts for a failing run (default: 1)")
    group.add_argument("--checkpoint-dir", type=output_dir, default=None, metavar="DIR",
                       help="mid-run checkpoints (default: beside the store; on a Ray "
                       "cluster: shared storage every node sees at the same path)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar: one log line per finished run instead")


def sweep_options(args: argparse.Namespace) -> SweepOptions:
    """The :class:`~dropoutlab.sweeps.SweepOptions` the parsed flags ask for."""
    return SweepOptions(store=args.store, executor=args.executor, workers=args.workers,
                        threads_per_run=args.threads_per_run, retries=args.retries,
                        checkpoint_dir=args.checkpoint_dir, ray_address=args.ray_address,
                        progress=False if getattr(args, "no_progress", False) else None)


def show_log_lines() -> None:
    """Print dropoutlab's log lines on stderr, unless logging is configured already.

    When stderr is not a terminal, the sweep's per-run lines are the progress; they also carry
    the traceback of an analysis that failed.
    """
    logger = logging.getLogger("dropoutlab")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run_and_report(jobs: Sequence[Any], args: argparse.Namespace) -> int:
    """Run ``jobs`` with the flags in ``args``, print the summary, return the exit status.

    0 when every run is finished, 1 when some failed (after retries), 130 after Ctrl-C.
    """
    from dropoutlab.sweeps import run_sweep

    show_log_lines()
    summary = run_sweep(jobs, sweep_options(args))
    for line in summary.lines():
        print(line)
    return summary.exit_code
