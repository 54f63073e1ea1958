"""What every paper experiment provides, and what its analysis hands to the report.

An experiment (one module per paper table or figure in this package) has a name (the CLI
contract of ``dropoutlab reproduce NAME``), a grid of jobs per budget, and an analysis that turns
stored run records into tables beside the paper's numbers, figures that redraw the paper's, and
findings stated plainly — including those that do not hold.

Budgets (design.md): ``smoke`` (seconds; tests and CI), ``quick`` (minutes on a 2-core CPU; must
already show the paper's qualitative result over ≥ 3 seeds), ``paper`` (the paper's
architectures and recipe; hours, for a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

    from dropoutlab.store import RunRecord
    from dropoutlab.sweep import Job

__all__ = [
    "BUDGETS",
    "Analysis",
    "Experiment",
    "Figure",
    "Finding",
    "PaperValue",
    "Table",
    "check_budget",
]

BUDGETS = ("smoke", "quick", "paper")


def check_budget(budget: object) -> str:
    """Return ``budget`` after checking it is one of :data:`BUDGETS`."""
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {BUDGETS}, got budget={budget!r}")
    return str(budget)


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


class Experiment(Protocol):
    """The interface of an experiment module's object (see ``experiments/__init__.py``)."""

    name: str  # CLI name, e.g. "retention-rate"
    title: str  # e.g. "Effect of the retention rate p"
    paper_ref: str  # e.g. "Figure 9 a, b"
    summary: str  # one line for `dropoutlab list`
    datasets: tuple[str, ...]  # data sets it needs, e.g. ("mnist",)

    def jobs(self, budget: str, *, seeds: int | None = None,
             data_dir: str | None = None) -> list[Job]:
        """The grid of runs for ``budget`` (``seeds`` overrides the budget's seed count)."""
        ...

    def analyze(self, records: Sequence[RunRecord]) -> Analysis:
        """Tables, figures and findings from the stored runs of this experiment."""
        ...
