"""A user's own model builder for the tune tests: fn(p, p_input) -> nn.Module (importable by
name in sweep workers, as dropoutlab.tune.tune_model requires)."""

from __future__ import annotations

from torch import nn

import dropoutlab as dl


def small_digits_net(p: float, p_input: float) -> nn.Module:
    """64-32-10 ReLU net with dropout put in by dl.insert_dropout."""
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return dl.insert_dropout(net, p=p, p_input=p_input or None)
