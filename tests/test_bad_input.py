"""Bad input and faults, by class: every one is refused with one line and exit status 2 (no
traceback), names the argument, says what was expected and what was received, and leaves every
file as it was.

Classes: path arguments (folder for file, file for folder, under a file, FIFO, missing,
read-only media, full disk), integer options, devices, config files, corrupt files (MNIST
cache, checkpoints, store rows), values accepted silently before (``--arch ''``, a missing
``--data-dir``, divergence), read-only stores, a refused ``--resume``, and symlinks planted
in output folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from dropoutlab import data as data_module
from dropoutlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dropoutlab.cli import build_parser, main
from dropoutlab.cli.train import resolve_config
from dropoutlab.config import RunConfig, with_changes
from dropoutlab.data import sources
from dropoutlab.errors import DataError, StoreError
from dropoutlab.sweeps.job import Job
from dropoutlab.sweeps.store import Store
from dropoutlab.train import DIVERGENCE_FACTOR, train

FAST = ["--preset", "smoke", "--epochs", "2", "--arch", "64-16-10", "--threads", "1",
        "--no-progress"]
TASK = "tests.sweep_tasks:fake_train"


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """--threads changes torch's global thread count; put it back after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process: (exit status, stderr); argparse's exits become their status."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, a single line on stderr, no traceback, and each needle in it."""
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its kind and content digest (links: their target)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            state[rel] = "dir"
        elif path.is_file():
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[rel] = "special"
    return state


def _mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a tmpfs at ``where`` (needs root); False when this machine does not allow it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "none", str(where)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    """A folder on read-only media: ``(folder, seal)``; fill it, then call ``seal()``.

    As root: a tmpfs remounted read-only (what a read-only mount really does). Otherwise:
    permissions (0555/0444), which refuse writes the same way for a normal user.
    """
    folder = tmp_path / "media"
    folder.mkdir()
    mounted = _mount_tmpfs(folder, "4m")
    if not mounted and os.geteuid() == 0:
        pytest.skip("root without mount: cannot make read-only media here")

    def seal() -> None:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            for path in [*folder.rglob("*"), folder]:
                path.chmod(0o555 if path.is_dir() else 0o444)

    yield folder, seal
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)
    else:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tiny tmpfs that is filled to the last byte (needs root to mount)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if not _mount_tmpfs(folder, "256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    (folder / "out").mkdir()
    try:
        with (folder / "filler").open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with two finished fake runs."""
    path = tmp_path / "runs.sqlite"
    with Store(path) as db:
        jobs = [Job("exp", f"seed={s}", with_changes(RunConfig(), {"seed": s}), TASK)
                for s in range(2)]
        db.register(jobs)
        for job in jobs:
            token = db.claim(job.key)
            assert token is not None
            db.finish(job.key, token, {"status": "done", "metrics": {"loss": 0.5},
                                       "history": [{"epoch": 1, "loss": 0.5}]})
    return path


# ------------------------------------------------------------------------------------ paths
class TestPathArguments:
    """Every path argument, with each wrong kind of path: exit 2, one line, nothing touched."""

    @pytest.fixture
    def paths(self, tmp_path: Path) -> dict[str, Path]:
        """A plain file, a folder, a FIFO, a path under the file and one that is missing."""
        plain = tmp_path / "plain.txt"
        plain.write_text("keep me")
        folder = tmp_path / "folder"
        folder.mkdir()
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        return {"file": plain, "dir": folder, "fifo": fifo, "under": plain / "x",
                "missing": tmp_path / "missing"}

    # (argv before the path, flag, kind of bad path, words in the message)
    CASES: ClassVar[list[tuple[list[str], str, str, str]]] = [
        (["train", *FAST, "--out", "o"], "--config", "dir", "which is a folder"),
        (["train", *FAST, "--out", "o"], "--config", "fifo", "FIFO"),
        (["train", *FAST, "--out", "o"], "--config", "under", "a parent of it is a file"),
        (["train", *FAST, "--out", "o"], "--config", "missing", "does not exist"),
        (["train", *FAST], "--out", "file", "which is a regular file"),
        (["train", *FAST], "--out", "under", "a parent of it is a file"),
        (["train", *FAST], "--out", "fifo", "FIFO"),
        (["train", *FAST, "--out", "o"], "--data-dir", "missing", "does not exist"),
        (["train", *FAST, "--out", "o"], "--data-dir", "file", "which is a regular file"),
        (["sweep", "--task", TASK], "--config", "dir", "which is a folder"),
        (["sweep", "--task", TASK], "--config", "fifo", "FIFO"),
        (["sweep", "--task", TASK], "--store", "dir", "which is a folder"),
        (["sweep", "--task", TASK], "--store", "fifo", "FIFO"),
        (["sweep", "--task", TASK], "--store", "under", "a parent of it is a file"),
        (["sweep", "--task", TASK], "--checkpoint-dir", "file", "which is a regular file"),
        (["reproduce", "all", "--budget", "smoke"], "--out", "file", "which is a regular file"),
        (["reproduce", "all", "--budget", "smoke"], "--data-dir", "missing", "does not exist"),
        (["reproduce", "all", "--budget", "smoke"], "--store", "fifo", "FIFO"),
        (["report", "all", "--budget", "smoke"], "--out", "under", "a parent of it is a file"),
        (["report", "all", "--budget", "smoke"], "--store", "fifo", "FIFO"),
        (["report", "all", "--budget", "smoke"], "--data-dir", "file", "which is a regular"),
        (["runs"], "--store", "fifo", "FIFO"),
        (["runs"], "--store", "dir", "which is a folder"),
        (["export"], "--store", "fifo", "FIFO"),
        (["export"], "--out", "dir", "which is a folder"),
        (["export"], "--out", "under", "a parent of it is a file"),
        (["list"], "--data-dir", "missing", "does not exist"),
    ]

    @pytest.mark.parametrize(("argv", "flag", "kind", "words"), CASES,
                             ids=[f"{c[0][0]}{c[1]}-{c[2]}" for c in CASES])
    def test_refused_with_one_line(self, argv: list[str], flag: str, kind: str, words: str,
                                   paths: dict[str, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        """Refused before any work, naming the flag; the files around are as they were."""
        monkeypatch.chdir(tmp_path)
        before = snapshot(tmp_path)
        code, err = cli([*argv, flag, str(paths[kind])], capsys)
        assert_one_line_error(code, err, f"argument {flag}:", words)
        assert snapshot(tmp_path) == before

    def test_store_given_as_fifo_to_the_library(self, paths: dict[str, Path]) -> None:
        """The store itself refuses a FIFO (it would block forever on the first read)."""
        for readonly in (True, False):
            with pytest.raises(StoreError, match=r"must be a regular file.*FIFO"):
                Store(paths["fifo"], readonly=readonly)

    def test_read_only_media(self, read_only: tuple[Path, object], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
        """Outputs and new stores on read-only media: refused, the word "read-only" or
        "permission" in the message, nothing written."""
        media, seal = read_only
        (media / "existing").mkdir()
        seal()  # type: ignore[operator]
        monkeypatch.chdir(tmp_path)
        cases = [(["train", *FAST, "--out", str(media / "run")], "--out"),
                 (["train", *FAST, "--out", str(media / "existing")], "--out"),
                 (["export", "--out", str(media / "t.csv")], "--out"),
                 (["sweep", "--task", TASK, "--store", str(media / "s.sqlite")], "--store"),
                 (["report", "all", "--out", str(media / "report")], "--out"),
                 (["sweep", "--task", TASK, "--checkpoint-dir", str(media / "ck")],
                  "--checkpoint-dir")]
        for argv, flag in cases:
            code, err = cli(argv, capsys)
            assert_one_line_error(code, err, f"argument {flag}:", "must be writable")
            assert "read-only" in err or "permission denied" in err
        assert sorted(p.name for p in media.iterdir()) == ["existing"]

    def test_full_disk(self, full_disk: Path, store: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
        """A full disk under train/export/report --out: one line saying so, no temp files."""
        out = full_disk / "out"
        cases = [["train", *FAST, "--out", str(out / "run")],
                 ["export", "--store", str(store), "--out", str(out / "t.csv")],
                 ["report", "all", "--budget", "smoke", "--store", str(store), "--out",
                  str(out / "report")]]
        for argv in cases:
            code, err = cli(argv, capsys)
            assert_one_line_error(code, err, "the disk is full")
        leftovers = [p for p in out.rglob("*") if p.is_file()]
        assert leftovers == []

    def test_checkpoint_on_a_full_disk(self, full_disk: Path) -> None:
        """A checkpoint that does not fit is a CheckpointError; the old one is kept."""
        path = full_disk / "out" / "ckpt.pt"
        with pytest.raises(CheckpointError, match="the disk is full"):
            save_checkpoint(path, {"weights": torch.zeros(1_000_000)})
        assert list(path.parent.iterdir()) == []


# --------------------------------------------------------------------------------- integers
class TestIntegerOptions:
    """Every integer flag has a stated range: below it, far above it (would overflow SQLite
    or C) and not a number are one line naming the flag and the range."""

    FLAGS: ClassVar[list[tuple[list[str], str, int]]] = [(["train", *FAST, "--out", "o"], flag, low)
             for flag, low in (("--train-size", 1), ("--epochs", 1), ("--batch-size", 1),
                               ("--momentum-updates", 0), ("--early-stopping", 1),
                               ("--seed", 0), ("--threads", 1))]
    FLAGS += [(["sweep", "--task", TASK], flag, low)
              for flag, low in (("--seeds", 1), ("--first-seed", 0), ("--workers", 1),
                                ("--threads-per-run", 1), ("--retries", 0))]
    FLAGS += [(["reproduce", "all"], "--seeds", 1), (["reproduce", "all"], "--workers", 1)]

    @pytest.mark.parametrize(("argv", "flag", "low"), FLAGS,
                             ids=[f"{f[0][0]}{f[1]}" for f in FLAGS])
    def test_out_of_range(self, argv: list[str], flag: str, low: int, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
        """low - 1, 10**30 and 'abc' are refused; nothing is written."""
        monkeypatch.chdir(tmp_path)
        for value in (str(low - 1), str(10**30), "abc"):
            code, err = cli([*argv, flag, value], capsys)
            assert_one_line_error(code, err, f"argument {flag}: expected an integer in "
                                  f"[{low}, ", f"got {value!r}")
        assert list(tmp_path.iterdir()) == []

    def test_last_seed_beyond_sqlite(self, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        """--first-seed at the top of its range with 2 seeds would overflow: refused."""
        code, err = cli(["sweep", "--task", TASK, "--store", str(tmp_path / "s.sqlite"),
                         "--first-seed", str(2**63 - 1), "--seeds", "2"], capsys)
        assert_one_line_error(code, err, "`--first-seed` + `--seeds` - 1 must be at most")
        assert not (tmp_path / "s.sqlite").exists()

    def test_huge_seed_through_set(self, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
        """A seed past 64 bits given as a config value is refused by the config."""
        code, err = cli(["sweep", "--task", TASK, "--store", str(tmp_path / "s.sqlite"),
                         "--set", f"seed={2**70}"], capsys)
        assert_one_line_error(code, err, "`seed` must be an integer in [0, 9223372036854775807]")


# ---------------------------------------------------------------------------------- devices
class TestDevices:
    """One device check for every command, before anything is written."""

    BAD: ClassVar[list[str]] = ["cuda:abc", "tpu", "cuda:", "CPU"]

    @pytest.mark.parametrize("command", [["train", *FAST, "--out", "o"], ["reproduce", "all"],
                                         ["report", "all"]])
    def test_malformed_names(self, command: list[str], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
        """Names torch would reject are one line naming --device."""
        monkeypatch.chdir(tmp_path)
        for name in self.BAD:
            code, err = cli([*command, "--device", name], capsys)
            assert_one_line_error(code, err, "argument --device: must be cpu, cuda or cuda:N")
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
    @pytest.mark.parametrize("command", [["train", *FAST, "--out", "o"], ["reproduce", "all"],
                                         ["report", "all"]])
    def test_cuda_without_cuda(self, command: list[str], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
        """--device cuda (and cuda:1) on a machine without CUDA: one line, use --device cpu."""
        monkeypatch.chdir(tmp_path)
        for name in ("cuda", "cuda:1"):
            code, err = cli([*command, "--device", name], capsys)
            assert_one_line_error(code, err, "CUDA is not available", "use --device cpu")
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
    def test_sweep_config_device_and_library(self, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        """A sweep's configs and train() itself check the device too."""
        code, err = cli(["sweep", "--task", TASK, "--store", str(tmp_path / "s.sqlite"),
                         "--set", "device=cuda"], capsys)
        assert_one_line_error(code, err, "`device` cuda: CUDA is not available")
        code, err = cli(["sweep", "--task", TASK, "--store", str(tmp_path / "s.sqlite"),
                         "--set", "device=cuda:abc"], capsys)
        assert_one_line_error(code, err, "`device` must be 'cpu' or 'cuda[:N]'")
        assert not (tmp_path / "s.sqlite").exists()
        config = with_changes(RunConfig(), {"data.dataset": "digits", "device": "cuda"})
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(config)


# ----------------------------------------------------------------------------- config files
class TestConfigFiles:
    """Config files that cannot be read name the file and say what is wrong."""

    @pytest.mark.parametrize(("content", "words"), [
        (b'epochs = 1\n[data]\ndataset = "d\xe9gits"\n',
         "must be UTF-8 text (TOML), got byte 0xe9"),
        (b"\xff\xfe" + "epochs = 1".encode("utf-16-le"), "must be UTF-8 text"),
        (b"epochs = = 1\n", "is not valid TOML"),
        (b"epochs = 0\n", "`epochs` must be a finite number > 0"),
    ])
    @pytest.mark.parametrize("command", ["train", "sweep"])
    def test_unreadable_config(self, command: str, content: bytes, words: str,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Non-UTF-8, non-TOML or invalid: exit 2 with the file's name, nothing written."""
        path = tmp_path / "bad.toml"
        path.write_bytes(content)
        argv = (["train", "--config", str(path), "--out", str(tmp_path / "o")]
                if command == "train" else
                ["sweep", "--task", TASK, "--config", str(path), "--store",
                 str(tmp_path / "s.sqlite")])
        code, err = cli(argv, capsys)
        assert_one_line_error(code, err, words)
        if "epochs = 0" not in content.decode("latin-1"):
            assert str(path) in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


# ---------------------------------------------------------------------------- corrupt files
def _tiny_mnist() -> sources.RawSplits:
    """A stand-in for the verified MNIST source: 6 splits of the right layout, 4 rows each."""
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(3):
        parts += [rng.random((4, 784), dtype=np.float32), np.arange(4, dtype=np.int64)]
    return sources.RawSplits.from_parts(parts, (1, 28, 28), 10)


class TestCorruptFiles:
    """MNIST caches, checkpoints and store rows that were damaged or edited."""

    @pytest.fixture
    def mnist_cache(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        """A cache folder whose verified source is :func:`_tiny_mnist` (its checksum pinned)."""
        monkeypatch.setenv("DROPOUTLAB_CACHE", str(tmp_path / "cache"))
        tiny = _tiny_mnist()
        reads: list[int] = []

        def read_mnist(data_dir: str | None) -> sources.RawSplits:
            reads.append(1)
            return tiny

        monkeypatch.setattr(sources, "read_mnist", read_mnist)
        digest = data_module._arrays_digest({n: getattr(tiny, n) for n in data_module._FIELDS})
        monkeypatch.setattr(data_module, "MNIST_ARRAYS_SHA256", digest)
        monkeypatch.setattr(data_module, "_verified_caches", set())
        data_module._read_mnist_cached(None)  # writes the cache
        assert reads == [1]
        return data_module._cache_path(tmp_path / "cache")

    @staticmethod
    def _tamper(cache: Path, change: str) -> None:
        with np.load(cache) as stored:
            arrays = {name: stored[name] for name in data_module._FIELDS}
        if change == "labels shifted by one":
            arrays["train_y"] = (arrays["train_y"] + 1) % 10
        elif change == "labels out of range":
            arrays["test_y"] = arrays["test_y"] + 100
        elif change == "wrong shape":
            arrays["train_x"] = arrays["train_x"].reshape(4, 28, 28)
        elif change == "rows dropped":
            arrays["val_x"] = arrays["val_x"][:2]
        if change == "truncated":
            cache.write_bytes(cache.read_bytes()[:100])
        else:
            np.savez(cache, **arrays)

    @pytest.mark.parametrize("change", ["labels shifted by one", "labels out of range",
                                        "wrong shape", "rows dropped", "truncated"])
    def test_mnist_cache_is_rebuilt(self, mnist_cache: Path, change: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
        """A cache that differs from the source in any way is rebuilt, with a warning."""
        self._tamper(mnist_cache, change)
        raw = data_module._read_mnist_cached(None)
        np.testing.assert_array_equal(raw.train_y, _tiny_mnist().train_y)
        np.testing.assert_array_equal(raw.train_x, _tiny_mnist().train_x)
        assert "rebuilding it from the source" in caplog.text
        caplog.clear()
        data_module._read_mnist_cached(None)  # the rebuilt cache is accepted again
        assert "rebuilding" not in caplog.text

    def test_the_pinned_checksum_is_the_real_mnist(self) -> None:
        """MNIST_ARRAYS_SHA256 is the checksum of the arrays read from the verified source."""
        raw = sources.read_mnist(None)
        digest = data_module._arrays_digest({n: getattr(raw, n) for n in data_module._FIELDS})
        assert digest == data_module.MNIST_ARRAYS_SHA256

    @pytest.mark.parametrize(("change", "words"), [
        ({"train_y": np.arange(4, dtype=np.int64) + 7}, "labels must lie in 0..9, got 7..10"),
        ({"train_y": np.arange(3, dtype=np.int64)}, "labels must have shape (4,), one per row"),
        ({"val_x": np.zeros((4, 700), np.float32)}, "inputs must have shape (N, 784)"),
    ])
    def test_damaged_splits_are_refused(self, change: dict[str, np.ndarray], words: str
                                        ) -> None:
        """Splits training would crash on (or mislearn from) are a DataError before it."""
        raw = dataclasses.replace(_tiny_mnist(), **change)
        with pytest.raises(DataError, match=re.escape(words)):
            data_module.check_splits(raw, "mnist")

    @pytest.fixture
    def run_dir(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
        """A finished tiny train run with its checkpoint."""
        out = tmp_path / "run"
        assert main(["train", *FAST, "--out", str(out)]) == 0
        capsys.readouterr()
        return out

    CHECKPOINT_DAMAGE: ClassVar[dict[str, tuple[str, str]]] = {
        "a weight of the wrong shape": ("model", "must be a tensor of shape"),
        "a missing field": ("velocity", "`velocity` must be present"),
        "a velocity that would broadcast": ("velocity[0]", "`velocity[0]` must be a tensor"),
        "a permutation of the wrong length": ("perm", "`perm` must be None or an int64"),
        "history of the wrong length": ("history", "`history` must be a list of 2"),
        "a generator state of the wrong size": ("generators", "does not fit this run"),
        "not a checkpoint at all": ("garbage", "is unreadable"),
    }

    @pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
    def test_damaged_checkpoint(self, run_dir: Path, damage: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
        """Right config hash, wrong content: a CheckpointError (exit 2), every file kept."""
        path = run_dir / "checkpoint.pt"
        state = load_checkpoint(path)
        field, words = self.CHECKPOINT_DAMAGE[damage]
        if field == "model":
            name = next(iter(state["model"]))
            state["model"][name] = torch.zeros(3, 3)
        elif field == "velocity":
            del state["velocity"]
        elif field == "velocity[0]":
            state["velocity"][0] = torch.zeros(1)
        elif field == "perm":
            state["perm"] = torch.arange(5)
        elif field == "history":
            state["history"] = state["history"][:1]
        elif field == "generators":
            state["generators"]["order"] = torch.zeros(3, dtype=torch.uint8)
        if field == "garbage":
            path.write_bytes(b"not a checkpoint")
        else:
            state.pop("format")
            save_checkpoint(path, state)
        before = snapshot(run_dir)
        code, err = cli(["train", *FAST, "--out", str(run_dir), "--resume"], capsys)
        assert_one_line_error(code, err, str(path), words)
        assert snapshot(run_dir) == before
        args = build_parser().parse_args(["train", *FAST, "--out", str(run_dir)])
        with pytest.raises(CheckpointError):  # the library refuses it the same way
            train(resolve_config(args), checkpoint_path=path, resume=True)

    @pytest.mark.parametrize("column", ["config", "metrics", "history", "hardware"])
    def test_store_row_with_invalid_json(self, store: Path, column: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        """A damaged JSON cell names the store, the run and the column."""
        db = sqlite3.connect(store)
        key = db.execute("SELECT config_hash FROM runs ORDER BY config_hash").fetchone()[0]
        db.execute(f"UPDATE runs SET {column} = ? WHERE config_hash = ?", ("{oops", key))
        db.commit()
        db.close()
        before = store.read_bytes()
        for command in (["runs"], ["export"], ["runs", "--json"]):
            code, err = cli([*command, "--store", str(store)], capsys)
            assert_one_line_error(code, err, str(store), f"run {key}", f"column `{column}`")
        assert store.read_bytes() == before


# ------------------------------------------------------------------- accepted silently before
class TestSilentlyAccepted:
    """Values that used to be ignored or trained on are refused or flagged."""

    @pytest.mark.parametrize(("flag", "value"), [("--arch", ""), ("--arch", " "),
                                                 ("--preset", "")])
    def test_empty_values(self, flag: str, value: str, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
        """An empty --arch or --preset is not the default net: refused."""
        code, err = cli(["train", "--out", str(tmp_path / "o"), flag, value], capsys)
        assert_one_line_error(code, err, f"argument {flag}: expected a non-empty value")
        assert not (tmp_path / "o").exists()

    @pytest.mark.parametrize(("flag", "value"), [("--experiment", ""), ("--task", ""),
                                                 ("--ray-address", "")])
    def test_empty_sweep_values(self, flag: str, value: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
        """Empty names in a sweep are refused too."""
        code, err = cli(["sweep", "--store", str(tmp_path / "s.sqlite"), flag, value], capsys)
        assert_one_line_error(code, err, f"argument {flag}: expected a non-empty value")

    def test_missing_data_dir_for_a_data_set_that_needs_none(self, tmp_path: Path) -> None:
        """digits needs no data folder, but a wrong one given in a config is still refused."""
        config = with_changes(RunConfig(), {"data.dataset": "digits",
                                            "data.data_dir": str(tmp_path / "nope")})
        with pytest.raises(DataError, match=r"`data.data_dir` must be an existing folder, got "
                                            r".*nope', which does not exist"):
            data_module.load(config.data, seed=0)

    def test_divergence_far_above_chance(self, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        """lr 1e6 keeps the loss finite but orders above chance: the run is diverged."""
        code, _ = cli(["train", *FAST, "--epochs", "5", "--lr", "1e6", "--out",
                       str(tmp_path / "o")], capsys)
        result = json.loads((tmp_path / "o" / "result.json").read_text())
        assert code == 1 and result["status"] == "diverged"
        assert result["diverged_epoch"] == 3 and result["test_error"] is None
        losses = [row["train_loss"] for row in result["history"]]
        assert all(loss > DIVERGENCE_FACTOR * np.log(10) for loss in losses)

    def test_healthy_run_is_not_diverged(self, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
        """The rule leaves a normal run alone."""
        assert cli(["train", *FAST, "--epochs", "4", "--out", str(tmp_path / "o")],
                   capsys)[0] == 0


# ---------------------------------------------------------------------- read-only stores
class TestReadOnlyStore:
    """A store on read-only media: readers read it, writers say "read-only"."""

    def test_readers_read_and_writers_say_read_only(
            self, read_only: tuple[Path, object], store: Path, tmp_path: Path,
            capsys: pytest.CaptureFixture[str]) -> None:
        media, seal = read_only
        shutil.copy(store, media / "runs.sqlite")
        seal()  # type: ignore[operator]
        ro = media / "runs.sqlite"
        before = snapshot(media)
        assert cli(["runs", "--store", str(ro)], capsys)[0] == 0
        code, err = cli(["export", "--store", str(ro), "--out", str(tmp_path / "t.csv")],
                        capsys)
        assert code == 0 and (tmp_path / "t.csv").read_text().count("\n") == 3
        assert cli(["report", "all", "--budget", "smoke", "--store", str(ro), "--out",
                    str(tmp_path / "report")], capsys)[0] in (0, 1)
        with Store.open_readonly(ro) as db:
            assert len(db.records()) == 2
        code, err = cli(["sweep", "--task", TASK, "--store", str(ro)], capsys)
        assert_one_line_error(code, err, "read-only")
        assert "corrupt" not in err
        with pytest.raises(StoreError, match="read-only") as info:
            Store(ro)
        assert "corrupt" not in str(info.value)
        assert snapshot(media) == before


# ------------------------------------------------------------------- refused --resume
def test_refused_resume_leaves_every_file(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--resume with a checkpoint of another config: exit 2, config.toml and all else kept."""
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    code, err = cli(["train", *FAST, "--lr", "0.0123", "--out", str(out), "--resume"], capsys)
    assert_one_line_error(code, err, "belongs to another config")
    assert snapshot(out) == before


# --------------------------------------------------------------------------------- symlinks
class TestSymlinks:
    """Links planted where outputs go are replaced, never written through."""

    @pytest.fixture
    def victim(self, tmp_path: Path) -> Path:
        path = tmp_path / "victim.txt"
        path.write_text("precious")
        return path

    def test_train_out(self, tmp_path: Path, victim: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
        """config.toml, result.json, history.csv, learning_curves.png: all links replaced."""
        out = tmp_path / "run"
        out.mkdir()
        names = ["config.toml", "result.json", "history.csv", "learning_curves.png"]
        for name in names:
            (out / name).symlink_to(victim)
        assert cli(["train", *FAST, "--out", str(out)], capsys)[0] == 0
        assert victim.read_text() == "precious"
        for name in names:
            assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
        assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []

    def test_export_out(self, store: Path, victim: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
        """export --out on a link replaces the link."""
        link = tmp_path / "table.csv"
        link.symlink_to(victim)
        assert cli(["export", "--store", str(store), "--out", str(link)], capsys)[0] == 0
        assert victim.read_text() == "precious" and not link.is_symlink()

    def test_report_out(self, victim: Path, tmp_path: Path) -> None:
        """index.html, the old fixed temp name, tables and figures: links replaced; an
        experiment folder that is a link is refused."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from dropoutlab.report import ReportError, write_report
        from dropoutlab.report.content import Analysis, Figure, Table
        from dropoutlab.report.header import ReportMeta

        out = tmp_path / "report"
        (out / "exp").mkdir(parents=True)
        for name in ("index.html", "index.html.tmp", "exp/t.md", "exp/t.csv", "exp/f.png",
                     "exp/f.svg"):
            (out / name).symlink_to(victim)
        fig = plt.figure()

        def analysis() -> Analysis:
            return Analysis("exp", "E", "ref", tables=[Table("t", "T", ("c",), ((1,),))],
                            figures=[Figure("f", "F", plt.figure())])

        meta = ReportMeta(budget="smoke", command="test")
        write_report([analysis()], out, meta)
        plt.close(fig)
        assert victim.read_text() == "precious"
        for name in ("index.html", "exp/t.md", "exp/t.csv", "exp/f.png", "exp/f.svg"):
            assert not (out / name).is_symlink()
        assert (out / "index.html.tmp").is_symlink()  # no longer a name the report uses
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        shutil.rmtree(out / "exp")
        (out / "exp").symlink_to(elsewhere)
        with pytest.raises(ReportError, match="is a symbolic link"):
            write_report([analysis()], out, meta)
        assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("flags", "words"), [
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "where nothing answers"),
    (["--ray-address", "127.0.0.1:1"], "only used with executor='ray'"),
    (["--workers", "4096"], "must not exceed the"),
])
def test_refused_sweep_creates_nothing(flags: list[str], words: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Executor settings that cannot work are refused before the store or any folder exists."""
    code, err = cli(["sweep", "--task", TASK, "--store", str(tmp_path / "s.sqlite"), *flags],
                    capsys)
    assert_one_line_error(code, err, words)
    assert list(tmp_path.iterdir()) == []
