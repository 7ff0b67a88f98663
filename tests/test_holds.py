"""Holds (issue 12, defect 4): a restored file stays; hold/unhold by glob; the plan says why."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import DAY, Tree

POLICY = """\
version: 1
settings: {{state_dir: {state}, settle: 0s}}
policies:
  - {{name: videos, path: {root}, match: ["**/*.mp4"], older_than: 7d, action: soft-delete}}
"""

QUOTA = """\
version: 1
settings: {{state_dir: {state}, settle: 0s}}
policies:
  - {{name: cap, path: {root}, action: quota, max_files: 2, evict: oldest, low_watermark: 100%}}
"""


def plan_json(cli, cfg: Path) -> dict:  # type: ignore[no-untyped-def,type-arg]
    proc = cli("plan", "-c", cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_a_restored_file_is_held_and_not_taken_again(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    video = tree.file("a/old.mp4", 100, age=30 * DAY)
    cfg = write_config(POLICY)
    assert cli("run", "-c", cfg).returncode == 0
    assert not video.exists()
    assert cli("restore", "-c", cfg, "--all").returncode == 0
    assert video.exists()

    plan = plan_json(cli, cfg)["policies"][0]
    assert plan["actions"] == []
    [skip] = plan["skips"]
    assert skip["path"] == str(video) and skip["code"] == "held"
    until = time.strftime("%Y-%m-%d", time.localtime(time.time() + 30 * DAY))
    assert f"on hold until {until}" in skip["reason"] and "restored" in skip["reason"]
    text = cli("plan", "-c", cfg).stdout
    assert "on hold until" in text
    assert cli("run", "-c", cfg).returncode == 0
    assert video.exists()  # the next run left it alone (the old code trashed it again)
    assert cli("unhold", "-c", cfg, str(video)).returncode == 0
    assert [a["path"] for a in plan_json(cli, cfg)["policies"][0]["actions"]] == [str(video)]


def test_restore_no_hold_and_a_short_hold(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    video = tree.file("old.mp4", 100, age=30 * DAY)
    cfg = write_config(POLICY)
    cli("run", "-c", cfg)
    assert cli("restore", "-c", cfg, "--all", "--no-hold").returncode == 0
    assert [a["path"] for a in plan_json(cli, cfg)["policies"][0]["actions"]] == [str(video)]
    cli("run", "-c", cfg)
    assert cli("restore", "-c", cfg, "--all", "--hold", "2h").returncode == 0
    [skip] = plan_json(cli, cfg)["policies"][0]["skips"]
    assert skip["code"] == "held"
    holds = json.loads(cli("hold", "-c", cfg, "--list", "--json").stdout)
    assert [h["pattern"] for h in holds] == [str(video)]
    assert abs(holds[0]["until"] - (time.time() + 7200)) < 120
    bad = cli("restore", "-c", cfg, "--all", "--hold", "2h", "--no-hold")
    assert bad.returncode == 2


def test_hold_by_glob_checked_against_policy_roots(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kept = [tree.file(f"2026-11/{i}.mp4", 10, age=30 * DAY) for i in range(3)]
    other = tree.file("2026-10/x.mp4", 10, age=30 * DAY)
    cfg = write_config(POLICY)
    proc = cli("hold", "-c", cfg, f"{tree.root}/2026-11/**", "--for", "7d", "--reason", "customer dispute")
    assert proc.returncode == 0, proc.stderr
    plan = plan_json(cli, cfg)["policies"][0]
    assert [a["path"] for a in plan["actions"]] == [str(other)]
    assert sorted(s["path"] for s in plan["skips"]) == sorted(map(str, kept))
    assert all("customer dispute" in s["reason"] for s in plan["skips"])
    for refused in (str(tmp_path / "elsewhere/**"), "relative/*.mp4", f"{tree.root}/../x/*"):
        proc = cli("hold", "-c", cfg, refused)
        assert proc.returncode == 2, (refused, proc.stdout, proc.stderr)
    assert cli("run", "-c", cfg).returncode == 0
    assert all(p.exists() for p in kept) and not other.exists()
    assert cli("unhold", "-c", cfg, f"{tree.root}/2026-11/**").returncode == 0
    assert json.loads(cli("hold", "-c", cfg, "--list", "--json").stdout) == []


def test_quota_never_evicts_a_held_file(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    oldest = tree.file("oldest.bin", 10, age=30 * DAY)
    middle = tree.file("middle.bin", 10, age=20 * DAY)
    tree.file("newest.bin", 10, age=10 * DAY)
    cfg = write_config(QUOTA)
    assert cli("hold", "-c", cfg, str(oldest)).returncode == 0
    plan = plan_json(cli, cfg)["policies"][0]
    assert [a["path"] for a in plan["actions"]] == [str(middle)]
    assert [s["code"] for s in plan["skips"] if s["path"] == str(oldest)] == ["held"]
