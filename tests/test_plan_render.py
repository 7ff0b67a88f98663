"""Plan rendering at scale: bounded tables, --all, streamed JSON, the run's order, reasons grouped."""

from __future__ import annotations

import io
import json
import os

import pytest
from conftest import DAY, Tree

from janitor.config import load_config
from janitor.planner import build_plan
from janitor.render import json_clean, reason_group, write_plan_json

OLD = """\
version: 1
settings: {{state_dir: {state}, settle: 0s}}
policies:
  - {{name: old, path: {root}, older_than: 7d, action: delete}}
"""

QUOTA = """\
version: 1
settings: {{state_dir: {state}, settle: 0s}}
policies:
  - {{name: cap, path: {root}, action: quota, max_files: 1, evict: oldest, low_watermark: 100%}}
"""


def rows_of(text: str, suffix: str) -> list[str]:
    return [ln.split()[-1] for ln in text.splitlines() if ln.strip().endswith(suffix)]


def test_the_table_is_bounded_with_totals_and_all_lists_every_row(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    for i in range(120):
        tree.file(f"d/f{i:03d}.bin", 10, age=8 * DAY + i)
    cfg = write_config(OLD)
    text = cli("plan", "-c", cfg).stdout
    assert len(rows_of(text, ".bin")) == 50
    assert "... 70 more: --all to list every row" in text
    assert "total: 120 files" in text and "Plan: 120 files" in text
    # the reason is said once for the group, not on every row
    assert text.count("reason: mtime age > 7d") == 1
    every = cli("plan", "-c", cfg, "--all").stdout
    assert len(rows_of(every, ".bin")) == 120 and "more:" not in every
    assert len(rows_of(cli("plan", "-c", cfg, "--limit", "5").stdout, ".bin")) == 5


def test_a_negative_limit_is_refused(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    tree.file("a.bin", 10, age=8 * DAY)
    cfg = write_config(OLD)
    for args in (("plan", "--limit", "-1"), ("run", "--dry-run", "--limit", "-1")):
        proc = cli(*args, "-c", cfg)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "--limit -1" in proc.stderr


def test_rows_are_in_the_order_the_run_acts(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    # path order a, b, c, d; age order (oldest first) c, a, d (b is the newest and stays)
    for name, age in (("a.bin", 20), ("b.bin", 1), ("c.bin", 30), ("d.bin", 10)):
        tree.file(name, 10, age=age * DAY)
    cfg = write_config(QUOTA)
    text = cli("plan", "-c", cfg).stdout
    assert rows_of(text, ".bin") == ["c.bin", "a.bin", "d.bin"]
    assert text.count("reason: quota files 4/1") == 1


def test_plan_json_is_streamed_and_is_the_plan(tree: Tree, write_config) -> None:  # type: ignore[no-untyped-def]
    for i in range(30):
        tree.file(f"d{i % 3}/f{i}.bin", i, age=8 * DAY + i)
    tree.file("new.bin", 1, age=0)
    tree.file(os.fsdecode(b"odd \xff \"quoted\"\nname.bin"), 5, age=9 * DAY)
    cfg = load_config(str(write_config(OLD.rstrip("\n") + "\n" + QUOTA.split("policies:\n", 1)[1])))
    plan = build_plan(cfg, cfg.select(None))
    out = io.StringIO()
    write_plan_json(plan, out)
    assert [len(p.actions) for p in plan.policies] == [31, 31]  # the quota rows carry a detail
    assert json.loads(out.getvalue()) == json_clean(plan.to_dict())


def test_reason_groups() -> None:
    assert reason_group("mtime age 9d2h > 7d") == "mtime age > 7d"
    assert reason_group("mtime age 9d > 7d, size 3.0 MiB > 1.0 MiB") == "mtime age > 7d, size > 1.0 MiB"
    assert reason_group("quota files 10/2: evict oldest to 1 files") == "quota files 10/2: evict oldest to 1 files"


DISPOSALS = [
    # (the policy's action keys, what `plan --json` says becomes of its files)
    ("action: delete", "delete"),
    ("action: soft-delete", "trash"),
    ("action: archive, target: nas", "delete"),
    ("action: archive, target: nas, then: delete", "delete"),
    ("action: archive, target: nas, then: soft-delete", "trash"),
    ("action: archive, target: nas, then: keep", "keep"),
    ("action: quota, max_files: 1", "delete"),
    ("action: quota, max_files: 1, then: soft-delete", "trash"),
    ("action: quota, max_files: 1, then: archive, target: nas", "delete"),
    ("action: truncate, keep_tail: 1MiB", None),
    ("action: warn, when_size_above: 1GiB", None),
]


@pytest.mark.parametrize(("keys", "disposal"), DISPOSALS)
def test_plan_json_says_what_becomes_of_the_files(tree: Tree, write_config, cli, keys: str,  # type: ignore[no-untyped-def]
                                                 disposal: str | None) -> None:
    tree.file("a.bin", 10, age=8 * DAY)
    tree.file("b.bin", 10, age=9 * DAY)
    cfg = write_config(
        "version: 1\n"
        "settings: {{state_dir: {state}, settle: 0s}}\n"
        f"targets: {{{{nas: {{{{url: 'file://{tree.root.parent}/nas'}}}}}}}}\n"
        "policies:\n"
        f"  - {{{{name: p, path: {{root}}, {keys}}}}}\n"
    )
    proc = cli("plan", "-c", cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    (policy,) = json.loads(proc.stdout)["policies"]
    assert policy["disposal"] == disposal
