"""What a report shows: tables, figures and findings beside the paper's numbers.

An experiment's analysis (``experiments/``) turns stored runs into an :class:`Analysis`; the
report (this package) writes it as Markdown, CSV, PNG/SVG and HTML. These types are plain data,
so the report depends on nothing that trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

__all__ = ["Analysis", "Figure", "Finding", "PaperValue", "Table"]


@dataclass(frozen=True)
class PaperValue:
    """A number printed in the paper, with its source and whether it could be checked.

    Attributes:
        value: The number as printed (test error in percent unless the table says otherwise).
        source: Where it is printed, e.g. ``"Table 2"``.
        uncertain: True for values marked (?) in shared/paper.md; reports keep the mark.
    """

    value: float
    source: str
    uncertain: bool = False

    def __str__(self) -> str:
        return f"{self.value:g}{' (?)' if self.uncertain else ''}"


@dataclass(frozen=True)
class Table:
    """A table for the report, written as Markdown and CSV and shown in the HTML page.

    Cells are plain values: ``str``, ``int``, ``float``, ``None`` (shown as "–") or
    :class:`PaperValue`. Rows comparing with the paper use the columns
    ``ours (mean ± std, n)``, ``paper``, ``difference``.
    """

    name: str  # file stem, e.g. "table2"
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A matplotlib figure for the report, saved as PNG and SVG under ``name``."""

    name: str  # file stem, e.g. "figure9a"
    title: str
    figure: MplFigure
    caption: str = ""


@dataclass(frozen=True)
class Finding:
    """One qualitative claim of the paper, checked against our runs.

    Attributes:
        claim: The paper's claim in one sentence, e.g. "dropout beats no dropout".
        holds: True / False as measured; None when the runs cannot decide (e.g. too few seeds).
        evidence: The numbers behind the verdict, e.g. "1.31 ± 0.04 % vs 1.62 ± 0.05 % (n=3)".
    """

    claim: str
    holds: bool | None
    evidence: str


@dataclass
class Analysis:
    """Everything the report shows for one experiment."""

    experiment: str
    title: str
    paper_ref: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
