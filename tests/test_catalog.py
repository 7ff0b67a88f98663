"""The catalog: compact rows read back unchanged, a bounded size, retention, migration, holds."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from janitor.catalog import JOURNAL_COLUMNS, Catalog

DAY = 86400.0

V1_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started REAL NOT NULL, finished REAL, status TEXT NOT NULL,
    command TEXT, pid INTEGER, host TEXT, files INTEGER DEFAULT 0, bytes INTEGER DEFAULT 0,
    errors INTEGER DEFAULT 0, summary TEXT);
CREATE TABLE journal (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, ts REAL NOT NULL, policy TEXT NOT NULL,
    action TEXT NOT NULL, root BLOB NOT NULL, path BLOB NOT NULL, size INTEGER, mtime REAL, atime REAL,
    mode INTEGER, uid INTEGER, gid INTEGER, dev INTEGER, ino INTEGER, state TEXT NOT NULL, error TEXT,
    trash_path BLOB, target TEXT, object_key TEXT, version_id TEXT, sha256 TEXT, detail TEXT, done_at REAL,
    restored_at REAL, purged_at REAL);
CREATE INDEX journal_run ON journal(run_id);
CREATE INDEX journal_state ON journal(state);
CREATE INDEX journal_trash ON journal(trash_path) WHERE trash_path IS NOT NULL;
PRAGMA user_version=1;
"""

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def row(i: int, *, run: str = "20261204T000000Z-abcdef", ts: float | None = None, action: str = "delete",
        policy: str = "tts-cache", root: str = "/srv/tts/cache") -> dict[str, Any]:
    now = time.time() if ts is None else ts
    return {
        "run_id": run, "ts": now, "policy": policy, "action": action, "root": root,
        "path": f"{root}/{i // 100:04d}/f{i:07d}.wav", "size": 300 + i % 200,
        "mtime": now - 9 * DAY - i * 0.001, "atime": now - 8 * DAY - i * 0.0013, "mode": 0o100644,
        "uid": 1001, "gid": 1001, "dev": 2049, "ino": 1_000_000 + i, "state": "planned",
    }


def journal_as_dicts(path: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM journal ORDER BY id")]
    finally:
        con.close()


def fill(catalog: Catalog, n: int, *, action: str = "delete", ts: float | None = None,
         extra: Any = None, batch: int = 1000) -> None:
    for start in range(0, n, batch):
        rows = [row(i, action=action, ts=ts) for i in range(start, min(n, start + batch))]
        if extra is not None:
            for r in rows:
                r.update(extra(r))
        ids = catalog.add_planned(rows)
        catalog.set_outcomes([(i, "done", None, {}) for i in ids])


def on_disk_per_row(catalog: Catalog) -> float:
    catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.stat(catalog.path).st_size / catalog.journal_rows()


@pytest.mark.parametrize("action", ["delete", "soft-delete"])
def test_a_journal_row_takes_at_most_100_bytes_on_disk(tmp_path: Path, action: str) -> None:
    catalog = Catalog(str(tmp_path / "catalog.db"))
    trash = (lambda r: {"trash_path": "/var/lib/janitor/trash/20261204T000000Z-abcdef/tts-cache/"
                        + r["path"].split("/cache/", 1)[1]}) if action == "soft-delete" else None
    fill(catalog, 20_000, action=action, extra=trash)
    per_row = on_disk_per_row(catalog)
    # the first schema took about 255 bytes a row. A file in the trash also has an entry in
    # the in-trash index (about 10 bytes) until it is restored or purged.
    assert per_row <= (100 if action == "delete" else 112), per_row
    if action == "soft-delete":
        catalog.mark(range(1, 20_001), "purged_at")
        used = catalog.db.execute("SELECT (SELECT page_count FROM pragma_page_count) - "
                                  "(SELECT freelist_count FROM pragma_freelist_count)").fetchone()[0]
        assert used * 4096 / 20_000 <= 103
    catalog.close()


def test_rows_read_back_as_written(tmp_path: Path) -> None:
    catalog = Catalog(str(tmp_path / "catalog.db"))
    weird = os.fsdecode(b"/srv/data/\xff\xfe caf\xc3\xa9/na\nme.bin")
    rows = [
        {**row(1), "path": weird, "root": "/srv/data"},
        {**row(2), "action": "archive", "target": "nas", "object_key": "outputs/tts-cache/0000/f0000002.wav",
         "trash_path": "/var/lib/janitor/trash/r/tts-cache/0000/f0000002.wav.1"},
        {**row(3), "path": "/toplevel", "root": "/"},
        {**row(4), "action": "truncate", "detail": '{"method": "collapse"}'},
    ]
    ids = catalog.add_planned(rows)
    catalog.set_outcomes([
        (ids[0], "failed", "E_PERMISSION: Operation not permitted", {}),
        (ids[1], "done", None, {"object_key": "outputs/tts-cache/0000/f0000002.wav", "sha256": SHA,
                                "version_id": "v1", "target": "nas"}),
        (ids[2], "skipped", "changed since the plan", {}),
        (ids[3], "done", None, {"detail": '{"method": "collapse", "rotated_to": "app.log.1"}'}),
    ])
    got = {e.id: e for e in catalog.entries()}
    for row_id, wrote in zip(ids, rows, strict=True):
        entry = got[row_id]
        for column in ("run_id", "policy", "action", "root", "path", "size", "mtime", "atime", "mode", "uid",
                       "gid", "dev", "ino", "trash_path", "target"):
            assert getattr(entry, column) == wrote.get(column), column
        assert abs(entry.ts - wrote["ts"]) < 0.001
        assert entry.done_at is not None and abs(entry.done_at - time.time()) < 60
    assert [got[i].state for i in ids] == ["failed", "done", "skipped", "done"]
    assert got[ids[0]].error == "E_PERMISSION: Operation not permitted"
    assert (got[ids[1]].object_key, got[ids[1]].sha256, got[ids[1]].version_id) == (
        "outputs/tts-cache/0000/f0000002.wav", SHA, "v1")
    assert got[ids[3]].detail == '{"method": "collapse", "rotated_to": "app.log.1"}'
    # the query language of the first schema still works against the view
    assert [e.id for e in catalog.entries("path = ?", [os.fsencode(weird)])] == [ids[0]]
    assert [e.id for e in catalog.entries("state='done' AND object_key IS NOT NULL")] == [ids[1]]
    catalog.close()


def test_the_journal_view_can_be_updated_by_any_client(tmp_path: Path) -> None:
    catalog = Catalog(str(tmp_path / "catalog.db"))
    fill(catalog, 3, action="soft-delete",
         extra=lambda r: {"trash_path": "/t/r/p/" + r["path"].rsplit("/", 1)[1]})
    catalog.close()
    con = sqlite3.connect(tmp_path / "catalog.db")
    with con:
        con.execute("UPDATE journal SET done_at=? WHERE id=1", [1000.5])
        con.execute("UPDATE journal SET path=?, object_key=? WHERE id=2", [b"/elsewhere/x", "k/x"])
        con.execute("DELETE FROM journal WHERE id=3")
    con.close()
    rows = journal_as_dicts(tmp_path / "catalog.db")
    assert [r["id"] for r in rows] == [1, 2]
    assert rows[0]["done_at"] == 1000.5 and rows[0]["trash_path"] == b"/t/r/p/f0000000.wav"
    assert rows[1]["path"] == b"/elsewhere/x" and rows[1]["object_key"] == "k/x"
    assert rows[1]["trash_path"] == b"/t/r/p/f0000001.wav"


def test_a_first_schema_catalog_is_migrated_and_shrinks(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    con = sqlite3.connect(db)
    con.executescript(V1_SCHEMA)
    old_rows = []
    for i in range(3000):
        r = {c: None for c in JOURNAL_COLUMNS} | row(i, ts=1_700_000_000.0 + i) | {"state": "done"}
        if i % 3 == 1:
            r |= {"action": "soft-delete", "trash_path": f"/var/lib/janitor/trash/r/p/{i}.wav"}
        if i % 3 == 2:
            r |= {"action": "archive", "target": "s3", "object_key": f"pre/p/{i}.wav", "sha256": SHA}
        r |= {"done_at": r["ts"] + 0.25, "restored_at": None, "purged_at": None}
        old_rows.append(r)
    columns = [*JOURNAL_COLUMNS, "done_at", "restored_at", "purged_at"]
    con.executemany(
        f"INSERT INTO journal({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [[os.fsencode(r[c]) if c in ("root", "path", "trash_path") and r[c] else r[c] for c in columns]
         for r in old_rows])
    con.commit()
    con.close()
    before = os.stat(db).st_size

    catalog = Catalog(str(db))
    assert catalog.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert catalog.db.execute("PRAGMA user_version").fetchone()[0] == 2
    entries = list(catalog.entries())
    assert len(entries) == 3000
    for entry, wrote in zip(entries, old_rows, strict=True):
        assert entry.path == wrote["path"] and entry.trash_path == wrote["trash_path"]
        assert entry.object_key == wrote["object_key"] and entry.sha256 == wrote["sha256"]
        assert entry.done_at == pytest.approx(wrote["done_at"], abs=0.001)
    catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert os.stat(db).st_size < before / 2
    catalog.close()


def test_prune_keeps_trash_archive_holds_and_unfinished_rows_and_the_file_shrinks(tmp_path: Path) -> None:
    catalog = Catalog(str(tmp_path / "catalog.db"))
    old = time.time() - 100 * DAY
    catalog.start_run("20261204T000000Z-abcdef", "run")
    catalog.finish_run("20261204T000000Z-abcdef", "ok", 20_005, 0, 0, "")
    catalog.db.execute("UPDATE runs SET started = ?", [old])
    fill(catalog, 20_000, ts=old)  # deleted long ago: history only
    in_trash = row(1, ts=old, action="soft-delete") | {"path": "/srv/tts/cache/keep/trashed.wav",
                                                       "trash_path": "/t/r/p/keep/trashed.wav"}
    archived = row(2, ts=old, action="archive") | {"path": "/srv/tts/cache/keep/archived.wav",
                                                   "target": "s3", "object_key": "p/keep/archived.wav"}
    held = row(3, ts=old) | {"path": "/srv/tts/cache/held/f.wav"}
    interrupted = row(4, ts=old) | {"path": "/srv/tts/cache/keep/interrupted.wav"}
    recent = row(5) | {"path": "/srv/tts/cache/keep/recent.wav", "run_id": "20261205T000000Z-recent"}
    catalog.start_run("20261205T000000Z-recent", "run")
    ids = catalog.add_planned([in_trash, archived, held, interrupted, recent])
    catalog.set_outcomes([(i, "done", None, {}) for i in ids if i != ids[3]])
    catalog.db.execute("UPDATE jrow SET done = 1 WHERE id IN (?, ?, ?)", ids[:3])  # done then, not now
    catalog.add_hold("/srv/tts/cache/held/**", time.time() + DAY, "test", is_glob=True)
    catalog.add_hold("/srv/tts/cache/0001/expired-hold", time.time() - 1, "test")
    catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_before = os.stat(catalog.path).st_size

    assert catalog.prune(90 * DAY) == 20_000
    left = sorted(e.path for e in catalog.entries())
    assert left == sorted(r["path"] for r in (in_trash, archived, held, interrupted, recent))
    assert os.stat(catalog.path).st_size < size_before / 4
    # what stays still reads back whole
    trashed = next(catalog.in_trash())
    assert trashed.trash_path == "/t/r/p/keep/trashed.wav"
    assert catalog.prune(90 * DAY) == 0
    assert [r[0] for r in catalog.db.execute("SELECT run_id FROM runs ORDER BY run_id")] == [
        "20261204T000000Z-abcdef", "20261205T000000Z-recent"]  # the old run still has rows
    catalog.close()


def test_holds_in_force_replace_and_expire(tmp_path: Path) -> None:
    catalog = Catalog(str(tmp_path / "catalog.db"))
    now = time.time()
    catalog.add_hold("/srv/a/x.mp4", now + DAY, "restored")
    catalog.add_hold("/srv/a/x.mp4", now + 2 * DAY, "restored again")
    catalog.add_hold("/srv/b/**", now - 1, "old")
    holds = catalog.holds()
    assert [(h.pattern, h.reason) for h in holds] == [("/srv/a/x.mp4", "restored again")]
    assert holds[0].until == pytest.approx(now + 2 * DAY)
    assert catalog.remove_holds([holds[0].id]) == 1 and catalog.holds() == []
    catalog.close()


def test_each_run_prunes_what_history_retain_lets_go(tree, write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        tree.file(f"old{i}.bin", 10, age=30 * DAY)
    cfg = write_config("""\
        version: 1
        settings: {{state_dir: {state}, settle: 0s, history_retain: 30d}}
        policies:
          - {{name: p, path: {root}, older_than: 7d, action: delete}}
        """)
    assert cli("run", "-c", cfg).returncode == 0
    assert len(json.loads(cli("history", "-c", cfg, "--json").stdout)) == 3
    con = sqlite3.connect(state_dir / "catalog.db")
    with con:
        con.execute("UPDATE runs SET started = started - ?", [31 * DAY])
    con.close()
    tree.file("later.bin", 10, age=30 * DAY)
    assert cli("run", "-c", cfg).returncode == 0
    assert [os.path.basename(e["path"]) for e in json.loads(cli("history", "-c", cfg, "--json").stdout)] == [
        "later.bin"]
    report = json.loads(cli("report", "-c", cfg, "--json").stdout)
    assert report["catalog_rows"] == 1
    assert 4096 <= report["catalog_bytes"] < 1_000_000
    assert "catalog: " in cli("report", "-c", cfg).stdout


@pytest.mark.parametrize("root", ["/srv/tts/cache", "/"])
def test_rows_made_from_facts_are_the_rows_made_from_dicts(tmp_path: Path, root: str) -> None:
    """`add_planned_files` (a delete's batches, straight from the facts) stores what
    `add_planned` stores for the same files, odd names included."""
    from janitor.scan import FileFact

    now = time.time()
    relpaths = ["0000/f1.wav", "top.wav", os.fsdecode(b"\xff\xfe caf\xc3\xa9/na\nme.bin"), "0000/deep/er/f2.wav"]
    facts = [FileFact(rel, 2049, 1000 + i, 300 + i, now - 9 * DAY - i, now - 8 * DAY, now, 0o100644, 1001, 1002)
             for i, rel in enumerate(relpaths)]
    stored = []
    for how in ("dicts", "facts"):
        catalog = Catalog(str(tmp_path / f"{how}.db"))
        if how == "dicts":
            prefix = "/" if root == "/" else root + "/"
            ids = catalog.add_planned([
                {"run_id": "r1", "ts": now, "policy": "p", "action": "delete", "root": root, "path": prefix + f.relpath,
                 "size": f.size, "mtime": f.mtime, "atime": f.atime, "mode": f.mode, "uid": f.uid, "gid": f.gid,
                 "dev": f.dev, "ino": f.ino, "state": "planned"} for f in facts])
        else:
            ids = catalog.add_planned_files("r1", "p", "delete", root, facts)
        assert ids == [1, 2, 3, 4]
        catalog.set_outcomes([(ids[0], "done", None, {}), (ids[1], "skipped", "vanished", {})])
        catalog.close()
        rows = journal_as_dicts(tmp_path / f"{how}.db")
        for r in rows:  # the clock's columns: when the row was written, when its outcome was
            assert abs(r.pop("ts") - now) < 60
            done_at = r.pop("done_at")
            assert (done_at is None) == (r["state"] == "planned")
        stored.append(rows)
    assert stored[0] == stored[1]
    assert {os.fsdecode(r["path"]) for r in stored[1]} == {("/" if root == "/" else root + "/") + rel
                                                            for rel in relpaths}
