"""`restore` and `trash purge`: --dry-run, byte totals, and the filters the message suggests
are the filters accepted (issue 12: friction list and item 16)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fsutil import janitor_cmd

DAY = 86400


def _trashed(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    old = time.time() - 10 * DAY
    for name, size in (("a/one.mp4", 1000), ("a/two.mp4", 2000), ("three.log", 500)):
        (data / name).write_bytes(b"x" * size)
        os.utime(data / name, (old, old))
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: p\n    path: {data}\n    action: soft-delete\n    older_than: 1d\n")
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    return cfg, data


def _snapshot(root: Path) -> dict[str, bytes]:
    # every file but the catalog's own (opening SQLite rewrites its header) and the lock
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(("catalog.db", "lock"))}


def test_dry_runs_say_what_how_many_and_how_many_bytes_and_change_nothing(tmp_path: Path) -> None:
    cfg, data = _trashed(tmp_path)
    before = _snapshot(tmp_path)
    purge = janitor_cmd("trash", "purge", "--all", "--dry-run", "-c", str(cfg))
    assert purge.returncode == 0, purge.stderr
    assert "dry run: 3 files, 3.4 KiB would be purged from the trash" in purge.stdout
    restore = janitor_cmd("restore", str(data / "a" / "*.mp4"), "--dry-run", "--json", "-c", str(cfg))
    assert restore.returncode == 0, restore.stderr
    doc = json.loads(restore.stdout)
    assert (doc["files"], doc["bytes"]) == (2, 3000)
    assert sorted(Path(e["path"]).name for e in doc["would_restore"]) == ["one.mp4", "two.mp4"]
    assert _snapshot(tmp_path) == before  # byte-identical: trash and tree untouched
    listed = json.loads(janitor_cmd("trash", "list", "--json", "-c", str(cfg)).stdout)
    assert len(listed) == 3  # and the catalog still has all three in the trash


def test_purge_accepts_the_path_glob_its_message_suggests_and_shows_bytes(tmp_path: Path) -> None:
    cfg, data = _trashed(tmp_path)
    bare = janitor_cmd("trash", "purge", "-c", str(cfg))
    assert bare.returncode == 2
    assert "a path glob" in bare.stderr and "--older-than" in bare.stderr
    purged = janitor_cmd("trash", "purge", str(data / "**" / "*.mp4"), "-c", str(cfg))
    assert purged.returncode == 0, purged.stderr
    assert "2 purged (2.9 KiB), 0 failed" in purged.stdout
    left = janitor_cmd("trash", "list", "--json", "-c", str(cfg))
    assert [Path(e["path"]).name for e in json.loads(left.stdout)] == ["three.log"]
