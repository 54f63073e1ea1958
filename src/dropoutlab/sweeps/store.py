"""The results store: one SQLite file (WAL mode) holding every run of every sweep (design.md).

A run is keyed by the hash of its fully resolved config and task (:attr:`Job.key`); a primary key
makes a second copy impossible, and a link table records which experiments asked for it (the
same run serves several experiments and is computed once). Each record holds the status
(``pending``, ``running``, ``done``, ``failed``, ``diverged``), attempts, the claiming worker and
its heartbeat, the config, final metrics, per-epoch history, extras, a failure's traceback, wall
time, versions, git commit and hardware.

Every write is one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), so a process killed at any
instruction leaves the file readable and consistent. Runs are *claimed* atomically: a claim
succeeds only on a pending run, a failed one being retried, or a running one whose holder is
dead (its pid gone on this host, or its heartbeat stale), so two live sweeps never run the same
config. The schema is versioned and migrated forward in a transaction
(:mod:`dropoutlab.sweeps.schema`); a newer, foreign, corrupt or non-SQLite file is refused and
left untouched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropoutlab.atomic_io import check_input_file
from dropoutlab.errors import PathError, StoreError
from dropoutlab.run_status import RUN_STATUSES
from dropoutlab.sweeps.job import Job
from dropoutlab.sweeps.schema import (
    SCHEMA_VERSION,
    check_identity,
    check_magic,
    migrate,
    transaction,
)

__all__ = [
    "DEFAULT_STORE",
    "SCHEMA_VERSION",
    "RunRecord",
    "Store",
    "worker_id",
]

log = logging.getLogger(__name__)

DEFAULT_STORE = Path("dropoutlab-runs") / "runs.sqlite"


@dataclass(frozen=True)
class RunRecord:
    """One stored run, as the CLI, exports and reports read it."""

    config_hash: str
    task: str
    seed: int
    status: str
    attempts: int
    resumed: int  # attempts that continued from a checkpoint
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    extras: dict[str, Any]
    error: str | None
    seconds: float
    versions: dict[str, Any]
    git_commit: str | None
    hardware: dict[str, Any]
    worker: str | None
    heartbeat: float | None
    created: float
    updated: float
    names: dict[str, str] = field(default_factory=dict)  # experiment → its label for the run
    focus: str | None = None  # the experiment this record was read through, if any

    @property
    def experiments(self) -> tuple[str, ...]:
        """Every experiment that asked for this run, sorted."""
        return tuple(sorted(self.names))

    @property
    def experiment(self) -> str | None:
        """The experiment it was read through, else the first (sorted) that asked for it."""
        if self.focus is not None:
            return self.focus
        return self.experiments[0] if self.names else None

    @property
    def name(self) -> str | None:
        """The label the first experiment gave this run."""
        return self.names[self.experiment] if self.experiment is not None else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``dropoutlab runs --json`` prints)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "focus"}
        data.update(experiment=self.experiment, experiments=list(self.experiments),
                    name=self.name)
        return data


def worker_id() -> str:
    """``host:pid`` of this process: what a claim records as its holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed but unreaped child still answers kill(0): look at its state
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _holder_dead(worker: str | None, heartbeat: float | None, now: float,
                 stale_after: float) -> bool:
    """Whether a running run's holder is gone: stale heartbeat, or pid dead on this host."""
    if heartbeat is None or now - heartbeat > stale_after:
        return True
    host, _, pid = (worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return int(pid) != os.getpid() and not _pid_alive(int(pid))
    return False


class Store:
    """A results store file; use as a context manager.

    Args:
        path: The SQLite file (created with its folder when missing).
        readonly: Open without writing anything (reports, ``runs``, ``export``).

    Raises:
        StoreError: the file is not SQLite, is corrupt, belongs to something else, was written
            by a newer dropoutlab, or cannot be created/written. The file is left untouched.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._db = self._open()

    @classmethod
    def open_readonly(cls, path: str | Path = DEFAULT_STORE) -> Store:
        """Open an existing store for reading only (it must exist)."""
        return cls(path, readonly=True)

    # ----------------------------------------------------------------------------- opening
    def _open(self) -> sqlite3.Connection:
        where = str(self.path)
        if self.path.is_dir():
            raise StoreError(f"store {where!r} is a directory; expected an SQLite file path")
        existed = self.path.exists()
        if existed:  # a FIFO would block the first read forever; a device is no store either
            try:
                check_input_file(self.path, "the store",
                                 hint="pass the path of an SQLite results store (--store)")
            except PathError as err:
                raise StoreError(str(err)) from None
        if existed and not self.readonly and _read_only(self.path):
            raise StoreError(f"store {where!r} is read-only (read-only media, or no write "
                             f"permission on it or its folder); `dropoutlab runs`, `export` and "
                             f"`report` can read it; to run, pass --store on writable media")
        if not existed and self.readonly:
            raise StoreError(f"store {where!r} does not exist (run a sweep first, or pass "
                             f"--store PATH)")
        if existed and self.path.stat().st_size > 0:
            check_magic(self.path)
        if not existed:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create store {where!r}: {err.strerror or err}") from None
        try:
            if self.readonly:
                db = self._connect_readonly()
            else:
                db = sqlite3.connect(where, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open store {where!r}: {err}") from None
        try:
            check_identity(db, self.path, readonly=self.readonly)
            if not self.readonly:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                db.execute("PRAGMA foreign_keys = ON")
                migrate(db, self.path)
        except BaseException as err:
            db.close()
            if not existed and self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()  # leave no empty file behind from a failed creation
            if isinstance(err, sqlite3.Error):
                if _is_read_only_error(err):
                    raise StoreError(f"store {where!r} is read-only ({err}); `dropoutlab runs`, "
                                     f"`export` and `report` can read it; to run, pass --store "
                                     f"on writable media") from None
                raise StoreError(f"cannot use store {where!r}: {err}") from None
            raise
        return db

    def _connect_readonly(self) -> sqlite3.Connection:
        """``mode=ro``; on read-only media (no -shm/-wal can be made) SQLite's ``immutable``."""
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:  # cannot open its journal: read-only media
            db.close()
        except sqlite3.DatabaseError:  # corrupt: check_identity says so, naming the file
            return db
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            log.warning("store %s is on read-only media with an unmerged write-ahead log; "
                        "the runs written last may be missing", self.path)
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30,
                               isolation_level=None, check_same_thread=False)

    # --------------------------------------------------------------------- context manager
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"store {str(self.path)!r} was opened read-only")
        with self._lock:
            try:
                with transaction(self._db):
                    yield self._db
            except sqlite3.Error as err:
                kind = "is read-only" if _is_read_only_error(err) else "cannot be written"
                raise StoreError(f"store {str(self.path)!r} {kind}: {err}; nothing was "
                                 f"changed; free space or pass --store on writable media"
                                 ) from None

    # ------------------------------------------------------------------------------ writes
    def register(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Add the jobs' runs (pending unless already stored) and their experiment links.

        Returns:
            ``{config_hash: status}`` for every job, as stored after the call.
        """
        now = time.time()
        keyed = [(job.key, job) for job in jobs]
        with self._write() as db:
            for key, job in keyed:
                db.execute(
                    "INSERT OR IGNORE INTO runs (config_hash, task, seed, config, created, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, job.task, job.config.seed, _dumps(job.config.to_dict()), now, now),
                )
                db.execute(
                    "INSERT INTO memberships (experiment, config_hash, name) VALUES (?, ?, ?) "
                    "ON CONFLICT (experiment, config_hash) DO UPDATE SET name = excluded.name",
                    (job.experiment, key, job.name),
                )
        return self.statuses(key for key, _ in keyed)

    def claim(self, key: str, *, retry_failed: bool = False,
              stale_after: float = 60.0) -> str | None:
        """Atomically take a run to execute; returns the claim token, or ``None`` if taken.

        A pending run is claimable; a failed one when ``retry_failed``; a running one only when
        its holder is dead (pid gone on this host, or no heartbeat for ``stale_after`` s).
        """
        now = time.time()
        token = uuid.uuid4().hex
        with self._write() as db:
            row = db.execute("SELECT status, worker, heartbeat FROM runs WHERE config_hash = ?",
                             (key,)).fetchone()
            if row is None:
                raise StoreError(f"run {key} is not in store {str(self.path)!r}")
            status, worker, heartbeat = row
            takeable = status == "pending" or (status == "failed" and retry_failed)
            if status == "running" and _holder_dead(worker, heartbeat, now, stale_after):
                log.warning("run %s was held by %s, which is gone; taking it over", key, worker)
                takeable = True
            if not takeable:
                return None
            db.execute(
                "UPDATE runs SET status = 'running', worker = ?, claim = ?, heartbeat = ?, "
                "attempts = attempts + 1, updated = ? WHERE config_hash = ?",
                (worker_id(), token, now, now, key),
            )
        return token

    def heartbeat(self, tokens: Iterable[str]) -> None:
        """Mark the runs held under ``tokens`` as alive now."""
        tokens = list(tokens)
        if not tokens:
            return
        marks = ",".join("?" * len(tokens))
        with self._write() as db:
            db.execute(f"UPDATE runs SET heartbeat = ? WHERE claim IN ({marks}) "
                       f"AND status = 'running'", (time.time(), *tokens))

    def finish(self, key: str, token: str, outcome: Mapping[str, Any],
               git_commit: str | None = None) -> bool:
        """Store an attempt's outcome (from :func:`dropoutlab.sweeps.execution.execute`).

        ``done``/``diverged``/``failed`` are stored as such; ``interrupted`` puts the run back
        to ``pending`` (it resumes from its checkpoint). Returns ``False`` if the claim was
        lost (another process took the run over), in which case nothing is written.
        """
        status = outcome["status"]
        stored = "pending" if status == "interrupted" else status
        if stored not in RUN_STATUSES:
            raise ValueError(f"outcome status must be one of {RUN_STATUSES} or 'interrupted', "
                             f"got {status!r}")
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, claim = NULL, heartbeat = NULL, metrics = ?, "
                "history = ?, extras = ?, error = ?, seconds = seconds + ?, "
                "resumed = resumed + ?, versions = ?, "
                "git_commit = ?, hardware = ?, updated = ? "
                "WHERE config_hash = ? AND claim = ? AND status = 'running'",
                (stored, _dumps(outcome.get("metrics") or {}),
                 _dumps(outcome.get("history") or []), _dumps(outcome.get("extras") or {}),
                 outcome.get("error"), float(outcome.get("seconds") or 0.0),
                 int(bool(outcome.get("resumed"))),
                 _dumps(outcome.get("versions") or {}), git_commit,
                 _dumps({**(outcome.get("hardware") or {}), "host": outcome.get("host")}),
                 now, key, token),
            )
        if cursor.rowcount != 1:
            log.warning("run %s: claim lost before its result was stored; dropped", key)
            return False
        return True

    def release(self, key: str, token: str, error: str | None = None) -> None:
        """Give a claimed run back (``pending``) without an outcome, e.g. on a hard stop."""
        with self._write() as db:
            db.execute("UPDATE runs SET status = 'pending', claim = NULL, heartbeat = NULL, "
                       "error = coalesce(?, error), updated = ? "
                       "WHERE config_hash = ? AND claim = ?", (error, time.time(), key, token))

    # ------------------------------------------------------------------------------- reads
    def statuses(self, keys: Iterable[str]) -> dict[str, str]:
        """``{config_hash: status}`` for the given keys that are stored."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._read(f"SELECT config_hash, status FROM runs "
                                        f"WHERE config_hash IN ({marks})", chunk))
        return found

    def records(self, experiment: str | None = None,
                status: str | None = None) -> list[RunRecord]:
        """Stored runs, optionally of one experiment and/or one status, oldest first."""
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"`status` must be one of {RUN_STATUSES}, got status={status!r}")
        where, params = [], []
        if experiment is not None:
            where.append("config_hash IN (SELECT config_hash FROM memberships "
                         "WHERE experiment = ?)")
            params.append(experiment)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            rows = self._read(sql + " ORDER BY created, config_hash", params, named=True)
            links: dict[str, dict[str, str]] = {}
            for exp, key, name in self._read("SELECT experiment, config_hash, name "
                                             "FROM memberships", ()):
                links.setdefault(key, {})[exp] = name
        records = [_record(row, links.get(row["config_hash"], {}), self.path) for row in rows]
        if experiment is not None:  # read through X, a record's experiment and name are X's
            records = [dataclasses.replace(r, focus=experiment) for r in records]
        return records

    def get(self, key: str) -> RunRecord | None:
        """One run by its key, or ``None``."""
        return next((r for r in self.records() if r.config_hash == key), None)

    def experiments(self) -> list[str]:
        """Every experiment with at least one run in the store."""
        with self._lock:
            rows = self._read("SELECT DISTINCT experiment FROM memberships ORDER BY 1", ())
        return [row[0] for row in rows]

    def _read(self, sql: str, params: Iterable[Any], *, named: bool = False) -> list[Any]:
        try:
            cursor = self._db.execute(sql, tuple(params))
            if named:
                columns = [c[0] for c in cursor.description]
                return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            return cursor.fetchall()
        except sqlite3.Error as err:
            raise StoreError(f"cannot read store {str(self.path)!r}: {err}") from None


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _read_only(path: Path) -> bool:
    """Whether an existing store cannot be written (its file, or its folder for the journal)."""
    return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK))


def _is_read_only_error(err: sqlite3.Error) -> bool:
    text = str(err).lower()
    return "readonly" in text or "read-only" in text


_JSON_COLUMNS = {"config": dict, "metrics": dict, "history": list, "extras": dict,
                 "versions": dict, "hardware": dict}


def _record(row: Mapping[str, Any], names: dict[str, str], path: Path) -> RunRecord:
    parsed: dict[str, Any] = {}
    for column, kind in _JSON_COLUMNS.items():
        try:
            parsed[column] = json.loads(row[column])
            ok = isinstance(parsed[column], kind)
        except (json.JSONDecodeError, TypeError):
            ok = False
        if not ok:
            raise StoreError(
                f"store {str(path)!r}, run {row['config_hash']}: column `{column}` must hold a "
                f"JSON {'object' if kind is dict else 'list'}, got {str(row[column])[:40]!r}; "
                f"the row is damaged: restore the store from a copy, or delete that run's row "
                f"(sqlite3) and run the sweep again")
    return RunRecord(
        config_hash=row["config_hash"], task=row["task"], seed=row["seed"],
        status=row["status"], attempts=row["attempts"], resumed=row["resumed"],
        config=parsed["config"],
        metrics=parsed["metrics"], history=parsed["history"],
        extras=parsed["extras"], error=row["error"], seconds=row["seconds"],
        versions=parsed["versions"], git_commit=row["git_commit"],
        hardware=parsed["hardware"], worker=row["worker"],
        heartbeat=row["heartbeat"], created=row["created"], updated=row["updated"],
        names=names,
    )


