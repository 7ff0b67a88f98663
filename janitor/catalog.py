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

SCHEMA_VERSION = 2

# Journal rows are stored compactly (issue 13: a journal row costs at most about 100 bytes on
# disk) and read back through the `journal` view, which has the columns of the first schema:
# every query written against `journal` (history, report, restore, tests) keeps working.
#
# - strings that repeat (run id, policy, action, state, target, an object key's prefix) are
#   interned once in `label`; the states and actions have fixed small ids, so the common
#   ones cost no byte at all in SQLite's record format (0 and 1 are stored in the header);
# - a path is its directory's id in `dirpath` (interned once, with its trailing slash) plus
#   the file name; a trash path or an object key whose last part is the file's own name
#   stores only its prefix;
# - times are integer milliseconds (`done`, `restored`, `purged` after `ts`); a SHA-256 is
#   32 raw bytes.
#
# The view's INSTEAD OF UPDATE/DELETE triggers live in the database, so an UPDATE of the
# view by any client still works (it stores a changed path whole rather than split).
_STATES = ("done", "planned", "failed", "skipped", "aborted")
_ACTIONS = ("delete", "soft-delete", "archive", "truncate", "quota")
_FIXED_LABELS = (*_STATES, *_ACTIONS)
_FIRST_FREE_LABEL = 16
_DONE, _PLANNED = 0, 1
# `done` (ms after `ts`) of a row not yet finished: a 3-byte value, so that recording the
# outcome rewrites the row in place instead of growing it (which splits pages: 8 % more file)
_DONE_PLACEHOLDER = 0x7FFFFF

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
CREATE TABLE IF NOT EXISTS label (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS dirpath (id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS jrow (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    policy INTEGER NOT NULL,
    action INTEGER NOT NULL,
    state INTEGER NOT NULL,
    root INTEGER NOT NULL,
    dir INTEGER NOT NULL,
    name BLOB NOT NULL,
    size INTEGER,
    mtime REAL,
    atime REAL,
    mode INTEGER,
    uid INTEGER,
    gid INTEGER,
    dev INTEGER,
    ino INTEGER,
    done INTEGER,
    error TEXT,
    tdir INTEGER,
    tname BLOB,
    target INTEGER,
    kdir INTEGER,
    kname TEXT,
    version_id TEXT,
    sha BLOB,
    detail TEXT,
    restored INTEGER,
    purged INTEGER
);
CREATE INDEX IF NOT EXISTS jrow_planned ON jrow(id) WHERE state = 1;
CREATE INDEX IF NOT EXISTS jrow_in_trash ON jrow(policy)
    WHERE state = 0 AND tdir IS NOT NULL AND restored IS NULL AND purged IS NULL;
CREATE TABLE IF NOT EXISTS hold (
    id INTEGER PRIMARY KEY,
    pattern BLOB NOT NULL,
    is_glob INTEGER NOT NULL,
    created REAL NOT NULL,
    until REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS journal AS SELECT
    j.id AS id,
    r.text AS run_id,
    j.ts / 1000.0 AS ts,
    p.text AS policy,
    a.text AS action,
    rd.path AS root,
    CAST(d.path || j.name AS BLOB) AS path,
    j.size AS size,
    j.mtime AS mtime,
    j.atime AS atime,
    j.mode AS mode,
    j.uid AS uid,
    j.gid AS gid,
    j.dev AS dev,
    j.ino AS ino,
    s.text AS state,
    j.error AS error,
    CASE WHEN j.tdir IS NULL THEN NULL
         ELSE CAST(td.path || COALESCE(j.tname, j.name) AS BLOB) END AS trash_path,
    t.text AS target,
    CASE WHEN j.kdir IS NULL THEN j.kname
         ELSE k.text || COALESCE(j.kname, CAST(j.name AS TEXT)) END AS object_key,
    j.version_id AS version_id,
    CASE WHEN typeof(j.sha) = 'blob' THEN lower(hex(j.sha)) ELSE j.sha END AS sha256,
    j.detail AS detail,
    CASE WHEN j.done IS NULL OR j.state = 1 THEN NULL ELSE (j.ts + j.done) / 1000.0 END AS done_at,
    (j.ts + j.restored) / 1000.0 AS restored_at,
    (j.ts + j.purged) / 1000.0 AS purged_at
FROM jrow j
JOIN label r ON r.id = j.run
JOIN label p ON p.id = j.policy
JOIN label a ON a.id = j.action
JOIN label s ON s.id = j.state
JOIN dirpath rd ON rd.id = j.root
JOIN dirpath d ON d.id = j.dir
LEFT JOIN dirpath td ON td.id = j.tdir
LEFT JOIN label t ON t.id = j.target
LEFT JOIN label k ON k.id = j.kdir;
CREATE TRIGGER IF NOT EXISTS journal_delete INSTEAD OF DELETE ON journal BEGIN
    DELETE FROM jrow WHERE id = OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS journal_update INSTEAD OF UPDATE ON journal BEGIN
    INSERT OR IGNORE INTO label(text) VALUES (NEW.run_id), (NEW.policy), (NEW.action), (NEW.state);
    INSERT OR IGNORE INTO label(text) SELECT NEW.target WHERE NEW.target IS NOT NULL;
    INSERT OR IGNORE INTO label(text) SELECT NEW.object_key WHERE NEW.object_key IS NOT NULL;
    INSERT OR IGNORE INTO dirpath(path) VALUES (CAST(NEW.root AS BLOB)), (CAST(NEW.path AS BLOB));
    INSERT OR IGNORE INTO dirpath(path) SELECT CAST(NEW.trash_path AS BLOB) WHERE NEW.trash_path IS NOT NULL;
    UPDATE jrow SET
        run = (SELECT id FROM label WHERE text = NEW.run_id),
        ts = CAST(round(NEW.ts * 1000) AS INTEGER),
        policy = (SELECT id FROM label WHERE text = NEW.policy),
        action = (SELECT id FROM label WHERE text = NEW.action),
        state = (SELECT id FROM label WHERE text = NEW.state),
        root = (SELECT id FROM dirpath WHERE path = CAST(NEW.root AS BLOB)),
        dir = CASE WHEN NEW.path IS OLD.path THEN dir
                   ELSE (SELECT id FROM dirpath WHERE path = CAST(NEW.path AS BLOB)) END,
        name = CASE WHEN NEW.path IS OLD.path THEN name ELSE X'' END,
        size = NEW.size, mtime = NEW.mtime, atime = NEW.atime, mode = NEW.mode, uid = NEW.uid,
        gid = NEW.gid, dev = NEW.dev, ino = NEW.ino, error = NEW.error,
        tdir = CASE WHEN NEW.trash_path IS OLD.trash_path THEN tdir WHEN NEW.trash_path IS NULL THEN NULL
                    ELSE (SELECT id FROM dirpath WHERE path = CAST(NEW.trash_path AS BLOB)) END,
        tname = CASE WHEN NEW.trash_path IS OLD.trash_path
                          THEN CASE WHEN NEW.path IS OLD.path THEN tname ELSE COALESCE(tname, name) END
                     WHEN NEW.trash_path IS NULL THEN NULL ELSE X'' END,
        target = (SELECT id FROM label WHERE text = NEW.target),
        kdir = CASE WHEN NEW.object_key IS OLD.object_key THEN kdir WHEN NEW.object_key IS NULL THEN NULL
                    ELSE (SELECT id FROM label WHERE text = NEW.object_key) END,
        kname = CASE WHEN NEW.object_key IS OLD.object_key
                          THEN CASE WHEN NEW.path IS OLD.path OR kdir IS NULL THEN kname
                                    ELSE COALESCE(kname, CAST(name AS TEXT)) END
                     WHEN NEW.object_key IS NULL THEN NULL ELSE '' END,
        version_id = NEW.version_id,
        sha = CASE WHEN NEW.sha256 IS OLD.sha256 THEN sha ELSE NEW.sha256 END,
        detail = NEW.detail,
        done = CASE WHEN NEW.done_at IS NULL THEN NULL
                    ELSE CAST(round(NEW.done_at * 1000) AS INTEGER) - CAST(round(NEW.ts * 1000) AS INTEGER) END,
        restored = CAST(round(NEW.restored_at * 1000) AS INTEGER) - CAST(round(NEW.ts * 1000) AS INTEGER),
        purged = CAST(round(NEW.purged_at * 1000) AS INTEGER) - CAST(round(NEW.ts * 1000) AS INTEGER)
    WHERE id = OLD.id;
END;
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


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _split(path: bytes) -> tuple[bytes, bytes]:
    """(directory with its trailing slash, name): the two parts a journal row stores."""
    head, sep, name = path.rpartition(b"/")
    return head + sep, name


def _ranges(ids: list[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive numbers, in order: [1, 2, 3, 7, 8] -> (1, 3), (7, 8)."""
    ordered = sorted(ids)
    first = last = ordered[0]
    for n in ordered[1:]:
        if n != last + 1:
            yield first, last
            first = n
        last = n
    yield first, last


def _sha_bytes(digest: str | None) -> bytes | str | None:
    if digest is not None and len(digest) == 64:
        try:
            return bytes.fromhex(digest)
        except ValueError:
            pass
    return digest


@dataclass(frozen=True, slots=True)
class Hold:
    """A file (or every file a glob selects) that no policy acts on until `until`."""

    id: int
    pattern: str
    is_glob: bool
    created: float
    until: float
    reason: str

    def pattern_prefix(self) -> bytes:
        """The literal start of the pattern: every path it can select begins with it."""
        raw = os.fsencode(self.pattern)
        if not self.is_glob:
            return raw
        cut = min((i for i in (raw.find(c) for c in (b"*", b"?", b"[")) if i >= 0), default=len(raw))
        return raw[:cut]

    def until_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.until))


class Catalog:
    """Thin, typed access to the catalog database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._labels: dict[str, int] = {}
        self._dirs: dict[bytes, int] = {}
        self._names: dict[int, bytes] = {}  # row id -> file name, for the outcomes of a batch
        try:
            self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
            fresh = self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if fresh:
                # Must precede the first table: free pages are then given back to the
                # filesystem by `incremental_vacuum` after each prune.
                self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            # WAL + synchronous=NORMAL: a commit survives the process being killed (what the
            # journal must survive) without an fsync per row.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {path} was written by a newer janitor (schema {version}); upgrade janitor"
                )
            if version < SCHEMA_VERSION:
                self._migrate()
            self.db.execute("SELECT count(*) FROM jrow").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"catalog {path} cannot be used: {exc}") from None

    def _migrate(self) -> None:
        """Create the schema, moving the rows of a schema-1 catalog into the compact form."""
        with self._transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return  # another process migrated it while we waited for the lock
            old = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='journal'").fetchone() is not None
            if old:
                self.db.execute("ALTER TABLE journal RENAME TO journal_v1")
                for index in ("journal_run", "journal_state", "journal_trash"):
                    self.db.execute(f"DROP INDEX IF EXISTS {index}")
            for statement in _statements(_SCHEMA):
                self.db.execute(statement)
            self.db.executemany("INSERT OR IGNORE INTO label(id, text) VALUES (?, ?)", enumerate(_FIXED_LABELS))
            self.db.execute("INSERT OR IGNORE INTO label(id, text) VALUES (?, '')", [_FIRST_FREE_LABEL - 1])
            if old:
                cur = self.db.execute(
                    f"SELECT id, {', '.join(JOURNAL_COLUMNS)}, done_at, restored_at, purged_at "
                    "FROM journal_v1 ORDER BY id")
                names = [c[0] for c in cur.description]
                while batch := cur.fetchmany(5000):
                    self._insert_rows([self._encode(dict(zip(names, r, strict=True))) for r in batch])
                self.db.execute("DROP TABLE journal_v1")
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            # A catalog made by the first schema: switching to incremental vacuum takes one
            # full VACUUM, once (it also gives back the space of the old, wide rows).
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.db.execute("VACUUM")

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

    # interning (inside a write transaction) -------------------------------------------

    def _label(self, text: str) -> int:
        found = self._labels.get(text)
        if found is None:
            row = self.db.execute("SELECT id FROM label WHERE text=?", [text]).fetchone()
            if row is None:
                row = self.db.execute("INSERT INTO label(text) VALUES (?) RETURNING id", [text]).fetchone()
            found = self._labels[text] = int(row[0])
        return found

    def _dir(self, path: bytes) -> int:
        found = self._dirs.get(path)
        if found is None:
            row = self.db.execute("SELECT id FROM dirpath WHERE path=?", [path]).fetchone()
            if row is None:
                row = self.db.execute("INSERT INTO dirpath(path) VALUES (?) RETURNING id", [path]).fetchone()
            found = self._dirs[path] = int(row[0])
        return found

    def _forget_interned(self) -> None:
        """After a transaction that may have been rolled back, or rows pruned."""
        self._labels.clear()
        self._dirs.clear()

    def _insert_rows(self, values: list[tuple[Any, ...]]) -> None:
        """Insert encoded rows: those with the leading columns only, and the others apart."""
        leading = [v for v in values if len(v) == _LEADING_WIDTH]
        if leading:
            self.db.executemany(_INSERT_LEADING, leading)
        if len(leading) < len(values):
            self.db.executemany(_INSERT_ROW, [v for v in values if len(v) != _LEADING_WIDTH])

    def _encode(self, row: dict[str, Any], row_id: int | None = None) -> tuple[Any, ...]:
        """A journal row (the view's columns) as the values of `_INSERT_ROW`, or of
        `_INSERT_LEADING` when it has none of the later columns.

        Runs once per file acted on: interned ids come from dicts, the rare columns are
        looked at only when present.
        """
        get = row.get
        labels, dirs = self._labels, self._dirs
        path = row["path"]
        head, name = _split(path if isinstance(path, bytes) else os.fsencode(path))
        ts = round(row["ts"] * 1000)
        root = row["root"]
        root = root if isinstance(root, bytes) else os.fsencode(root)
        state = row["state"]
        done_at = get("done_at")
        if done_at is None:
            done = _DONE_PLACEHOLDER if state == "planned" else None
        else:
            done = round(done_at * 1000) - ts
        leading = (
            row_id if row_id is not None else get("id"),
            labels.get(row["run_id"]) or self._label(row["run_id"]), ts,
            labels.get(row["policy"]) or self._label(row["policy"]),
            labels.get(row["action"]) if row["action"] in labels else self._label(row["action"]),
            labels[state] if state in labels else self._label(state),
            dirs.get(root) or self._dir(root), dirs.get(head) or self._dir(head), name,
            get("size"), get("mtime"), get("atime"), get("mode"), get("uid"), get("gid"), get("dev"), get("ino"),
            done,
        )
        rare = _RARE_KEYS.intersection(row)
        if not rare and _TAIL_KEYS.isdisjoint(row):
            # most rows (a delete's): the leading columns only, `_INSERT_LEADING` (binding the
            # eleven NULLs of the rest cost as much as the insert itself)
            return leading
        trash: tuple[int | None, bytes | None] = (None, None)
        key: tuple[int | None, str | None] = (None, None)
        target = extra = None
        if rare:  # an archive or trash row, or one copied whole
            trash = self._trash_columns(get("trash_path"), name)
            key = self._key_columns(get("object_key"), name)
            target = None if get("target") is None else self._label(row["target"])
            extra = tuple(None if get(c) is None else round(row[c] * 1000) - ts for c in ("restored_at", "purged_at"))
        return (
            *leading, get("error"), *trash, target, *key,
            get("version_id"), _sha_bytes(get("sha256")), get("detail"),
            *(extra or (None, None)),
        )

    def _trash_columns(self, trash_path: str | bytes | None, name: bytes) -> tuple[int | None, bytes | None]:
        if trash_path is None:
            return None, None
        head, tname = _split(trash_path if isinstance(trash_path, bytes) else os.fsencode(trash_path))
        return self._dir(head), (None if tname == name else tname)

    def _key_columns(self, key: str | None, name: bytes) -> tuple[int | None, str | None]:
        if key is None:
            return None, None
        head, sep, kname = key.rpartition("/")
        if not sep:
            return None, key
        try:
            same = kname == name.decode("utf-8", "strict")
        except UnicodeDecodeError:
            same = False
        return self._label(head + sep), (None if same else kname)

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
        try:
            with self._transaction():
                # We hold the write lock, so the next ids are ours: give them explicitly and
                # insert the whole batch with one executemany.
                first = (self.db.execute("SELECT COALESCE(MAX(id), 0) FROM jrow").fetchone()[0]) + 1
                ids = list(range(first, first + len(rows)))
                encode = self._encode
                values = [encode(row, row_id) for row_id, row in zip(ids, rows, strict=True)]
                self._insert_rows(values)
        except CatalogError:
            self._forget_interned()
            raise
        self._names = {v[0]: v[8] for v in values}
        return ids

    def add_planned_files(self, run_id: str, policy: str, action: str, root: str,
                          facts: Sequence[tuple[Any, ...]]) -> list[int]:
        """`add_planned` for intents that are a file's facts and nothing more (a delete's,
        the bulk of a large run): each row's values made straight from the file's facts
        (FileFact's fields, in its order) instead of from a row dict, one timestamp for the
        batch. Stores exactly what `add_planned` would (tests/test_catalog.py)."""
        if not facts:
            return []
        root_b = os.fsencode(root)
        prefix = b"/" if root_b == b"/" else root_b + b"/"
        try:
            with self._transaction():
                first = (self.db.execute("SELECT COALESCE(MAX(id), 0) FROM jrow").fetchone()[0]) + 1
                common = (self._label(run_id), round(time.time() * 1000), self._label(policy), self._label(action),
                          self._label("planned"), self._dir(root_b))
                dirs, new_dir = self._dirs, self._dir
                values: list[tuple[Any, ...]] = []
                row_id = first
                for relpath, dev, ino, size, mtime, atime, _ctime, mode, uid, gid, *_ in facts:
                    head, sep, name = (prefix + relpath.encode("utf-8", "surrogateescape")).rpartition(b"/")
                    head += sep
                    values.append((row_id, *common, dirs.get(head) or new_dir(head), name, size, mtime, atime, mode,
                                   uid, gid, dev, ino, _DONE_PLACEHOLDER))
                    row_id += 1
                self.db.executemany(_INSERT_LEADING, values)
        except CatalogError:
            self._forget_interned()
            raise
        self._names = {v[0]: v[8] for v in values}
        return list(range(first, row_id))

    def set_outcomes(self, outcomes: list[tuple[int, str, str | None, dict[str, Any]]]) -> None:
        """(id, state, error, extra columns) for each row, in one transaction."""
        if not outcomes:
            return
        now = _ms(time.time())
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        plain_done: list[int] = []  # done, nothing more to store: most rows of a delete
        try:
            with self._transaction():
                for row_id, state, error, extra in outcomes:
                    if state == "done" and error is None and not extra:
                        plain_done.append(row_id)
                        continue
                    columns: dict[str, Any] = {}
                    for key, value in extra.items():
                        if key == "trash_path":
                            columns["tdir"], columns["tname"] = self._trash_columns(value, self._name_of(row_id))
                        elif key == "object_key":
                            columns["kdir"], columns["kname"] = self._key_columns(value, self._name_of(row_id))
                        elif key == "target":
                            columns["target"] = None if value is None else self._label(value)
                        elif key == "sha256":
                            columns["sha"] = _sha_bytes(value)
                        elif key == "path":
                            head, name = _split(_b(value) or b"")
                            columns["dir"], columns["name"] = self._dir(head), name
                        elif key in _PLAIN_COLUMNS:
                            columns[key] = value
                    keys = tuple(sorted(columns))
                    values: list[Any] = [self._label(state), error, now]
                    values.extend(columns[k] for k in keys)
                    values.append(row_id)
                    by_columns.setdefault(keys, []).append(values)
                for keys, rows in by_columns.items():
                    sets = ", ".join(["state=?", "error=?", "done=? - ts", *(f"{k}=?" for k in keys)])
                    self.db.executemany(f"UPDATE jrow SET {sets} WHERE id=?", rows)
                if plain_done:
                    # ids a batch was given are consecutive: one statement per unbroken range
                    done = self._label("done")
                    self.db.executemany("UPDATE jrow SET state=?, error=NULL, done=? - ts WHERE id BETWEEN ? AND ?",
                                        [(done, now, first, last) for first, last in _ranges(plain_done)])
        except CatalogError:
            self._forget_interned()
            raise

    def _name_of(self, row_id: int) -> bytes:
        name = self._names.get(row_id)
        if name is None:
            row = self.db.execute("SELECT name FROM jrow WHERE id=?", [row_id]).fetchone()
            name = b"" if row is None else bytes(row[0])
        return name

    def mark(self, ids: Iterable[int], column: str, when: float | None = None) -> None:
        assert column in ("restored_at", "purged_at")
        stored = "restored" if column == "restored_at" else "purged"
        self._write(f"UPDATE jrow SET {stored}=? - ts WHERE id=?", [(_ms(when or time.time()), i) for i in ids])

    def entries(self, where: str = "1", params: Iterable[Any] = (), order: str = "id") -> Iterator[JournalEntry]:
        cur = self.db.execute(f"SELECT * FROM journal WHERE {where} ORDER BY {order}", list(params))
        for row in cur:
            values = list(row)
            # root, path, trash_path are BLOBs
            for idx in (5, 6, 17):
                values[idx] = _s(values[idx])
            yield JournalEntry(*values)

    def unfinished(self, current_run: str) -> list[JournalEntry]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM jrow WHERE state=?", [_PLANNED])]
        return [e for e in self._by_ids(ids) if e.run_id != current_run]

    def _by_ids(self, ids: list[int]) -> Iterator[JournalEntry]:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            yield from self.entries(f"id IN ({', '.join('?' for _ in chunk)})", chunk)

    def expired_in_trash(self, policy: str, retain: float, now: float | None = None) -> list[JournalEntry]:
        """This policy's trash entries older than `retain` seconds: what its next run purges."""
        cutoff = _ms((time.time() if now is None else now) - retain)
        label = self.db.execute("SELECT id FROM label WHERE text=?", [policy]).fetchone()
        if label is None:
            return []
        ids = [r[0] for r in self.db.execute(
            f"SELECT id FROM jrow WHERE {_IN_TRASH} AND policy=? AND ts + done < ? ORDER BY id",
            [label[0], cutoff])]
        return list(self._by_ids(ids))

    def trash_totals(self) -> tuple[int, int]:
        row = self.db.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM jrow WHERE {_IN_TRASH}").fetchone()
        return int(row[0]), int(row[1])

    def in_trash(self) -> Iterator[JournalEntry]:
        ids = [r[0] for r in self.db.execute(f"SELECT id FROM jrow WHERE {_IN_TRASH} ORDER BY id")]
        return self._by_ids(ids)

    # size and retention ---------------------------------------------------------------

    def size_bytes(self) -> int:
        """What the catalog takes on disk: the database, its write-ahead log and shared memory."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(self.path + suffix).st_size
            except OSError:
                pass
        return total

    def journal_rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM jrow").fetchone()[0])

    def prune(self, retain: float, now: float | None = None) -> int:
        """Forget the finished rows of runs started more than `retain` seconds ago; returns how many.

        Kept whatever their age: rows not finished (`planned`: the next run settles them),
        files still in the trash (the trash index), objects stored in an archive (the index
        `restore --from-archive` reads), and files under an active hold (their history is
        what the operator is looking at). The space is given back to the filesystem at once
        (incremental vacuum).
        """
        now = time.time() if now is None else now
        keep_prefixes = [h.pattern_prefix() for h in self.holds(now=now)]
        held = ""
        params: list[Any] = [now - retain, _PLANNED]
        if keep_prefixes:
            tests = []
            for prefix in keep_prefixes:
                tests.append("substr(CAST(d.path || j.name AS BLOB), 1, ?) = ?")
                params.extend([len(prefix), prefix])
            held = ("AND j.id NOT IN (SELECT j.id FROM jrow j JOIN dirpath d ON d.id = j.dir WHERE "
                    + " OR ".join(tests) + ")")
        try:
            with self._transaction():
                gone = self.db.execute(
                    "DELETE FROM jrow WHERE id IN (SELECT j.id FROM jrow j WHERE j.run IN (SELECT l.id FROM label l "
                    "JOIN runs r ON r.run_id = l.text WHERE r.started < ?) AND j.state != ? "
                    f"AND NOT ({_IN_TRASH_J}) AND NOT (j.state = 0 AND (j.kdir IS NOT NULL OR j.kname IS NOT NULL)) "
                    f"{held})",
                    params,
                ).rowcount
                if gone:
                    self.db.execute(
                        "DELETE FROM runs WHERE started < ? AND finished IS NOT NULL AND run_id NOT IN "
                        "(SELECT l.text FROM label l JOIN (SELECT DISTINCT run FROM jrow) u ON u.run = l.id)",
                        [now - retain])
                    self.db.execute(
                        "DELETE FROM dirpath WHERE id NOT IN (SELECT dir FROM jrow UNION SELECT root FROM jrow "
                        "UNION SELECT tdir FROM jrow WHERE tdir IS NOT NULL)")
                    self.db.execute(
                        f"DELETE FROM label WHERE id >= {_FIRST_FREE_LABEL} AND id NOT IN ("
                        "SELECT run FROM jrow UNION SELECT policy FROM jrow UNION SELECT target FROM jrow "
                        "WHERE target IS NOT NULL UNION SELECT kdir FROM jrow WHERE kdir IS NOT NULL)")
        finally:
            self._forget_interned()
        if gone:
            self.db.executescript("PRAGMA incremental_vacuum;")  # sqlite3_exec: steps it to the end
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(gone)

    # holds ----------------------------------------------------------------------------

    def add_hold(self, pattern: str, until: float, reason: str, *, is_glob: bool = False) -> Hold:
        """Hold a file (an absolute path) or every file an absolute glob selects until `until`.

        A second hold of the same pattern replaces the first (so `hold --for` can shorten
        one as well as extend it).
        """
        now = time.time()
        raw = os.fsencode(pattern)
        with self._transaction():
            self.db.execute("DELETE FROM hold WHERE pattern=? AND is_glob=?", [raw, int(is_glob)])
            row_id = self.db.execute(
                "INSERT INTO hold(pattern, is_glob, created, until, reason) VALUES (?,?,?,?,?) RETURNING id",
                [raw, int(is_glob), now, until, reason]).fetchone()[0]
        return Hold(int(row_id), pattern, is_glob, now, until, reason)

    def holds(self, now: float | None = None) -> list[Hold]:
        """The holds in force at `now` (default: now), by pattern."""
        now = time.time() if now is None else now
        return [Hold(int(i), os.fsdecode(p), bool(g), c, u, r) for i, p, g, c, u, r in self.db.execute(
            "SELECT id, pattern, is_glob, created, until, reason FROM hold WHERE until > ? ORDER BY pattern",
            [now])]

    def remove_holds(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        with self._transaction():
            self.db.executemany("DELETE FROM hold WHERE id=?", [(i,) for i in ids])
            self.db.execute("DELETE FROM hold WHERE until <= ?", [time.time()])
        return len(ids)


_RARE_KEYS = frozenset({"trash_path", "object_key", "target", "restored_at", "purged_at"})
_PLAIN_COLUMNS = frozenset({"size", "mtime", "atime", "mode", "uid", "gid", "dev", "ino", "version_id", "detail"})
_IN_TRASH = "state = 0 AND tdir IS NOT NULL AND restored IS NULL AND purged IS NULL"
_IN_TRASH_J = "j.state = 0 AND j.tdir IS NOT NULL AND j.restored IS NULL AND j.purged IS NULL"
_LEADING_COLUMNS_SQL = "id, run, ts, policy, action, state, root, dir, name, size, mtime, atime, mode, uid, gid, dev, ino, done"
_LEADING_WIDTH = 18
_INSERT_LEADING = f"INSERT INTO jrow({_LEADING_COLUMNS_SQL}) VALUES ({', '.join('?' * _LEADING_WIDTH)})"
# a row with any of these is encoded for _INSERT_ROW (besides _RARE_KEYS)
_TAIL_KEYS = frozenset({"error", "version_id", "sha256", "detail"})
_INSERT_ROW = (
    "INSERT INTO jrow(id, run, ts, policy, action, state, root, dir, name, size, mtime, atime, mode, uid, gid, "
    "dev, ino, done, error, tdir, tname, target, kdir, kname, version_id, sha, detail, restored, purged) "
    "VALUES (" + ", ".join("?" * 29) + ")"
)


def _statements(script: str) -> list[str]:
    """The statements of a script, for running them inside one transaction (executescript
    would commit first); a trigger body's inner semicolons stay with it."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s]


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
