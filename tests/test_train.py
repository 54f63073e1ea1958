"""Tests for dropoutlab.train: smoke runs, reproducibility, resume, signals, divergence."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from dropoutlab import recipe
from dropoutlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dropoutlab.config import RunConfig, with_changes
from dropoutlab.presets import smoke
from dropoutlab.results import generalization_gap
from dropoutlab.train import RunResult, diagnose, make_generators, run_task, train

HISTORY_KEYS = {"epoch", "train_loss", "train_error", "val_loss", "val_error", "test_error",
                "lr", "momentum", "seconds"}


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny nets run fastest on one thread (and a busy 2-core machine punishes two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**changes: object) -> RunConfig:
    """A digits run of well under a second per epoch."""
    base = with_changes(smoke(), {"model.hidden": (32,), "epochs": 3})
    return with_changes(base, changes)


def _without_seconds(history: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


class TestTrain:
    def test_smoke_run_learns(self) -> None:
        """Three epochs on digits finish, fill the history and beat chance (90% error)."""
        result = train(tiny(), progress=False)
        assert result.status == "done" and result.epochs == 3
        assert len(result.history) == 3
        assert set(result.history[0]) >= HISTORY_KEYS
        assert result.test_error is not None and result.test_error < 50.0
        assert result.val_error is not None and result.train_error is not None
        assert result.best_epoch in (1, 2, 3)
        assert result.model is None

    def test_same_seed_same_result(self) -> None:
        """Same seed ⇒ identical history and metrics (timings aside); another seed differs."""
        a = train(tiny(seed=7), progress=False, keep_model=True)
        b = train(tiny(seed=7), progress=False, keep_model=True)
        c = train(tiny(seed=8), progress=False)
        assert _without_seconds(a.history) == _without_seconds(b.history)
        assert a.test_error == b.test_error and a.train_error == b.train_error
        assert a.model is not None and b.model is not None
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(p, q)
        assert _without_seconds(a.history) != _without_seconds(c.history)

    def test_max_norm_holds_at_the_end(self) -> None:
        """With max-norm c every unit's incoming weight norm ends ≤ c (history agrees)."""
        result = train(tiny(**{"optim.max_norm": 0.5, "optim.lr": 2.0}), progress=False,
                       keep_model=True)
        assert result.model is not None
        for module in result.model.modules():
            if isinstance(module, torch.nn.Linear):
                assert float(module.weight.detach().norm(dim=1).max()) <= 0.5 + 1e-5
        assert all(row["weight_norm_max"] <= 0.5 + 1e-5 for row in result.history)  # type: ignore[operator]

    def test_divergence_detected(self) -> None:
        """An absurd learning rate stops the run as 'diverged' in epoch 1, errors None."""
        config = tiny(**{"optim.lr": 1e30, "optim.max_norm": None,
                         "optim.damped_momentum": False})
        result = train(config, progress=False)
        assert result.status == "diverged" and result.diverged_epoch == 1
        assert result.test_error is None and result.epochs == 0

    def test_merge_validation_has_no_val_metrics(self) -> None:
        """Training on train+validation leaves val_error and best_epoch None."""
        result = train(tiny(**{"data.merge_validation": True, "epochs": 1}), progress=False)
        assert result.val_error is None and result.best_epoch is None
        assert result.history[0]["val_loss"] is None
        assert result.generalization_gap is not None  # test error minus train error

    def test_early_stopping(self) -> None:
        """With a learning rate too small to change anything, patience 2 stops after 3 epochs."""
        config = tiny(**{"optim.lr": 1e-9, "epochs": 10, "early_stopping": 2})
        result = train(config, progress=False)
        assert result.status == "done" and result.epochs == 3

    def test_progress_bar_runs(self, capsys: pytest.CaptureFixture[str]) -> None:
        """progress=True draws a bar on stderr (not stdout) and changes no number."""
        with_bar = train(tiny(epochs=1), progress=True)
        captured = capsys.readouterr()
        assert captured.out == "" and "epoch 1/1" in captured.err
        plain = train(tiny(epochs=1), progress=False)
        assert _without_seconds(with_bar.history) == _without_seconds(plain.history)

    def test_eval_test_every(self) -> None:
        """Test error is evaluated every k epochs and always in the last one."""
        result = train(tiny(epochs=3, eval_test_every=2), progress=False)
        assert [row["test_error"] is None for row in result.history] == [True, False, False]

    @pytest.mark.parametrize("changes", [
        {"model.kind": "autoencoder", "model.hidden": (16,)},
        {"model.kind": "convnet", "model.conv_channels": (4, 4, 4), "model.conv_fc": (8, 8)},
        {"optim.kl_sparsity": 0.01, "optim.l2": 1e-4, "optim.l1": 1e-5},
        {"model.dropout": "gaussian", "optim.momentum_ramp": "exponential",
         "optim.lr_schedule": "inverse_t", "optim.lr_decay": 100.0},
    ])
    def test_other_models_and_penalties(self, changes: dict[str, object]) -> None:
        """The autoencoder, conv net, penalties and other schedules train to finite numbers."""
        result = train(tiny(epochs=1, **changes), progress=False)
        assert result.status == "done"
        assert result.test_error is not None and math.isfinite(result.test_error)
        if changes.get("model.kind") == "autoencoder":
            assert result.test_error < 1.0  # mean squared error per pixel, not a percentage


class TestResume:
    def _interrupt_at(self, monkeypatch: pytest.MonkeyPatch, update: int, signum: int) -> None:
        """Send ourselves ``signum`` right after optimiser update number ``update``."""
        original = recipe.MomentumSGD.step
        calls = {"n": 0}

        def step(self: recipe.MomentumSGD, lr: float, m: float, l2: float = 0.0) -> None:
            original(self, lr, m, l2)
            calls["n"] += 1
            if calls["n"] == update:
                os.kill(os.getpid(), signum)

        monkeypatch.setattr(recipe.MomentumSGD, "step", step)

    # Update 35 is the end of epoch 1 (35 batches of 32); update 50 is mid-epoch 2.
    # bf16 trains on bfloat16 copies of the weights, rebuilt from the checkpoint's float32 ones.
    @pytest.mark.parametrize("update, signum, precision", [
        (35, signal.SIGINT, "fp32"), (50, signal.SIGTERM, "fp32"), (50, signal.SIGTERM, "bf16")])
    def test_resume_equals_uninterrupted(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         update: int, signum: int, precision: str) -> None:
        """A signal writes a checkpoint and raises; resuming ends bitwise equal to a clean run."""
        config = tiny(seed=3, precision=precision)
        clean = train(config, progress=False, keep_model=True)
        path = tmp_path / "ckpt.pt"
        with monkeypatch.context() as patch:
            self._interrupt_at(patch, update, signum)
            with pytest.raises(KeyboardInterrupt):
                train(config, checkpoint_path=path, progress=False)
        state = load_checkpoint(path)
        assert state["step"] == update and state["status"] == "running"
        resumed = train(config, checkpoint_path=path, resume=True, progress=False,
                        keep_model=True)
        assert _without_seconds(resumed.history) == _without_seconds(clean.history)
        assert resumed.test_error == clean.test_error
        assert resumed.model is not None and clean.model is not None
        for p, q in zip(resumed.model.parameters(), clean.model.parameters(), strict=True):
            assert torch.equal(p, q)

    def test_resume_without_checkpoint_starts_afresh(self, tmp_path: Path) -> None:
        """resume=True with no checkpoint yet just trains (the sweep engine always passes it)."""
        result = train(tiny(epochs=1), checkpoint_path=tmp_path / "c.pt", resume=True,
                       progress=False)
        assert result.status == "done" and (tmp_path / "c.pt").is_file()

    def test_finished_checkpoint_returns_result(self, tmp_path: Path) -> None:
        """Resuming a finished run returns the same result without training again."""
        path = tmp_path / "c.pt"
        first = train(tiny(epochs=1), checkpoint_path=path, progress=False)
        again = train(tiny(epochs=1), checkpoint_path=path, resume=True, progress=False)
        assert again.history == first.history and again.test_error == first.test_error

    def test_checkpoint_of_other_config_rejected(self, tmp_path: Path) -> None:
        """A checkpoint written for another config is refused with a clear message."""
        path = tmp_path / "c.pt"
        train(tiny(epochs=1), checkpoint_path=path, progress=False)
        with pytest.raises(CheckpointError, match=r"belongs to another config"):
            train(tiny(epochs=1, seed=99), checkpoint_path=path, resume=True, progress=False)


class TestCheckpointFile:
    def test_atomic_write_and_weights_only_load(self, tmp_path: Path) -> None:
        """save leaves no temp file; load (weights_only) returns the tensors and numbers."""
        path = tmp_path / "sub" / "c.pt"
        save_checkpoint(path, {"w": torch.arange(3), "epoch": 2, "history": [{"a": None}]})
        assert [p.name for p in path.parent.iterdir()] == ["c.pt"]
        state = load_checkpoint(path)
        assert torch.equal(state["w"], torch.arange(3)) and state["epoch"] == 2

    def test_corrupt_and_foreign_files(self, tmp_path: Path) -> None:
        """Garbage or a non-dropoutlab checkpoint raises CheckpointError."""
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"garbage")
        with pytest.raises(CheckpointError, match=r"unreadable"):
            load_checkpoint(bad)
        other = tmp_path / "other.pt"
        torch.save({"weights": torch.zeros(1)}, other)
        with pytest.raises(CheckpointError, match=r"not a dropoutlab checkpoint"):
            load_checkpoint(other)
        with pytest.raises(CheckpointError, match=r"does not exist"):
            load_checkpoint(tmp_path / "missing.pt")


class TestResultAndTask:
    def test_result_round_trip_json(self) -> None:
        """to_dict is JSON-able and from_dict rebuilds an equal result."""
        result = train(tiny(epochs=1), progress=False)
        text = json.dumps(result.to_dict())
        assert RunResult.from_dict(json.loads(text)) == result

    def test_run_task_contract(self) -> None:
        """run_task returns status, the nine metrics and the history, all JSON-able."""
        out = run_task(tiny(epochs=1))
        json.dumps(out)
        assert out["status"] == "done"
        assert set(out["metrics"]) == {"test_error", "val_error", "train_error", "best_epoch",
                                       "overfitting_onset", "generalization_gap",
                                       "diverged_epoch", "epochs", "seconds"}
        assert len(out["history"]) == 1

    def test_generators_independent_and_seeded(self) -> None:
        """The three generators differ from each other and repeat for the same seed."""
        a, b = make_generators(5), make_generators(5)
        draws = {name: torch.rand(3, generator=g).tolist() for name, g in a.items()}
        assert draws == {name: torch.rand(3, generator=g).tolist() for name, g in b.items()}
        assert len({tuple(v) for v in draws.values()}) == 3


def _history(val_losses: list[float]) -> list[dict[str, float | int | None]]:
    return [{"epoch": i + 1, "val_loss": v, "val_error": v * 10} for i, v in enumerate(val_losses)]


class TestDiagnose:
    def test_onset_after_minimum(self) -> None:
        """Validation loss down to epoch 3 then up for good → onset at epoch 4."""
        result = diagnose(_history([1.0, 0.8, 0.7, 0.75, 0.8, 0.9, 1.0]))
        assert result == {"best_epoch": 3, "overfitting_onset": 4}

    def test_no_onset_when_still_falling(self) -> None:
        """A validation loss that keeps falling has no onset."""
        assert diagnose(_history([1.0, 0.8, 0.7, 0.6]))["overfitting_onset"] is None

    def test_no_onset_for_noise(self) -> None:
        """A wobble within 1% of the minimum is not overfitting."""
        assert diagnose(_history([1.0, 0.7, 0.702, 0.701, 0.703]))["overfitting_onset"] is None

    def test_no_onset_when_loss_comes_back(self) -> None:
        """A rise that falls back to within 1% of the minimum is not 'for good'."""
        assert diagnose(_history([1.0, 0.5, 0.9, 0.502, 0.9]))["overfitting_onset"] is None

    def test_no_onset_for_a_last_epoch_blip(self) -> None:
        """One high epoch at the very end is not enough evidence."""
        assert diagnose(_history([1.0, 0.8, 0.7, 0.9]))["overfitting_onset"] is None

    def test_no_validation(self) -> None:
        """Without validation numbers both are None."""
        rows = [{"epoch": 1, "val_loss": None, "val_error": None}]
        assert diagnose(rows) == {"best_epoch": None, "overfitting_onset": None}

    def test_generalization_gap_uses_validation_else_test(self) -> None:
        """Gap = validation error − train error; test error stands in without validation."""
        assert generalization_gap(3.0, 9.0, 1.0) == 2.0
        assert generalization_gap(None, 9.0, 1.0) == 8.0
        assert generalization_gap(None, None, 1.0) is None
        assert generalization_gap(3.0, 9.0, None) is None

    def test_results_are_reexported_from_train(self) -> None:
        """``dropoutlab.train`` keeps exporting the very objects that live in results."""
        from dropoutlab import results
        from dropoutlab import train as train_module

        assert train_module.RunResult is results.RunResult
        assert train_module.diagnose is results.diagnose
