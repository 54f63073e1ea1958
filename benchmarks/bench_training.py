"""Training benchmarks for ``bench_dropout.py``: the Table 9 step and a quick MNIST epoch.

* The step: the 784-1024-1024-2048-10 ReLU net of Srivastava et al. 2014, Table 9, batch 100,
  input dropout 0.2 and hidden dropout 0.5, forward + cross-entropy + backward + momentum update
  (no max-norm, no penalties: the step every recipe shares). Ours is dropoutlab's ``MLP`` and
  ``recipe.MomentumSGD``; plain torch is ``nn.Sequential`` with ``nn.Dropout`` and
  ``torch.optim.SGD``. Each is timed with and without its dropout layers. Timed in the same
  interleaved samples: a 2048×2048×2048 matmul (the FLOP rate MFU is measured against) and the
  step's 11 matrix products alone (:func:`step_products`), the MFU ceiling of any step built on
  torch's matrix products on this machine at that moment; the rest of the step time is the
  overhead of each implementation (dropout, nonlinearities, loss, autograd, update).
* The epoch: ``dropoutlab.train`` on ``base_config("quick")`` against
  ``benchmarks/mnist_plain_torch.py`` (same recipe, ``DataLoader`` and ``nn.Dropout``); seconds
  per epoch (training and the validation error; both evaluate the test error after the last
  epoch only, as the quick recipe does), median of the warm epochs, so both sides time the
  same work.
"""

from __future__ import annotations

import importlib.util
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dropoutlab import penalties, recipe, train
from dropoutlab.bf16_weights import BF16Weights
from dropoutlab.config import with_changes
from dropoutlab.errors import DropoutlabError
from dropoutlab.experiments.common import base_config
from dropoutlab.models import MLP
from dropoutlab.precision import autocast, bf16_support
from timing import Row, time_side_by_side

WIDTHS = (784, 1024, 1024, 2048, 10)
BATCH = 100
PEER = Path(__file__).with_name("mnist_plain_torch.py")
MATMUL_SIDE = 2048  # the reference product for the machine's achievable matrix FLOP rate


def model_flops(widths: tuple[int, ...] = WIDTHS, batch: int = BATCH) -> int:
    """6·batch·weights: the FLOPs of a training step as MFU counts them (2 forward, 4 backward
    per weight and example)."""
    return 6 * batch * sum(a * b for a, b in itertools.pairwise(widths))


def step_products(widths: tuple[int, ...] = WIDTHS, batch: int = BATCH
                  ) -> list[tuple[int, int, int]]:
    """The (m, k, n) shapes of the matrix products of one training step, in the step's order.

    Forward: ``batch × a`` times ``a × b`` per layer. Backward, from the top layer down: the
    weight gradient ``b × batch`` times ``batch × a``, then the input gradient ``batch × b``
    times ``b × a`` for every layer but the first (the data needs no gradient).
    """
    layers = list(itertools.pairwise(widths))
    shapes = [(batch, a, b) for a, b in layers]
    for i in reversed(range(len(layers))):
        a, b = layers[i]
        shapes.append((b, batch, a))
        if i > 0:
            shapes.append((batch, b, a))
    return shapes


def _matrix_products(x: torch.Tensor, widths: tuple[int, ...] = WIDTHS) -> Callable[[], None]:
    """The step's matrix products alone (shapes and order of :func:`step_products`), as the
    step computes them: ``addmm`` with the bias forward, ``mm`` on transposed views backward,
    into fresh outputs, in ``x``'s dtype. No nonlinearity, dropout, loss, autograd or update."""
    weights = [(torch.randn(b, a) / a**0.5).to(x.dtype) for a, b in itertools.pairwise(widths)]
    biases = [torch.zeros(b, dtype=x.dtype) for b in widths[1:]]

    def products() -> None:
        inputs = [x]
        for weight, bias in zip(weights, biases, strict=True):
            inputs.append(torch.addmm(bias, inputs[-1], weight.t()))
        grad = inputs[-1]
        for i in reversed(range(len(weights))):
            torch.mm(grad.t(), inputs[i])
            if i > 0:
                grad = torch.mm(grad, weights[i])

    return products


def _step_ours(dropout: bool, x: torch.Tensor, y: torch.Tensor,
               precision: str = "fp32", l2: float = 0.0,
               l2_in_loss: bool = False) -> Callable[[], None]:
    """Our step; with ``l2`` an L2 penalty λ·Σw², applied by the update as dropoutlab.train
    does (or, with ``l2_in_loss``, added to the loss for autograd, as it did before)."""
    model = MLP(WIDTHS[0], WIDTHS[1:-1], WIDTHS[-1], dropout="bernoulli" if dropout else "none",
                drop_input=0.2, drop_hidden=0.5)
    # bf16 as dropoutlab.train runs it: the forward pass on bfloat16 working copies
    copies = BF16Weights(model) if precision == "bf16" else None
    opt = recipe.MomentumSGD(model, damped=True, max_norm=None, copies=copies)
    forward = model if copies is None else copies

    def step() -> None:
        opt.zero_grad()
        with autocast(precision, x.device):
            out = forward(x)
        loss = F.cross_entropy(out.float(), y)
        if l2_in_loss:
            loss = loss + l2 * penalties.l2(model)
        loss.backward()
        opt.step(0.1, 0.9, 0.0 if l2_in_loss else l2)

    return step


def _step_plain(dropout: bool, x: torch.Tensor, y: torch.Tensor,
                bf16_autocast: bool = False, l2: float = 0.0) -> Callable[[], None]:
    """nn.Sequential + nn.Dropout + torch.optim.SGD; with ``bf16_autocast`` the forward pass
    runs under ``torch.autocast("cpu", torch.bfloat16)``, as a user would write it; ``l2`` is
    SGD's ``weight_decay`` = 2λ (λ·Σw²'s gradient; torch decays the biases too)."""
    layers: list[nn.Module] = [nn.Dropout(0.2)] if dropout else []
    for i, (a, b) in enumerate(itertools.pairwise(WIDTHS)):
        layers.append(nn.Linear(a, b))
        if i < len(WIDTHS) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(0.5))
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, dampening=0.9,
                          weight_decay=2 * l2)

    def step() -> None:
        opt.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16_autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def step_rows() -> tuple[list[Row], dict[str, float], list[str]]:
    """Rows for the Table 9 step; also the timing spreads and the notes on FLOP rate and
    overhead. The 2048³ matmul and the step's matrix products alone are timed in the same
    interleaved samples as the steps, so that all of them see the machine in the same state."""
    x, y = torch.rand(BATCH, WIDTHS[0]), torch.randint(0, WIDTHS[-1], (BATCH,))
    a, b = torch.randn(MATMUL_SIDE, MATMUL_SIDE), torch.randn(MATMUL_SIDE, MATMUL_SIDE)
    t = time_side_by_side({
        "ours": _step_ours(True, x, y), "ours_plain": _step_ours(False, x, y),
        "torch": _step_plain(True, x, y), "torch_plain": _step_plain(False, x, y),
        "products": _matrix_products(x), "matmul": lambda: a @ b,
    }, samples=11, min_sample_s=0.1)
    flop_rate = 2 * MATMUL_SIDE**3 / t["matmul"].seconds
    flops = model_flops()
    with_o, with_t = t["ours"].seconds, t["torch"].seconds
    products = t["products"].seconds
    cost_o, cost_t = with_o / t["ours_plain"].seconds, with_t / t["torch_plain"].seconds
    mfu_o, mfu_t = flops / with_o / flop_rate, flops / with_t / flop_rate
    ceiling = f"{100 * flops / products / flop_rate:.0f} %"  # the same products serve both
    rows = [
        Row("Table 9 step with dropout (ms)", f"{1e3 * with_o:.2f}", f"{1e3 * with_t:.2f}",
            f"{with_t / with_o:.2f}×"),
        Row("Table 9 step: with ÷ without dropout", f"{cost_o:.3f}×", f"{cost_t:.3f}×",
            target="≤ 1.05×", met=cost_o <= 1.05),
        Row("Table 9 step MFU (of measured matmul rate)", f"{100 * mfu_o:.0f} %",
            f"{100 * mfu_t:.0f} %", target="≥ 70 %", met=mfu_o >= 0.70),
        Row("Table 9 step: its matrix products alone, MFU", ceiling, ceiling),
    ]
    notes = [
        f"matrix FLOP rate: a {MATMUL_SIDE}×{MATMUL_SIDE}×{MATMUL_SIDE} float32 matmul ran at "
        f"{flop_rate / 1e9:.0f} GFLOP/s; MFU = 6·batch·weights / step time / that rate.",
        f"the Table 9 step's {len(step_products())} matrix products alone (torch addmm/mm, the "
        f"step's shapes and order, no autograd, dropout or update) took {1e3 * products:.2f} ms: "
        f"the MFU ceiling of a step built on torch's matrix products, here, now. Beyond them, "
        f"ours spent {1e3 * (with_o - products):.2f} ms per step with dropout and plain torch "
        f"{1e3 * (with_t - products):.2f} ms.",
    ]
    spreads = {f"{name.replace('_plain', ' without dropout')}, Table 9 step part": timing.spread
               for name, timing in t.items()}
    return rows, spreads, notes


def bf16_step_rows() -> tuple[list[Row], dict[str, float], list[str]]:
    """Rows for the Table 9 step in bfloat16 mixed precision, beside float32: ours in bf16 and
    fp32, plain torch under ``torch.autocast`` and in fp32, each step's MFU against the bf16 and
    the fp32 matmul rates, all timed in the same interleaved samples."""
    x, y = torch.rand(BATCH, WIDTHS[0]), torch.randint(0, WIDTHS[-1], (BATCH,))
    a, b = torch.randn(MATMUL_SIDE, MATMUL_SIDE), torch.randn(MATMUL_SIDE, MATMUL_SIDE)
    a16, b16 = a.bfloat16(), b.bfloat16()
    t = time_side_by_side({
        "ours bf16": _step_ours(True, x, y, "bf16"), "ours fp32": _step_ours(True, x, y),
        "torch autocast": _step_plain(True, x, y, bf16_autocast=True),
        "torch fp32": _step_plain(True, x, y),
        "matmul bf16": lambda: a16 @ b16, "matmul fp32": lambda: a @ b,
        "products bf16": _matrix_products(x.bfloat16()),
    }, samples=11, min_sample_s=0.1)
    rate = {p: 2 * MATMUL_SIDE**3 / t[f"matmul {p}"].seconds for p in ("bf16", "fp32")}
    flops = model_flops()
    ours, plain = t["ours bf16"].seconds, t["torch autocast"].seconds

    def mfu(seconds: float, precision: str) -> str:
        return f"{100 * flops / seconds / rate[precision]:.0f} %"

    native, why = bf16_support("cpu")
    rows = [
        Row("Table 9 step bf16 (ms; torch: autocast)", f"{1e3 * ours:.2f}", f"{1e3 * plain:.2f}",
            f"{plain / ours:.2f}×"),
        Row("Table 9 step: bf16 ÷ fp32 (torch: autocast ÷ fp32)",
            f"{ours / t['ours fp32'].seconds:.2f}×",
            f"{plain / t['torch fp32'].seconds:.2f}×", target="≤ 0.55×",
            met=ours / t["ours fp32"].seconds <= 0.55),
        Row("Table 9 step bf16: ours ÷ torch autocast", f"{ours / plain:.2f}×", "–",
            target="≤ 0.8×", met=ours / plain <= 0.8),
        Row("Table 9 step bf16 MFU (of bf16 matmul rate)", mfu(ours, "bf16"), mfu(plain, "bf16"),
            target="≥ 60 %", met=flops / ours / rate["bf16"] >= 0.60),
        Row("Table 9 step bf16 MFU (of fp32 matmul rate)", mfu(ours, "fp32"), mfu(plain, "fp32")),
        Row("Table 9 step bf16: its matrix products alone, MFU",
            mfu(t["products bf16"].seconds, "bf16"), mfu(t["products bf16"].seconds, "bf16")),
    ]
    notes = [
        f"bf16: a {MATMUL_SIDE}³ bfloat16 matmul ran at {rate['bf16'] / 1e9:.0f} GFLOP/s and the "
        f"float32 one at {rate['fp32'] / 1e9:.0f} GFLOP/s in the same samples; this CPU "
        f"{'multiplies bf16 natively' if native else 'has no native bf16'} ({why}). The "
        f"step's {len(step_products())} matrix products alone in bf16 took "
        f"{1e3 * t['products bf16'].seconds:.2f} ms: the MFU ceiling of a bf16 step built on "
        f"torch's matrix products (batch 100 is a small product for the bf16 units)."
    ]
    spreads = {f"{name}, Table 9 step bf16 part": timing.spread for name, timing in t.items()}
    return rows, spreads, notes


L2 = 1e-4  # Table 9's L2 grid point


def l2_step_rows() -> tuple[list[Row], dict[str, float], list[str]]:
    """Rows for the Table 9 step with an L2 penalty (Table 9's L2 methods), in fp32 and bf16:
    ours with L2 in the update (as training runs it), ours with L2 in the loss (autograd's
    passes over every weight, as training ran it before), and plain torch with SGD's
    ``weight_decay``; all in the same interleaved samples as ours without L2."""
    x, y = torch.rand(BATCH, WIDTHS[0]), torch.randint(0, WIDTHS[-1], (BATCH,))
    precisions = ("fp32", "bf16") if bf16_support("cpu")[0] else ("fp32",)
    steps: dict[str, Callable[[], None]] = {}
    for p in precisions:
        steps[f"ours {p}"] = _step_ours(True, x, y, p)
        steps[f"ours {p} L2"] = _step_ours(True, x, y, p, L2)
        steps[f"ours {p} L2 in loss"] = _step_ours(True, x, y, p, L2, l2_in_loss=True)
        steps[f"torch {p} L2"] = _step_plain(True, x, y, p == "bf16", L2)
    t = time_side_by_side(steps, samples=11, min_sample_s=0.1)
    rows = []
    for p in precisions:
        ours, before = t[f"ours {p} L2"].seconds, t[f"ours {p} L2 in loss"].seconds
        plain = t[f"torch {p} L2"].seconds
        rows += [
            Row(f"Table 9 step with L2, {p} (ms; torch: weight_decay)", f"{1e3 * ours:.2f}",
                f"{1e3 * plain:.2f}", f"{plain / ours:.2f}×"),
            Row(f"Table 9 step with L2, {p}: with ÷ without L2 (in the loss)",
                f"{ours / t[f'ours {p}'].seconds:.2f}× ({before / t[f'ours {p}'].seconds:.2f}×)",
                "–", target="≤ 1.05×", met=ours / t[f"ours {p}"].seconds <= 1.05),
        ]
    notes = [f"L2: λ = {L2:g} on the Table 9 step with dropout. Ours applies it inside the "
             "one-pass update (g ← g + λ·2w, bitwise autograd's gradient for λ·Σw²); "
             "\"in the loss\" is the same step with λ·Σw² added to the loss for autograd."]
    spreads = {f"{name}, Table 9 step with L2 part": timing.spread for name, timing in t.items()}
    return rows, spreads, notes


def mnist_precision_row(*, epochs: int = 4) -> Row:
    """Seconds per warm quick-MNIST epoch of ``dropoutlab.train`` in bf16 against fp32 (one
    run each; the row says why it is skipped where MNIST is absent)."""
    name = "quick MNIST epoch, ours bf16 vs fp32 (s)"
    config = with_changes(base_config("quick"), {"epochs": epochs, "checkpoint_every": 1000})
    per_epoch = {}
    try:
        for precision in ("bf16", "fp32"):
            history = train.train(with_changes(config, {"precision": precision}),
                                  progress=False).history
            marks = [0.0] + [float(row["seconds"]) for row in history]
            per_epoch[precision] = _warm_median([b - a for a, b in itertools.pairwise(marks)])
    except (ImportError, OSError, DropoutlabError) as err:
        return Row(name, f"skipped: MNIST not available ({err})", "–")
    ratio = per_epoch["bf16"] / per_epoch["fp32"]
    return Row(name, f"{per_epoch['bf16']:.2f}", f"{per_epoch['fp32']:.2f} (fp32)",
               f"{ratio:.2f}×")


def find_peer(peer: Path | None = None) -> Path | None:
    """The plain-PyTorch MNIST script: ``peer``, else ``mnist_plain_torch.py`` beside this file."""
    script = peer if peer is not None else PEER
    return script if script.is_file() else None


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("mnist_plain_torch", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _warm_median(seconds: list[float]) -> float:
    """Median of the epochs after the first (the first pays one-off costs)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def _cpu_seconds_per_epoch(run: Callable[[int], object], epochs: int) -> float:
    """Single-thread CPU seconds of one warm epoch: (run(epochs) − run(1)) / (epochs − 1), so
    that data loading and setup cancel out."""
    costs = []
    for n in (1, epochs):
        start = time.thread_time()
        run(n)
        costs.append(time.thread_time() - start)
    return (costs[1] - costs[0]) / (epochs - 1)


def mnist_row(peer: Path | None = None, *, epochs: int = 6, rounds: int = 3,
              cpu_time: bool = False) -> Row:
    """Seconds per quick-MNIST epoch, ours vs the plain script, or a row saying why skipped.

    Wall time comes from each run's own per-epoch clock (median of the warm epochs); with
    ``cpu_time`` it is single-thread CPU time, see :func:`_cpu_seconds_per_epoch`. Each round
    runs ours, then the plain script, for ``epochs`` epochs; the row gives the median over the
    rounds (six epochs and three rounds: the README's benchmark section says why).
    """
    name = "quick MNIST epoch (s)"
    script = find_peer(peer)
    if script is None:
        return Row(name, f"skipped: peer script {peer or PEER} not found (pass --peer)", "–",
                   target="≤ 0.6×")
    plain = _import(script)
    try:
        plain.mnist_file().stat()
    except (ImportError, OSError) as err:
        return Row(name, f"skipped: MNIST not installed ({err})", "–", target="≤ 0.6×")
    config = with_changes(base_config("quick"), {"epochs": epochs, "checkpoint_every": 1000})

    def run_ours(n: int) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = train.train(
            with_changes(config, {"epochs": n}), progress=False).history
        return history

    def run_plain(n: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = plain.run(epochs=n)
        return rows

    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        if cpu_time:
            ours.append(_cpu_seconds_per_epoch(run_ours, epochs))
            theirs.append(_cpu_seconds_per_epoch(run_plain, epochs))
            continue
        marks = [0.0] + [float(row["seconds"]) for row in run_ours(epochs)]
        ours.append(_warm_median([b - a for a, b in itertools.pairwise(marks)]))
        theirs.append(_warm_median([row["seconds"] for row in run_plain(epochs)]))
    t_o, t_t = statistics.median(ours), statistics.median(theirs)
    return Row(name, f"{t_o:.2f}", f"{t_t:.2f}", f"{t_o / t_t:.2f}×", target="≤ 0.6×",
               met=t_o / t_t <= 0.6)
