"""Fast native CPU dropout kernels (not built yet: the torch reference path is used)."""

from __future__ import annotations

import torch


def available() -> bool:
    """Whether the native kernels are usable on this machine."""
    return False


def require() -> None:
    """Raise if the native kernels cannot be used."""
    raise RuntimeError("the native dropout kernels are not available in this build")


def supports(x: torch.Tensor) -> bool:
    """Whether the native kernels handle tensors like ``x``."""
    return False


def dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native Bernoulli dropout."""
    require()
    raise AssertionError


def gaussian_dropout(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Native Gaussian dropout."""
    require()
    raise AssertionError
