"""``dropoutlab list``: the paper's experiments, one line each (``list`` is a Python builtin,
hence the module name)."""

from __future__ import annotations

import argparse
from typing import Any

from dropoutlab.cli.arguments import data_dir


def register(subparsers: Any) -> None:
    """Add the ``list`` subcommand."""
    parser = subparsers.add_parser("list", help="list the paper's experiments, one line each")
    parser.add_argument("--data-dir", type=data_dir, default=None, metavar="DIR",
                        help="also say which experiments can run with the data in DIR")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print name, paper reference and summary in fixed-width columns; mark absent data."""
    from dropoutlab.experiments import EXPERIMENTS, missing_data

    experiments = list(EXPERIMENTS.values())
    name_w = max(len(e.name) for e in experiments)
    ref_w = max(len(e.paper_ref) for e in experiments)
    for e in experiments:
        missing = missing_data(e, args.data_dir)
        note = "  [needs data: --data-dir]" if missing is not None else ""
        print(f"{e.name:<{name_w}}  {e.paper_ref:<{ref_w}}  {e.summary}{note}")
    print(f"\nrun one: dropoutlab reproduce NAME --budget smoke|quick|paper "
          f"(or NAME = all; {len(experiments)} experiments)")
    return 0
