"""The planner walks a policy path in two processes (janitor/walksplit.py, `_PolicyWalk.in_two`):
the plan is the one a walk alone makes, row for row, whatever happens to the second one."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from janitor import walksplit
from janitor.config import load_config
from janitor.facttable import FactTable
from janitor.plan import Plan
from janitor.planner import build_plan

DAY = 86400.0
POLICY = """version: 1
settings: {{state_dir: {state}, settle: 0s, max_actions: 100000}}
policies:
  - {{name: tmp, path: {root}, action: delete, older_than: 7d, match: ['**/*.tmp', '**/*.lnk']}}
  - {{name: cap, path: {root}, action: quota, max_size: 1, low_watermark: 50%, match: ['**/*.bin']}}
"""


def build_tree(root: Path) -> None:
    old, new = time.time() - 9 * DAY, time.time() - DAY
    root.mkdir()
    (root / "top.tmp").write_bytes(b"t")
    os.utime(root / "top.tmp", (old, old))
    for d in range(9):
        for sub in ("", "/deep", "/deep/er"):
            where = root / f"d{d}{sub}"
            where.mkdir(parents=True, exist_ok=True)
            for i in range(5):
                for ext in ("tmp", "bin"):
                    path = where / f"f{i}.{ext}"
                    path.write_bytes(b"x" * (i + d))
                    stamp = old if i % 2 else new
                    os.utime(path, (stamp, stamp))
        (root / f"d{d}" / "link.lnk").symlink_to("/etc/passwd")  # selected: a skip, never followed
    (root / "d4" / os.fsdecode(b"caf\xe9-\xff.tmp")).write_bytes(b"odd")  # not UTF-8


def rows(plan: Plan) -> list[object]:
    """Everything the plan says but its clock: each policy's rows, skips and notes, in order."""
    out: list[object] = []
    for pp in plan.policies:
        out.append((pp.name, pp.matched, pp.matched_bytes, pp.error, list(pp.notes),
                    [(s.path, s.code, s.bytes) for s in pp.skips], [(a.path, a.fact) for a in pp.actions]))
    return out


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The forks made (their pids), counted."""
    made: list[int] = []
    real = os.fork

    def counting() -> int:
        pid = real()
        if pid:
            made.append(pid)
        return pid

    monkeypatch.setattr(walksplit.os, "fork", counting)
    yield made


def plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]) -> tuple[Plan, Plan]:
    """The plan of tmp_path/data walked alone, then in two (each policy's walk split once)."""
    cfg_path = tmp_path / "j.yaml"
    cfg_path.write_text(POLICY.format(state=tmp_path / "state", root=tmp_path / "data"))
    cfg = load_config(str(cfg_path))
    monkeypatch.setattr(walksplit, "SPLIT_WALK_DIRS", 10**9)
    alone = build_plan(cfg, cfg.select(None))
    assert forks == []
    monkeypatch.setattr(walksplit, "SPLIT_WALK_DIRS", 4)
    return alone, build_plan(cfg, cfg.select(None))


def test_a_walk_in_two_plans_row_for_row_what_a_walk_alone_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 forks: list[int]) -> None:
    build_tree(tmp_path / "data")
    other_fs = tmp_path / "data" / "d2" / "mnt"
    other_fs.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(other_fs)]).returncode == 0
    try:
        alone, split = plans(tmp_path, monkeypatch, forks)
    finally:
        if mounted:
            subprocess.run(["umount", str(other_fs)], check=False)
    assert len(forks) == 2  # one second process for each policy's walk
    assert rows(split) == rows(alone)
    tmp = rows(alone)[0]
    assert tmp[1] == 9 * 3 * 5 + 2 and len(tmp[5]) == 9  # it saw every file, and each symlink as a skip
    if mounted:
        assert any("another filesystem" in note for note in tmp[4])  # its notes too, in order


def test_halves_that_meet_in_a_bind_mount_walk_again_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           forks: list[int]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (bind mounts)")
    data = tmp_path / "data"
    build_tree(data)
    # d0 seen again from inside every other directory: whichever half d0 is in, the other
    # half reaches it too, and a walk alone walks it once
    binds = []
    for d in range(1, 9):
        where = data / f"d{d}" / "view"
        where.mkdir()
        if subprocess.run(["mount", "--bind", str(data / "d0"), str(where)]).returncode != 0:
            pytest.skip("no bind mounts here")
        binds.append(where)
    try:
        alone, split = plans(tmp_path, monkeypatch, forks)
    finally:
        for where in binds:
            subprocess.run(["umount", str(where)], check=False)
    assert rows(split) == rows(alone)
    assert any("a bind mount" in note for note in rows(alone)[0][4])  # type: ignore[index]


def test_a_second_walker_that_fails_leaves_the_plan_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          forks: list[int]) -> None:
    build_tree(tmp_path / "data")

    def half_then_die(self: FactTable, out: object) -> None:  # in the forked process only
        out.write(b"\x80\x05")  # type: ignore[attr-defined]  # a pickle cut short
        out.flush()  # type: ignore[attr-defined]
        os._exit(9)

    monkeypatch.setattr(FactTable, "write_to", half_then_die)
    alone, split = plans(tmp_path, monkeypatch, forks)
    assert len(forks) == 2
    assert rows(split) == rows(alone)


def test_a_storage_sample_walked_in_two_counts_what_a_walk_alone_counts(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       forks: list[int]) -> None:
    from janitor.samples import measure

    build_tree(tmp_path / "data")
    (tmp_path / "data" / "d5" / "app.log").write_bytes(b"l" * 77)
    cfg_path = tmp_path / "j.yaml"
    cfg_path.write_text(POLICY.format(state=tmp_path / "state", root=tmp_path / "data"))
    cfg = load_config(str(cfg_path))
    counted = []
    for split in (10**9, 4):
        monkeypatch.setattr(walksplit, "SPLIT_WALK_DIRS", split)
        (sample,) = measure(cfg)
        counted.append((sample.files, sample.bytes, sample.log_bytes))
    assert len(forks) == 1 and counted[0] == counted[1]
    assert counted[0][0] == 1 + 9 * 3 * 5 * 2 + 2 and counted[0][2] == 77  # each file once; the log's bytes
