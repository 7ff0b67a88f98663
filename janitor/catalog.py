"""The catalog: an embedded SQLite database under state_dir that journals every change.

One row per file acted on. A row is written with state `planned` *before* the change
and updated to `done` or `failed` after it, in batches, so that a run killed half way
leaves rows that `reconcile()` can settle by looking at the filesystem. The same rows
are the trash index (restore, purge) and the history.

Paths are stored as bytes (BLOB) so that names that are not valid UTF-8 survive.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import CatalogError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    command TEXT,
    pid INTEGER,
    host TEXT,
    files INTEGER DEFAULT 0,
    bytes INTEGER DEFAULT 0,
    errors INTEGER DEFAULT 0,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    ts REAL NOT NULL,
    policy TEXT NOT NULL,
    action TEXT NOT NULL,
    root BLOB NOT NULL,
    path BLOB NOT NULL,
    size INTEGER,
    mtime REAL,
    atime REAL,
    mode INTEGER,
    uid INTEGER,
    gid INTEGER,
    dev INTEGER,
    ino INTEGER,
    state TEXT NOT NULL,
    error TEXT,
    trash_path BLOB,
    target TEXT,
    object_key TEXT,
    version_id TEXT,
    sha256 TEXT,
    detail TEXT,
    done_at REAL,
    restored_at REAL,
    purged_at REAL
);
CREATE INDEX IF NOT EXISTS journal_run ON journal(run_id);
CREATE INDEX IF NOT EXISTS journal_state ON journal(state);
CREATE INDEX IF NOT EXISTS journal_trash ON journal(trash_path) WHERE trash_path IS NOT NULL;
"""

JOURNAL_COLUMNS = (
    "run_id", "ts", "policy", "action", "root", "path", "size", "mtime", "atime", "mode",
    "uid", "gid", "dev", "ino", "state", "error", "trash_path", "target", "object_key",
    "version_id", "sha256", "detail",
)  # fmt: skip


@dataclass(slots=True)
class JournalEntry:
    """One journal row, paths decoded back to str (surrogate-escaped where needed)."""

    id: int
    run_id: str
    ts: float
    policy: str
    action: str
    root: str
    path: str
    size: int
    mtime: float
    atime: float
    mode: int
    uid: int
    gid: int
    dev: int
    ino: int
    state: str
    error: str | None
    trash_path: str | None
    target: str | None
    object_key: str | None
    version_id: str | None
    sha256: str | None
    detail: str | None
    done_at: float | None
    restored_at: float | None
    purged_at: float | None


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _s(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return os.fsdecode(value) if isinstance(value, bytes) else value


class Catalog:
    """Thin, typed access to the catalog database."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
            # WAL + synchronous=NORMAL: a commit survives the process being killed (what the
            # journal must survive) without an fsync per row.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {path} was written by a newer janitor (schema {version}); upgrade janitor"
                )
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute("SELECT count(*) FROM journal").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"catalog {path} cannot be used: {exc}") from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; any database error becomes a CatalogError, rolled back."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            yield
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise CatalogError(f"catalog {self.path}: {exc}") from None

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._transaction():
            self.db.executemany(sql, rows)

    # runs -----------------------------------------------------------------------------

    def start_run(self, run_id: str, command: str) -> None:
        self._write(
            "INSERT INTO runs(run_id, started, status, command, pid, host) VALUES (?,?,?,?,?,?)",
            [(run_id, time.time(), "running", command, os.getpid(), os.uname().nodename)],
        )

    def finish_run(self, run_id: str, status: str, files: int, nbytes: int, errors: int, summary: str) -> None:
        self._write(
            "UPDATE runs SET finished=?, status=?, files=?, bytes=?, errors=?, summary=? WHERE run_id=?",
            [(time.time(), status, files, nbytes, errors, summary, run_id)],
        )

    def last_run(self) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    # journal --------------------------------------------------------------------------

    def add_planned(self, rows: list[dict[str, Any]]) -> list[int]:
        """Journal intents in one transaction; returns their ids in order."""
        if not rows:
            return []
        blob_columns = {i for i, c in enumerate(JOURNAL_COLUMNS) if c in ("root", "path", "trash_path")}
        sql = (
            f"INSERT INTO journal(id, {', '.join(JOURNAL_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' for _ in JOURNAL_COLUMNS)})"
        )
        with self._transaction():
            # We hold the write lock, so the next ids are ours: give them explicitly and
            # insert the whole batch with one executemany.
            first = (self.db.execute("SELECT COALESCE(MAX(id), 0) FROM journal").fetchone()[0]) + 1
            ids = list(range(first, first + len(rows)))
            values = []
            for row_id, row in zip(ids, rows, strict=True):
                value = [row.get(c) for c in JOURNAL_COLUMNS]
                for i in blob_columns:
                    value[i] = _b(value[i])
                values.append((row_id, *value))
            self.db.executemany(sql, values)
        return ids

    def set_outcomes(self, outcomes: list[tuple[int, str, str | None, dict[str, Any]]]) -> None:
        """(id, state, error, extra columns) for each row, in one transaction."""
        if not outcomes:
            return
        now = time.time()
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for row_id, state, error, extra in outcomes:
            keys = tuple(sorted(extra))
            values: list[Any] = [state, error, now]
            values.extend(_b(extra[k]) if k in ("trash_path", "path") else extra[k] for k in keys)
            values.append(row_id)
            by_columns.setdefault(keys, []).append(values)
        with self._transaction():
            for keys, rows in by_columns.items():
                sets = ", ".join(["state=?", "error=?", "done_at=?", *(f"{k}=?" for k in keys)])
                self.db.executemany(f"UPDATE journal SET {sets} WHERE id=?", rows)

    def mark(self, ids: Iterable[int], column: str, when: float | None = None) -> None:
        assert column in ("restored_at", "purged_at")
        self._write(f"UPDATE journal SET {column}=? WHERE id=?", [(when or time.time(), i) for i in ids])

    def entries(self, where: str = "1", params: Iterable[Any] = (), order: str = "id") -> Iterator[JournalEntry]:
        cur = self.db.execute(f"SELECT * FROM journal WHERE {where} ORDER BY {order}", list(params))
        for row in cur:
            values = list(row)
            # root, path, trash_path are BLOBs
            for idx in (5, 6, 17):
                values[idx] = _s(values[idx])
            yield JournalEntry(*values)

    def unfinished(self, current_run: str) -> list[JournalEntry]:
        return list(self.entries("state='planned' AND run_id != ?", [current_run]))

    def expired_in_trash(self, policy: str, retain: float, now: float | None = None) -> list[JournalEntry]:
        """This policy's trash entries older than `retain` seconds: what its next run purges."""
        cutoff = (time.time() if now is None else now) - retain
        return list(self.entries(
            "policy=? AND state='done' AND trash_path IS NOT NULL AND restored_at IS NULL "
            "AND purged_at IS NULL AND done_at < ?",
            [policy, cutoff],
        ))

    def trash_totals(self) -> tuple[int, int]:
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM journal WHERE state='done' AND trash_path IS NOT NULL "
            "AND restored_at IS NULL AND purged_at IS NULL"
        ).fetchone()
        return int(row[0]), int(row[1])

    def in_trash(self) -> Iterator[JournalEntry]:
        return self.entries(
            "state='done' AND trash_path IS NOT NULL AND restored_at IS NULL AND purged_at IS NULL"
        )


def open_catalog(state_dir: str) -> Catalog:
    return Catalog(os.path.join(state_dir, "catalog.db"))


@contextmanager
def existing_catalog(state_dir: str) -> Iterator[Catalog | None]:
    """The catalog for reading, or None before the first run created it (read-only commands
    must not create a state directory)."""
    if not os.path.exists(os.path.join(state_dir, "catalog.db")):
        yield None
        return
    catalog = open_catalog(state_dir)
    try:
        yield catalog
    finally:
        catalog.close()
