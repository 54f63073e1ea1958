"""What a grid costs before it runs: updates, FLOPs and wall time (``reproduce NAME --plan``).

FLOPs are counted, not guessed: torch's ``FlopCounterMode`` counts one example's forward pass
of the run's own network (built from its config, never trained); a training step costs three
forward passes (forward, and the two products of the backward pass) per example, an
evaluation one. Wall time comes from a short calibration on this machine: a few timed
training steps of each distinct network at its batch size and precision, on one thread (what a
sweep worker uses), so the rate includes dropout, max-norm and the optimiser, and bf16 runs are
timed in bf16 (on the working copies training uses on the CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dropoutlab.config import RunConfig

__all__ = ["RunCost", "calibrate", "forward_flops", "run_cost"]

# train / validation / test examples and input shape of each data set (data/sources.py).
SPLITS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "mnist": (50_000, 10_000, 10_000, (1, 28, 28)),
    "fashion-mnist": (50_000, 10_000, 10_000, (1, 28, 28)),
    "digits": (1_097, 300, 400, (1, 8, 8)),
    "cifar10": (45_000, 5_000, 10_000, (3, 32, 32)),
    "cifar100": (45_000, 5_000, 10_000, (3, 32, 32)),
    "svhn": (65_931, 7_326, 26_032, (3, 32, 32)),
}
_CLASSES = {"cifar100": 100}


@dataclass(frozen=True)
class RunCost:
    """The size of one run: updates, and FLOPs of training and of evaluation."""

    updates: int
    train_flops: float
    eval_flops: float

    @property
    def flops(self) -> float:
        """Training and evaluation together."""
        return self.train_flops + self.eval_flops


def _network_key(config: RunConfig) -> tuple[object, ...]:
    """What the FLOPs and the step rate of a run depend on."""
    m = config.model
    return (config.data.dataset, m.kind, m.hidden, m.activation, m.dropout, m.conv_channels,
            m.conv_fc, config.optim.batch_size, config.optim.max_norm is not None,
            config.precision)


def _build(config: RunConfig) -> torch.nn.Module:
    from dropoutlab.models import build_model

    shape = SPLITS[config.data.dataset][3]
    return build_model(config.model, shape, _CLASSES.get(config.data.dataset, 10))


def _example(config: RunConfig, batch: int) -> torch.Tensor:
    shape = SPLITS[config.data.dataset][3]
    return torch.rand(batch, math.prod(shape))


_FLOPS_CACHE: dict[tuple[object, ...], float] = {}


def forward_flops(config: RunConfig) -> float:
    """FLOPs of one example's forward pass through the network ``config`` describes."""
    key = _network_key(config)
    if key not in _FLOPS_CACHE:
        from torch.utils.flop_counter import FlopCounterMode

        model = _build(config).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(_example(config, 1))
        _FLOPS_CACHE[key] = float(counter.get_total_flops())
    return _FLOPS_CACHE[key]


def run_cost(config: RunConfig) -> RunCost:
    """Updates and FLOPs of training ``config`` (validation every epoch, test as configured).

    Raises:
        KeyError: a data set whose split sizes are not known here (a user's file).
    """
    n_train, n_val, n_test, _ = SPLITS[config.data.dataset]
    if config.data.train_size is not None:
        n_train = min(n_train, config.data.train_size)
    if config.data.merge_validation:
        n_train, n_val = n_train + n_val, 0
    per_epoch = math.ceil(n_train / config.optim.batch_size)
    forward = forward_flops(config)
    epochs = config.epochs
    tests = epochs // config.eval_test_every + 1
    evaluated = epochs * n_val + tests * n_test + n_train + n_val  # + the final measurements
    return RunCost(per_epoch * epochs, 3.0 * forward * n_train * epochs, forward * evaluated)


def calibrate(configs: Sequence[RunConfig], *, steps: int = 4,
              max_seconds: float = 3.0) -> dict[tuple[object, ...], float]:
    """Measured FLOP/s of a training step of each distinct network, on one thread.

    Each network trains ``steps`` updates on random data after one warm-up update (fewer when
    a step is slow: at most about ``max_seconds`` each).

    Returns:
        FLOP/s by network (the key :func:`rate_of` looks up).
    """

    from dropoutlab.bf16_weights import BF16Weights
    from dropoutlab.precision import autocast
    from dropoutlab.recipe import MomentumSGD

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates: dict[tuple[object, ...], float] = {}
    try:
        for config in configs:
            key = _network_key(config)
            if key in rates:
                continue
            model = _build(config).train()
            copies = BF16Weights(model) if config.precision == "bf16" else None
            optimizer = MomentumSGD(model, damped=config.optim.damped_momentum,
                                    max_norm=config.optim.max_norm, copies=copies)
            forward = copies if copies is not None else model
            x = _example(config, config.optim.batch_size)
            y = torch.randint(0, _CLASSES.get(config.data.dataset, 10), (len(x),))
            autoencoder = config.model.kind == "autoencoder"
            done, elapsed = 0, 0.0
            for i in range(steps + 1):
                start = time.perf_counter()
                with autocast(config.precision, "cpu"):
                    out = forward(x).float()
                loss = (torch.nn.functional.mse_loss(out, x) if autoencoder
                        else torch.nn.functional.cross_entropy(out, y))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step(config.optim.lr, config.optim.momentum_end)
                if i:  # the first step warms up
                    done += 1
                    elapsed += time.perf_counter() - start
                    if elapsed > max_seconds:
                        break
            flops = 3.0 * forward_flops(config) * config.optim.batch_size * done
            rates[key] = flops / max(elapsed, 1e-9)
    finally:
        torch.set_num_threads(threads)
    return rates


def rate_of(rates: dict[tuple[object, ...], float], config: RunConfig) -> float:
    """The calibrated FLOP/s of ``config``'s network."""
    return rates[_network_key(config)]
