"""dropoutlab tune: the search, its time planning, its rules, and end-to-end runs on digits,
a CSV and an NPZ file (seconds each)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dropoutlab.cli import main
from dropoutlab.config import RunConfig, load_config, with_changes
from dropoutlab.errors import ConfigError
from dropoutlab.experiments.common import stat_of
from dropoutlab.sweeps import Store, SweepOptions
from dropoutlab.tune import (
    Candidate,
    RungResult,
    TuneResult,
    TuneSpace,
    _describe,
    _plan,
    _Speed,
    parse_time,
    tune,
    tune_model,
)

# A small grid so each end-to-end search is a few dozen sub-second runs.
SMALL = ["--retain-hidden", "0.5,0.8", "--retain-input", "0.8,1.0", "--max-norms", "3",
         "--seeds", "2", "--no-progress", "--threads-per-run", "1"]


def _gaussian_npz(path: Path, n_train: int, *, d: int = 10, signal: float = 0.5,
                  seed: int = 0) -> Path:
    """Two Gaussian classes, means ±signal in every feature; 1000 validation and test rows."""
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return (signal * (2 * y[:, None] - 1) + rng.normal(size=(n, d))).astype(np.float32), y

    x, y = draw(n_train)
    xv, yv = draw(1000)
    xt, yt = draw(1000)
    np.savez(path, x=x, y=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    return path


class TestTime:
    @pytest.mark.parametrize(("text", "seconds"), [("20m", 1200), ("90s", 90), ("1h30m", 5400),
                                                   ("45", 45), ("0.5m", 30), (12, 12)])
    def test_durations(self, text: str | int, seconds: float) -> None:
        assert parse_time(text) == seconds

    @pytest.mark.parametrize("text", ["", "abc", "0m", "-5", "20x"])
    def test_bad_durations_name_the_flag(self, text: str) -> None:
        with pytest.raises(ConfigError, match="`--time`"):
            parse_time(text)

    def test_the_plan_fits_the_budget_and_grows_with_it(self) -> None:
        """E is the largest epoch count whose rungs fit 85 % of the time left."""
        space = TuneSpace()

        def factors(sp: TuneSpace) -> tuple[list[float], list[float]]:
            grid = len(sp.retain_hidden) * len(sp.retain_input) * len(sp.max_norms)
            return [1.0, 1.0], [1.0] * grid

        speed = _Speed(per_epoch=2.0, overhead=1.0)
        short = _plan(speed, 2, 600, space, factors, 200)
        long = _plan(speed, 2, 3600, space, factors, 200)
        assert short.seconds <= 0.85 * 600 and long.seconds <= 0.85 * 3600
        assert 1 <= short.epochs < long.epochs
        capped = _plan(speed, 2, 10**6, space, factors, 30)
        assert capped.epochs == 30
        tiny = _plan(speed, 2, 60, space, factors, 200)  # not even one epoch of the full grid
        assert len(tiny.space.retain_hidden) < len(space.retain_hidden) or tiny.space.seeds < 3

    def test_space_is_checked(self) -> None:
        with pytest.raises(ConfigError, match="`retain_hidden` must be retentions in"):
            TuneSpace(retain_hidden=(1.0,))
        with pytest.raises(ConfigError, match="`lr_raise` must be"):
            TuneSpace(lr_raise=0.5)


class TestRules:
    """The choice and the diagnosis from planted numbers (no training)."""

    def _result(self, base_val: list[float], base_train: list[float],
                drop_val: list[float]) -> tuple[TuneResult, Candidate]:
        baseline = Candidate(1.0, 1.0, None, 0.1, (64,))
        dropout = Candidate(0.5, 0.8, 3.0, 0.3, (64,))
        final = RungResult("final", 10, (0, 1, 2))
        final.val = {baseline: stat_of(base_val), dropout: stat_of(drop_val)}
        final.train = {baseline: stat_of(base_train), dropout: stat_of([3.0, 3.1, 3.2])}
        rung0 = RungResult("rung 0", 1, (0,), val={baseline: stat_of([30.0]),
                                                   dropout: stat_of([31.0])})
        result = TuneResult(base=RunConfig(), space=TuneSpace(), budget_seconds=60,
                            rungs=[rung0, final], baseline=baseline, recommended=dropout)
        _describe(result, rung0, final, final, {}, {}, [dropout], [dropout], 60, 30, 2)
        return result, dropout

    def test_overfitting_and_dropout_wins_beyond_noise(self) -> None:
        result, _ = self._result([20.0, 20.5, 19.5], [0.0, 0.1, 0.0], [15.0, 15.4, 14.6])
        assert result.verdict == "better"
        assert result.diagnosis.startswith("overfitting")
        assert "improvement +5.00 ± " in result.diagnosis and "2·SE" in result.diagnosis

    def test_underfitting_when_training_error_is_as_high_as_validation(self) -> None:
        result, _ = self._result([20.0, 20.5, 19.5], [19.8, 20.1, 19.6], [21.0, 21.5, 20.5])
        assert result.verdict == "worse" and result.diagnosis.startswith("underfitting")

    def test_within_noise_means_not_needed(self) -> None:
        result, _ = self._result([20.0, 21.0, 19.0], [2.0, 2.0, 2.0], [19.8, 20.9, 19.1])
        assert result.verdict == "within noise"
        assert result.diagnosis.startswith("dropout not needed at this data size")


def test_tune_on_digits_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI runs the whole search, writes the report and a TOML that `train` takes as is;
    no search run stores a test error; the same command again trains nothing."""
    store = tmp_path / "runs.sqlite"
    argv = ["tune", "--dataset", "digits", "--arch", "64-32-10", "--time", "15s",
            "--epochs", "6", "--store", str(store), "--out", str(tmp_path / "report"), *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "diagnosis:" in out and "recommended:" in out and "measured once" in out
    report = tmp_path / "report"
    for name in ("index.html", "recommended.toml", "tune/retention_curve.png",
                 "tune/retention_curve.svg", "tune/learning_curves.png", "tune/final.md",
                 "tune/final.csv", "tune/candidates.md", "tune/test.md"):
        assert (report / name).is_file(), name
    html = (report / "index.html").read_text()
    assert "Retention curve" in html or "retention" in html
    with Store.open_readonly(store) as db:
        records = db.records(experiment="tune")
    assert records and all("test_error" not in (r.metrics or {}) for r in records)
    assert all("test_error" not in row for r in records for row in r.history)
    count = len(records)
    config = load_config(report / "recommended.toml")
    assert config.data.dataset == "digits" and config.model.hidden == (32,)
    assert main(["train", "--config", str(report / "recommended.toml"), "--out",
                 str(tmp_path / "train"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(argv) == 0  # resume: every run is stored, the plan is the same
    with Store.open_readonly(store) as db:
        assert len(db.records(experiment="tune")) == count


def test_tune_on_a_csv_file_finds_overfitting_on_a_tiny_training_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """60 rows (48 to train, a stratified 12 held out) of a 30-feature problem whose best
    possible error is about 20 %, and a 128-unit net: without dropout the net fits its 48
    training rows perfectly and validation error is far above that."""
    npz = _gaussian_npz(tmp_path / "g.npz", 60, d=30, signal=0.15)
    data = np.load(npz)
    rows, labels = data["x"], data["y"]
    header = ",".join(f"f{i}" for i in range(rows.shape[1])) + ",label\n"
    body = "".join(",".join(f"{v:.5f}" for v in row) + f",{'ab'[y]}\n"
                   for row, y in zip(rows, labels, strict=True))
    (tmp_path / "g.csv").write_text(header + body)
    argv = ["tune", "--data", str(tmp_path / "g.csv"), "--target", "label", "--arch",
            "30-128-2", "--time", "15s", "--epochs", "30", "--set", "optim.batch_size=10",
            "--store", str(tmp_path / "runs.sqlite"), "--out", str(tmp_path / "r"), *SMALL]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "validation: a stratified 20 %" in captured.err  # said once, before the search
    final = (tmp_path / "r" / "tune" / "final.csv").read_text().splitlines()
    baseline = next(line for line in final if line.startswith("no dropout"))
    train_error = float(baseline.split(",")[2].split(" ")[0])
    val_error = float(baseline.split(",")[1].split(" ")[0])
    assert val_error > train_error + 5  # the net without dropout overfits the tiny set
    assert "underfitting" not in captured.out


def test_tune_finds_that_dropout_wins_on_a_tiny_high_dimensional_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The known answer: 100 training rows of a 200-feature linear problem (n < d) and a
    200-256-256-2 net. Without dropout it fits the 100 rows exactly and generalises poorly;
    dropout acts as the data-dependent ridge penalty of §9.1 and must win beyond noise, and
    tune must say so and recommend a dropout net."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=200)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 200)).astype(np.float32)
        return x, (x @ w > 0).astype(np.int64)

    (x, y), (xv, yv), (xt, yt) = draw(100), draw(1000), draw(1000)
    np.savez(tmp_path / "lin.npz", x=x, y=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    argv = ["tune", "--data", str(tmp_path / "lin.npz"), "--arch", "200-256-256-2",
            "--time", "30s", "--epochs", "40", "--set", "optim.batch_size=10",
            "--set", "optim.lr=0.1", "--set", "model.init=kaiming",
            "--store", str(tmp_path / "runs.sqlite"), "--out", str(tmp_path / "r"),
            *SMALL[:6], "--seeds", "3", *SMALL[8:]]
    assert main(argv) == 0
    out = capsys.readouterr().out
    diagnosis = next(line for line in out.splitlines() if line.startswith("diagnosis:"))
    assert diagnosis.startswith("diagnosis: overfitting:") and "so better" in diagnosis
    recommended = next(line for line in out.splitlines() if line.startswith("recommended:"))
    assert "retain" in recommended  # a dropout net, not the baseline
    config = load_config(tmp_path / "r" / "recommended.toml")
    assert config.model.dropout == "bernoulli" and config.model.drop_hidden > 0


def test_tune_on_an_npz_file_large_set_small_net_needs_no_dropout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2000 rows of an easy problem and an 8-unit net: dropout cannot win, and tune says so."""
    npz = _gaussian_npz(tmp_path / "big.npz", 2000)
    argv = ["tune", "--data", str(npz), "--arch", "10-8-2", "--time", "15s", "--epochs", "8",
            "--set", "optim.batch_size=50", "--store", str(tmp_path / "runs.sqlite"),
            "--out", str(tmp_path / "r"), *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    diagnosis = next(line for line in out.splitlines() if line.startswith("diagnosis:"))
    assert "overfitting:" not in diagnosis
    assert ("underfitting" in diagnosis) or ("not needed" in diagnosis)
    assert "test error (recommended" in out  # the file has a test split: measured once


def test_tune_model_searches_a_users_own_builder(tmp_path: Path) -> None:
    """tune_model(build, ...) stores the builder's name in the config, and the recommended
    config rebuilds the user's net; lambdas and __main__ functions are refused."""
    from tune_builders import small_digits_net

    base = with_changes(RunConfig(), {"data.dataset": "digits", "epochs": 4})
    result = tune_model(small_digits_net, base, time_budget="12s",
                        space=TuneSpace(retain_hidden=(0.5,), retain_input=(1.0,),
                                        max_norms=(3.0,), seeds=2),
                        sweep=SweepOptions(store=tmp_path / "runs.sqlite", progress=False,
                                           threads_per_run=1),
                        out_dir=tmp_path / "r")
    assert result.recommended_config is not None
    assert result.recommended_config.model.builder == "tune_builders:small_digits_net"
    assert (tmp_path / "r" / "recommended.toml").is_file()
    assert not math.isnan(next(iter(result.test.values())).mean)
    with pytest.raises(ConfigError, match="top level of an importable module"):
        tune_model(lambda p, q: None, base, time_budget=5)
    with pytest.raises(ConfigError, match="scale_width"):
        tune_model(small_digits_net, base, time_budget=5, space=TuneSpace(scale_width=True))
    with pytest.raises(ConfigError, match="does not use"):
        tune(with_changes(base, {"model.kind": "convnet"}), time_budget=5)


def test_tune_refuses_bad_flags_without_traceback(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["tune", "--dataset", "digits", "--time", "soon", "--store",
                   str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert status == 2 and "`--time` must be a duration" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["reproduce", "overfitting-curves", "--no-progress"],
    ["sweep", "--no-progress"],
    ["tune", "--dataset", "digits", "--no-progress"],
    ["train", "--no-progress"],
])
def test_every_long_command_takes_no_progress(argv: list[str]) -> None:
    """--no-progress parses on reproduce, sweep, tune and train; the sweep ones turn the bar
    off in the SweepOptions they build."""
    from dropoutlab.cli import build_parser
    from dropoutlab.cli.sweep_options import sweep_options

    args = build_parser().parse_args(argv)
    assert args.no_progress is True
    if argv[0] != "train":
        assert sweep_options(args).progress is False
