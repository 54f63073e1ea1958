"""The regularizers the paper compares dropout with (Srivastava et al. 2014, §6.1.3, Table 9).

Each function returns a scalar tensor to be multiplied by its coefficient and added to the loss:
``loss = nll + lam2 * penalties.l2(model)``. Weight penalties cover weight matrices and conv
filters (parameters with two or more dimensions), never biases.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from dropoutlab._validation import check_probability

__all__ = ["kl_sparsity", "l1", "l2", "weight_parameters"]


def weight_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Yield the parameters that weight penalties apply to: those with ``dim() >= 2``."""
    return (param for param in model.parameters() if param.dim() >= 2)


def _sum_over_weights(model: nn.Module, term: str) -> torch.Tensor:
    weights = list(weight_parameters(model))
    if not weights:
        raise ValueError(f"`model` has no weight matrices to penalise with {term}")
    if term == "l2":
        parts = [w.pow(2).sum() for w in weights]
    else:
        parts = [w.abs().sum() for w in weights]
    return torch.stack(parts).sum()


def l2(model: nn.Module) -> torch.Tensor:
    """Sum of squared weights, Σ‖W‖²_F over weight matrices and filters (weight decay)."""
    return _sum_over_weights(model, "l2")


def l1(model: nn.Module) -> torch.Tensor:
    """Sum of absolute weights, Σ|W| over weight matrices and filters (Table 9's L1 term)."""
    return _sum_over_weights(model, "l1")


def kl_sparsity(activations: torch.Tensor, target: float, *, eps: float = 1e-6) -> torch.Tensor:
    """KL-sparsity penalty Σ_j KL(ρ ‖ ρ̂_j) on a layer's mean activations (Table 9).

    ρ̂_j is unit j's activation averaged over the batch (dimension 0, and any spatial dimensions
    after the channel dimension), clamped into [eps, 1 − eps] so that ReLU units, whose means may
    exceed 1, still get a finite penalty that pushes them towards ρ.

    Args:
        activations: A layer's outputs of shape (B, units) or (B, channels, *spatial).
        target: The desired mean activation ρ, in (0, 1).
        eps: Clamp for ρ̂ to keep the logarithms finite.

    Returns:
        A scalar tensor, differentiable with respect to ``activations``.

    Raises:
        ValueError: ``target`` is not in (0, 1), or ``activations`` has fewer than two dims.
    """
    rho = check_probability(target, "target", allow_one=False)
    if rho == 0.0:
        raise ValueError(f"`target` must be a number in (0, 1), got target={target!r}")
    if activations.dim() < 2:
        raise ValueError(
            "`activations` must have shape (batch, units, ...), "
            f"got shape {tuple(activations.shape)}"
        )
    reduce = (0, *range(2, activations.dim()))
    rho_hat = activations.float().mean(dim=reduce).clamp(eps, 1.0 - eps)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return kl.sum()
