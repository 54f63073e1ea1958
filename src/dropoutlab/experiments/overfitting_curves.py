"""Learning curves with and without dropout: overfitting, and dropout preventing it (§1).

The paper opens with the problem dropout solves: a large net fitted to limited data keeps
lowering its training loss while its validation loss turns upward (overfitting). This experiment
trains the *same* net twice — without dropout, and with dropout (retention 0.8 input, 0.5
hidden) — everything else equal, and draws training and validation loss per epoch with the
overfitting onset marked. It is what ``make demo`` runs.

Rules (stated before the runs, computed on the seed-mean validation-loss curve):

* a run **overfits** when its validation loss at the last epoch exceeds its minimum by more
  than 10 %; the **onset** is the epoch of that minimum;
* dropout **prevents or delays** overfitting when its rise stays ≤ 10 %, or its minimum comes
  at least twice as late as without dropout;
* dropout **beats** no dropout on test error by the noise-aware rule of ``common.compare``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.base import GridExperiment, check_budget
from dropoutlab.experiments.common import (
    RISE_THRESHOLD,
    base_config,
    comparison_finding,
    config_value,
    converged_premise,
    finished,
    group_by,
    mean_curve,
    metric_stat,
    new_figure,
    no_dropout,
    ours_cell,
    overfits_premise,
    paper_dropout,
    rise_and_onset,
    status_note,
)
from dropoutlab.report.content import Analysis, Deviation, Figure, Finding, Table

__all__ = ["EXPERIMENT", "OverfittingCurves", "rise_and_onset"]

# What each budget trains (relative to the paper, quick is ~2× narrower on a 5k subset).
_SCALE: dict[str, dict[str, Any]] = {
    "smoke": {"model.hidden": (64, 64), "epochs": 4},
    # 5k examples and a slow lr decay (1 %/epoch): measured, the net without dropout overfits
    # clearly (validation loss +17 % above its minimum at epoch ~11) within 50 short epochs.
    "quick": {"model.hidden": (512, 512), "data.train_size": 5_000, "epochs": 50,
              "optim.lr_decay": 0.99},
    "paper": {"model.hidden": (1024, 1024, 1024), "epochs": 2000},
}
_DEVIATIONS = {"quick": (
    Deviation("data", "MNIST 50k (+10k validation)", "a 5k subset",
              "little data makes the no-dropout net overfit within a CPU budget"),
    Deviation("widths", "large nets such as 3×1024", "2×512",
              "measured: 2×512 on 5k overfits clearly (+17 % validation loss at epoch ~11)"),
    Deviation("epochs", "10⁶ updates", "50 epochs (2500 updates)",
              "the onset of overfitting comes within the first 15 epochs"),
    Deviation("recipe", "max-norm, lr decaying", "no max-norm in either variant, lr 0.3 × 0.99"
              "/epoch", "only dropout differs between the two runs; the slow decay keeps "
              "the overfitting visible"),
)}
VARIANTS = ("no dropout", "dropout")


def _variant(record: Any) -> str:
    dropped = config_value(record, "model.drop_hidden") > 0 or \
        config_value(record, "model.drop_input") > 0
    return "dropout" if dropped and config_value(record, "model.dropout") != "none" else \
        "no dropout"


class OverfittingCurves(GridExperiment):
    """The same net with and without dropout: training and validation loss per epoch."""

    name = "overfitting-curves"
    title = "Overfitting with and without dropout"
    paper_ref = "Section 1 (learning curves)"
    deviation_table = _DEVIATIONS
    summary = "same net with/without dropout: train and validation loss per epoch, onset marked"

    def base(self, budget: str) -> RunConfig:
        """The shared config of both variants at ``budget`` (max-norm off: only dropout differs)."""
        check_budget(budget)
        return with_changes(base_config(budget), {**_SCALE[budget], "optim.max_norm": None})

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """Two variants; they differ only in their dropout rates."""
        base = self.base(budget)
        return {"no dropout": no_dropout(base), "dropout": paper_dropout(base)}

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Curves per variant (mean ± std over seeds), onset, and the three findings."""
        analysis = Analysis(self.name, self.title, self.paper_ref)
        groups = group_by(finished(records), _variant)
        fig, (ax_loss, ax_err) = new_figure(2)
        rows, summary = [], {}
        for variant, color in zip(VARIANTS, ("tab:red", "tab:blue"), strict=True):
            runs = groups.get(variant, [])
            if not runs:
                continue
            epochs, val, val_sd = mean_curve(runs, "val_loss")
            t_epochs, train, _ = mean_curve(runs, "train_loss")
            e_epochs, val_err, _ = mean_curve(runs, "val_error")
            rise, onset = rise_and_onset(epochs, val) if val else (float("nan"), None)
            best_epoch = epochs[val.index(min(val))] if val else None
            summary[variant] = (rise, onset, best_epoch)
            ax_loss.plot(t_epochs, train, color=color, linestyle="--",
                         label=f"{variant}: training")
            ax_loss.plot(epochs, val, color=color, label=f"{variant}: validation")
            ax_loss.fill_between(epochs, [m - s for m, s in zip(val, val_sd, strict=True)],
                                 [m + s for m, s in zip(val, val_sd, strict=True)],
                                 color=color, alpha=0.2, linewidth=0)
            if onset is not None:
                ax_loss.axvline(onset, color=color, linestyle=":", linewidth=1.5)
                ax_loss.annotate(f"onset (epoch {onset})", (onset, max(val)), color=color,
                                 fontsize=8, rotation=90, va="top", ha="right")
            ax_err.plot(e_epochs, val_err, color=color, label=f"{variant}: validation")
            rows.append([variant, ours_cell(metric_stat(runs, "train_error")),
                         ours_cell(metric_stat(runs, "val_error")),
                         ours_cell(metric_stat(runs, "test_error")), best_epoch,
                         f"{100 * rise:+.1f} %", onset if onset is not None else "none"])
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log",
                    title="training (dashed) and validation loss")
        ax_err.set(xlabel="epoch", ylabel="validation error (%)", title="validation error")
        for ax in (ax_loss, ax_err):
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        analysis.figures.append(Figure(
            "overfitting_curves", "Training and validation loss, with and without dropout", fig,
            "Mean over seeds (band: ± 1 std of the validation loss). Dotted lines mark the "
            "overfitting onset: the epoch of the lowest validation loss, when the loss then "
            f"rises by more than {RISE_THRESHOLD:.0%}."))
        analysis.tables.append(Table(
            "overfitting", "Final errors and overfitting onset",
            ["variant", "train error % (mean ± std, n)", "val error %", "test error %",
             "epoch of min val loss", "val loss rise, last vs min", "onset"], rows,
            "Errors are the run's reported metrics (mean ± std over seeds); the paper prints "
            "no numbers for this figure."))
        analysis.findings += self._findings(groups, summary)
        if set(groups) == set(VARIANTS):
            analysis.premises += [overfits_premise("the no-dropout net", groups["no dropout"]),
                                  converged_premise(groups)]
        analysis.notes.append(self._scaling_note(records))
        if (note := status_note(records)) is not None:
            analysis.notes.append(note)
        return analysis

    def _findings(self, groups: dict[str, list[Any]],
                  summary: dict[str, tuple[float, int | None, int | None]]) -> list[Finding]:
        if set(summary) != set(VARIANTS):
            missing = sorted(set(VARIANTS) - set(summary))
            return [Finding("dropout prevents overfitting", None,
                            f"no finished runs for: {', '.join(missing)}")]
        rise_n, onset_n, best_n = summary["no dropout"]
        rise_d, _onset_d, best_d = summary["dropout"]
        findings = [Finding(
            "without dropout the validation loss rises after an early minimum (overfitting)",
            onset_n is not None,
            f"min at epoch {best_n}, last epoch {100 * rise_n:+.1f} % above it "
            f"(threshold {RISE_THRESHOLD:.0%})")]
        later = best_n is not None and best_d is not None and best_d >= 2 * best_n
        findings.append(Finding(
            "with dropout the validation loss does not rise, or rises much later",
            rise_d <= RISE_THRESHOLD or later,
            f"dropout: min at epoch {best_d}, last {100 * rise_d:+.1f} % above it; "
            f"no dropout: min at epoch {best_n}, {100 * rise_n:+.1f} %"))
        test_d = metric_stat(groups["dropout"], "test_error")
        test_n = metric_stat(groups["no dropout"], "test_error")
        findings.append(comparison_finding("dropout beats no dropout on test error",
                                           ("dropout", test_d), ("no dropout", test_n)))
        return findings

    def _scaling_note(self, records: Sequence[Any]) -> str:
        if not records:
            return "no runs stored yet"
        cfg = records[0].config
        return (f"hidden layers {'-'.join(str(w) for w in cfg['model']['hidden'])} "
                f"(paper: large nets such as 3×1024), {cfg['data']['dataset']} with "
                f"train_size={cfg['data']['train_size']}, {cfg['epochs']} epochs, max-norm off "
                "in both variants so that only dropout differs")


EXPERIMENT = OverfittingCurves()
