"""Tests for the experiments' shared helpers: statistics, verdict rules, record access, figures.

Oracle tests against hand-computed numbers: the mean ± sample std, the "within noise" bound,
orderings that must be detected as violated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from dropoutlab.experiments.common import (
    Stat,
    all_pairs_finding,
    compare,
    comparison_finding,
    converged_premise,
    diff_cell,
    finished,
    label_of,
    mean_curve,
    metric,
    noise_bound,
    ordering_finding,
    overfits_premise,
    stat_of,
    status_note,
    within_noise,
)
from dropoutlab.experiments.paper_numbers import TABLE2, TABLE4, TABLE9, TABLE10_STD
from dropoutlab.report.content import CONTRADICTED, HOLDS, OPEN, WITHIN_NOISE, Finding


@dataclass
class Rec:
    """A minimal stand-in for a store RunRecord (only the fields analyses read)."""

    status: str = "done"
    metrics: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


class TestStat:
    def test_mean_and_sample_std(self) -> None:
        """stat_of gives the mean and the n − 1 standard deviation."""
        s = stat_of([1.0, 2.0, 3.0])
        assert (s.mean, s.n) == (2.0, 3)
        assert s.std == pytest.approx(1.0)
        assert str(s) == "2.00 ± 1.00 (n=3)"

    def test_single_and_empty(self) -> None:
        """One value has std 0; no values give NaN and n = 0."""
        assert stat_of([4.0]) == Stat(4.0, 0.0, 1)
        empty = stat_of([])
        assert empty.n == 0 and math.isnan(empty.mean)

    def test_scaled(self) -> None:
        """scaled() converts units (fractions to percent) without changing n."""
        assert stat_of([0.01, 0.03]).scaled(100).mean == pytest.approx(2.0)


class TestRules:
    def test_compare_three_outcomes(self) -> None:
        """A gap beyond 2·sqrt(σa²/na + σb²/nb) holds or contradicts; inside it, within noise.
        Bound for σ = 0.3, n = 3 on both sides: 2·sqrt(0.06) ≈ 0.490."""
        a = Stat(1.00, 0.3, 3)
        assert compare(a, Stat(1.50, 0.3, 3)).outcome == HOLDS
        assert compare(Stat(1.50, 0.3, 3), a).outcome == CONTRADICTED
        within = compare(a, Stat(1.45, 0.3, 3))
        assert within.outcome == WITHIN_NOISE and within.gap == pytest.approx(0.45)

    def test_issue_examples_are_within_noise(self) -> None:
        """The two verdicts issue 15 quotes, decided by the mean alone before, are within
        noise: 3.90 ± 0.06 vs 3.96 ± 0.14 and 3.91 ± 0.20 vs 3.88 ± 0.08 (n = 3)."""
        assert compare(Stat(3.90, 0.06, 3), Stat(3.96, 0.14, 3)).outcome == WITHIN_NOISE
        assert compare(Stat(3.91, 0.20, 3), Stat(3.88, 0.08, 3)).outcome == WITHIN_NOISE

    def test_seeds_needed(self) -> None:
        """Within noise, the seeds a side that would separate the observed gap:
        n > 4(σa² + σb²)/gap² = 4·0.18/0.45² ≈ 3.56, so 4; and a 2·SE bound with n = 4 is
        below the gap."""
        within = compare(Stat(1.00, 0.3, 3), Stat(1.45, 0.3, 3))
        assert within.seeds_needed == 4
        assert 2 * math.sqrt(0.18 / 4) < 0.45 < 2 * math.sqrt(0.18 / 3)
        assert "~4 seeds a side" in within.text()

    def test_false_call_rate_as_stated(self) -> None:
        """The module header's claim: with no true difference and 3 seeds a side, the rule
        calls holds or contradicted about 12 % of the time (|Welch t| > 2 at ≈ 4 degrees of
        freedom: 11.6 %). 20,000 seeded draws of two N(0, 1) triples; the binomial std of the
        rate is 0.23 points, so the band [10 %, 13.5 %] is over 6 std wide either side."""
        import random

        rng = random.Random(0)
        calls = 0
        for _ in range(20_000):
            a = stat_of(rng.gauss(0, 1) for _ in range(3))
            b = stat_of(rng.gauss(0, 1) for _ in range(3))
            calls += compare(a, b).outcome in (HOLDS, CONTRADICTED)
        assert 0.10 <= calls / 20_000 <= 0.135

    def test_compare_needs_two_seeds(self) -> None:
        """With one seed a side the noise is unknown: open, even for a large gap."""
        assert compare(Stat(1.0, 0.0, 1), Stat(5.0, 0.1, 3)).outcome == OPEN
        assert compare(Stat(math.nan, math.nan, 0), Stat(1.0, 0.1, 3)).outcome == OPEN

    def test_comparison_finding(self) -> None:
        """The finding carries the outcome, a matching holds value and both numbers."""
        f = comparison_finding("a beats b", ("a", Stat(1.0, 0.1, 3)), ("b", Stat(2.0, 0.1, 3)))
        assert (f.outcome, f.holds) == (HOLDS, True) and "1.00" in f.evidence
        f = comparison_finding("a beats b", ("a", Stat(1.0, 0.3, 3)), ("b", Stat(1.1, 0.3, 3)))
        assert (f.outcome, f.holds) == (WITHIN_NOISE, None) and "seeds a side" in f.evidence

    def test_all_pairs(self) -> None:
        """Every pair must hold; one contradicted pair contradicts the whole claim."""
        low, mid, high = (("low", Stat(1.0, 0.1, 3)), ("mid", Stat(1.5, 0.1, 3)),
                          ("high", Stat(2.0, 0.1, 3)))
        assert all_pairs_finding("x", [(low, high), (mid, high)]).outcome == HOLDS
        assert all_pairs_finding("x", [(low, high), (high, mid)]).outcome == CONTRADICTED
        close = ("close", Stat(1.95, 0.3, 3))
        assert all_pairs_finding("x", [(low, high), (close, high)]).outcome == WITHIN_NOISE
        assert all_pairs_finding("x", [(low, high)]).evidence.endswith(" (n=3)")
        more = ("more", Stat(1.0, 0.1, 6))
        assert all_pairs_finding("x", [(low, high), (more, high)]).evidence.endswith(" (n=3–6)")

    def test_within_noise_bound(self) -> None:
        """|Δ| ≤ 2·sqrt(σa²/na + σb²/nb): 2·sqrt(0.03 + 0.03) ≈ 0.49 for σ = 0.3, n = 3."""
        a, b = Stat(1.00, 0.3, 3), Stat(1.45, 0.3, 3)
        assert noise_bound(a, b) == pytest.approx(2 * math.sqrt(0.06))
        assert within_noise(a, b) is True
        assert within_noise(a, Stat(1.55, 0.3, 3)) is False

    def test_within_noise_needs_two_seeds(self) -> None:
        """With one seed the noise is unknown: the rule answers None, not True."""
        assert within_noise(Stat(1.0, 0.0, 1), Stat(1.0, 0.1, 3)) is None

    def test_ordering_violation_detected(self) -> None:
        """An ordering with one adjacent pair out of order beyond noise is contradicted, and
        the evidence names that pair's outcome."""
        finding = ordering_finding("a < b < c", [("a", Stat(1.0, 0.1, 3)),
                                                 ("b", Stat(0.7, 0.1, 3)),
                                                 ("c", Stat(2.0, 0.1, 3))])
        assert finding.outcome == CONTRADICTED and finding.holds is False
        assert "a < b: contradicted" in finding.evidence
        assert "b < c: holds" in finding.evidence

    def test_ordering_pair_within_noise(self) -> None:
        """A pair inside the noise makes the ordering within noise, not a failure."""
        finding = ordering_finding("a < b < c", [("a", Stat(1.0, 0.3, 3)),
                                                 ("b", Stat(1.1, 0.3, 3)),
                                                 ("c", Stat(3.0, 0.1, 3))])
        assert finding.outcome == WITHIN_NOISE and finding.holds is None

    def test_ordering_holds_and_quotes_numbers(self) -> None:
        """An ordering beyond noise pair by pair holds and its evidence quotes every mean."""
        finding = ordering_finding("a < b", [("a", Stat(1.0, 0.1, 3)), ("b", Stat(1.3, 0.1, 3))])
        assert finding.holds is True
        assert "1.00" in finding.evidence and "1.30" in finding.evidence

    def test_ordering_without_runs_is_undecided(self) -> None:
        """A group with no runs leaves the finding undecided (None)."""
        finding = ordering_finding("a < b", [("a", Stat(1.0, 0.1, 3)),
                                             ("b", Stat(math.nan, math.nan, 0))])
        assert finding.holds is None and finding.outcome == OPEN and "b" in finding.evidence

    def test_finding_outcome_and_holds_agree(self) -> None:
        """A finding's outcome follows holds when not given, and a mismatch is refused."""
        assert Finding("c", True, "e").outcome == HOLDS
        assert Finding("c", False, "e").outcome == CONTRADICTED
        assert Finding("c", None, "e").outcome == OPEN
        assert Finding.of("c", WITHIN_NOISE, "e").holds is None
        with pytest.raises(ValueError, match="`holds` must be"):
            Finding("c", True, "e", WITHIN_NOISE)

    def test_diff_cell_keeps_uncertain_mark(self) -> None:
        """The difference column is ours − paper and keeps the paper's (?) mark."""
        ours = Stat(1.10, 0.05, 3)
        assert diff_cell(ours, TABLE2["dropout ReLU 3×1024"]) == "-0.15"
        assert diff_cell(ours, TABLE2["dropout + max-norm ReLU 3×2048"]) == "+0.06 (?)"
        assert diff_cell(Stat(math.nan, math.nan, 0), TABLE2["dropout ReLU 3×1024"]) is None


class TestRecords:
    def test_finished_and_status_note(self) -> None:
        """Only 'done' runs enter statistics; the note counts the others by status."""
        records = [Rec(), Rec(status="diverged"), Rec(status="failed"), Rec()]
        assert len(finished(records)) == 2
        assert status_note(records) == ("left out of the statistics: 1 diverged, 1 failed "
                                        "run(s) of 4")
        assert status_note([Rec()]) is None

    def test_label_of_strips_seed(self) -> None:
        """The label is the experiment's job name without ' seed=N'; others are ignored."""
        record = Rec(names={"a": "dropout N=100 seed=2", "b": "other seed=0"})
        assert label_of(record, "a") == "dropout N=100"
        assert label_of(record, "a", valid=["x"]) is None
        assert label_of(Rec(), "a") is None

    def test_metric_skips_missing_and_nonfinite(self) -> None:
        """metric() reads metrics then extras and returns None for absent or NaN values."""
        record = Rec(metrics={"test_error": 1.5, "bad": float("nan")}, extras={"ws_error": 2})
        assert metric(record, "test_error") == 1.5
        assert metric(record, "ws_error") == 2.0
        assert metric(record, "bad") is None and metric(record, "absent") is None

    def test_mean_curve_over_common_epochs(self) -> None:
        """Per-epoch mean/std over runs, only for epochs every run reached."""
        a = Rec(history=[{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}])
        b = Rec(history=[{"epoch": 1, "val_loss": 3.0}])
        epochs, means, stds = mean_curve([a, b], "val_loss")
        assert epochs == [1] and means == [2.0]
        assert stds[0] == pytest.approx(math.sqrt(2.0))


def _curve(key: str, values: list[float]) -> Rec:
    return Rec(history=[{"epoch": i + 1, key: v} for i, v in enumerate(values)])


class TestPremises:
    def test_overfits_when_validation_loss_rises(self) -> None:
        """Minimum 0.10 at epoch 3, last 0.12: +20 % > 10 % passes; a flat end does not."""
        rising = overfits_premise("net", [_curve("val_loss", [0.3, 0.2, 0.10, 0.11, 0.12])])
        assert rising.passed is True and "epoch 3" in rising.measured
        flat = overfits_premise("net", [_curve("val_loss", [0.3, 0.2, 0.10, 0.10, 0.105])])
        assert flat.passed is False

    def test_converged_when_last_quarter_is_flat(self) -> None:
        """Third quarter 2.0, 2.1; last 2.05, 1.95 (same mean, within noise): converged. A run
        whose last quarter (1.7, 1.6) is below its third (2.2, 2.1) beyond the epochs' spread
        still improves and is named."""
        flat = _curve("val_error", [5.0, 4.0, 3.0, 2.5, 2.0, 2.1, 2.05, 1.95])
        falling = _curve("val_error", [5.0, 4.0, 3.0, 2.5, 2.2, 2.1, 1.7, 1.6])
        assert converged_premise({"flat": [flat]}).passed is True
        both = converged_premise({"flat": [flat], "falling": [falling]})
        assert both.passed is False and "still improving beyond noise: falling" in both.measured


class TestPaperNumbers:
    def test_uncertain_marks_follow_shared_paper(self) -> None:
        """The (?) values of shared/paper.md are exactly the ones marked uncertain."""
        assert TABLE2["dropout + max-norm ReLU 3×2048"].uncertain
        assert str(TABLE2["dropout + max-norm ReLU 3×2048"]) == "1.04 (?)"
        assert not TABLE2["dropout + max-norm ReLU 2×8192"].uncertain
        assert TABLE4[("cifar100", "dropout in fc layers")].uncertain
        assert TABLE10_STD["MNIST 2×1024 Gaussian"].uncertain
        assert not any(v.uncertain for v in TABLE9.values())

    def test_table_values(self) -> None:
        """Spot checks of printed values (Tables 2, 9, 4)."""
        assert TABLE2["dropout + max-norm ReLU 2×8192"].value == 0.95
        assert TABLE9["dropout + max-norm"].value == 1.05
        assert TABLE4[("cifar10", "dropout in all layers")].value == 12.61
