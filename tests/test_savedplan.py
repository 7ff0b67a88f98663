"""Saved plans: `plan --out FILE` then `run --plan FILE` executes exactly that plan, or refuses it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DAY, Tree

from janitor.config import load_config
from janitor.planner import build_plan
from janitor.savedplan import PlanRefused, load_plan, write_plan

POLICY = """\
version: 1
settings: {{state_dir: {state}, settle: 0s}}
policies:
  - {{name: old, path: {root}, match: ["**/*.bin"], older_than: 7d, action: delete}}
  - {{name: cap, path: {root}, match: ["q/*"], action: quota, max_files: 2, evict: oldest, low_watermark: 100%}}
"""


def test_a_saved_plan_round_trips(tree: Tree, write_config) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        tree.file(f"d{i}/f{i}.bin", i * 10, age=(10 + i) * DAY)
        tree.file(f"q/{i}", 10, age=i * DAY)
    tree.file(os.fsdecode(b"odd \xff\nname.bin"), 1, age=30 * DAY)
    cfg = load_config(str(write_config(POLICY)))
    plan = build_plan(cfg, cfg.select(None))
    out = tree.root.parent / "p.plan"
    write_plan(plan, cfg, str(out))
    assert (out.stat().st_mode & 0o777) == 0o600
    again = load_plan(str(out), cfg)
    assert again.to_dict() == plan.to_dict()
    assert [a.fact for a in again.policies[1].actions] == [a.fact for a in plan.policies[1].actions]


def test_run_plan_executes_exactly_the_reviewed_plan(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    planned = tree.file("a/planned.bin", 10, age=30 * DAY)
    changed = tree.file("a/changed.bin", 10, age=30 * DAY)
    cfg = write_config(POLICY)
    saved = tmp_path / "reviewed.plan"
    proc = cli("plan", "-c", cfg, "--out", saved)
    assert proc.returncode == 0, proc.stderr
    assert "planned.bin" in proc.stdout and saved.exists()
    # after the review: a new file the policy would select, and a planned file rewritten
    newcomer = tree.file("a/newcomer.bin", 10, age=30 * DAY)
    changed.write_bytes(b"new content")
    os.utime(changed, (tree.now - 30 * DAY, tree.now - 30 * DAY))

    proc = cli("run", "-c", cfg, "--plan", saved, "--json")
    assert proc.returncode == 0, proc.stderr
    assert not planned.exists()
    assert changed.read_bytes() == b"new content"  # re-checked: size changed, skipped
    assert newcomer.exists()  # not in the reviewed plan: untouched
    # and a plain run afterwards would take both
    plan = json.loads(cli("plan", "-c", cfg, "--json").stdout)
    assert sorted(a["path"] for a in plan["policies"][0]["actions"]) == sorted([str(changed), str(newcomer)])


def test_a_plan_made_with_another_configuration_is_refused(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    victim = tree.file("a/x.bin", 10, age=30 * DAY)
    cfg = write_config(POLICY)
    saved = tmp_path / "p.plan"
    assert cli("plan", "-c", cfg, "--out", saved).returncode == 0
    write_config(POLICY.replace("older_than: 7d", "older_than: 14d"))
    proc = cli("run", "-c", cfg, "--plan", saved)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another configuration" in lines[0], proc.stderr
    assert victim.exists()


def test_an_old_plan_is_refused_with_the_limit_it_states(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    victim = tree.file("a/x.bin", 10, age=30 * DAY)
    cfg = write_config(POLICY)
    saved = tmp_path / "p.plan"
    assert cli("plan", "-c", cfg, "--out", saved).returncode == 0
    lines = saved.read_text().splitlines()
    header = json.loads(lines[0])
    header["created"] -= 2 * DAY
    saved.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    proc = cli("run", "-c", cfg, "--plan", saved)
    assert proc.returncode == 2 and "older than --max-age 1d" in proc.stderr, proc.stderr
    assert victim.exists()
    assert cli("run", "-c", cfg, "--plan", saved, "--max-age", "3d").returncode == 0
    assert not victim.exists()


@pytest.mark.parametrize("unsafe", ["other-writable", "group-writable", "not-ours", "symlink", "hard-link", "fifo"])
def test_a_plan_file_anyone_else_could_write_is_refused(tree: Tree, write_config, tmp_path: Path,
                                                        unsafe: str) -> None:  # type: ignore[no-untyped-def]
    tree.file("a/x.bin", 10, age=30 * DAY)
    cfg = load_config(str(write_config(POLICY)))
    saved = tmp_path / "p.plan"
    write_plan(build_plan(cfg, cfg.select(None)), cfg, str(saved))
    target = saved
    if unsafe == "other-writable":
        saved.chmod(0o602)
    elif unsafe == "group-writable":
        saved.chmod(0o620)
    elif unsafe == "not-ours":
        os.chown(saved, 65534, 65534)
    elif unsafe == "symlink":
        target = tmp_path / "link.plan"
        target.symlink_to(saved)
    elif unsafe == "hard-link":
        os.link(saved, tmp_path / "second-name")
    elif unsafe == "fifo":
        target = tmp_path / "fifo.plan"
        os.mkfifo(target)
    with pytest.raises(PlanRefused):
        load_plan(str(target), cfg)


def test_a_plan_naming_a_file_outside_its_policy_path_is_refused(tree: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("a/x.bin", 10, age=30 * DAY)
    cfg = load_config(str(write_config(POLICY)))
    saved = tmp_path / "p.plan"
    write_plan(build_plan(cfg, cfg.select(None)), cfg, str(saved))
    saved.write_text(saved.read_text().replace('["a/x.bin"', '["a/../../x.bin"'))
    with pytest.raises(PlanRefused, match="outside its policy path"):
        load_plan(str(saved), cfg)


def test_saving_over_a_planted_symlink_never_writes_through_it(tree: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("a/x.bin", 10, age=30 * DAY)
    cfg = load_config(str(write_config(POLICY)))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / "p.plan"
    planted.symlink_to(victim)
    write_plan(build_plan(cfg, cfg.select(None)), cfg, str(planted))
    assert victim.read_text() == "precious"
    assert not planted.is_symlink() and (planted.stat().st_mode & 0o777) == 0o600
    assert load_plan(str(planted), cfg).total_files == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_a_hold_made_after_the_plan_still_protects_the_file(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    held = tree.file("a/held.bin", 10, age=30 * DAY)
    other = tree.file("a/other.bin", 10, age=30 * DAY)
    cfg = write_config(POLICY)
    saved = tmp_path / "p.plan"
    assert cli("plan", "-c", cfg, "--out", saved).returncode == 0
    assert cli("hold", "-c", cfg, str(held)).returncode == 0
    proc = cli("run", "-c", cfg, "--plan", saved)
    assert proc.returncode == 0, proc.stderr
    assert held.exists() and not other.exists()
