"""Report tables as Markdown and CSV, and the cell formatting every view of a table shares.

Tables come from the experiments' analyses (:class:`~dropoutlab.experiments.base.Table`): our
numbers aggregated over seeds as "mean ± std (n)" (usually already formatted by the experiment),
the paper's number as a :class:`~dropoutlab.experiments.base.PaperValue` — whose "(?)" mark for
values shared/paper.md could not check is kept in every format — and the difference.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropoutlab.atomic_io import atomic_write_text
from dropoutlab.report.content import OUTCOMES, Finding, PaperValue, Table

__all__ = [
    "MISSING",
    "findings_text",
    "format_cell",
    "format_number",
    "outcome_counts",
    "outcome_summary",
    "table_to_csv",
    "table_to_markdown",
    "verdict",
    "write_table",
]

MISSING = "–"  # shown for None and NaN cells


def format_number(value: float) -> str:
    """A float at a precision a person reads: 4 significant digits, no needless exponent.

    Example:
        >>> format_number(1.23456), format_number(12345.6), format_number(0.5), format_number(2.0)
        ('1.235', '12346', '0.5', '2')
    """
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    magnitude = abs(value)
    if magnitude >= 1e4:
        return f"{value:.0f}"
    if magnitude != 0 and magnitude < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def format_cell(value: Any, *, exact: bool = False) -> str:
    """The text of one table cell.

    Args:
        value: ``str`` (kept as is), ``int``, ``float``, ``bool``, ``None`` or
            :class:`PaperValue` (its "(?)" mark is kept).
        exact: Write floats at full precision (for CSV, which other programs read) instead of
            the rounded form people read.

    Returns:
        The cell's text; ``None`` and NaN become "–".
    """
    if value is None:
        return MISSING
    if isinstance(value, PaperValue):
        text = repr(float(value.value)) if exact else format_number(float(value.value))
        return text + (" (?)" if value.uncertain else "")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if exact and math.isfinite(number):
            return repr(number)
        return format_number(number)
    return str(value)


def _check_shape(table: Table) -> None:
    width = len(table.columns)
    for i, row in enumerate(table.rows):
        if len(row) != width:
            raise ValueError(
                f"table {table.name!r}: row {i} has {len(row)} cells, expected {width} "
                f"(columns {list(table.columns)})"
            )


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_to_markdown(table: Table) -> str:
    """The table as GitHub-flavoured Markdown: title, the grid, then the caption."""
    _check_shape(table)
    header = "| " + " | ".join(_md_escape(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_md_escape(format_cell(v)) for v in row) + " |"
            for row in table.rows]
    parts = [f"### {table.title}", "", header, rule, *body]
    if table.caption:
        parts += ["", table.caption]
    return "\n".join(parts) + "\n"


def table_to_csv(table: Table) -> str:
    """The table as CSV: a header row, then one row per table row, floats at full precision."""
    _check_shape(table)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([str(c) for c in table.columns])
    for row in table.rows:
        writer.writerow([format_cell(v, exact=True) for v in row])
    return buffer.getvalue()


def write_table(table: Table, directory: Path) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.csv`` into ``directory``; return both paths."""
    md_path = directory / f"{table.name}.md"
    csv_path = directory / f"{table.name}.csv"
    atomic_write_text(md_path, table_to_markdown(table), what="a report table")
    atomic_write_text(csv_path, table_to_csv(table), what="a report table")
    return md_path, csv_path


def verdict(finding: Finding | bool | None) -> str:
    """A finding's outcome in words: "holds", "contradicted", "within noise" or "open".

    A bare ``holds`` value (True / False / None) reads as holds / contradicted / open.
    """
    if isinstance(finding, Finding):
        return finding.outcome
    return {True: "holds", False: "contradicted", None: "open"}[finding]


def outcome_counts(findings: Sequence[Finding]) -> dict[str, int]:
    """How many findings have each outcome, in the order of :data:`OUTCOMES`."""
    return {outcome: sum(f.outcome == outcome for f in findings) for outcome in OUTCOMES}


def outcome_summary(findings: Sequence[Finding]) -> str:
    """``"21 hold · 2 within noise · 0 contradicted · 1 open (of 24)"``."""
    counts = outcome_counts(findings)
    parts = [f"{counts['holds']} hold", f"{counts['within noise']} within noise",
             f"{counts['contradicted']} contradicted", f"{counts['open']} open"]
    return " · ".join(parts) + f" (of {len(findings)})"


def findings_text(rows: Sequence[tuple[str, Finding]], *, width: int = 100) -> str:
    """A compact fixed-width table of findings for the terminal.

    Claims and evidence are wrapped inside their columns, never cut, so no number is lost.

    Args:
        rows: ``(experiment name, finding)`` pairs in the order to print.
        width: Total line width (the terminal's); at least 60 is used.

    Returns:
        The table, a header line then each finding (on one or more lines), or a note that
        there are none.
    """
    if not rows:
        return "no findings"
    width = max(width, 60)
    name_w = max(len("experiment"), *(len(name) for name, _ in rows))
    verdict_w = len("within noise")
    rest = width - name_w - verdict_w - 6
    claim_w = max(rest // 2, 16)
    evidence_w = max(rest - claim_w, 16)
    lines = [f"{'experiment':<{name_w}}  {'verdict':<{verdict_w}}  "
             f"{'claim':<{claim_w}}  evidence"]
    for name, finding in rows:
        claim = textwrap.wrap(finding.claim, claim_w) or [""]
        evidence = textwrap.wrap(finding.evidence, evidence_w) or [""]
        for i in range(max(len(claim), len(evidence))):
            first = (name, verdict(finding)) if i == 0 else ("", "")
            lines.append(
                f"{first[0]:<{name_w}}  {first[1]:<{verdict_w}}  "
                f"{claim[i] if i < len(claim) else '':<{claim_w}}  "
                f"{evidence[i] if i < len(evidence) else ''}")
    lines.append(outcome_summary([finding for _, finding in rows]))
    return "\n".join(line.rstrip() for line in lines)
