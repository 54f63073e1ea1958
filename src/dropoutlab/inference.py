"""Test-time inference for dropout nets (Srivastava et al. 2014, §4 and §7.5, Figure 11).

Two ways to predict with a net trained with dropout:

* **Weight scaling** (the paper's default): one deterministic pass with every weight scaled by
  the retention probability. In dropoutlab this is simply evaluation mode (``model.eval()``), in
  both scale modes; :func:`weight_scaled_predict` does it without touching the caller's modes.
* **Monte-Carlo averaging**: sample k thinned networks (dropout left on), average their
  predictive distributions. Figure 11 shows it matches weight scaling at about k = 50.
  :func:`mc_predict` does this and also returns uncertainty summaries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from dropoutlab._validation import check_positive_int
from dropoutlab.layers import Dropout, GaussianDropout

__all__ = [
    "MCPrediction",
    "mc_predict",
    "sample_probabilities",
    "stochastic_mode",
    "weight_scaled_predict",
]

_DROPOUT_TYPES = (Dropout, GaussianDropout, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                  nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass(frozen=True)
class MCPrediction:
    """Summary of a Monte-Carlo dropout prediction over ``samples`` thinned networks (§7.5).

    Attributes:
        mean: Mean predictive probabilities, shape (N, C).
        std: Per-class standard deviation of the sampled probabilities (with the n − 1
            correction; zero when ``samples == 1``), shape (N, C).
        entropy: Predictive entropy H[mean] in nats, shape (N,).
        mutual_information: H[mean] − mean_s H[p_s] in nats (the part of the entropy due to
            the model's uncertainty), shape (N,).
        samples: Number of thinned networks averaged.
    """

    mean: torch.Tensor
    std: torch.Tensor
    entropy: torch.Tensor
    mutual_information: torch.Tensor
    samples: int


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim=-1)


@contextmanager
def stochastic_mode(model: nn.Module, generator: torch.Generator | None = None) -> Iterator[None]:
    """Put only the dropout layers of ``model`` in training mode for a ``with`` block.

    Every other module (batch norm, for one) is in evaluation mode, so each pass samples one
    thinned network of the trained net. dropoutlab layers draw from ``generator`` (torch's own
    ``nn.Dropout`` cannot take one and uses the global generator). The modes and generators are
    restored on exit, also when the block raises.
    """
    saved_modes = {module: module.training for module in model.modules()}
    saved_generators = {
        module: module.generator
        for module in model.modules()
        if isinstance(module, Dropout | GaussianDropout)
    }
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, _DROPOUT_TYPES):
                module.train()
            if isinstance(module, Dropout | GaussianDropout) and generator is not None:
                module.generator = generator
        yield
    finally:
        for module, mode in saved_modes.items():
            module.training = mode
        for layer, gen in saved_generators.items():
            layer.generator = gen


def _to_probs(outputs: torch.Tensor, logits: bool) -> torch.Tensor:
    return torch.softmax(outputs.float(), dim=-1) if logits else outputs.float()


def _check_inputs(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"`x` must be a tensor of shape (N, ...) with N >= 1, got {shape}")
    return x


def _row_blocks(x: torch.Tensor, max_rows: int) -> Iterator[torch.Tensor]:
    """Split the inputs into blocks of at most ``max_rows`` rows (one block if N ≤ max_rows)."""
    yield from torch.split(x, max_rows, dim=0)


def _sample_chunks(
    model: nn.Module, x: torch.Tensor, samples: int, max_rows: int, logits: bool
) -> Iterator[torch.Tensor]:
    """Yield (k, N, C) blocks of sampled probabilities with k·N ≤ max_rows (k ≥ 1).

    ``x`` must have at most ``max_rows`` rows (see :func:`_row_blocks`).
    """
    n = x.shape[0]
    per_pass = max(1, max_rows // max(n, 1))
    done = 0
    while done < samples:
        k = min(per_pass, samples - done)
        stacked = x.repeat(k, *([1] * (x.dim() - 1)))  # (k·N, ...): one independent mask per row
        probs = _to_probs(model(stacked), logits)
        yield probs.reshape(k, n, -1)
        done += k


@torch.no_grad()
def sample_probabilities(
    model: nn.Module,
    x: torch.Tensor,
    samples: int,
    *,
    generator: torch.Generator | None = None,
    logits: bool = True,
    max_rows: int = 65536,
) -> torch.Tensor:
    """Predictive distributions of ``samples`` independently thinned networks (§7.5).

    Draws in the same order as :func:`mc_predict`, so the same seeded generator and
    ``max_rows`` give the samples that :func:`mc_predict` summarises.

    Args:
        model: A classifier containing dropout layers; its outputs are logits (or
            probabilities when ``logits=False``) of shape (N, C).
        x: Inputs, shape (N, ...).
        samples: Number of thinned networks, ≥ 1.
        generator: Seeded generator for dropoutlab layers; ``None`` uses the global one.
        logits: Whether the model outputs logits (softmax is applied) or probabilities.
        max_rows: Bound on rows per forward pass (samples are stacked along the batch; inputs
            with more rows than this are split into blocks).

    Returns:
        Tensor of shape (samples, N, C), float32.

    Raises:
        ValueError: ``samples`` or ``max_rows`` is not an integer ≥ 1, or ``x`` has no rows.
    """
    check_positive_int(samples, "samples")
    check_positive_int(max_rows, "max_rows")
    _check_inputs(x)
    with stochastic_mode(model, generator):
        blocks = [
            torch.cat(list(_sample_chunks(model, xb, samples, max_rows, logits)), dim=0)
            for xb in _row_blocks(x, max_rows)
        ]
    return torch.cat(blocks, dim=1)


def _summarise_block(
    model: nn.Module, x: torch.Tensor, samples: int, max_rows: int, logits: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, sum of squared deviations and summed entropy over samples for one row block.

    Chunks are merged with Chan et al.'s parallel update, so the variance does not suffer the
    cancellation of E[p²] − E[p]² when the spread is small next to the mean.
    """
    count = 0
    mean = m2 = entropy_sum = torch.zeros(())
    for block in _sample_chunks(model, x, samples, max_rows, logits):  # (k, N, C)
        k = block.shape[0]
        block_mean = block.mean(0)
        block_m2 = (block - block_mean).pow(2).sum(0)
        if count == 0:
            mean, m2, entropy_sum = block_mean, block_m2, _entropy(block).sum(0)
        else:
            delta = block_mean - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + block_m2 + delta.pow(2) * (count * k / total)
            entropy_sum = entropy_sum + _entropy(block).sum(0)
        count += k
    return mean, m2, entropy_sum


@torch.no_grad()
def mc_predict(
    model: nn.Module,
    x: torch.Tensor,
    samples: int,
    *,
    generator: torch.Generator | None = None,
    logits: bool = True,
    max_rows: int = 65536,
) -> MCPrediction:
    """Monte-Carlo model averaging over ``samples`` thinned networks (§7.5, Figure 11).

    Runs ``model`` with only its dropout layers in training mode (batch norm and everything else
    in evaluation mode), in passes of at most ``max_rows`` rows so memory stays bounded,
    merging per-pass statistics; restores every module's mode afterwards, even on error.

    The draws depend on ``max_rows`` (it decides how the samples are stacked into passes), so
    bitwise reproducibility needs the same generator seed *and* the same ``max_rows``.

    Args:
        model: A classifier containing dropout layers, outputs (N, C).
        x: Inputs, shape (N, ...).
        samples: Number of thinned networks to average, ≥ 1.
        generator: Seeded generator for dropoutlab layers; ``None`` uses the global one.
        logits: Whether the model outputs logits (softmax is applied) or probabilities.
        max_rows: Bound on rows per forward pass.

    Returns:
        An :class:`MCPrediction` with mean probabilities, per-class std, predictive entropy and
        mutual information.

    Raises:
        ValueError: ``samples`` or ``max_rows`` is not an integer ≥ 1, or ``x`` has no rows.
    """
    check_positive_int(samples, "samples")
    check_positive_int(max_rows, "max_rows")
    _check_inputs(x)
    with stochastic_mode(model, generator):
        parts = [_summarise_block(model, xb, samples, max_rows, logits)
                 for xb in _row_blocks(x, max_rows)]
    mean = torch.cat([part[0] for part in parts], dim=0)  # (N, C)
    m2 = torch.cat([part[1] for part in parts], dim=0)  # (N, C)
    entropy_sum = torch.cat([part[2] for part in parts], dim=0)  # (N,)
    std = (m2.clamp_min(0.0) / max(samples - 1, 1)).sqrt()
    entropy = _entropy(mean)
    mutual_information = (entropy - entropy_sum / samples).clamp_min(0.0)
    return MCPrediction(mean, std, entropy, mutual_information, samples)


@torch.no_grad()
def weight_scaled_predict(
    model: nn.Module, x: torch.Tensor, *, logits: bool = True
) -> torch.Tensor:
    """The paper's weight-scaling inference (§4, Figure 2): one pass in evaluation mode.

    Evaluation mode of dropoutlab layers is the weight-scaled network in both scale modes.
    Returns probabilities (N, C), float32; the model's modes are restored afterwards, also on
    error.
    """
    saved = {module: module.training for module in model.modules()}
    try:
        model.eval()
        return _to_probs(model(x), logits)
    finally:
        for module, mode in saved.items():
            module.training = mode

