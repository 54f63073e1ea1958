"""Each experiment's analysis on synthetic run records with known answers.

The records are real :class:`~dropoutlab.sweeps.store.RunRecord` objects built from the experiment's
own quick-budget jobs (so the analysis classifies them exactly as it would stored runs), with
metrics chosen so that each finding must come out True — and, in a second case, False.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

from dropoutlab.experiments import EXPERIMENTS, Analysis, Finding
from dropoutlab.experiments.mc_vs_weight_scaling import judged_index
from dropoutlab.experiments.overfitting_curves import rise_and_onset
from dropoutlab.experiments.retention_rate import flat_spread
from dropoutlab.sweeps.store import RunRecord

Metrics = Callable[[str, int], dict[str, Any]]


def records_for(name: str, metrics: Metrics, *, budget: str = "quick",
                history: Callable[[str, int], list[dict[str, Any]]] | None = None,
                extras: Callable[[str, int], dict[str, Any]] | None = None,
                status: Callable[[str, int], str] | None = None) -> list[RunRecord]:
    """One finished record per job of ``name`` at ``budget``; metrics from ``metrics(label,
    seed)``."""
    records = []
    for i, job in enumerate(EXPERIMENTS[name].jobs(budget)):
        label = job.name.rsplit(" seed=", 1)[0]
        seed = job.config.seed
        values: dict[str, Any] = dict(
            config_hash=f"{i:016x}", task=job.task, seed=seed,
            status=status(label, seed) if status else "done", attempts=1,
            config=job.config.to_dict(), metrics=metrics(label, seed),
            history=history(label, seed) if history else [],
            extras=extras(label, seed) if extras else {}, error=None, seconds=1.0,
            versions={}, git_commit=None, hardware={}, worker=None, heartbeat=None,
            created=0.0, updated=0.0, names={name: job.name})
        for f in dataclasses.fields(RunRecord):  # bookkeeping fields the analyses never read
            if f.name not in values and f.default is dataclasses.MISSING \
                    and f.default_factory is dataclasses.MISSING:
                values[f.name] = 0
        records.append(RunRecord(**values))
    return records


def finding(analysis: Analysis, start: str) -> Finding:
    """The finding whose claim starts with ``start``."""
    matches = [f for f in analysis.findings if f.claim.startswith(start)]
    assert len(matches) == 1, [f.claim for f in analysis.findings]
    return matches[0]


def jitter(seed: int) -> float:
    """A small, seed-dependent offset so that standard deviations are not zero."""
    return 0.01 * (seed - 1)


class TestRegularizers:
    @staticmethod
    def errors(best: str) -> Metrics:
        base = {"L2": 1.6, "L2 + L1 towards the end": 1.6, "L2 + KL-sparsity": 1.55,
                "max-norm": 1.35, "dropout + L2": 1.25, "dropout + max-norm": 1.05}
        base[best] = 0.9

        def metrics(label: str, seed: int) -> dict[str, Any]:
            method = label.split(" [")[0]
            return {"test_error": base[method] + jitter(seed),
                    "val_error": base[method] + jitter(seed)}
        return metrics

    def test_paper_ordering_holds(self) -> None:
        """Dropout + max-norm lowest, every dropout method below every other: both hold."""
        analysis = EXPERIMENTS["regularizers"].analyze(
            records_for("regularizers", self.errors("dropout + max-norm")))
        assert finding(analysis, "dropout + max-norm is the best").holds is True
        assert finding(analysis, "every dropout variant beats").holds is True
        row = next(r for r in analysis.tables[0].rows if r[0] == "dropout + max-norm")
        assert row[3].startswith("0.90 ± 0.01 (n=3)") and row[5] == "-0.15"

    def test_violation_detected(self) -> None:
        """If L2 is best beyond noise, both findings are contradicted and the evidence names
        the pair with L2."""
        analysis = EXPERIMENTS["regularizers"].analyze(records_for("regularizers",
                                                                   self.errors("L2")))
        best = finding(analysis, "dropout + max-norm is the best")
        assert best.outcome == "contradicted" and best.holds is False
        assert "vs L2 0.90 ± 0.01 %: contradicted" in best.evidence
        assert finding(analysis, "every dropout variant beats").holds is False

    def test_selection_uses_validation_not_test(self) -> None:
        """The grid point with the lower validation error is chosen even if its test error
        is higher."""
        def metrics(label: str, seed: int) -> dict[str, Any]:
            first = "=2]" in label or "=1e-05]" in label or "l2=0.0001]" in label \
                or "kl_sparsity=0.0001]" in label
            return {"val_error": 1.0 if first else 2.0, "test_error": 3.0 if first else 0.5}
        analysis = EXPERIMENTS["regularizers"].analyze(records_for("regularizers", metrics))
        for row in analysis.tables[0].rows:
            assert row[3].startswith("3.00"), row


class TestArchitectures:
    def test_dropout_row_worse_than_standard_is_named(self) -> None:
        """One dropout row above the standard net makes 'every dropout net beats' False."""
        errors = {"standard logistic 2×800": 1.6, "dropout logistic 3×1024": 1.7,
                  "dropout ReLU 3×1024": 1.25, "dropout + max-norm ReLU 3×1024": 1.06,
                  "dropout + max-norm ReLU 3×2048": 1.04, "dropout + max-norm ReLU 2×4096": 1.01,
                  "dropout + max-norm ReLU 2×8192": 0.95}
        analysis = EXPERIMENTS["mnist-architectures"].analyze(records_for(
            "mnist-architectures",
            lambda label, seed: {"test_error": errors[label] + jitter(seed)}))
        every = finding(analysis, "every dropout net beats")
        assert every.holds is False and "dropout logistic 3×1024" in every.evidence
        assert finding(analysis, "dropout ReLU beats dropout logistic").holds is True
        assert finding(analysis, "max-norm improves").holds is True
        assert finding(analysis, "larger dropout + max-norm nets").holds is True
        assert len(analysis.tables[0].rows) == 7

    @pytest.mark.parametrize("offset, bound", [(-0.6, False), (0.7, True)])
    def test_note_says_whether_max_norm_bound(self, offset: float, bound: bool) -> None:
        """The note compares the plain net's largest weight norm with its twin's c."""
        jobs = EXPERIMENTS["mnist-architectures"].jobs("quick")
        c = next(j.config.optim.max_norm for j in jobs if "max-norm" in j.name)
        assert c is not None
        largest = c + offset

        def history(label: str, seed: int) -> list[dict[str, Any]]:
            return [{"epoch": 1, "weight_norm_max": 1.0},
                    {"epoch": 2, "weight_norm_max": largest - 0.1 * seed}]

        analysis = EXPERIMENTS["mnist-architectures"].analyze(records_for(
            "mnist-architectures", lambda label, seed: {"test_error": 1.0 + jitter(seed)},
            history=history))
        notes = [n for n in analysis.notes if n.startswith("max-norm")]
        assert len(notes) == 1
        assert notes[0].startswith("max-norm was active" if bound else
                                   "max-norm had nothing to clip")
        assert f"{largest:.2f}" in notes[0] and f"c = {c:g}" in notes[0]


class TestRetentionRate:
    @staticmethod
    def metrics(flat: bool, pn_helps: bool) -> Metrics:
        def fn(label: str, seed: int) -> dict[str, Any]:
            mode, p_text = label.split(" p=")
            p = float(p_text)
            train = 10.0 * (1.0 - p) ** 2  # rises as p falls
            test = 1.5 + (0.0 if flat else 2.0 * p) + 3.0 * (p < 0.3)
            if mode == "p·n fixed" and pn_helps and p < 0.2:
                test -= 2.0
            return {"train_error": train + jitter(seed), "test_error": test + jitter(seed)}
        return fn

    def test_paper_shape_holds(self) -> None:
        """Rising training error, flat test error on [0.4, 0.8], p·n fixed better at 0.1."""
        analysis = EXPERIMENTS["retention-rate"].analyze(
            records_for("retention-rate", self.metrics(flat=True, pn_helps=True)))
        assert finding(analysis, "with n fixed, training error rises").holds is True
        assert finding(analysis, "with n fixed, test error is flat").holds is True
        assert finding(analysis, "keeping p·n fixed helps small p").holds is True

    def test_not_flat_and_no_help_detected(self) -> None:
        """A test error growing with p is not flat; equal errors at p = 0.1 are within noise
        (the gap is zero), not a help."""
        analysis = EXPERIMENTS["retention-rate"].analyze(
            records_for("retention-rate", self.metrics(flat=False, pn_helps=False)))
        assert finding(analysis, "with n fixed, test error is flat").holds is False
        helps = finding(analysis, "keeping p·n fixed helps small p")
        assert helps.outcome == "within noise" and "no gap at all" in helps.evidence

    def test_flat_spread(self) -> None:
        """The flatness measure is (max − min) / mean."""
        assert flat_spread([1.0, 1.2, 0.8]) == pytest.approx(0.4)


class TestDatasetSize:
    @staticmethod
    def metrics(gain_at_10k: float) -> Metrics:
        def fn(label: str, seed: int) -> dict[str, Any]:
            variant, n_text = label.split(" N=")
            n = int(n_text)
            base = 30.0 / math.log10(n)
            gain = 0.0 if n <= 500 else (gain_at_10k if n == 10_000 else 0.5)
            noise = 0.3 * math.sin(seed + n)  # seed noise, independent of the variant
            error = base - (gain if variant == "dropout" else 0.0) + noise
            return {"test_error": error}
        return fn

    def test_sweet_spot_shape_holds(self) -> None:
        """No gain at 100–500 (within noise), gains at ≥ 5K: both findings hold."""
        analysis = EXPERIMENTS["dataset-size"].analyze(records_for("dataset-size",
                                                                   self.metrics(0.5)))
        assert finding(analysis, "no gain from dropout at 100–500").holds is True
        assert finding(analysis, "dropout gives a gain at ≥ 5K").holds is True

    def test_loss_at_10k_detected(self) -> None:
        """Dropout worse at 10K makes the '≥ 5K' finding False."""
        analysis = EXPERIMENTS["dataset-size"].analyze(records_for("dataset-size",
                                                                   self.metrics(-0.5)))
        assert finding(analysis, "dropout gives a gain at ≥ 5K").holds is False


class TestGaussianVsBernoulli:
    @pytest.mark.parametrize(("gaussian", "expected"), [(1.10, True), (0.95, True), (1.5, False)])
    def test_within_noise_or_better(self, gaussian: float, expected: bool) -> None:
        """Gaussian within noise (1.10 vs 1.08), better (0.95), or clearly worse (1.5)."""
        def metrics(label: str, seed: int) -> dict[str, Any]:
            mean = gaussian if label == "Gaussian" else 1.08
            return {"test_error": mean + 0.04 * (seed - 2)}
        analysis = EXPERIMENTS["gaussian-vs-bernoulli"].analyze(
            records_for("gaussian-vs-bernoulli", metrics))
        assert finding(analysis, "Gaussian dropout is within noise").holds is expected


class TestOverfittingCurves:
    @staticmethod
    def history(label: str, seed: int) -> list[dict[str, Any]]:
        rows = []
        for epoch in range(1, 41):
            # without dropout: minimum at epoch 8, then rises; with dropout: keeps falling
            val = 0.1 + 0.002 * (epoch - 8) ** 2 if label == "no dropout" else 0.08 + 1.0 / epoch
            rows.append({"epoch": epoch, "train_loss": 1.0 / epoch,
                         "val_loss": val + 0.001 * seed, "val_error": 10 * val})
        return rows

    def test_onset_found_without_dropout_only(self) -> None:
        """A U-shaped validation loss overfits (onset at its minimum); a falling one does not."""
        records = records_for(
            "overfitting-curves",
            lambda label, seed: {"test_error": 1.2 if label == "dropout" else 1.8},
            history=self.history)
        analysis = EXPERIMENTS["overfitting-curves"].analyze(records)
        rises = finding(analysis, "without dropout the validation loss rises")
        assert rises.holds is True and "min at epoch 8" in rises.evidence
        assert finding(analysis, "with dropout the validation loss does not rise").holds is True
        assert finding(analysis, "dropout beats no dropout").holds is True

    def test_rise_and_onset(self) -> None:
        """rise = last/min − 1; the onset is the minimum's epoch only above the 10 % rule."""
        assert rise_and_onset([1, 2, 3], [2.0, 1.0, 1.5]) == (pytest.approx(0.5), 2)
        assert rise_and_onset([1, 2, 3], [2.0, 1.0, 1.05])[1] is None
        with pytest.raises(ValueError, match="non-empty"):
            rise_and_onset([], [])


class TestMcVsWeightScaling:
    @staticmethod
    def extras(offset: float) -> Callable[[str, int], dict[str, Any]]:
        ks = [1, 2, 5, 10, 50, 100, 200]

        def fn(label: str, seed: int) -> dict[str, Any]:
            ws = 1.5 + 0.05 * seed
            mc = [ws + offset + 3.0 / k**2 - 0.02 + 0.01 * seed for k in ks]  # reaches WS by 50
            return {"ks": ks, "mc_mean": mc, "mc_std": [0.3 / k for k in ks], "ws_error": ws,
                    "pool": 250, "repeats": 50}
        return fn

    def test_mc_reaches_weight_scaling(self) -> None:
        """MC falling to the weight-scaled error: both findings hold."""
        analysis = EXPERIMENTS["mc-vs-weight-scaling"].analyze(records_for(
            "mc-vs-weight-scaling", lambda label, seed: {}, extras=self.extras(0.0)))
        assert finding(analysis, "MC error falls with k").holds is True
        assert finding(analysis, "MC reaches the weight-scaled").holds is True

    def test_mc_stuck_above_detected(self) -> None:
        """MC staying 0.5 points above weight scaling does not 'reach' it."""
        analysis = EXPERIMENTS["mc-vs-weight-scaling"].analyze(records_for(
            "mc-vs-weight-scaling", lambda label, seed: {}, extras=self.extras(0.5)))
        assert finding(analysis, "MC reaches the weight-scaled").holds is False

    def test_judged_at_a_fifth_of_the_pool(self) -> None:
        """The 'reaches' finding is judged at the largest k ≤ pool / 5 (the paper's 200 of
        1000): at 200 of 250 the draws share most nets and their std is no noise measure."""
        ks = [1, 2, 5, 10, 50, 100, 200]
        assert [ks[judged_index(ks, pool)] for pool in (1000, 999, 250, 20, 4)] == [
            200, 100, 50, 2, 1]
        analysis = EXPERIMENTS["mc-vs-weight-scaling"].analyze(records_for(
            "mc-vs-weight-scaling", lambda label, seed: {}, extras=self.extras(0.0)))
        assert "MC(k=50, at most a fifth of the pool)" in finding(
            analysis, "MC reaches the weight-scaled").evidence


class TestFeaturesAndSparsity:
    @staticmethod
    def extras(label: str, seed: int) -> dict[str, Any]:
        hist = {"edges": [0.0, 1.0, 2.0], "counts": [3, 1], "above": 0}
        return {"features": [[0.0] * 784, [1.0] * 784], "hist_unit_means": hist,
                "hist_activations": hist}

    @pytest.mark.parametrize(("dropout_mean", "expected"), [(0.7, True), (2.5, False)])
    def test_mean_activation_rule(self, dropout_mean: float, expected: bool) -> None:
        """'Lower with dropout' follows the seed means of the mean activation."""
        def metrics(label: str, seed: int) -> dict[str, Any]:
            mean = dropout_mean if label == "dropout" else 2.0
            return {"mean_activation": mean + jitter(seed), "test_error": 0.01}
        analysis = EXPERIMENTS["features-and-sparsity"].analyze(records_for(
            "features-and-sparsity", metrics, extras=self.extras))
        assert finding(analysis, "mean hidden activation is lower").holds is expected
        assert finding(analysis, "reconstruction error is similar").holds is True
        assert {f.name for f in analysis.figures} == {"figure7_features", "figure8_histograms"}


class TestMarginalizedRegression:
    @pytest.mark.parametrize(("distance", "expected"), [(0.01, True), (0.2, False)])
    def test_match_rule(self, distance: float, expected: bool) -> None:
        """Within 5 % of the closed form holds; 20 % away does not."""
        def metrics(label: str, seed: int) -> dict[str, Any]:
            return {"rel_distance": distance, "rel_distance_ols": 1.0, "closed_vs_ols": 1.0,
                    "identity_rel_error": 0.001}
        records = records_for("marginalized-regression", metrics,
                              extras=lambda label, seed: {"w_sgd": [1.0], "w_closed": [1.0]})
        analysis = EXPERIMENTS["marginalized-regression"].analyze(records)
        assert len(analysis.findings) == 3
        assert all(f.holds is expected for f in analysis.findings)


def test_failed_runs_are_left_out_and_noted() -> None:
    """Diverged runs do not enter the means, and a note counts them."""
    records = records_for(
        "gaussian-vs-bernoulli", lambda label, seed: {"test_error": 1.0 + jitter(seed)},
        status=lambda label, seed: "diverged" if seed == 0 else "done")
    analysis = EXPERIMENTS["gaussian-vs-bernoulli"].analyze(records)
    assert "(n=4)" in analysis.tables[0].rows[0][1]
    assert any("2 diverged" in note for note in analysis.notes)
