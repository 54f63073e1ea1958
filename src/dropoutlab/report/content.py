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

__all__ = ["CONTRADICTED", "HOLDS", "OPEN", "OUTCOMES", "WITHIN_NOISE", "Analysis", "Deviation",
           "Figure", "Finding", "PaperValue", "Premise", "Table"]

# A finding's outcome (design.md): better beyond noise, worse beyond noise, neither; or open
# when the runs cannot judge (missing runs, a single seed).
HOLDS = "holds"
CONTRADICTED = "contradicted"
WITHIN_NOISE = "within noise"
OPEN = "open"
OUTCOMES = (HOLDS, CONTRADICTED, WITHIN_NOISE, OPEN)
_HOLDS_OF = {HOLDS: True, CONTRADICTED: False, WITHIN_NOISE: None, OPEN: None}


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
        holds: True when the claim holds, False when it is contradicted, None otherwise
            (within noise, or the runs cannot decide).
        evidence: The numbers behind the verdict, e.g. "1.31 ± 0.04 % vs 1.62 ± 0.05 % (n=3)".
        outcome: One of :data:`OUTCOMES`; left empty, it follows ``holds`` (True: holds,
            False: contradicted, None: open). :meth:`of` builds a finding from an outcome.
    """

    claim: str
    holds: bool | None
    evidence: str
    outcome: str = ""

    def __post_init__(self) -> None:
        outcome = self.outcome or {True: HOLDS, False: CONTRADICTED, None: OPEN}[self.holds]
        if outcome not in OUTCOMES:
            raise ValueError(f"`outcome` must be one of {OUTCOMES}, got outcome={outcome!r}")
        if _HOLDS_OF[outcome] is not self.holds:
            raise ValueError(f"`holds` must be {_HOLDS_OF[outcome]} for outcome {outcome!r}, "
                             f"got holds={self.holds!r}")
        object.__setattr__(self, "outcome", outcome)

    @classmethod
    def of(cls, claim: str, outcome: str, evidence: str) -> Finding:
        """The finding with ``outcome`` (``holds`` set to match)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"`outcome` must be one of {OUTCOMES}, got outcome={outcome!r}")
        return cls(claim, _HOLDS_OF[outcome], evidence, outcome)


@dataclass(frozen=True)
class Deviation:
    """One way a budget's design departs from the paper, and why (the budget table's reason).

    Attributes:
        aspect: What changed: "data", "widths", "epochs", "recipe", ….
        paper: The paper's choice.
        ours: This budget's choice.
        reason: Why (a paper rule, a validation measurement, or the cost).
    """

    aspect: str
    paper: str
    ours: str
    reason: str


@dataclass(frozen=True)
class Premise:
    """A check that a scaled-down design keeps the regime of the paper's nets (design.md).

    Attributes:
        check: The premise, e.g. "the no-dropout net overfits".
        passed: True / False as measured; None when the runs cannot tell.
        measured: The numbers behind it.
    """

    check: str
    passed: bool | None
    measured: str


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
    deviations: list[Deviation] = field(default_factory=list)  # this budget vs the paper
    premises: list[Premise] = field(default_factory=list)  # the regime checks, measured
    missing_rows: list[str] = field(default_factory=list)  # grid rows not run (--rows)
