"""The report of ``dropoutlab tune``, drawn from plain numbers (Srivastava et al. 2014, §7.3).

:func:`tune_analysis` turns a :class:`TuneSummary` (numbers and text only; ``dropoutlab.tune``
fills it from the stored runs) into an :class:`~dropoutlab.report.content.Analysis`:

* the retention curve on the user's data: training and validation error against the hidden
  retention p, in the style of Figure 9a, with the net without dropout at p = 1;
* learning curves with and without dropout, the overfitting onset marked;
* the diagnosis in plain words, the improvement over the baseline as mean ± std with the noise
  rule, what the time budget covered, and the recommended config (also written as TOML).

:func:`write_tune_report` writes it with the house writers (HTML, Markdown/CSV, PNG/SVG) and
puts ``recommended.toml`` beside ``index.html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropoutlab.report.content import Analysis, Figure, Finding, Table

__all__ = ["Curve", "TuneSummary", "tune_analysis", "write_tune_report"]


@dataclass(frozen=True)
class Curve:
    """Mean per-epoch errors (%) of one candidate over its seeds, and its overfitting onset."""

    label: str
    epochs: list[int]
    train: list[float]
    val: list[float]
    onset: int | None


@dataclass
class TuneSummary:
    """Everything the tune report shows, as plain data.

    ``retention`` rows are (hidden retention p, training error %, validation error %) of the
    recommended input retention and max-norm; ``baseline_point`` is the same for the net
    without dropout (drawn at p = 1).
    """

    data: str
    recommendation: str
    diagnosis: str
    verdict: str  # "better", "worse", "within noise" or "undecided"
    covered: list[str]
    rule: str
    candidates: list[tuple[Any, ...]]  # rung, candidate, epochs, seeds, val, train, kept
    final: list[tuple[Any, ...]]  # candidate, val mean ± std (n), train mean ± std (n), chosen
    test: list[tuple[Any, ...]]  # net, test error mean ± std (n)
    retention: list[tuple[float, float | None, float | None]]
    baseline_point: tuple[float | None, float | None]
    retention_caption: str
    curves: list[Curve]
    config_toml: str
    notes: list[str] = field(default_factory=list)


def _figure(width: float = 5.6, height: float = 4.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _retention_figure(summary: TuneSummary) -> Figure:
    fig, ax = _figure()
    points = sorted(summary.retention)
    for index, name, style in ((1, "training error", "o-"), (2, "validation error", "s-")):
        xs = [p[0] for p in points if p[index] is not None]
        ys = [p[index] for p in points if p[index] is not None]
        if xs:
            ax.plot(xs, ys, style, label=name)
    base_train, base_val = summary.baseline_point
    if base_train is not None:
        ax.plot([1.0], [base_train], "o", color="C0", mfc="white", label="no dropout (train)")
    if base_val is not None:
        ax.plot([1.0], [base_val], "s", color="C1", mfc="white",
                label="no dropout (validation)")
    ax.set_xlabel("retention p of hidden units (paper's convention)")
    ax.set_ylabel("classification error %")
    ax.set_title("Retention curve (Figure 9a style)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure("retention_curve", "Training and validation error against retention p",
                  fig, summary.retention_caption)


def _learning_figure(summary: TuneSummary) -> Figure:
    fig, ax = _figure(6.4, 4.2)
    for i, curve in enumerate(summary.curves):
        color = f"C{i}"
        ax.plot(curve.epochs, curve.train, "-", color=color, alpha=0.6,
                label=f"{curve.label}: train (running, mini-batches)")
        ax.plot(curve.epochs, curve.val, "--", color=color, label=f"{curve.label}: validation")
        if curve.onset is not None:
            ax.axvline(curve.onset, color=color, alpha=0.5, linestyle=":",
                       label=f"{curve.label}: overfitting onset (epoch {curve.onset})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("classification error %")
    ax.set_yscale("log")
    ax.set_title("Learning curves with and without dropout")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    caption = ("Mean over the seeds of the final rung. The training curve is the running error "
               "of the epoch's mini-batches with dropout on (higher than the weight-scaled "
               "net's); the onset is the first epoch after the lowest validation loss from "
               "which it stays above that low (dropoutlab.results.diagnose).")
    return Figure("learning_curves", "Learning curves with and without dropout", fig, caption)


def tune_analysis(summary: TuneSummary) -> Analysis:
    """The tune report's section: tables, figures and findings from ``summary``."""
    analysis = Analysis(experiment="tune", title=f"Does dropout help on {summary.data}?",
                        paper_ref="§7.3, Appendix A")
    holds = {"better": True, "worse": False}.get(summary.verdict)
    analysis.findings.append(Finding("dropout improves validation error beyond noise", holds,
                                     summary.diagnosis))
    analysis.findings.append(Finding("recommended config", None, summary.recommendation))
    analysis.tables.append(Table(
        "final", "Final rung: validation error by mean over seeds (the choice)",
        ["candidate", "validation error % (mean ± std, n)", "training error % (mean ± std, n)",
         "chosen"], summary.final,
        caption="The recommendation is the lowest mean validation error; test error is not "
                "used for any choice."))
    if summary.test:
        analysis.tables.append(Table(
            "test", "Test error, measured once after the choice", ["net", "test error %"],
            summary.test))
    analysis.tables.append(Table(
        "candidates", "Every candidate by rung (successive halving)",
        ["rung", "candidate", "epochs", "seeds", "validation error %", "training error %",
         "goes on"], summary.candidates, caption=summary.rule))
    analysis.tables.append(Table("coverage", "What the time budget covered", ["item"],
                                 [(line,) for line in summary.covered]))
    analysis.figures.append(_retention_figure(summary))
    if summary.curves:
        analysis.figures.append(_learning_figure(summary))
    analysis.notes.extend(summary.notes)
    analysis.notes.append("Recommended config (recommended.toml, for `dropoutlab train "
                          "--config recommended.toml`):\n" + summary.config_toml)
    return analysis


def write_tune_report(summary: TuneSummary, out_dir: str | Path, meta: Any) -> Path:
    """Write the report (HTML, Markdown/CSV, PNG/SVG) and ``recommended.toml``; return the
    path of ``index.html``."""
    from dropoutlab.report import write_report

    index = write_report([tune_analysis(summary)], out_dir, meta)
    toml_path = Path(out_dir) / "recommended.toml"
    tmp = toml_path.with_suffix(".toml.tmp")
    tmp.write_text(summary.config_toml, encoding="utf-8")
    tmp.replace(toml_path)
    return index
