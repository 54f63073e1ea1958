"""The sweep engine on the local executor, with the seeded test tasks of ``sweep_tasks``."""

from __future__ import annotations

from pathlib import Path

import pytest

import sweep_tasks
from dropoutlab.config import RunConfig, with_changes
from dropoutlab.errors import DropoutlabError
from dropoutlab.sweeps import Job, Store, SweepOptions, SweepSummary, run_sweep

FAKE = "sweep_tasks:fake_train"


def grid(n: int, *, task: str = FAKE, experiment: str = "exp", epochs: int = 3) -> list[Job]:
    return [Job(experiment, f"seed={s}", RunConfig(epochs=epochs, seed=s), task)
            for s in range(n)]


def events(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in log.read_text().splitlines()]


@pytest.fixture
def task_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every start/resume/done of a test task is appended here (workers inherit the env)."""
    path = tmp_path / "task.log"
    monkeypatch.setenv("FAKE_TASK_LOG", str(path))
    monkeypatch.setenv("FAKE_TASK_SLEEP", "0.01")
    return path


def reference(config: RunConfig) -> dict:
    """The task's result run uninterrupted in this process."""
    return sweep_tasks.fake_train(config)


class TestRunSweep:
    def test_runs_every_job_then_skips_them(self, tmp_path: Path, task_log: Path) -> None:
        """A first sweep runs each job once; the same sweep again runs nothing."""
        store = tmp_path / "runs.sqlite"
        jobs = grid(4)
        first = run_sweep(jobs, SweepOptions(store=store, workers=2))
        assert (first.done, first.skipped, first.ok, first.exit_code) == (4, 0, True, 0)
        second = run_sweep(jobs, SweepOptions(store=store, workers=2))
        assert (second.done, second.skipped, second.ok) == (0, 4, True)
        assert sorted(s for e, s in events(task_log) if e == "start") == [0, 1, 2, 3]
        with Store(store) as db:
            records = db.records(experiment="exp")
        assert {r.status for r in records} == {"done"} and {r.attempts for r in records} == {1}
        for record in records:  # the stored numbers are the task's, seed for seed
            expected = reference(RunConfig.from_dict(record.config))
            assert record.metrics == expected["metrics"]
            assert record.history == expected["history"]

    def test_failures_are_retried_reported_and_do_not_stop_the_sweep(
            self, tmp_path: Path, task_log: Path) -> None:
        """A flaky run succeeds on retry; a broken one is reported after 1 + retries tries."""
        jobs = [*grid(2), Job("exp", "broken", RunConfig(seed=10), "sweep_tasks:fake_fail"),
                Job("exp", "flaky", RunConfig(epochs=2, seed=11), "sweep_tasks:fake_flaky")]
        summary = run_sweep(jobs, SweepOptions(store=tmp_path / "runs.sqlite", workers=2,
                                               retries=2))
        assert (summary.done, summary.failed, summary.exit_code) == (3, 1, 1)
        [failure] = summary.failures
        assert failure.name == "broken" and failure.attempts == 3
        assert "RuntimeError: boom for seed 10" in failure.message
        assert any("failed" in line for line in summary.lines())
        with Store(tmp_path / "runs.sqlite") as db:
            [failed] = db.records(status="failed")
        assert failed.error is not None and "Traceback" in failed.error
        assert failed.attempts == 3

    def test_failed_run_is_retried_by_the_next_sweep(self, tmp_path: Path,
                                                     task_log: Path) -> None:
        """With retries=0 a failure is final for this sweep; the next sweep tries it again."""
        jobs = [Job("exp", "broken", RunConfig(seed=10), "sweep_tasks:fake_fail")]
        for _ in range(2):
            summary = run_sweep(jobs, SweepOptions(store=tmp_path / "runs.sqlite", workers=1,
                                                   retries=0))
            assert summary.failed == 1
        assert [e for e, _ in events(task_log)] == ["start", "start"]

    def test_diverged_is_final(self, tmp_path: Path, task_log: Path) -> None:
        """A diverged run is stored as such and never run again."""
        config = with_changes(RunConfig(epochs=2), {"optim.lr": 20.0})
        jobs = [Job("exp", "too fast", config, FAKE)]
        assert run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", workers=1)).diverged == 1
        assert run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", workers=1)).skipped == 1
        assert len(events(task_log)) == 2  # one start, one done

    def test_one_config_in_two_experiments_runs_once(self, tmp_path: Path,
                                                     task_log: Path) -> None:
        """The same config+task from two experiments is one run, found under both."""
        jobs = grid(2, experiment="a") + grid(2, experiment="b")
        summary = run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", workers=2))
        assert (summary.total, summary.done) == (2, 2)
        with Store(tmp_path / "s.sqlite") as db:
            assert len(db.records(experiment="a")) == len(db.records(experiment="b")) == 2
        assert len([e for e, _ in events(task_log) if e == "start"]) == 2

    def test_run_left_running_by_a_dead_sweep_resumes_from_its_checkpoint(
            self, tmp_path: Path, task_log: Path) -> None:
        """A run a dead process held resumes from its checkpoint and ends as if uninterrupted."""
        store, ckpt = tmp_path / "s.sqlite", tmp_path / "ckpt"
        config = RunConfig(epochs=5, seed=3)
        job = Job("exp", "cut short", config, FAKE)
        with Store(store) as db:
            db.register([job])
            assert db.claim(job.key) is not None
            db._db.execute("UPDATE runs SET worker = 'gone-host:1', heartbeat = 0")
        ckpt.mkdir()  # two epochs done before the "crash": the checkpoint a run leaves
        sweep_tasks.fake_train(with_changes(config, {"epochs": 2}),
                               checkpoint_path=ckpt / f"{job.key}.pt")
        summary = run_sweep([job], SweepOptions(store=store, workers=1, checkpoint_dir=ckpt))
        assert summary.done == 1
        assert "resumed" in [e for e, _ in events(task_log)]
        with Store(store) as db:
            [record] = db.records()
        assert record.attempts == 2
        assert record.history == reference(config)["history"]
        assert not (ckpt / f"{job.key}.pt").exists()  # a finished run's checkpoint is removed


class TestArguments:
    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"executor": "slurm"}, "`executor` must be one of"),
        ({"workers": 0}, "`workers` must be an integer >= 1"),
        ({"threads_per_run": 0}, "`threads_per_run` must be an integer >= 1"),
        ({"retries": -1}, "`retries` must be an integer >= 0"),
        ({"workers": 64, "threads_per_run": 64}, "must not exceed the"),
        ({"ray_address": "auto"}, "`ray_address` is only used with executor='ray'"),
    ])
    def test_bad_arguments_name_themselves(self, tmp_path: Path, kwargs: dict,
                                           message: str) -> None:
        """Each invalid argument raises a message naming it and the value received."""
        with pytest.raises(DropoutlabError, match=message):
            run_sweep(grid(1), SweepOptions(store=tmp_path / "s.sqlite", **kwargs))

    def test_unknown_task_fails_before_anything_runs(self, tmp_path: Path) -> None:
        """A task path that does not import is refused up front, before the store is made."""
        with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
            run_sweep(grid(1, task="no_such_module:train"),
                      SweepOptions(store=tmp_path / "s.sqlite"))
        assert not (tmp_path / "s.sqlite").exists()

    def test_job_validates_its_fields(self) -> None:
        """Job rejects a task without ':' and a config that is not a RunConfig."""
        with pytest.raises(ValueError, match="`task` must look like 'module:function'"):
            Job("exp", "x", RunConfig(), "dropoutlab.train.run_task")
        with pytest.raises(TypeError, match="`config` must be a RunConfig"):
            Job("exp", "x", {"seed": 1}, FAKE)  # type: ignore[arg-type]


def test_summary_exit_codes() -> None:
    """ok → 0, failures → 1, stopped by Ctrl-C → 130."""
    assert SweepSummary(Path("s")).exit_code == 0
    assert SweepSummary(Path("s"), failed=1).exit_code == 1
    assert SweepSummary(Path("s"), interrupted=2, stopped=True).exit_code == 130
