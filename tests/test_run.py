"""End to end through the real CLI on real trees: plan, run, soft-delete, restore, purge, lock."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import DAY, Tree, snapshot

from janitor.config import load_config
from janitor.events import EventLog
from janitor.execute import execute_plan
from janitor.planner import build_plan
from janitor.runner import locked_state, new_run_id, run_policies

SOFT = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
policies:
  - name: videos
    path: {root}
    match: ["**/*.mp4"]
    older_than: 7d
    action: soft-delete
    retain: 14d
  - name: zips
    path: {root}
    match: ["videos_*.zip"]
    older_than: 1h
    action: delete
"""


@pytest.fixture
def demo_tree(tree: Tree) -> Tree:
    tree.file("a/old1.mp4", 1000, age=10 * DAY, mode=0o640)
    tree.file("a/b/old2.mp4", 2000, age=8 * DAY, mode=0o600)
    tree.file("new.mp4", 300, age=DAY)
    tree.file("videos_1.zip", 50, age=2 * 3600)
    tree.file("videos_2.zip", 50, age=60)
    tree.file("notes.txt", 10, age=30 * DAY)
    return tree


def test_plan_and_dry_run_change_nothing(demo_tree: Tree, write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    before = snapshot(demo_tree.root)
    for args in (("plan", "-c", cfg), ("plan", "-c", cfg, "--json"), ("run", "--dry-run", "-c", cfg)):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
    assert snapshot(demo_tree.root) == before
    assert not state_dir.exists()


def test_plan_json_lists_every_action_with_reason(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("plan", "-c", write_config(SOFT), "--json")
    data = json.loads(proc.stdout)
    actions = {(a["policy"], os.path.relpath(a["path"], demo_tree.root), a["action"], a["bytes"])
               for p in data["policies"] for a in p["actions"]}
    assert actions == {
        ("videos", "a/old1.mp4", "soft-delete", 1000),
        ("videos", "a/b/old2.mp4", "soft-delete", 2000),
        ("zips", "videos_1.zip", "delete", 50),
    }
    assert data["files"] == 3 and data["bytes"] == 3050
    assert all(a["reason"].startswith("mtime age") for p in data["policies"] for a in p["actions"])


def test_plan_table_shows_policy_action_file_size_age_reason(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    out = cli("plan", "-c", write_config(SOFT)).stdout
    assert "videos (soft-delete) on" in out
    assert "action" in out and "file" in out and "size" in out and "age" in out and "reason" in out
    assert "old1.mp4" in out and "1000 B " in out
    assert "total: 2 files" in out
    assert "Plan: 3 files" in out


def test_run_does_exactly_the_plan(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("run", "-c", write_config(SOFT), "--json")
    assert proc.returncode == 0, proc.stderr
    assert demo_tree.files() == ["new.mp4", "notes.txt", "videos_2.zip"]
    result = json.loads(proc.stdout)
    assert result["files"] == 3 and result["bytes"] == 3050 and result["failed"] == 0


def test_soft_delete_then_restore_is_byte_identical(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    before = {k: v for k, v in snapshot(demo_tree.root).items() if k.endswith(".mp4")}
    assert cli("run", "-c", cfg, "--policy", "videos").returncode == 0
    assert not (demo_tree.root / "a/old1.mp4").exists()
    listing = json.loads(cli("trash", "list", "-c", cfg, "--json").stdout)
    assert sorted(os.path.relpath(e["path"], demo_tree.root) for e in listing) == ["a/b/old2.mp4", "a/old1.mp4"]
    proc = cli("restore", "-c", cfg, "--policy", "videos")
    assert proc.returncode == 0, proc.stderr
    after = {k: v for k, v in snapshot(demo_tree.root).items() if k.endswith(".mp4")}
    assert after == before  # content, mode and mtime
    assert json.loads(cli("trash", "list", "-c", cfg, "--json").stdout) == []


def test_restore_by_glob_and_by_run(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    run = json.loads(cli("run", "-c", cfg, "--json").stdout)
    proc = cli("restore", "-c", cfg, str(demo_tree.root / "a/b/*"))
    assert proc.returncode == 0 and "1 restored" in proc.stdout
    assert (demo_tree.root / "a/b/old2.mp4").exists() and not (demo_tree.root / "a/old1.mp4").exists()
    proc = cli("restore", "-c", cfg, "--run", run["run_id"])
    assert proc.returncode == 0 and "1 restored" in proc.stdout
    assert (demo_tree.root / "a/old1.mp4").exists()


def test_restore_needs_a_selector(write_config, cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("restore", "-c", write_config(SOFT))
    assert proc.returncode == 2
    assert "say what to act on" in proc.stderr


def test_restore_never_overwrites_without_force(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    original = (demo_tree.root / "a/old1.mp4").read_bytes()
    cli("run", "-c", cfg, "--policy", "videos")
    (demo_tree.root / "a/old1.mp4").write_bytes(b"a new file took its place")
    proc = cli("restore", "-c", cfg, "--all")
    assert proc.returncode == 1
    assert "exists; not overwriting it (use --force)" in proc.stdout
    assert (demo_tree.root / "a/old1.mp4").read_bytes() == b"a new file took its place"
    assert cli("restore", "-c", cfg, "--all", "--force").returncode == 0
    assert (demo_tree.root / "a/old1.mp4").read_bytes() == original


def test_restore_recreates_missing_directories(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    cli("run", "-c", cfg, "--policy", "videos")
    os.rmdir(demo_tree.root / "a/b")
    assert cli("restore", "-c", cfg, "--all").returncode == 0
    assert (demo_tree.root / "a/b/old2.mp4").stat().st_size == 2000


def test_trash_purge_and_retain(demo_tree: Tree, write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    cli("run", "-c", cfg, "--policy", "videos")
    trash = state_dir / "trash"
    assert sum(len(f) for _, _, f in os.walk(trash)) == 2
    # pretend the older one was trashed 15 days ago: the next run purges it (retain 14d)
    db = sqlite3.connect(state_dir / "catalog.db")
    db.execute("UPDATE journal SET done_at=? WHERE path=?", (time.time() - 15 * DAY, os.fsencode(demo_tree.root / "a/old1.mp4")))
    db.commit()
    db.close()
    assert cli("run", "-c", cfg, "--policy", "videos").returncode == 0
    listing = json.loads(cli("trash", "list", "-c", cfg, "--json").stdout)
    assert [os.path.relpath(e["path"], demo_tree.root) for e in listing] == ["a/b/old2.mp4"]
    assert sum(len(f) for _, _, f in os.walk(trash)) == 1
    proc = cli("trash", "purge", "-c", cfg, "--all")
    assert proc.returncode == 0 and "1 purged" in proc.stdout
    assert sum(len(f) for _, _, f in os.walk(trash)) == 0
    assert cli("restore", "-c", cfg, "--all").stdout.startswith("nothing in the trash matches")


def test_circuit_breaker_blocks_until_forced(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        tree.file(f"f{i}", age=DAY)
    cfg = write_config("""\
        version: 1
        settings: {{state_dir: {state}, settle: 0s}}
        policies:
          - {{name: p, path: {root}, action: delete, max_actions: 3}}
        """)
    proc = cli("run", "-c", cfg)
    assert proc.returncode == 1
    assert "selects 5 files, more than max_actions 3" in proc.stdout
    assert len(tree.files()) == 5
    assert "circuit breaker" in cli("plan", "-c", cfg).stdout
    assert cli("run", "-c", cfg, "--force").returncode == 0
    assert tree.files() == []


def test_second_run_exits_3_naming_the_holder(write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    state_dir.mkdir(mode=0o700)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(state_dir / 'lock')!r}, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"%d\\n" % os.getpid())
            print("ready", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        proc = cli("run", "-c", cfg)
        assert proc.returncode == 3
        assert f"another janitor run holds {state_dir / 'lock'} (pid {holder.pid})" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    assert cli("run", "-c", cfg).returncode == 0


def test_run_never_touches_a_file_held_open_for_writing(tree: Tree, write_config, cli, writer) -> None:  # type: ignore[no-untyped-def]
    busy = tree.file("busy.mp4", age=10 * DAY)
    tree.file("idle.mp4", age=10 * DAY)
    writer(busy)
    os.utime(busy, (0, tree.now - 10 * DAY))
    proc = cli("run", "-c", write_config(SOFT), "--policy", "videos")
    assert proc.returncode == 0, proc.stderr
    assert tree.files() == ["busy.mp4"]


def test_symlink_to_outside_is_left_alone(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious.mp4"
    target.write_bytes(b"precious")
    os.utime(target, (0, 0))
    (tree.root / "evil.mp4").symlink_to(target)
    (tree.root / "evildir").symlink_to(outside)
    proc = cli("run", "-c", write_config(SOFT), "--policy", "videos")
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == b"precious"
    assert os.path.islink(tree.root / "evil.mp4") and os.path.islink(tree.root / "evildir")


# Library-level: what happens between plan and run.

def _plan(cfg_path: Path):  # type: ignore[no-untyped-def]
    config = load_config(cfg_path)
    return config, build_plan(config, config.policies)


def test_file_changed_after_the_plan_is_skipped(demo_tree: Tree, write_config) -> None:  # type: ignore[no-untyped-def]
    config, plan = _plan(write_config(SOFT))
    (demo_tree.root / "a/old1.mp4").write_bytes(b"rewritten after planning")
    os.utime(demo_tree.root / "a/old1.mp4", (0, demo_tree.now - 10 * DAY))
    with locked_state(config) as catalog:
        result = execute_plan(plan, config, catalog, new_run_id(), EventLog())
    assert (demo_tree.root / "a/old1.mp4").read_bytes() == b"rewritten after planning"
    assert not (demo_tree.root / "a/b/old2.mp4").exists()
    videos = result.policies[0]
    assert videos.files == 1 and videos.skipped["changed"] == 1


def test_directory_swapped_for_a_symlink_after_the_plan(demo_tree: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, plan = _plan(write_config(SOFT))
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    decoy = outside / "b" / "old2.mp4"
    decoy.write_bytes(b"not yours")
    os.rename(demo_tree.root / "a", tmp_path / "moved-away")
    os.symlink(outside, demo_tree.root / "a")
    with locked_state(config) as catalog:
        result = execute_plan(plan, config, catalog, new_run_id(), EventLog())
    assert decoy.read_bytes() == b"not yours"
    assert (tmp_path / "moved-away" / "old1.mp4").exists()
    assert result.policies[0].files == 0
    assert result.policies[0].failed == 2


def test_cross_filesystem_trash_copies_verifies_and_restores(demo_tree: Tree, write_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from janitor import trash as trash_mod

    monkeypatch.setattr(trash_mod.TrashBin, "_choose", staticmethod(
        lambda configured, root, dev: (trash_mod.ensure_private_dir(configured), trash_mod.TrashSlot(configured, False))[1]
    ))
    cfg = write_config(SOFT)
    before = {k: v for k, v in snapshot(demo_tree.root).items() if k.endswith(".mp4")}
    config = load_config(cfg)
    report = run_policies(config, config.select(["videos"]), EventLog())
    assert report.result.files == 2
    assert not (demo_tree.root / "a/old1.mp4").exists()
    from janitor.trashops import restore_entries, select_trash

    with locked_state(config) as catalog:
        restored = restore_entries(catalog, select_trash(catalog, policies=["videos"]), EventLog())
    assert len(restored.done) == 2
    after = {k: v for k, v in snapshot(demo_tree.root).items() if k.endswith(".mp4")}
    assert after == before


def test_killed_run_is_reconciled_by_the_next(demo_tree: Tree, write_config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run killed right after moving the first file: nothing is lost, the journal is settled."""
    from janitor.actions import softdelete

    config = load_config(write_config(SOFT))
    real_move = softdelete.move_into_trash
    calls = []

    def move_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_move(*args, **kwargs)
        calls.append(args)
        raise KeyboardInterrupt  # the process dies before recording the outcome

    monkeypatch.setattr(softdelete, "move_into_trash", move_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_policies(config, config.select(["videos"]), EventLog())
    monkeypatch.setattr(softdelete, "move_into_trash", real_move)
    assert len(calls) == 1
    report = run_policies(config, config.select(["videos"]), EventLog())
    assert report.reconciled == 2  # one moved (done), one untouched (aborted)
    with locked_state(config) as catalog:
        states = sorted(e.state for e in catalog.entries("run_id != ?", [report.result.run_id]))
        assert states == ["aborted", "done"]
        from janitor.trashops import restore_entries, select_trash

        restored = restore_entries(catalog, select_trash(catalog, policies=["videos"]), EventLog())
    assert len(restored.done) == 2
    assert (demo_tree.root / "a/old1.mp4").stat().st_size == 1000
    assert (demo_tree.root / "a/b/old2.mp4").stat().st_size == 2000


def test_state_dir_writable_by_others_is_refused(write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    state_dir.mkdir()
    state_dir.chmod(0o777)
    proc = cli("run", "-c", write_config(SOFT))
    assert proc.returncode == 1
    assert "is writable by group or others" in proc.stderr


def test_lock_file_is_an_flock(state_dir: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_config(SOFT))
    with locked_state(config):
        fd = os.open(state_dir / "lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


COMMANDS = [[], ["validate"], ["plan"], ["run"], ["restore"], ["trash"], ["trash", "list"], ["trash", "purge"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "janitor" for c in COMMANDS])
def test_every_command_has_help(cli, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    proc = cli(*command, "--help")
    assert proc.returncode == 0
    assert "Usage: janitor" in proc.stdout
    description = proc.stdout.split("\n\n")[1].strip()
    assert len(description) > 20, proc.stdout


def test_version_needs_no_command(cli) -> None:  # type: ignore[no-untyped-def]
    from janitor import __version__

    for args in (["--version"], ["--version", "run"]):
        proc = cli(*args)
        assert (proc.returncode, proc.stdout) == (0, f"janitor {__version__}\n"), proc.stderr
    assert cli().returncode == 2  # no command at all is still a usage error


def test_a_policy_path_that_is_a_symlink_is_refused(tmp_path: Path, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.doc").write_text("keep")
    os.utime(victim / "important.doc", (0, 0))
    (tmp_path / "data").symlink_to(victim)  # the configured path, swapped for a link
    proc = cli("run", "-c", write_config(SOFT))
    assert proc.returncode == 1
    assert "is a symlink" in proc.stdout
    assert (victim / "important.doc").read_text() == "keep"


def test_restore_globs_follow_the_glob_rules(demo_tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(SOFT)
    cli("run", "-c", cfg, "--policy", "videos")
    proc = cli("restore", "-c", cfg, str(demo_tree.root / "a" / "*.mp4"))  # '*' does not cross '/'
    assert "1 restored" in proc.stdout
    assert (demo_tree.root / "a/old1.mp4").exists() and not (demo_tree.root / "a/b/old2.mp4").exists()
    assert "1 restored" in cli("restore", "-c", cfg, "old2.mp4").stdout  # a relative glob matches the tail
