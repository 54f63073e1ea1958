"""dropoutlab under torch.compile, eager and compiled, beside torch.nn.Dropout.

    .venv/bin/python benchmarks/bench_compile.py [--samples 15] [--threads N] [--cpu-time]

Prints one Markdown table with three parts:

1. **Training step** of the 784-1024-1024-10 MLP (batch 100; Srivastava et al. 2014 §4 with
   dropout 0.2 on the input and 0.5 after each hidden ReLU): forward, cross-entropy, backward
   and a ``torch.optim.SGD`` momentum step, in four variants: eager ``nn.Dropout``, compiled
   ``nn.Dropout``, eager ours (``dl.Dropout``, the hidden ones through ``after_relu``) and
   compiled ours. ``torch.compile`` (inductor) compiles the model; the loss, backward and
   optimizer step are the same eager code in all four. Targets: compiled ours ≤ eager ours, and
   compiled ours ≤ 0.7 × compiled ``nn.Dropout``.
2. **Fixed cost per call**: forward + backward of a 16-element tensor
   (``torch.autograd.grad`` with a preallocated gradient) of ``dl.functional.dropout`` against
   ``torch.relu`` (an ATen op) and ``torch.nn.functional.dropout``. Target: ours within 10 µs of
   ``torch.relu``. Beside it, the registration this library did not choose: the same C kernel
   as a Python ``torch.library.custom_op`` (with ``register_autograd``) called through ctypes.
3. **Throughput**: forward + backward, ours against ``torch.nn.Dropout`` at 100×1024, 100×2048
   and 4096×4096. Target: ≥ 20×.

Every group is timed with interleaved samples and medians (:mod:`timing`), so a burst of load
from other processes hits every variant alike; the load average and CPU are printed alongside.
On a busy machine ``--cpu-time`` runs torch on one thread and times this thread's CPU time,
which other processes disturb far less than wall time (both sides then run single-threaded).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import dropoutlab as dl
import timing
from dropoutlab import kernels
from dropoutlab.provenance import cpu_model
from timing import Timing, time_side_by_side

WIDTHS = (784, 1024, 1024, 10)
BATCH = 100


class OursMLP(nn.Module):
    """The MLP with dropoutlab's layers: input dropout, then fused ReLU + dropout per hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(WIDTHS))
        self.drop_in = dl.Dropout(0.2)
        self.drops = nn.ModuleList(dl.Dropout(0.5) for _ in WIDTHS[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop_in(x)
        for linear, drop in zip(self.linears, self.drops, strict=False):
            x = drop.after_relu(linear(x))
        out: torch.Tensor = self.linears[-1](x)
        return out


def torch_mlp() -> nn.Module:
    """The same MLP with torch.nn.Dropout."""
    layers: list[nn.Module] = [nn.Dropout(0.2)]
    for a, b in itertools.pairwise(WIDTHS[:-1]):  # the hidden layers
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(0.5)]
    layers.append(nn.Linear(WIDTHS[-2], WIDTHS[-1]))
    return nn.Sequential(*layers)


def training_step(model: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter],
                  x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD-with-momentum step of ``model`` on (x, y), as a closure."""
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor],
            shape: tuple[int, ...]) -> Callable[[], Any]:
    """Forward + backward of ``fn`` with ``torch.autograd.grad`` and a preallocated gradient."""
    x = torch.randn(shape, requires_grad=True)
    grad = torch.ones(shape)

    def run() -> Any:
        return torch.autograd.grad(fn(x), x, grad)

    return run


def python_custom_op() -> Callable[[torch.Tensor], torch.Tensor]:
    """The alternative registration: a Python custom_op calling the same C kernel via ctypes.

    Measured only, never used by the library: its per-call cost decided for C++ operators.
    """
    kernels.require()
    entry = kernels._functions  # (kind, dtype) -> ctypes entry point

    def launch(x: torch.Tensor, seed: torch.Tensor, thr: int, factor: float) -> torch.Tensor:
        src = x.contiguous()
        out = torch.empty_like(src)
        entry["dropout", src.dtype](src.data_ptr(), out.data_ptr(), src.numel(), int(seed),
                                    thr, factor, torch.get_num_threads())
        return out

    @torch.library.custom_op("dropoutlab_bench::dropout", mutates_args=())
    def dropout(x: torch.Tensor, seed: torch.Tensor, thr: int, factor: float) -> torch.Tensor:
        return launch(x, seed, thr, factor)

    @dropout.register_fake
    def _(x: torch.Tensor, seed: torch.Tensor, thr: int, factor: float) -> torch.Tensor:
        return torch.empty_like(x)

    def setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.params = inputs[1:]

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        return dropout(grad, *ctx.params), None, None, None

    dropout.register_autograd(backward, setup_context=setup)
    thr = kernels.drop_threshold(0.5)

    def call(x: torch.Tensor) -> torch.Tensor:
        seed = torch.empty((), dtype=torch.int64).random_()
        out: torch.Tensor = dropout(x, seed, thr, 2.0)
        return out

    return call


def us(t: Timing) -> str:
    return f"{t.seconds * 1e6:.1f} µs (±{t.spread * 50:.0f} %)"


def ms(t: Timing) -> str:
    return f"{t.seconds * 1e3:.2f} ms (±{t.spread * 50:.0f} %)"


def training_rows(samples: int) -> list[tuple[str, str, str, str]]:
    torch.manual_seed(0)
    x = torch.rand(BATCH, WIDTHS[0])
    y = torch.randint(0, WIDTHS[-1], (BATCH,))
    theirs, ours = torch_mlp(), OursMLP()
    variants: dict[str, Callable[[], None]] = {}
    for name, model in (("nn.Dropout", theirs), ("ours", ours)):
        params = list(model.parameters())
        variants[f"eager {name}"] = training_step(model, params, x, y)
        compiled = torch.compile(model, fullgraph=True)
        variants[f"compiled {name}"] = training_step(compiled, params, x, y)
    for step in variants.values():  # compile (and warm up) before anything is timed
        for _ in range(3):
            step()
    t = time_side_by_side(variants, samples=samples, min_sample_s=0.1)
    eager_ours, comp_ours = t["eager ours"].seconds, t["compiled ours"].seconds
    comp_theirs = t["compiled nn.Dropout"].seconds
    return [
        ("MLP step, eager nn.Dropout", ms(t["eager nn.Dropout"]), "–", "–"),
        ("MLP step, compiled nn.Dropout", ms(t["compiled nn.Dropout"]), "–", "–"),
        ("MLP step, eager ours", ms(t["eager ours"]),
         f"{eager_ours / t['eager nn.Dropout'].seconds:.2f}× eager nn.Dropout", "–"),
        ("MLP step, compiled ours", ms(t["compiled ours"]),
         f"{comp_ours / eager_ours:.2f}× eager ours; "
         f"{comp_ours / comp_theirs:.2f}× compiled nn.Dropout",
         "≤ 1× eager ours: " + ("yes" if comp_ours <= eager_ours else "**no**")
         + "; ≤ 0.7× compiled nn.Dropout: " + ("yes" if comp_ours <= 0.7 * comp_theirs
                                                 else "**no**")),
    ]


def fixed_cost_rows(samples: int) -> list[tuple[str, str, str, str]]:
    fns = {
        "ours": fwd_bwd(lambda t: dl.functional.dropout(t, 0.5), (16,)),
        "relu": fwd_bwd(torch.relu, (16,)),
        "torch dropout": fwd_bwd(lambda t: nn.functional.dropout(t, 0.5), (16,)),
        "python custom_op": fwd_bwd(python_custom_op(), (16,)),
    }
    t = time_side_by_side(fns, samples=samples, min_sample_s=0.05, warmup=200)
    gap = (t["ours"].seconds - t["relu"].seconds) * 1e6
    return [
        ("16 elements, torch.relu (ATen op)", us(t["relu"]), "–", "–"),
        ("16 elements, torch dropout", us(t["torch dropout"]), "–", "–"),
        ("16 elements, ours (C++ operators)", us(t["ours"]), f"+{gap:.1f} µs vs relu",
         "≤ +10 µs: " + ("yes" if gap <= 10 else "**no**")),
        ("16 elements, Python custom_op (not used)", us(t["python custom_op"]),
         f"+{(t['python custom_op'].seconds - t['relu'].seconds) * 1e6:.1f} µs vs relu", "–"),
    ]


def throughput_rows(samples: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for shape in ((100, 1024), (100, 2048), (4096, 4096)):
        fns = {"ours": fwd_bwd(dl.Dropout(0.5), shape),
               "torch": fwd_bwd(nn.Dropout(0.5), shape)}
        t = time_side_by_side(fns, samples=samples, min_sample_s=0.05, warmup=3)
        ratio = t["torch"].seconds / t["ours"].seconds
        label = "×".join(map(str, shape))
        fmt = ms if shape[0] > 1000 else us
        rows.append((f"{label}, ours vs nn.Dropout", fmt(t["ours"]),
                     f"{ratio:.1f}× faster (torch {fmt(t['torch'])})",
                     "≥ 20×: " + ("yes" if ratio >= 20 else "**no**")))
    return rows


def render(rows: list[tuple[str, str, str, str]], facts: dict[str, str]) -> str:
    header = ("benchmark", "time (median, ±half IQR)", "comparison", "target met")
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = ["# dropoutlab under torch.compile", ""]
    out += [f"- **{key}**: {value}" for key, value in facts.items()]
    out += ["", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out) + "\n"


def _load() -> str:
    try:
        return " ".join(open("/proc/loadavg", encoding="utf-8").read().split()[:3])
    except OSError:
        return "unknown"


def report(samples: int = 15, *, cpu_time: bool = False) -> str:
    """The three parts (see the module docstring) as one Markdown table with its facts; the
    caller sets torch's thread count and :data:`timing.clock`."""
    if not kernels.operators_available():
        return ("# dropoutlab under torch.compile\n\nskipped: the native dropout operators are "
                "not available on this machine\n")
    load_before = _load()
    rows = training_rows(samples)
    rows += fixed_cost_rows(samples)
    rows += throughput_rows(samples)
    facts = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs",
        "versions": f"torch {torch.__version__}, python {platform.python_version()}",
        "threads": str(torch.get_num_threads()),
        "clock": "CPU time of this thread" if cpu_time else "wall time",
        "load average (1, 5, 15 min)": f"{load_before} before, {_load()} after",
    }
    return render(rows, facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15, help="interleaved samples per timing")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one torch thread, timed by this thread's CPU time")
    args = parser.parse_args()
    if args.cpu_time:
        torch.set_num_threads(1)
        timing.clock = time.thread_time
    elif args.threads:
        torch.set_num_threads(args.threads)
    print(report(args.samples, cpu_time=args.cpu_time))


if __name__ == "__main__":
    main()
