"""The results store's schema and its migrations (:mod:`dropoutlab.sweeps.store` uses them).

The schema is versioned with ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes a store from
version ``i`` to ``i + 1`` (version 0 is an empty file), and :func:`migrate` runs the missing
steps in one transaction, so a failing step leaves the file as it was. ``PRAGMA
application_id`` marks the file as a dropoutlab store: a newer, foreign, corrupt or non-SQLite
file is refused and left untouched.

To change the schema, append a function to :data:`MIGRATIONS` (never edit a released one).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dropoutlab.errors import StoreError

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "check_identity", "check_magic",
           "migrate", "transaction"]

log = logging.getLogger("dropoutlab.sweeps.store")

APPLICATION_ID = 0x44524C42  # "DRLB" in the SQLite header: marks the file as ours
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _create_v1(db: sqlite3.Connection) -> None:
    """Schema version 1: runs, experiment ↔ run links."""
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(
        """CREATE TABLE runs (
            config_hash TEXT PRIMARY KEY,
            task        TEXT NOT NULL,
            seed        INTEGER NOT NULL,
            config      TEXT NOT NULL,
            status      TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending','running','done','failed','diverged')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            resumed     INTEGER NOT NULL DEFAULT 0,
            worker      TEXT,
            claim       TEXT,
            heartbeat   REAL,
            metrics     TEXT NOT NULL DEFAULT '{}',
            history     TEXT NOT NULL DEFAULT '[]',
            extras      TEXT NOT NULL DEFAULT '{}',
            error       TEXT,
            seconds     REAL NOT NULL DEFAULT 0,
            versions    TEXT NOT NULL DEFAULT '{}',
            git_commit  TEXT,
            hardware    TEXT NOT NULL DEFAULT '{}',
            created     REAL NOT NULL,
            updated     REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX runs_status ON runs (status)")
    db.execute(
        """CREATE TABLE memberships (
            experiment  TEXT NOT NULL,
            config_hash TEXT NOT NULL REFERENCES runs (config_hash),
            name        TEXT NOT NULL,
            PRIMARY KEY (experiment, config_hash)
        )"""
    )


# MIGRATIONS[i] takes a store from schema version i to i + 1; version 0 is an empty file.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_create_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def check_magic(path: Path) -> None:
    """Refuse a non-empty file that does not start with SQLite's header."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as err:
        raise StoreError(f"cannot read store {str(path)!r}: {err.strerror}") from None
    if head != _SQLITE_MAGIC:
        raise StoreError(f"{str(path)!r} is not a dropoutlab store (not an SQLite "
                         f"file); refusing to touch it — pass another --store PATH")


def check_identity(db: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    """Refuse a corrupt, foreign or too new store, and an old one opened read-only."""
    where = str(path)
    try:
        # One read transaction: a store another process is creating right now is seen either
        # empty or whole, never with its tables but not yet its application id.
        db.execute("BEGIN")
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            check = db.execute("PRAGMA quick_check").fetchone()[0] if tables else "ok"
        finally:
            if db.in_transaction:
                db.execute("COMMIT")
    except sqlite3.OperationalError as err:  # not corruption: cannot open, lock, read-only
        raise StoreError(f"cannot read store {where!r} ({err}); check that the file and its "
                         f"folder are readable (and writable, to run a sweep)") from None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as err:  # garbage text in the schema
        raise StoreError(f"store {where!r} is corrupt or not a database ({err}); "
                         f"refusing to touch it") from None
    if check != "ok":
        raise StoreError(f"store {where!r} is corrupt ({check}); refusing to touch it")
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise StoreError(f"{where!r} is an SQLite file of another application, not a "
                         f"dropoutlab store; refusing to touch it")
    if version > SCHEMA_VERSION:
        raise StoreError(f"store {where!r} has schema version {version}, newer than this "
                         f"dropoutlab understands ({SCHEMA_VERSION}); upgrade dropoutlab")
    if readonly and version < SCHEMA_VERSION:
        raise StoreError(f"store {where!r} has the old schema version {version}; open it "
                         f"once for writing (e.g. run a sweep) to migrate it")


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the store to :data:`SCHEMA_VERSION`, all steps in one transaction."""
    with transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
        if version == 0:
            log.info("creating store %s (schema %d)", path, SCHEMA_VERSION)
        for step in range(version, SCHEMA_VERSION):
            if version > 0:
                log.info("migrating store %s from schema %d to %d", path, step, step + 1)
            MIGRATIONS[step](db)
            db.execute(f"PRAGMA user_version = {step + 1}")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock first, all or nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
