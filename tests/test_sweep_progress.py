"""Sweep progress: the epoch hook in train(), and the counts the sweep display shows."""

from __future__ import annotations

from pathlib import Path

from dropoutlab import train as train_module
from dropoutlab.config import RunConfig, with_changes


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
