"""Pure dropout operations (Srivastava et al., JMLR 2014, §4 and §10).

``p`` is the **drop** probability everywhere, as in ``torch.nn.functional.dropout``. The paper's
p is the *retention* probability: paper p = 1 − our p.

Two ways to keep the expected output equal to the input (§4, Figure 2):

* ``scale="train"`` (inverted dropout, the default): kept units are multiplied by 1/(1−p) while
  training; evaluation is the identity.
* ``scale="test"`` (the paper's form): no scaling while training; at evaluation the outputs are
  multiplied by (1−p), which is the paper's "weights scaled by p" test-time network.

Gaussian dropout (§10) multiplies by noise r ~ N(1, σ²) with σ² = p/(1−p), which has the same mean
and variance as inverted Bernoulli noise r ∈ {0, 1/(1−p)}.

Arguments follow ``torch.nn.functional.dropout``: ``(x, p, training, inplace)``, then the
keyword-only ``scale`` and ``generator``. ``inplace=True`` writes the result into ``x`` and
returns it; the result is computed first (as torch's CPU dropout first computes its mask), so
it saves no memory over ``inplace=False``. The output keeps the input's memory format
(channels_last stays channels_last).

The functions work unchanged under ``torch.compile(fullgraph=True)``, ``torch.export`` and
``torch.func``: the native path is a set of torch operators (:mod:`dropoutlab.kernels`). A
``generator=`` cannot enter a compiled graph (Dynamo cannot pass a ``torch.Generator`` into
one): under ``torch.compile`` the seed is then drawn outside the graph (one graph break), and
``fullgraph=True`` raises saying so. ``torch.manual_seed`` gives the same masks compiled and
eager.
"""

from __future__ import annotations

import math

import torch

from dropoutlab import backend
from dropoutlab._validation import check_bool, check_floating, check_probability, check_scale

__all__ = ["dropout", "gaussian_dropout", "gaussian_sigma", "relu_dropout"]


def _write(x: torch.Tensor, out: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``out``, or ``x`` holding ``out``'s values when ``inplace``."""
    return x.copy_(out) if inplace and out is not x else out


def dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    scale: str = "train",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bernoulli dropout: zero each element independently with probability ``p`` (§4).

    Args:
        x: Input of any shape and floating dtype, contiguous or not, on any device.
        p: Drop probability in [0, 1] (the paper's retention probability is 1 − p).
        training: Draw a mask if True; otherwise apply the test-time rule of ``scale``.
        inplace: Write the result into ``x`` and return ``x``, as ``torch.nn.Dropout`` does.
        scale: ``"train"`` for inverted dropout (kept × 1/(1−p) in training, identity in
            evaluation) or ``"test"`` for the paper's form (no scaling in training, × (1−p) in
            evaluation).
        generator: Source of randomness; ``None`` draws from torch's global generator. Must live
            on ``x``'s device. The same seeded generator gives bitwise identical outputs.

    Returns:
        A tensor of ``x``'s shape, dtype, device and memory format. ``x`` itself when ``p == 0``,
        in evaluation with ``scale="train"``, and when ``inplace``.

    Raises:
        ValueError: ``p`` is not a number in [0, 1], or ``scale`` is unknown.
        TypeError: ``x`` is not a floating-point tensor, or ``inplace`` is not a bool.

    Example:
        >>> x = torch.ones(4, 3)
        >>> y = dropout(x, p=0.5, generator=torch.Generator().manual_seed(0))
        >>> sorted(set(y.flatten().tolist())) in ([0.0, 2.0], [2.0], [0.0])
        True
    """
    p = check_probability(p, "p")
    scale = check_scale(scale)
    check_floating(x)
    check_bool(inplace, "inplace")
    if p == 0.0:
        return x
    if not training:
        if scale == "train":
            return x
        return x.mul_(1.0 - p) if inplace else x * (1.0 - p)
    if p == 1.0:
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return x.mul_(zero) if inplace else x * zero
    factor = 1.0 / (1.0 - p) if scale == "train" else 1.0
    return _write(x, backend.dropout(x, p, factor, generator), inplace)


def relu_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    scale: str = "train",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``dropout(torch.relu(x), p, training, ...)`` in one pass over memory where it can.

    The hidden layer of a ReLU dropout net (§4): bitwise the result, and the gradient, of the two
    separate calls with the same generator state, on every backend; the native CPU path does both
    in one pass forward and one backward (the mask is regenerated, the input is kept instead of
    ReLU's output). Arguments, return value and errors are those of :func:`dropout`.

    Example:
        >>> x = torch.tensor([[-1.0, 2.0, 3.0, -4.0]])
        >>> y = relu_dropout(x, p=0.5, generator=torch.Generator().manual_seed(0))
        >>> bool((y[x <= 0] == 0).all())
        True
    """
    p = check_probability(p, "p")
    scale = check_scale(scale)
    check_floating(x)
    check_bool(inplace, "inplace")
    if p == 0.0 or not training or p == 1.0 or inplace:
        # In place, the fused op's saved input would be overwritten: relu then dropout instead
        # (bitwise the same values and gradients).
        out = dropout(torch.relu(x), p, training, scale=scale, generator=generator)
        return _write(x, out, inplace)
    factor = 1.0 / (1.0 - p) if scale == "train" else 1.0
    return _write(x, backend.relu_dropout(x, p, factor, generator), inplace)


def gaussian_sigma(p: float) -> float:
    """Standard deviation σ = sqrt(p / (1 − p)) of Gaussian dropout noise for drop probability p.

    This matches the variance of inverted Bernoulli noise (§10); in the paper's retention terms
    σ = sqrt((1 − p_retain) / p_retain).
    """
    p = check_probability(p, "p", allow_one=False)
    return math.sqrt(p / (1.0 - p))


def gaussian_dropout(
    x: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian multiplicative dropout: ``x * r`` with ``r ~ N(1, p/(1−p))`` per element (§10).

    Args:
        x: Input of any shape and floating dtype, contiguous or not, on any device.
        p: Drop probability of the Bernoulli dropout whose first two moments the noise matches,
            in [0, 1).
        training: Multiply by noise if True; evaluation is the identity.
        inplace: Write the result into ``x`` and return ``x``.
        generator: Source of randomness; ``None`` draws from torch's global generator.

    Returns:
        A tensor of ``x``'s shape, dtype, device and memory format; ``x`` itself when ``p == 0``,
        in evaluation, and when ``inplace``.

    Raises:
        ValueError: ``p`` is not a number in [0, 1).
        TypeError: ``x`` is not a floating-point tensor, or ``inplace`` is not a bool.
    """
    sigma = gaussian_sigma(p)
    check_floating(x)
    check_bool(inplace, "inplace")
    if sigma == 0.0 or not training:
        return x
    return _write(x, backend.gaussian_dropout(x, sigma, generator), inplace)
