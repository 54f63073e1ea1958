"""Scale-out faults on a real two-node Ray cluster on this machine (``ray start`` twice).

A head node and a worker node (each 1 CPU, on loopback addresses: the head on 127.0.0.2, since
Ray rewrites 127.0.0.1 to the host's address, the worker on 127.0.0.1; token authentication
with a fresh token) run a sweep of the seeded ``fake_train`` task through ``dropoutlab sweep
--executor ray``. Then:

* the worker node is killed (its raylet and every process under it, SIGKILL) mid-sweep: the
  sweep finishes on the head node, each run completes exactly once, and the stored results
  equal those of the local executor;
* the driver is killed (SIGKILL) mid-sweep and started again: same checks.

Marked ``slow``: it starts two Ray nodes and three drivers (tens of seconds on 2 cores).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.sweeps import SweepOptions, run_sweep
from dropoutlab.sweeps.job import Job
from dropoutlab.sweeps.store import Store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_spec("ray") is None
                       or not (Path(sys.executable).parent / "ray").exists(),
                       reason="ray is not installed: pip install 'dropoutlab[ray]'"),
]

TESTS = Path(__file__).parent
RAY = str(Path(sys.executable).parent / "ray")
SEEDS = 4
EPOCHS = 8
SLEEP = "0.25"  # seconds per fake epoch: a run takes ~2 s, long enough to be killed mid-way


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            by_parent.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pids_with_env(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (``NAME=value``): a node's every process,
    including agents that renamed themselves and were re-parented."""
    pids, needle = [], marker.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in environ:
                pids.append(int(entry.name))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Cluster:
    """A head node and worker nodes started with ``ray start``, all on 127.0.0.1."""

    def __init__(self, root: Path, log: Path) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths
        self.port = _free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.marker = f"DROPOUTLAB_TEST_CLUSTER={secrets.token_hex(8)}"
        self.env = {
            **os.environ,
            "DROPOUTLAB_TEST_CLUSTER": self.marker.partition("=")[2],
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "4",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "FAKE_TASK_LOG": str(log), "FAKE_TASK_SLEEP": SLEEP,
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        self.nodes: dict[int, str] = {}  # worker pid -> the marker of its node's processes
        self.root = root

    def start_head(self) -> None:
        subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.2",
                        f"--port={self.port}", "--num-cpus=1", "--resources={\"head\": 1}",
                        "--include-dashboard=false", "--dashboard-host=127.0.0.2",
                        "--disable-usage-stats", f"--ray-client-server-port={_free_port()}",
                        f"--temp-dir={self.temp}"], env=self.env, check=True,
                       capture_output=True, timeout=120)

    def add_worker(self) -> subprocess.Popen[bytes]:
        """A second node (1 CPU, resource ``spare``); returns once the cluster has 2 CPUs."""
        node = f"DROPOUTLAB_TEST_NODE={secrets.token_hex(8)}"
        worker = subprocess.Popen([RAY, "start", f"--address={self.address}", "--num-cpus=1",
                                   "--resources={\"spare\": 1}", "--block"],
                                  env={**self.env, "DROPOUTLAB_TEST_NODE": node.partition("=")[2]},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        self.workers.append(worker)
        self.nodes[worker.pid] = node
        self.wait_for_cpus(2)
        assert worker.poll() is None, "ray start of the worker node exited"
        return worker

    def wait_for_cpus(self, cpus: int) -> None:
        """Wait (up to 2 min) until the nodes alive have ``cpus`` CPUs in all."""
        watch = ("import ray, time\n"
                 f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
                 "for _ in range(600):\n"
                 "    alive = sum(n['Resources'].get('CPU', 0) for n in ray.nodes() "
                 "if n['Alive'])\n"
                 f"    if alive == {cpus}:\n"
                 "        raise SystemExit(0)\n"
                 "    time.sleep(0.2)\n"
                 "raise SystemExit(1)\n")
        done = subprocess.run([sys.executable, "-c", watch], env=self.env, timeout=180,
                              capture_output=True, check=False)
        assert done.returncode == 0, f"the cluster never had {cpus} CPUs alive"

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker node: its ``ray start``, raylet, agents and workers."""
        node = _pids_with_env(self.nodes[worker.pid])
        _kill([worker.pid, *_children(worker.pid), *node])
        worker.wait(timeout=30)

    def stop(self) -> None:
        """Kill every process of this cluster (found by its marker) and remove its files."""
        mine = _pids_with_env(self.marker)
        _kill([*mine, *(c for pid in mine for c in _children(pid))])
        for worker in self.workers:
            worker.wait(timeout=30)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A running head node; the test adds (and kills) worker nodes."""
    log = tmp_path / "task.log"
    log.touch()
    cluster = Cluster(tmp_path, log)
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()


def _sweep(cluster: Cluster, store: Path, ckpt: Path) -> subprocess.Popen[bytes]:
    """``dropoutlab sweep`` of SEEDS fake runs on the cluster, as a separate driver process."""
    return subprocess.Popen(
        [sys.executable, "-m", "dropoutlab.cli", "sweep", "--task", "sweep_tasks:fake_train",
         "--set", f"epochs={EPOCHS}", "--seeds", str(SEEDS), "--experiment", "ray-faults",
         "--executor", "ray", "--ray-address", cluster.address, "--store", str(store),
         "--checkpoint-dir", str(ckpt), "--retries", "0"],
        env=cluster.env, cwd=cluster.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _events(log: Path, event: str) -> list[int]:
    """Seeds of the ``event`` lines in the task log."""
    return sorted(int(line.split()[1]) for line in log.read_text().splitlines()
                  if line.startswith(f"{event} "))


def _wait_for(log: Path, event: str, count: int, driver: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while len(_events(log, event)) < count:
        assert driver.poll() is None, driver.stdout.read().decode() if driver.stdout else ""
        assert time.monotonic() < deadline, f"no {count} {event!r} events in time"
        time.sleep(0.05)


def _stored(store: Path) -> dict[str, tuple[str, Any, Any]]:
    with Store.open_readonly(store) as db:
        return {r.config_hash: (r.status, r.metrics, r.history) for r in db.records()}


def _local_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> dict[str, tuple[str, Any, Any]]:
    """The same sweep through the local executor (no sleeping, its own task log)."""
    monkeypatch.setenv("FAKE_TASK_SLEEP", "0")
    monkeypatch.setenv("FAKE_TASK_LOG", str(tmp_path / "local.log"))
    monkeypatch.syspath_prepend(str(TESTS))
    base = with_changes(RunConfig(), {"epochs": EPOCHS})
    jobs = [Job("ray-faults", f"seed={s}", with_changes(base, {"seed": s}),
                "sweep_tasks:fake_train") for s in range(SEEDS)]
    summary = run_sweep(jobs, SweepOptions(store=tmp_path / "local.sqlite", workers=1,
                                           checkpoint_dir=tmp_path / "local-ckpt"))
    assert summary.done == SEEDS
    return _stored(tmp_path / "local.sqlite")


def test_worker_node_and_driver_killed_mid_sweep(cluster: Cluster, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the worker node mid-sweep, then (on a fresh worker) kill and restart the driver:
    both sweeps finish, every run is completed once, and the results equal the local ones."""
    started = time.monotonic()
    log = Path(cluster.env["FAKE_TASK_LOG"])
    reference = _local_reference(tmp_path, monkeypatch)

    # 1. the worker node dies while both nodes run a task
    worker = cluster.add_worker()
    store, ckpt = tmp_path / "node.sqlite", tmp_path / "node-ckpt"
    driver = _sweep(cluster, store, ckpt)
    _wait_for(log, "start", 2, driver)
    time.sleep(1.0)  # a few epochs into both runs
    cluster.kill_worker(worker)
    output = driver.communicate(timeout=300)[0].decode()
    assert driver.returncode == 0, output
    assert _events(log, "done") == list(range(SEEDS)), log.read_text()
    assert _events(log, "resumed"), log.read_text()  # the killed node's run went on elsewhere
    assert _stored(store) == reference
    cluster.wait_for_cpus(1)  # the sweep finished on the head node alone

    # 2. the driver dies mid-sweep and is started again
    log.write_text("")
    cluster.add_worker()
    store, ckpt = tmp_path / "driver.sqlite", tmp_path / "driver-ckpt"
    driver = _sweep(cluster, store, ckpt)
    _wait_for(log, "start", 2, driver)
    time.sleep(1.0)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert len(_events(log, "done")) < SEEDS  # it really was cut short
    again = _sweep(cluster, store, ckpt)
    output = again.communicate(timeout=300)[0].decode()
    assert again.returncode == 0, output
    assert _events(log, "done") == list(range(SEEDS)), log.read_text()
    assert _events(log, "resumed"), log.read_text()  # cut-short runs resumed, not restarted
    assert _stored(store) == reference
    print(f"two-node Ray fault test: {time.monotonic() - started:.0f} s")
