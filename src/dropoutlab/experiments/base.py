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

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from dropoutlab.config import RunConfig
from dropoutlab.report.content import Deviation
from dropoutlab.sweeps.job import DEFAULT_TASK, Job

if TYPE_CHECKING:
    from dropoutlab.experiments.cost import RunCost
    from dropoutlab.report.content import Analysis
    from dropoutlab.sweeps import RunRecord

__all__ = [
    "BUDGETS",
    "DEFAULT_SEEDS",
    "Experiment",
    "GridExperiment",
    "check_budget",
    "make_job",
    "seed_list",
]

BUDGETS = ("smoke", "quick", "paper")
# Seeds per budget: smoke is one run (tests), quick and paper report mean ± std over ≥ 3.
DEFAULT_SEEDS = {"smoke": 1, "quick": 3, "paper": 3}
# What every experiment's smoke budget changes: it exists for tests and CI, not as evidence.
SMOKE_DEVIATION = Deviation(
    "everything", "the paper's nets, data and recipe", "tiny nets, a few epochs, tiny data",
    "smoke runs in seconds for tests and CI; its numbers are no reproduction")


def check_budget(budget: object) -> str:
    """Return ``budget`` after checking it is one of :data:`BUDGETS`."""
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {BUDGETS}, got budget={budget!r}")
    return str(budget)


def seed_list(budget: str, seeds: int | None) -> list[int]:
    """Seeds 0..n-1 for ``budget`` (``seeds`` overrides the budget's default count).

    Raises:
        ValueError: unknown budget, or ``seeds`` is not an integer ≥ 1.
    """
    check_budget(budget)
    if seeds is None:
        return list(range(DEFAULT_SEEDS[budget]))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"`seeds` must be an integer >= 1, got seeds={seeds!r}")
    return list(range(seeds))


def make_job(experiment: str, label: str, config: RunConfig, seed: int,
             task: str = DEFAULT_TASK) -> Job:
    """The job that runs ``config`` with ``seed``, named ``"<label> seed=<seed>"``."""
    seeded = dataclasses.replace(config, seed=seed)  # validated by RunConfig.__post_init__
    return Job(experiment, f"{label} seed={seed}", seeded, task)


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


class GridExperiment:
    """The shared base of the paper's experiments: labelled configs per budget, × seeds.

    A subclass sets the class attributes of :class:`Experiment`, builds its grid in
    :meth:`grid` and turns stored runs into an :class:`Analysis` in ``analyze``; every grid
    point runs once per seed, seed by seed, as ``"<label> seed=<seed>"``.
    """

    name: str
    title: str
    paper_ref: str
    summary: str
    datasets: tuple[str, ...] = ("mnist",)

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """The labelled configs of ``budget`` (seed not yet set)."""
        raise NotImplementedError

    def task(self, budget: str) -> str:
        """What trains each run (part of its key)."""
        return DEFAULT_TASK

    def seed_count(self, budget: str) -> int:
        """Seeds per grid point when the caller does not say."""
        return DEFAULT_SEEDS[budget]

    # budget → {grid row label: seeds} for rows that need more than seed_count (a finding
    # whose gap the noise rule cannot resolve at that count); the budget table says why.
    row_seeds: ClassVar[Mapping[str, Mapping[str, int]]] = {}

    # budget → how its design departs from the paper, each with its reason (the budget table's).
    deviation_table: ClassVar[Mapping[str, Sequence[Deviation]]] = {}

    def deviations(self, budget: str) -> list[Deviation]:
        """How ``budget``'s design departs from the paper, and why (for the report header)."""
        if budget == "smoke":
            return [SMOKE_DEVIATION]
        return list(self.deviation_table.get(budget, ()))

    def cost(self, job: Job) -> RunCost:
        """Updates and FLOPs of one run (``reproduce --plan``): its training by default."""
        from dropoutlab.experiments.cost import run_cost

        return run_cost(job.config)

    def jobs(self, budget: str, *, seeds: int | None = None,
             data_dir: str | None = None) -> list[Job]:
        """The grid of ``budget`` × seeds, seed by seed (``seeds`` overrides
        :meth:`seed_count` and :attr:`row_seeds` for every row)."""
        check_budget(budget)
        grid = self.grid(budget, data_dir)
        count = self.seed_count(budget) if seeds is None else seeds
        more = self.row_seeds.get(budget, {}) if seeds is None else {}
        counts = {label: more.get(label, count) for label in grid}
        return [make_job(self.name, label, config, seed, self.task(budget))
                for seed in seed_list(budget, max(counts.values(), default=count))
                for label, config in grid.items() if seed < counts[label]]
