"""Sweeps killed for real: SIGKILL mid-run, Ctrl-C, and two sweeps sharing one store.

Each test drives ``python -m dropoutlab.cli sweep`` in a subprocess, does something rude to it,
runs the same command again and checks that every run is done exactly once with the numbers an
uninterrupted sweep gives.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sweep_tasks
from dropoutlab.cli.sweep import build_jobs, register
from dropoutlab.config import RunConfig
from dropoutlab.sweeps import Store, SweepOptions, run_sweep

TESTS = Path(__file__).parent


def sweep_command(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dropoutlab.cli", "sweep", "--store", str(store),
            "--checkpoint-dir", str(store.parent / "ckpt"), *extra]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def statuses(store: Path) -> Counter[str]:
    """Status counts read without taking any lock (the sweep may be writing)."""
    if not store.exists():
        return Counter()
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return Counter(row[0] for row in db.execute("SELECT status FROM runs"))
    except sqlite3.OperationalError:  # schema not created yet
        return Counter()
    finally:
        db.close()


def wait_for(condition: Any, timeout: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"sweep exited early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the sweep"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def descendants(pid: int) -> list[int]:
    """Children, grandchildren…: pool workers are the fork server's children, not the driver's."""
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def without_timing(value: Any) -> Any:
    """Drop wall-clock fields: everything else must match bit for bit."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def parse(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(argv)


# 6 digits runs of a second or so each, checkpointed every epoch.
SMOKE = ["--set", "data.dataset=digits", "--set", "model.hidden=[64]", "--set", "epochs=8",
         "--set", "optim.batch_size=32", "--set", "checkpoint_every=1", "--seeds", "6",
         "--experiment", "crash", "--workers", "2"]


@pytest.mark.slow
def test_sigkill_mid_sweep_then_same_command_finishes_each_run_once(tmp_path: Path) -> None:
    """SIGKILL the driver mid-run; the same command ends with 6 runs done once, as if uncut."""
    store = tmp_path / "runs.sqlite"
    command = sweep_command(store, *SMOKE)
    proc = subprocess.Popen(command, env=environment(), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = tmp_path / "ckpt"

    def mid_run() -> bool:  # two runs stored, another one part-way with a checkpoint
        return statuses(store)["done"] >= 2 and any(ckpt.glob("*.pt"))

    wait_for(mid_run, 120, proc)
    workers = descendants(proc.pid)
    assert len(workers) >= 2  # at least the two pool workers (and the fork server)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = {r.config_hash: r for r in Store(store).records()}
    cut = [r for r in before.values() if r.status == "running"]
    assert cut and len(before) == 6 and Counter(r.status for r in before.values())["done"] < 6
    deadline = time.monotonic() + 5  # the orphaned pool workers notice and exit
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "orphan workers outlived the driver"

    again = subprocess.run(command, env=environment(), cwd=tmp_path, text=True,
                           capture_output=True, timeout=180)
    assert again.returncode == 0, again.stderr
    with Store(store) as db:
        after = {r.config_hash: r for r in db.records(experiment="crash")}
    assert len(after) == 6 and {r.status for r in after.values()} == {"done"}
    for key, record in before.items():
        if record.status == "done":  # finished before the kill: not run again
            assert after[key].attempts == 1 and after[key].updated == record.updated
    assert sum(after[r.config_hash].resumed for r in cut) >= 1  # resumed from a checkpoint

    reference = tmp_path / "reference.sqlite"
    jobs = build_jobs(parse(["sweep", *SMOKE]))
    assert run_sweep(jobs, SweepOptions(store=reference, workers=2)).ok
    with Store(reference) as db:
        expected = {r.config_hash: r for r in db.records()}
    assert expected.keys() == after.keys()
    for key, record in after.items():
        assert without_timing(record.metrics) == without_timing(expected[key].metrics)
        assert without_timing(record.history) == without_timing(expected[key].history)


def fake_reference(seed: int, epochs: int) -> dict[str, Any]:
    return sweep_tasks.fake_train(RunConfig(epochs=epochs, seed=seed))


def test_ctrl_c_checkpoints_and_the_same_command_resumes(tmp_path: Path) -> None:
    """SIGINT: exit 130 with a resume hint, runs back to pending; the rerun resumes them."""
    store, log = tmp_path / "runs.sqlite", tmp_path / "task.log"
    command = sweep_command(store, "--task", "sweep_tasks:fake_train", "--set", "epochs=10",
                            "--seeds", "4", "--workers", "2")
    env = environment(FAKE_TASK_SLEEP="0.15", FAKE_TASK_LOG=str(log))
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: len(list((tmp_path / "ckpt").glob("*.pt"))) == 2, 60, proc)  # both running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in out
    counts = statuses(store)
    assert counts["running"] == 0 and counts["pending"] == 4
    assert len(list((tmp_path / "ckpt").glob("*.pt"))) == 2  # each running run checkpointed

    again = subprocess.run(command, env=env, cwd=tmp_path, text=True, capture_output=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    lines = [line.split() for line in log.read_text().splitlines()]
    assert Counter(int(seed) for event, seed, _ in lines if event == "done") == Counter(range(4))
    assert len([1 for event, *_ in lines if event == "resumed"]) == 2
    with Store(store) as db:
        for record in db.records():
            assert record.history == fake_reference(record.seed, 10)["history"]


def test_two_sweeps_on_one_store_never_run_a_config_twice(tmp_path: Path) -> None:
    """Two sweep processes started together on one store share the runs, each run once."""
    store, log = tmp_path / "runs.sqlite", tmp_path / "task.log"
    command = sweep_command(store, "--task", "sweep_tasks:fake_train", "--set", "epochs=5",
                            "--seeds", "12", "--workers", "1")
    env = environment(FAKE_TASK_SLEEP="0.05", FAKE_TASK_LOG=str(log))
    procs = [subprocess.Popen(command, env=env, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = Counter(int(seed) for event, seed, _ in lines if event == "start")
    assert starts == Counter(range(12)), "a config ran twice (or not at all)"
    assert len({pid for event, _, pid in lines if event == "start"}) == 2, "no sharing happened"
    with Store(store) as db:
        records = db.records()
    assert len(records) == 12
    assert {(r.status, r.attempts) for r in records} == {("done", 1)}
