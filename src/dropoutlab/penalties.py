"""The regularizers the paper compares dropout with (Srivastava et al. 2014, §6.5, Table 9).

Each function returns a scalar tensor to be multiplied by its coefficient and added to the loss:
``loss = nll + lam2 * penalties.l2(model)``. Weight penalties cover weight matrices and conv
filters (parameters with two or more dimensions), never biases.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Real

import torch
from torch import nn

from dropoutlab._validation import check_floating

__all__ = ["kl_sparsity", "l1", "l2", "weight_parameters"]


def weight_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Yield the parameters weight penalties apply to: those with ``dim() >= 2``.

    That is weight matrices and conv filters; biases and norm-layer scales are left out.
    """
    return (param for param in model.parameters() if param.dim() >= 2)


def _sum_over_weights(model: nn.Module, term: str) -> torch.Tensor:
    weights = list(weight_parameters(model))
    if not weights:
        raise ValueError(f"`model` has no weight matrices to penalise with {term}")
    parts = [w.pow(2).sum() if term == "l2" else w.abs().sum() for w in weights]
    total = parts[0]
    for part in parts[1:]:
        total = total + part  # promotes across dtypes, unlike torch.stack
    return total


def l2(model: nn.Module) -> torch.Tensor:
    """Sum of squared weights, Σ‖W‖²_F over weight matrices and filters (§6.5, Table 9's L2).

    Biases are not penalised. Multiply by λ/2 for the usual weight decay λ.

    Raises:
        ValueError: ``model`` has no parameter with two or more dimensions.
    """
    return _sum_over_weights(model, "l2")


def l1(model: nn.Module) -> torch.Tensor:
    """Sum of absolute weights, Σ|W| over weight matrices and filters (§6.5, Table 9's L1).

    Raises:
        ValueError: ``model`` has no parameter with two or more dimensions.
    """
    return _sum_over_weights(model, "l1")


def _check_open_unit(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1), got {name}={value!r}")
    return float(value)


def _bernoulli_kl(rho: float, q: torch.Tensor) -> torch.Tensor:
    """KL(ρ ‖ q) between Bernoulli distributions, elementwise in q ∈ (0, 1)."""
    return rho * torch.log(rho / q) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - q))


def kl_sparsity(activations: torch.Tensor, target: float, *, eps: float = 1e-2) -> torch.Tensor:
    """KL-sparsity penalty Σ_j KL(ρ ‖ ρ̂_j) on a layer's mean activations (§6.5, Table 9).

    ρ̂_j is unit j's activation averaged over the batch (dimension 0, and any spatial dimensions
    after the channel dimension). KL(ρ ‖ q) is only defined for q in (0, 1), and ReLU means can
    be 0 or exceed 1, so outside [eps, 1 − eps] the penalty continues as the tangent line at the
    nearest end: it stays finite and its gradient keeps pushing ρ̂_j towards ρ (a plain clamp
    would give such units no gradient at all). The slope there is about (1 − ρ)/eps above and
    −ρ/eps below: with the default eps = 0.01 a ReLU unit whose mean exceeds 1 gets a steady
    push of at most ~100 per unit of mean, not the ~10⁶ a tiny eps would give.

    Args:
        activations: A layer's outputs of shape (B, units) or (B, channels, *spatial).
        target: The desired mean activation ρ, in (0, 1).
        eps: Where the tangent continuation starts, in (0, 0.5). Inside [eps, 1 − eps] the
            penalty is the exact KL.

    Returns:
        A scalar tensor (float32, or float64 for float64 activations), differentiable with
        respect to ``activations``.

    Raises:
        ValueError: ``target`` is not in (0, 1), ``eps`` not in (0, 0.5), or ``activations``
            has fewer than two dims.
        TypeError: ``activations`` is not a floating-point tensor.
    """
    rho = _check_open_unit(target, "target")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0.0 < float(eps) < 0.5:
        raise ValueError(f"`eps` must be a number in (0, 0.5), got eps={eps!r}")
    check_floating(activations, "activations", why="a mean activation is a fraction")
    if activations.dim() < 2:
        raise ValueError(
            "`activations` must have shape (batch, units, ...), "
            f"got shape {tuple(activations.shape)}"
        )
    reduce = (0, *range(2, activations.dim()))
    work_dtype = torch.promote_types(activations.dtype, torch.float32)
    rho_hat = activations.to(work_dtype).mean(dim=reduce)  # (units,)
    inside = rho_hat.clamp(float(eps), 1.0 - float(eps))
    slope = (-rho / inside + (1.0 - rho) / (1.0 - inside)).detach()  # dKL/dq at the clamp
    kl = _bernoulli_kl(rho, inside) + slope * (rho_hat - inside)  # exact inside [eps, 1 - eps]
    return kl.sum()
