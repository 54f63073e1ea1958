"""Tests for ``dropoutlab train``: outputs, flags, config files, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from dropoutlab.cli import main
from dropoutlab.config import load_config

FAST = ["--preset", "smoke", "--epochs", "2", "--arch", "64-16-10", "--threads", "1",
        "--no-progress"]


@pytest.fixture(autouse=True)
def _restore_threads() -> object:
    """--threads changes torch's global thread count; put it back after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_outputs_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run writes config.toml, result.json, history.csv, the PNG, and prints a table."""
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out), "--drop-hidden", "0.3"]) == 0
    config = load_config(out / "config.toml")
    assert config.model.hidden == (16,) and config.model.drop_hidden == 0.3
    result = json.loads((out / "result.json").read_text())
    for key in ("status", "test_error", "val_error", "best_epoch", "overfitting_onset",
                "epochs", "seconds", "history"):
        assert key in result
    assert result["status"] == "done" and len(result["history"]) == 2
    with (out / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "val_loss" in rows[0]
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "test error %" in printed and "overfitting onset" in printed


def test_flags_and_set_override(tmp_path: Path) -> None:
    """Flags override the preset and --set overrides the flags, typed."""
    out = tmp_path / "run"
    argv = ["train", *FAST, "--out", str(out), "--lr", "0.2", "--max-norm", "none",
            "--dropout-kind", "gaussian", "--set", "optim.lr=0.05", "--set", "epochs=1"]
    assert main(argv) == 0
    config = load_config(out / "config.toml")
    assert config.optim.lr == 0.05 and config.optim.max_norm is None
    assert config.model.dropout == "gaussian" and config.epochs == 1


def test_config_file(tmp_path: Path) -> None:
    """A TOML config file is read; flags still override it."""
    path = tmp_path / "run.toml"
    path.write_text('epochs = 1\n[data]\ndataset = "digits"\n[model]\nhidden = [8]\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--seed", "4", "--threads", "1",
                 "--no-progress", "--out", str(out)]) == 0
    config = load_config(out / "config.toml")
    assert config.model.hidden == (8,) and config.seed == 4


def test_resume_flag(tmp_path: Path) -> None:
    """--resume on a finished run reproduces the same result.json numbers."""
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    first = json.loads((out / "result.json").read_text())
    assert main(["train", *FAST, "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "result.json").read_text())
    assert again["test_error"] == first["test_error"] and again["history"] == first["history"]


@pytest.mark.parametrize("argv, message", [
    (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'; valid keys: data.dataset"),
    (["--drop-hidden", "1.5"], "`model.drop_hidden` must be in"),
    (["--arch", "784-100-10"], "must start with 64 and end with 10 for digits"),
    (["--arch", "64-x-10"], "`--arch` must look like 784-1024-1024-10"),
    (["--preset", "nope"], "unknown preset 'nope'; valid presets:"),
    (["--dataset", "imagenet"], "`data.dataset` must be one of"),
    (["--set", "epochs=two"], "`epochs` must be an integer"),
    (["--threads", "0"], "argument --threads: expected an integer in [1, 4096], got '0'"),
])
def test_bad_values_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         argv: list[str], message: str) -> None:
    """Bad values exit with status 2 and one line on stderr, no traceback."""
    try:  # argparse's own checks exit at parse time
        status = main(["train", "--preset", "smoke", "--out", str(tmp_path / "o"), *argv])
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_data_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A data set without its files is one line naming the file, exit 2."""
    status = main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out",
                   str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "no cifar10 files" in err and len(err.strip().splitlines()) == 1
