"""``dropoutlab runs``: list the stored runs (fixed-width table, or ``--json``)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dropoutlab.cli.sweep_options import add_store_argument
from dropoutlab.run_status import RUN_STATUSES

# Metrics shown in the table when a run has them (all of them are in --json).
_SHOWN_METRICS = ("test_error", "val_error", "train_error")


def register(subparsers: Any) -> None:
    """Add the ``runs`` subcommand."""
    parser = subparsers.add_parser("runs", help="list stored runs",
                                   description="List the runs in a results store.")
    add_store_argument(parser)
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="only runs of this experiment")
    parser.add_argument("--status", default=None,
                        choices=RUN_STATUSES,
                        help="only runs with this status")
    parser.add_argument("--json", action="store_true",
                        help="a JSON list of run objects (config, metrics, history, …)")
    parser.set_defaults(handler=run)


def check_experiment(name: str, stored: list[str]) -> None:
    """Refuse a name that is neither a paper experiment nor stored under (a typo)."""
    from dropoutlab.experiments import EXPERIMENTS

    if name in EXPERIMENTS or name in stored:
        return
    valid = ", ".join(sorted(set(EXPERIMENTS) | set(stored)))
    raise ValueError(f"unknown experiment {name!r}: not a paper experiment and not in the "
                     f"store; valid names: {valid}")


def run(args: argparse.Namespace) -> int:
    """Print the runs."""
    from dropoutlab.sweeps.store import Store

    with Store.open_readonly(args.store) as store:
        if args.experiment is not None:
            check_experiment(args.experiment, store.experiments())
        records = store.records(experiment=args.experiment, status=args.status)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
        return 0
    if not records:
        print(f"no runs in {args.store}" + (f" for experiment {args.experiment!r}"
                                            if args.experiment else ""))
        return 0
    rows = [_row(r) for r in records]
    header = ("hash", "experiment", "name", "status", "seed", "tries", "metrics", "seconds",
              "updated")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{len(records)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def _row(record: Any) -> tuple[str, ...]:
    metrics = " ".join(f"{k}={_fmt(record.metrics[k])}" for k in _SHOWN_METRICS
                       if k in record.metrics)
    updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.updated))
    name = record.name or ""
    return (record.config_hash, record.experiment or "", name[:40], record.status,
            str(record.seed), str(record.attempts), metrics, f"{record.seconds:.1f}", updated)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
