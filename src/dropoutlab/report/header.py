"""The report's header: what was run, on what, with which code — so a reader can trust it.

:class:`ReportMeta` holds the budget, the data each experiment read, hardware, versions, seeds,
wall time per experiment, the git commit and the date. :func:`collect_meta` fills in what the
current process knows (versions, hardware, commit); :func:`meta_from_records` completes it from
stored runs, so a report rebuilt later (``dropoutlab report``) describes the runs it shows, not
the machine that rebuilt it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dropoutlab import provenance
from dropoutlab.run_status import UNSUCCESSFUL_STATUSES

__all__ = [
    "ExperimentMeta",
    "ReportMeta",
    "collect_meta",
    "describe_hardware",
    "format_seconds",
    "hardware_summary",
    "meta_from_records",
    "short_commit",
    "software_versions",
]


@dataclass
class ExperimentMeta:
    """How one experiment's runs were obtained.

    Attributes:
        runs: Stored runs the analysis used.
        seeds: The distinct seeds among them.
        run_seconds: Sum of the runs' own wall times (what the experiment costs to train on
            this hardware, whether its runs ran one after another or interleaved with others').
        ran: Runs trained by this invocation; the others were already in the store.
        failed: Runs that failed or diverged.
    """

    runs: int = 0
    seeds: tuple[int, ...] = ()
    run_seconds: float = 0.0
    ran: int = 0
    failed: int = 0


@dataclass
class ReportMeta:
    """Everything the header of a report states."""

    budget: str
    command: str = ""
    created: str = ""  # ISO date-time the report was written
    git_commit: str = "unknown"
    hardware: str = "unknown"
    versions: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)  # data set -> where it was read from
    seeds: int | None = None  # seeds per configuration asked for (None: the budget's default)
    experiments: dict[str, ExperimentMeta] = field(default_factory=dict)
    rebuilt: bool = False  # True when `dropoutlab report` rebuilt it from stored runs
    wall_seconds: float | None = None  # the whole invocation: sweep, analyses and report
    # What the stored runs themselves were made with (filled by meta_from_records).
    run_commits: set[str] = field(default_factory=set)
    run_hardware: set[str] = field(default_factory=set)
    run_versions: dict[str, set[str]] = field(default_factory=dict)


def format_seconds(seconds: float | None) -> str:
    """``75.3`` → ``"1 min 15 s"``; ``None`` → ``"–"``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def short_commit(commit: str) -> str:
    """``"0123456789abcdef…-dirty"`` → ``"0123456789ab-dirty"`` (12 hex digits are plenty)."""
    sha, _, suffix = commit.partition("-")
    if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha):
        sha = sha[:12]
    return sha + (f"-{suffix}" if suffix else "")


def software_versions() -> dict[str, str]:
    """Versions of Python, torch, numpy, dropoutlab (as stored with every run) and matplotlib."""
    from importlib import metadata

    versions = {k: v or "not installed" for k, v in provenance.version_info().items()}
    try:
        versions["matplotlib"] = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:
        versions["matplotlib"] = "not installed"
    return versions


def describe_hardware(hardware: Any) -> str | None:
    """One line for a run's stored hardware dict (:func:`dropoutlab.provenance.hardware_info`), e.g.
    ``"AMD EPYC 7B13, 2 cores, Linux; GPU NVIDIA H200"``; ``None`` when nothing is known."""
    if hardware in (None, "", {}):
        return None
    if not isinstance(hardware, Mapping):
        return str(hardware)
    parts = [str(hardware.get("cpu") or hardware.get("machine") or "unknown CPU")]
    if hardware.get("cores"):
        parts.append(f"{hardware['cores']} cores")
    if hardware.get("system"):
        parts.append(str(hardware["system"]))
    text = ", ".join(parts)
    return text + (f"; GPU {hardware['cuda']}" if hardware.get("cuda") else "")


def hardware_summary() -> str:
    """This machine in the words :func:`describe_hardware` uses for stored runs."""
    return describe_hardware(provenance.hardware_info()) or "unknown"


def collect_meta(budget: str, *, seeds: int | None = None, command: str = "",
                 rebuilt: bool = False) -> ReportMeta:
    """A header for a report written by this process now."""
    return ReportMeta(
        budget=budget,
        command=command,
        created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        git_commit=provenance.git_describe(),
        hardware=hardware_summary(),
        versions=software_versions(),
        seeds=seeds,
        rebuilt=rebuilt,
    )


def meta_from_records(meta: ReportMeta, experiment: str, records: Sequence[Any], *,
                      ran: int = 0) -> ExperimentMeta:
    """Record one experiment's runs in ``meta`` and return its :class:`ExperimentMeta`.

    The commits, hardware and versions the stored runs were made with are gathered into
    ``meta.run_commits``/``run_hardware``/``run_versions``: runs kept from an earlier sweep
    may come from another machine or commit than the process writing the report, and the
    header says so.

    Args:
        meta: The header being built; updated in place.
        experiment: The experiment's name.
        records: Its stored runs (objects with ``seed``, ``seconds``, ``status``, ``hardware``,
            ``versions`` and ``git_commit`` attributes, as the store returns them).
        ran: How many of the runs this invocation trained.
    """
    info = ExperimentMeta(
        runs=len(records),
        seeds=tuple(sorted({int(r.seed) for r in records if getattr(r, "seed", None) is not None})),
        run_seconds=float(sum(float(getattr(r, "seconds", 0.0) or 0.0) for r in records)),
        ran=ran,
        failed=sum(1 for r in records if getattr(r, "status", "done") in UNSUCCESSFUL_STATUSES),
    )
    meta.experiments[experiment] = info
    for record in records:
        commit = getattr(record, "git_commit", None)
        if commit:
            meta.run_commits.add(str(commit))
        hardware = describe_hardware(getattr(record, "hardware", None))
        if hardware:
            meta.run_hardware.add(hardware)
        versions = getattr(record, "versions", None)
        if isinstance(versions, Mapping):
            for key, value in versions.items():
                meta.run_versions.setdefault(str(key), set()).add(str(value))
    return info
