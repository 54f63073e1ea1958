"""Sweep throughput: 8 smoke runs one by one, on the local pool, and through Ray.

    .venv/bin/python benchmarks/bench_sweep.py [--runs 8] [--epochs 20] [--repeats 1]

Every configuration trains the same digits smoke runs (real :func:`dropoutlab.train.run_task`):

* ``serial``: one after another in this process, torch already imported, 1 thread each (on
  these tiny nets more threads only add overhead; ``--serial-threads N`` to compare), the
  strictest "one by one" baseline;
* ``local``: ``run_sweep(executor="local")`` with ``cores // 1`` workers, a fresh store, the
  pool's start-up (spawned workers import torch) included;
* ``ray``: the same through ``executor="ray"``: once including ``ray.init`` of a local
  instance, once on an instance already running.

The issue's bar: ``local / serial ≤ 0.6`` on the 8 runs. Timings on a shared machine are noisy,
so beside wall-clock seconds it reports CPU seconds (``getrusage`` of this process plus its
reaped children: the pool workers; for ``ray_with_init`` also Ray's own daemons, reaped at
``ray.shutdown``; ``ray_warm`` workers outlive the measurement, so its CPU is only the
driver's) and the load average before and after. ``--repeats`` reports the median. Prints one
JSON object.

What bounds the ratio: each pool worker pays its start-up (importing torch and sklearn, about
2 CPU-seconds) once per sweep, in parallel; ``serial`` pays nothing (imports done). With
``cores`` workers the ideal is ``1 / cores + start-up / serial``, so short grids (the default
20 epochs) cannot reach 0.6 on 2 cores; ``--epochs 100`` amortises it better.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.jobs import usable_cores
from dropoutlab.sweep import Job, run_sweep
from dropoutlab.train import run_task


def smoke_jobs(runs: int, epochs: int) -> list[Job]:
    base = with_changes(RunConfig(), {"data.dataset": "digits", "model.hidden": (128, 128),
                                      "epochs": epochs, "optim.batch_size": 32})
    return [Job("bench", f"seed={s}", with_changes(base, {"seed": s})) for s in range(runs)]


def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def serial(jobs: list[Job], threads: int) -> None:
    torch.set_num_threads(threads)
    for job in jobs:
        assert run_task(job.config)["status"] == "done"


def sweep(jobs: list[Job], **kwargs: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_sweep(jobs, store=Path(tmp) / "runs.sqlite", progress=False,
                            **kwargs)  # type: ignore[arg-type]
        assert summary.ok and summary.done == len(jobs), summary.lines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--serial-threads", type=int, default=1)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    jobs = smoke_jobs(args.runs, args.epochs)
    run_task(smoke_jobs(1, 1)[0].config)  # warm the data cache and the allocator

    results: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("serial", "local", "ray_with_init", "ray_warm")}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        results["serial"].append(timed(lambda: serial(jobs, args.serial_threads)))
        results["local"].append(timed(lambda: sweep(jobs, executor="local")))
        if not args.no_ray:
            import ray

            results["ray_with_init"].append(timed(lambda: sweep(jobs, executor="ray")))
            ray.init(num_cpus=usable_cores(), include_dashboard=False, logging_level=logging.ERROR)
            sweep(smoke_jobs(usable_cores(), 1), executor="ray")  # start Ray's workers
            results["ray_warm"].append(timed(lambda: sweep(jobs, executor="ray")))
            ray.shutdown()
    median = {k: statistics.median(w for w, _ in v) for k, v in results.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items() if v}
    report = {
        "runs": args.runs, "epochs": args.epochs, "cores": usable_cores(),
        "serial_threads": args.serial_threads, "repeats": args.repeats,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "seconds": {k: round(v, 2) for k, v in median.items()},
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "local_over_serial": round(median["local"] / median["serial"], 3),
        "bar_local_over_serial": 0.6,
    }
    if "ray_with_init" in median:
        report["ray_overhead_s"] = {
            "with_init": round(median["ray_with_init"] - median["local"], 2),
            "warm": round(median["ray_warm"] - median["local"], 2),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
