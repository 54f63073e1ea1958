"""Monte-Carlo model averaging vs the weight-scaling approximation (§7.5, Figure 11).

A dropout net stands for an ensemble of exponentially many thinned nets. The paper predicts with
one weight-scaled net (§4) and checks it against true averaging: sample k thinned nets, average
their predictive distributions, and measure the test error as k grows. deepnet's procedure,
followed here: predict the test set with a *pool* of S sampled nets once; for each k draw k of
them without replacement, R times, and report the mean ± std of the k-net average's error.
The paper finds MC matches weight scaling at about k = 50 and is slightly better beyond, within
one standard deviation.

Each budget has its own task (the pool size is part of what a run computes, so it is part of the
run's key through the task name): the paper's S = 1000, k ≤ 200, R = 100; quick uses a pool of
250 (a CPU evaluates 250 thinned nets on the 10k test images in about a minute), R = 50.

Rules: "MC error falls with k" when the error at the largest k beats that at k = 1
(``common.compare`` over seeds);
"MC reaches weight scaling within noise" when the per-seed difference MC(k) − WS has mean
≤ the larger of 2 standard errors (paired over seeds; needs ≥ 2 seeds) and the draws' std at
k (the paper's "within one standard deviation"), at the largest k that draws at most a fifth of
the pool, as the paper's k ≤ 200 of 1000 (draws of 200 of a pool of 250 would share most of
their nets, and their std would say nothing); the "match k" is the smallest k whose seed-mean
MC error is within the mean draw std of the weight-scaled error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dropoutlab import data as data_module
from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.base import GridExperiment
from dropoutlab.experiments.common import (
    Stat,
    base_config,
    comparison_finding,
    converged_premise,
    finished,
    new_figure,
    ours_cell,
    paper_dropout,
    stat_of,
    status_note,
)
from dropoutlab.experiments.cost import SPLITS, RunCost, forward_flops, run_cost
from dropoutlab.experiments.paper_numbers import FIGURE11_MATCH_K
from dropoutlab.inference import sample_probabilities
from dropoutlab.report.content import Analysis, Deviation, Figure, Finding, Table
from dropoutlab.sweeps.job import Job

__all__ = ["EXPERIMENT", "McVsWeightScaling", "judged_index", "mc_curve", "run_task",
           "run_task_quick", "run_task_smoke"]

_MODULE = "dropoutlab.experiments.mc_vs_weight_scaling"
_POOLS = {f"{_MODULE}:run_task": 1000, f"{_MODULE}:run_task_quick": 250,
          f"{_MODULE}:run_task_smoke": 20}  # sampled nets per task (the functions below)
_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200)

# budget → (task, net and data changes)
_SCALE: dict[str, tuple[str, dict[str, Any]]] = {
    "smoke": (f"{_MODULE}:run_task_smoke", {"model.hidden": (64, 64), "epochs": 3}),
    "quick": (f"{_MODULE}:run_task_quick", {"model.hidden": (256, 256), "epochs": 30}),
    "paper": (f"{_MODULE}:run_task", {"model.hidden": (1024, 1024, 1024), "epochs": 2000}),
}


_DEVIATIONS = {"quick": (
    Deviation("widths", "3×1024 (deepnet's MNIST net)", "2×256", "cost"),
    Deviation("data", "MNIST 50k", "a 10k subset", "cost"),
    Deviation("sampling", "a pool of 1000 nets, 100 draws per k", "250 nets, 50 draws",
              "a CPU evaluates 250 thinned nets on the 10k test images in about a minute"),
    Deviation("judged at", "k up to 200 (a fifth of the pool)", "k = 50 (a fifth of the pool)",
              "draws of more than a fifth of the pool share most of their nets, so their "
              "std understates the noise the paper compares against"),
)}


@torch.no_grad()
def mc_curve(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, pool: int,
             ks: Sequence[int], repeats: int, generator: torch.Generator) -> dict[str, Any]:
    """Error of k-net Monte-Carlo averages drawn from a pool of sampled nets (Figure 11).

    Args:
        model: A trained classifier with dropout layers.
        x, y: Test inputs (N, D) and labels (N,).
        pool: Number S of thinned nets sampled once (their predictions on ``x``).
        ks: Ensemble sizes k ≤ S.
        repeats: Draws R of k nets (without replacement) per k.
        generator: Seeded source of the masks and of the draws.

    Returns:
        ``{"ks", "mc_mean", "mc_std", "ws_error", "pool", "repeats"}``: errors in percent;
        ``mc_std`` is the std over the R draws (the paper's error bars).
    """
    ks = [k for k in ks if k <= pool]
    probs = sample_probabilities(model, x, pool, generator=generator)  # (S, N, C)
    ws_probs = _weight_scaled(model, x)
    ws_error = 100.0 * float((ws_probs.argmax(1) != y).double().mean())
    errors = torch.empty(repeats, len(ks), dtype=torch.float64)
    for r in range(repeats):
        order = torch.randperm(pool, generator=generator, device=probs.device)
        running = torch.zeros_like(probs[0])  # (N, C) sum of the first k nets of this draw
        taken = 0
        for j, k in enumerate(ks):
            running += probs[order[taken:k]].sum(0)
            taken = k
            errors[r, j] = 100.0 * (running.argmax(1) != y).double().mean().cpu()
    return {"ks": ks, "mc_mean": errors.mean(0).tolist(),
            "mc_std": (errors.std(0) if repeats > 1 else torch.zeros(len(ks))).tolist(),
            "ws_error": ws_error, "pool": pool, "repeats": repeats}


def _weight_scaled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from dropoutlab.inference import weight_scaled_predict

    return weight_scaled_predict(model, x)


def _train_then_curve(config: RunConfig, checkpoint_path: Path | None, resume: bool, *,
                      pool: int, repeats: int) -> dict[str, Any]:
    """Train (keeping the model), then compute the MC curve on the test set."""
    from dropoutlab.train import train

    result = train(config, checkpoint_path=checkpoint_path, resume=resume, keep_model=True)
    out: dict[str, Any] = {"status": result.status, "metrics": result.metrics(),
                           "history": result.history, "extras": {}}
    if result.status != "done" or result.model is None:
        return out
    dataset = data_module.load(config.data, seed=config.seed, device=config.device)
    generator = torch.Generator(device=config.device).manual_seed(10_000 + config.seed)
    curve = mc_curve(result.model, dataset.test_x, dataset.test_y, pool=pool, ks=_KS,
                     repeats=repeats, generator=generator)
    out["extras"] = curve
    out["metrics"]["ws_error"] = curve["ws_error"]
    out["metrics"]["mc_error_kmax"] = curve["mc_mean"][-1]
    out["metrics"]["mc_error_k1"] = curve["mc_mean"][0]
    return out


def run_task(config: RunConfig, *, checkpoint_path: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """The paper's procedure: a pool of 1000 sampled nets, k ≤ 200, 100 draws per k."""
    return _train_then_curve(config, checkpoint_path, resume, pool=1000, repeats=100)


def run_task_quick(config: RunConfig, *, checkpoint_path: Path | None = None,
                   resume: bool = False) -> dict[str, Any]:
    """CPU-sized: a pool of 250 sampled nets, k ≤ 200, 50 draws per k."""
    return _train_then_curve(config, checkpoint_path, resume, pool=250, repeats=50)


def run_task_smoke(config: RunConfig, *, checkpoint_path: Path | None = None,
                   resume: bool = False) -> dict[str, Any]:
    """Seconds: a pool of 20 sampled nets, k ≤ 20, 5 draws per k."""
    return _train_then_curve(config, checkpoint_path, resume, pool=20, repeats=5)


class McVsWeightScaling(GridExperiment):
    """Figure 11: test error of k-net Monte-Carlo averages vs the weight-scaled net."""

    name = "mc-vs-weight-scaling"
    title = "Monte-Carlo model averaging vs weight scaling"
    paper_ref = "Figure 11"
    deviation_table = _DEVIATIONS
    summary = "error of MC averaging over k = 1…200 sampled nets vs the weight-scaled net"

    def task(self, budget: str) -> str:
        """Trains the net, then samples its thinned nets for the MC curve."""
        return _SCALE[budget][0]

    def cost(self, job: Job) -> RunCost:
        """Training, then the test set through each sampled net of the pool."""
        trained = run_cost(job.config)
        pool = _POOLS[job.task]
        test = SPLITS[job.config.data.dataset][2]
        return RunCost(trained.updates, trained.train_flops,
                       trained.eval_flops + pool * test * forward_flops(job.config))

    def grid(self, budget: str, data_dir: str | None) -> dict[str, RunConfig]:
        """One dropout net (retention 0.8 input, 0.5 hidden, max-norm); its curve follows."""
        return {"dropout net": paper_dropout(with_changes(base_config(budget), _SCALE[budget][1]))}

    def analyze(self, records: Sequence[Any]) -> Analysis:
        """Seed-mean MC curve with the draws' std as error bars, the weight-scaled line."""
        analysis = Analysis(self.name, self.title, self.paper_ref)
        runs = [r for r in finished(records) if r.extras.get("ks")]
        if (note := status_note(records)) is not None:
            analysis.notes.append(note)
        if not runs:
            analysis.findings.append(Finding("MC error falls with k", None, "no finished runs"))
            return analysis
        ks = min((r.extras["ks"] for r in runs), key=len)
        mc = [stat_of(r.extras["mc_mean"][j] for r in runs) for j in range(len(ks))]
        draw_std = [sum(r.extras["mc_std"][j] for r in runs) / len(runs) for j in range(len(ks))]
        ws = stat_of(r.extras["ws_error"] for r in runs)
        fig, ax = new_figure()
        ax.errorbar(ks, [s.mean for s in mc], yerr=draw_std, marker="o", markersize=3,
                    capsize=2, label="Monte-Carlo model averaging")
        ax.axhline(ws.mean, color="black", linestyle="--", label="approximate averaging by "
                   "weight scaling")
        ax.set(xlabel="number of samples used for Monte-Carlo averaging (k)",
               ylabel="test classification error (%)", title="MC averaging vs weight scaling")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        pool, repeats = runs[0].extras["pool"], runs[0].extras["repeats"]
        analysis.figures.append(Figure(
            "figure11", "Monte-Carlo averaging vs weight scaling", fig,
            f"Mean over {len(runs)} seed(s); error bars: std over {repeats} draws of k nets "
            f"from a pool of {pool} sampled nets (averaged over seeds), as in Figure 11."))
        match_k = next((k for k, s, sd in zip(ks, mc, draw_std, strict=True)
                        if s.mean <= ws.mean + sd), None)
        rows: list[list[Any]] = [[f"MC, k = {k}", ours_cell(s), None, None]
                                 for k, s in zip(ks, mc, strict=True)
                                 if k in (1, 10, 50, 100, ks[-1])]
        rows.append(["weight scaling", ours_cell(ws), None, None])
        rows.append(["smallest k within one draw std of weight scaling",
                     match_k if match_k is not None else "none", FIGURE11_MATCH_K,
                     f"{match_k - FIGURE11_MATCH_K.value:+g}" if match_k is not None else None])
        analysis.tables.append(Table(
            "figure11", "Test error of MC averaging and weight scaling",
            ["method", "ours (mean ± std, n)", "paper", "difference"], rows,
            "Errors in %; the paper prints Figure 11 as a plot (match at about k = 50)."))
        analysis.findings += self._findings(runs, ks, mc, ws)
        analysis.premises.append(converged_premise({"dropout net": runs}))
        cfg = runs[0].config
        analysis.notes.append(
            f"net hidden {cfg['model']['hidden']}, {cfg['data']['dataset']} train_size="
            f"{cfg['data']['train_size']}, {cfg['epochs']} epochs; pool of {pool} sampled nets "
            f"(paper: 1000), {repeats} draws per k (paper: 100)")
        return analysis

    @staticmethod
    def _findings(runs: Sequence[Any], ks: Sequence[int], mc: Sequence[Stat],
                  ws: Stat) -> list[Finding]:
        falls = comparison_finding("MC error falls with k", (f"k = {ks[-1]}", mc[-1]),
                                   ("k = 1", mc[0]))
        j = judged_index(ks, min(r.extras["pool"] for r in runs))
        diffs = stat_of(r.extras["mc_mean"][j] - r.extras["ws_error"] for r in runs)
        if diffs.n < 2:
            reaches = Finding("MC reaches the weight-scaled error within noise", None,
                              f"one seed only: MC(k={ks[j]}) − WS = {diffs.mean:+.2f} points")
        else:
            draw_std = sum(r.extras["mc_std"][j] for r in runs) / len(runs)
            bound = max(2 * diffs.sem, draw_std)
            reaches = Finding(
                "MC reaches the weight-scaled error within noise", diffs.mean <= bound,
                f"MC(k={ks[j]}, at most a fifth of the pool) − WS = {diffs.mean:+.3f} ± "
                f"{diffs.std:.3f} points over {diffs.n} seeds (rule: mean ≤ max(2·sem, draw "
                f"std) = {bound:.3f}); WS {ws} %")
        return [falls, reaches]


def judged_index(ks: Sequence[int], pool: int) -> int:
    """The index in ``ks`` of the largest k drawing at most a fifth of ``pool`` (the paper's
    200 of 1000), where "MC reaches weight scaling" is judged; the smallest k if none does."""
    return max((i for i, k in enumerate(ks) if 5 * k <= pool), default=0)


EXPERIMENT = McVsWeightScaling()
