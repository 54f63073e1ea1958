"""``dropoutlab sweep``: any grid of runs through the sweep engine.

Example::

    dropoutlab sweep --set data.dataset=digits --set epochs=5 \\
        --grid 'model.drop_hidden=[0.2, 0.5]' --seeds 3 --experiment my-grid

runs 2 × 3 runs, stores them under the experiment ``my-grid``, and, run again, skips what is
stored and resumes what was cut short.
"""

from __future__ import annotations

import argparse
import itertools
import tomllib
from typing import Any

from dropoutlab.cli.arguments import (
    MAX_COUNT,
    MAX_SEED,
    add_precision_argument,
    input_file,
    int_range,
    non_empty,
)
from dropoutlab.cli.data_options import add_data_arguments, data_changes
from dropoutlab.cli.sweep_options import add_sweep_arguments
from dropoutlab.sweeps.job import DEFAULT_TASK


def register(subparsers: Any) -> None:
    """Add the ``sweep`` subcommand."""
    parser = subparsers.add_parser(
        "sweep", help="run a grid of configs (resumable, local or Ray)",
        description="Run every combination of --grid values × seeds through the sweep engine; "
        "finished runs are skipped, interrupted ones resume.")
    parser.add_argument("--config", type=input_file, metavar="FILE", default=None,
                        help="base config (TOML); default: the built-in defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="override a config key (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=[V1, V2]",
                        help="values to sweep for a key, as a TOML list (repeatable)")
    parser.add_argument("--seeds", type=int_range(1, MAX_COUNT), default=1, metavar="N",
                        help="seeds per grid point (default: 1)")
    parser.add_argument("--first-seed", type=int_range(0, MAX_SEED), default=0, metavar="S",
                        help="seeds are S, S+1, … (default: 0)")
    parser.add_argument("--experiment", type=non_empty, default="sweep", metavar="NAME",
                        help="experiment name the runs are stored under (default: sweep)")
    parser.add_argument("--task", type=non_empty, default=DEFAULT_TASK, metavar="MODULE:FN",
                        help=f"what trains one config (default: {DEFAULT_TASK})")
    add_data_arguments(parser)
    add_precision_argument(parser)
    add_sweep_arguments(parser)
    parser.set_defaults(handler=run)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["a.b=[1, 2]"]`` → ``{"a.b": [1, 2]}``; values are TOML lists."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            values = tomllib.loads(f"v = {raw.strip()}")["v"] if sep else None
        except tomllib.TOMLDecodeError:
            values = None
        if not key.strip() or not isinstance(values, list) or not values:
            raise ValueError(f"--grid must look like KEY=[V1, V2, ...] (a non-empty TOML list), "
                             f"got {item!r}")
        grid[key.strip()] = values
    return grid


def build_jobs(args: argparse.Namespace) -> list[Any]:
    """The jobs of the grid: every combination of grid values, for each seed."""
    from dropoutlab.config import RunConfig, apply_overrides, load_config, with_changes
    from dropoutlab.errors import ConfigError
    from dropoutlab.provenance import check_device
    from dropoutlab.sweeps import Job

    last_seed = args.first_seed + args.seeds - 1
    if last_seed > MAX_SEED:
        raise ConfigError(f"`--first-seed` + `--seeds` - 1 must be at most {MAX_SEED} (seeds are "
                          f"stored as 64-bit integers), got {args.first_seed} + {args.seeds} - 1 "
                          f"= {last_seed}; pass a smaller --first-seed")

    base = (load_config(args.config, args.overrides) if args.config
            else apply_overrides(RunConfig(), args.overrides))
    changes = data_changes(args)
    if args.precision is not None:
        changes["precision"] = args.precision
    if changes:  # --data/--standardize, checked once here before any worker reads the file
        base = with_changes(base, changes)
    grid = parse_grid(args.grid)
    jobs = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            config = with_changes(base, {**point, "seed": seed})
            check_device(config.device, "`device`")
            label = " ".join(f"{k}={v}" for k, v in point.items())
            jobs.append(Job(args.experiment, f"{label} seed={seed}".strip(), config, args.task))
    return jobs


def run(args: argparse.Namespace) -> int:
    """Build the grid and run it."""
    from dropoutlab.cli.sweep_options import run_and_report

    return run_and_report(build_jobs(args), args)
