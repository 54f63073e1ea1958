"""``dropoutlab report [NAME]``: rebuild a report from stored runs, training nothing.

The runs are looked up by the keys of the grids ``reproduce`` builds, so pass the same
``--budget``, ``--seeds``, ``--device`` and ``--data-dir`` as when they ran. The store is opened
read-only.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from dropoutlab.cli.reproduce import add_experiment_arguments, print_reproduction
from dropoutlab.cli.sweep_options import add_store_argument, show_log_lines


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report", help="rebuild the report from stored runs (trains nothing)",
        description="Write the report of stored runs without training anything.")
    add_experiment_arguments(parser, name_default="all")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Analyse the stored runs, print the findings and the report's path."""
    from dropoutlab.reproduce import rebuild

    show_log_lines()
    reproduction = rebuild(args.name, budget=args.budget, seeds=args.seeds, device=args.device,
                      data_dir=args.data_dir, store=args.store, out_dir=args.out,
                      command=shlex.join(["dropoutlab", *sys.argv[1:]]),
                      echo=lambda line: print(line, flush=True), rows=args.rows,
                      precision=args.precision)
    print_reproduction(reproduction)
    return reproduction.exit_code
