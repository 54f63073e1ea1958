"""``dropoutlab tune``: does dropout help on *your* data, and at which retention p?

The paper's advice for p, the max-norm radius c and whether dropout pays at a given data size
is that they "must be determined with a validation set" (Srivastava et al. 2014, §7.3,
Appendix A). This module does that search on the sweep engine (same store, resume, local pool
or Ray, progress), inside a wall-time budget.

**Search space** (Appendix A; p is the paper's *retention*, configs take ``drop = 1 − p``):

* the baseline: no dropout, no max-norm, at the standard rate ``lr / lr_raise`` and at ``lr``
  (the better one on validation is the baseline);
* dropout nets: hidden retention p ∈ {0.4, 0.5, 0.6, 0.7, 0.8} (§7.3: flat for 0.4 ≤ p ≤ 0.8),
  input retention ∈ {0.8, 1.0} (§A.4), max-norm c ∈ {2, 3, 4} (§A.3, B.1), learning rate
  ``lr``, ``lr_raise`` times the standard one (§A.2: dropout nets want larger rates);
  optionally widths n/p (``scale_width``, §A.1's n/p rule);
* several seeds for the finalists; the choice is by **mean validation error**, never test error.

**Stopping runs that cannot win: successive halving** (Jamieson & Talwalkar 2016) with η = 3.
Rung 0 trains every candidate for E/9 epochs on seed 0; only the third with the lowest
validation error goes on to rung 1 (E/3 epochs; skipped when no more than :data:`FINALISTS`
are left); only the best third of those (at most :data:`FINALISTS`) is trained for the full
E epochs on every seed, beside the baseline. A candidate dropped at a rung had at least two
thirds of its rung ahead of it on validation.
The rule is our own rather than Optuna's or Ray Tune's: the grid is the paper's, small and
fixed, so a sampler adds nothing over trying all of it at rung 0, and a pruner that stops a
run in mid-flight leaves a half-finished run in the store; every run here is an ordinary,
finished, stored run, skipped on a re-run, on either executor. Short rungs favour nets that
learn fast (dropout nets need 2–3× longer, §A): the final rung trains to the full E.

**Time.** A one-epoch pilot of the baseline measures seconds per epoch (and per-run overhead)
on this machine with this many workers; E is then the largest number of epochs for which the
rungs fit the budget, re-planned after each rung from its measured speed. Planning reads run
times from the store, so a re-run plans the same rungs and trains nothing twice. The result
says what the budget covered.

**Test error** is never stored for a search run (the search task drops it). After the choice,
the recommended net's and the baseline's final weights are evaluated on the test split once.

A user with their own PyTorch model passes a builder ``fn(p, p_input) -> nn.Module`` to
:func:`tune_model` (see its docstring for what the function must be).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropoutlab.config import RunConfig, config_to_toml, with_changes
from dropoutlab.errors import ConfigError, DropoutlabError
from dropoutlab.experiments.common import Stat, noise_bound, stat_of, within_noise
from dropoutlab.sweeps import Job, Store, SweepOptions, run_sweep

__all__ = [
    "FINALISTS",
    "Candidate",
    "TuneResult",
    "TuneSpace",
    "final_task",
    "parse_time",
    "search_task",
    "tune",
    "tune_model",
]

log = logging.getLogger(__name__)

ETA = 3  # successive halving keeps the best 1/ETA of each rung
FINALISTS = 3  # dropout candidates trained to the full budget on every seed
SAFETY = 0.85  # plan to use this share of the remaining time (machines are noisy)
SEARCH_TASK = "dropoutlab.tune:search_task"
FINAL_TASK = "dropoutlab.tune:final_task"
EXPERIMENT = "tune"

Echo = Callable[[str], None]


# --------------------------------------------------------------------------- time budget


def parse_time(text: str | float | int) -> float:
    """``"20m"``, ``"90s"``, ``"1h30m"`` or a number of seconds → seconds.

    Raises:
        ConfigError: not a positive duration.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?",
                             spec)
        if not spec or parts is None or not any(parts.groups()):
            raise ConfigError(f"`--time` must be a duration like 20m, 90s or 1h30m, got "
                              f"{text!r}")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"`--time` must be a positive duration, got {text!r}")
    return seconds


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class TuneSpace:
    """What the search tries (Appendix A). Retentions are the paper's p (1 − drop).

    Attributes:
        retain_hidden: Hidden retention grid, each in (0, 1).
        retain_input: Input retention grid, each in (0, 1] (1.0: no input dropout).
        max_norms: Max-norm radii c for the dropout nets.
        lr_raise: Dropout nets train at ``lr``; the standard rate is ``lr / lr_raise``.
        scale_width: Hidden widths n/p for dropout nets (the n/p rule, §A.1; MLPs only).
        seeds: Seeds of every finalist and of the baseline (≥ 2 so the noise rule decides).
    """

    retain_hidden: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)
    retain_input: tuple[float, ...] = (0.8, 1.0)
    max_norms: tuple[float, ...] = (2.0, 3.0, 4.0)
    lr_raise: float = 3.0
    scale_width: bool = False
    seeds: int = 3

    def __post_init__(self) -> None:
        for name, values, high_ok in (("retain_hidden", self.retain_hidden, False),
                                      ("retain_input", self.retain_input, True)):
            if not values or not all(0 < v < 1 or (high_ok and v == 1) for v in values):
                bracket = "]" if high_ok else ")"
                raise ConfigError(f"`{name}` must be retentions in (0, 1{bracket}, got "
                                  f"{name}={values!r}")
        if not self.max_norms or not all(c > 0 for c in self.max_norms):
            raise ConfigError(f"`max_norms` must be radii > 0, got max_norms={self.max_norms!r}")
        if not math.isfinite(self.lr_raise) or self.lr_raise < 1:
            raise ConfigError(f"`lr_raise` must be a number >= 1, got lr_raise={self.lr_raise!r}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"`seeds` must be an integer >= 1, got seeds={self.seeds!r}")

    def coarse(self) -> TuneSpace:
        """The smallest grid still in the paper's ranges, for budgets too short for the full."""
        hidden = tuple(sorted({min(self.retain_hidden), max(self.retain_hidden)}))
        c = (sorted(self.max_norms)[len(self.max_norms) // 2],)
        return dataclasses.replace(self, retain_hidden=hidden, max_norms=c)


@dataclass(frozen=True)
class Candidate:
    """One point of the search: retentions (the paper's p), max-norm c, rate and widths."""

    retain_hidden: float
    retain_input: float
    max_norm: float | None
    lr: float
    hidden: tuple[int, ...]

    @property
    def is_baseline(self) -> bool:
        return self.retain_hidden == 1.0 and self.retain_input == 1.0 and self.max_norm is None

    @property
    def label(self) -> str:
        if self.is_baseline:
            return f"no dropout lr={self.lr:g}"
        return (f"retain {self.retain_hidden:g}/{self.retain_input:g} c={self.max_norm:g} "
                f"lr={self.lr:g}")

    def config(self, base: RunConfig, *, epochs: int, seed: int) -> RunConfig:
        """The run config of this candidate (drop = 1 − retain, §4's p is retention)."""
        drop_hidden = round(1 - self.retain_hidden, 10)
        drop_input = round(1 - self.retain_input, 10)
        changes: dict[str, Any] = {
            "model.drop_hidden": drop_hidden, "model.drop_input": drop_input,
            "model.dropout": ("none" if self.is_baseline and base.model.builder is None
                              else base.model.dropout if base.model.dropout != "none"
                              else "bernoulli"),
            "optim.max_norm": self.max_norm, "optim.lr": self.lr, "epochs": epochs,
            "seed": seed, "eval_test_every": max(epochs, base.eval_test_every),
            "early_stopping": None,
        }
        if base.model.builder is None:
            changes["model.hidden"] = self.hidden
        return with_changes(base, changes)


def candidates(base: RunConfig, space: TuneSpace) -> tuple[list[Candidate], list[Candidate]]:
    """(baselines, dropout candidates) for ``base`` over ``space``."""
    lr = base.optim.lr
    hidden = base.model.hidden
    baselines = [Candidate(1.0, 1.0, None, round(lr / space.lr_raise, 10), hidden)]
    if space.lr_raise != 1:
        baselines.append(Candidate(1.0, 1.0, None, lr, hidden))
    dropout = []
    for p in space.retain_hidden:
        widths = (tuple(math.ceil(n / p) for n in hidden) if space.scale_width else hidden)
        for p_in in space.retain_input:
            for c in space.max_norms:
                dropout.append(Candidate(p, p_in, c, lr, widths))
    return baselines, dropout


def _cost_factor(candidate: Candidate, base: RunConfig, n_in: int, n_out: int) -> float:
    """Relative cost of an epoch: the MLP's weight count over the baseline's (1 otherwise)."""
    if base.model.builder is not None or base.model.kind != "mlp":
        return 1.0

    def weights(widths: Sequence[int]) -> int:
        sizes = [n_in, *widths, n_out]
        return sum(a * b for a, b in itertools.pairwise(sizes))

    return weights(candidate.hidden) / weights(base.model.hidden)


# --------------------------------------------------------------------------- tasks


def _sealed(result: Any) -> dict[str, Any]:
    """The task's return value without any test number (the choice must never see one)."""
    metrics = {k: v for k, v in result.metrics().items() if not k.startswith("test")}
    history = [{k: v for k, v in row.items() if not k.startswith("test")}
               for row in result.history]
    return {"status": result.status, "metrics": metrics, "history": history}


def search_task(config: RunConfig, *, checkpoint_path: Path | None = None,
                resume: bool = False) -> dict[str, Any]:
    """Sweep task of rungs 0 and 1: train, return validation and training numbers only."""
    from dropoutlab.train import train

    result = train(config, checkpoint_path=checkpoint_path, resume=resume, progress=False)
    return _sealed(result)


def weights_path(checkpoint_path: Path) -> Path:
    """Where :func:`final_task` keeps a finalist's weights: beside its checkpoint."""
    return checkpoint_path.with_name(checkpoint_path.stem + ".weights.pt")


def final_task(config: RunConfig, *, checkpoint_path: Path | None = None,
               resume: bool = False) -> dict[str, Any]:
    """Sweep task of the final rung: as :func:`search_task`, and keep the final weights so the
    test error can be measured once, after the choice."""
    import os

    import torch

    from dropoutlab.train import train

    result = train(config, checkpoint_path=checkpoint_path, resume=resume, progress=False,
                   keep_model=True)
    if checkpoint_path is not None and result.model is not None:
        target = weights_path(Path(checkpoint_path))
        tmp = target.with_suffix(".tmp")
        torch.save(result.model.state_dict(), tmp)
        os.replace(tmp, target)  # a reader never sees half a file
    return _sealed(result)


# --------------------------------------------------------------------------- results


@dataclass
class RungResult:
    """One rung: its epochs and seeds, and each candidate's validation error."""

    name: str
    epochs: int
    seeds: tuple[int, ...]
    val: dict[Candidate, Stat] = field(default_factory=dict)
    train: dict[Candidate, Stat] = field(default_factory=dict)
    kept: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0  # estimated wall time of the rung (from the stored run times)


@dataclass
class TuneResult:
    """What :func:`tune` found; ``report`` is the HTML page, ``config_path`` the TOML file.

    ``recommended`` is the candidate with the lowest mean validation error in the final rung
    (the baseline when nothing beat it); ``test`` holds the test error of the recommended net
    and of the baseline, measured once after the choice (empty when the data has no test split).
    """

    base: RunConfig
    space: TuneSpace
    budget_seconds: float
    rungs: list[RungResult] = field(default_factory=list)
    baseline: Candidate | None = None
    recommended: Candidate | None = None
    recommended_config: RunConfig | None = None
    epochs: int = 0
    test: dict[str, Stat] = field(default_factory=dict)
    diagnosis: str = ""
    verdict: str = ""
    covered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None
    config_path: Path | None = None
    finalists: list[Candidate] = field(default_factory=list)
    runs: int = 0


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Speed:
    """Measured cost of one run: ``overhead + epochs × per_epoch × cost factor`` seconds."""

    per_epoch: float
    overhead: float


def _speed(records: Sequence[Any], factors: dict[str, float]) -> _Speed | None:
    per_epoch, overhead = [], []
    for r in records:
        if r.status != "done" or not r.history:
            continue
        trained = float(r.history[-1].get("seconds") or 0.0)
        epochs = len(r.history)
        per_epoch.append(trained / epochs / factors.get(r.config_hash, 1.0))
        overhead.append(max(0.0, float(r.seconds or 0.0) - trained))
    if not per_epoch:
        return None
    per_epoch.sort()
    overhead.sort()
    return _Speed(per_epoch[len(per_epoch) // 2], overhead[len(overhead) // 2])


def _wall(costs: Sequence[float], workers: int) -> float:
    """Estimated wall time of runs on ``workers`` slots (longest first onto the least loaded)."""
    slots = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        slots[slots.index(min(slots))] += cost
    return max(slots) if costs else 0.0


def _rung_epochs(epochs: int) -> tuple[int, int]:
    e0 = max(1, round(epochs / ETA**2))
    e1 = max(e0, round(epochs / ETA))
    return e0, e1


def _keep(n: int) -> int:
    return max(1, math.ceil(n / ETA))


@dataclass(frozen=True)
class _Plan:
    epochs: int
    space: TuneSpace
    seconds: float


def _plan(speed: _Speed, workers: int, remaining: float, space: TuneSpace,
          factors: Callable[[TuneSpace], tuple[list[float], list[float]]],
          max_epochs: int) -> _Plan:
    """The largest final epoch count E (≤ ``max_epochs``) whose rungs fit ``remaining``.

    ``factors(space)`` gives (baseline cost factors, dropout cost factors). When even E = 1
    does not fit, fewer seeds (down to 2) and then the coarse grid are tried; the smallest
    plan is returned when nothing fits (the result says it overran).
    """
    def cost(epochs: int, sp: TuneSpace) -> float:
        base_f, drop_f = factors(sp)
        e0, e1 = _rung_epochs(epochs)
        mean_f = sum(drop_f) / len(drop_f)
        run = lambda e, f: speed.overhead + e * speed.per_epoch * f  # noqa: E731
        total = _wall([run(e0, f) for f in base_f + drop_f], workers)
        k1 = _keep(len(drop_f))
        rung1 = e0 < e1 < epochs and k1 > FINALISTS
        if rung1:
            total += _wall([run(e1, mean_f)] * k1, workers)
        finalists = min(FINALISTS, _keep(k1) if rung1 else k1)
        curve = max(0, len(sp.retain_hidden) - 1)
        finals = ([run(epochs, mean_f)] * (finalists * sp.seeds + curve)
                  + [run(epochs, base_f[0])] * sp.seeds)
        return total + _wall(finals, workers)

    tries = [space]
    if space.seeds > 2:
        tries.append(dataclasses.replace(space, seeds=2))
    tries.append(tries[-1].coarse())
    budget = remaining * SAFETY
    for sp in tries:
        if cost(1, sp) > budget:
            continue
        low, high = 1, max_epochs
        while low < high:  # the cost grows with E: bisect for the largest that fits
            mid = (low + high + 1) // 2
            if cost(mid, sp) <= budget:
                low = mid
            else:
                high = mid - 1
        return _Plan(low, sp, cost(low, sp))
    return _Plan(1, tries[-1], cost(1, tries[-1]))


# --------------------------------------------------------------------------- the search


def _jobs(cands: Sequence[Candidate], base: RunConfig, epochs: int, seeds: Sequence[int],
          task: str, rung: str) -> dict[Job, Candidate]:
    jobs = {}
    for cand in cands:
        for seed in seeds:
            config = cand.config(base, epochs=epochs, seed=seed)
            jobs[Job(EXPERIMENT, f"{rung} {cand.label} epochs={epochs} seed={seed}", config,
                     task)] = cand
    return jobs


def _run(jobs: dict[Job, Candidate], options: SweepOptions) -> dict[str, Any]:
    summary = run_sweep(list(jobs), options)
    if summary.stopped:
        raise KeyboardInterrupt
    with Store.open_readonly(options.store) as db:
        keys = {job.key for job in jobs}
        records = {r.config_hash: r for r in db.records(experiment=EXPERIMENT)
                   if r.config_hash in keys}
    return records


def _val(record: Any) -> float | None:
    value = (record.metrics or {}).get("val_error")
    return float(value) if record.status == "done" and value is not None else None


def _collect(rung: RungResult, jobs: dict[Job, Candidate], records: dict[str, Any],
             workers: int) -> None:
    vals: dict[Candidate, list[float]] = {}
    trains: dict[Candidate, list[float]] = {}
    costs = []
    for job, cand in jobs.items():
        record = records.get(job.key)
        if record is None:
            continue
        costs.append(float(record.seconds or 0.0))
        value = _val(record)
        if value is not None:
            vals.setdefault(cand, []).append(value)
            train = (record.metrics or {}).get("train_error")
            if train is not None:
                trains.setdefault(cand, []).append(float(train))
    rung.val = {c: stat_of(v) for c, v in vals.items()}
    rung.train = {c: stat_of(v) for c, v in trains.items()}
    rung.seconds = _wall(costs, workers)


def _ranked(rung: RungResult, among: Sequence[Candidate]) -> list[Candidate]:
    scored = [c for c in among if c in rung.val and rung.val[c].n]
    return sorted(scored, key=lambda c: (rung.val[c].mean, c.label))


def _input_output(base: RunConfig) -> tuple[int, int]:
    from dropoutlab.data import read_splits

    raw = read_splits(base.data)
    return int(math.prod(raw.input_shape)), raw.num_classes


def _workers(options: SweepOptions) -> int:
    if options.workers is not None:
        return options.workers
    import os

    return max(1, (os.cpu_count() or 1) // options.threads_per_run)


def tune(base: RunConfig, *, time_budget: float | str, space: TuneSpace | None = None,
         max_epochs: int | None = None, sweep: SweepOptions | None = None,
         out_dir: str | Path | None = None, command: str = "",
         echo: Echo | None = None) -> TuneResult:
    """Search whether and how dropout helps ``base``'s data and net within ``time_budget``.

    See the module docstring for the procedure. ``base`` supplies the data, the net (widths,
    or ``model.builder``), the recipe and ``optim.lr`` (the dropout nets' rate).

    Args:
        base: The run config to start from (its dropout settings are replaced).
        time_budget: Wall time to spend, seconds or a string like ``"20m"``.
        space: The grid; default :class:`TuneSpace`.
        max_epochs: Most epochs of the final rung; default ``base.epochs``.
        sweep: Store, executor, workers, progress (the same as ``dropoutlab sweep``).
        out_dir: Report folder; default ``<store folder>/tune/<data name>``.
        command: The command line, for the report header.
        echo: Called with one line per step; default: logged.

    Returns:
        The :class:`TuneResult` (the report and the recommended TOML are written).

    Raises:
        ConfigError: a bad budget, grid or config.
        DataError: the data cannot be read.
        KeyboardInterrupt: Ctrl-C stopped a rung (a re-run resumes it).
    """
    started = time.perf_counter()
    say = echo or log.info
    budget = parse_time(time_budget)
    space = space or TuneSpace()
    sweep = sweep or SweepOptions()
    max_epochs = max_epochs or base.epochs
    if space.scale_width and (base.model.builder is not None or base.model.kind != "mlp"):
        raise ConfigError("`scale_width` (the n/p rule) needs the built-in MLP; a builder or "
                          "conv net sets its own widths")
    if base.model.kind == "autoencoder":
        raise ConfigError("tune chooses by classification error; model.kind='autoencoder' has "
                          "none")
    if base.model.kind == "convnet" and base.model.builder is None:
        raise ConfigError("tune varies model.drop_input/drop_hidden, which the built-in conv "
                          "net does not use (it has model.conv_drop); use model.kind='mlp', or "
                          "tune_model with a builder of your conv net")
    workers = _workers(sweep)
    n_in, n_out = _input_output(base)
    result = TuneResult(base=base, space=space, budget_seconds=budget)
    baselines, _ = candidates(base, space)

    def factors(sp: TuneSpace) -> tuple[list[float], list[float]]:
        b, d = candidates(base, sp)
        return ([_cost_factor(c, base, n_in, n_out) for c in b],
                [_cost_factor(c, base, n_in, n_out) for c in d])

    # Pilot: one epoch of the baseline on every worker, to measure this machine now.
    pilot_jobs = _jobs(baselines[:1], base, 1, range(workers), SEARCH_TASK, "pilot")
    say(f"tune: pilot, 1 epoch of the baseline on {workers} worker(s)")
    records = _run(pilot_jobs, sweep)
    speed = _speed(list(records.values()), {})
    if speed is None:
        raise DropoutlabError("the pilot runs did not finish; see `dropoutlab runs --experiment "
                              "tune --status failed`")
    pilot = RungResult("pilot", 1, tuple(range(workers)))
    _collect(pilot, pilot_jobs, records, workers)
    spent = pilot.seconds
    plan = _plan(speed, workers, budget - spent, space, factors, max_epochs)
    space = plan.space
    result.space = space
    baselines, dropout = candidates(base, space)
    epochs = plan.epochs
    e0, e1 = _rung_epochs(epochs)
    say(f"tune: plan E={epochs} epochs ({e0}/{e1}/{epochs} by rung), {len(dropout)} dropout "
        f"candidates, {space.seeds} seeds; {speed.per_epoch:.1f} s per epoch, estimated "
        f"{plan.seconds / 60:.1f} min of {budget / 60:.1f}")
    if plan.seconds > budget - spent:
        result.notes.append(f"the budget is too short for even one epoch per rung: the plan "
                            f"needs about {plan.seconds / 60:.1f} min of the "
                            f"{(budget - spent) / 60:.1f} min left")

    # Rung 0: every candidate (and both baselines), e0 epochs, seed 0.
    rung0 = RungResult("rung 0", e0, (0,))
    jobs0 = _jobs([*baselines, *dropout], base, e0, (0,), SEARCH_TASK, "rung0")
    say(f"tune: rung 0, {len(jobs0)} runs of {e0} epoch(s)")
    records = _run(jobs0, sweep)
    _collect(rung0, jobs0, records, workers)
    spent += rung0.seconds
    survivors = _ranked(rung0, dropout)[:_keep(len(dropout))]
    rung0.kept = list(survivors)
    result.rungs.append(rung0)
    ranked_base = _ranked(rung0, baselines)
    result.baseline = ranked_base[0] if ranked_base else baselines[0]

    # Re-plan from rung 0's measured speed; E only ever shrinks, so earlier rungs stay valid.
    speed = _speed(list(records.values()),
                   {job.key: _cost_factor(c, base, n_in, n_out) for job, c in jobs0.items()}
                   ) or speed
    epochs = min(epochs, _replan_final(speed, workers, budget - spent, space, survivors,
                                       base, n_in, n_out, e1, result.baseline, epochs))
    jobs1: dict[Job, Candidate] = {}
    if e0 < e1 < epochs and len(survivors) > FINALISTS:  # rung 1 only when it can prune
        rung1 = RungResult("rung 1", e1, (0,))
        jobs1 = _jobs(survivors, base, e1, (0,), SEARCH_TASK, "rung1")
        say(f"tune: rung 1, {len(jobs1)} runs of {e1} epochs")
        records = _run(jobs1, sweep)
        _collect(rung1, jobs1, records, workers)
        spent += rung1.seconds
        survivors = _ranked(rung1, survivors)[:_keep(len(survivors))]
        rung1.kept = list(survivors[:FINALISTS])
        result.rungs.append(rung1)
        speed = _speed(list(records.values()),
                       {job.key: _cost_factor(c, base, n_in, n_out) for job, c in jobs1.items()}
                       ) or speed
        epochs = max(e1, _replan_final(speed, workers, budget - spent, space, survivors,
                                       base, n_in, n_out, e1, result.baseline, epochs))
    finalists = survivors[:FINALISTS]

    # Final rung: finalists and baseline on every seed; the retention curve on seed 0.
    seeds = tuple(range(space.seeds))
    lead = finalists[0]
    curve = [dataclasses.replace(lead, retain_hidden=p, hidden=_widths(base, space, p))
             for p in space.retain_hidden]
    final = RungResult("final", epochs, seeds)
    jobs_f = _jobs([result.baseline, *finalists], base, epochs, seeds, FINAL_TASK, "final")
    jobs_curve = _jobs(curve, base, epochs, (0,), FINAL_TASK, "final")
    all_final = {**jobs_curve, **jobs_f}
    say(f"tune: final rung, {len({j.key for j in all_final})} runs of {epochs} epochs "
        f"({len(finalists)} finalist(s) and the baseline × {len(seeds)} seeds, retention "
        "curve)")
    records = _run(all_final, sweep)
    _collect(final, jobs_f, records, workers)
    curve_rung = RungResult("curve", epochs, (0,))
    _collect(curve_rung, {j: c for j, c in all_final.items() if j.config.seed == 0}, records,
             workers)
    spent += _wall([float(r.seconds or 0.0) for r in records.values()], workers)
    result.rungs.append(final)
    result.epochs = epochs

    # The choice: lowest mean validation error among the final rung's candidates.
    contenders = [c for c in [result.baseline, *finalists] if c in final.val]
    if not contenders:
        raise DropoutlabError("no run of the final rung finished; see `dropoutlab runs "
                              "--experiment tune --status failed`")
    chosen = min(contenders, key=lambda c: (final.val[c].mean, c.label))
    result.recommended = chosen
    result.recommended_config = dataclasses.replace(
        chosen.config(base, epochs=epochs, seed=0), eval_test_every=base.eval_test_every)

    # Test error: once, now, for the recommendation and the baseline.
    for name, cand in (("recommended", chosen), ("baseline", result.baseline)):
        if name == "baseline" and cand == chosen:
            if "recommended" in result.test:
                result.test["baseline"] = result.test["recommended"]
            continue
        errors = [e for job, c in jobs_f.items() if c == cand
                  if (e := _test_error(job, sweep.checkpoints)) is not None]
        if errors:
            result.test[name] = stat_of(errors)
    result.seconds = time.perf_counter() - started
    result.finalists = list(finalists)
    result.runs = len({*pilot_jobs, *jobs0, *(jobs1 if len(result.rungs) > 2 else {}),
                       *all_final})
    _describe(result, rung0, final, curve_rung, all_final, records, dropout, finalists, budget,
              spent, workers)
    report_dir = Path(out_dir) if out_dir is not None else default_out_dir(sweep.store, base)
    result.report = _write_report(result, final, curve_rung, all_final, records, report_dir,
                                  command)
    result.config_path = report_dir / "recommended.toml"
    say(f"tune: {result.diagnosis}")
    return result


def _write_report(result: TuneResult, final: RungResult, curve: RungResult,
                  jobs: dict[Job, Candidate], records: dict[str, Any], out: Path,
                  command: str) -> Path:
    """Hand the numbers to :mod:`dropoutlab.report.tune` and write the report."""
    from dropoutlab.report import collect_meta, use_agg
    from dropoutlab.report.tune import Curve, TuneSummary, write_tune_report

    assert result.baseline is not None and result.recommended is not None
    use_agg()
    chosen, baseline = result.recommended, result.baseline
    def fmt(st: Stat | None) -> str | None:
        if st is None or not st.n:
            return None
        return f"{st.mean:.2f} (n=1)" if st.n == 1 else str(st)

    rows = []
    for rung in result.rungs[:-1]:
        for cand in sorted(rung.val, key=lambda c: (rung.val[c].mean, c.label)):
            rows.append((rung.name, cand.label, rung.epochs, len(rung.seeds),
                         fmt(rung.val[cand]), fmt(rung.train.get(cand)),
                         "yes" if cand in rung.kept or cand == baseline else ""))
    by_val = sorted(result.finalists,
                    key=lambda c: (final.val[c].mean if c in final.val else math.inf, c.label))
    final_rows = [(c.label, fmt(final.val.get(c)), fmt(final.train.get(c)),
                   "✓" if c == chosen else "") for c in [baseline, *by_val]]
    test_rows = [(f"{name}: {cand.label}", fmt(result.test.get(name)))
                 for name, cand in (("recommended", chosen), ("baseline", baseline))
                 if name in result.test and not (name == "baseline" and cand == chosen)]
    lead = result.finalists[0] if result.finalists else chosen
    same_family = [c for c in curve.val if not c.is_baseline
                   and (c.retain_input, c.max_norm, c.lr) == (lead.retain_input, lead.max_norm,
                                                              lead.lr)]
    point = lambda st: None if st is None or not st.n else st.mean  # noqa: E731
    retention = [(c.retain_hidden, point(curve.train.get(c)), point(curve.val.get(c)))
                 for c in same_family]
    shown = [baseline] + ([chosen] if chosen != baseline else result.finalists[:1])
    curves = []
    for cand in shown:
        recs = [records[j.key] for j, c in jobs.items() if c == cand and j.key in records
                and records[j.key].status == "done" and j.config.seed in final.seeds]
        if recs:
            epochs, train, val, onset = _onset(recs)
            curves.append(Curve(cand.label, epochs, train, val, onset))
    data = result.base.data
    name = data.path if data.path else data.dataset
    notes = list(result.notes)
    if data.path:
        from dropoutlab.data.user import summarize

        info = summarize(data.path, target=data.target)
        notes.append(f"Data: {info.path} (SHA-256 {info.sha256}); {info.sizes['train']} "
                     f"training, {info.sizes['val']} validation, {info.sizes['test']} test "
                     f"rows, {info.num_features} features, {len(info.classes)} classes; "
                     f"validation split: {info.validation}.")
        if not info.sizes["test"]:
            notes.append("The file has no test split: no test error was measured.")
    notes.append("The search never stores a test error: its task drops the training loop's "
                 "test numbers, and the test split is evaluated once, after the choice, on the "
                 "kept weights of the recommended net and of the baseline.")
    summary = TuneSummary(
        data=name, recommendation=_recommendation_text(result),
        diagnosis=result.diagnosis, verdict=result.verdict, covered=result.covered,
        rule=("Successive halving, η = 3: rung 0 trains every candidate for E/9 epochs on "
              "seed 0; the best third by validation error goes on to E/3 epochs (rung 1); the "
              f"best third of those (at most {FINALISTS}) trains for E epochs on every seed "
              "beside the better of the two baselines."),
        candidates=rows, final=final_rows, test=test_rows, retention=retention,
        baseline_point=(point(curve.train.get(baseline)), point(curve.val.get(baseline))),
        retention_caption=(f"Seed 0, {final.epochs} epochs, input retention "
                           f"{lead.retain_input:g}, max-norm c = {lead.max_norm}, lr "
                           f"{lead.lr:g}; training error is the weight-scaled net on the "
                           "whole training split. Figure 9a has no input dropout."),
        curves=curves, config_toml=recommended_toml(result), notes=notes)
    meta = collect_meta(f"tune --time {result.budget_seconds / 60:.1f} min",
                        seeds=result.space.seeds, command=command)
    meta.data[str(name)] = str(name)
    meta.wall_seconds = result.seconds
    return write_tune_report(summary, out, meta)


def _recommendation_text(result: TuneResult) -> str:
    chosen = result.recommended
    assert chosen is not None
    if chosen.is_baseline:
        text = f"no dropout (lr {chosen.lr:g}), {result.epochs} epochs"
    else:
        text = (f"hidden retention p = {chosen.retain_hidden:g} (drop "
                f"{1 - chosen.retain_hidden:.2g}), input retention {chosen.retain_input:g}, "
                f"max-norm c = {chosen.max_norm:g}, lr {chosen.lr:g}, {result.epochs} epochs"
                + (f", widths {list(chosen.hidden)}" if result.space.scale_width else ""))
    if not chosen.is_baseline and result.verdict in ("within noise", "undecided"):
        text += (" (lowest mean validation error, but within noise of the baseline: the net "
                 "without dropout is as good a choice)")
    for name in ("recommended", "baseline"):
        if name in result.test and not (name == "baseline" and result.baseline == chosen):
            text += f"; test error {name} {result.test[name]} %"
    return text


def _widths(base: RunConfig, space: TuneSpace, p: float) -> tuple[int, ...]:
    return (tuple(math.ceil(n / p) for n in base.model.hidden) if space.scale_width
            else base.model.hidden)


def _replan_final(speed: _Speed, workers: int, remaining: float, space: TuneSpace,
                  survivors: Sequence[Candidate], base: RunConfig, n_in: int, n_out: int,
                  e1: int, baseline: Candidate, cap: int) -> int:
    """The largest final E whose remaining rungs fit ``remaining`` at the measured speed."""
    budget = remaining * SAFETY
    finalists = survivors[:FINALISTS] if len(survivors) <= FINALISTS else survivors[
        :max(1, min(FINALISTS, _keep(len(survivors))))]
    f_mean = (sum(_cost_factor(c, base, n_in, n_out) for c in survivors) / len(survivors)
              if survivors else 1.0)
    f_base = _cost_factor(baseline, base, n_in, n_out)

    def cost(epochs: int) -> float:
        run = lambda e, f: speed.overhead + e * speed.per_epoch * f  # noqa: E731
        total = 0.0
        if len(survivors) > FINALISTS and e1 < epochs:
            total += _wall([run(e1, f_mean)] * len(survivors), workers)
        finals = ([run(epochs, f_mean)] * (len(finalists) * space.seeds
                                           + len(space.retain_hidden) - 1)
                  + [run(epochs, f_base)] * space.seeds)
        return total + _wall(finals, workers)

    epochs = 1
    for e in range(1, cap + 1):
        if cost(e) > budget:
            break
        epochs = e
    return epochs


def _test_error(job: Job, checkpoints: Path) -> float | None:
    """The test error (%) of a finished final-rung run, from its kept weights (else retrained).

    This is the only place tune reads the test split.
    """
    import torch

    from dropoutlab import data as data_module
    from dropoutlab.models import build_model
    from dropoutlab.train import evaluate, train

    config = job.config
    dataset = data_module.load(config.data, seed=config.seed, device=config.device)
    if len(dataset.test_y) == 0:
        return None
    path = weights_path(checkpoints / f"{job.key}.pt")
    if path.is_file():
        model = build_model(config.model, dataset.input_shape, dataset.num_classes)
        state = torch.load(path, map_location=config.device, weights_only=True)
        model.load_state_dict(state)
        model = model.to(config.device)
    else:  # weights gone (another machine, cleaned up): the same seed trains the same net
        retrained = train(config, progress=False, keep_model=True).model
        assert retrained is not None  # keep_model=True
        model = retrained
    return evaluate(model, dataset.test_x, dataset.test_y)[1]


def default_out_dir(store: Path, base: RunConfig) -> Path:
    """``<store folder>/tune/<data name>``: the data set's name or the file's stem."""
    name = Path(base.data.path).stem if base.data.path else base.data.dataset
    return Path(store).parent / "tune" / re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _onset(records: Sequence[Any]) -> tuple[list[int], list[float], list[float], int | None]:
    """Epochs, mean training and validation error of ``records``, and their overfitting onset
    (:func:`dropoutlab.results.diagnose` on the mean curve)."""
    from dropoutlab.results import diagnose

    rows: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        for row in r.history or []:
            rows.setdefault(int(row["epoch"]), []).append(row)
    epochs = sorted(e for e, rs in rows.items() if len(rs) == len(records))
    mean = lambda e, k: sum(float(x[k]) for x in rows[e]) / len(rows[e])  # noqa: E731
    history = [{"epoch": e, "val_error": mean(e, "val_error"), "val_loss": mean(e, "val_loss")}
               for e in epochs if all(x.get("val_loss") is not None for x in rows[e])]
    onset = diagnose(history)["overfitting_onset"] if history else None
    return (epochs, [mean(e, "train_error") for e in epochs],
            [mean(e, "val_error") for e in epochs], onset)


def _describe(result: TuneResult, rung0: RungResult, final: RungResult, curve: RungResult,
              jobs: dict[Job, Candidate], records: dict[str, Any],
              dropout: Sequence[Candidate], finalists: Sequence[Candidate], budget: float,
              spent: float, workers: int) -> None:
    """Fill in the diagnosis, the verdict and what the budget covered."""
    assert result.baseline is not None and result.recommended is not None
    b = final.val.get(result.baseline)
    best_drop = min((c for c in finalists if c in final.val),
                    key=lambda c: final.val[c].mean, default=None)
    result.covered = [
        f"time budget {budget / 60:.1f} min; used {result.seconds / 60:.1f} min wall "
        f"(the stored run times pack into {spent / 60:.1f} min on {workers} worker(s))",
        f"{len(dropout)} dropout candidates (hidden retention "
        f"{', '.join(f'{p:g}' for p in result.space.retain_hidden)}; input retention "
        f"{', '.join(f'{p:g}' for p in result.space.retain_input)}; max-norm c "
        f"{', '.join(f'{c:g}' for c in result.space.max_norms)}) and "
        f"{sum(1 for c in rung0.val if c.is_baseline)} baselines at rung 0",
        *(f"{r.name}: {len(r.val)} candidates × {len(r.seeds)} seed(s) × {r.epochs} epochs, "
          f"kept {len(r.kept)}" for r in result.rungs[:-1]),
        f"final: {len(finalists)} finalist(s) and the baseline × {len(final.seeds)} seeds × "
        f"{final.epochs} epochs, plus the retention curve "
        f"({len(result.space.retain_hidden)} retentions, seed 0)",
        f"{result.runs} runs in all (pilot included)",
    ]
    if b is None or best_drop is None:
        result.diagnosis = "undecided: the baseline or every finalist failed to finish"
        result.verdict = "undecided"
        return
    d = final.val[best_drop]
    b_train = final.train.get(result.baseline)
    gap = b.mean - b_train.mean if b_train else math.nan
    base_records = [records[j.key] for j, c in jobs.items()
                    if c == result.baseline and j.key in records]
    onset = _onset(base_records)[3]
    delta = b.mean - d.mean
    same = within_noise(b, d)
    noise = noise_bound(b, d) if same is not None else math.nan
    verdict = ("undecided" if same is None else "within noise" if same
               else "better" if delta > 0 else "worse")
    result.verdict = verdict
    spread = math.sqrt(b.std**2 / max(b.n, 1) + d.std**2 / max(d.n, 1))
    numbers = (f"validation error without dropout {b} %, with the best dropout net "
               f"({best_drop.label}) {d} %: improvement {delta:+.2f} ± {spread:.2f} points "
               f"(± the standard error of the difference; noise rule: |Δ| ≤ 2·SE = "
               f"{noise:.2f}, so {verdict})")
    fit = (f"without dropout the training error is {b_train.mean:.2f} % against "
           f"{b.mean:.2f} % on validation" if b_train else "")
    onset_text = (f", and its validation loss turns up from epoch {onset}" if onset else "")
    underfit = b_train is not None and gap < max(0.5, 0.25 * b.mean)
    if verdict == "better":
        result.diagnosis = (f"overfitting: {fit}{onset_text}; dropout closes part of that gap "
                            f"and wins beyond noise. {numbers}.")
    elif underfit:
        result.diagnosis = (f"underfitting: {fit} — the net does not even fit its training "
                            "data, so a regularizer cannot help; make it wider or train "
                            f"longer (dropout nets need 2–3× more epochs, §A). {numbers}.")
    elif verdict == "worse":
        result.diagnosis = (f"dropout not needed at this data size and budget: {fit}"
                            f"{onset_text}, but dropout is worse beyond noise. {numbers}.")
    else:
        result.diagnosis = (f"dropout not needed at this data size: {fit}{onset_text}; "
                            f"dropout's difference is {verdict}. {numbers}.")


# --------------------------------------------------------------------------- your own model


def _builder_name(build: Callable[..., Any]) -> str:
    module = getattr(build, "__module__", None)
    qualname = getattr(build, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(f"`build` must be a function defined at the top level of an "
                          f"importable module (worker processes import it by name), got "
                          f"{build!r}")
    if module == "__main__":
        raise ConfigError("`build` is defined in __main__ (a script or notebook); worker "
                          "processes cannot import it. Move it into a module on the Python "
                          "path (e.g. mynets.py) and import it from there")
    name = f"{module}:{qualname}"
    from dropoutlab.models import import_builder

    if import_builder(name) is not build:
        raise ConfigError(f"`build` {name!r} is not the object found under that name when "
                          "imported; define it at the top level of its module")
    return name


def tune_model(build: Callable[[float, float], Any], base: RunConfig, *,
               time_budget: float | str, space: TuneSpace | None = None,
               **kwargs: Any) -> TuneResult:
    """:func:`tune` for a user's own network, built by ``build(p, p_input)``.

    Requirements on ``build``:

    * a function at the top level of an importable module (not a lambda, closure, method of
      a local class, or anything in ``__main__``): sweep workers — forked or spawned
      processes, Ray workers on other machines — import it by its ``module:name``, which is
      stored in the run's config (``model.builder``) and so in its key;
    * ``build(p, p_input)`` takes the **drop** probabilities of hidden units and inputs (the
      paper's retention is 1 − p) and returns a fresh ``torch.nn.Module``, e.g. by
      :func:`dropoutlab.insert_dropout`; ``p = 0`` and ``p_input = 0`` must give the net
      without dropout (the baseline);
    * the module takes flattened inputs (N, D) of the data set and returns logits (N, C);
    * randomness: its initial weights may come from torch's global generator (it is called
      seeded from the run seed, inside ``torch.random.fork_rng``); use
      :class:`dropoutlab.Dropout` layers so masks come from the run's seeded generator.

    Max-norm (c) and the learning rate are applied by the training loop, as for the built-in
    nets. Widths are the builder's business (``scale_width`` is refused).
    """
    if not callable(build):
        raise ConfigError(f"`build` must be a function of (p, p_input), got {build!r}")
    configured = with_changes(base, {"model.builder": _builder_name(build)})
    return tune(configured, time_budget=time_budget, space=space, **kwargs)


def recommended_toml(result: TuneResult) -> str:
    """The recommended config as TOML that ``dropoutlab train --config`` reads as it is."""
    if result.recommended_config is None:
        raise DropoutlabError("the search has no recommendation")
    return config_to_toml(result.recommended_config)
