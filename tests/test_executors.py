"""Executors: the local process pool and Ray give the same results; crashes become outcomes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from dropoutlab import allocator
from dropoutlab.config import RunConfig, with_changes
from dropoutlab.errors import DropoutlabError
from dropoutlab.sweeps import Job, Store, SweepOptions, run_sweep
from dropoutlab.sweeps.executors import LocalExecutor, WorkItem, make_executor

TESTS = Path(__file__).parent
needs_ray = pytest.mark.skipif(find_spec("ray") is None,
                               reason="ray is not installed: pip install 'dropoutlab[ray]'")


def item(key: str, task: str, seed: int = 0, epochs: int = 2, ckpt: str | None = None
         ) -> WorkItem:
    return WorkItem(key, f"sweep_tasks:{task}", RunConfig(epochs=epochs, seed=seed).to_dict(),
                    ckpt, 1)


def env_task(config: RunConfig, *, checkpoint_path: Path | None = None,
             resume: bool = False) -> dict[str, Any]:
    """A task reporting what its worker sees of the environment."""
    from dropoutlab import backend

    return {"status": "done", "extras": {
        "mark": os.environ.get("DROPOUTLAB_TEST_MARK"),
        "gone": os.environ.get("DROPOUTLAB_TEST_GONE"),
        "backend": backend.get_backend()}}


def alloc_task(config: RunConfig, *, checkpoint_path: Path | None = None,
               resume: bool = False) -> dict[str, Any]:
    """A task reporting the page faults of its worker's last 10 of 30 64 MiB allocations."""
    import resource

    import torch

    counts = []
    for _ in range(30):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(1 << 24).fill_(1.0)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"status": "done", "extras": {"faults": sum(counts[-10:])}}


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def collect(executor: Any, n: int, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    waited = 0.0
    while len(out) < n and waited < timeout:
        out.update(executor.wait(0.5))
        waited += 0.5
    return out


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def stored(store: Path) -> dict[str, tuple[str, Any, Any]]:
    with Store(store) as db:
        return {r.config_hash: (r.status, without_timing(r.metrics), without_timing(r.history))
                for r in db.records()}


class TestLocalExecutor:
    def test_dead_worker_fails_its_run_and_the_pool_recovers(self) -> None:
        """A worker killed mid-run gives a 'failed' outcome; later jobs run on a fresh pool."""
        executor = LocalExecutor(workers=1)
        try:
            executor.submit(item("a", "fake_die"))
            [(key, outcome)] = collect(executor, 1).items()
            assert key == "a" and outcome["status"] == "failed"
            assert "worker process died" in outcome["error"]
            executor.submit(item("b", "fake_train"))
            assert collect(executor, 1)["b"]["status"] == "done"
        finally:
            executor.shutdown()

    def test_dead_worker_fails_only_its_own_run(self, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """A worker dying while another runs: only its run fails; the other is done, 1 try."""
        log = tmp_path / "task.log"
        monkeypatch.setenv("FAKE_TASK_LOG", str(log))
        monkeypatch.setenv("FAKE_TASK_SLEEP", "0.05")
        jobs = [Job("e", "dies", RunConfig(seed=1), "sweep_tasks:fake_die_while_another_runs"),
                Job("e", "survives", RunConfig(epochs=10, seed=2), "sweep_tasks:fake_train")]
        summary = run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", workers=2, retries=0))
        assert (summary.done, summary.failed) == (1, 1)
        assert "worker process died" in summary.failures[0].message
        with Store(tmp_path / "s.sqlite") as db:
            survivor = next(r for r in db.records() if r.seed == 2)
        assert (survivor.status, survivor.attempts) == ("done", 1)
        assert log.read_text().count("start 2 ") == 1  # never restarted

    def test_epochs_of_a_real_run_reach_the_driver(self) -> None:
        """A digits run on the pool reports (0, 3), (1, 3), (2, 3), (3, 3), then its outcome."""
        config = with_changes(RunConfig(), {"data.dataset": "digits", "model.hidden": (16,),
                                            "epochs": 3, "optim.batch_size": 64})
        executor = LocalExecutor(workers=1, warm_modules=["dropoutlab.train"])
        try:
            executor.submit(WorkItem("a", "dropoutlab.train:run_task", config.to_dict(),
                                     None, 1))
            assert collect(executor, 1)["a"]["status"] == "done"
            events = executor.epoch_events()
        finally:
            executor.shutdown()
        assert events == [("a", 0, 3), ("a", 1, 3), ("a", 2, 3), ("a", 3, 3)]
        assert executor.epoch_events() == []  # each event is handed over once

    def test_interrupt_makes_a_running_task_checkpoint_and_stop(self, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
        """interrupt() → the task's own SIGINT handler runs (it checkpoints and logs 'stopped'),
        the outcome is 'interrupted', not 'failed'."""
        monkeypatch.setenv("FAKE_TASK_SLEEP", "0.2")
        monkeypatch.setenv("FAKE_TASK_LOG", str(tmp_path / "task.log"))
        ckpt = tmp_path / "a.pt"
        executor = LocalExecutor(workers=1)
        try:
            executor.submit(item("a", "fake_train", epochs=100, ckpt=str(ckpt)))
            import time

            deadline = time.monotonic() + 30
            while not ckpt.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            executor.interrupt()
            outcome = collect(executor, 1)["a"]
            assert outcome["status"] == "interrupted" and ckpt.exists()
        finally:
            executor.shutdown()
        assert "stopped 0 " in (tmp_path / "task.log").read_text()

    def test_workers_see_the_environment_of_now_not_of_the_fork_server(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Variables set or removed after the fork server started reach the next workers, and
        dropoutlab's import-time settings (DROPOUTLAB_BACKEND) follow them."""
        monkeypatch.setenv("DROPOUTLAB_TEST_GONE", "still here")
        monkeypatch.delenv("DROPOUTLAB_BACKEND", raising=False)
        first = LocalExecutor(workers=1)  # starts the fork server with today's environment
        try:
            first.submit(WorkItem("a", "test_executors:env_task", RunConfig().to_dict(), None, 1))
            assert collect(first, 1)["a"]["extras"] == {
                "mark": None, "gone": "still here", "backend": "auto"}
        finally:
            first.shutdown()
        monkeypatch.setenv("DROPOUTLAB_TEST_MARK", "set later")
        monkeypatch.delenv("DROPOUTLAB_TEST_GONE")
        monkeypatch.setenv("DROPOUTLAB_BACKEND", "torch")
        second = LocalExecutor(workers=1)
        try:
            second.submit(WorkItem("b", "test_executors:env_task", RunConfig().to_dict(), None,
                                   1))
            assert collect(second, 1)["b"]["extras"] == {
                "mark": "set later", "gone": None, "backend": "torch"}
        finally:
            second.shutdown()

    @pytest.mark.skipif(not Path("/proc/self/stat").exists() or not allocator._glibc(),
                        reason="needs glibc and /proc")
    def test_workers_keep_freed_memory(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Workers apply allocator.keep_freed_memory: a reused 64 MiB tensor stops faulting;
        an invalid DROPOUTLAB_KEEP_FREED_MEMORY fails the job with a message naming it."""
        monkeypatch.delenv(allocator.ENV_VAR, raising=False)
        executor = LocalExecutor(workers=1)
        try:
            executor.submit(WorkItem("a", "test_executors:alloc_task", RunConfig().to_dict(),
                                     None, 1))
            assert collect(executor, 1)["a"]["extras"]["faults"] < 100
        finally:
            executor.shutdown()
        monkeypatch.setenv(allocator.ENV_VAR, "2")
        executor = LocalExecutor(workers=1)
        try:
            executor.submit(WorkItem("b", "test_executors:alloc_task", RunConfig().to_dict(),
                                     None, 1))
            outcome = collect(executor, 1)["b"]
        finally:
            executor.shutdown()
        assert outcome["status"] == "failed"
        assert "DROPOUTLAB_KEEP_FREED_MEMORY must be 0 or 1, got '2'" in outcome["error"]

    @pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods()
                        or not Path("/proc/self/stat").exists(),
                        reason="needs a fork server and /proc")
    def test_a_dead_fork_server_does_not_fail_running_jobs(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """SIGTERM to the fork server (as a signal to the driver's process group would do):
        the worker it forked finishes its run once, and the pool still starts new workers."""
        log = tmp_path / "task.log"
        monkeypatch.setenv("FAKE_TASK_LOG", str(log))
        monkeypatch.setenv("FAKE_TASK_SLEEP", "0.05")
        executor = LocalExecutor(workers=1)
        try:
            executor.submit(item("a", "fake_train", epochs=30))
            deadline = time.monotonic() + 30
            while "start 0 " not in (log.read_text() if log.exists() else ""):
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.02)
            worker = int(log.read_text().split()[2])
            server = parent_pid(worker)
            assert server != os.getpid()
            os.kill(server, signal.SIGTERM)
            outcome = collect(executor, 1)["a"]
            assert outcome["status"] == "done", outcome["error"]
            assert log.read_text().count("start 0 ") == 1
            executor.submit(item("b", "fake_train", seed=1))
            assert collect(executor, 1)["b"]["status"] == "done"
        finally:
            executor.shutdown()
        assert log.read_text().count("start 1 ") == 1

    def test_oversubscription_is_refused(self) -> None:
        """workers × threads beyond the cores is an error naming both arguments."""
        cores = os.cpu_count() or 1
        with pytest.raises(DropoutlabError, match="`workers` × `threads_per_run`"):
            LocalExecutor(workers=cores + 1, threads=1)


def test_unknown_executor_is_refused() -> None:
    """make_executor names the valid executors."""
    with pytest.raises(DropoutlabError, match=r"`executor` must be one of \('local', 'ray'\)"):
        make_executor("dask")


def test_missing_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the ray package, executor='ray' says what to install."""
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DropoutlabError, match=r"pip install 'dropoutlab\[ray\]'"):
        make_executor("ray")


@pytest.fixture(scope="module")
def ray_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FAKE_TASK_LOG of the Ray workers (their environment is fixed at ``ray.init``)."""
    return tmp_path_factory.mktemp("ray") / "task.log"


@pytest.fixture(scope="module")
def ray_instance(ray_log: Path) -> Any:
    """One local Ray instance (2 CPUs) for this module; workers can import ``sweep_tasks``."""
    import ray

    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": path, "FAKE_TASK_SLEEP": "0.01",
                                       "FAKE_TASK_LOG": str(ray_log)}})
    yield ray
    ray.shutdown()


def smoke_jobs(n: int) -> list[Job]:
    base = with_changes(RunConfig(), {"data.dataset": "digits", "model.hidden": (32,),
                                      "epochs": 3, "optim.batch_size": 32})
    return [Job("ray-vs-local", f"seed={s}", with_changes(base, {"seed": s})) for s in range(n)]


@needs_ray
class TestRay:
    def test_same_results_as_local_on_real_smoke_runs(self, ray_instance: Any,
                                                      tmp_path: Path) -> None:
        """8 digits smoke runs through Ray store exactly what the local pool stores."""
        jobs = smoke_jobs(8)
        local = run_sweep(jobs, SweepOptions(store=tmp_path / "local.sqlite", workers=2))
        remote = run_sweep(jobs, SweepOptions(store=tmp_path / "ray.sqlite", executor="ray"))
        assert local.done == remote.done == 8
        a, b = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
        assert a == b and {status for status, *_ in a.values()} == {"done"}

    def test_retries_and_failures_behave_as_locally(self, ray_instance: Any,
                                                    tmp_path: Path) -> None:
        """Through Ray a flaky run is retried and a broken one reported after its retries."""
        jobs = [Job("e", "flaky", RunConfig(epochs=2, seed=1), "sweep_tasks:fake_flaky"),
                Job("e", "broken", RunConfig(seed=2), "sweep_tasks:fake_fail")]
        summary = run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", executor="ray",
                                               retries=1, checkpoint_dir=tmp_path / "ckpt"))
        assert (summary.done, summary.failed) == (1, 1)
        assert "boom for seed 2" in summary.failures[0].message
        assert run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", executor="ray",
                                            retries=0)).skipped == 1

    def test_interrupt_cancels_and_the_run_stays_resumable(self, ray_instance: Any,
                                                           ray_log: Path, tmp_path: Path) -> None:
        """interrupt() on Ray runs the task's own SIGINT handler: it checkpoints, logs
        'stopped', and the outcome is 'interrupted' (the run resumes), not a cancellation."""
        ckpt = tmp_path / "a.pt"
        executor = make_executor("ray", workers=1)
        try:
            executor.submit(item("a", "fake_train", seed=77, epochs=100000, ckpt=str(ckpt)))
            for _ in range(120):  # until it is running (Ray starts its worker lazily)
                if ckpt.exists():
                    break
                assert executor.wait(0.25) == []
            executor.interrupt()
            outcome = collect(executor, 1)["a"]
            assert outcome["status"] == "interrupted"
            assert "SIGINT" in outcome["error"]  # execute() saw KeyboardInterrupt from the task
        finally:
            executor.shutdown()
        assert "stopped 77 " in ray_log.read_text()  # the handler ran, after its checkpoint
        assert ray_instance.is_initialized()  # an instance it did not start is left running

    def test_epochs_reach_the_driver(self, ray_instance: Any) -> None:
        """Epoch counts of a Ray task arrive through the queue actor, in order."""
        executor = make_executor("ray", workers=1)
        try:
            executor.submit(item("a", "fake_train", epochs=3))
            assert collect(executor, 1)["a"]["status"] == "done"
            events = executor.epoch_events()
        finally:
            executor.shutdown()
        assert events == [("a", 0, 3), ("a", 1, 3), ("a", 2, 3), ("a", 3, 3)]
