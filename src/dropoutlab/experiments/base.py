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
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dropoutlab.report.content import Analysis
    from dropoutlab.sweeps import Job, RunRecord

__all__ = ["BUDGETS", "Experiment", "check_budget"]

BUDGETS = ("smoke", "quick", "paper")


def check_budget(budget: object) -> str:
    """Return ``budget`` after checking it is one of :data:`BUDGETS`."""
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {BUDGETS}, got budget={budget!r}")
    return str(budget)


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
