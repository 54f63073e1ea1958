"""Helpers every paper experiment shares: budgets, run grouping, mean ± std, verdict rules.

* **Conventions.** The paper's p is the *retention* probability; dropoutlab's configs take the
  *drop* probability. :func:`drop_from_retain` is the one place the experiments convert.
* **Budgets** (design.md): :func:`base_config` gives the recipe each budget starts from;
  experiment modules then set widths, data sizes and epochs in a small table at their top.
* **Aggregation.** Reports show mean ± std (n) over seeds (:class:`Stat`, sample std with n − 1).
* **Verdicts** (:func:`compare`, the one rule every comparative finding uses). With
  gap = mean_B − mean_A on an error (positive: A is lower) and the noise bound
  2·sqrt(σ_A²/n_A + σ_B²/n_B) (two standard errors of the difference), "A beats B" *holds*
  when gap > bound, is *contradicted* when gap < −bound, and is *within noise* otherwise, with
  the seeds per side that would separate the observed means at the observed spread. With fewer
  than two seeds on a side the noise is unknown and the outcome is *open*. With no true
  difference, the rule calls one of the two beyond-noise outcomes about 12 % of the time at
  n = 3 seeds a side (Welch's t, ≈ 4 degrees of freedom, |t| > 2) and about 5 % for large n.
  An ordering (A < B < C …) is judged pair by pair (:func:`ordering_finding`).
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
from dropoutlab.report.content import (
    CONTRADICTED,
    HOLDS,
    OPEN,
    WITHIN_NOISE,
    Finding,
    PaperValue,
    Premise,
)

__all__ = [
    "RISE_THRESHOLD",
    "Comparison",
    "Stat",
    "all_pairs_finding",
    "base_config",
    "compare",
    "comparison_finding",
    "converged_premise",
    "diff_cell",
    "drop_from_retain",
    "finished",
    "group_by",
    "kept_units_premise",
    "metric",
    "new_figure",
    "no_dropout",
    "ordering_finding",
    "overfits_premise",
    "paper_dropout",
    "rise_and_onset",
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


@dataclass(frozen=True)
class Comparison:
    """The verdict of :func:`compare` on "A beats B" (lower error), with its numbers."""

    outcome: str  # HOLDS, CONTRADICTED, WITHIN_NOISE or OPEN (report.content)
    gap: float  # mean_B − mean_A: positive when A is lower
    bound: float  # 2 standard errors of the difference (NaN when a side has < 2 seeds)
    seeds_needed: int | None  # per side, to separate a within-noise gap at the observed spread

    def text(self, digits: int = 2) -> str:
        """The gap, the bound and, within noise, the seeds that would separate them."""
        if self.outcome == OPEN:
            return f"gap {self.gap:+.{digits}f}; fewer than 2 seeds a side: noise unknown"
        text = f"gap {self.gap:+.{digits}f} vs noise ±{self.bound:.{digits}f}"
        if self.outcome == WITHIN_NOISE:
            text += (f", ~{self.seeds_needed} seeds a side to separate"
                     if self.seeds_needed is not None else ", no gap at all")
        return text


def compare(a: Stat, b: Stat) -> Comparison:
    """The stated rule for "A beats B" on an error (lower is better); see the module header.

    Returns:
        A :class:`Comparison`: *holds* when mean_B − mean_A > 2·sqrt(σ_A²/n_A + σ_B²/n_B),
        *contradicted* when it is below minus that, *within noise* between (with the seeds a
        side that would make the observed gap exceed the bound at the observed spread), *open*
        when a side has fewer than two values.
    """
    gap = b.mean - a.mean
    if a.n < 2 or b.n < 2 or math.isnan(gap):
        return Comparison(OPEN, gap, math.nan, None)
    bound = noise_bound(a, b)
    if gap > bound:
        return Comparison(HOLDS, gap, bound, None)
    if gap < -bound:
        return Comparison(CONTRADICTED, gap, bound, None)
    if gap == 0:
        return Comparison(WITHIN_NOISE, gap, bound, None)
    # 2·sqrt((σ_A² + σ_B²)/n) < |gap|  ⇔  n > 4(σ_A² + σ_B²)/gap²
    needed = math.floor(4 * (a.std**2 + b.std**2) / gap**2) + 1
    return Comparison(WITHIN_NOISE, gap, bound, max(needed, min(a.n, b.n) + 1))


def comparison_finding(claim: str, better: tuple[str, Stat], worse: tuple[str, Stat],
                       unit: str = " %") -> Finding:
    """The finding "``better`` beats ``worse``" judged by :func:`compare`, numbers as evidence."""
    (la, a), (lb, b) = better, worse
    if a.n == 0 or b.n == 0:
        missing = [label for label, s in (better, worse) if s.n == 0]
        return Finding.of(claim, OPEN, f"no finished runs for {', '.join(missing)}")
    result = compare(a, b)
    return Finding.of(claim, result.outcome,
                      f"{la} {a}{unit} vs {lb} {b}{unit}: {result.text()}")


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


def _combined(outcomes: set[str]) -> str:
    """Several pairs' outcomes as one: contradicted if any is, open if any is, holds if all do."""
    if CONTRADICTED in outcomes:
        return CONTRADICTED
    if OPEN in outcomes:
        return OPEN
    return HOLDS if outcomes == {HOLDS} else WITHIN_NOISE


def all_pairs_finding(claim: str, pairs: Sequence[tuple[tuple[str, Stat], tuple[str, Stat]]],
                      unit: str = " %") -> Finding:
    """The finding "each first beats its second", every pair judged by :func:`compare`.

    It *holds* when every pair holds, is *contradicted* when any pair is, *open* when a pair
    cannot be judged, and *within noise* otherwise; the evidence gives each pair.
    """
    missing = sorted({label for pair in pairs for label, s in pair if s.n == 0})
    if missing or not pairs:
        return Finding.of(claim, OPEN, f"no finished runs for {', '.join(missing) or 'any row'}")
    judged = [(a, b, compare(a[1], b[1])) for a, b in pairs]
    parts = [f"{la} {sa.short()}{unit} vs {lb} {sb.short()}{unit}: {c.outcome} ({c.text()})"
             for (la, sa), (lb, sb), c in judged]
    counts = sorted({s.n for pair in pairs for _, s in pair})  # seeds a side (rows may differ)
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return Finding.of(claim, _combined({c.outcome for _, _, c in judged}),
                      "; ".join(parts) + f" (n={n})")


def ordering_finding(claim: str, ordered: Sequence[tuple[str, Stat]]) -> Finding:
    """Judge "A beats B beats C …" pair by pair with :func:`compare` (adjacent pairs).

    The ordering *holds* when every pair holds, is *contradicted* when any pair is, is *open*
    when a pair cannot be judged (fewer than two seeds), and is *within noise* otherwise; the
    evidence gives each pair's outcome.
    """
    if any(stat.n == 0 for _, stat in ordered):
        missing = [label for label, stat in ordered if stat.n == 0]
        return Finding.of(claim, OPEN, f"no finished runs for {', '.join(missing)}")
    pairs = [(a, b, compare(sa, sb)) for (a, sa), (b, sb) in itertools.pairwise(ordered)]
    outcome = _combined({c.outcome for _, _, c in pairs})
    numbers = ", ".join(f"{label} {stat.short()}" for label, stat in ordered)
    n = min(stat.n for _, stat in ordered)
    verdicts = "; ".join(f"{a} < {b}: {c.outcome} ({c.text()})" for a, b, c in pairs)
    return Finding.of(claim, outcome, f"{numbers} % (n={n}). {verdicts}")


# --------------------------------------------------------------------------- premises

RISE_THRESHOLD = 0.10  # validation loss 10 % above its minimum at the end: the net overfits


def rise_and_onset(epochs: Sequence[int], losses: Sequence[float]) -> tuple[float, int | None]:
    """Relative rise of the last loss over the minimum, and the minimum's epoch if it overfits.

    Returns:
        (rise, onset): ``rise = last / min − 1``; ``onset`` is the epoch of the minimum when
        ``rise > RISE_THRESHOLD``, else None.

    Raises:
        ValueError: empty or mismatched sequences.
    """
    if not losses or len(epochs) != len(losses):
        raise ValueError(f"`epochs` and `losses` must be non-empty and of equal length, got "
                         f"{len(epochs)} and {len(losses)}")
    best = min(range(len(losses)), key=lambda i: losses[i])
    rise = losses[-1] / losses[best] - 1.0 if losses[best] > 0 else 0.0
    return rise, (int(epochs[best]) if rise > RISE_THRESHOLD else None)


def overfits_premise(label: str, runs: Sequence[Any]) -> Premise:
    """"The no-dropout net overfits": its seed-mean validation loss ends more than
    :data:`RISE_THRESHOLD` above its minimum (the paper's nets are big enough to overfit)."""
    check = f"{label} overfits (validation loss rises after a minimum)"
    epochs, losses, _ = mean_curve(runs, "val_loss")
    if not losses:
        return Premise(check, None, "no validation curve stored")
    rise, onset = rise_and_onset(epochs, losses)
    best = epochs[losses.index(min(losses))]
    return Premise(check, onset is not None,
                   f"minimum at epoch {best} of {epochs[-1]}, last epoch {100 * rise:+.1f} % "
                   f"above it (rule > {100 * RISE_THRESHOLD:.0f} %)")


def converged_premise(groups: Mapping[str, Sequence[Any]]) -> Premise:
    """"The compared runs converged": for each group, the seed-mean validation error over the
    last quarter of epochs does not beat the quarter before it by :func:`compare` (the
    epochs' spread as the noise); a group that still improves beyond noise has not."""
    check = "the compared runs converged (validation error flat over the last two quarters)"
    judged: list[tuple[str, Comparison, float]] = []
    for label, runs in groups.items():
        _, errors, _ = mean_curve(runs, "val_error")
        quarter = len(errors) // 4
        if quarter < 2:
            continue
        last, before = stat_of(errors[-quarter:]), stat_of(errors[-2 * quarter:-quarter])
        judged.append((label, compare(last, before), before.mean))
    if not judged:
        return Premise(check, None, "no validation curves stored")
    label, worst, level = max(judged, key=lambda item: item[1].gap / max(item[2], 1e-12))
    slow = [name for name, c, _ in judged if c.outcome == HOLDS]
    measured = (f"largest fall from the third to the last quarter {worst.gap:+.2f} points "
                f"({100 * worst.gap / max(level, 1e-12):+.1f} %, {label}; noise "
                f"±{worst.bound:.2f})")
    if slow:
        measured += "; still improving beyond noise: " + ", ".join(slow)
    return Premise(check, not slow, measured)


def kept_units_premise(runs: Sequence[Any], paper_kept: int) -> Premise:
    """"Dropout nets respect n/p" (§A.1): the fewest units a dropout net keeps in a hidden
    layer, p·n, against the paper's design."""
    check = "dropout nets keep the paper's p·n units per hidden layer (n/p rule, §A.1)"
    dropped = [r for r in runs if config_value(r, "model.dropout") != "none"
               and config_value(r, "model.drop_hidden") > 0]
    kept = [round((1 - config_value(r, "model.drop_hidden")) * min(config_value(r, "model.hidden")))
            for r in dropped]
    if not kept:
        return Premise(check, None, "no dropout runs")
    return Premise(check, min(kept) >= paper_kept,
                   f"fewest kept: p·n = {min(kept)} (paper: {paper_kept})")


def new_figure(ncols: int = 1, *, width: float = 5.0, height: float = 3.8) -> tuple[Any, Any]:
    """A matplotlib Figure (no pyplot global state) and its axes (an array when ncols > 1)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes
