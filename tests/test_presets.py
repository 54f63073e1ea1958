"""The presets: each builds a valid config; table9-paper is the paper's Table 9 best row."""

from __future__ import annotations

import pytest

from dropoutlab import recipe
from dropoutlab.precision import resolve_precision
from dropoutlab.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name: str) -> None:
    """Every preset is a valid, fully resolved config (auto precision already resolved)."""
    config = get_preset(name)
    assert config.precision in ("fp32", "bf16")


def test_table9_paper_is_the_papers_recipe() -> None:
    """784-1024-1024-2048-10 ReLU, retention 0.8/0.5, max-norm 3, batch 100, at least 10⁶
    updates on train + validation; lr ε₀/(1 + t/10⁴) and momentum 0.5 → 0.99 over 10⁵
    updates, as in shared/paper.md."""
    config = get_preset("table9-paper")
    model, optim = config.model, config.optim
    assert model.hidden == (1024, 1024, 2048) and model.activation == "relu"
    assert (model.drop_input, model.drop_hidden) == (pytest.approx(0.2), pytest.approx(0.5))
    assert optim.max_norm == 3.0 and optim.batch_size == 100
    assert config.data.merge_validation
    updates = config.epochs * 60_000 // optim.batch_size
    assert 1_000_000 <= updates < 1_000_000 + 60_000 // optim.batch_size
    assert recipe.learning_rate(optim, 10_000, 0) == pytest.approx(0.5)
    assert recipe.momentum(optim, 0) == pytest.approx(0.5)
    assert recipe.momentum(optim, 100_000) == pytest.approx(0.99)
    assert config.precision == resolve_precision("auto")
