"""Tests for the native CPU dropout kernels (dropoutlab.kernels; Srivastava et al. 2014, §4, §10).

The core behaviour (contract, statistics, oracle, reproducibility) is tested for every backend in
test_functional.py. This file tests what is specific to the native path: the counter-based
generator against its written definition, independence of the thread count and of the
vector/scalar code path, zero bytes saved for backward, higher-order gradients, the compile
cache, and the automatic fallback to torch when the build fails.

Statistical bounds use z = 5.3 standard errors: a false failure rate of about 1e-7 per check.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dropoutlab import backend, kernels
from dropoutlab import functional as F
from dropoutlab.kernels import _build

Z = 5.3  # two-sided normal quantile for a false-failure rate of ~1.2e-7 per check
MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
BLOCK = 4096  # must match dropout.c

pytestmark = pytest.mark.skipif(
    not kernels.available(), reason="native kernels cannot be built on this machine"
)


def mix64(z: int) -> int:
    """SplitMix64's output function, written from its definition (the oracle for dropout.c)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def word(seed: int, i: int) -> int:
    """The i-th random word of the stream for ``seed``: mix64(mix64(seed) + (i + 1) * GAMMA)."""
    return mix64((mix64(seed) + (i + 1) * GAMMA) & MASK64)


def expected_keep(seed: int, n: int, thr: int) -> list[bool]:
    """Which of n elements survive, from the written block/pair layout of dropout.c."""
    keep: list[bool] = []
    for lo in range(0, n, BLOCK):
        keep += expected_keep_block(seed, lo, min(BLOCK, n - lo), thr)
    return keep


def expected_keep_block(seed: int, lo: int, length: int, thr: float) -> list[bool]:
    """Which elements of the block starting at element ``lo`` (a multiple of BLOCK) survive."""
    keep = [False] * length
    half = (length + 1) // 2
    c0 = (lo // BLOCK) * (BLOCK // 2)
    for j in range(half):
        h = word(seed, c0 + j)
        keep[j] = (h & 0xFFFFFFFF) >= thr
        if half + j < length:
            keep[half + j] = (h >> 32) >= thr
    return keep


SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}
ALL_DTYPES = tuple(SUFFIX)  # every dtype the dropout kernels take


def raw_call(kind: str, x: torch.Tensor, out: torch.Tensor, seed: int, *params: float) -> None:
    """Call a C entry point directly (lets a test pass the same buffer as input and output)."""
    lib = kernels.require()
    suffix = SUFFIX[x.dtype]
    fn = getattr(lib.handle, f"dl_{kind}_{suffix}")
    fn(x.data_ptr(), out.data_ptr(), x.numel(), seed, *params, torch.get_num_threads())


@pytest.fixture
def native() -> Iterator[None]:
    """Select the native backend for one test."""
    with backend.use_backend("native"):
        yield


@pytest.fixture
def threads() -> Iterator[int]:
    """Restore torch's thread count after a test changes it."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


class TestGenerator:
    def test_words_follow_the_splitmix64_definition(self) -> None:
        """dl_words returns mix64(mix64(seed) + (i + 1)·γ), checked against Python integers."""
        seed, start, n = 0x1234_5678_9ABC_DEF0, 1_000_003, 64
        out = (ctypes.c_uint64 * n)()
        kernels.require().handle.dl_words(seed, start, n, out)
        assert list(out) == [word(seed, start + i) for i in range(n)]

    @pytest.mark.parametrize("n", [1, 7, BLOCK, 2 * BLOCK + 37])
    def test_mask_follows_the_documented_layout(self, n: int) -> None:
        """Element i is kept iff its 32-bit half-word ≥ round(p·2^32), blocks and tails included."""
        seed, p = 987_654_321, 0.3
        thr = kernels.drop_threshold(p)
        x = torch.ones(n)
        y = torch.empty_like(x)
        raw_call("dropout", x, y, seed, thr, 2.0)
        assert (y != 0).tolist() == expected_keep(seed, n, thr)
        assert set(y.unique().tolist()) <= {0.0, 2.0}

    def test_seed_is_one_int64_draw_as_before(self) -> None:
        """The operators keep the masks of earlier releases: a call's seed is
        ``torch.empty((), dtype=torch.int64).random_(generator=g)`` and its mask is the
        documented layout for that seed (stored runs resume bitwise from checkpoints)."""
        n, p = 2 * BLOCK + 11, 0.4
        seed = int(torch.empty((), dtype=torch.int64).random_(
            generator=torch.Generator().manual_seed(77)))
        with backend.use_backend("native"):
            y = F.dropout(torch.ones(n), p, generator=torch.Generator().manual_seed(77))
            torch.manual_seed(78)
            global_seed = int(torch.empty((), dtype=torch.int64).random_())
            torch.manual_seed(78)
            z = F.relu_dropout(torch.ones(n), p)
        thr = kernels.drop_threshold(p)
        assert (y != 0).tolist() == expected_keep(seed, n, thr)
        assert (z != 0).tolist() == expected_keep(global_seed, n, thr)

    def test_threshold_is_the_closest_32_bit_fraction(self) -> None:
        """P(drop) = thr / 2^32 is within 2^-33 of p, and p near 1 never overflows 32 bits."""
        for p in (1e-12, 0.1, 0.5, 0.9, 1 - 1e-12):
            thr = kernels.drop_threshold(p)
            assert 0 <= thr < 2**32
            assert abs(thr / 2**32 - p) <= 2**-32

    @pytest.mark.parametrize("dtype", ALL_DTYPES)
    def test_thread_count_does_not_change_anything(
        self, threads: int, dtype: torch.dtype
    ) -> None:
        """Outputs and gradients are bitwise equal with 1, 2 and 3 threads (100 blocks + tail)."""
        results = []
        for n_threads in (1, 2, 3):
            torch.set_num_threads(n_threads)
            data = torch.Generator().manual_seed(0)
            x = torch.randn(100 * BLOCK + 999, dtype=dtype, generator=data)
            x.requires_grad_()
            g = torch.Generator().manual_seed(5)
            y = kernels.dropout(x, 0.4, 1 / 0.6, g) + kernels.gaussian_dropout(x, 0.7, g)
            y.backward(torch.ones_like(y))
            assert x.grad is not None
            results.append((y.detach(), x.grad))
        for y, grad in results[1:]:
            assert torch.equal(y, results[0][0])
            assert torch.equal(grad, results[0][1])

    @pytest.mark.parametrize("dtype", ALL_DTYPES)
    def test_in_place_call_matches_out_of_place(self, dtype: torch.dtype) -> None:
        """The scalar loop (taken when input and output alias) computes the vector loop's bits."""
        n, seed = 3 * BLOCK + 5, 42
        x = torch.randn(n, dtype=dtype)
        for kind, params in (("dropout", (kernels.drop_threshold(0.5), 2.0)), ("gaussian", (0.8,))):
            out = torch.empty_like(x)
            raw_call(kind, x, out, seed, *params)
            inplace = x.clone()
            raw_call(kind, inplace, inplace, seed, *params)
            assert torch.equal(out, inplace), kind


    @pytest.mark.parametrize("dtype", ALL_DTYPES)
    def test_streamed_large_output_has_the_same_values(self, dtype: torch.dtype) -> None:
        """An output larger than the last-level cache (written with streaming stores, from an
        unaligned address too) holds the values of the normal-store path: its first blocks
        equal a small call's with the same seed, its last block is the documented one, and the
        fused ReLU kernel equals dropout of relu(x) over the whole output."""
        big = (160 << 20) // torch.tensor([], dtype=dtype).element_size() + 3  # 160 MiB > LLC
        small = 5 * BLOCK + 17
        seed = 7
        x = torch.randn(big, dtype=dtype, generator=torch.Generator().manual_seed(3))
        for kind, params in (("dropout", (kernels.drop_threshold(0.3), 1 / 0.7)),
                             ("gaussian", (0.6,))):
            full = torch.empty(big + 1, dtype=dtype)[1:]  # misaligned by one element
            raw_call(kind, x, full, seed, *params)
            head = torch.empty(small, dtype=dtype)
            raw_call(kind, x[:small], head, seed, *params)
            assert torch.equal(full[:5 * BLOCK], head[:5 * BLOCK]), kind
            if kind == "dropout":
                lo = (big // BLOCK) * BLOCK
                keep = expected_keep_block(seed, lo, big - lo, params[0])
                assert torch.equal(full[lo:] != 0, torch.tensor(keep) & (x[lo:] != 0))
                fused = torch.empty_like(full)
                raw_call("relu_dropout", x, fused, seed, *params)
                raw_call("dropout", torch.relu(x), full, seed, *params)
                assert torch.equal(fused, full)


class TestStatistics:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
    def test_drop_fraction_and_mean(self, native: None, global_seed: int, p: float,
                                    dtype: torch.dtype) -> None:
        """Drop fraction within Z binomial standard errors of p; E[out] = in (inverted scale).
        In bfloat16 the kept value 1/(1−p) is rounded once (relative error ≤ 2^-9, a bias of
        at most that much in the mean, added to the bound)."""
        n = 1 << 20
        g = torch.Generator().manual_seed(global_seed)
        y = F.dropout(torch.ones(n, dtype=dtype), p, generator=g)
        se = math.sqrt(p * (1 - p) / n)
        rounding = 0.0 if dtype == torch.float32 else 2.0**-9
        assert abs((y == 0).double().mean().item() - p) < Z * se
        assert abs(y.double().mean().item() - 1.0) < Z * se / (1 - p) + rounding

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    def test_gaussian_moments_and_normality(
        self, native: None, global_seed: int, dtype: torch.dtype
    ) -> None:
        """Noise has mean 1 and variance p/(1−p) within Z standard errors, and passes a
        Kolmogorov–Smirnov test at the 1e-7 level (critical value sqrt(ln(2/α)/2) / sqrt(n)).

        bfloat16 rounds each noise value r to relative error u ≤ 2^-9, so each bound gains that
        rounding's worst case: u·E|r| for the mean, (2u + u²)·E[r²] for the variance, and for
        the CDF max φ(0)/σ · u · |r| at the tested point (r moves by at most u|r|)."""
        n, p = 1 << 18, 0.5
        sigma = F.gaussian_sigma(p)
        g = torch.Generator().manual_seed(global_seed)
        noise = F.gaussian_dropout(torch.ones(n, dtype=dtype), p, generator=g).double()
        u = 2.0**-9 if dtype == torch.bfloat16 else 0.0
        assert abs(noise.mean().item() - 1.0) < Z * sigma / math.sqrt(n) + u * 2.0
        var_se = sigma**2 * math.sqrt(2 / (n - 1))  # normal data: Var(s²) = 2σ⁴/(n−1)
        second_moment = 1.0 + sigma**2
        assert abs(noise.var().item() - sigma**2) < Z * var_se + (2 * u + u * u) * second_moment
        z = ((noise - 1.0) / sigma).sort().values
        cdf = torch.special.ndtr(z)
        ranks = torch.arange(1, n + 1, dtype=torch.float64)
        gap = torch.maximum(ranks / n - cdf, cdf - (ranks - 1) / n)
        allowance = 0.3989 / sigma * u * (1.0 + sigma * z).abs()  # φ(0) = 0.3989
        assert (gap - allowance).max().item() < math.sqrt(math.log(2 / 1e-7) / 2) / math.sqrt(n)

    def test_elements_sharing_a_word_are_independent(self, native: None, global_seed: int) -> None:
        """Elements j and j + BLOCK/2 of a block use the two halves of one 64-bit word: both
        kept with probability (1−p)², and their Gaussian noises (Box–Muller's cos and sin
        outputs) uncorrelated, also in their squares (Z standard errors each)."""
        blocks, half, p = 256, BLOCK // 2, 0.5
        g = torch.Generator().manual_seed(global_seed)
        kept = (F.dropout(torch.ones(blocks * BLOCK), p, generator=g) != 0).view(blocks, 2, half)
        both = (kept[:, 0] & kept[:, 1]).double().mean().item()
        q = (1 - p) ** 2
        assert abs(both - q) < Z * math.sqrt(q * (1 - q) / (blocks * half))
        z = F.gaussian_dropout(torch.ones(blocks * BLOCK, dtype=torch.float64), p, generator=g)
        z = ((z - 1) / F.gaussian_sigma(p)).view(blocks, 2, half)
        n = blocks * half
        for a, b in ((z[:, 0], z[:, 1]), (z[:, 0] ** 2 - 1, z[:, 1] ** 2 - 1)):
            corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
            assert abs(corr) < Z / math.sqrt(n)

    def test_gaussian_tails_are_present(self, native: None) -> None:
        """About 0.27 % of normal draws lie beyond 3σ (Z binomial errors), none beyond 6.8σ."""
        n = 1 << 20
        z = F.gaussian_dropout(torch.ones(n), 0.5, generator=torch.Generator().manual_seed(3)) - 1
        beyond = (z.abs() > 3).double().mean().item()
        q = math.erfc(3 / math.sqrt(2))
        assert abs(beyond - q) < Z * math.sqrt(q * (1 - q) / n)
        assert z.abs().max().item() < 6.8


class TestAutograd:
    def test_nothing_is_saved_for_backward(self, native: None) -> None:
        """The mask is regenerated from the seed: saved-tensor hooks see 0 bytes (torch: 4/elem)."""
        saved: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        x = torch.randn(256, 64, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            F.dropout(x, 0.5).sum().backward()
            F.gaussian_dropout(x, 0.5).sum().backward()
        assert sum(saved) == 0

    def test_gradient_is_mask_times_factor(self, native: None) -> None:
        """dL/dx = g · m · factor, the same mask as the forward pass."""
        x = torch.rand(513, 77) + 0.5
        x.requires_grad_()
        g = torch.randn(513, 77)
        y = F.dropout(x, 0.3, generator=torch.Generator().manual_seed(1))
        y.backward(g)
        assert x.grad is not None
        expected = g * (y != 0) * torch.tensor(1 / 0.7, dtype=torch.float32)
        assert torch.equal(x.grad, expected)

    @pytest.mark.parametrize("op", ["dropout", "gaussian"])
    def test_gradcheck_and_gradgradcheck_float64(self, native: None, op: str) -> None:
        """First and second derivatives match finite differences (backward is itself a dropout)."""

        def fn(x: torch.Tensor) -> torch.Tensor:
            g = torch.Generator().manual_seed(11)
            if op == "dropout":
                return F.dropout(x, 0.4, generator=g)
            return F.gaussian_dropout(x, 0.4, generator=g)

        x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))

    def test_same_seed_same_outputs_and_grads(self, native: None, global_seed: int) -> None:
        """A seeded generator reproduces outputs and gradients bitwise; a new draw differs."""
        runs = []
        for _ in range(2):
            g = torch.Generator().manual_seed(global_seed)
            x = torch.linspace(-3, 3, 4099, requires_grad=True)
            y = F.dropout(x, 0.5, generator=g) * F.gaussian_dropout(x, 0.5, generator=g)
            y.backward(torch.ones_like(y))
            assert x.grad is not None
            runs.append((y.detach(), x.grad))
        assert torch.equal(runs[0][0], runs[1][0])
        assert torch.equal(runs[0][1], runs[1][1])
        x = torch.ones(4099)
        assert not torch.equal(F.dropout(x, 0.5, generator=g), F.dropout(x, 0.5, generator=g))

    def test_global_generator_is_used_without_a_generator(self, native: None) -> None:
        """generator=None draws the seed from torch's global generator (torch.manual_seed)."""
        torch.manual_seed(123)
        a = F.dropout(torch.ones(1000), 0.5)
        torch.manual_seed(123)
        assert torch.equal(a, F.dropout(torch.ones(1000), 0.5))


class TestContract:
    @pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (2, 3, 4, 5)])
    def test_any_shape(self, native: None, shape: tuple[int, ...]) -> None:
        """Empty, 0-dim and n-dim inputs keep their shape and dtype."""
        x = torch.ones(shape, dtype=torch.float64)
        for y in (F.dropout(x, 0.5), F.gaussian_dropout(x, 0.5)):
            assert y.shape == x.shape and y.dtype == x.dtype

    def test_non_contiguous_input_and_gradient(self, native: None) -> None:
        """A transposed input gives the transposed result of its contiguous copy, and the
        gradient reaches the strided input through the same mask."""
        base = (torch.rand(64, 48) + 0.5).requires_grad_()
        x = base.t()
        y = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(2))
        expected = F.dropout(x.contiguous(), 0.5, generator=torch.Generator().manual_seed(2))
        assert torch.equal(y, expected)
        y.sum().backward()
        assert base.grad is not None
        assert torch.equal(base.grad.t(), (y != 0).float() * 2)

    def test_inf_and_nan_propagate_like_the_reference(self, native: None) -> None:
        """x · 0 for a dropped inf is NaN, as in the reference x * mask."""
        x = torch.full((4096,), math.inf)
        y = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(0))
        assert torch.isnan(y).any() and torch.isinf(y).any()
        assert torch.isnan(F.dropout(torch.full((10,), math.nan), 0.5)).all()

    @pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
    def test_other_dtypes_are_not_taken(self, dtype: torch.dtype) -> None:
        """supports() is False for integer and complex tensors (the functional layer refuses
        integers; the kernels never see them)."""
        assert not kernels.supports(torch.ones(10, dtype=dtype))

    @pytest.mark.parametrize("name", ["native", "auto"])
    def test_backend_selects_the_native_path(self, name: str) -> None:
        """native and auto route float32 CPU tensors to the kernels (same draw, same bits)."""
        x = torch.randn(999)
        with backend.use_backend(name):
            y = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(4))
        direct = kernels.dropout(x, 0.5, 2.0, torch.Generator().manual_seed(4))
        assert torch.equal(y, direct)

    def test_torch_backend_is_the_reference(self) -> None:
        """Forcing "torch" gives exactly the reference path's output for the same generator."""
        x = torch.randn(999)
        with backend.use_backend("torch"):
            y = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(4))
        ref = backend.reference_dropout(x, 0.5, 2.0, torch.Generator().manual_seed(4))
        assert torch.equal(y, ref)

    def test_backend_from_environment(self, tmp_path: Path) -> None:
        """DROPOUTLAB_BACKEND=torch in a fresh process selects the reference path."""
        code = "from dropoutlab import backend; print(backend.get_backend())"
        env = {**os.environ, "DROPOUTLAB_BACKEND": "torch"}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == "torch"


@pytest.fixture
def fresh_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty kernel cache; the process's loaded library is restored afterwards."""
    monkeypatch.setenv("DROPOUTLAB_CACHE", str(tmp_path / "cache"))
    kernels.reset()
    yield tmp_path
    monkeypatch.undo()
    kernels.reset()
    kernels.available()


def _fake_compiler(directory: Path, message: str) -> Path:
    """A `cc` that answers --version but fails every compile with ``message``."""
    script = directory / "broken-cc"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "broken-cc 1.0"; exit 0; fi\n'
        f'echo "{message}" >&2\nexit 1\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


class TestSixteenBit:
    """bfloat16 and float16: widened to float32, computed as the float32 kernels compute, rounded
    once to nearest even. The oracle is the float32 kernel itself on the widened input, cast
    with torch's own conversion; it must agree bitwise for every 16-bit value."""

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("op", ["dropout", "relu_dropout", "gaussian"])
    def test_every_value_is_the_float32_result_rounded(self, dtype: torch.dtype,
                                                       op: str) -> None:
        """All 65536 bit patterns (zeros, subnormals, infinities, NaNs), three times over so
        each meets kept and dropped: y16 = round(kernel32(x16.float())), bitwise (NaN = NaN)."""
        x = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype).repeat(3)
        assert kernels.supports(x)

        def run(v: torch.Tensor) -> torch.Tensor:
            g = torch.Generator().manual_seed(5)
            if op == "gaussian":
                return kernels.gaussian_dropout(v, 0.8, g)
            fn = kernels.dropout if op == "dropout" else kernels.relu_dropout
            return fn(v, 0.3, 1 / 0.7, g)

        y, reference = run(x), run(x.float()).to(dtype)
        assert y.dtype == dtype
        same = (y.view(torch.int16) == reference.view(torch.int16)) | (y.isnan()
                                                                        & reference.isnan())
        assert bool(same.all())

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_mask_is_the_float32_mask(self, dtype: torch.dtype) -> None:
        """The same seed drops the same elements in every dtype (the mask depends on the index
        only), across blocks and the odd tail; the fused ReLU kernel too."""
        n = 3 * BLOCK + 17
        ones = torch.ones(n)
        for fn in (kernels.dropout, kernels.relu_dropout):
            kept32 = fn(ones, 0.4, 1.0, torch.Generator().manual_seed(9)) != 0
            kept16 = fn(ones.to(dtype), 0.4, 1.0, torch.Generator().manual_seed(9)) != 0
            assert torch.equal(kept16, kept32)
        # ... and it is the documented mask of the call's seed (one int64 draw, as uint64)
        seed = torch.empty((), dtype=torch.int64).random_(
            generator=torch.Generator().manual_seed(9)).item() & MASK64
        keep = expected_keep(seed, n, kernels.drop_threshold(0.4))
        assert torch.equal(kept16, torch.tensor(keep))

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_gradients_are_the_float32_gradients_rounded(self, dtype: torch.dtype) -> None:
        """Backward of each op in 16 bits: the float32 backward on the widened tensors,
        rounded (the fused ReLU backward reads x and the mask; the others re-apply the op)."""
        data = torch.Generator().manual_seed(4)
        x = torch.randn(2 * BLOCK + 3, generator=data).to(dtype)
        grad = torch.randn(x.shape, generator=data).to(dtype)
        ops = {"dropout": lambda v, g: kernels.dropout(v, 0.5, 2.0, g),
               "relu_dropout": lambda v, g: kernels.relu_dropout(v, 0.3, 1 / 0.7, g),
               "gaussian": lambda v, g: kernels.gaussian_dropout(v, 0.6, g)}
        for name, fn in ops.items():
            grads = []
            for v, gv in ((x, grad), (x.float(), grad.float())):
                leaf = v.clone().requires_grad_()
                fn(leaf, torch.Generator().manual_seed(8)).backward(gv)
                assert leaf.grad is not None
                grads.append(leaf.grad)
            assert grads[0].dtype == dtype
            assert torch.equal(grads[0], grads[1].to(dtype)), name

    def test_portable_float16_conversions_match_the_compilers(self, tmp_path: Path) -> None:
        """Where the compiler has no _Float16, dropout.c converts float16 with code of its own
        (-DDL_PORTABLE_F16 builds it here): every float16 value loads and stores unchanged, and
        float32 products round exactly as torch rounds them (overflow, subnormals, ties)."""
        compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if compiler is None:
            pytest.skip("no C compiler")
        lib_path = tmp_path / "portable.so"
        subprocess.run([compiler, "-O2", "-std=c11", "-shared", "-fPIC", "-ffp-contract=off",
                        "-DDL_PORTABLE_F16", str(_build.SOURCE), "-o", str(lib_path), "-lm"],
                       check=True, capture_output=True)
        handle = ctypes.CDLL(str(lib_path))
        _build._declare(handle)  # the library's own signatures
        fn = handle.dl_dropout_f16
        every = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.float16)
        wide = torch.randn(1 << 16, generator=torch.Generator().manual_seed(0)).half()
        for x, factor in ((every, 1.0), (wide, 1.25), (wide, 3.3e-5), (wide, 1e4), (wide, 7.0)):
            y = torch.empty_like(x)
            fn(x.data_ptr(), y.data_ptr(), x.numel(), 1, 0, factor, 1)  # threshold 0: keep all
            reference = (x.float() * torch.tensor(factor)).half()
            same = (y.view(torch.int16) == reference.view(torch.int16)) | (y.isnan()
                                                                            & reference.isnan())
            assert bool(same.all()), factor


class TestMomentumStep:
    """The one-pass momentum update against torch's three ``_foreach`` passes, bit for bit."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("m, s", [(0.0, -0.7), (0.5, -1e-3), (0.95, -10.0), (0.99, 0.123)])
    def test_bitwise_equal_to_foreach(self, dtype: torch.dtype, m: float, s: float) -> None:
        gen = torch.Generator().manual_seed(0)
        shapes = [(1,), (30,), (7, 30), (4097, 3), (300, 200)]  # tails, one and several blocks
        weights = [torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes]
        velocity = [torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes]
        grads = [torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes]
        ours_w, ours_v = [w.clone() for w in weights], [v.clone() for v in velocity]
        torch._foreach_mul_(velocity, m)
        torch._foreach_add_(velocity, grads, alpha=s)
        torch._foreach_add_(weights, velocity)
        versions = [t._version for t in ours_w + ours_v]
        assert kernels.momentum_step_(ours_w, ours_v, grads, m, s)
        for ours, ref in zip(ours_w + ours_v, weights + velocity, strict=True):
            assert torch.equal(ours, ref)
        # autograd sees the in-place write, as it would see torch's in-place ops
        assert all(t._version > v for t, v in zip(ours_w + ours_v, versions, strict=True))

    def test_thread_count_does_not_change_the_result(self) -> None:
        gen = torch.Generator().manual_seed(1)
        w, v, g = (torch.randn(300_000, generator=gen) for _ in range(3))
        results = []
        previous = torch.get_num_threads()
        try:
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                ours_w, ours_v = w.clone(), v.clone()
                assert kernels.momentum_step_([ours_w], [ours_v], [g], 0.9, -0.05)
                results.append((ours_w, ours_v))
        finally:
            torch.set_num_threads(previous)
        for ours_w, ours_v in results[1:]:
            assert torch.equal(ours_w, results[0][0]) and torch.equal(ours_v, results[0][1])

    @pytest.mark.parametrize("case", ["non-contiguous", "float16", "mixed dtypes"])
    def test_unsupported_tensors_are_left_to_the_caller(self, case: str) -> None:
        w = torch.randn(8, 6)
        v, g = torch.randn(8, 6), torch.randn(8, 6)
        if case == "non-contiguous":
            w = torch.randn(6, 8).t()
        elif case == "float16":
            w, v, g = w.half(), v.half(), g.half()
        else:
            g = g.double()
        before_w, before_v = w.clone(), v.clone()
        assert not kernels.momentum_step_([w], [v], [g], 0.9, -0.1)
        assert torch.equal(w, before_w) and torch.equal(v, before_v)


class TestMomentumStepBF16:
    """The update of bf16 mixed precision: float32 weights and velocities, bfloat16 gradients,
    the bfloat16 working copy rewritten in the same pass."""

    @pytest.mark.parametrize("m, s", [(0.0, -0.7), (0.5, -1e-3), (0.95, -10.0)])
    def test_bitwise_equal_to_foreach_on_widened_gradients(self, m: float, s: float) -> None:
        data = torch.Generator().manual_seed(2)
        shapes = [(3 * BLOCK + 5,), (64, 33), (1,)]
        w = [torch.randn(shape, generator=data) for shape in shapes]
        v = [torch.randn(shape, generator=data) for shape in shapes]
        g = [torch.randn(shape, generator=data).bfloat16() for shape in shapes]
        ours_w, ours_v = [t.clone() for t in w], [t.clone() for t in v]
        copies = [torch.empty(shape, dtype=torch.bfloat16) for shape in shapes]
        assert kernels.momentum_step_bf16_(ours_w, ours_v, g, copies, m, s)
        torch._foreach_mul_(v, m)
        torch._foreach_add_(v, [t.float() for t in g], alpha=s)
        torch._foreach_add_(w, v)
        for i in range(len(shapes)):
            assert torch.equal(ours_w[i], w[i]) and torch.equal(ours_v[i], v[i])
            assert torch.equal(copies[i], w[i].bfloat16())

    @pytest.mark.parametrize("case", ["float32 gradient", "float32 copy", "non-contiguous",
                                      "sizes differ"])
    def test_unsupported_tensors_are_left_to_the_caller(self, case: str) -> None:
        w, v = torch.randn(8, 6), torch.randn(8, 6)
        g, c = torch.randn(8, 6).bfloat16(), torch.zeros(8, 6, dtype=torch.bfloat16)
        if case == "float32 gradient":
            g = g.float()
        elif case == "float32 copy":
            c = c.float()
        elif case == "non-contiguous":
            g = torch.randn(6, 8).bfloat16().t()
        else:
            c = torch.zeros(8, 5, dtype=torch.bfloat16)
        before = [t.clone() for t in (w, v, c)]
        assert not kernels.momentum_step_bf16_([w], [v], [g], [c], 0.9, -0.1)
        assert all(torch.equal(t, b) for t, b in zip((w, v, c), before, strict=True))


class TestBuild:
    def test_build_is_cached_and_atomic(self, fresh_build: Path) -> None:
        """The first build writes one library into $DROPOUTLAB_CACHE; the next one reuses it
        and no temporary file is left behind."""
        first = _build.build()
        assert first.path.parent == fresh_build / "cache" / "kernels"
        mtime = first.path.stat().st_mtime_ns
        second = _build.build()
        assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
        assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]

    def test_operator_library_is_cached(self) -> None:
        """The operator library lives in the kernel cache under a name that depends on its
        inputs; asking again returns the same file without rebuilding it."""
        first = _build.build_ops(kernels.require())
        mtime = first.stat().st_mtime_ns
        assert first.parent == _build.cache_dir() and first.name.startswith("ops-")
        again = _build.build_ops(kernels.require())
        assert again == first and again.stat().st_mtime_ns == mtime

    def test_missing_compiler_falls_back_to_torch(
        self, fresh_build: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No compiler: available() is False, auto uses torch silently, native raises why."""
        monkeypatch.setenv("DROPOUTLAB_CC", str(fresh_build / "no-such-cc"))
        assert not kernels.available()
        with pytest.raises(kernels.KernelBuildError, match="not on PATH"):
            kernels.require()
        x = torch.randn(500)
        with backend.use_backend("auto"):
            y = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(9))
        ref = backend.reference_dropout(x, 0.5, 2.0, torch.Generator().manual_seed(9))
        assert torch.equal(y, ref)
        with backend.use_backend("native"), pytest.raises(kernels.KernelBuildError):
            F.dropout(x, 0.5)

    def test_missing_cxx_compiler_falls_back_to_torch(self, tmp_path: Path) -> None:
        """A C compiler but no C++ compiler (a fresh process, empty cache): the C library loads,
        the operators do not, auto uses torch silently and native raises naming the C++
        compiler."""
        code = (
            "import torch\n"
            "from dropoutlab import backend, kernels, functional as F\n"
            "assert kernels.available() and not kernels.operators_available()\n"
            "x = torch.randn(500)\n"
            "y = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(9))\n"
            "ref = backend.reference_dropout(x, 0.5, 2.0, torch.Generator().manual_seed(9))\n"
            "assert torch.equal(y, ref)\n"
            "backend.set_backend('native')\n"
            "try:\n"
            "    F.dropout(x, 0.5)\n"
            "except kernels.KernelBuildError as err:\n"
            "    print(err)\n"
        )
        env = {**os.environ, "DROPOUTLAB_CACHE": str(tmp_path / "cache"),
               "DROPOUTLAB_CXX": str(tmp_path / "no-such-c++")}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "no C++ compiler" in done.stdout and "no-such-c++" in done.stdout

    def test_compiler_error_is_reported(
        self, fresh_build: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A compiler that fails: require() raises with the compiler's own message."""
        monkeypatch.setenv("DROPOUTLAB_CC", str(_fake_compiler(fresh_build, "error: boom")))
        assert not kernels.available()
        with pytest.raises(kernels.KernelBuildError, match="error: boom"):
            kernels.require()
        with backend.use_backend("auto"):
            assert F.gaussian_dropout(torch.ones(10), 0.5).shape == (10,)


class TestHugePageHint:
    def test_follows_the_allocator_whichever_comes_first(
        self, native: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Large outputs ask for huge pages unless freed memory is kept: loading the library
        reads the allocator's state, and keep_freed_memory() updates a library already loaded."""
        from dropoutlab import allocator

        class FakeLibc:
            def mallopt(self, param: int, value: int) -> int:
                return 1

        try:
            monkeypatch.setattr(allocator, "_applied", False)
            kernels.reset()
            assert kernels.require().handle.dl_huge_pages() == 1
            monkeypatch.setattr(allocator, "_applied", True)
            kernels.reset()
            assert kernels.require().handle.dl_huge_pages() == 0
            monkeypatch.setattr(allocator, "_applied", False)
            kernels.sync_huge_pages()
            assert kernels.require().handle.dl_huge_pages() == 1
            with monkeypatch.context() as patch:
                patch.setattr(allocator, "_glibc", lambda: True)
                patch.setattr(allocator.ctypes, "CDLL", lambda *args: FakeLibc())
                patch.delenv(allocator.ENV_VAR, raising=False)
                assert allocator.keep_freed_memory() is True
            assert kernels.require().handle.dl_huge_pages() == 0
        finally:
            monkeypatch.undo()
            kernels.sync_huge_pages()


class TestFunctorch:
    def test_grad_transform_runs_the_native_operator(self, native: None) -> None:
        """functorch-wrapped tensors reach the operator: the gradient is the mask of the native
        kernel for the seed torch's global generator gives (the same as backward())."""
        torch.manual_seed(8)
        grad = torch.func.grad(lambda x: F.dropout(x, 0.5).sum())(torch.ones(64))
        assert set(grad.unique().tolist()) <= {0.0, 2.0}
        torch.manual_seed(8)
        assert torch.equal(grad, kernels.dropout(torch.ones(64), 0.5, 2.0, None))
