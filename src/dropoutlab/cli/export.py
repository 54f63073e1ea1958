"""``dropoutlab export``: the stored runs as one flat table (CSV or Parquet) for pandas.

One row per (run, experiment): identity columns, then ``config.<dotted key>`` and
``metric.<name>`` columns. Lists (e.g. ``config.model.hidden``) are written as JSON text.
The file is written to a unique temporary name and renamed (:mod:`dropoutlab.atomic_io`), so a
failed export leaves no half file and a symlink at ``--out`` is replaced, never written through.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any

from dropoutlab.atomic_io import atomic_write, atomic_write_text
from dropoutlab.cli.arguments import output_file
from dropoutlab.cli.sweep_options import add_store_argument
from dropoutlab.errors import DropoutlabError
from dropoutlab.run_status import RUN_STATUSES

_BASE_COLUMNS = ("config_hash", "experiment", "name", "task", "status", "seed", "attempts",
                 "seconds", "git_commit", "created", "updated", "error")


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser("export", help="write the runs as a CSV/Parquet table",
                                   description="Write the stored runs as one flat table.")
    add_store_argument(parser)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv",
                        help="csv (default) or parquet (needs pyarrow)")
    parser.add_argument("--out", type=output_file, default=None, metavar="FILE",
                        help="output file (default: CSV to stdout; required for parquet)")
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="only runs of this experiment")
    parser.add_argument("--status", default=None,
                        choices=RUN_STATUSES,
                        help="only runs with this status")
    parser.set_defaults(handler=run)


def flat_rows(records: list[Any], experiment: str | None = None) -> list[dict[str, Any]]:
    """One flat dict per (run, experiment) pair."""
    rows = []
    for record in records:
        experiments = [experiment] if experiment is not None else list(record.experiments)
        for exp in experiments or [None]:
            row: dict[str, Any] = {c: getattr(record, c, None) for c in _BASE_COLUMNS}
            row["experiment"] = exp
            row["name"] = record.names.get(exp) if exp is not None else None
            row["error"] = (record.error or "").strip().splitlines()[-1] if record.error else None
            row.update(_flatten("config", record.config))
            row.update({f"metric.{k}": _cell(v) for k, v in record.metrics.items()})
            rows.append(row)
    return rows


def _flatten(prefix: str, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = _cell(value)
    return out


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(_BASE_COLUMNS)
    extra = sorted({k for row in rows for k in row} - set(columns))
    return columns + extra


def run(args: argparse.Namespace) -> int:
    """Write the table."""
    from dropoutlab.cli.runs import check_experiment
    from dropoutlab.sweeps.store import Store

    if args.format == "parquet" and args.out is None:
        raise ValueError("--format parquet needs --out FILE")
    writer = _parquet_writer() if args.format == "parquet" else None
    with Store.open_readonly(args.store) as store:
        if args.experiment is not None:
            check_experiment(args.experiment, store.experiments())
        rows = flat_rows(store.records(experiment=args.experiment, status=args.status),
                         args.experiment)
    columns = _columns(rows)
    if writer is not None:
        atomic_write(args.out, lambda handle: writer(rows, columns, handle), what="`--out`")
    elif args.out is None:
        sys.stdout.write(_csv_text(rows, columns))
    else:
        atomic_write_text(args.out, _csv_text(rows, columns), what="`--out`")
    if args.out is not None:
        print(f"wrote {len(rows)} rows × {len(columns)} columns to {args.out}", file=sys.stderr)
    return 0


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _parquet_writer() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DropoutlabError("--format parquet needs the pyarrow package: "
                              "pip install pyarrow (or use --format csv)") from None

    def write(rows: list[dict[str, Any]], columns: list[str], handle: Any) -> None:
        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        pq.write_table(table, handle)

    return write
