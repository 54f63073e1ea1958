"""A user's own data files: formats, splits, every bad-file error, and the checksum in the key."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dropoutlab.cli import main
from dropoutlab.config import RunConfig, config_hash, with_changes
from dropoutlab.data import load
from dropoutlab.data.formats import sha256_file
from dropoutlab.data.user import read_file, summarize
from dropoutlab.errors import DataError


def _blobs(n: int, d: int = 5, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) + y[:, None]
    return x.astype(np.float32), y.astype(np.int64)


def _csv(path: Path, rows: list[list[object]], header: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _file_config(path: Path, target: str | None = None) -> RunConfig:
    return with_changes(RunConfig(), {"data.dataset": "file", "data.path": str(path),
                                      "data.sha256": sha256_file(path), "data.target": target})


class TestFormats:
    def test_npz_without_validation_gets_a_stratified_seeded_split(self, tmp_path: Path) -> None:
        """No x_val: 20 % of each class held out with seed 0, the same on every read."""
        x, y = _blobs(100)
        path = tmp_path / "d.npz"
        np.savez(path, x=x, y=y)
        a, b = read_file(path), read_file(path)
        assert len(a.val_y) == 20 and len(a.train_y) == 80 and len(a.test_y) == 0
        assert np.array_equal(a.val_x, b.val_x)
        assert sorted(np.bincount(a.val_y).tolist()) == [6, 7, 7]
        assert "stratified 20 %" in summarize(path).validation

    def test_npz_with_its_own_splits_keeps_them(self, tmp_path: Path) -> None:
        x, y = _blobs(60)
        xv, yv = _blobs(30, seed=1)
        path = tmp_path / "d.npz"
        np.savez(path, x=x, y=y, x_val=xv, y_val=yv, x_test=xv[:9], y_test=yv[:9])
        raw = read_file(path)
        assert (len(raw.train_y), len(raw.val_y), len(raw.test_y)) == (60, 30, 9)
        assert raw.num_classes == 3 and raw.input_shape == (5,)

    def test_csv_with_text_labels_maps_them_to_sorted_indices(self, tmp_path: Path) -> None:
        x, y = _blobs(50, d=2, classes=2)
        names = np.array(["dog", "cat"])[y]
        path = _csv(tmp_path / "t.csv", [[*row, label] for row, label in zip(x, names,
                                                                              strict=True)],
                    ["a", "b", "kind"])
        info = summarize(path, target="kind")
        assert info.classes == ("cat", "dog") and info.num_features == 2
        assert info.sizes == {"train": 40, "val": 10, "test": 0}

    def test_parquet_reads_like_csv(self, tmp_path: Path) -> None:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        x, y = _blobs(40, d=3, classes=2)
        table = pa.table({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2], "label": y})
        pq.write_table(table, tmp_path / "t.parquet")
        raw = read_file(tmp_path / "t.parquet", target="label")
        assert raw.train_x.shape == (32, 3) and raw.num_classes == 2

    def test_standardize_scales_each_feature_of_a_file(self, tmp_path: Path) -> None:
        """A table's features get their own mean and std (units differ between columns)."""
        x, y = _blobs(100, d=2, classes=2)
        x[:, 1] *= 1000
        path = tmp_path / "d.npz"
        np.savez(path, x=x, y=y)
        config = with_changes(_file_config(path), {"data.standardize": True})
        ds = load(config.data, seed=0)
        std = ds.train_x.std(dim=0)
        assert np.allclose(std.numpy(), 1.0, atol=1e-3)


class TestBadFiles:
    """Each problem is one DataError naming the file and what is wrong."""

    @pytest.mark.parametrize(("arrays", "message"), [
        ({"x": np.zeros((4, 2))}, "missing array 'y'"),
        ({"x": np.zeros((6, 2)), "y": np.zeros(6, dtype=int)}, "single class"),
        ({"x": np.array([[0.0, np.nan]] * 6), "y": np.arange(6) % 2}, "NaN or inf"),
        ({"x": np.array([[0.0, np.inf]] * 6), "y": np.arange(6) % 2}, "NaN or inf"),
        ({"x": np.zeros((6, 2)), "y": np.arange(6)}, "more classes than labels"),
        ({"x": np.zeros((6, 2)), "y": np.arange(6) % 2, "x_val": np.zeros((2, 2)),
          "y_val": np.array([0, 7])}, "more classes than its training labels"),
        ({"x": np.zeros((6, 2)), "y": np.arange(6) % 2, "x_val": np.zeros((2, 2))},
         "missing array 'y_val'"),
        ({"x": np.array(["a", "b"] * 3).reshape(3, 2), "y": np.arange(3) % 2}, "not numeric"),
        ({"x": np.zeros((6, 2)), "y": np.arange(6) * 0.5}, "non-integer labels"),
    ])
    def test_npz_problems(self, tmp_path: Path, arrays: dict[str, np.ndarray],
                          message: str) -> None:
        path = tmp_path / "bad.npz"
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=message) as info:
            read_file(path)
        assert str(path) in str(info.value)

    def test_ragged_rows_in_an_npz_are_object_arrays_we_refuse(self, tmp_path: Path) -> None:
        path = tmp_path / "ragged.npz"
        ragged = np.empty(2, dtype=object)
        ragged[:] = [np.zeros(2), np.zeros(3)]
        np.savez(path, x=ragged, y=np.array([0, 1]))
        with pytest.raises(DataError, match="ragged rows"):
            read_file(path)

    @pytest.mark.parametrize(("rows", "target", "message"), [
        ([[1, 2, 0], [3, 0]], "y", "ragged rows: line 3 has 2 fields"),
        ([[1, "red", 0], [3, 4, 1]], "y", "non-numeric feature 'red' in column 'b' on line 2"),
        ([[1, "", 0], [3, 4, 1]], "y", "missing value in feature column 'b'"),
        ([[1, "nan", 0], [3, 4, 1]], "y", "NaN or inf"),
        ([[1, 2, 0], [3, 4, 1]], "label", "no target column 'label'"),
        ([[1, 2, 0], [3, 4, 0], [5, 6, 0]], "y", "single class"),
        ([[1, 2, 0], [3, 4, 1], [5, 6, 2]], "y", "more classes than labels"),
    ])
    def test_csv_problems(self, tmp_path: Path, rows: list[list[object]], target: str,
                          message: str) -> None:
        path = _csv(tmp_path / "bad.csv", rows, ["a", "b", "y"])
        with pytest.raises(DataError, match=message):
            read_file(path, target=target)

    def test_a_table_needs_a_target_and_a_known_suffix(self, tmp_path: Path) -> None:
        path = _csv(tmp_path / "t.csv", [[1, 0], [2, 1]], ["a", "y"])
        with pytest.raises(DataError, match="needs --target"):
            read_file(path)
        with pytest.raises(DataError, match=r"unknown format '\.txt'"):
            read_file(tmp_path / "t.txt")
        with pytest.raises(DataError, match="does not exist"):
            read_file(tmp_path / "missing.npz")

    def test_a_changed_file_is_refused_at_load(self, tmp_path: Path) -> None:
        """The worker re-reads the file: a checksum that no longer matches stops the run."""
        x, y = _blobs(30)
        path = tmp_path / "d.npz"
        np.savez(path, x=x, y=y)
        config = _file_config(path)
        np.savez(path, x=x + 1, y=y)
        with pytest.raises(DataError, match="has changed since the config was made"):
            load(config.data, seed=0)

    def test_cli_errors_are_one_line_without_traceback(self, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
        path = _csv(tmp_path / "bad.csv", [[1, "x", 0], [2, 3, 1]], ["a", "b", "y"])
        status = main(["train", "--data", str(path), "--target", "y", "--epochs", "1",
                       "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert status == 2
        assert "non-numeric feature 'x'" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


class TestChecksumInTheKey:
    def test_same_data_same_hash_different_data_different_hash(self, tmp_path: Path) -> None:
        """The key follows the file's content: a copy elsewhere hashes the same."""
        x, y = _blobs(30)
        np.savez(tmp_path / "a.npz", x=x, y=y)
        (tmp_path / "copy").mkdir()
        np.savez(tmp_path / "copy" / "a.npz", x=x, y=y)
        np.savez(tmp_path / "b.npz", x=x * 2, y=y)
        a = config_hash(_file_config(tmp_path / "a.npz"))
        assert a == config_hash(_file_config(tmp_path / "copy" / "a.npz"))
        assert a != config_hash(_file_config(tmp_path / "b.npz"))
        assert a != config_hash(RunConfig())

    def test_a_file_config_survives_toml(self, tmp_path: Path) -> None:
        from dropoutlab.config import config_to_toml, load_config

        x, y = _blobs(30)
        np.savez(tmp_path / "a.npz", x=x, y=y)
        config = _file_config(tmp_path / "a.npz")
        (tmp_path / "c.toml").write_text(config_to_toml(config))
        assert load_config(tmp_path / "c.toml") == config


def test_train_cli_on_a_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train --data table.csv --target y --standardize` trains and records the file's hash."""
    import json

    x, y = _blobs(80, d=3, classes=2)
    path = _csv(tmp_path / "t.csv", [[*row, int(label)] for row, label in zip(x, y,
                                                                                strict=True)],
                ["a", "b", "c", "y"])
    out = tmp_path / "run"
    status = main(["train", "--data", str(path), "--target", "y", "--standardize",
                   "--arch", "3-16-2", "--epochs", "2", "--out", str(out), "--no-progress"])
    assert status == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["data"]["sha256"] == sha256_file(path)
    assert result["config"]["data"]["standardize"] is True
    assert "validation: a stratified 20 %" in capsys.readouterr().err


def test_sweep_cli_on_an_npz_file(tmp_path: Path) -> None:
    """`sweep --data` checks the file once, and the worker loads it by path and checksum."""
    x, y = _blobs(60, d=4, classes=2)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    store = tmp_path / "runs.sqlite"
    status = main(["sweep", "--data", str(path), "--set", "epochs=1", "--set",
                   "model.hidden=[8]", "--store", str(store), "--no-progress"])
    assert status == 0
    from dropoutlab.sweeps import Store

    with Store.open_readonly(store) as db:
        (record,) = db.records()
    assert record.status == "done"
    assert record.config["data"]["sha256"] == sha256_file(path)
    assert record.config["data"]["path"] == str(path.resolve())
