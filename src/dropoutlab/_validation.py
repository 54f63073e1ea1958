"""Argument checks shared by the public API, all raising in one template.

The message names the argument, what was expected and what was received, e.g.
``ValueError("`p` must be a number in [0, 1], got p=1.5")``.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

SCALE_MODES = ("train", "test")


def check_probability(value: object, name: str = "p", *, allow_one: bool = True) -> float:
    """Return ``value`` as a float after checking it is a real number in [0, 1] (or [0, 1)).

    Raises:
        ValueError: if the value is not a real number, is NaN, or lies outside the range.
    """
    if type(value) is float and value >= 0.0 and (value <= 1.0 if allow_one else value < 1.0):
        return value  # the common case, without the slower isinstance(value, Real)
    interval = "[0, 1]" if allow_one else "[0, 1)"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"`{name}` must be a number in {interval}, got {name}={value!r}")
    number = float(value)
    upper_ok = number <= 1.0 if allow_one else number < 1.0
    if math.isnan(number) or number < 0.0 or not upper_ok:
        raise ValueError(f"`{name}` must be a number in {interval}, got {name}={value!r}")
    return number


def check_positive_finite(value: object, name: str) -> float:
    """Return ``value`` as a float after checking it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"`{name}` must be a finite number > 0, got {name}={value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {name}={value!r}")
    return number


def check_scale(scale: object) -> str:
    """Check the dropout scale mode: ``"train"`` (inverted dropout) or ``"test"`` (the paper's)."""
    if scale not in SCALE_MODES:
        raise ValueError(f"`scale` must be one of {SCALE_MODES}, got scale={scale!r}")
    return str(scale)


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` after checking it is a bool (``inplace=1`` is refused, as a typo)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {name}={value!r}")
    return value


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` after checking it is an int ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {name}={value!r}")
    return value


_DROPOUT_WHY = (
    "dropout scales kept values by 1/(1-p) (or multiplies by Gaussian noise), which integers "
    "cannot hold"
)


def check_floating(x: object, name: str = "x", *, why: str = _DROPOUT_WHY) -> torch.Tensor:
    """Check that ``x`` is a floating-point tensor; ``why`` ends the message (e.g. integers
    cannot hold dropout's 1/(1-p) scaling)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating-point tensor, got dtype={x.dtype}: {why}"
        )
    return x
