"""Test doubles for the sweep engine: tiny deterministic tasks with the real task contract.

``fake_train`` behaves like :func:`dropoutlab.train.run_task` in every way the sweep engine
relies on — seeded numbers, one checkpoint per epoch written atomically, exact resume, and on
SIGINT a checkpoint followed by ``KeyboardInterrupt`` — but takes milliseconds per epoch
(``FAKE_TASK_SLEEP`` seconds, default 0.02). When ``FAKE_TASK_LOG`` names a file, every start
and completion is appended to it as ``<event> <seed> <pid>``, so tests can count executions.
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
            if stop["asked"]:
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
