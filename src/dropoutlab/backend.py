"""Where dropout masks are drawn: the plain-torch reference path and the fast native path.

``functional.dropout`` and ``functional.gaussian_dropout`` validate their arguments and then call
:func:`dropout` / :func:`gaussian_dropout` here with the resolved scale factor. This module picks
the implementation:

* ``"torch"``: the reference path, built from ``torch.bernoulli_``/``normal_`` (and torch's fused
  dropout kernel for inverted dropout on CUDA, with or without a generator). Always available.
* ``"native"``: the fast CPU path in :mod:`dropoutlab.kernels` (counter-based random numbers,
  multi-threaded, masks regenerated from a seed in backward so nothing is saved), registered as
  torch operators so that ``torch.compile``, ``torch.export`` and ``torch.func`` see them. Used
  only for float32, float64, bfloat16 and float16 CPU tensors
  (:func:`dropoutlab.kernels.supports`); others take the torch path.
* ``"auto"`` (default): native where it is available and applies, torch otherwise.

Choose with the environment variable ``DROPOUTLAB_BACKEND`` or :func:`set_backend` /
:func:`use_backend`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from dropoutlab import kernels

BACKENDS = ("auto", "torch", "native")
_ENV_VAR = "DROPOUTLAB_BACKEND"


def _check_backend(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got backend={name!r}")
    return str(name)


_selected: str = _check_backend(os.environ.get(_ENV_VAR, "auto"))


def get_backend() -> str:
    """Return the selected backend name: ``"auto"``, ``"torch"`` or ``"native"``."""
    return _selected


def set_backend(name: str) -> None:
    """Select the backend for all later dropout calls in this process.

    Args:
        name: ``"auto"``, ``"torch"`` or ``"native"``. ``"native"`` raises at the next CPU call
            if the native kernels cannot be built on this machine.
    """
    global _selected
    _selected = _check_backend(name)


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager that selects a backend for the duration of a ``with`` block."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _native_applies(x: torch.Tensor) -> bool:
    """Whether the native kernels should handle ``x`` under the selected backend."""
    if _selected == "torch" or not x.is_cpu:
        return False
    if _selected == "native":
        if not kernels.operators_available():
            kernels.require_operators()  # raises with the reason the kernels cannot be built
        return kernels.supports(x)
    return kernels.operators_available() and kernels.supports(x)


def dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Training-mode Bernoulli dropout with drop probability ``0 < p < 1``; kept units × factor."""
    if _native_applies(x):
        return kernels.dropout(x, p, factor, generator)
    return reference_dropout(x, p, factor, generator)


def relu_dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Training-mode ``dropout(relu(x))``; one fused pass on the native path, bitwise equal."""
    if _native_applies(x):
        return kernels.relu_dropout(x, p, factor, generator)
    return reference_dropout(torch.relu(x), p, factor, generator)


def gaussian_dropout(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Training-mode multiplicative Gaussian noise N(1, sigma²) (Srivastava et al. 2014, §10)."""
    if _native_applies(x):
        return kernels.gaussian_dropout(x, sigma, generator)
    return reference_gaussian_dropout(x, sigma, generator)


def reference_dropout(
    x: torch.Tensor, p: float, factor: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Plain-torch Bernoulli dropout: the oracle every faster path is tested against."""
    if x.device.type == "cuda" and factor != 1.0:
        # torch's fused kernel: one pass, a one-byte mask saved for backward. It scales kept
        # units by 1/(1-p), so it serves inverted dropout only; the paper's unscaled form keeps
        # x exactly below. `_fused_dropout` (keep probability, optional generator) runs the same
        # CUDA kernel as `F.dropout`, which cannot take a generator.
        if generator is None:
            return torch.nn.functional.dropout(x, p, training=True)
        return torch._fused_dropout(x, 1.0 - p, generator)[0]
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)  # 1 = kept
    if factor != 1.0:
        keep.mul_(factor)
    return x * keep


def reference_gaussian_dropout(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Plain-torch multiplicative Gaussian noise: the oracle for the native path."""
    noise = torch.empty_like(x).normal_(1.0, sigma, generator=generator)
    return x * noise
