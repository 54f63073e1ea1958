"""The max-norm constraint (Srivastava et al. 2014, §5.1 and Appendix B.1).

Each hidden unit's *incoming* weight vector w is kept inside the ball ‖w‖₂ ≤ c by projecting it
back onto the ball after every update. For ``nn.Linear`` (weight of shape (out, in)) a unit's
incoming vector is a row; for a convolution (out, in, *kernel) it is one whole filter. Biases are
never constrained. Typical c is 3–4; the paper used c = 2 for MNIST in Appendix B.1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from dropoutlab._validation import check_floating, check_positive_finite

__all__ = ["MaxNorm", "max_norm_"]

_CONSTRAINED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _reduce_dims(weight: torch.Tensor, dim: int | Sequence[int]) -> tuple[int, ...]:
    """The dimensions that hold one unit's incoming vector, as non-negative indices."""
    ndim = weight.dim()
    dims = (dim,) if not isinstance(dim, Sequence) else tuple(dim)
    if not dims:
        raise ValueError(f"`dim` must name at least one dimension, got dim={dim!r}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not -ndim <= d < ndim:
            raise ValueError(
                f"`dim` must index dimensions of the {ndim}-d weight (in [{-ndim}, {ndim})), "
                f"got dim={dim!r}"
            )
    if isinstance(dim, int):
        return tuple(range(dim % ndim, ndim))  # d and every dimension after it
    return tuple(sorted({d % ndim for d in dims}))


@torch.no_grad()
def max_norm_(
    weight: torch.Tensor, max_norm: float, *, dim: int | Sequence[int] = 1
) -> torch.Tensor:
    """Project every incoming weight vector onto the ball of radius ``max_norm``, in place.

    Vectors already inside the ball are left bit-for-bit untouched; longer ones are rescaled to
    norm ``max_norm`` (§5.1), up to the rounding of ``weight``'s dtype. Norms and the rescaling
    are computed in at least float32 (float64 stays float64), so half-precision weights are
    rounded once, at the end.

    Args:
        weight: The weight tensor, e.g. ``linear.weight`` (out, in) or ``conv.weight``
            (out, in, kh, kw).
        max_norm: The radius c, a finite number > 0.
        dim: Where a unit's incoming vector lives. An int ``d`` means dimensions ``d`` and all
            after it, so the default ``1`` is a row of a Linear weight and a whole filter of a
            conv weight; a sequence names the dimensions exactly.

    Returns:
        ``weight``, modified in place.

    Raises:
        ValueError: ``max_norm`` is not a finite number > 0, or ``dim`` is out of range.
        TypeError: ``weight`` is not a floating-point tensor.
    """
    c = check_positive_finite(max_norm, "max_norm")
    check_floating(weight, "weight", why="rescaling a vector to norm c needs fractions")
    dims = _reduce_dims(weight, dim)
    # float32 for half precision, float64 for float64: a float64 vector whose norm exceeds c by
    # less than float32 rounding must still be projected.
    work_dtype = torch.promote_types(weight.dtype, torch.float32)
    work = weight.to(work_dtype)
    norms = torch.linalg.vector_norm(work, dim=dims, keepdim=True)
    too_long = norms > c
    if bool(too_long.any()):
        factor = torch.where(too_long, c / norms, torch.ones_like(norms))  # exactly 1 inside
        if work is weight:  # float32/float64: the same products, without a temporary
            weight.mul_(factor)
        else:
            weight.copy_(work * factor)
    return weight


class MaxNorm:
    """A stateless max-norm constraint for a whole model (§5.1): ``MaxNorm(3.0)(model)``.

    Call it right after ``optimizer.step()``: every ``nn.Linear`` and ``nn.Conv*d`` weight in
    ``model`` is projected with :func:`max_norm_` (rows of Linear weights, whole filters of conv
    weights); biases and other parameters are left alone (§5.1).

    Args:
        max_norm: The radius c, a finite number > 0.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3))
        >>> _ = nn.init.constant_(model[0].weight, 10.0)
        >>> MaxNorm(2.0)(model)
        >>> float(model[0].weight.norm(dim=1).max()) <= 2.0
        True
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = check_positive_finite(max_norm, "max_norm")

    def __call__(self, model: nn.Module) -> None:
        """Project every ``nn.Linear``/``nn.Conv*d`` weight of ``model`` in place.

        Lazy modules whose weights are not materialised yet are skipped.
        """
        for module in model.modules():
            if isinstance(module, _CONSTRAINED) and not is_lazy(module.weight):
                max_norm_(module.weight, self.max_norm, dim=1)

    def __repr__(self) -> str:
        """``MaxNorm(max_norm=c)``."""
        return f"MaxNorm(max_norm={self.max_norm})"
