"""Tests of :mod:`dropoutlab.inference`: weight scaling vs Monte-Carlo averaging (§4, §7.5).

Statistical tests state their false-failure rate per test case (δ = 1e-6, split over the outputs
checked by a union bound). Models are tiny so that the whole file runs in a few seconds.
"""

from __future__ import annotations

import math
import re
from statistics import NormalDist

import pytest
import torch
from torch import nn

import dropoutlab as dl
from dropoutlab import inference

DELTA = 1e-6  # false-failure rate of each statistical test case


class Boom(nn.Module):
    """Raises inside forward, to test that modes are restored on error."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Always fail."""
        raise RuntimeError("boom")


class RowRecorder(nn.Module):
    """Identity that records how many rows each forward pass sees."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Record the batch size and pass ``x`` through."""
        self.rows.append(x.shape[0])
        return x


def linear_head(dropout: nn.Module, n_in: int = 6, n_out: int = 3) -> nn.Sequential:
    """dropout → Linear: the output is linear in the dropped input (weight scaling is exact)."""
    torch.manual_seed(0)
    return nn.Sequential(dropout, nn.Linear(n_in, n_out))


def inputs(n: int = 5, d: int = 6) -> torch.Tensor:
    """Fixed inputs, independent of the test seed."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(99))


def mlp() -> nn.Sequential:
    """A small classifier with two dropout layers and batch norm."""
    torch.manual_seed(1)
    return nn.Sequential(
        dl.Dropout(0.2), nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(),
        dl.Dropout(0.5), nn.Linear(16, 4),
    )


def modes(model: nn.Module) -> list[bool]:
    """Every module's training flag, in order."""
    return [module.training for module in model.modules()]


class TestMCConvergence:
    """With many samples the MC mean approaches the weight-scaled prediction."""

    @pytest.mark.parametrize("max_rows", [65536, 15])
    @pytest.mark.parametrize("scale", ["train", "test"])
    def test_bernoulli_mean_converges_to_weight_scaling(
        self, dropout_backend: str, generator: torch.Generator, scale: str, max_rows: int
    ) -> None:
        """For dropout → Linear, E[output] is exactly the eval (weight-scaled) output, in both
        scale modes; the MC mean of S = 4096 samples is within a Hoeffding bound of it.

        Output (n, c) of one sample is b_c + Σ_d W_cd·x_nd·r_d with independent r_d ∈ [0, f],
        so it ranges over an interval of length f·Σ_d |W_cd·x_nd|; samples are independent,
        so |mean − E| ≤ span·sqrt(ln(2/δ')/(2S)) with δ' = δ/(N·C) per output: false-failure
        rate ≤ δ = 1e-6 by the union bound (plus 1e-5 for float32 rounding). ``max_rows=15``
        (three samples per pass) exercises the chunked accumulation.
        """
        p, samples = 0.4, 4096
        model = linear_head(dl.Dropout(p, scale=scale))
        x = inputs()
        result = inference.mc_predict(model, x, samples, generator=generator, logits=False,
                                      max_rows=max_rows)
        expected = model.eval()(x).detach()
        f = 1 / (1 - p) if scale == "train" else 1.0
        span = f * (x[:, None, :] * model[1].weight.detach()[None]).abs().sum(-1)  # (N, C)
        n_outputs = expected.numel()
        bound = span * math.sqrt(math.log(2 * n_outputs / DELTA) / (2 * samples)) + 1e-5
        assert ((result.mean - expected).abs() <= bound).all()

    def test_gaussian_mean_and_std(self, dropout_backend: str, generator: torch.Generator) -> None:
        """GaussianDropout → Linear: each output is exactly normal with mean = eval output and
        variance σ²·Σ_d (W_cd x_nd)², σ² = p/(1 − p).

        Mean: |mean − E| ≤ z·sd/√S, z = Φ⁻¹(1 − δ/(4NC)) (rate δ/2 over all outputs).
        Std: (S − 1)s²/sd² ~ χ²_{S−1}; Laurent–Massart bounds at x = ln(4NC/δ) (rate δ/2).
        False-failure rate ≤ δ = 1e-6 (float32 rounding adds 1e-5 to the mean bound).
        """
        p, samples = 0.3, 4096
        model = linear_head(dl.GaussianDropout(p))
        x = inputs()
        result = inference.mc_predict(model, x, samples, generator=generator, logits=False,
                                      max_rows=64)
        expected = model.eval()(x).detach()
        contrib = x[:, None, :] * model[1].weight.detach()[None]  # (N, C, D)
        sd = math.sqrt(p / (1 - p)) * contrib.pow(2).sum(-1).sqrt()  # (N, C)
        n_outputs = expected.numel()
        z = NormalDist().inv_cdf(1 - DELTA / (4 * n_outputs))
        assert ((result.mean - expected).abs() <= z * sd / math.sqrt(samples) + 1e-5).all()
        k, xq = samples - 1, math.log(4 * n_outputs / DELTA)
        ratio = (result.std / sd).pow(2)
        assert (ratio >= 1 - 2 * math.sqrt(xq / k)).all()
        assert (ratio <= 1 + 2 * math.sqrt(xq / k) + 2 * xq / k).all()

    def test_std_is_accurate_when_small_next_to_the_mean(
        self, dropout_backend: str, generator: torch.Generator
    ) -> None:
        """Outputs 1000 + 0.01·r (r ~ N(1, 1)): the reported std is 0.01 to within the χ²
        bound (rate ≤ δ = 1e-6) plus 1 % for float32 rounding of the outputs. A one-pass
        E[o²] − E[o]² in float32 loses this entirely (its rounding error is ~0.06 in variance).
        """
        model = nn.Sequential(dl.GaussianDropout(0.5), nn.Linear(1, 1))
        with torch.no_grad():
            model[1].weight.fill_(0.01)
            model[1].bias.fill_(1000.0)
        samples = 4096
        result = inference.mc_predict(model, torch.ones(1, 1), samples, generator=generator,
                                      logits=False, max_rows=100)
        k, xq = samples - 1, math.log(2 / DELTA)
        ratio = (result.std.item() / 0.01) ** 2
        low, high = 1 - 2 * math.sqrt(xq / k), 1 + 2 * math.sqrt(xq / k) + 2 * xq / k
        assert low - 0.02 <= ratio <= high + 0.02


class TestMCSummaries:
    """The summaries are the right functions of the sampled probabilities."""

    @pytest.mark.parametrize("max_rows", [65536, 7, 3])
    def test_summaries_match_the_samples(self, dropout_backend: str, max_rows: int) -> None:
        """mean, std (n − 1), entropy H[mean] and mutual information H[mean] − mean H[p_s]
        equal those computed from ``sample_probabilities`` with the same seed and max_rows
        (the two draw in the same order). Deterministic."""
        model, x = mlp(), inputs()
        seed = torch.Generator().manual_seed(5)
        probs = inference.sample_probabilities(model, x, 20, generator=seed, max_rows=max_rows)
        result = inference.mc_predict(model, x, 20, generator=torch.Generator().manual_seed(5),
                                      max_rows=max_rows)
        assert probs.shape == (20, 5, 4) and result.samples == 20

        def entropy(q: torch.Tensor) -> torch.Tensor:
            return -(q * q.clamp_min(1e-30).log()).sum(-1)

        mean = probs.mean(0)
        torch.testing.assert_close(result.mean, mean)
        torch.testing.assert_close(result.std, probs.std(0), atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(result.entropy, entropy(mean))
        torch.testing.assert_close(result.mutual_information,
                                   (entropy(mean) - entropy(probs).mean(0)).clamp_min(0),
                                   atol=1e-6, rtol=1e-4)

    def test_probability_properties(self, dropout_backend: str) -> None:
        """Shapes (N, C) and (N,), float32; rows sum to 1; 0 ≤ MI ≤ entropy ≤ ln C; std ≥ 0;
        and MI > 0 somewhere, since the thinned networks disagree."""
        result = inference.mc_predict(mlp(), inputs(), 30,
                                      generator=torch.Generator().manual_seed(0))
        assert result.mean.shape == (5, 4) and result.std.shape == (5, 4)
        assert result.entropy.shape == (5,) and result.mutual_information.shape == (5,)
        assert result.mean.dtype == torch.float32
        torch.testing.assert_close(result.mean.sum(-1), torch.ones(5))
        assert (result.std >= 0).all()
        assert (result.mutual_information >= 0).all()
        assert (result.mutual_information <= result.entropy + 1e-6).all()
        assert (result.entropy <= math.log(4) + 1e-6).all()
        assert (result.mutual_information > 0).any()

    def test_one_sample_has_no_spread(self, dropout_backend: str) -> None:
        """samples = 1: std and mutual information are exactly 0."""
        result = inference.mc_predict(mlp(), inputs(), 1,
                                      generator=torch.Generator().manual_seed(0))
        assert torch.equal(result.std, torch.zeros(5, 4))
        assert torch.equal(result.mutual_information, torch.zeros(5))

    def test_no_dropout_equals_weight_scaling(self, dropout_backend: str) -> None:
        """Without active dropout (p = 0) every thinned net is the full net: the MC mean equals
        ``weight_scaled_predict`` and std and MI vanish (to float32 rounding)."""
        model = mlp()
        for module in model.modules():
            if isinstance(module, dl.Dropout):
                module.p = 0.0
        x = inputs()
        result = inference.mc_predict(model, x, 8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(result.mean, inference.weight_scaled_predict(model, x))
        assert result.std.max().item() < 1e-6 and result.mutual_information.max().item() < 1e-5

    def test_seeded_generator_reproduces(self, dropout_backend: str, global_seed: int) -> None:
        """The same seed and max_rows give bitwise identical summaries; another seed differs.

        Results for *different* max_rows are not bitwise equal in general: max_rows decides how
        samples are stacked into passes and so the order of draws (statistically they agree,
        see test_bernoulli_mean_converges_to_weight_scaling).
        """
        model, x = mlp(), inputs()
        runs = [
            inference.mc_predict(model, x, 20, generator=torch.Generator().manual_seed(s),
                                 max_rows=30)
            for s in (global_seed, global_seed, global_seed + 1)
        ]
        for field in ("mean", "std", "entropy", "mutual_information"):
            assert torch.equal(getattr(runs[0], field), getattr(runs[1], field))
        assert not torch.equal(runs[0].mean, runs[2].mean)

    def test_torch_dropout_is_sampled_from_the_global_generator(self) -> None:
        """torch.nn.Dropout layers are switched on too; they draw from the global generator,
        so ``torch.manual_seed`` reproduces them."""
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3)).eval()
        x = inputs()
        torch.manual_seed(3)
        first = inference.mc_predict(model, x, 10)
        torch.manual_seed(3)
        second = inference.mc_predict(model, x, 10)
        assert torch.equal(first.mean, second.mean) and (first.std > 0).any()
        assert not model[1].training


class TestModesAndMemory:
    """Only dropout is stochastic; modes are restored; passes are bounded by max_rows."""

    def test_batch_norm_stays_in_eval(self, dropout_backend: str) -> None:
        """Batch norm uses its running statistics (which stay bitwise unchanged) even when the
        model was in training mode, and the model is left in training mode."""
        model, x = mlp(), inputs()
        model.train()
        with torch.no_grad():
            model(torch.randn(32, 6))  # give batch norm non-trivial running stats
        bn = model[2]
        saved = {k: v.clone() for k, v in bn.state_dict().items()}
        inference.mc_predict(model, x, 10, generator=torch.Generator().manual_seed(0))
        for key, value in bn.state_dict().items():
            assert torch.equal(value, saved[key]), key
        assert all(modes(model))
        # with dropout off, MC equals a pure eval pass: batch statistics were not used
        for module in model.modules():
            if isinstance(module, dl.Dropout):
                module.p = 0.0
        result = inference.mc_predict(model, x, 2)
        torch.testing.assert_close(result.mean, torch.softmax(model.eval()(x), -1))

    @pytest.mark.parametrize("call", ["mc_predict", "sample_probabilities", "weight_scaled"])
    def test_modes_and_generators_restored_after_an_exception(self, call: str) -> None:
        """An exception inside the model propagates, and every module's mode and every
        dropoutlab layer's generator attribute are as before."""
        model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), dl.Dropout(0.5),
                              dl.GaussianDropout(0.2), Boom())
        model.train()
        model[1].eval()  # mixed modes must come back exactly
        own = torch.Generator().manual_seed(1)
        model[2].generator = own
        before = modes(model)
        with pytest.raises(RuntimeError, match="boom"):
            if call == "mc_predict":
                inference.mc_predict(model, inputs(), 3, generator=torch.Generator())
            elif call == "sample_probabilities":
                inference.sample_probabilities(model, inputs(), 3, generator=torch.Generator())
            else:
                inference.weight_scaled_predict(model, inputs())
        assert modes(model) == before
        assert model[2].generator is own and model[3].generator is None

    def test_stochastic_mode_switches_only_dropout(self) -> None:
        """Inside ``stochastic_mode`` exactly the dropout layers are training and they hold
        the given generator; afterwards everything is back."""
        model = mlp().train()
        g = torch.Generator()
        with inference.stochastic_mode(model, g):
            for module in model.modules():
                is_dropout = isinstance(module, dl.Dropout)
                assert module.training == is_dropout
                if is_dropout:
                    assert module.generator is g
        assert all(modes(model)) and model[0].generator is None

    @pytest.mark.parametrize(("n", "max_rows"), [(10, 25), (30, 25), (4, 1)])
    def test_passes_are_bounded_by_max_rows(self, dropout_backend: str, n: int,
                                            max_rows: int) -> None:
        """Every forward pass sees at most max_rows rows (inputs larger than max_rows are split
        into row blocks), and all samples × rows are evaluated exactly once."""
        recorder = RowRecorder()
        model = nn.Sequential(dl.Dropout(0.5), recorder)
        x = torch.rand(n, 3) + 0.1
        samples = 7
        result = inference.mc_predict(model, x, samples, logits=False, max_rows=max_rows,
                                      generator=torch.Generator().manual_seed(0))
        assert max(recorder.rows) <= max_rows
        assert sum(recorder.rows) == samples * n
        assert result.mean.shape == (n, 3)

    def test_weight_scaled_predict(self, dropout_backend: str) -> None:
        """``weight_scaled_predict`` is softmax of the eval pass; a training model stays
        training; ``logits=False`` returns the outputs as they are (float32)."""
        model, x = mlp().train(), inputs()
        probs = inference.weight_scaled_predict(model, x)
        assert all(modes(model))
        torch.testing.assert_close(probs, torch.softmax(model.eval()(x), -1))
        raw = inference.weight_scaled_predict(model, x, logits=False)
        torch.testing.assert_close(raw, model.eval()(x))

    @pytest.mark.parametrize("bad", [0, -3, 1.5, True, "10", None])
    def test_bad_samples_raise(self, bad: object) -> None:
        """samples < 1 or not an int: ValueError naming the argument, range and value."""
        message = re.escape(f"`samples` must be an integer >= 1, got samples={bad!r}")
        for fn in (inference.mc_predict, inference.sample_probabilities):
            with pytest.raises(ValueError, match=message):
                fn(mlp(), inputs(), bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [torch.zeros(0, 6), torch.tensor(1.0), [[1.0] * 6]])
    def test_inputs_without_rows_raise(self, bad: object) -> None:
        """Empty, 0-d or non-tensor inputs: ValueError saying a (N, ...) tensor is needed."""
        with pytest.raises(ValueError, match=r"`x` must be a tensor of shape \(N, \.\.\.\) "
                                             r"with N >= 1"):
            inference.mc_predict(mlp(), bad, 3)  # type: ignore[arg-type]

    def test_bad_max_rows_raise(self) -> None:
        """max_rows < 1: ValueError naming the argument."""
        with pytest.raises(ValueError, match=r"`max_rows` must be an integer >= 1, got max_rows=0"):
            inference.mc_predict(mlp(), inputs(), 3, max_rows=0)
