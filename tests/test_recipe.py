"""Tests for dropoutlab.recipe: schedules against hand-computed values, the update, max-norm."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropoutlab.config import OptimConfig
from dropoutlab.constraints import MaxNorm
from dropoutlab.recipe import MomentumSGD, learning_rate, momentum, penalty


class TestMomentum:
    def test_linear_ramp_hand_values(self) -> None:
        """Linear ramp 0.5 → 0.99 over 100 updates: 0.5, 0.745 halfway, 0.99 at and after 100."""
        optim = OptimConfig(momentum_start=0.5, momentum_end=0.99, momentum_updates=100)
        assert momentum(optim, 0) == pytest.approx(0.5)
        assert momentum(optim, 50) == pytest.approx(0.745)
        assert momentum(optim, 100) == pytest.approx(0.99)
        assert momentum(optim, 10_000) == pytest.approx(0.99)

    def test_exponential_ramp_hand_values(self) -> None:
        """Exponential ramp: 1 − m halfway is the geometric mean 0.5·sqrt(0.02) of 0.5 and 0.01."""
        optim = OptimConfig(momentum_start=0.5, momentum_end=0.99, momentum_updates=100,
                            momentum_ramp="exponential")
        assert momentum(optim, 0) == pytest.approx(0.5)
        assert momentum(optim, 50) == pytest.approx(1 - 0.5 * math.sqrt(0.02))
        assert momentum(optim, 100) == pytest.approx(0.99)
        assert momentum(optim, 500) == pytest.approx(0.99)

    def test_zero_length_ramp_is_constant(self) -> None:
        """momentum_updates=0 means the final momentum from the first update."""
        optim = OptimConfig(momentum_start=0.5, momentum_end=0.9, momentum_updates=0)
        assert momentum(optim, 0) == pytest.approx(0.9)


class TestLearningRate:
    def test_constant(self) -> None:
        """A constant schedule ignores step and epoch."""
        optim = OptimConfig(lr=0.3, lr_schedule="constant")
        assert learning_rate(optim, 12345, 17) == 0.3

    def test_exponential_per_epoch(self) -> None:
        """Exponential decay multiplies by lr_decay once per epoch: 1.0·0.9³ in epoch 3."""
        optim = OptimConfig(lr=1.0, lr_schedule="exponential", lr_decay=0.9)
        assert learning_rate(optim, 999, 0) == pytest.approx(1.0)
        assert learning_rate(optim, 0, 3) == pytest.approx(0.729)

    def test_inverse_t(self) -> None:
        """deepnet's ε₀/(1 + t/t₀) with ε₀ = 1, t₀ = 10⁴: 0.5 at update 10⁴, 0.25 at 3·10⁴."""
        optim = OptimConfig(lr=1.0, lr_schedule="inverse_t", lr_decay=10_000)
        assert learning_rate(optim, 0, 0) == pytest.approx(1.0)
        assert learning_rate(optim, 10_000, 5) == pytest.approx(0.5)
        assert learning_rate(optim, 30_000, 9) == pytest.approx(0.25)


def _one_weight_model(value: float) -> nn.Linear:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(value)
    return layer


class TestMomentumSGD:
    def test_update_is_seen_by_autograd(self, dropout_backend: str) -> None:
        """A graph that saved the weights before the step refuses to backward after it (the
        native one-pass update counts as an in-place write, like torch's)."""
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        opt = MomentumSGD(model)
        x = torch.randn(5, 4, requires_grad=True)
        stale = model(x).square().sum()  # saves the second layer's weight for backward
        model(x).sum().backward()
        opt.step(0.1, 0.5)
        with pytest.raises(RuntimeError, match="inplace"):
            stale.backward()

    @pytest.mark.parametrize("damped", [True, False])
    def test_two_updates_hand_computed(self, damped: bool) -> None:
        """Two steps on loss = w (gradient 1) match Δw = mΔw − (1−m)εg (damped) or mΔw − εg."""
        model = _one_weight_model(1.0)
        opt = MomentumSGD(model, damped=damped)
        lr, m = 0.1, 0.9
        expected_w, velocity = 1.0, 0.0
        for _ in range(2):
            opt.zero_grad()
            model.weight.sum().backward()
            opt.step(lr, m)
            velocity = m * velocity - ((1 - m) if damped else 1.0) * lr * 1.0
            expected_w += velocity
        assert model.weight.item() == pytest.approx(expected_w, abs=1e-7)

    def test_max_norm_applied_after_every_step(self) -> None:
        """With a huge learning rate every row's norm is ≤ c right after each update."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
        opt = MomentumSGD(model, damped=False, max_norm=2.0)
        x = torch.randn(64, 20)
        for step in range(5):
            opt.zero_grad()
            (model(x) ** 2).sum().mul(-1.0).backward()  # pushes weights to grow without bound
            opt.step(lr=10.0, m=0.5)
            for layer in (model[0], model[2]):
                norms = layer.weight.detach().norm(dim=1)
                assert float(norms.max()) <= 2.0 + 1e-5, f"step {step}"

    def test_bias_not_constrained(self) -> None:
        """Max-norm leaves biases alone (§5.1 constrains incoming weight vectors only)."""
        layer = nn.Linear(2, 1)
        with torch.no_grad():
            layer.bias.fill_(100.0)
        opt = MomentumSGD(layer, max_norm=1.0)
        opt.zero_grad()
        layer(torch.zeros(1, 2)).sum().backward()
        opt.step(lr=0.0, m=0.0)
        assert layer.bias.item() == pytest.approx(100.0)

    @pytest.mark.parametrize("damped", [True, False])
    @pytest.mark.parametrize("max_norm", [None, 1.5])
    def test_matches_reference_update(self, damped: bool, max_norm: float | None,
                                      dropout_backend: str) -> None:
        """Eight steps with a changing ε and m equal a per-parameter loop bitwise, and the plain
        formulas Δw ← mΔw − (1−m)εg (or mΔw − εg), w ← w + Δw in float64 to float32 rounding.
        Once per backend: the native one-pass kernel and the ``_foreach`` path."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 3))
        loop_model = copy.deepcopy(model)
        exact_model = copy.deepcopy(model).double()
        opt = MomentumSGD(model, damped=damped, max_norm=max_norm)
        loop_v = [torch.zeros_like(q) for q in loop_model.parameters()]
        exact_v = [torch.zeros_like(q) for q in exact_model.parameters()]
        constraint = MaxNorm(max_norm) if max_norm is not None else None
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        for step in range(8):
            lr, m = 0.5 / (1 + step), 0.5 + 0.05 * step
            scale = (1 - m) * lr if damped else lr
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step(lr, m)
            loop_model.zero_grad(set_to_none=True)
            F.cross_entropy(loop_model(x), y).backward()
            exact_model.zero_grad(set_to_none=True)
            F.cross_entropy(exact_model(x.double()), y).backward()
            with torch.no_grad():
                for q, v in zip(loop_model.parameters(), loop_v, strict=True):
                    assert q.grad is not None
                    v.mul_(m).add_(q.grad, alpha=-scale)
                    q.add_(v)
                for q, v in zip(exact_model.parameters(), exact_v, strict=True):
                    assert q.grad is not None
                    v.copy_(m * v - scale * q.grad)
                    q.copy_(q + v)
            if constraint is not None:
                constraint(loop_model)
                constraint(exact_model)
            for ours, loop, exact in zip(model.parameters(), loop_model.parameters(),
                                         exact_model.parameters(), strict=True):
                assert torch.equal(ours, loop), f"step {step}"
                torch.testing.assert_close(ours.double(), exact, rtol=1e-5, atol=1e-6)
        for v, v_loop in zip(opt.velocity, loop_v, strict=True):
            assert torch.equal(v, v_loop)

    def test_zero_grad_frees_gradients_by_default(self) -> None:
        """The default zero_grad leaves no gradient behind, so backward adopts the new one."""
        model = nn.Linear(4, 2)
        opt = MomentumSGD(model)
        model(torch.randn(5, 4)).sum().backward()
        opt.zero_grad()
        assert model.weight.grad is None and model.bias.grad is None

    def test_zero_grad_in_place_keeps_gradients_allocated(self) -> None:
        """set_to_none=False zeroes the same gradient tensors in place, and the next backward
        fills them with exactly the fresh gradient (no accumulation across steps)."""
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = MomentumSGD(model)
        opt.zero_grad(set_to_none=False)  # before any backward: nothing to zero
        assert model.weight.grad is None
        x = torch.randn(5, 4)
        model(x).square().sum().backward()
        grad = model.weight.grad
        assert grad is not None
        first = grad.clone()
        opt.zero_grad(set_to_none=False)
        assert model.weight.grad is grad and not bool(grad.any())
        model(x).square().sum().backward()
        assert model.weight.grad is grad and torch.equal(grad, first)

    def test_same_updates_either_way_of_zeroing(self) -> None:
        """Freeing or zeroing gradients gives bitwise the same weights after several steps."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
        other = copy.deepcopy(model)
        opts = (MomentumSGD(model, max_norm=1.0), MomentumSGD(other, max_norm=1.0))
        x = torch.randn(12, 5)
        for step in range(4):
            for net, opt, free in zip((model, other), opts, (True, False), strict=True):
                opt.zero_grad(set_to_none=free)
                net(x).square().mean().backward()
                opt.step(0.2, 0.5 + 0.1 * step)
        for a, b in zip(model.parameters(), other.parameters(), strict=True):
            assert torch.equal(a, b)

    def test_parameter_without_gradient_yet_is_left_alone(self) -> None:
        """A layer this step's loss does not use has no gradient: its weights and velocity
        stay untouched while the used layer is updated."""
        used, unused = nn.Linear(3, 1), nn.Linear(3, 1)
        model = nn.ModuleList([used, unused])
        before = unused.weight.detach().clone()
        opt = MomentumSGD(model, damped=False)
        for _ in range(2):
            opt.zero_grad()
            used(torch.ones(1, 3)).sum().backward()
            opt.step(0.1, 0.9)
        assert torch.equal(unused.weight, before)
        assert not any(bool(v.any()) for v in opt.velocity[2:])
        assert bool(opt.velocity[0].any())

    def test_state_round_trip(self) -> None:
        """Velocities survive state_dict/load_state_dict exactly; a wrong length is rejected."""
        model = _one_weight_model(1.0)
        opt = MomentumSGD(model)
        model.weight.sum().backward()
        opt.step(0.5, 0.5)
        other = MomentumSGD(_one_weight_model(1.0))
        other.load_state_dict(opt.state_dict())
        assert torch.equal(other.velocity[0], opt.velocity[0])
        with pytest.raises(ValueError, match=r"velocity tensors"):
            other.load_state_dict({"velocity": []})


class TestPenalty:
    def test_none_without_penalties(self) -> None:
        """No coefficient set → no penalty term at all."""
        assert penalty(nn.Linear(2, 2), OptimConfig(), epoch=0) is None

    def test_l2_value(self) -> None:
        """L2 term is l2·Σw² over weights (biases excluded)."""
        layer = nn.Linear(2, 1)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
            layer.bias.fill_(10.0)
        value = penalty(layer, OptimConfig(l2=0.5), epoch=0)
        assert value is not None and value.item() == pytest.approx(2.5)

    def test_l1_only_from_its_epoch(self) -> None:
        """Table 9's 'L1 towards the end': absent before l1_from_epoch, present from it on."""
        layer = nn.Linear(2, 1)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        optim = OptimConfig(l1=1.0, l1_from_epoch=3)
        assert penalty(layer, optim, epoch=2) is None
        value = penalty(layer, optim, epoch=3)
        assert value is not None and value.item() == pytest.approx(3.0)

    def test_kl_sparsity_uses_hidden_activations(self) -> None:
        """KL-sparsity is zero when every unit's mean activation equals the target ρ."""
        optim = OptimConfig(kl_sparsity=1.0, kl_target=0.1)
        hidden = [torch.full((8, 4), 0.1)]
        value = penalty(nn.Linear(2, 2), optim, epoch=0, hidden=hidden)
        assert value is not None and value.item() == pytest.approx(0.0, abs=1e-6)
        busy = penalty(nn.Linear(2, 2), optim, epoch=0, hidden=[torch.full((8, 4), 0.5)])
        assert busy is not None and busy.item() > 0.1

    def test_include_l2_false_leaves_l2_to_the_update(self) -> None:
        """``include_l2=False`` drops the L2 term (the update applies it) and keeps the rest."""
        layer = nn.Linear(2, 1)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        assert penalty(layer, OptimConfig(l2=0.5), epoch=0, include_l2=False) is None
        value = penalty(layer, OptimConfig(l2=0.5, l1=1.0), epoch=0, include_l2=False)
        assert value is not None and value.item() == pytest.approx(3.0)


class TestFusedL2:
    """L2 applied inside the update (g ← g + λ·2w) gives autograd's bits for λ·Σw² in the loss."""

    @staticmethod
    def _train(fused: bool, dtype: torch.dtype, *, copies: bool, l2: float,
               max_norm: float | None) -> list[torch.Tensor]:
        from dropoutlab.bf16_weights import BF16Weights
        from dropoutlab.penalties import l2 as l2_sum
        from dropoutlab.precision import autocast

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5)).to(dtype)
        working = BF16Weights(model) if copies else None
        opt = MomentumSGD(model, max_norm=max_norm, copies=working)
        data = torch.Generator().manual_seed(1)
        for _ in range(20):
            x = torch.randn(32, 20, generator=data, dtype=dtype)
            y = torch.randint(0, 5, (32,), generator=data)
            opt.zero_grad()
            with autocast("bf16" if copies else "fp32", "cpu"):
                out = (model if working is None else working)(x)
            loss = F.cross_entropy(out.to(dtype), y)
            if not fused:
                loss = loss + l2 * l2_sum(model)
            loss.backward()
            opt.step(1.0, 0.9, l2 if fused else 0.0)
        return [p.detach().clone() for p in model.parameters()]

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("max_norm", [None, 0.5])
    def test_fp32_and_fp64_bitwise(self, dropout_backend: str, dtype: torch.dtype,
                                   max_norm: float | None) -> None:
        """Native kernel and torch ops alike; λ = 3e-3 is large enough to move the weights."""
        fused = self._train(True, dtype, copies=False, l2=3e-3, max_norm=max_norm)
        reference = self._train(False, dtype, copies=False, l2=3e-3, max_norm=max_norm)
        plain = self._train(True, dtype, copies=False, l2=0.0, max_norm=max_norm)
        for p, q in zip(fused, reference, strict=True):
            assert torch.equal(p, q)
        assert not torch.equal(fused[0], plain[0])  # the penalty did something

    @pytest.mark.parametrize("max_norm", [None, 0.5])
    def test_bf16_copies_bitwise(self, dropout_backend: str, max_norm: float | None) -> None:
        """On bfloat16 working copies the fused update stays on the one-pass bf16 path and
        still gives the numbers of the penalty's float32 gradient added to the copies'."""
        fused = self._train(True, torch.float32, copies=True, l2=3e-3, max_norm=max_norm)
        reference = self._train(False, torch.float32, copies=True, l2=3e-3, max_norm=max_norm)
        for p, q in zip(fused, reference, strict=True):
            assert torch.equal(p, q)

    def test_biases_are_not_decayed(self) -> None:
        """With a zero loss gradient the weights shrink by ε·λ·2 and the biases stay put."""
        layer = nn.Linear(3, 2)
        weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
        opt = MomentumSGD(layer, damped=False)
        (0.0 * layer(torch.ones(1, 3)).sum()).backward()
        opt.step(0.1, 0.0, l2=0.5)  # w ← w − 0.1·(0 + 0.5·2w) = 0.9·w
        assert torch.equal(layer.bias.detach(), bias)
        assert torch.allclose(layer.weight.detach(), 0.9 * weight, rtol=1e-6, atol=0)


class TestFusedL2Schedule:
    def test_fused_only_while_l1_is_off(self) -> None:
        """Table 9's "L2 + L1 towards the end": L2 is fused before L1 starts, not after."""
        from dropoutlab.recipe import fused_l2

        optim = OptimConfig(l2=1e-4, l1=1e-5, l1_from_epoch=3)
        assert fused_l2(optim, 2) == 1e-4
        assert fused_l2(optim, 3) == 0.0
        assert fused_l2(OptimConfig(l2=1e-4), 100) == 1e-4
        assert fused_l2(OptimConfig(), 0) == 0.0
