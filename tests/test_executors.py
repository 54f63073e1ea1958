"""Executors: the local process pool and Ray give the same results; crashes become outcomes."""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from dropoutlab.config import RunConfig, with_changes
from dropoutlab.errors import DropoutlabError
from dropoutlab.executors import LocalExecutor, WorkItem, make_executor
from dropoutlab.store import Store
from dropoutlab.sweep import Job, run_sweep

TESTS = Path(__file__).parent
needs_ray = pytest.mark.skipif(find_spec("ray") is None,
                               reason="ray is not installed: pip install 'dropoutlab[ray]'")


def item(key: str, task: str, seed: int = 0, epochs: int = 2, ckpt: str | None = None
         ) -> WorkItem:
    return WorkItem(key, f"sweep_tasks:{task}", RunConfig(epochs=epochs, seed=seed).to_dict(),
                    ckpt, 1)


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

    def test_interrupt_makes_a_running_task_checkpoint_and_stop(self, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
        """interrupt() → the task checkpoints, the outcome is 'interrupted', not 'failed'."""
        monkeypatch.setenv("FAKE_TASK_SLEEP", "0.2")
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
def ray_instance() -> Any:
    """One local Ray instance (2 CPUs) for this module; workers can import ``sweep_tasks``."""
    import ray

    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path, "FAKE_TASK_SLEEP": "0.01"}})
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
        local = run_sweep(jobs, store=tmp_path / "local.sqlite", workers=2)
        remote = run_sweep(jobs, store=tmp_path / "ray.sqlite", executor="ray")
        assert local.done == remote.done == 8
        a, b = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
        assert a == b and {status for status, *_ in a.values()} == {"done"}

    def test_retries_and_failures_behave_as_locally(self, ray_instance: Any,
                                                    tmp_path: Path) -> None:
        """Through Ray a flaky run is retried and a broken one reported after its retries."""
        jobs = [Job("e", "flaky", RunConfig(epochs=2, seed=1), "sweep_tasks:fake_flaky"),
                Job("e", "broken", RunConfig(seed=2), "sweep_tasks:fake_fail")]
        summary = run_sweep(jobs, store=tmp_path / "s.sqlite", executor="ray", retries=1,
                            checkpoint_dir=tmp_path / "ckpt")
        assert (summary.done, summary.failed) == (1, 1)
        assert "boom for seed 2" in summary.failures[0].message
        assert run_sweep(jobs, store=tmp_path / "s.sqlite", executor="ray",
                         retries=0).skipped == 1

    def test_interrupt_cancels_and_the_run_stays_resumable(self, ray_instance: Any,
                                                           tmp_path: Path) -> None:
        """interrupt() on Ray turns a running task into an 'interrupted' outcome."""
        ckpt = tmp_path / "a.pt"
        executor = make_executor("ray", workers=1)
        try:
            executor.submit(item("a", "fake_train", epochs=100000, ckpt=str(ckpt)))
            for _ in range(120):  # until it is running (Ray starts its worker lazily)
                if ckpt.exists():
                    break
                assert executor.wait(0.25) == []
            executor.interrupt()
            outcome = collect(executor, 1)["a"]
            assert outcome["status"] == "interrupted"
        finally:
            executor.shutdown()
        assert ray_instance.is_initialized()  # an instance it did not start is left running
