"""Tests of :mod:`dropoutlab.layers`: the ``Dropout`` and ``GaussianDropout`` modules (§4, §10).

The modules are thin shells over :mod:`dropoutlab.functional` (whose statistics are tested in
``test_functional.py``); here we test construction, validation, modes, generators, ``repr`` and
that the module computes exactly what the function computes. Statistical tests state their
false-failure rate (Hoeffding: t = span·sqrt(ln(2/δ)/(2n))).
"""

from __future__ import annotations

import copy
import math
import pickle
import re

import pytest
import torch
from torch import nn

import dropoutlab as dl
from dropoutlab import functional as F

DELTA = 1e-6  # false-failure rate of each statistical test case


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


class TestDropout:
    """The ``dl.Dropout`` module."""

    def test_defaults_and_repr(self) -> None:
        """Defaults are p=0.5, scale="train"; ``repr`` shows both through ``extra_repr``."""
        layer = dl.Dropout()
        assert layer.p == 0.5 and layer.scale == "train" and layer.generator is None
        assert repr(layer) == "Dropout(p=0.5, scale='train')"
        assert dl.Dropout(0.2, scale="test").extra_repr() == "p=0.2, scale='test'"

    def test_repr_inside_a_model(self) -> None:
        """A printed model shows the layer's arguments."""
        model = nn.Sequential(nn.Linear(3, 4), dl.Dropout(0.25, scale="test"))
        assert "(1): Dropout(p=0.25, scale='test')" in repr(model)

    @pytest.mark.parametrize("p", [-0.5, 1.01, float("nan"), "0.3", None, True])
    def test_bad_p_raises_at_construction(self, p: object) -> None:
        """Bad ``p`` is refused when the layer is built, naming argument, range and value."""
        message = re.escape(f"`p` must be a number in [0, 1], got p={p!r}")
        with pytest.raises(ValueError, match=message):
            dl.Dropout(p)  # type: ignore[arg-type]

    def test_bad_scale_raises_at_construction(self) -> None:
        """An unknown ``scale`` is refused at construction."""
        with pytest.raises(ValueError, match=r"`scale` must be one of \('train', 'test'\), "
                                             r"got scale='none'"):
            dl.Dropout(0.5, scale="none")

    def test_inplace_like_torch(self, dropout_backend: str) -> None:
        """``inplace`` is the second argument, as in ``torch.nn.Dropout(p, inplace)``; the repr
        shows it when set, and the layer returns its input holding the result."""
        layer = dl.Dropout(0.5, True)
        assert layer.inplace and repr(layer) == "Dropout(p=0.5, scale='train', inplace=True)"
        x = torch.ones(64, 64)
        y = layer(x, generator=seeded(0))
        assert y is x and torch.equal(x, F.dropout(torch.ones(64, 64), 0.5, generator=seeded(0)))
        gaussian = dl.GaussianDropout(0.5, True)
        assert repr(gaussian) == "GaussianDropout(p=0.5, sigma=1, inplace=True)"

    def test_p_is_keyword_free_and_scale_keyword_only(self) -> None:
        """``Dropout(0.3)`` works; ``scale`` cannot be passed positionally."""
        assert dl.Dropout(0.3).p == 0.3
        with pytest.raises(TypeError):
            dl.Dropout(0.3, "test")  # type: ignore[call-arg]

    @pytest.mark.parametrize("scale", ["train", "test"])
    def test_forward_is_the_functional(self, dropout_backend: str, scale: str) -> None:
        """Training forward equals ``F.dropout`` with the same seeded generator, bitwise."""
        x = torch.randn(16, 32)
        layer = dl.Dropout(0.4, scale=scale)
        y = layer(x, generator=torch.Generator().manual_seed(3))
        expected = F.dropout(x, 0.4, scale=scale, generator=torch.Generator().manual_seed(3))
        assert torch.equal(y, expected)

    def test_eval_is_weight_scaling(self, dropout_backend: str) -> None:
        """Eval: identity (same tensor) with scale="train", × (1 − p) with scale="test" (§4)."""
        x = torch.randn(8, 8)
        assert dl.Dropout(0.3).eval()(x) is x
        torch.testing.assert_close(dl.Dropout(0.3, scale="test").eval()(x), x * 0.7)

    def test_p_zero_is_identity_in_training(self, dropout_backend: str) -> None:
        """p = 0 returns the input itself while training."""
        x = torch.randn(8, 8)
        assert dl.Dropout(0.0).train()(x) is x

    def test_generator_attribute_and_override(self, dropout_backend: str) -> None:
        """``layer.generator`` is used when forward gets none; a forward generator wins."""
        x = torch.ones(64, 64)
        layer = dl.Dropout(0.5)
        layer.generator = torch.Generator().manual_seed(1)
        from_attribute = layer(x)
        override = layer(x, generator=torch.Generator().manual_seed(2))
        assert torch.equal(from_attribute, F.dropout(x, 0.5, generator=seeded(1)))
        assert torch.equal(override, F.dropout(x, 0.5, generator=seeded(2)))

    def test_no_parameters_or_state(self) -> None:
        """The layer has no parameters and an empty state_dict; copies and pickles work."""
        layer = dl.Dropout(0.3, scale="test")
        assert list(layer.parameters()) == [] and layer.state_dict() == {}
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert clone.p == 0.3 and clone.scale == "test"

    def test_backward_through_a_model(self, dropout_backend: str) -> None:
        """Gradients flow through the layer to earlier parameters; dropped units get none."""
        torch.manual_seed(0)
        linear = nn.Linear(5, 40)
        layer = dl.Dropout(0.5)
        hidden = linear(torch.randn(1, 5))
        out = layer(hidden, generator=torch.Generator().manual_seed(0))
        out.sum().backward()
        assert linear.bias.grad is not None
        kept = (out != 0).float().reshape(-1)
        torch.testing.assert_close(linear.bias.grad, kept * 2.0)

    @pytest.mark.parametrize("scale", ["train", "test"])
    def test_training_mean_matches_eval(
        self, dropout_backend: str, generator: torch.Generator, scale: str
    ) -> None:
        """Mean of the training output over a (256, 1024) block of ones equals the eval output.

        Outputs are i.i.d. in [0, f]; Hoeffding: |mean − E| ≤ f·sqrt(ln(2/δ)/(2n)), n = 2^18,
        δ = 1e-6 (false-failure rate).
        """
        layer = dl.Dropout(0.3, scale=scale)
        x = torch.ones(256, 1024)
        train_mean = layer.train()(x, generator=generator).double().mean().item()
        eval_value = layer.eval()(x)[0, 0].item()
        f = 1 / 0.7 if scale == "train" else 1.0
        assert abs(train_mean - eval_value) <= f * math.sqrt(math.log(2 / DELTA) / (2 * x.numel()))

    @pytest.mark.gpu
    def test_cuda(self, dropout_backend: str) -> None:
        """On CUDA the module returns CUDA tensors of the input dtype, in both modes."""
        layer = dl.Dropout(0.5).cuda()
        x = torch.ones(32, 32, device="cuda", dtype=torch.bfloat16)
        assert layer(x).device.type == "cuda" and layer(x).dtype == torch.bfloat16
        assert layer.eval()(x) is x


class TestGaussianDropout:
    """The ``dl.GaussianDropout`` module."""

    def test_defaults_and_repr(self) -> None:
        """Default p=0.5 (σ = 1); ``repr`` shows p and σ."""
        layer = dl.GaussianDropout()
        assert layer.p == 0.5 and layer.sigma == 1.0
        assert repr(layer) == "GaussianDropout(p=0.5, sigma=1)"
        assert dl.GaussianDropout(0.2).extra_repr() == "p=0.2, sigma=0.5"

    @pytest.mark.parametrize("p", [1.0, -0.1, float("nan"), "x", None])
    def test_bad_p_raises_at_construction(self, p: object) -> None:
        """p must be in [0, 1): p = 1 would be infinite noise."""
        message = re.escape(f"`p` must be a number in [0, 1), got p={p!r}")
        with pytest.raises(ValueError, match=message):
            dl.GaussianDropout(p)  # type: ignore[arg-type]

    @pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
    def test_sigma_matches_bernoulli_variance(self, p: float) -> None:
        """σ² = p/(1 − p), the variance of inverted Bernoulli noise of drop probability p (§10)."""
        assert dl.GaussianDropout(p).sigma ** 2 == pytest.approx(p / (1 - p), rel=1e-14)

    def test_forward_is_the_functional(self, dropout_backend: str) -> None:
        """Training forward equals ``F.gaussian_dropout`` with the same seeded generator."""
        x = torch.randn(16, 32)
        layer = dl.GaussianDropout(0.3)
        y = layer(x, generator=torch.Generator().manual_seed(5))
        assert torch.equal(y, F.gaussian_dropout(x, 0.3, generator=seeded(5)))

    def test_eval_and_p_zero_are_identity(self, dropout_backend: str) -> None:
        """Evaluation mode and p = 0 return the input itself."""
        x = torch.randn(4, 4)
        assert dl.GaussianDropout(0.5).eval()(x) is x
        assert dl.GaussianDropout(0.0)(x) is x

    def test_generator_attribute_and_override(self, dropout_backend: str) -> None:
        """``layer.generator`` is used when forward gets none; a forward generator wins."""
        x = torch.ones(32, 32)
        layer = dl.GaussianDropout(0.5)
        layer.generator = torch.Generator().manual_seed(1)
        a = layer(x)
        b = layer(x, generator=torch.Generator().manual_seed(2))
        assert torch.equal(a, F.gaussian_dropout(x, 0.5, generator=seeded(1)))
        assert torch.equal(b, F.gaussian_dropout(x, 0.5, generator=seeded(2)))

    def test_no_parameters_or_state(self) -> None:
        """No parameters, empty state_dict; deepcopy and pickle keep p."""
        layer = dl.GaussianDropout(0.3)
        assert list(layer.parameters()) == [] and layer.state_dict() == {}
        assert copy.deepcopy(layer).p == 0.3 and pickle.loads(pickle.dumps(layer)).p == 0.3

    def test_swappable_with_dropout(self, dropout_backend: str, generator: torch.Generator) -> None:
        """Swapping Dropout(p) for GaussianDropout(p) keeps the first two moments (§10).

        For p = 0.5 both noises r have mean 1 and variance p/(1 − p) = 1; n = 2^18 samples.
        Bernoulli: r = 2b with b the kept indicator. On the Hoeffding event |b̄ − 1/2| ≤ t,
        t = sqrt(ln(4/δ)/(2n)) (probability ≥ 1 − δ/2), the mean is within 2t of 1 and the
        sample variance 4·b̄(1 − b̄)·n/(n − 1) = (1 − 4(b̄ − 1/2)²)·n/(n − 1) within
        4t² + 1/(n − 1) of 1. Gaussian: mean within z/√n, z = Φ⁻¹(1 − δ/8) (rate δ/4); the
        variance ratio is χ²_k/k, k = n − 1, inside Laurent–Massart bounds at x = ln(8/δ)
        (rate δ/4). Total false-failure rate ≤ δ = 1e-6.
        """
        from statistics import NormalDist

        x = torch.ones(1 << 18, dtype=torch.float64)
        n = x.numel()
        bern = dl.Dropout(0.5)(x, generator=generator)
        gauss = dl.GaussianDropout(0.5)(x, generator=generator)
        t = math.sqrt(math.log(4 / DELTA) / (2 * n))
        assert abs(bern.mean().item() - 1) <= 2 * t + 1e-12
        assert abs(bern.var().item() - 1) <= 4 * t**2 + 1 / (n - 1) + 1e-12
        z = NormalDist().inv_cdf(1 - DELTA / 8)
        assert abs(gauss.mean().item() - 1) <= z / math.sqrt(n)
        k, xq = n - 1, math.log(8 / DELTA)
        ratio = gauss.var().item()
        assert 1 - 2 * math.sqrt(xq / k) <= ratio <= 1 + 2 * math.sqrt(xq / k) + 2 * xq / k
