"""Test doubles for the sweep engine: tiny deterministic tasks with the real task contract.

``fake_train`` behaves like :func:`dropoutlab.train.run_task` in every way the sweep engine
relies on — seeded numbers, one checkpoint per epoch written atomically, exact resume, and on
SIGINT a checkpoint followed by ``KeyboardInterrupt``, epochs reported through
:func:`dropoutlab.train.report_epoch` — but takes milliseconds per epoch (``FAKE_TASK_SLEEP``
seconds, default 0.02). When ``FAKE_TASK_LOG`` names a file, every start, resume, stop on a
signal and completion is appended to it as ``<event> <seed> <pid>``, so tests can count
executions.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from dropoutlab.config import RunConfig
from dropoutlab.train import report_epoch


def _log(event: str, config: RunConfig) -> None:
    path = os.environ.get("FAKE_TASK_LOG")
    if path:
        with open(path, "a") as handle:  # O_APPEND: one write per line, safe across processes
            handle.write(f"{event} {config.seed} {os.getpid()}\n")


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def fake_train(config: RunConfig, *, checkpoint_path: Path | None = None,
               resume: bool = False) -> dict[str, Any]:
    """A seeded 'training run': ``config.epochs`` epochs, each drawing one loss value.

    ``optim.lr >= 10`` reports ``diverged`` (as real runs do with too large a rate).
    """
    _log("start", config)
    rng = random.Random(config.seed * 1000 + len(config.model.hidden))
    epoch, history = 0, []
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = json.loads(checkpoint_path.read_text())
        epoch, history = state["epoch"], state["history"]
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
        _log("resumed", config)
    stop = {"asked": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["asked"] = True

    previous = signal.signal(signal.SIGINT, on_signal)
    report_epoch(epoch, config.epochs)
    try:
        while epoch < config.epochs:
            sleep = float(os.environ.get("FAKE_TASK_SLEEP", "0.02"))
            deadline = time.monotonic() + sleep
            while time.monotonic() < deadline and not stop["asked"]:
                time.sleep(0.005)
            history.append({"epoch": epoch + 1, "loss": rng.random() * config.optim.lr})
            epoch += 1
            if checkpoint_path is not None:
                _save(checkpoint_path, {"epoch": epoch, "history": history,
                                        "rng": rng.getstate()})
            report_epoch(epoch, config.epochs)
            if stop["asked"]:
                _log("stopped", config)
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)
    _log("done", config)
    status = "diverged" if config.optim.lr >= 10 else "done"
    return {"status": status, "metrics": {"loss": history[-1]["loss"], "epochs": epoch},
            "history": history, "extras": {"pid": None}}


def fake_fail(config: RunConfig, *, checkpoint_path: Path | None = None,
              resume: bool = False) -> dict[str, Any]:
    """Always raises: a run with a bug."""
    _log("start", config)
    raise RuntimeError(f"boom for seed {config.seed}")


def fake_flaky(config: RunConfig, *, checkpoint_path: Path | None = None,
               resume: bool = False) -> dict[str, Any]:
    """Fails on its first attempt (leaving a marker beside the checkpoint), then trains."""
    assert checkpoint_path is not None
    marker = checkpoint_path.with_name(checkpoint_path.name + ".flaky")
    if not marker.exists():
        marker.write_text("failed once")
        _log("start", config)
        raise OSError("transient failure")
    return fake_train(config, checkpoint_path=checkpoint_path, resume=resume)


def fake_die(config: RunConfig, *, checkpoint_path: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """The worker process dies mid-run (as under the OOM killer)."""
    os._exit(9)


def fake_die_while_another_runs(config: RunConfig, *, checkpoint_path: Path | None = None,
                                resume: bool = False) -> dict[str, Any]:
    """Waits until another run has started (per ``FAKE_TASK_LOG``), then the worker dies."""
    path = Path(os.environ["FAKE_TASK_LOG"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = path.read_text().split("\n") if path.exists() else []
        if any(line.startswith("start ") for line in lines):
            break
        time.sleep(0.02)
    os._exit(9)
