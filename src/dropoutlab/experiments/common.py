"""Helpers every paper experiment shares: budgets, run grouping, mean ± std, verdict rules.

* **Conventions.** The paper's p is the *retention* probability; dropoutlab's configs take the
  *drop* probability. :func:`drop_from_retain` is the one place the experiments convert.
* **Budgets** (design.md): :func:`base_config` gives the recipe each budget starts from;
  experiment modules then set widths, data sizes and epochs in a small table at their top.
* **Aggregation.** Reports show mean ± std (n) over seeds (:class:`Stat`, sample std with n − 1).
* **Verdicts.** Findings are computed from numbers with two stated rules:
  "A beats B" when mean_A < mean_B (:func:`beats`), and "A is within noise of B" when
  |mean_A − mean_B| ≤ 2·sqrt(σ_A²/n_A + σ_B²/n_B) (:func:`within_noise`, two standard errors of
  the difference). With fewer than two seeds the noise rule cannot decide and says so.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.base import check_budget
from dropoutlab.report.content import Finding, PaperValue

__all__ = [
    "Stat",
    "base_config",
    "beats",
    "diff_cell",
    "drop_from_retain",
    "finished",
    "group_by",
    "metric",
    "new_figure",
    "no_dropout",
    "ordering_finding",
    "paper_dropout",
    "stat_of",
    "within_noise",
]


K = TypeVar("K", bound=Hashable)


def drop_from_retain(retain: float) -> float:
    """Drop probability for the paper's retention probability ``retain`` (§4).

    Raises:
        ValueError: ``retain`` is not in (0, 1].
    """
    if not 0.0 < retain <= 1.0:
        raise ValueError(f"`retain` must be in (0, 1], got retain={retain!r}")
    drop = 1 - retain  # Srivastava 2014 uses p = P(retain)
    return round(drop, 10)  # 1 - 0.9 = 0.09999999999999998 would give a distinct config hash


def paper_dropout(config: RunConfig) -> RunConfig:
    """``config`` with the paper's Bernoulli dropout: retention 0.8 input, 0.5 hidden (§A.4)."""
    return with_changes(config, {"model.dropout": "bernoulli",
                                 "model.drop_input": drop_from_retain(0.8),
                                 "model.drop_hidden": drop_from_retain(0.5)})


def no_dropout(config: RunConfig) -> RunConfig:
    """``config`` with every dropout rate at zero (the paper's standard net)."""
    return with_changes(config, {"model.dropout": "none", "model.drop_input": 0.0,
                                 "model.drop_hidden": 0.0})


def retain_from_drop(drop: float) -> float:
    """The paper's retention probability for a config's drop probability (for labels)."""
    return round(1 - drop, 10)


def base_config(budget: str) -> RunConfig:
    """The recipe a budget starts from; experiments change widths, data and epochs on top.

    * ``smoke``: scikit-learn's 8×8 digits, a couple of epochs — seconds, for tests.
    * ``quick``: real MNIST, 10k-example training subset (experiments may change it), Glorot
      initialisation, lr 0.3 decaying by 3 % per epoch, a shortened momentum ramp
      (0.5 → 0.95 over 1000 updates), so that nets of a few hundred units converge in tens of
      epochs on a CPU.
    * ``paper``: the paper's MNIST recipe (Appendix A, deepnet's example for Table 9): the full
      50k training split (10k validation kept for the report's validation curves), batch 100,
      lr 1.0 with ε_t = ε₀/(1 + t/10⁴), momentum 0.5 → 0.99 over 10⁵ updates, max-norm c = 3,
      and 2000 epochs = 10⁶ updates.
    """
    check_budget(budget)
    if budget == "smoke":
        return with_changes(RunConfig(), {
            "data.dataset": "digits",
            "model.hidden": (32, 32),
            "model.init": "xavier",  # deepnet's N(0, 0.01²) learns too slowly in 3 epochs
            "optim.batch_size": 32,
            "optim.lr": 0.1,
            "optim.momentum_end": 0.9,
            "optim.momentum_updates": 50,
            "epochs": 3,
            "checkpoint_every": 1000,
        })
    if budget == "quick":
        return with_changes(RunConfig(), {
            "data.dataset": "mnist",
            "data.train_size": 10_000,
            "model.hidden": (256, 256),
            "model.init": "xavier",  # measured: N(0, 0.01²) wastes the first epochs of a short run
            "optim.batch_size": 100,
            "optim.lr": 0.3,
            "optim.lr_schedule": "exponential",
            "optim.lr_decay": 0.97,
            "optim.momentum_start": 0.5,
            "optim.momentum_end": 0.95,
            "optim.momentum_updates": 1000,
            "epochs": 30,
            "eval_test_every": 1000,  # test error only after the last epoch: saves ~15 % of CPU
        })
    return with_changes(RunConfig(), {
        "data.dataset": "mnist",
        "data.train_size": None,
        "optim.batch_size": 100,
        "optim.lr": 1.0,
        "optim.lr_schedule": "inverse_t",
        "optim.lr_decay": 10_000.0,
        "optim.momentum_start": 0.5,
        "optim.momentum_end": 0.99,
        "optim.momentum_updates": 100_000,
        "optim.max_norm": 3.0,
        "epochs": 2000,
        "checkpoint_every": 20,
    })


# --------------------------------------------------------------------------- records


def finished(records: Iterable[Any]) -> list[Any]:
    """The records of runs that completed normally (status ``"done"``).

    Diverged, failed and interrupted runs are left out of every mean; :func:`status_note` says
    how many there were so the report does not hide them.
    """
    return [r for r in records if getattr(r, "status", None) == "done"]


def status_note(records: Sequence[Any]) -> str | None:
    """A note counting runs that did not finish normally, or None when all did."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        status = str(getattr(record, "status", "unknown"))
        if status != "done":
            counts[status] += 1
    if not counts:
        return None
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"left out of the statistics: {parts} run(s) of {len(records)}"


def mean_curve(records: Sequence[Any], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per-epoch mean and std of history column ``key`` over records (epochs all runs have).

    Returns:
        (epochs, means, stds); empty lists when no record has the column.
    """
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for record in records:
        for row in record.history or []:
            value = row.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                per_epoch[int(row["epoch"])].append(float(value))
    n = len(records)
    epochs = sorted(e for e, values in per_epoch.items() if len(values) == n)
    stats = [stat_of(per_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in stats], [s.std for s in stats]


def label_of(record: Any, experiment: str, valid: Iterable[str] | None = None) -> str | None:
    """The label ``experiment`` gave a run (its job name without ``" seed=N"``).

    Reads ``record.names[experiment]`` (the store keeps one label per experiment that asked
    for the run), else ``record.name``. Returns None when absent or not in ``valid``.
    """
    names = getattr(record, "names", None) or {}
    name = names.get(experiment) if isinstance(names, Mapping) else None
    if name is None:
        name = getattr(record, "name", None)
    if not isinstance(name, str):
        return None
    label = re.sub(r" seed=\d+$", "", name)
    if valid is not None and label not in set(valid):
        return None
    return label


def config_value(record: Any, dotted: str) -> Any:
    """A value of a record's stored config by dotted key, e.g. ``"model.drop_hidden"``."""
    node: Any = record.config
    for part in dotted.split("."):
        node = node[part]
    return tuple(node) if isinstance(node, list) else node


def metric(record: Any, key: str) -> float | None:
    """A record's metric ``key`` (from ``metrics``, else ``extras``), or None when absent."""
    for source in (getattr(record, "metrics", None), getattr(record, "extras", None)):
        if isinstance(source, Mapping) and isinstance(source.get(key), int | float):
            value = float(source[key])
            return value if math.isfinite(value) else None
    return None


def group_by(records: Iterable[Any], key: Callable[[Any], K | None]) -> dict[K, list[Any]]:
    """Group records by ``key(record)``; records whose key is None are left out."""
    groups: dict[K, list[Any]] = defaultdict(list)
    for record in records:
        k = key(record)
        if k is not None:
            groups[k].append(record)
    return dict(groups)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (n − 1; 0 when n = 1) and count of a set of values."""

    mean: float
    std: float
    n: int

    @property
    def sem(self) -> float:
        """Standard error of the mean."""
        return self.std / math.sqrt(self.n) if self.n else math.nan

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"

    def scaled(self, factor: float) -> Stat:
        """The same statistic in other units (e.g. ``factor=100`` for percent)."""
        return Stat(self.mean * factor, self.std * abs(factor), self.n)

    def short(self, digits: int = 2) -> str:
        """``mean ± std`` without the count."""
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def stat_of(values: Iterable[float]) -> Stat:
    """Mean ± sample std of ``values`` (NaN mean and n = 0 when empty)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Stat(mean, std, n)


def metric_stat(records: Iterable[Any], key: str) -> Stat:
    """:func:`stat_of` the metric ``key`` over the records that have it."""
    return stat_of(v for r in records if (v := metric(r, key)) is not None)


def beats(a: Stat, b: Stat) -> bool:
    """The stated rule for "A beats B" on an error: mean_A < mean_B."""
    return a.n > 0 and b.n > 0 and a.mean < b.mean


def noise_bound(a: Stat, b: Stat) -> float:
    """Two standard errors of the difference of means: 2·sqrt(σ_A²/n_A + σ_B²/n_B)."""
    return 2.0 * math.sqrt(a.std**2 / a.n + b.std**2 / b.n)


def within_noise(a: Stat, b: Stat) -> bool | None:
    """The stated rule for "within noise": |Δmean| ≤ 2·sqrt(σ_A²/n_A + σ_B²/n_B).

    Returns None (cannot decide) unless both sides have at least two values.
    """
    if a.n < 2 or b.n < 2:
        return None
    return abs(a.mean - b.mean) <= noise_bound(a, b)


def diff_cell(ours: Stat, paper: PaperValue | None) -> str | None:
    """The ``difference`` column: ours − paper in points, keeping the paper's (?) mark."""
    if paper is None or ours.n == 0 or math.isnan(ours.mean):
        return None
    return f"{ours.mean - paper.value:+.2f}{' (?)' if paper.uncertain else ''}"


def ours_cell(stat: Stat) -> str | None:
    """The ``ours (mean ± std, n)`` column, or None when there are no runs."""
    return str(stat) if stat.n else None


def ordering_finding(claim: str, ordered: Sequence[tuple[str, Stat]]) -> Finding:
    """Check that each labelled error is lower than the next one ("A beats B beats C …").

    ``holds`` is False as soon as one adjacent pair is out of order (the evidence names it),
    None when a group has no runs.
    """
    if any(stat.n == 0 for _, stat in ordered):
        missing = [label for label, stat in ordered if stat.n == 0]
        return Finding(claim, None, f"no finished runs for {', '.join(missing)}")
    violated = [
        f"{a} {sa.short()} ≥ {b} {sb.short()}"
        for (a, sa), (b, sb) in itertools.pairwise(ordered)
        if not beats(sa, sb)
    ]
    numbers = " < ".join(f"{label} {stat.short()} %" for label, stat in ordered)
    n = min(stat.n for _, stat in ordered)
    if violated:
        return Finding(claim, False, f"out of order: {'; '.join(violated)} (n={n})")
    return Finding(claim, True, f"{numbers} (n={n})")


def new_figure(ncols: int = 1, *, width: float = 5.0, height: float = 3.8) -> tuple[Any, Any]:
    """A matplotlib Figure (no pyplot global state) and its axes (an array when ncols > 1)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes
