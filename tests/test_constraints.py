"""Tests of :mod:`dropoutlab.constraints`: the max-norm projection (§5.1, Appendix B.1).

Max-norm bounds each unit's *incoming* weight vector: a row of an ``nn.Linear`` weight (out, in),
a whole filter of a conv weight (out, in, *kernel). Vectors inside the ball stay bit-for-bit
unchanged; longer ones are rescaled onto the sphere; biases are never touched. All checks are
deterministic.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import dropoutlab as dl

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def rows_with_norms(norms: list[float], width: int, dtype: torch.dtype) -> torch.Tensor:
    """A (len(norms), width) weight whose row i has L2 norm norms[i] (before rounding)."""
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(len(norms), width, generator=g, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True)
    return (direction * torch.tensor(norms, dtype=torch.float64)[:, None]).to(dtype)


def norm_tolerance(dtype: torch.dtype) -> float:
    """Relative excess over c allowed after projection: the dtype's rounding of the result.

    Each element is rounded once (relative error ≤ eps/2), so the norm grows by ≤ eps/2; we
    allow eps.
    """
    return torch.finfo(dtype).eps


class TestMaxNormFunction:
    """``dl.max_norm_(weight, max_norm, *, dim=1)``."""

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_linear_rows_projected_and_inside_untouched(self, dtype: torch.dtype) -> None:
        """Rows longer than c end with norm c (to rounding) and unchanged direction; shorter
        rows (and one exactly at c) are bitwise unchanged."""
        c = 2.0
        norms = [0.5, 1.99, 2.0, 2.01, 3.0, 50.0]
        weight = rows_with_norms(norms, 16, dtype)
        weight[2] = 0  # an exactly-zero row stays zero
        weight[2, 0] = c  # ... and a row of norm exactly c is inside the ball
        before = weight.clone()
        result = dl.max_norm_(weight, c)
        assert result is weight  # in place, returns its argument
        after = weight.double().norm(dim=1)
        inside = torch.tensor([True, True, True, False, False, False])
        assert torch.equal(weight[inside], before[inside])
        assert (after <= c * (1 + norm_tolerance(dtype))).all()
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(after[~inside], torch.full((3,), c, dtype=torch.float64),
                                   rtol=4 * eps, atol=0)
        # the projected rows are exactly the documented product: w · (c / ‖w‖), computed in at
        # least float32 and rounded once (the in-place float32/64 path and the copy for 16 bits)
        work = before.to(torch.promote_types(dtype, torch.float32))
        norm = torch.linalg.vector_norm(work, dim=1, keepdim=True)
        expected = (work * torch.where(norm > c, c / norm, torch.ones_like(norm))).to(dtype)
        assert torch.equal(weight, expected)
        cosine = nn.functional.cosine_similarity(weight[~inside].double(),
                                                 before[~inside].double(), dim=1)
        assert (cosine > 1 - 4 * eps).all()

    def test_float64_projection_uses_float64_norms(self) -> None:
        """A float64 row just 1e-12 over c is still projected (norms are not computed in
        float32, whose rounding would hide the excess)."""
        weight = torch.zeros(1, 3, dtype=torch.float64)
        weight[0, 0] = 2.0 * (1 + 1e-12)
        dl.max_norm_(weight, 2.0)
        assert weight.norm().item() <= 2.0 * (1 + torch.finfo(torch.float64).eps)

    def test_conv2d_filters_are_the_vectors(self) -> None:
        """For a conv weight (out, in, kh, kw) each whole filter is one vector (dims 1, 2, 3)."""
        conv = nn.Conv2d(3, 5, kernel_size=3)
        with torch.no_grad():
            conv.weight.mul_(torch.tensor([0.01, 1, 10, 100, 0.1])[:, None, None, None])
        before = conv.weight.detach().clone()
        dl.max_norm_(conv.weight, 1.5)
        filter_norms = conv.weight.detach().flatten(1).norm(dim=1)
        assert (filter_norms <= 1.5 * (1 + 1e-6)).all()
        was_inside = before.flatten(1).norm(dim=1) <= 1.5
        assert was_inside.any() and (~was_inside).any()
        assert torch.equal(conv.weight[was_inside], before[was_inside])
        # (a projection per kernel slice would leave filter norms up to sqrt(3)·c: caught above)
        torch.testing.assert_close(filter_norms[~was_inside],
                                   torch.full_like(filter_norms[~was_inside], 1.5))

    def test_dim_zero_is_the_whole_tensor_and_sequences_name_dims(self) -> None:
        """``dim=0`` bounds the whole tensor's norm; a sequence names the reduced dims exactly."""
        w = torch.full((4, 4), 3.0)
        dl.max_norm_(w, 1.0, dim=0)
        assert w.norm().item() == pytest.approx(1.0, rel=1e-6)
        # Keras-style (in, out) kernel: incoming vectors are columns, dim=(0,)
        kernel = torch.tensor([[3.0, 0.1], [4.0, 0.1]])
        dl.max_norm_(kernel, 1.0, dim=(0,))
        torch.testing.assert_close(kernel[:, 0], torch.tensor([0.6, 0.8]))
        assert torch.equal(kernel[:, 1], torch.tensor([0.1, 0.1]))

    def test_parameter_with_grad_is_projected_in_place(self) -> None:
        """Works on a leaf Parameter that requires grad (runs under no_grad), same storage."""
        linear = nn.Linear(4, 3)
        with torch.no_grad():
            linear.weight.fill_(5.0)
        ptr = linear.weight.data_ptr()
        dl.max_norm_(linear.weight, 1.0)
        assert linear.weight.data_ptr() == ptr and linear.weight.requires_grad
        assert linear.weight.grad_fn is None
        torch.testing.assert_close(linear.weight.norm(dim=1), torch.ones(3))

    def test_non_contiguous_weight(self) -> None:
        """A transposed view is projected in place through the view."""
        base = torch.full((3, 4), 2.0)
        view = base.t()  # (4, 3), rows are base's columns
        dl.max_norm_(view, 1.0)
        torch.testing.assert_close(base.norm(dim=0), torch.ones(4))

    @pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "3", None, True])
    def test_bad_max_norm_raises(self, bad: object) -> None:
        """max_norm ≤ 0, NaN, inf or not a number: ValueError naming argument, range, value."""
        message = re.escape(f"`max_norm` must be a finite number > 0, got max_norm={bad!r}")
        with pytest.raises(ValueError, match=message):
            dl.max_norm_(torch.ones(2, 2), bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("dim", [2, -3, (0, 5), 1.0])
    def test_bad_dim_raises(self, dim: object) -> None:
        """A ``dim`` outside the weight's dimensions is refused with the valid range."""
        with pytest.raises(ValueError, match=r"`dim` must index dimensions of the 2-d weight "
                                             r"\(in \[-2, 2\)\)"):
            dl.max_norm_(torch.ones(2, 2), 1.0, dim=dim)  # type: ignore[arg-type]

    def test_empty_dim_raises(self) -> None:
        """An empty ``dim`` sequence names no vector: refused."""
        with pytest.raises(ValueError, match=r"`dim` must name at least one dimension"):
            dl.max_norm_(torch.ones(2, 2), 1.0, dim=())

    def test_integer_weight_raises_type_error(self) -> None:
        """Integer weights cannot be rescaled: TypeError saying why."""
        with pytest.raises(TypeError, match=r"`weight` must be a floating-point tensor"):
            dl.max_norm_(torch.ones(2, 2, dtype=torch.int64), 1.0)

    @pytest.mark.gpu
    def test_cuda(self) -> None:
        """The projection works on CUDA weights, in place."""
        w = torch.full((3, 4), 2.0, device="cuda")
        assert dl.max_norm_(w, 1.0) is w
        torch.testing.assert_close(w.norm(dim=1), torch.ones(3, device="cuda"))


class TestMaxNormModule:
    """``dl.MaxNorm(c)(model)``: every Linear / Conv weight of a model."""

    def make_model(self) -> nn.Module:
        """A model with Linear, Conv1d, Conv2d (nested), batch norm and a bias-free Linear."""
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3),
            nn.BatchNorm2d(4),
            nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 8)),
            nn.Linear(8, 6, bias=False),
        )
        model.add_module("conv1d", nn.Conv1d(2, 3, 2))
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(50.0)  # everything far outside the ball, biases included
        return model

    def test_every_weight_bounded_biases_and_norm_layers_untouched(self) -> None:
        """After MaxNorm(3.0)(model): every Linear row and conv filter has norm ≤ 3; biases and
        batch-norm parameters are bitwise unchanged."""
        model = self.make_model()
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        assert dl.MaxNorm(3.0)(model) is None
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
                norms = module.weight.detach().flatten(1).norm(dim=1)
                assert (norms <= 3.0 * (1 + 1e-6)).all()
                assert norms.max().item() == pytest.approx(3.0, rel=1e-6)
        for name, param in model.named_parameters():
            if name.endswith("bias") or name.startswith("1."):
                assert torch.equal(param, before[name]), name

    def test_idempotent(self) -> None:
        """Projecting twice changes nothing the second time (bitwise)."""
        model = self.make_model()
        dl.MaxNorm(2.0)(model)
        once = {name: p.detach().clone() for name, p in model.named_parameters()}
        dl.MaxNorm(2.0)(model)
        for name, param in model.named_parameters():
            assert torch.equal(param, once[name]), name

    def test_after_an_optimizer_step(self) -> None:
        """The paper's order (§5.1): step, then project; the weights stay in the ball."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 4), dl.Dropout(0.5), nn.Linear(4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=100.0)
        constraint = dl.MaxNorm(1.0)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(8, 5)).pow(2).sum().backward()
            opt.step()
            constraint(model)
        for layer in (model[0], model[2]):
            assert (layer.weight.detach().norm(dim=1) <= 1.0 + 1e-6).all()

    def test_lazy_modules_are_skipped(self) -> None:
        """A LazyLinear whose weight is not materialised yet is skipped, not an error."""
        model = nn.Sequential(nn.LazyLinear(3))
        dl.MaxNorm(1.0)(model)
        model(torch.ones(2, 4))
        dl.MaxNorm(1.0)(model)
        assert (model[0].weight.detach().norm(dim=1) <= 1.0 + 1e-6).all()

    @pytest.mark.parametrize("bad", [0, -2.0, float("nan"), float("inf"), "2"])
    def test_bad_max_norm_raises_at_construction(self, bad: object) -> None:
        """The radius is validated when the constraint is built."""
        with pytest.raises(ValueError, match=r"`max_norm` must be a finite number > 0"):
            dl.MaxNorm(bad)  # type: ignore[arg-type]

    def test_repr(self) -> None:
        """``repr`` shows the radius."""
        assert repr(dl.MaxNorm(3)) == "MaxNorm(max_norm=3.0)"
