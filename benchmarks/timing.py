"""The timing harness every benchmark here shares: interleaved samples, medians, one table.

Timings are medians of interleaved samples (a, b, c, a, b, c, ...) after warm-up, so a burst of
load from other processes hits every side alike; each timing's relative interquartile range is
kept so that a noisy run can be recognised.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Row", "Timing", "clock", "render", "time_side_by_side"]

# The clock every timing uses: wall time, or (``bench_dropout.py --cpu-time``) the CPU time of
# the one thread that does all the work when torch runs single-threaded.
clock: Callable[[], float] = time.perf_counter


@dataclass(frozen=True)
class Timing:
    """Median seconds per call and the relative interquartile range of the samples."""

    seconds: float
    spread: float


@dataclass(frozen=True)
class Row:
    """One line of the table; ``met`` is None where no target applies."""

    benchmark: str
    ours: str
    torch: str
    ratio: str = "–"
    ours_bound: str = "–"
    torch_bound: str = "–"
    target: str = "–"
    met: bool | None = None


def time_side_by_side(
    fns: dict[str, Callable[[], object]], *, samples: int = 9, min_sample_s: float = 0.02,
    warmup: int = 2,
) -> dict[str, Timing]:
    """Time several callables with interleaved samples; each sample loops for ≥ min_sample_s.

    Returns:
        Per name, the median seconds of one call and the relative IQR over the samples.
    """
    loops: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        start = clock()
        fn()
        once = max(clock() - start, 1e-7)
        loops[name] = max(1, math.ceil(min_sample_s / once))
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            start = clock()
            for _ in range(loops[name]):
                fn()
            per_call[name].append((clock() - start) / loops[name])
    result = {}
    for name, values in per_call.items():
        q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        result[name] = Timing(median, (q3 - q1) / median)
    return result


def render(rows: list[Row], facts: dict[str, str], notes: list[str]) -> str:
    """The report as Markdown: facts, one fixed-width table, notes."""
    header = ("benchmark", "ours", "torch", "ours vs torch", "ours % of bound",
              "torch % of bound", "target", "met")
    cells = [header] + [
        (r.benchmark, r.ours, r.torch, r.ratio, r.ours_bound, r.torch_bound, r.target,
         "–" if r.met is None else ("yes" if r.met else "**no**"))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    table = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    table += [line(row) for row in cells[1:]]
    out = ["# dropoutlab benchmarks", ""]
    out += [f"- **{key}**: {value}" for key, value in facts.items()]
    out += ["", *table, ""]
    out += [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"
