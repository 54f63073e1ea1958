"""bfloat16 working copies of float32 weights (dropoutlab.bf16_weights) and the update that keeps
them in step (MomentumSGD with ``copies``; the one-pass kernel is tested in test_kernels.py).

The reference is torch's own mixed precision: the same model under ``torch.autocast`` with a
float32 optimizer. The copies must give its numbers bitwise, step after step, in both backends.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dropoutlab import backend, recipe
from dropoutlab.bf16_weights import BF16Weights
from dropoutlab.precision import autocast


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))


def _train(use_copies: bool, steps: int, *, max_norm: float | None,
           l2: float = 0.0) -> list[torch.Tensor]:
    """``steps`` updates of a small net, on copies or under plain autocast; its parameters."""
    model = _net()
    copies = BF16Weights(model) if use_copies else None
    opt = recipe.MomentumSGD(model, damped=True, max_norm=max_norm, copies=copies)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 20, generator=data)
        y = torch.randint(0, 5, (32,), generator=data)
        opt.zero_grad()
        with autocast("bf16", "cpu"):
            out = (model if copies is None else copies)(x)
        loss = F.cross_entropy(out.float(), y)
        if l2:  # a penalty on the float32 weights: their own gradient joins the copies'
            loss = loss + l2 * sum(p.square().sum() for p in model.parameters())
        loss.backward()
        opt.step(2.0, 0.9)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["auto", "torch"])
@pytest.mark.parametrize("max_norm, l2", [(None, 0.0), (0.5, 0.0), (None, 1e-3)])
def test_copies_give_autocasts_numbers(name: str, max_norm: float | None, l2: float) -> None:
    """25 steps on copies (the native one-pass update, or torch's ops) end bitwise where 25
    steps under autocast end, with the max-norm projection active (c = 0.5 is hit at lr 2) and
    with a float32 penalty gradient added to the copies' ones."""
    with backend.use_backend(name):
        ours = _train(True, 25, max_norm=max_norm, l2=l2)
        reference = _train(False, 25, max_norm=max_norm, l2=l2)
    for p, q in zip(ours, reference, strict=True):
        assert torch.equal(p, q)


def test_forward_runs_on_the_copies_in_bf16() -> None:
    """Outputs are bf16, gradients land on the copies (bf16), not on the float32 masters."""
    model = _net()
    copies = BF16Weights(model)
    copies(torch.randn(4, 20)).float().sum().backward()
    assert all(c.grad is not None and c.grad.dtype == torch.bfloat16 for c in copies.copies)
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())


def test_a_write_to_a_master_is_seen_by_the_next_forward() -> None:
    """Anything that writes a float32 weight (a checkpoint load, a projection, a user) bumps its
    version, and the next forward re-casts that copy; untouched copies are not re-cast."""
    model = _net()
    copies = BF16Weights(model)
    untouched = copies.copies[2]._version
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    x = torch.randn(4, 20)
    copies(x)
    assert torch.equal(copies.copies[0], model[0].weight.bfloat16())
    assert copies.copies[2]._version == untouched
    with autocast("bf16", "cpu"), torch.no_grad():
        assert torch.equal(copies(x), model(x))


def test_non_float32_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match=r"float32 parameters.*0.weight.*float64"):
        BF16Weights(nn.Sequential(nn.Linear(3, 2).double()))


def test_copies_of_another_model_are_refused() -> None:
    with pytest.raises(ValueError, match=r"`copies` must be the BF16Weights of `model`"):
        recipe.MomentumSGD(_net(), copies=BF16Weights(_net()))


@pytest.mark.parametrize("name", ["auto", "torch"])
def test_kl_sparsity_on_copies_gives_autocasts_numbers(name: str) -> None:
    """Table 9's KL-sparsity reads the hidden activations: ``forward_with_hidden`` on the copies
    gives the logits and activations of the model's own under autocast, and 25 steps with the
    penalty (and a fused L2) end bitwise where 25 steps under plain autocast end."""
    from dropoutlab.config import OptimConfig
    from dropoutlab.models import MLP

    optim = OptimConfig(kl_sparsity=1e-2, kl_target=0.05, l2=1e-3)

    def run(use_copies: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = MLP(20, (64, 32), 5, dropout="none")
        copies = BF16Weights(model) if use_copies else None
        opt = recipe.MomentumSGD(model, max_norm=3.0, copies=copies)
        source = model if copies is None else copies
        data = torch.Generator().manual_seed(1)
        for _ in range(25):
            x = torch.randn(32, 20, generator=data)
            y = torch.randint(0, 5, (32,), generator=data)
            opt.zero_grad()
            with autocast("bf16", "cpu"):
                out, hidden = source.forward_with_hidden(x)  # type: ignore[operator]
            extra = recipe.penalty(model, optim, 0, [h.float() for h in hidden],
                                   include_l2=False)
            assert extra is not None
            (F.cross_entropy(out.float(), y) + extra).backward()
            opt.step(1.0, 0.9, optim.l2)
        return [p.detach().clone() for p in model.parameters()]

    with backend.use_backend(name):
        ours, reference = run(True), run(False)
    for p, q in zip(ours, reference, strict=True):
        assert torch.equal(p, q)
