"""Effect of the data-set size (§7.4, Figure 10).

The paper trains 784-1024-1024-2048-10 nets, with dropout (retention 0.8 input, 0.5 hidden)
and without, on random subsets of MNIST's training set of 100, 500, 1K, 5K, 10K and 50K
examples. With 100 and 500 examples dropout gives no gain (the net overfits anyway); the gain
grows with the size, then shrinks at 50K (a "sweet spot"). The paper prints no numbers.

Subsets are stratified and drawn with the run seed (``data.train_size``), so seeds differ in
both the subset and the initialisation. Small subsets get more epochs so every run makes
enough updates; below the paper budget the batch is also smaller for them (at most a tenth of
the subset), which keeps ten updates per epoch without evaluating the validation set for every
single update. Quick keeps the paper's widths, with epochs per size chosen on validation; smoke
divides the widths by 32.

Rules (``common.compare`` on test error, gain = no dropout − dropout): "no gain at 100–500
examples" holds when no size there gains beyond noise, and is contradicted when one does; "a
gain at ≥ 5K" when dropout beats no dropout at every size ≥ 5K.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.base import GridExperiment
from dropoutlab.experiments.common import (
    Stat,
    all_pairs_finding,
    base_config,
    compare,
    config_value,
    converged_premise,
    finished,
    group_by,
    kept_units_premise,
    metric_stat,
    new_figure,
    no_dropout,
    noise_bound,
    ours_cell,
    overfits_premise,
    paper_dropout,
    status_note,
)
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

__all__ = ["EXPERIMENT", "SIZES", "DatasetSize", "schedule"]

SIZES = (100, 500, 1_000, 5_000, 10_000, 50_000)
PAPER_WIDTHS = (1024, 1024, 2048)
VARIANTS = ("no dropout", "dropout")

# budget → (width divisor, sizes, {size: epochs}, small-batch rule on?)
_SCALE: dict[str, tuple[int, tuple[int, ...], dict[int, int], bool]] = {
    "smoke": (32, (100, 500, 1097), {100: 10, 500: 4, 1097: 3}, True),
    # The paper's widths at every size (the ÷4 nets of earlier designs kept 128 units at
    # retention 0.5, below n/p, §A.1). Epochs per size, chosen on validation: one dropout run
    # per size (seed 0, bf16) trained 300 epochs (≤ 1K), 150 (5K), 100 (10K) or 60 (50K); each
    # size takes the first epoch count E whose last-quarter mean validation error is within 2 %
    # of that long run's last-quarter mean (its plateau): 86, 73, 75, 83, 81 and 45 epochs
    # (plateaus 19.4, 9.9, 7.4, 3.4, 2.5 and 1.35 %). Both variants train alike; the
    # no-dropout net at 50K had flattened by epoch 14 and overfits (validation loss +16 %).
    "quick": (1, SIZES, {100: 86, 500: 73, 1_000: 75, 5_000: 83, 10_000: 81, 50_000: 45},
              True),
    "paper": (1, SIZES, {100: 5000, 500: 3000, 1_000: 2000, 5_000: 1000, 10_000: 1000,
                         50_000: 2000}, False),
}
# Seeds of the two 50K rows at quick: in the 3-seed grid their gap (0.14 points, the smallest,
# as the paper's "sweet spot" has it) was within noise and the rule asked for about 4 a side; 6
# leaves a margin. Set from that spread after that look, so the 50K comparison has had two looks
# (the closing note of issue 15 gives both results).
_ROW_SEEDS = {"quick": {"no dropout N=50000": 6, "dropout N=50000": 6}}
# bf16 mixed precision where the CPU has it: the paper's widths cost about half as much, at
# errors within noise of fp32 (README).
_PRECISION = {"quick": "auto"}


_DEVIATIONS = {"quick": (
    Deviation("epochs", "10⁶ updates at every size", "86, 73, 75, 83, 81 and 45 epochs at "
              "100 … 50K examples; batch ≤ size/10",
              "chosen on validation: the first epoch count within 2 % of a long run's plateau "
              "(dropout net, seed 0); 10⁶ updates would cost hours a run"),
    Deviation("precision", "fp32 (a GPU)", "bf16 mixed precision where the CPU has it (auto)",
              "the paper's widths at half the cost, errors within noise of fp32 (README)"),
    Deviation("seeds", "not stated", "3 a row; 6 for the two 50K rows",
              "the noise rule asked for ~4 a side at the 3-seed spread of the 50K gain "
              "(within noise at 3 seeds: a second look)"),
)}


def schedule(budget: str, size: int) -> dict[str, Any]:
    """Epochs and batch size for a training subset of ``size`` examples at ``budget``."""
    _, _, epochs, small_batches = _SCALE[budget]
    batch = min(100, max(1, size // 10)) if small_batches else 100
    return {"epochs": epochs[size], "optim.batch_size": batch}


def _variant(record: Any) -> str:
    return "no dropout" if config_value(record, "model.dropout") == "none" else "dropout"


class DatasetSize(GridExperiment):
    """Figure 10: test error vs training-set size, with and without dropout."""

    name = "dataset-size"
    title = "Effect of the data-set size"
    paper_ref = "Figure 10"
    deviation_table = _DEVIATIONS
    row_seeds = _ROW_SEEDS
    summary = "100 … 50K training examples with/without dropout: test error vs size (log x)"

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """Sizes × {dropout, no dropout}."""
        divisor, sizes, _, _ = _SCALE[budget]
        base = with_changes(base_config(budget), {
            "model.hidden": tuple(max(16, w // divisor) for w in PAPER_WIDTHS),
            "precision": _PRECISION.get(budget, "fp32")})
        grid = {}
        for size in sizes:
            sized = with_changes(base, {"data.train_size": size, **schedule(budget, size)})
            for variant in VARIANTS:
                grid[f"{variant} N={size}"] = (paper_dropout(sized) if variant == "dropout"
                                               else no_dropout(sized))
        return grid

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Figure 10 (log-x test error vs size), a table of gains, and two findings."""
        analysis = Analysis(self.name, self.title, self.paper_ref)
        runs = finished(records)
        stats: dict[str, dict[int, Stat]] = {}
        for variant in VARIANTS:
            by_size = group_by([r for r in runs if _variant(r) == variant],
                               lambda r: int(config_value(r, "data.train_size")))
            stats[variant] = {n: metric_stat(g, "test_error") for n, g in sorted(by_size.items())}
        sizes = sorted(set(stats["dropout"]) & set(stats["no dropout"]))
        fig, ax = new_figure()
        for variant, style in zip(VARIANTS, ("--s", "-o"), strict=True):
            ns = list(stats[variant])
            ax.errorbar(ns, [stats[variant][n].mean for n in ns],
                        yerr=[stats[variant][n].std for n in ns], fmt=style, capsize=2,
                        markersize=4, label="with dropout" if variant == "dropout" else
                        "without dropout")
        ax.set(xscale="log", xlabel="data set size", ylabel="test error %",
               title="Figure 10: effect of the data-set size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        analysis.figures.append(Figure(
            "figure10", "Test error vs data-set size", fig,
            "Mean ± std over seeds; random stratified subsets of MNIST's training split."))
        rows = []
        for n in sizes:
            d, b = stats["dropout"][n], stats["no dropout"][n]
            rows.append([n, ours_cell(b), ours_cell(d), f"{b.mean - d.mean:+.2f}",
                         f"{noise_bound(d, b):.2f}" if d.n and b.n else None])
        analysis.tables.append(Table(
            "figure10", "Test error % by data-set size",
            ["training examples", "without dropout (mean ± std, n)", "with dropout",
             "gain (points)", "2 × std. error of the gain"], rows,
            "The paper prints Figure 10 without numbers: no gain at 100–500, a gain that "
            "grows, then shrinks at 50K."))
        analysis.findings += self._findings(stats, sizes)
        by_label = group_by(runs, lambda r: f"{_variant(r)} N={config_value(r, 'data.train_size')}")
        for n in (size for size in sizes if size >= 5_000):
            if by_label.get(f"no dropout N={n}"):
                analysis.premises.append(overfits_premise(f"the no-dropout net at N={n}",
                                                          by_label[f"no dropout N={n}"]))
        if runs:
            analysis.premises.append(kept_units_premise(runs, 512))
        if by_label:
            analysis.premises.append(converged_premise(by_label))
        if runs:
            cfg = runs[0].config
            analysis.notes.append(
                f"hidden layers {'-'.join(map(str, cfg['model']['hidden']))} (paper: "
                "1024-1024-2048); epochs and batch size per size: " + ", ".join(
                    f"{config_value(r, 'data.train_size')}: {r.config['epochs']} ep × batch "
                    f"{r.config['optim']['batch_size']}" for r in self._one_per_size(runs)))
        if (note := status_note(records)) is not None:
            analysis.notes.append(note)
        return analysis

    @staticmethod
    def _one_per_size(runs: Sequence[Any]) -> list[Any]:
        by_size = group_by(runs, lambda r: int(config_value(r, "data.train_size")))
        return [by_size[n][0] for n in sorted(by_size)]

    @staticmethod
    def _findings(stats: dict[str, dict[int, Stat]], sizes: list[int]) -> list[Finding]:
        small = [n for n in sizes if n <= 500]
        large = [n for n in sizes if n >= 5_000]
        findings = []
        if small:
            judged = {n: compare(stats["dropout"][n], stats["no dropout"][n]) for n in small}
            outcomes = {c.outcome for c in judged.values()}
            outcome = (CONTRADICTED if HOLDS in outcomes else OPEN if OPEN in outcomes
                       else HOLDS)  # a gain beyond noise contradicts "no gain"
            findings.append(Finding.of(
                "no gain from dropout at 100–500 examples", outcome,
                "; ".join(f"N={n}: gain {c.gap:+.2f}, {c.outcome} ({c.text()})"
                          for n, c in judged.items())))
        if large:
            findings.append(all_pairs_finding(
                "dropout gives a gain at ≥ 5K examples",
                [((f"N={n} dropout", stats["dropout"][n]),
                  ("none", stats["no dropout"][n])) for n in large]))
        else:
            findings.append(Finding("dropout gives a gain at ≥ 5K examples", None,
                                    "no runs with ≥ 5K examples at this budget"))
        return findings


EXPERIMENT = DatasetSize()
