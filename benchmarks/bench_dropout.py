"""The dropout benchmark suite (`make bench`, `dropoutlab bench`, or this file run directly).

Everything is measured side by side in one process and one run, ours against the plain-torch
way (Srivastava et al. 2014: Bernoulli dropout §4, Gaussian dropout §10, the Table 9 MNIST net):

1. dropout and Gaussian dropout forward + backward at 100×1024, 100×2048 and 4096×4096:
   G elements/s, the speed-up over ``torch.nn.Dropout`` (or ``x * noise.normal_(1, σ)``), and
   the fraction of the memory-bandwidth bound. The bound comes from a large ``copy_`` into a
   preallocated tensor timed right before and right after each row: forward and backward each
   stream one read and one write per element, like a copy, so the bound is (copy rate in
   elements/s) / 2;
2. bits saved for backward per element, counted with ``torch.autograd.graph.saved_tensors_hooks``;
3. a training step of the Table 9 net (784-1024-1024-2048-10, batch 100): with dropout ÷
   without, ours (dropoutlab's MLP + MomentumSGD) and plain torch (``nn.Sequential`` with
   ``nn.Dropout`` + ``torch.optim.SGD``), and the model FLOP utilisation against a large matmul
   measured in the same run, beside the utilisation of the step's matrix products alone;
4. seconds per epoch of the ``quick`` MNIST run: ``dropoutlab.train`` against the plain-PyTorch
   script in ``benchmarks/mnist_plain_torch.py`` (``DataLoader``, ``nn.Dropout``, same recipe).

Timings are medians of interleaved samples (:mod:`timing`); the relative spread of each timing,
the load average and the CPU time other processes took are reported so that a noisy run can be
recognised. Both sides run in the same
process, so both get its allocator setting (:mod:`dropoutlab.allocator`; ``dropoutlab bench``
keeps freed memory for reuse, ``DROPOUTLAB_KEEP_FREED_MEMORY=0`` times them on fresh memory);
the header says which.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import bench_training as training
import timing
from dropoutlab import allocator, backend, kernels
from dropoutlab.provenance import cpu_model
from timing import Row, render, time_side_by_side

SHAPES = ((100, 1024), (100, 2048), (4096, 4096))
P_DROP = 0.5



COPY_ELEMENTS = 1 << 25  # the bandwidth reference: a float32 copy of 128 MiB


def _large_copy() -> Callable[[], object]:
    """A float32 copy of :data:`COPY_ELEMENTS` elements into a preallocated tensor."""
    src = torch.rand(COPY_ELEMENTS)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _fwd_bwd(op: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, int],
             dtype: torch.dtype = torch.float32) -> Callable[[], None]:
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    grad = torch.randn(shape, dtype=dtype)

    def step() -> None:
        x.grad = None
        op(x).backward(grad)

    return step


def _plain_gaussian(sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def op(x: torch.Tensor) -> torch.Tensor:
        return x * torch.empty_like(x).normal_(1.0, sigma)

    return op


def saved_bits_per_element(op: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Bits that autograd keeps for backward per input element (saved-tensor hooks)."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    x = torch.randn(100, 1024, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        op(x).sum().backward()
    return 8 * sum(saved) / x.numel()


def op_rows() -> tuple[list[Row], dict[str, float], list[float]]:
    """Rows for dropout (float32 and bfloat16) and Gaussian dropout forward+backward at every
    shape; also the timing spreads by name and, per row, the copy rate (float32 elements/s) its
    bound came from. A row's bound is the copy's bytes/s over the bytes forward and backward
    move per element: one read and one write each, of the row's dtype.

    Each row's bound comes from the large copy timed right before and right after that row (one
    copy timing sits between two rows and serves both):
    the machine's memory bandwidth drifts between minutes (a copy measured minutes apart ran at
    23 and 46 GB/s), so a bound measured once, apart, could be another machine's. (Interleaving
    the copy with the samples themselves was measured too: its 128 MiB flushed the caches
    between samples and cost the 100×1024 rows about 15 % of their speed.)"""
    from dropoutlab.functional import gaussian_sigma
    from dropoutlab.layers import Dropout, GaussianDropout

    sigma = gaussian_sigma(P_DROP)
    copy = _large_copy()
    rows: list[Row] = []
    spreads: dict[str, float] = {}
    copy_rates: list[float] = []
    cases = (
        ("dropout", Dropout(P_DROP), nn.Dropout(P_DROP), "≥ 20×", 20.0, torch.float32),
        ("dropout bf16", Dropout(P_DROP), nn.Dropout(P_DROP), "≥ 20×", 20.0, torch.bfloat16),
        ("Gaussian dropout", GaussianDropout(P_DROP), _plain_gaussian(sigma), "–", None,
         torch.float32),
    )
    def copy_seconds() -> float:
        return time_side_by_side({"copy": copy}, samples=3)["copy"].seconds

    before = copy_seconds()
    for name, ours, plain, target, need, dtype in cases:
        for shape in SHAPES:
            n = shape[0] * shape[1]
            big = n >= 1 << 24
            t = time_side_by_side(
                {"ours": _fwd_bwd(ours, shape, dtype), "torch": _fwd_bwd(plain, shape, dtype)},
                samples=5 if big else 9, warmup=3,
            )
            after = copy_seconds()
            for side in ("ours", "torch"):
                spreads[f"{side}, {name} {shape[0]}×{shape[1]}"] = t[side].spread
            copy_rates.append(2 * COPY_ELEMENTS / (before + after))
            before = after
            # copy bytes/s = 8 × float32 elements/s; forward + backward move 4 × itemsize bytes
            bound = 2 * copy_rates[-1] / torch.empty((), dtype=dtype).element_size()
            rate_o, rate_t = n / t["ours"].seconds, n / t["torch"].seconds
            speedup = t["torch"].seconds / t["ours"].seconds
            row_target, met = target, (None if need is None else speedup >= need)
            if name == "dropout" and big:
                row_target = "≥ 20×, ≥ 50 % of bound"
                met = speedup >= 20 and rate_o >= 0.5 * bound
            rows.append(Row(
                f"{name} fwd+bwd {shape[0]}×{shape[1]} (G elem/s)",
                f"{rate_o / 1e9:.2f}", f"{rate_t / 1e9:.3f}", f"{speedup:.1f}×",
                f"{100 * rate_o / bound:.0f} %", f"{100 * rate_t / bound:.1f} %",
                row_target, met,
            ))
    return rows, spreads, copy_rates


def memory_rows() -> list[Row]:
    """Bits saved for backward per element, ours vs torch."""
    from dropoutlab.functional import gaussian_sigma
    from dropoutlab.layers import Dropout, GaussianDropout

    rows = []
    for name, ours, plain in (
        ("dropout", Dropout(P_DROP), nn.Dropout(P_DROP)),
        ("Gaussian dropout", GaussianDropout(P_DROP), _plain_gaussian(gaussian_sigma(P_DROP))),
    ):
        bits_o, bits_t = saved_bits_per_element(ours), saved_bits_per_element(plain)
        target, met = ("≤ 1 bit", bits_o <= 1) if name == "dropout" else ("–", None)
        rows.append(Row(f"{name}: bits saved for backward / element", f"{bits_o:g}",
                        f"{bits_t:g}", target=target, met=met))
    return rows


def _machine() -> dict[str, str]:
    """Facts printed above the table: machine, date, versions, threads, kernel build."""
    cpu = cpu_model()
    lib = kernels.library()
    compiler = "–"
    if lib is not None:
        out = subprocess.run([lib.compiler, "--version"], capture_output=True, text=True,
                             check=False).stdout
        compiler = (out.splitlines() or ["?"])[0] + "  " + " ".join(lib.flags[-2:])
    import dropoutlab

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} "
                   f"{platform.release()}",
        "versions": f"dropoutlab {dropoutlab.__version__}, python {platform.python_version()}, "
                    f"torch {torch.__version__}",
        "threads": f"torch.get_num_threads() = {torch.get_num_threads()}",
        "native kernels": compiler if lib is not None else "not available (torch path timed)",
        "backend": backend.get_backend(),
        "freed memory": allocator.describe(),
    }


def run(*, mnist: bool = True, peer: Path | None = None, cpu_time: bool = False,
        progress: Callable[[str], None] | None = None) -> str:
    """Run the whole suite and return the Markdown report (see the module docstring).

    Args:
        mnist: Include the quick-MNIST epoch comparison (needs the MNIST data).
        peer: Path of the plain-PyTorch MNIST script; None looks for
            ``benchmarks/mnist_plain_torch.py`` in the working directory and the source tree.
        cpu_time: Measure single-threaded CPU time instead of wall time (torch limited to one
            thread): a per-core comparison that stays meaningful on a busy machine.
        progress: Called with a short message before each part.
    """
    threads = torch.get_num_threads()
    if cpu_time:
        torch.set_num_threads(1)
        timing.clock = time.thread_time
    try:
        return _run(mnist, peer, cpu_time, progress or (lambda message: None))
    finally:
        torch.set_num_threads(threads)
        timing.clock = time.perf_counter


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds so far: the whole machine's busy and stolen time, and this process's own."""

    busy: float  # every CPU, every process and the kernel: user + nice + system + irq + softirq
    steal: float  # time the hypervisor ran someone else while this machine's CPUs wanted to run
    own: float  # this process, all its threads: user + system


def parse_proc_stat(text: str, ticks_per_second: float) -> tuple[float, float]:
    """(busy, steal) seconds from the aggregate ``cpu`` line of Linux's ``/proc/stat``."""
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        raise ValueError(f"not a /proc/stat aggregate line: {text[:80]!r}")
    ticks = [int(v) for v in fields[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    steal = ticks[7] if len(ticks) > 7 else 0
    return (user + nice + system + irq + softirq) / ticks_per_second, steal / ticks_per_second


def cpu_use() -> CpuUse | None:
    """The machine's and this process's CPU seconds so far; None where ``/proc/stat`` is
    missing (not Linux)."""
    try:
        busy, steal = parse_proc_stat(Path("/proc/stat").read_text(),
                                      os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return None
    own = os.times()
    return CpuUse(busy, steal, own.user + own.system)


def _others_note(start: CpuUse | None, end: CpuUse | None, wall: float
                 ) -> tuple[str | None, bool]:
    """A note on the CPU time other processes and other guests took during the run, and
    whether it was enough to distort the timings (other processes above a quarter of a CPU on
    average, or more than a tenth of the run stolen by the hypervisor)."""
    if start is None or end is None or wall <= 0:
        return None, False
    others = max(0.0, (end.busy - start.busy) - (end.own - start.own))
    stolen = max(0.0, end.steal - start.steal)
    note = (f"other load: during the {wall:.0f}-s run, other processes (and the kernel) used "
            f"{others:.1f} CPU-seconds ({others / wall:.2f} CPUs on average) and the hypervisor "
            f"stole {stolen:.1f} s (/proc/stat).")
    return note, others / wall > 0.25 or stolen / wall > 0.1


def _run(mnist: bool, peer: Path | None, cpu_time: bool, say: Callable[[str], None]) -> str:
    """The body of :func:`run`, with the clock and thread count already set."""
    kernels.available()  # compile (or load) before anything is timed
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    use_start, wall_start = cpu_use(), time.perf_counter()
    say("dropout and Gaussian dropout forward+backward, each beside a large copy")
    rows, spreads, copy_rates = op_rows()
    rows += memory_rows()
    say("Table 9 training step")
    step_rows, step_spreads, step_notes = training.step_rows()
    rows += step_rows
    spreads |= step_spreads
    say("Table 9 training step in bfloat16 mixed precision")
    bf16_rows, bf16_spreads, bf16_notes = training.bf16_step_rows()
    rows += bf16_rows
    spreads |= bf16_spreads
    step_notes += bf16_notes
    say("Table 9 training step with an L2 penalty")
    l2_rows, l2_spreads, l2_notes = training.l2_step_rows()
    rows += l2_rows
    spreads |= l2_spreads
    step_notes += l2_notes
    if mnist:
        say("quick MNIST epoch (dropoutlab.train vs the plain PyTorch script)")
        rows.append(training.mnist_row(peer, cpu_time=cpu_time))
        if not cpu_time:
            say("quick MNIST epoch of dropoutlab.train in bf16 vs fp32")
            rows.append(training.mnist_precision_row())
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    others, busy = _others_note(use_start, cpu_use(), time.perf_counter() - wall_start)
    noisiest = max(spreads, key=spreads.__getitem__)
    notes = [
        f"bandwidth bound: a float32 copy_ of 2^25 elements into a preallocated tensor, timed "
        f"right before and right after each dropout row, ran at "
        f"{min(copy_rates) * 4 / 1e9:.1f}–{max(copy_rates) * 4 / 1e9:.1f} GB/s read across the "
        f"rows; forward and backward each stream one read and one write per element, so a "
        f"float32 row's bound is its copy's elements/s ÷ 2 ({min(copy_rates) / 2e9:.2f}–"
        f"{max(copy_rates) / 2e9:.2f} G elem/s) and a bfloat16 row's twice that (2 bytes per "
        f"element).",
        *step_notes,
        "ratio column: torch time ÷ ours for forward+backward; ours ÷ torch for the epoch.",
        f"noise: median relative IQR of the timings {100 * statistics.median(spreads.values()):.0f}"
        f" % (max {100 * spreads[noisiest]:.0f} %, {noisiest}; a median ignores a minority of "
        f"slow samples); 1-min load average {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end (this run's own threads included), on {os.cpu_count()} "
        "logical CPUs.",
    ]
    if others is not None:
        notes.append(others)
    facts = _machine()
    if cpu_time:
        facts["clock"] = ("CPU time of one thread (torch.get_num_threads() = 1): a per-core "
                          "comparison, not the multi-threaded speed")
    cpus = os.cpu_count() or 1
    evidence = "see the other-load note"
    if others is None:  # no /proc/stat: the load average before the run is all there is
        busy = load_start > 0.5 * cpus
        evidence = f"load average {load_start:.1f} on {cpus} CPUs before it started"
    if busy:
        facts["warning"] = (
            f"the machine was busy ({evidence}): other processes or other guests shared the "
            "cores and memory bandwidth, so these numbers understate both sides unevenly "
            "(multi-threaded kernels wait for descheduled threads). Re-run `make bench` on a "
            "quiet machine before quoting them."
        )
    return render(rows, facts, notes)


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table, write it to ``--output`` unless ``--no-write``."""
    parser = argparse.ArgumentParser(
        description="time dropout ours vs torch (ops, memory, training step, MNIST epoch)")
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"),
                        help="Markdown file to write the table to (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no file")
    parser.add_argument("--skip-mnist", action="store_true",
                        help="leave out the quick-MNIST epoch comparison")
    parser.add_argument("--peer", type=Path, default=None,
                        help="path of the plain-PyTorch MNIST script "
                             "(default: mnist_plain_torch.py beside this file)")
    parser.add_argument("--skip-compile", action="store_true",
                        help="leave out the torch.compile part (bench_compile.py)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time single-threaded CPU time instead of wall time (a per-core "
                             "comparison that stays meaningful on a busy machine)")
    args = parser.parse_args(argv)
    allocator.keep_freed_memory()  # as the `dropoutlab` command and its sweep workers do

    def progress(message: str) -> None:
        print(f"… {message}", file=sys.stderr, flush=True)

    report = run(mnist=not args.skip_mnist, peer=args.peer, cpu_time=args.cpu_time,
                 progress=progress)
    if not args.skip_compile:
        progress("torch.compile: the MLP step eager and compiled, fixed cost, throughput")
        import bench_compile

        threads = torch.get_num_threads()
        if args.cpu_time:
            torch.set_num_threads(1)
            timing.clock = time.thread_time
        try:
            report += "\n" + bench_compile.report(cpu_time=args.cpu_time)
        finally:
            torch.set_num_threads(threads)
            timing.clock = time.perf_counter
    print(report, end="")
    if not args.no_write:
        args.output.write_text(report, encoding="utf-8")
        print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
