"""Fast checks of the pieces of the benchmark suite in ``benchmarks/`` (run by `make bench`).

The benchmarks are scripts beside the package, never imported by it; these tests import them
from that folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dropoutlab import backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_dropout as bench
import bench_training as training
import timing


@pytest.fixture
def native() -> Iterator[None]:
    """Select the native backend for one test."""
    with backend.use_backend("native"):
        yield


class TestBench:
    """Fast checks of the benchmark suite's pieces (the suite itself runs in `make bench`)."""

    def test_saved_bits(self, native: None) -> None:
        """The hook-based count gives 0 bits for ours and 32 for torch.nn.Dropout."""
        from dropoutlab.layers import Dropout

        assert bench.saved_bits_per_element(Dropout(0.5)) == 0
        assert bench.saved_bits_per_element(torch.nn.Dropout(0.5)) == 32

    def test_render_and_missing_peer(self, tmp_path: Path) -> None:
        """A missing peer script gives a "skipped" row; the table has one line per row."""

        row = training.mnist_row(tmp_path / "missing.py")
        assert row.ours.startswith("skipped") and row.met is None
        text = timing.render([row, timing.Row("x", "1", "2", met=False)], {"date": "now"}, ["n"])
        lines = [line for line in text.splitlines() if line.startswith("|")]
        assert len(lines) == 4 and "**no**" in lines[-1] and "- **date**: now" in text

    def test_timer_interleaves_and_reports_spread(self) -> None:
        """time_side_by_side returns a positive median and a spread for every callable."""

        t = timing.time_side_by_side({"a": lambda: None, "b": lambda: sum(range(100))},
                                    samples=3, min_sample_s=0.001)
        assert set(t) == {"a", "b"} and all(v.seconds > 0 and v.spread >= 0 for v in t.values())

    def test_step_products_are_the_steps_matrix_products(self) -> None:
        """The "products alone" reference runs exactly the step's products: 4 forward, 4 weight
        gradients, 3 input gradients (none for the data), in step order, and their FLOPs are
        6·batch·weights less the first layer's input gradient."""
        from torch.overrides import TorchFunctionMode


        widths, batch = (12, 8, 6, 4, 3), 5
        seen: list[tuple[int, int, int]] = []

        class Record(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                if func in (torch.mm, torch.addmm):
                    a, b = args[-2:]
                    seen.append((a.shape[0], a.shape[1], b.shape[1]))
                return func(*args, **(kwargs or {}))

        products = training._matrix_products(torch.rand(batch, widths[0]), widths)
        with Record():
            products()
        assert seen == training.step_products(widths, batch)
        assert len(seen) == 11
        flops = 2 * sum(m * k * n for m, k, n in seen)
        assert flops == training.model_flops(widths, batch) - 2 * batch * widths[0] * widths[1]

    def test_other_load_from_proc_stat(self) -> None:
        """/proc/stat's aggregate line gives busy and stolen seconds; the note subtracts this
        process's own CPU time and flags a run where others took over a quarter of a CPU."""

        line = "cpu  1000 50 250 9000 40 5 15 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
        assert bench.parse_proc_stat(line, 100) == (13.2, 0.3)
        with pytest.raises(ValueError, match="/proc/stat"):
            bench.parse_proc_stat("intr 1 2 3", 100)
        start = bench.CpuUse(busy=100.0, steal=1.0, own=10.0)
        quiet, _ = bench._others_note(start, bench.CpuUse(160.0, 1.5, 68.0), wall=30.0)
        assert quiet is not None and "2.0 CPU-seconds" in quiet and "0.5 s" in quiet
        assert not bench._others_note(start, bench.CpuUse(160.0, 1.5, 68.0), wall=30.0)[1]
        assert bench._others_note(start, bench.CpuUse(160.0, 1.5, 50.0), wall=30.0)[1]
        assert bench._others_note(start, bench.CpuUse(120.0, 5.0, 30.0), wall=30.0)[1]
        assert bench._others_note(None, start, wall=30.0) == (None, False)
        if Path("/proc/stat").exists():
            use = bench.cpu_use()
            assert use is not None and use.busy > 0 and use.own > 0

    def test_cli_registers_bench(self) -> None:
        """`dropoutlab bench` parses its options."""
        from dropoutlab.cli import build_parser

        args = build_parser().parse_args(["bench", "--no-write", "--skip-mnist"])
        assert args.command == "bench" and args.no_write and args.skip_mnist

    def test_cli_forwards_its_flags_to_the_suite(self) -> None:
        """`dropoutlab bench` runs benchmarks/bench_dropout.py with the same flags, which that
        script's own parser accepts."""
        from dropoutlab.cli import build_parser
        from dropoutlab.cli.bench import find_suite, suite_arguments

        args = build_parser().parse_args(["bench", "--no-write", "--skip-mnist",
                                          "--skip-compile", "--cpu-time"])
        argv = suite_arguments(args)
        assert argv == ["--output", "BENCHMARKS.md", "--no-write", "--skip-mnist",
                        "--skip-compile", "--cpu-time"]
        assert find_suite().resolve() == Path(bench.__file__).resolve()

    def test_cpu_epoch_cost_cancels_setup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """(cost(3 epochs) − cost(1 epoch)) / 2 removes the fixed setup cost."""

        now = [0.0]
        monkeypatch.setattr(training.time, "thread_time", lambda: now[0])

        def fake_run(epochs: int) -> None:
            now[0] += 5.0 + 1.5 * epochs  # 5 s of setup, 1.5 s per epoch

        assert training._cpu_seconds_per_epoch(fake_run, 3) == pytest.approx(1.5)
