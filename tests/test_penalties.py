"""Tests of :mod:`dropoutlab.penalties`: the regularizers of Table 9 (§6.5). Deterministic."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from dropoutlab import penalties


def small_model() -> nn.Module:
    """Linear + Conv2d + BatchNorm: weights are the ≥2-d parameters, the rest are not."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def bernoulli_kl(rho: float, q: float) -> float:
    """KL(Bernoulli(ρ) ‖ Bernoulli(q)) in nats."""
    return rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))


class TestWeightPenalties:
    """``l2``, ``l1`` and ``weight_parameters``."""

    def test_weight_parameters_are_matrices_and_filters(self) -> None:
        """Only the conv filter bank and the Linear weight: no biases, no norm scales."""
        model = small_model()
        chosen = list(penalties.weight_parameters(model))
        assert len(chosen) == 2
        assert chosen[0] is model[0].weight and chosen[1] is model[3].weight

    def test_l2_is_the_sum_of_squared_weights(self) -> None:
        """l2 = Σ‖W‖²_F over weights only; its gradient is 2W on weights, nothing on biases."""
        model = small_model()
        value = penalties.l2(model)
        expected = model[0].weight.pow(2).sum() + model[3].weight.pow(2).sum()
        torch.testing.assert_close(value, expected)
        value.backward()
        torch.testing.assert_close(model[3].weight.grad, 2 * model[3].weight.detach())
        assert model[3].bias.grad is None and model[1].weight.grad is None

    def test_l1_is_the_sum_of_absolute_weights(self) -> None:
        """l1 = Σ|W| over weights only; its gradient is sign(W)."""
        model = small_model()
        value = penalties.l1(model)
        expected = model[0].weight.abs().sum() + model[3].weight.abs().sum()
        torch.testing.assert_close(value, expected)
        value.backward()
        torch.testing.assert_close(model[0].weight.grad, model[0].weight.detach().sign())
        assert model[0].bias.grad is None

    def test_mixed_dtypes_are_summed(self) -> None:
        """A float64 and a float32 weight in one model still give one scalar (promoted)."""
        model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double())
        assert penalties.l2(model).dtype == torch.float64

    @pytest.mark.parametrize("fn", [penalties.l1, penalties.l2])
    def test_model_without_weights_raises(self, fn: object) -> None:
        """A model with no weight matrix cannot be penalised: ValueError saying so."""
        with pytest.raises(ValueError, match=r"`model` has no weight matrices to penalise"):
            fn(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))  # type: ignore[operator]


class TestKLSparsity:
    """``kl_sparsity(activations, target)``: Σ_j KL(ρ ‖ ρ̂_j)."""

    def test_closed_form_for_known_means(self) -> None:
        """Unit means 0.1 and 0.5 with ρ = 0.05 give KL(0.05‖0.1) + KL(0.05‖0.5)."""
        acts = torch.tensor([[0.0, 0.25], [0.2, 0.75]], dtype=torch.float64)
        value = penalties.kl_sparsity(acts, 0.05)
        expected = bernoulli_kl(0.05, 0.1) + bernoulli_kl(0.05, 0.5)
        assert value.item() == pytest.approx(expected, rel=1e-12)
        assert value.dtype == torch.float64

    def test_zero_at_target_and_gradient_points_to_target(self) -> None:
        """Zero when every mean is ρ; the gradient pushes means above ρ down, below ρ up."""
        at_target = torch.full((4, 3), 0.2)
        assert penalties.kl_sparsity(at_target, 0.2).item() == pytest.approx(0.0, abs=1e-7)
        acts = torch.tensor([[0.5, 0.05], [0.5, 0.05]], requires_grad=True)
        penalties.kl_sparsity(acts, 0.2).backward()
        assert acts.grad is not None
        assert (acts.grad[:, 0] > 0).all() and (acts.grad[:, 1] < 0).all()

    def test_spatial_dims_are_averaged(self) -> None:
        """(B, C, H, W) activations: ρ̂ per channel averages over batch and space."""
        acts = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
        flat = acts.permute(0, 2, 3, 1).reshape(-1, 3)  # (B·H·W, C)
        torch.testing.assert_close(penalties.kl_sparsity(acts, 0.1),
                                   penalties.kl_sparsity(flat, 0.1))

    def test_relu_means_outside_unit_interval_still_pushed(self) -> None:
        """A ReLU unit with mean 2 (or 0) gets a finite penalty and a gradient towards ρ: the
        penalty continues as the tangent line beyond [eps, 1 − eps], and it is continuous."""
        eps = 1e-3
        acts = torch.tensor([[2.0, 0.0], [2.0, 0.0]], requires_grad=True)
        value = penalties.kl_sparsity(acts, 0.1, eps=eps)
        assert torch.isfinite(value)
        value.backward()
        assert acts.grad is not None
        assert (acts.grad[:, 0] > 0).all() and (acts.grad[:, 1] < 0).all()
        # continuity at the edge: just inside and at the clamp the values agree
        edge = torch.tensor([[1 - eps, eps]], dtype=torch.float64)
        expected = bernoulli_kl(0.1, 1 - eps) + bernoulli_kl(0.1, eps)
        assert penalties.kl_sparsity(edge, 0.1, eps=eps).item() == pytest.approx(expected)
        # beyond the edge it grows linearly with the boundary slope
        slope_high = -0.1 / (1 - eps) + 0.9 / eps
        beyond = torch.tensor([[1 - eps + 0.5, 0.3]], dtype=torch.float64)
        expected = bernoulli_kl(0.1, 1 - eps) + 0.5 * slope_high + bernoulli_kl(0.1, 0.3)
        assert penalties.kl_sparsity(beyond, 0.1, eps=eps).item() == pytest.approx(expected)

    def test_default_slope_beyond_one_is_bounded(self) -> None:
        """With the default eps = 0.01, a mean far above 1 gets d penalty / d ρ̂ equal to the
        tangent slope at 0.99, (1 − ρ)/0.01 − ρ/0.99 < 100: a steady push, not an explosion."""
        acts = torch.full((1, 1), 5.0, requires_grad=True)  # batch of 1: d/dρ̂ = d/d act
        penalties.kl_sparsity(acts, 0.05).backward()
        assert acts.grad is not None
        assert acts.grad.item() == pytest.approx(0.95 / 0.01 - 0.05 / 0.99, rel=1e-5)

    @pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.1", None])
    def test_bad_target_raises(self, target: object) -> None:
        """ρ outside (0, 1), NaN or not a number: ValueError naming the open interval."""
        message = re.escape(f"`target` must be a number in (0, 1), got target={target!r}")
        with pytest.raises(ValueError, match=message):
            penalties.kl_sparsity(torch.rand(2, 3), target)  # type: ignore[arg-type]

    @pytest.mark.parametrize("eps", [0.0, 0.5, -1e-6, float("nan")])
    def test_bad_eps_raises(self, eps: float) -> None:
        """eps must lie in (0, 0.5)."""
        with pytest.raises(ValueError, match=r"`eps` must be a number in \(0, 0\.5\)"):
            penalties.kl_sparsity(torch.rand(2, 3), 0.1, eps=eps)

    def test_one_dimensional_activations_raise(self) -> None:
        """(units,) without a batch dimension is refused, with the shape received."""
        with pytest.raises(ValueError, match=r"shape \(batch, units, \.\.\.\), got shape \(3,\)"):
            penalties.kl_sparsity(torch.rand(3), 0.1)

    def test_integer_activations_raise_type_error(self) -> None:
        """Integer activations are refused with a TypeError."""
        with pytest.raises(TypeError, match=r"`activations` must be a floating-point tensor"):
            penalties.kl_sparsity(torch.ones(2, 3, dtype=torch.int64), 0.1)
