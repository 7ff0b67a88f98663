"""quota with `then: archive`: evicted files are uploaded and verified before they leave."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from conftest import DAY, Tree


def test_quota_then_archive_uploads_verifies_and_removes_oldest(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "nas"
    store.mkdir()
    digests = {}
    for i in range(6):
        path = tree.file(f"v{i}.mp4", 1000, age=(10 - i) * DAY)
        digests[f"v{i}.mp4"] = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = write_config(f"""\
        version: 1
        settings: {{{{state_dir: {{state}}, settle: 0s}}}}
        targets:
          nas: {{{{url: "file://{store}"}}}}
        policies:
          - {{{{name: cap, path: {{root}}, action: quota, max_files: 4, low_watermark: 50%, then: archive, target: nas}}}}
        """)
    plan = json.loads(cli("plan", "-c", cfg, "--json").stdout)
    assert sorted(os.path.basename(a["path"]) for a in plan["policies"][0]["actions"]) == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    proc = cli("run", "-c", cfg, "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    assert tree.files() == ["v4.mp4", "v5.mp4"]
    for name in ("v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"):
        stored = store / "cap" / name
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == digests[name]
        sidecar = json.loads((store / "cap" / (name + ".janitor.json")).read_text())
        assert sidecar["sha256"] == digests[name]
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert sum(e["event"] == "file_archived" for e in events) == 4
    assert any(e["event"] == "quota_enforced" for e in events)
    history = json.loads(cli("history", "-c", cfg, "--json").stdout)
    assert all(h["where_now"].startswith("archived to nas:cap/") for h in history)


def test_archive_then_soft_delete_purges_after_retain_and_the_plan_says_so(tree: Tree, write_config, cli, tmp_path: Path, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3
    import time

    store = tmp_path / "nas"
    store.mkdir()
    tree.file("old.mp4", 500, age=10 * DAY)
    cfg = write_config(f"""\
        version: 1
        settings: {{{{state_dir: {{state}}, settle: 0s}}}}
        targets:
          nas: {{{{url: "file://{store}"}}}}
        policies:
          - {{{{name: a, path: {{root}}, action: archive, target: nas, then: soft-delete, retain: 14d}}}}
        """)
    assert cli("run", "-c", cfg).returncode == 0
    assert len(json.loads(cli("trash", "list", "-c", cfg, "--json").stdout)) == 1
    db = sqlite3.connect(state_dir / "catalog.db")
    db.execute("UPDATE journal SET done_at=?", (time.time() - 15 * DAY,))
    db.commit()
    db.close()
    plan = json.loads(cli("plan", "-c", cfg, "--json").stdout)
    assert plan["policies"][0]["trash_purges"] == 1
    assert "this run purges them from the trash for good" in cli("plan", "-c", cfg).stdout
    assert cli("run", "-c", cfg).returncode == 0
    assert json.loads(cli("trash", "list", "-c", cfg, "--json").stdout) == []
    assert (store / "a" / "old.mp4").exists()  # the archived copy stays
