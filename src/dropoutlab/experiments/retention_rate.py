"""Effect of the retention probability p (§7.3, Figure 9 a and b).

The paper trains 784-2048-2048-2048-10 nets with hidden retention p ∈ {0.1, …, 0.9, 1.0} and
no input dropout, in two ways: (a) the number of hidden units n fixed, so small p thins the net
heavily and it underfits (training error high); test error is flat for 0.4 ≤ p ≤ 0.8 and rises
as p → 1; (b) p·n fixed (p·n = 256, 256, 512), so the expected number of kept units is the
same, and small p does much better (p = 0.1: 2.7 % → 1.7 %).

The quick budget uses two hidden layers, n = 1024 fixed and p·n = 128 (so at p = 0.1 the
p·n-fixed net has 1280 units, 1.25 × n, as the paper's 2560 vs 2048), on 5k examples. Measured
while choosing it: at p = 0.1 a 3 × 256 or 3 × 512 net does not train at all (chance error after
6 epochs, at lr 0.3, 0.1 or 0.03) — about 25–50 units kept per layer are too few — while
2 × 1024 (about 100 kept) reaches 18 % test error after 6 epochs on 5k examples and improving.

Rules, stated before the runs: "training error rises as retention falls" when the training
error at the smallest p exceeds that at every p ≥ 0.5 (each pair by ``common.compare``);
"test error is flat over 0.4 ≤ p ≤ 0.8" when the spread (max − min) of the seed means there is
at most 20 % of their average; "p·n fixed helps small p" when the test error at the smallest p
is lower with p·n fixed than with n fixed (``common.compare``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.base import GridExperiment
from dropoutlab.experiments.common import (
    Stat,
    all_pairs_finding,
    base_config,
    comparison_finding,
    config_value,
    converged_premise,
    drop_from_retain,
    finished,
    group_by,
    label_of,
    metric_stat,
    new_figure,
    ours_cell,
    overfits_premise,
    retain_from_drop,
    status_note,
)
from dropoutlab.experiments.paper_numbers import FIGURE9_PN_FIXED_SMALL_P
from dropoutlab.report.content import Analysis, Deviation, Figure, Finding, Table

__all__ = ["EXPERIMENT", "RetentionRate", "flat_spread"]

RETENTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PAPER_N = (2048, 2048, 2048)
PAPER_PN = (256, 256, 512)
FLAT_RANGE = (0.4, 0.8)
FLAT_TOLERANCE = 0.20
MODES = ("n fixed", "p·n fixed")

# budget → (n for "n fixed", p·n for "p·n fixed", retentions, changes)
_SCALE: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...], dict[str, Any]]] = {
    "smoke": ((64, 64), (16, 16), (0.1, 0.5, 1.0), {"epochs": 3}),
    "quick": ((1024, 1024), (128, 128), RETENTIONS, {"data.train_size": 5_000, "epochs": 20}),
    "paper": (PAPER_N, PAPER_PN, RETENTIONS, {}),
}


# Seeds of the two p = 0.1 rows at quick, which "p·n fixed helps small p" compares: at 3 seeds
# the n-fixed net's spread (σ ≈ 3.4 points, its thinned 102-unit layers sometimes stall) left
# the comparison within noise and the rule asked for about 6 a side; 8 leaves a margin. Set from
# that spread after that look, so the comparison has had two looks.
_ROW_SEEDS = {"quick": {"n fixed p=0.1": 8, "p·n fixed p=0.1": 8}}

_DEVIATIONS = {"quick": (
    Deviation("widths", "784-2048-2048-2048-10; p·n = 256, 256, 512",
              "784-1024-1024-10; p·n = 128, 128",
              "cost; measured: at p = 0.1 nets keeping 25–50 units a layer do not train, "
              "2 × 1024 (≈100 kept) does"),
    Deviation("data", "MNIST 50k", "a 5k subset", "cost: 20 grid points × 3 seeds"),
    Deviation("seeds", "not stated", "3 a row; 8 for the two p = 0.1 rows",
              "the noise rule asked for ~6 a side at the n-fixed net's 3-seed spread "
              "(within noise at 3 seeds: a second look)"),
    Deviation("epochs", "10⁶ updates", "20 epochs (1000 updates)", "cost"),
)}


def hidden_for(mode: str, retain: float, n: tuple[int, ...],
               pn: tuple[int, ...]) -> tuple[int, ...]:
    """Hidden widths for ``mode`` at retention ``retain``: ``n``, or ``pn / retain`` per layer."""
    if mode == "n fixed":
        return n
    return tuple(max(8, round(units / retain)) for units in pn)


def flat_spread(means: Sequence[float]) -> float:
    """(max − min) / average of ``means``: the flatness measure of the stated rule."""
    return (max(means) - min(means)) / (sum(means) / len(means))


def _retain(record: Any) -> float:
    return retain_from_drop(config_value(record, "model.drop_hidden"))


class RetentionRate(GridExperiment):
    """Figure 9: train and test error vs retention p, with n fixed and with p·n fixed."""

    name = "retention-rate"
    title = "Effect of the retention probability p"
    paper_ref = "Figure 9 a, b"
    deviation_table = _DEVIATIONS
    row_seeds = _ROW_SEEDS
    summary = "retention p = 0.1 … 1.0 with n fixed and p·n fixed: train and test error vs p"

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """Both modes × every p; no input dropout (§7.3); the budget's max-norm for all."""
        n, pn, retentions, changes = _SCALE[budget]
        base = with_changes(base_config(budget), {**changes, "model.drop_input": 0.0})
        return {f"{mode} p={p:g}": self._config(base, hidden_for(mode, p, n, pn), p)
                for mode in MODES for p in retentions}

    @staticmethod
    def _config(base: RunConfig, hidden: tuple[int, ...], p: float) -> RunConfig:
        dropout = "none" if p == 1.0 else "bernoulli"
        return with_changes(base, {"model.hidden": hidden,
                                   "model.dropout": dropout,
                                   "model.drop_hidden": drop_from_retain(p)})

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Figure 9 a and b (train and test error vs p), a table and three findings."""
        analysis = Analysis(self.name, self.title, self.paper_ref)
        runs = finished(records)
        curves: dict[str, dict[float, tuple[Stat, Stat]]] = {}
        for mode in MODES:
            in_mode = [r for r in runs if (label_of(r, self.name) or "").startswith(mode + " p=")]
            groups = group_by(in_mode, _retain)
            curves[mode] = {p: (metric_stat(g, "train_error"), metric_stat(g, "test_error"))
                            for p, g in sorted(groups.items())}
        fig, axes = new_figure(2)
        rows = []
        for ax, mode, sub in zip(axes, MODES, "ab", strict=True):
            ps = list(curves[mode])
            for which, style in ((1, "-o"), (0, "--s")):
                ax.errorbar(ps, [curves[mode][p][which].mean for p in ps],
                            yerr=[curves[mode][p][which].std for p in ps], fmt=style,
                            markersize=4, capsize=2,
                            label="test error" if which else "training error")
            ax.set(xlabel="probability of retaining a unit (p)", ylabel="classification error %",
                   title=f"({sub}) keeping {mode}")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            for p in ps:
                rows.append([mode, p, ours_cell(curves[mode][p][0]),
                             ours_cell(curves[mode][p][1])])
        analysis.figures.append(Figure(
            "figure9", "Train and test error vs retention p", fig,
            "Mean ± std over seeds; (a) hidden widths fixed, (b) p·n fixed (Figure 9)."))
        analysis.tables.append(Table(
            "figure9", "Errors by retention p", ["mode", "retention p",
                                                 "train error % (mean ± std, n)",
                                                 "test error % (mean ± std, n)"], rows,
            "Training error of the weight-scaled net on the whole training subset."))
        analysis.tables.append(self._paper_table(curves))
        analysis.findings += self._findings(curves)
        by_label = group_by(runs, lambda r: label_of(r, self.name))
        if by_label.get("n fixed p=1"):
            analysis.premises.append(overfits_premise("the no-dropout net (p = 1, n fixed)",
                                                      by_label["n fixed p=1"]))
        if by_label:
            analysis.premises.append(converged_premise(by_label))
        if runs:
            cfg = runs[0].config
            fixed = [r for r in runs if (label_of(r, self.name) or "").startswith("n fixed")]
            n_text = fixed[0].config["model"]["hidden"] if fixed else "?"
            analysis.notes.append(
                f"n fixed = {n_text} (paper: 2048 × 3); p·n fixed from the p = 1 net's widths "
                f"(paper: 256, 256, 512); {cfg['data']['dataset']} "
                f"train_size={cfg['data']['train_size']}, {cfg['epochs']} epochs; max-norm "
                f"{cfg['optim']['max_norm']}")
        if (note := status_note(records)) is not None:
            analysis.notes.append(note)
        return analysis

    @staticmethod
    def _paper_table(curves: dict[str, dict[float, tuple[Stat, Stat]]]) -> Table:
        rows: list[list[Any]] = []
        for mode, key in (("n fixed", "p=0.1, n fixed (test error %)"),
                          ("p·n fixed", "p=0.1, p·n fixed (test error %)")):
            stat = curves[mode].get(0.1, (None, Stat(math.nan, math.nan, 0)))[1]
            paper = FIGURE9_PN_FIXED_SMALL_P[key]
            rows.append([key, ours_cell(stat), paper,
                         f"{stat.mean - paper.value:+.2f}" if stat.n else None])
        pn = curves["p·n fixed"]
        if pn:
            best = min(pn, key=lambda p: pn[p][1].mean)
            paper = FIGURE9_PN_FIXED_SMALL_P["best retention p, p·n fixed"]
            rows.append(["best retention p, p·n fixed", best, paper, f"{best - paper.value:+.1f}"])
        return Table("figure9_paper", "Figure 9 numbers the paper states",
                     ["quantity", "ours (mean ± std, n)", "paper", "difference"], rows,
                     "Read from the paper's text about Figure 9.")

    @staticmethod
    def _findings(curves: dict[str, dict[float, tuple[Stat, Stat]]]) -> list[Finding]:
        findings = []
        fixed = curves["n fixed"]
        if not fixed:
            return [Finding("training error rises as retention falls", None, "no runs")]
        p_min = min(fixed)
        high = [p for p in fixed if p >= 0.5]
        findings.append(all_pairs_finding(
            "with n fixed, training error rises as retention falls",
            [((f"train error p={p:g}", fixed[p][0]), (f"p={p_min:g}", fixed[p_min][0]))
             for p in high]))
        flat = [p for p in fixed if FLAT_RANGE[0] <= p <= FLAT_RANGE[1]]
        if len(flat) >= 2:
            spread = flat_spread([fixed[p][1].mean for p in flat])
            findings.append(Finding(
                "with n fixed, test error is flat for 0.4 ≤ p ≤ 0.8",
                spread <= FLAT_TOLERANCE,
                f"spread {100 * spread:.0f} % of the mean (rule ≤ {100 * FLAT_TOLERANCE:.0f} %): "
                + ", ".join(f"p={p:g} {fixed[p][1].short()}" for p in flat)))
        pn = curves["p·n fixed"]
        if p_min in pn:
            findings.append(comparison_finding(
                f"keeping p·n fixed helps small p (p = {p_min:g})",
                ("test error with p·n fixed", pn[p_min][1]),
                ("with n fixed", fixed[p_min][1])))
        return findings


EXPERIMENT = RetentionRate()
