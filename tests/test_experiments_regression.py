"""Oracle tests of §9.1's dropout linear regression (marginalized-regression's task).

The expectation over masks is computed exactly by enumerating every mask of a tiny problem, and
the closed form is checked against the gradient of the marginalized objective.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.experiments.marginalized_regression import (
    closed_form,
    expected_loss,
    run_task,
    synthetic_problem,
)


@pytest.mark.parametrize("retain", [0.2, 0.5, 0.8])
def test_identity_by_enumerating_every_mask(retain: float) -> None:
    """E_R‖y − (R∗X)w‖² = ‖y − pXw‖² + p(1−p)‖Γw‖², with the expectation over all 2⁶ masks."""
    rng = np.random.default_rng(3)
    x, y, w = rng.normal(size=(2, 3)), rng.normal(size=2), rng.normal(size=3)
    exact = 0.0
    for bits in itertools.product([0, 1], repeat=x.size):
        mask = np.array(bits, dtype=float).reshape(x.shape)
        prob = np.prod(np.where(mask == 1, retain, 1 - retain))
        exact += prob * np.sum((y - (mask * x) @ w) ** 2)
    assert expected_loss(x, y, w, retain) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("retain", [0.3, 0.9])
def test_closed_form_zeroes_the_gradient(retain: float) -> None:
    """At w* the gradient of ‖y − pXw‖² + p(1−p)‖Γw‖² vanishes, and p = 1 gives OLS."""
    x, y = synthetic_problem(200, 6, seed=1)
    w = closed_form(x, y, retain)
    gamma_sq = np.diag(x.T @ x)
    grad = -2 * retain * x.T @ (y - retain * x @ w) + 2 * retain * (1 - retain) * gamma_sq * w
    assert np.abs(grad).max() < 1e-8 * np.abs(x.T @ y).max()
    ols = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(closed_form(x, y, 1.0), ols, rtol=1e-8)


def test_sgd_converges_to_the_closed_form() -> None:
    """The task's SGD on masked inputs lands within 5 % of w*, far from OLS (seeded)."""
    config = with_changes(RunConfig(), {"model.drop_input": 0.5, "epochs": 400,
                                        "data.train_size": 300, "optim.batch_size": 10,
                                        "optim.lr": 0.02, "seed": 0})
    result = run_task(config)
    assert result["status"] == "done"
    assert result["metrics"]["rel_distance"] < 0.05
    assert result["metrics"]["rel_distance_ols"] > 0.5
    assert result["metrics"]["identity_rel_error"] < 5 * result["metrics"]["identity_mc_stderr"]
