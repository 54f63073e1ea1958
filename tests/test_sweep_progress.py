"""Sweep progress: the epoch hook in train(), and the counts the sweep display shows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dropoutlab import train as train_module
from dropoutlab.config import RunConfig, with_changes
from dropoutlab.sweeps import Job, SweepOptions, run_sweep
from dropoutlab.sweeps.progress import SweepProgress, format_duration


def digits_config(epochs: int) -> RunConfig:
    return with_changes(RunConfig(), {"data.dataset": "digits", "model.hidden": (16,),
                                      "epochs": epochs, "optim.batch_size": 64})


class TestEpochHook:
    def test_train_reports_start_and_every_epoch(self) -> None:
        """The listener hears (0, E) at the start, then (k, E) after each epoch k."""
        heard: list[tuple[int, int]] = []
        previous = train_module.set_epoch_listener(lambda done, total: heard.append((done, total)))
        try:
            train_module.train(digits_config(3), progress=False)
        finally:
            train_module.set_epoch_listener(previous)
        assert heard == [(0, 3), (1, 3), (2, 3), (3, 3)]

    def test_a_failing_listener_does_not_fail_the_run(self) -> None:
        """Progress is cosmetic: a listener that raises leaves training untouched."""
        def broken(done: int, total: int) -> None:
            raise RuntimeError("display gone")

        previous = train_module.set_epoch_listener(broken)
        try:
            result = train_module.train(digits_config(2), progress=False)
        finally:
            train_module.set_epoch_listener(previous)
        assert result.status == "done" and result.epochs == 2

    def test_resume_reports_the_epochs_already_done(self, tmp_path: Path) -> None:
        """A run resumed from a checkpoint after 2 of 3 epochs reports (2, 3) first."""
        ckpt = tmp_path / "run.pt"
        train_module.train(digits_config(2), checkpoint_path=ckpt, progress=False)
        state = train_module.load_checkpoint(ckpt)
        state["status"] = "running"  # as a checkpoint written mid-run says
        state["config"] = digits_config(3).to_dict()
        state["config_hash"] = train_module.config_hash(digits_config(3))
        train_module.save_checkpoint(ckpt, state)
        heard: list[tuple[int, int]] = []
        previous = train_module.set_epoch_listener(lambda done, total: heard.append((done, total)))
        try:
            train_module.train(digits_config(3), checkpoint_path=ckpt, resume=True,
                               progress=False)
        finally:
            train_module.set_epoch_listener(previous)
        assert heard == [(2, 3), (3, 3)]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestSweepProgress:
    def test_counts_epochs_across_runs_and_finished_runs(self) -> None:
        """Epochs add up over runs; a finished run counts in full even if it stopped early."""
        shown = SweepProgress({"a": 10, "b": 20}, enabled=False, clock=FakeClock())
        shown.epoch("a", 0, 10)
        shown.epoch("a", 4, 10)
        shown.epoch("b", 0, 20)
        shown.epoch("b", 6, 20)
        assert (shown.epochs_done, shown.epochs_total, shown.runs_finished) == (10, 30, 0)
        shown.finished("a")  # early stopping at epoch 4: the run is over
        assert (shown.epochs_done, shown.runs_finished) == (16, 1)
        assert shown.text().startswith("runs 1/2 · epochs 16/30 · ETA ")

    def test_eta_uses_epochs_trained_in_this_sweep(self) -> None:
        """A resumed run's earlier epochs set a baseline; the rate counts only new ones, from
        the first count heard (the workers' start-up is not in the rate)."""
        clock = FakeClock()
        shown = SweepProgress({"a": 100}, enabled=False, clock=clock)
        assert shown.eta_seconds() is None and "ETA ?" in shown.text()
        clock.now += 5.0  # workers starting
        shown.epoch("a", 40, 100)  # resumed at 40: not trained now
        clock.now += 10.0
        shown.epoch("a", 50, 100)  # 10 epochs in 10 s, 50 left
        assert shown.eta_seconds() == pytest.approx(50.0)

    def test_eta_falls_back_to_finished_runs(self) -> None:
        """A task that never reports epochs: the ETA comes from finished runs."""
        clock = FakeClock()
        shown = SweepProgress({"a": 5, "b": 5, "c": 5, "d": 5}, enabled=False, clock=clock)
        clock.now += 30.0
        shown.finished("a")
        assert shown.eta_seconds() == pytest.approx(90.0)

    def test_plain_lines_each_finished_run_and_at_most_every_30_s(
            self, caplog: pytest.LogCaptureFixture) -> None:
        """Not a terminal: a line per finished run, and an epoch summary at most every 30 s."""
        clock = FakeClock()
        shown = SweepProgress({"a": 10, "b": 10}, enabled=False, clock=clock)
        with caplog.at_level(logging.INFO, logger="dropoutlab.sweeps"):
            for epoch in range(1, 6):
                clock.now += 5.0
                shown.epoch("a", epoch, 10)  # 25 s: no summary yet
            assert caplog.messages == []
            clock.now += 5.0
            shown.epoch("a", 6, 10)
            clock.now += 1.0
            shown.tick()
            assert len(caplog.messages) == 1
            assert caplog.messages[0].startswith("sweep: runs 0/2 · epochs 6/20 · ETA ")
            shown.finished("b", "done     [e] b (3.0 s)")
            assert caplog.messages[1].startswith("done     [e] b (3.0 s) · runs 1/2 · epochs "
                                                 "16/20")

    def test_run_sweep_logs_progress_lines(self, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
        """run_sweep without a terminal logs each finished run with the running counts."""
        jobs = [Job("e", f"seed={s}", RunConfig(epochs=3, seed=s), "sweep_tasks:fake_train")
                for s in range(2)]
        with caplog.at_level(logging.INFO, logger="dropoutlab.sweeps"):
            summary = run_sweep(jobs, SweepOptions(store=tmp_path / "s.sqlite", workers=2,
                                                   progress=False))
        assert summary.done == 2
        finished = [m for m in caplog.messages if m.startswith("done ")]
        assert len(finished) == 2 and finished[-1].endswith(" · runs 2/2 · epochs 6/6 · ETA 0s")

    def test_rich_bar_runs_on_a_terminal(self) -> None:
        """enabled=True draws the rich bar (to a real console) without error."""
        with SweepProgress({"a": 3}, enabled=True) as shown:
            shown.epoch("a", 0, 3)
            shown.epoch("a", 3, 3)
            shown.finished("a", "done     [e] a (0.1 s)")
        assert shown.epochs_done == 3


def test_format_duration() -> None:
    """Seconds, minutes and hours read as people write them."""
    assert [format_duration(s) for s in (9, 75, 3700)] == ["9s", "1m15s", "1h01m"]
