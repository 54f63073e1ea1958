"""The SQLite results store: schema and migrations, refusals, claims, crash consistency."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dropoutlab.config import RunConfig
from dropoutlab.errors import StoreError
from dropoutlab.sweeps import schema as schema_module
from dropoutlab.sweeps.job import Job
from dropoutlab.sweeps.store import SCHEMA_VERSION, Store

TASK = "sweep_tasks:fake_train"


def job(seed: int, experiment: str = "exp", name: str | None = None) -> Job:
    return Job(experiment, name or f"seed={seed}", RunConfig(epochs=2, seed=seed), TASK)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outcome(status: str = "done", **metrics: float) -> dict:
    return {"status": status, "metrics": metrics or {"loss": 0.5}, "history": [{"epoch": 1}],
            "extras": {"curve": [1, 2]}, "error": None, "seconds": 1.5,
            "versions": {"torch": "x"}, "hardware": {"cpu": "y"}, "host": "h"}


class TestOpening:
    def test_new_store_is_wal_versioned_and_ours(self, tmp_path: Path) -> None:
        """A fresh store is created with its folder, in WAL mode, at the current version."""
        path = tmp_path / "deep" / "runs.sqlite"
        with Store(path):
            pass
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA application_id").fetchone()[0] == schema_module.APPLICATION_ID

    def test_not_sqlite_is_refused_untouched(self, tmp_path: Path) -> None:
        """A text file passed as the store is refused and not modified."""
        path = tmp_path / "notes.txt"
        path.write_text("my precious notes\n" * 100)
        before = digest(path)
        with pytest.raises(StoreError, match="not an SQLite file"):
            Store(path)
        assert digest(path) == before
        assert not Path(str(path) + "-wal").exists()

    def test_foreign_sqlite_is_refused_untouched(self, tmp_path: Path) -> None:
        """Another application's SQLite file is refused and not modified."""
        path = tmp_path / "other.db"
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE accounts (id INTEGER)")
        db.commit()
        db.close()
        before = digest(path)
        with pytest.raises(StoreError, match="another application"):
            Store(path)
        assert digest(path) == before

    def test_newer_schema_is_refused_untouched(self, tmp_path: Path) -> None:
        """A store written by a newer dropoutlab is refused with the versions in the message."""
        path = tmp_path / "runs.sqlite"
        with Store(path) as db:
            db.register([job(0)])
        raw = sqlite3.connect(path)
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        raw.close()
        before = digest(path)
        with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
            Store(path)
        assert digest(path) == before

    def test_corrupt_store_is_refused_untouched(self, tmp_path: Path) -> None:
        """Garbage in a store's pages is detected on open; the file is not modified."""
        path = tmp_path / "runs.sqlite"
        with Store(path) as db:
            db.register([job(s) for s in range(50)])
        raw = sqlite3.connect(path)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.execute("PRAGMA journal_mode = DELETE")
        raw.close()
        data = bytearray(path.read_bytes())
        data[2048:6144] = os.urandom(4096)  # scribble over the schema/data pages
        path.write_bytes(bytes(data))
        before = digest(path)
        with pytest.raises(StoreError, match=r"corrupt|not a database|malformed"):
            Store(path)
        assert digest(path) == before

    def test_unwritable_path_is_a_clear_error(self, tmp_path: Path) -> None:
        """A store path under a regular file cannot be created: StoreError, nothing written."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StoreError, match="cannot create store"):
            Store(blocker / "runs.sqlite")
        assert blocker.read_text() == "x"

    def test_directory_path_is_refused(self, tmp_path: Path) -> None:
        """Passing a folder as the store names the problem."""
        with pytest.raises(StoreError, match="is a directory"):
            Store(tmp_path)

    def test_readonly_needs_an_existing_store(self, tmp_path: Path) -> None:
        """Reading a store that does not exist says so and creates nothing."""
        path = tmp_path / "missing.sqlite"
        with pytest.raises(StoreError, match="does not exist"):
            Store.open_readonly(path)
        assert not path.exists()

    def test_readonly_reads_and_refuses_writes(self, tmp_path: Path) -> None:
        """A read-only store lists records and refuses to write."""
        path = tmp_path / "runs.sqlite"
        with Store(path) as db:
            db.register([job(0)])
        with Store.open_readonly(path) as db:
            assert [r.seed for r in db.records()] == [0]
            with pytest.raises(StoreError, match="read-only"):
                db.register([job(1)])


class TestMigrations:
    def test_older_store_is_migrated_with_its_runs(self, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """A version-1 store opened by version-2 code is migrated and keeps its runs."""
        path = tmp_path / "runs.sqlite"
        with Store(path) as db:
            db.register([job(0), job(1)])

        def add_notes(db: sqlite3.Connection) -> None:
            db.execute("ALTER TABLE runs ADD COLUMN notes TEXT NOT NULL DEFAULT ''")

        monkeypatch.setattr(schema_module, "MIGRATIONS", [*schema_module.MIGRATIONS, add_notes])
        monkeypatch.setattr(schema_module, "SCHEMA_VERSION", 2)
        with Store(path) as db:
            assert sorted(r.seed for r in db.records()) == [0, 1]
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
        assert raw.execute("SELECT count(notes) FROM runs").fetchone()[0] == 2

    def test_failed_migration_changes_nothing(self, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
        """A migration that fails halfway is rolled back: version and tables stay as they were."""
        path = tmp_path / "runs.sqlite"
        with Store(path) as db:
            db.register([job(0)])

        def broken(db: sqlite3.Connection) -> None:
            db.execute("ALTER TABLE runs ADD COLUMN notes TEXT")
            db.execute("SELECT no_such_function()")

        monkeypatch.setattr(schema_module, "MIGRATIONS", [*schema_module.MIGRATIONS, broken])
        monkeypatch.setattr(schema_module, "SCHEMA_VERSION", 2)
        with pytest.raises(StoreError):
            Store(path)
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in raw.execute("PRAGMA table_info(runs)")]
        assert "notes" not in columns


class TestRuns:
    def test_one_run_per_config_linked_to_each_experiment(self, tmp_path: Path) -> None:
        """The same config asked for by two experiments is one run with two links."""
        with Store(tmp_path / "s.sqlite") as db:
            db.register([job(0, "a", "first"), job(0, "b", "second"), job(1, "a")])
            assert len(db.records()) == 2
            [shared] = db.records(experiment="b")
            assert shared.experiment == "b" and shared.name == "second"
            assert shared.experiments == ("a", "b")
            assert len(db.records(experiment="a")) == 2
            assert db.experiments() == ["a", "b"]

    def test_unique_key_rejects_a_second_copy(self, tmp_path: Path) -> None:
        """The primary key makes a duplicate run row impossible even by hand."""
        path = tmp_path / "s.sqlite"
        with Store(path) as db:
            db.register([job(0)])
            key = job(0).key
        raw = sqlite3.connect(path)
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("INSERT INTO runs (config_hash, task, seed, config, created, updated) "
                        "VALUES (?, 't', 0, '{}', 0, 0)", (key,))

    def test_finish_stores_everything(self, tmp_path: Path) -> None:
        """A finished run keeps metrics, history, extras, timing, versions and hardware."""
        with Store(tmp_path / "s.sqlite") as db:
            db.register([job(0)])
            key = job(0).key
            token = db.claim(key)
            assert token is not None
            assert db.finish(key, token, outcome(loss=0.25), git_commit="abc")
            [record] = db.records(status="done")
        assert record.metrics == {"loss": 0.25}
        assert record.history == [{"epoch": 1}] and record.extras == {"curve": [1, 2]}
        assert record.attempts == 1 and record.seconds == 1.5 and record.git_commit == "abc"
        assert record.versions == {"torch": "x"} and record.hardware["cpu"] == "y"
        assert record.config == RunConfig(epochs=2, seed=0).to_dict()
        data = record.to_dict()
        for key_name in ("config_hash", "experiment", "status", "seed", "metrics"):
            assert key_name in data

    def test_status_filter_is_validated(self, tmp_path: Path) -> None:
        """An unknown status names the valid ones."""
        with Store(tmp_path / "s.sqlite") as db, pytest.raises(ValueError, match="`status`"):
            db.records(status="finished")


class TestClaims:
    def test_a_claimed_run_cannot_be_claimed_again(self, tmp_path: Path) -> None:
        """Only one claim on a run held by a live process succeeds."""
        with Store(tmp_path / "s.sqlite") as db:
            db.register([job(0)])
            assert db.claim(job(0).key) is not None
            assert db.claim(job(0).key) is None
            assert db.claim(job(0).key, retry_failed=True) is None

    def _held_by(self, path: Path, worker: str, heartbeat: float) -> None:
        raw = sqlite3.connect(path)
        raw.execute("UPDATE runs SET status='running', worker=?, claim='old', heartbeat=?",
                    (worker, heartbeat))
        raw.commit()
        raw.close()

    def test_run_of_a_dead_process_is_taken_over(self, tmp_path: Path) -> None:
        """A run held by a pid that no longer exists on this host is reclaimable at once."""
        path = tmp_path / "s.sqlite"
        with Store(path) as db:
            db.register([job(0)])
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        self._held_by(path, f"{socket.gethostname()}:{child.pid}", time.time())
        with Store(path) as db:
            token = db.claim(job(0).key)
            assert token is not None
            assert not db.finish(job(0).key, "old", outcome())  # the dead holder's late write
            assert db.finish(job(0).key, token, outcome())

    def test_run_of_a_live_process_is_left_alone(self, tmp_path: Path) -> None:
        """A run held by a live process with a fresh heartbeat is not taken."""
        path = tmp_path / "s.sqlite"
        with Store(path) as db:
            db.register([job(0)])
        self._held_by(path, f"{socket.gethostname()}:{os.getppid()}", time.time())
        with Store(path) as db:
            assert db.claim(job(0).key) is None

    def test_stale_heartbeat_is_taken_over(self, tmp_path: Path) -> None:
        """A run held on another host is reclaimable once its heartbeat is stale."""
        path = tmp_path / "s.sqlite"
        with Store(path) as db:
            db.register([job(0)])
        self._held_by(path, "elsewhere:123", time.time() - 30)
        with Store(path) as db:
            assert db.claim(job(0).key, stale_after=60) is None
            assert db.claim(job(0).key, stale_after=10) is not None

    def test_interrupted_goes_back_to_pending(self, tmp_path: Path) -> None:
        """An interrupted attempt leaves the run pending, claimable again."""
        with Store(tmp_path / "s.sqlite") as db:
            db.register([job(0)])
            token = db.claim(job(0).key)
            assert token and db.finish(job(0).key, token, outcome("interrupted"))
            assert db.statuses([job(0).key]) == {job(0).key: "pending"}
            assert db.claim(job(0).key) is not None

    def test_failed_is_claimed_only_for_a_retry(self, tmp_path: Path) -> None:
        """A failed run is claimable only when the caller retries failures."""
        with Store(tmp_path / "s.sqlite") as db:
            db.register([job(0)])
            token = db.claim(job(0).key)
            assert token and db.finish(job(0).key, token, {**outcome("failed"), "error": "tb"})
            assert db.claim(job(0).key) is None
            assert db.claim(job(0).key, retry_failed=True) is not None
            assert db.records()[0].attempts == 2


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import job, outcome
    from dropoutlab.sweeps.store import Store
    with Store({path!r}) as db:
        jobs = [job(s) for s in range(100000)]
        i = 0
        while True:
            db.register(jobs[i:i + 5])
            for j in jobs[i:i + 5]:
                token = db.claim(j.key)
                db.finish(j.key, token, outcome(loss=float(j.config.seed)))
            print(i, flush=True)
            i += 5
""")


def test_sigkill_during_writes_leaves_a_consistent_store(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-transaction leaves a readable, consistent store."""
    path = tmp_path / "s.sqlite"
    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(20):  # let it commit a few batches, then kill it wherever it is
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    with Store(path) as db:
        records = db.records()
    assert len(records) >= 100
    for record in records:  # every run is either finished with its metrics, or not finished
        assert record.status in ("pending", "running", "done")
        if record.status == "done":
            assert record.metrics == {"loss": float(record.seed)}
            assert record.history == [{"epoch": 1}]
        else:
            assert record.metrics == {}
