"""The ``runs``, ``export`` and ``sweep`` commands, including every bad-input path (exit 2)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path

import pytest

from dropoutlab.cli import main
from dropoutlab.config import RunConfig
from dropoutlab.sweeps.job import Job
from dropoutlab.sweeps.store import Store

TASK = "sweep_tasks:fake_train"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with 3 runs: two done (one shared by two experiments), one failed."""
    path = tmp_path / "runs.sqlite"
    jobs = [Job("alpha", "seed=0", RunConfig(epochs=1, seed=0), TASK),
            Job("beta", "same run", RunConfig(epochs=1, seed=0), TASK),
            Job("alpha", "seed=1", RunConfig(epochs=1, seed=1), TASK),
            Job("alpha", "seed=2", RunConfig(epochs=1, seed=2), TASK)]
    with Store(path) as db:
        db.register(jobs)
        for job, status in zip([jobs[0], jobs[2], jobs[3]], ["done", "done", "failed"],
                               strict=True):
            token = db.claim(job.key)
            assert token is not None
            db.finish(job.key, token, {
                "status": status, "metrics": {"test_error": 1.5 + job.config.seed},
                "history": [{"epoch": 1}], "error": "Traceback\nValueError: bad" if
                status == "failed" else None, "seconds": 2.0})
    return path


class TestRuns:
    def test_table_lists_every_run(self, store: Path, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
        """The fixed-width table has a row per run and a status count."""
        assert main(["runs", "--store", str(store)]) == 0
        out = capsys.readouterr().out
        assert "test_error=1.5" in out and "3 runs: 2 done, 1 failed" in out

    def test_json_has_the_documented_keys(self, store: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        """--json is a list of objects with config_hash, experiment, status, seed, metrics."""
        assert main(["runs", "--store", str(store), "--json", "--experiment", "beta"]) == 0
        [run] = json.loads(capsys.readouterr().out)
        assert run["experiment"] == "beta" and run["name"] == "same run"
        assert run["status"] == "done" and run["seed"] == 0
        assert run["metrics"] == {"test_error": 1.5} and len(run["config_hash"]) == 16

    def test_status_filter(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--status failed shows only the failed run."""
        assert main(["runs", "--store", str(store), "--status", "failed", "--json"]) == 0
        assert [r["seed"] for r in json.loads(capsys.readouterr().out)] == [2]

    def test_unknown_experiment_exits_2(self, store: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """A name that is neither a paper experiment nor stored is a typo: exit 2, one line."""
        assert main(["runs", "--store", str(store), "--experiment", "alhpa"]) == 2
        err = capsys.readouterr().err
        assert "unknown experiment 'alhpa'" in err and "alpha" in err
        assert len(err.strip().splitlines()) == 1

    def test_paper_experiment_without_runs_is_fine(self, store: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
        """A real experiment with nothing stored yet lists no runs and exits 0."""
        from dropoutlab.experiments import EXPERIMENTS

        name = next(iter(EXPERIMENTS))
        assert main(["runs", "--store", str(store), "--experiment", name]) == 0
        assert "no runs" in capsys.readouterr().out

    @pytest.mark.parametrize("content", [b"not a database at all\n" * 50,
                                         b"SQLite format 3\x00" + b"\xff" * 4000])
    def test_bad_store_file_exits_2_untouched(self, tmp_path: Path, content: bytes,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """A non-SQLite or corrupt file given as --store: exit 2, file unchanged."""
        path = tmp_path / "runs.sqlite"
        path.write_bytes(content)
        before = digest(path)
        for command in (["runs"], ["export"], ["sweep", "--task", TASK]):
            assert main([*command, "--store", str(path)]) == 2
            assert "refusing to touch it" in capsys.readouterr().err
        assert digest(path) == before

    def test_missing_store_exits_2(self, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        """Listing a store that does not exist says so and creates nothing."""
        assert main(["runs", "--store", str(tmp_path / "none.sqlite")]) == 2
        assert "does not exist" in capsys.readouterr().err
        assert not (tmp_path / "none.sqlite").exists()


class TestExport:
    def test_csv_is_one_flat_row_per_run_and_experiment(self, store: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
        """CSV rows carry identity, config.* and metric.* columns; the shared run appears twice."""
        out = tmp_path / "runs.csv"
        assert main(["export", "--store", str(store), "--out", str(out)]) == 0
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert len(rows) == 4
        assert sorted(r["experiment"] for r in rows) == ["alpha", "alpha", "alpha", "beta"]
        row = next(r for r in rows if r["experiment"] == "beta")
        assert row["metric.test_error"] == "1.5" and row["config.seed"] == "0"
        assert json.loads(row["config.model.hidden"]) == [1024, 1024]
        failed = next(r for r in rows if r["status"] == "failed")
        assert failed["error"] == "ValueError: bad"

    def test_csv_to_stdout_with_filters(self, store: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """Without --out the CSV goes to stdout; --experiment keeps that experiment's rows."""
        assert main(["export", "--store", str(store), "--experiment", "beta"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert [(r["experiment"], r["name"]) for r in rows] == [("beta", "same run")]

    def test_parquet_without_pyarrow_names_the_package(self, store: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
        """--format parquet with no pyarrow: exit 2, says to pip install pyarrow, no file."""
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        out = tmp_path / "runs.parquet"
        assert main(["export", "--store", str(store), "--format", "parquet",
                     "--out", str(out)]) == 2
        assert "pip install pyarrow" in capsys.readouterr().err
        assert not out.exists()

    def test_parquet_round_trip(self, store: Path, tmp_path: Path) -> None:
        """With pyarrow installed, the Parquet table has the same rows as the CSV."""
        pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
        out = tmp_path / "runs.parquet"
        assert main(["export", "--store", str(store), "--format", "parquet",
                     "--out", str(out)]) == 0
        assert pq.read_table(out).num_rows == 4


class TestSweepCommand:
    def test_grid_runs_and_reruns_nothing(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        """A 2 × 2 grid runs 4 runs under its experiment; the same command again runs none."""
        monkeypatch.setenv("FAKE_TASK_SLEEP", "0")
        command = ["sweep", "--task", TASK, "--store", str(tmp_path / "s.sqlite"),
                   "--set", "epochs=2", "--grid", "model.hidden=[[8], [16, 16]]",
                   "--seeds", "2", "--experiment", "mine", "--workers", "2"]
        assert main(command) == 0
        assert "4 runs: 4 done" in capsys.readouterr().out
        assert main(command) == 0
        assert "4 already stored" in capsys.readouterr().out
        with Store(tmp_path / "s.sqlite") as db:
            names = sorted(r.name or "" for r in db.records(experiment="mine"))
        assert names[0] == "model.hidden=[16, 16] seed=0"

    @pytest.mark.parametrize(("args", "message"), [
        (["--grid", "model.hidden=64"], "--grid must look like KEY=[V1, V2, ...]"),
        (["--grid", "model.widths=[1, 2]"], "unknown config key 'model.widths'"),
        (["--task", "nowhere:train"], "cannot import module 'nowhere'"),
        (["--set", "epochs=0"], "`epochs` must be a finite number > 0"),
    ])
    def test_bad_sweep_input_exits_2(self, tmp_path: Path, args: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        """Bad grid, key, task or value: exit 2 with the reason, and no store is created."""
        store = tmp_path / "s.sqlite"
        assert main(["sweep", "--store", str(store), "--task", TASK, *args]) == 2
        assert message in capsys.readouterr().err
        assert not store.exists()

    def test_unwritable_store_path_exits_2(self, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        """A store under a regular file cannot be created: exit 2, the file is intact."""
        blocker = tmp_path / "file"
        blocker.write_text("keep me")
        with pytest.raises(SystemExit) as exit_:  # refused as the flags are parsed
            main(["sweep", "--task", TASK, "--store", str(blocker / "runs.sqlite")])
        assert exit_.value.code == 2
        assert "a parent of it is a file, not a folder" in capsys.readouterr().err
        assert blocker.read_text() == "keep me"
