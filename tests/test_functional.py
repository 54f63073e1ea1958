"""Tests of :mod:`dropoutlab.functional` (Srivastava et al. 2014, §4, §9.1, §10).

Every test of randomness takes the ``dropout_backend`` fixture, so each backend (the torch
reference path, and the native CPU kernels once they are built) passes the same tests.

Statistical tests state their false-failure rate: the probability that a *correct*
implementation fails the test for one seed. Unless a docstring says otherwise it is at most
``DELTA = 1e-6`` per test case, from Hoeffding's inequality for n independent variables with
range ``span``: P(|mean − E| ≥ t) ≤ 2·exp(−2n·t²/span²), so t = span·sqrt(ln(2/δ)/(2n)).
"""

from __future__ import annotations

import math
import re
from statistics import NormalDist

import pytest
import torch

from dropoutlab import functional as F

DELTA = 1e-6  # false-failure rate of each statistical test case (see the module docstring)
N_STAT = 1 << 18  # elements per statistical sample: Hoeffding half-width 0.0053 at DELTA
Z_DELTA = NormalDist().inv_cdf(1 - DELTA / 2)  # two-sided normal quantile, ≈ 4.89
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SCALES = ("train", "test")
LAGS = (1, 2, 3, 4, 7, 8, 16, 31, 64, 512, N_STAT // 2)  # 512 = next row of a (512, 512) view


def hoeffding(n: int, delta: float = DELTA, span: float = 1.0) -> float:
    """Half-width t with P(|mean − E| ≥ t) ≤ delta for n independent values in a span-long range."""
    return span * math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def factor_of(p: float, scale: str) -> float:
    """What a kept unit is multiplied by while training."""
    return 1.0 / (1.0 - p) if scale == "train" else 1.0


def nonzero_input(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Values in ±[0.5, 1.5): never zero, so a zero output always means a dropped unit."""
    g = torch.Generator().manual_seed(1234)
    magnitude = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
    sign = torch.randint(0, 2, shape, generator=g).mul(2).sub(1)
    return (magnitude * sign).to(dtype=dtype, device=device)


def assert_independent_pairs(a: torch.Tensor, b: torch.Tensor, rate: float, delta: float) -> None:
    """Assert that the joint frequency of a & b matches rate² for independent Bernoulli(rate).

    ``a`` and ``b`` are boolean tensors whose element pairs (a_i, b_i) are independent across i
    under the null hypothesis, so a_i·b_i are i.i.d. Bernoulli(rate²) and Hoeffding applies.
    """
    joint = (a & b).double().mean().item()
    bound = hoeffding(a.numel(), delta)
    assert abs(joint - rate**2) <= bound, (joint, rate**2, bound)


def lag_pairs(flat: torch.Tensor, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint pairs (i, i + lag): i runs over blocks [2·j·lag, (2·j + 1)·lag).

    Each element appears in at most one pair, so pair products are independent under the null.
    """
    n = flat.numel() - flat.numel() % (2 * lag)
    blocks = flat[:n].reshape(-1, 2, lag)
    return blocks[:, 0].reshape(-1), blocks[:, 1].reshape(-1)


# --------------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------------


class TestDropoutContract:
    """Shapes, dtypes, devices, identities and error messages of ``F.dropout``."""

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    @pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), ()])
    def test_shape_dtype_device_kept(
        self, dropout_backend: str, device: torch.device, dtype: torch.dtype, shape: tuple
    ) -> None:
        """Output keeps the input's shape, dtype and device, for every shape and dtype."""
        x = nonzero_input(shape, dtype, device)
        for scale in SCALES:
            y = F.dropout(x, 0.3, scale=scale, generator=torch.Generator(device).manual_seed(0))
            assert y.shape == x.shape and y.dtype == dtype and y.device == x.device

    @pytest.mark.parametrize("scale", SCALES)
    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    def test_non_contiguous_input(
        self, dropout_backend: str, device: torch.device, dtype: torch.dtype, scale: str
    ) -> None:
        """Transposed and strided inputs: each output element is 0 or its own input × factor."""
        base = nonzero_input((64, 96), dtype, device)
        for x in (base.t(), base[::2, 1::3], base.unsqueeze(0).expand(3, 64, 96)):
            assert not x.is_contiguous()
            y = F.dropout(x, 0.4, scale=scale, generator=torch.Generator(device).manual_seed(1))
            kept = y != 0
            expected = (x.double() * factor_of(0.4, scale)).to(dtype)
            torch.testing.assert_close(y[kept], expected[kept], rtol=2 * torch.finfo(dtype).eps,
                                       atol=0)
            assert 0 < int(kept.sum()) < x.numel()

    @pytest.mark.parametrize("scale", SCALES)
    @pytest.mark.parametrize("training", [True, False])
    def test_p_zero_returns_the_input(
        self, dropout_backend: str, training: bool, scale: str
    ) -> None:
        """p = 0 is the identity: the very same tensor comes back, training or not."""
        x = torch.randn(5, 6)
        assert F.dropout(x, 0.0, training, scale=scale) is x

    @pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
    def test_eval_is_weight_scaling(self, dropout_backend: str, p: float) -> None:
        """Eval: identity (the same tensor) for scale="train"; × (1 − p) for scale="test" (§4)."""
        x = torch.randn(5, 6)
        assert F.dropout(x, p, training=False) is x
        torch.testing.assert_close(F.dropout(x, p, training=False, scale="test"), x * (1.0 - p))

    def test_eval_consumes_no_randomness(self, dropout_backend: str) -> None:
        """Evaluation never draws from the generator (its state is unchanged)."""
        g = torch.Generator().manual_seed(3)
        state = g.get_state()
        F.dropout(torch.randn(8, 8), 0.5, training=False, generator=g)
        F.dropout(torch.randn(8, 8), 0.5, training=False, scale="test", generator=g)
        assert torch.equal(g.get_state(), state)

    @pytest.mark.parametrize("scale", SCALES)
    def test_p_one_drops_everything(self, dropout_backend: str, scale: str) -> None:
        """p = 1 while training zeroes every element (of the input's dtype)."""
        x = torch.randn(4, 5, dtype=torch.float64)
        y = F.dropout(x, 1.0, scale=scale)
        assert y.dtype == torch.float64 and torch.count_nonzero(y) == 0

    @pytest.mark.parametrize(
        "p", [-0.1, 1.5, float("nan"), float("inf"), "0.5", None, True, torch.tensor(0.5)]
    )
    def test_bad_p_raises_value_error(self, p: object) -> None:
        """p outside [0, 1], NaN, or not a number: ValueError naming `p`, the range and value."""
        message = re.escape(f"`p` must be a number in [0, 1], got p={p!r}")
        with pytest.raises(ValueError, match=message):
            F.dropout(torch.ones(3), p)  # type: ignore[arg-type]

    def test_unknown_scale_raises_value_error(self) -> None:
        """An unknown ``scale`` names the argument, the allowed values and the value received."""
        with pytest.raises(ValueError, match=r"`scale` must be one of \('train', 'test'\), got "
                                             r"scale='inverted'"):
            F.dropout(torch.ones(3), 0.5, scale="inverted")

    @pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
    def test_integer_tensor_raises_type_error(self, dtype: torch.dtype) -> None:
        """Integer (and bool) tensors are refused with the reason: they cannot hold 1/(1 − p)."""
        with pytest.raises(TypeError, match=r"floating-point tensor, got dtype=torch\.\w+: "
                                            r"dropout scales kept values by 1/\(1-p\)"):
            F.dropout(torch.ones(3, dtype=dtype), 0.5)

    def test_non_tensor_raises_type_error(self) -> None:
        """A list is not a tensor: TypeError naming the type received."""
        with pytest.raises(TypeError, match=r"`x` must be a torch\.Tensor, got list"):
            F.dropout([1.0, 2.0], 0.5)  # type: ignore[arg-type]

    @pytest.mark.parametrize("scale", SCALES)
    def test_gradient_is_the_mask_times_factor(self, dropout_backend: str, scale: str) -> None:
        """d(sum y)/dx is 1/(1 − p) (or 1) where kept and 0 where dropped: y = x · mask · factor."""
        x = nonzero_input((32, 33), torch.float32, torch.device("cpu")).requires_grad_()
        y = F.dropout(x, 0.3, scale=scale, generator=torch.Generator().manual_seed(2))
        y.sum().backward()
        assert x.grad is not None
        kept = (y != 0).float()
        torch.testing.assert_close(x.grad, kept * factor_of(0.3, scale), rtol=0, atol=0)

    @pytest.mark.gpu
    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    def test_cuda_dtype_device_and_values(self, dropout_backend: str, dtype: torch.dtype) -> None:
        """On CUDA, with and without a generator: output on CUDA, input dtype, 0 or x · factor."""
        x = nonzero_input((128, 130), dtype, torch.device("cuda"))
        for gen in (None, torch.Generator("cuda").manual_seed(0)):
            for scale in SCALES:
                y = F.dropout(x.t(), 0.25, scale=scale, generator=gen)
                assert y.device.type == "cuda" and y.dtype == dtype
                kept = y != 0
                expected = (x.t().double() * factor_of(0.25, scale)).to(dtype)
                torch.testing.assert_close(y[kept], expected[kept],
                                           rtol=2 * torch.finfo(dtype).eps, atol=0)


class TestGaussianDropoutContract:
    """Shapes, dtypes, identities and error messages of ``F.gaussian_dropout``."""

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    @pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4, 5), ()])
    def test_shape_dtype_device_kept(
        self, dropout_backend: str, device: torch.device, dtype: torch.dtype, shape: tuple
    ) -> None:
        """Output keeps the input's shape, dtype and device."""
        x = nonzero_input(shape, dtype, device)
        y = F.gaussian_dropout(x, 0.3, generator=torch.Generator(device).manual_seed(0))
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device

    def test_non_contiguous_input(self, dropout_backend: str, device: torch.device) -> None:
        """Transposed and strided inputs give finite outputs of the right shape, not all equal x."""
        base = nonzero_input((64, 96), torch.float32, device)
        for x in (base.t(), base[::2, 1::3]):
            y = F.gaussian_dropout(x, 0.5, generator=torch.Generator(device).manual_seed(0))
            assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x)

    @pytest.mark.parametrize("training", [True, False])
    def test_p_zero_and_eval_return_the_input(self, dropout_backend: str, training: bool) -> None:
        """p = 0 (any mode) and evaluation (any p) return the very same tensor."""
        x = torch.randn(5, 6)
        assert F.gaussian_dropout(x, 0.0, training) is x
        assert F.gaussian_dropout(x, 0.7, training=False) is x

    @pytest.mark.parametrize("p", [1.0, -0.1, float("nan"), "0.5", None, False])
    def test_bad_p_raises_value_error(self, p: object) -> None:
        """p outside [0, 1) (1 would mean infinite variance), NaN or not a number: ValueError."""
        message = re.escape(f"`p` must be a number in [0, 1), got p={p!r}")
        with pytest.raises(ValueError, match=message):
            F.gaussian_dropout(torch.ones(3), p)  # type: ignore[arg-type]

    def test_integer_tensor_raises_type_error(self) -> None:
        """Integer tensors are refused with the reason."""
        with pytest.raises(TypeError, match=r"floating-point tensor, got dtype=torch\.int64"):
            F.gaussian_dropout(torch.ones(3, dtype=torch.int64), 0.5)

    @pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
    def test_gaussian_sigma_closed_form(self, p: float) -> None:
        """σ = sqrt(p / (1 − p)) (§10: sqrt((1 − retain) / retain) with retain = 1 − p)."""
        retain = 1.0 - p
        assert F.gaussian_sigma(p) == pytest.approx(math.sqrt((1 - retain) / retain), rel=1e-15)

    def test_gradient_is_the_noise(self, dropout_backend: str) -> None:
        """d(sum y)/dx is the noise r = y / x."""
        x = nonzero_input((16, 17), torch.float64, torch.device("cpu")).requires_grad_()
        y = F.gaussian_dropout(x, 0.4, generator=torch.Generator().manual_seed(5))
        y.sum().backward()
        assert x.grad is not None
        torch.testing.assert_close(x.grad, (y / x).detach(), rtol=1e-14, atol=0)

    @pytest.mark.gpu
    def test_cuda(self, dropout_backend: str) -> None:
        """On CUDA the output stays on CUDA in the input dtype, and a CUDA generator reproduces."""
        x = torch.ones(64, 64, device="cuda", dtype=torch.float16)
        a = F.gaussian_dropout(x, 0.5, generator=torch.Generator("cuda").manual_seed(9))
        b = F.gaussian_dropout(x, 0.5, generator=torch.Generator("cuda").manual_seed(9))
        assert a.device.type == "cuda" and a.dtype == torch.float16 and torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# Statistical
# --------------------------------------------------------------------------------------------


class TestDropoutStatistics:
    """Mask statistics of ``F.dropout`` against exact bounds, for seeds 0..99."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
    def test_drop_fraction_within_binomial_bound(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator, p: float,
        dtype: torch.dtype,
    ) -> None:
        """The fraction of zeros is p overall and in every column.

        Overall: n = 2^18 i.i.d. Bernoulli(p) indicators, Hoeffding at δ/2 gives
        |p̂ − p| ≤ sqrt(ln(4/δ)/(2n)) ≈ 0.0054. Per column (4096 rows × 64 columns, union
        bound over the columns at δ/(2·64) each): |p̂_j − p| ≤ sqrt(ln(256/δ)/8192) ≈ 0.048,
        which catches position-dependent masks. False-failure rate ≤ δ = 1e-6. The same in
        bfloat16 (the mask does not depend on the dtype; zeros are exact).
        """
        y = F.dropout(torch.ones(4096, 64, device=device, dtype=dtype), p, generator=generator)
        dropped = (y == 0).double()
        assert abs(dropped.mean().item() - p) <= hoeffding(dropped.numel(), DELTA / 2)
        per_column = dropped.mean(dim=0)
        assert (per_column - p).abs().max().item() <= hoeffding(4096, DELTA / (2 * 64))

    @pytest.mark.parametrize("scale", SCALES)
    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    def test_kept_values_scaled_exactly(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        dtype: torch.dtype, scale: str,
    ) -> None:
        """Dropped values are exactly 0; kept ones are x · factor to the dtype's rounding.

        Deterministic given the mask (no false failures). For p = 0.5 the factor is 2 (or 1)
        and kept values must be bitwise x · factor; for p = 0.3 the kept value may round twice
        (factor, then product), so the relative error bound is 2 · eps(dtype). Also checks that
        both values occur at all: kept fraction within Hoeffding bounds at δ = 1e-6.
        """
        x = nonzero_input((512, 256), dtype, device)
        for p in (0.5, 0.3):
            y = F.dropout(x, p, scale=scale, generator=generator)
            kept = y != 0
            exact = (x.double() * factor_of(p, scale)).to(dtype)
            if p == 0.5:
                assert torch.equal(y[kept], exact[kept])
            else:
                torch.testing.assert_close(y[kept], exact[kept],
                                           rtol=2 * torch.finfo(dtype).eps, atol=0)
            kept_fraction = kept.double().mean().item()
            assert abs(kept_fraction - (1 - p)) <= hoeffding(x.numel(), DELTA / 2)

    @pytest.mark.parametrize("scale", SCALES)
    @pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
    def test_training_expectation_equals_eval_output(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        p: float, scale: str,
    ) -> None:
        """E[training output] = evaluation output, in both scale modes (§4, Figure 2).

        With y_i = x_i·r_i, r_i ∈ [0, f] independent and E r_i = (1 − p)·f, the sum S = Σ y_i
        has E S = Σ eval(x)_i. Hoeffding for independent summands with ranges |x_i|·f:
        P(|S − E S| ≥ t) ≤ 2·exp(−2t² / Σ(x_i f)²), so t = f·sqrt(Σ x_i² · ln(2/δ)/2) at
        δ = 1e-6. Inputs in [0.5, 1.5) make S ≈ n, so a wrong scale (off by ≥ 10 %) is caught
        with t/S ≈ 1 %.
        """
        x = nonzero_input((N_STAT,), torch.float64, device).abs()
        y = F.dropout(x, p, scale=scale, generator=generator)
        expected = F.dropout(x, p, training=False, scale=scale).sum().item()
        f = factor_of(p, scale)
        bound = f * math.sqrt(x.pow(2).sum().item() * math.log(2 / DELTA) / 2)
        assert abs(y.sum().item() - expected) <= bound

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_masks_independent_across_calls(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        dtype: torch.dtype,
    ) -> None:
        """Two consecutive calls with one generator give independent masks.

        Under independence keep1_i·keep2_i are i.i.d. Bernoulli(q²), q = 1 − p = 0.5, so by
        Hoeffding |mean − q²| ≤ sqrt(ln(2/δ)/(2n)) ≈ 0.0053 with n = 2^18 (a correlation of
        ~0.02 between calls is detected). False-failure rate ≤ δ = 1e-6.
        """
        x = torch.ones(N_STAT, device=device, dtype=dtype)
        a = F.dropout(x, 0.5, generator=generator) != 0
        b = F.dropout(x, 0.5, generator=generator) != 0
        assert not torch.equal(a, b)
        assert_independent_pairs(a, b, 0.5, DELTA)

    def test_global_generator_calls_independent(
        self, dropout_backend: str, device: torch.device, global_seed: int
    ) -> None:
        """generator=None draws from torch's global generator: seeded ⇒ reproducible, and
        consecutive calls independent (same Hoeffding bound as above, δ = 1e-6)."""
        x = torch.ones(N_STAT, device=device)
        torch.manual_seed(global_seed)
        a = F.dropout(x, 0.5) != 0
        b = F.dropout(x, 0.5) != 0
        torch.manual_seed(global_seed)
        assert torch.equal(F.dropout(x, 0.5) != 0, a)
        assert_independent_pairs(a, b, 0.5, DELTA)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_masks_independent_between_elements(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        dtype: torch.dtype,
    ) -> None:
        """Within one mask, elements i and i + lag are independent for every lag in LAGS
        (neighbours, SIMD-lane and row strides of a (512, 512) view, and half the tensor, where
        a multi-threaded kernel would repeat itself).

        Disjoint pairs give i.i.d. Bernoulli(q²) products under independence; Hoeffding at
        δ/len(LAGS) per lag, so the false-failure rate is ≤ δ = 1e-6 by the union bound.
        """
        ones = torch.ones(512, 512, device=device, dtype=dtype)
        keep = F.dropout(ones, 0.5, generator=generator) != 0
        flat = keep.reshape(-1)
        for lag in LAGS:
            a, b = lag_pairs(flat, lag)
            assert_independent_pairs(a, b, 0.5, DELTA / len(LAGS))


class TestGaussianDropoutStatistics:
    """Noise statistics of ``F.gaussian_dropout`` against exact bounds, for seeds 0..99."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    @pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
    def test_noise_mean_one_variance_p_over_1_minus_p(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        p: float, dtype: torch.dtype,
    ) -> None:
        """r = output/input has mean 1 and variance σ² = p/(1 − p) (§10).

        Mean: r̄ ~ N(1, σ²/n) exactly, so |r̄ − 1| ≤ z·σ/√n with z = Φ⁻¹(1 − δ/4) (rate δ/2).
        Variance: (n − 1)s²/σ² ~ χ²_k, k = n − 1; Laurent & Massart (2000):
        P(χ² − k ≥ 2√(kx) + 2x) ≤ e^{−x} and P(k − χ² ≥ 2√(kx)) ≤ e^{−x}; x = ln(4/δ) gives
        rate δ/2. n = 2^18; total false-failure rate ≤ δ = 1e-6 (float rounding of r, ~1e-7
        relative, is far inside the bounds). bfloat16 rounds each r to relative error
        u ≤ 2^-9: the mean bound gains u·E|r| ≤ u·(1 + σ) and the variance ratio
        (2u + u²)·E[r²]/σ², the worst case of that rounding.
        """
        r = F.gaussian_dropout(torch.ones(N_STAT, device=device, dtype=dtype), p,
                               generator=generator).double()
        n, sigma2 = r.numel(), p / (1 - p)
        z = NormalDist().inv_cdf(1 - DELTA / 4)
        u = 2.0**-9 if dtype == torch.bfloat16 else 0.0
        assert abs(r.mean().item() - 1.0) <= z * math.sqrt(sigma2 / n) + u * (1 + sigma2**0.5)
        k, xq = n - 1, math.log(4 / DELTA)
        ratio = r.var().item() / sigma2  # = χ²_k / k
        slack = (2 * u + u * u) * (1 + sigma2) / sigma2
        assert (1 - 2 * math.sqrt(xq / k) - slack <= ratio
                <= 1 + 2 * math.sqrt(xq / k) + 2 * xq / k + slack)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_noise_is_gaussian(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        dtype: torch.dtype,
    ) -> None:
        """The noise CDF matches N(1, σ²) at 1 + zσ, z ∈ {−2, −1, 0, 1, 2}.

        Each empirical CDF value is a mean of n = 2^18 i.i.d. indicators: Hoeffding at δ/5 each,
        so the false-failure rate is ≤ δ = 1e-6 by the union bound. In bfloat16 a value moves
        by at most u·|r| (u = 2^-9) when rounded, so the CDF at t may move by up to
        φ(0)/σ · u·|t|/(1 − u), added to each bound.
        """
        p = 0.5
        sigma = F.gaussian_sigma(p)
        ones = torch.ones(N_STAT, device=device, dtype=dtype)
        r = F.gaussian_dropout(ones, p, generator=generator).double()
        u = 2.0**-9 if dtype == torch.bfloat16 else 0.0
        for z in (-2.0, -1.0, 0.0, 1.0, 2.0):
            t = 1 + z * sigma
            empirical = (r <= t).double().mean().item()
            allowance = 0.3989 / sigma * u * abs(t) / (1 - u)
            assert (abs(empirical - NormalDist().cdf(z))
                    <= hoeffding(N_STAT, DELTA / 5) + allowance)

    def test_noise_independent_across_calls_and_elements(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator
    ) -> None:
        """Signs of r − 1 (exactly Bernoulli(1/2) for symmetric noise) are independent across
        two calls and between elements i and i + lag for every lag in LAGS.

        Hoeffding on disjoint pair products at δ/(len(LAGS) + 1) each: false-failure rate
        ≤ δ = 1e-6 by the union bound.
        """
        x = torch.ones(512, 512, device=device)
        a = F.gaussian_dropout(x, 0.5, generator=generator) > 1
        b = F.gaussian_dropout(x, 0.5, generator=generator) > 1
        delta = DELTA / (len(LAGS) + 1)
        assert_independent_pairs(a.reshape(-1), b.reshape(-1), 0.5, delta)
        for lag in LAGS:
            first, second = lag_pairs(a.reshape(-1), lag)
            assert_independent_pairs(first, second, 0.5, delta)


# --------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------


class TestOracle:
    """Agreement with torch.nn.functional.dropout, gradcheck, and the paper's closed forms."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
    def test_same_statistics_as_torch_dropout(
        self, dropout_backend: str, device: torch.device, global_seed: int, p: float,
        dtype: torch.dtype,
    ) -> None:
        """Ours (scale="train") and torch's F.dropout agree in law, not bitwise.

        Both outputs take only the values {0, x/(1 − p)} (to rounding: 2e-7 relative in
        float32; in bfloat16 one rounding of the product and, for torch, one of its bf16 scale
        too, so 2 · 2^-8), and the drop fractions are each within Hoeffding bounds of p at δ/2,
        hence within 2t of each other. Eval is the identity for both. False-failure rate
        ≤ δ = 1e-6.
        """
        x = nonzero_input((512, 512), dtype, device)
        rtol = 2e-7 if dtype == torch.float32 else 2 * 2.0**-8
        torch.manual_seed(global_seed)
        theirs = torch.nn.functional.dropout(x, p, training=True)
        ours = F.dropout(x, p, generator=torch.Generator(device).manual_seed(global_seed))
        for y in (ours, theirs):
            kept = y != 0
            torch.testing.assert_close(y[kept].double(), x[kept].double() / (1 - p), rtol=rtol,
                                       atol=0)
        t = hoeffding(x.numel(), DELTA / 2)
        ours_p = (ours == 0).double().mean().item()
        theirs_p = (theirs == 0).double().mean().item()
        assert abs(ours_p - p) <= t and abs(theirs_p - p) <= t
        assert abs(ours_p - theirs_p) <= 2 * t
        assert torch.equal(F.dropout(x, p, training=False),
                           torch.nn.functional.dropout(x, p, training=False))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("p", [0.2, 0.5])
    def test_same_gradient_rule_as_torch_dropout(
        self, dropout_backend: str, global_seed: int, p: float, dtype: torch.dtype
    ) -> None:
        """Gradients follow torch's rule: for any upstream grad g, dx = g · mask / (1 − p).

        torch's gradient applied to *its* mask and ours to *ours* follow the same rule; with
        scale="test" ours is g · mask. Deterministic given the masks. In bfloat16 the product
        is rounded once (torch may round its scale too): 2 · 2^-8 relative.
        """
        rtol = 2e-7 if dtype == torch.float32 else 2 * 2.0**-8
        g = torch.randn(64, 80, generator=torch.Generator().manual_seed(7)).to(dtype)
        for fn, rule_factor in (
            (lambda t: torch.nn.functional.dropout(t, p, training=True), 1 / (1 - p)),
            (lambda t: F.dropout(t, p, generator=torch.Generator().manual_seed(global_seed)),
             1 / (1 - p)),
            (lambda t: F.dropout(t, p, scale="test",
                                 generator=torch.Generator().manual_seed(global_seed)), 1.0),
        ):
            x = nonzero_input((64, 80), dtype, torch.device("cpu")).requires_grad_()
            y = fn(x)
            y.backward(g)
            assert x.grad is not None and x.grad.dtype == dtype
            mask = (y != 0).double()
            torch.testing.assert_close(x.grad.double(), g.double() * mask * rule_factor,
                                       rtol=rtol, atol=0)

    @pytest.mark.parametrize(
        "op",
        [
            lambda t, g: F.dropout(t, 0.3, generator=g),
            lambda t, g: F.dropout(t, 0.3, scale="test", generator=g),
            lambda t, g: F.gaussian_dropout(t, 0.3, generator=g),
        ],
        ids=["dropout-train", "dropout-test", "gaussian"],
    )
    def test_gradcheck_float64(self, dropout_backend: str, op: object) -> None:
        """torch.autograd.gradcheck (finite differences vs backward) in float64, with the same
        mask or noise in every evaluation (a freshly seeded generator per call)."""
        x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        for inp in (x.clone().requires_grad_(), x.t().clone().t().requires_grad_()):
            def fn(t: torch.Tensor) -> torch.Tensor:
                return op(t, torch.Generator().manual_seed(11))  # type: ignore[operator]

            assert torch.autograd.gradcheck(fn, (inp,))
            assert torch.autograd.gradgradcheck(fn, (inp,))

    @pytest.mark.parametrize("scale", SCALES)
    @pytest.mark.parametrize("retain", [0.5, 0.8])
    def test_section_9_1_dropout_linear_regression_is_ridge(
        self, dropout_backend: str, global_seed: int, retain: float, scale: str
    ) -> None:
        """§9.1: E_R‖y − (R∗X)w‖² = ‖y − qXw‖² + q(1 − q)‖Γw‖², Γ = diag(XᵀX)^½ (retention q).

        R∗X with the paper's {0, 1} masks is scale="test"; with scale="train" (R/q) the same
        algebra gives ‖y − Xw‖² + ((1 − q)/q)‖Γw‖². The Monte-Carlo average over S samples of
        L = Σ_n e_n² has independent summands e_{s,n}² ∈ [0, B_n], where B_n is the largest
        square e_n can reach over all masks, so Hoeffding gives
        t = sqrt(S·Σ_n B_n² · ln(2/δ)/2) / S: false-failure rate ≤ δ = 1e-6. The penalty
        term is several times t, so the test can tell ridge from plain least squares.
        """
        drop = 1 - retain  # the paper's p is retention; our API takes the drop probability
        data = torch.Generator().manual_seed(global_seed)
        n_rows, n_features, n_samples = 24, 6, 8192
        X = torch.randn(n_rows, n_features, generator=data, dtype=torch.float64)
        w = torch.randn(n_features, generator=data, dtype=torch.float64)
        y = X @ w + 0.5 * torch.randn(n_rows, generator=data, dtype=torch.float64)

        masks = torch.Generator().manual_seed(global_seed + 10_000)
        RX = F.dropout(X.expand(n_samples, -1, -1), drop, scale=scale, generator=masks)
        losses = (y - RX @ w).pow(2).sum(dim=1)  # (S,)

        gamma_w_sq = (w.pow(2) * X.pow(2).sum(dim=0)).sum()  # ‖Γw‖²
        if scale == "test":
            penalty = retain * (1 - retain) * gamma_w_sq
            expected = (y - retain * X @ w).pow(2).sum() + penalty
            f = 1.0
        else:
            penalty = (1 - retain) / retain * gamma_w_sq
            expected = (y - X @ w).pow(2).sum() + penalty
            f = 1 / retain
        contrib = X * w * f  # (N, D): what each kept input adds to the prediction
        low = y - contrib.clamp_min(0).sum(dim=1)  # smallest residual over all masks
        high = y - contrib.clamp_max(0).sum(dim=1)  # largest residual over all masks
        b = torch.maximum(low.pow(2), high.pow(2))  # e_n² ∈ [0, B_n]
        t = math.sqrt(b.pow(2).sum().item() * math.log(2 / DELTA) / (2 * n_samples))
        assert abs(losses.mean().item() - expected.item()) <= t
        assert penalty.item() >= 3 * t  # power: ≥ 6.6·t for every seed in 0..99 (checked)

    @pytest.mark.parametrize("retain", [0.5, 0.8])
    def test_section_10_moment_matching(
        self, dropout_backend: str, device: torch.device, generator: torch.Generator,
        retain: float,
    ) -> None:
        """§10: inverted Bernoulli noise r ∈ {0, 1/q} and Gaussian N(1, (1 − q)/q) share mean 1
        and variance (1 − q)/q (q = retention).

        Bernoulli: r = b/q with b̄ the kept fraction; Hoeffding on b̄ at δ/2 bounds the mean by
        t/q and the variance b̄(1 − b̄)/q² by t/q² (|d/db b(1 − b)| ≤ 1). Gaussian: the exact
        normal and χ² bounds of test_noise_mean_one_variance_p_over_1_minus_p at δ/2.
        False-failure rate ≤ δ = 1e-6.
        """
        drop = 1 - retain  # the paper's p is retention; our API takes the drop probability
        variance = (1 - retain) / retain
        ones = torch.ones(N_STAT, device=device, dtype=torch.float64)

        r = F.dropout(ones, drop, generator=generator)
        assert set(r.unique().tolist()) <= {0.0, 1 / retain}
        kept = (r != 0).double().mean().item()
        t = hoeffding(N_STAT, DELTA / 2)
        assert abs(r.mean().item() - 1.0) <= t / retain + 1e-12
        assert abs(kept * (1 - kept) / retain**2 - variance) <= t / retain**2

        g = F.gaussian_dropout(ones, drop, generator=generator)
        assert F.gaussian_sigma(drop) ** 2 == pytest.approx(variance, rel=1e-14)
        z = NormalDist().inv_cdf(1 - DELTA / 8)
        assert abs(g.mean().item() - 1.0) <= z * math.sqrt(variance / N_STAT)
        k, xq = N_STAT - 1, math.log(8 / DELTA)
        ratio = g.var().item() / variance
        assert 1 - 2 * math.sqrt(xq / k) <= ratio <= 1 + 2 * math.sqrt(xq / k) + 2 * xq / k


# --------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------


class TestReproducibility:
    """Same generator seed ⇒ bitwise identical outputs and gradients."""

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    @pytest.mark.parametrize(
        "op",
        [
            lambda t, g: F.dropout(t, 0.3, generator=g),
            lambda t, g: F.dropout(t, 0.3, scale="test", generator=g),
            lambda t, g: F.gaussian_dropout(t, 0.3, generator=g),
        ],
        ids=["dropout-train", "dropout-test", "gaussian"],
    )
    def test_same_seed_same_output_and_gradient(
        self, dropout_backend: str, device: torch.device, global_seed: int,
        dtype: torch.dtype, op: object,
    ) -> None:
        """Two runs from generators with the same seed agree bitwise, forward and backward;
        a different seed gives a different output."""
        results = []
        for seed in (global_seed, global_seed, global_seed + 1):
            x = nonzero_input((96, 80), dtype, device).requires_grad_()
            y = op(x, torch.Generator(device).manual_seed(seed))  # type: ignore[operator]
            y.backward(torch.ones_like(y))
            assert x.grad is not None
            results.append((y.detach(), x.grad))
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])
        assert not torch.equal(results[0][0], results[2][0])

    def test_thread_count_does_not_change_output(self, dropout_backend: str) -> None:
        """The same seed gives the same masks and noise with 1 thread as with all threads."""
        x = torch.ones(1 << 17)
        threads = torch.get_num_threads()
        outputs = []
        try:
            for n in (1, max(threads, 2)):
                torch.set_num_threads(n)
                g = torch.Generator().manual_seed(17)
                outputs.append((F.dropout(x, 0.5, generator=g), F.gaussian_dropout(x, 0.5,
                                                                                   generator=g)))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(outputs[0][0], outputs[1][0])
        assert torch.equal(outputs[0][1], outputs[1][1])

    @pytest.mark.gpu
    def test_cuda_same_seed_same_output(self, dropout_backend: str) -> None:
        """A seeded CUDA generator reproduces the CUDA output bitwise."""
        x = torch.ones(1000, device="cuda")
        a = F.dropout(x, 0.5, generator=torch.Generator("cuda").manual_seed(4))
        b = F.dropout(x, 0.5, generator=torch.Generator("cuda").manual_seed(4))
        assert torch.equal(a, b)

    @pytest.mark.gpu
    def test_cuda_generator_runs_torch_fused_kernel(self, dropout_backend: str) -> None:
        """With a generator, CUDA inverted dropout is torch's fused kernel: bitwise what
        ``torch.nn.functional.dropout`` gives from the same seed, one byte saved per element."""
        x = torch.randn(300, 257, device="cuda").requires_grad_()
        torch.cuda.manual_seed(11)
        expected = torch.nn.functional.dropout(x, 0.3, training=True)
        saved: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = F.dropout(x, 0.3, generator=torch.Generator("cuda").manual_seed(11))
        assert torch.equal(y, expected)
        assert sum(saved) == x.numel()
        y.backward(torch.ones_like(y))
        assert x.grad is not None
        assert torch.equal(x.grad, (y != 0) * torch.tensor(1 / 0.7, device="cuda"))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal element by element, NaN where the other has NaN (torch.equal treats NaN ≠ NaN)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


class TestReluDropout:
    """``F.relu_dropout`` is ``F.dropout(torch.relu(x))`` bit for bit, forward and backward."""

    SPECIAL = (float("nan"), float("inf"), float("-inf"), -0.0, 0.0, -1.0, 1e-30, 3.0)

    def _input(self, shape: tuple[int, ...], dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(11))
        flat = x.view(-1)
        flat[: len(self.SPECIAL)] = torch.tensor(self.SPECIAL, dtype=dtype)
        return x.to(device)

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    @pytest.mark.parametrize("scale", SCALES)
    @pytest.mark.parametrize("layout", ["contiguous", "transposed"])
    def test_equals_the_composition(self, dropout_backend: str, device: torch.device,
                                    global_seed: int, dtype: torch.dtype, scale: str,
                                    layout: str) -> None:
        """Same generator state ⇒ the same output and input gradient as relu then dropout,
        with NaN, ±inf, ±0 in the input and in the incoming gradient."""
        base = self._input((96, 70), dtype, device)
        grad = self._input((96, 70), dtype, device).flip(0)
        results = []
        for fused in (True, False):
            x = (base.t() if layout == "transposed" else base).detach().requires_grad_()
            gen = torch.Generator(device).manual_seed(global_seed)
            y = (F.relu_dropout(x, 0.4, scale=scale, generator=gen) if fused else
                 F.dropout(torch.relu(x), 0.4, scale=scale, generator=gen))
            y.backward(grad.t() if layout == "transposed" else grad)
            assert x.grad is not None
            results.append((y.detach(), x.grad))
        assert _same_bits(results[0][0], results[1][0])
        assert _same_bits(results[0][1], results[1][1])

    @pytest.mark.parametrize("p, training", [(0.0, True), (0.3, False), (1.0, True)])
    def test_identities(self, dropout_backend: str, p: float, training: bool) -> None:
        """No mask to draw (p = 0, evaluation, p = 1): relu then the dropout rule, exactly."""
        x = torch.randn(8, 5)
        for scale in SCALES:
            expected = F.dropout(torch.relu(x), p, training, scale=scale)
            assert torch.equal(F.relu_dropout(x, p, training, scale=scale), expected)

    def test_bad_arguments_name_themselves(self) -> None:
        with pytest.raises(ValueError, match="`p`"):
            F.relu_dropout(torch.ones(3), 1.5)
        with pytest.raises(ValueError, match="`scale`"):
            F.relu_dropout(torch.ones(3), 0.5, scale="sometimes")
        with pytest.raises(TypeError):
            F.relu_dropout(torch.ones(3, dtype=torch.int64), 0.5)

    def test_gradcheck_float64(self, dropout_backend: str, device: torch.device) -> None:
        """Finite differences agree with the gradient (inputs away from the ReLU kink)."""
        x = torch.randn(6, 7, dtype=torch.float64, device=device)
        x = (x + x.sign() * 0.1).requires_grad_()

        def op(t: torch.Tensor) -> torch.Tensor:
            return F.relu_dropout(t, 0.5, generator=torch.Generator(device).manual_seed(4))

        assert torch.autograd.gradcheck(op, (x,))
        assert torch.autograd.gradgradcheck(op, (x,))

    def test_create_graph_gives_the_same_gradient(self, dropout_backend: str) -> None:
        """Backward with create_graph=True (differentiable pieces) equals the one-pass backward."""
        base = self._input((40, 30), torch.float32, torch.device("cpu"))
        grad = self._input((40, 30), torch.float32, torch.device("cpu")).flip(1)
        results = []
        for create_graph in (False, True):
            x = base.clone().requires_grad_()
            y = F.relu_dropout(x, 0.3, generator=torch.Generator().manual_seed(2))
            (dx,) = torch.autograd.grad(y, x, grad, create_graph=create_graph)
            results.append(dx.detach())
        assert _same_bits(results[0], results[1])
