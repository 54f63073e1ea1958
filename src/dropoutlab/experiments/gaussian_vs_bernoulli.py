"""Bernoulli vs Gaussian multiplicative dropout noise (§10, Table 10).

Section 10 replaces the Bernoulli mask by Gaussian noise N(1, σ²) with σ = sqrt((1 − p)/p) for
each layer's retention p, which matches the inverted Bernoulli mask's mean (1) and variance
((1 − p)/p). On MNIST 2×1024 the paper reports 1.08 ± 0.04 % (Bernoulli) vs 0.95 ± 0.04 %
(Gaussian); the ± values are (?) in shared/paper.md.

Both variants share everything else (retention 0.8 input, 0.5 hidden, i.e. σ = 0.5 and 1.0,
max-norm, recipe); several seeds each, mean ± std. Below the paper budget the widths are
divided by the budget's factor (quick: 2, so 2×512).

Rule: "Gaussian is within noise of, or better than, Bernoulli" unless ``common.compare``
finds Gaussian worse beyond noise (then it is contradicted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.base import GridExperiment
from dropoutlab.experiments.common import (
    base_config,
    compare,
    config_value,
    converged_premise,
    diff_cell,
    drop_from_retain,
    finished,
    group_by,
    metric_stat,
    new_figure,
    ours_cell,
    status_note,
)
from dropoutlab.experiments.paper_numbers import TABLE10, TABLE10_STD
from dropoutlab.report.content import (
    CONTRADICTED,
    HOLDS,
    OPEN,
    Analysis,
    Deviation,
    Figure,
    Finding,
    Table,
)

__all__ = ["EXPERIMENT", "GaussianVsBernoulli"]

KINDS = {"Bernoulli": "bernoulli", "Gaussian": "gaussian"}
SEEDS = {"smoke": 1, "quick": 5, "paper": 5}  # "several seeds": more than the default three

_SCALE: dict[str, tuple[int, dict[str, Any]]] = {
    "smoke": (32, {"epochs": 3}),
    "quick": (2, {"data.train_size": 20_000, "epochs": 30}),
    "paper": (1, {}),
}


_DEVIATIONS = {"quick": (
    Deviation("widths", "2×1024", "2×512 (÷2)", "cost: 2 kinds × 5 seeds"),
    Deviation("data", "MNIST 50k", "a 20k subset", "cost"),
    Deviation("epochs", "10⁶ updates", "30 epochs (6000 updates)", "cost"),
)}


def _kind(record: Any) -> str | None:
    value = config_value(record, "model.dropout")
    return {v: k for k, v in KINDS.items()}.get(value)


class GaussianVsBernoulli(GridExperiment):
    """Table 10: the same 2-layer MNIST net with Bernoulli or Gaussian dropout noise."""

    name = "gaussian-vs-bernoulli"
    title = "Bernoulli vs Gaussian dropout"
    paper_ref = "Table 10"
    deviation_table = _DEVIATIONS
    summary = "2×1024 MNIST net with Bernoulli vs Gaussian noise (σ from each layer's p), seeds"

    def seed_count(self, budget: str) -> int:
        """Five seeds at quick and paper: Table 10 reports ± values."""
        return SEEDS[budget]

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """Two noise kinds."""
        divisor, changes = _SCALE[budget]
        base = with_changes(base_config(budget), {
            **changes, "model.hidden": (1024 // divisor, 1024 // divisor),
            "model.drop_input": drop_from_retain(0.8), "model.drop_hidden": drop_from_retain(0.5),
        })
        return {label: with_changes(base, {"model.dropout": kind})
                for label, kind in KINDS.items()}

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Table 10's MNIST rows beside the paper, per-seed dots, and the finding."""
        analysis = Analysis(self.name, self.title, self.paper_ref)
        groups = group_by(finished(records), _kind)
        stats = {label: metric_stat(groups.get(label, []), "test_error") for label in KINDS}
        rows = []
        for label in KINDS:
            key = f"MNIST 2×1024 {label}"
            rows.append([label, ours_cell(stats[label]), TABLE10[key], TABLE10_STD[key],
                         diff_cell(stats[label], TABLE10[key])])
        analysis.tables.append(Table(
            "table10", "Test error % with Bernoulli and Gaussian dropout (MNIST)",
            ["noise", "ours (mean ± std, n)", "paper", "paper ±", "difference"], rows,
            "Paper: Table 10, MNIST 2×1024; its ± values are (?)."))
        fig, ax = new_figure(width=4.5)
        for x, label in enumerate(KINDS):
            values = [r.metrics.get("test_error") for r in groups.get(label, [])]
            ax.scatter([x] * len(values), values, color="tab:blue", s=14, zorder=3)
            if stats[label].n:
                ax.errorbar([x + 0.15], [stats[label].mean], yerr=[stats[label].std],
                            fmt="o", color="black", capsize=3)
            ax.errorbar([x - 0.15], [TABLE10[f"MNIST 2×1024 {label}"].value],
                        yerr=[TABLE10_STD[f"MNIST 2×1024 {label}"].value], fmt="s",
                        color="tab:gray", capsize=3)
        ax.set_xticks([0, 1], list(KINDS))
        ax.set(ylabel="test error %", title="Table 10 (grey: paper; black: our mean ± std)")
        analysis.figures.append(Figure("table10", "Bernoulli vs Gaussian dropout", fig,
                                       "Blue dots: single seeds."))
        g, b = stats["Gaussian"], stats["Bernoulli"]
        if g.n and b.n:
            judged = compare(g, b)  # "or better": only Bernoulli better beyond noise contradicts
            outcome = judged.outcome if judged.outcome in (CONTRADICTED, OPEN) else HOLDS
            analysis.findings.append(Finding.of(
                "Gaussian dropout is within noise of, or better than, Bernoulli dropout", outcome,
                f"Gaussian {g} % vs Bernoulli {b} %: {judged.outcome} ({judged.text()})"))
        else:
            analysis.findings.append(Finding(
                "Gaussian dropout is within noise of, or better than, Bernoulli dropout", None,
                "needs finished runs of both kinds"))
        if groups:
            analysis.premises.append(converged_premise(groups))
        if records:
            cfg = records[0].config
            analysis.notes.append(
                f"hidden layers {'-'.join(map(str, cfg['model']['hidden']))} (paper: 2×1024); "
                f"{cfg['data']['dataset']} train_size={cfg['data']['train_size']}, "
                f"{cfg['epochs']} epochs")
        if (note := status_note(records)) is not None:
            analysis.notes.append(note)
        return analysis


EXPERIMENT = GaussianVsBernoulli()
