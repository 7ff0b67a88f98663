"""quota on a real small filesystem: eviction order, watermark, max_files, keep_newest,
files being written, then: soft-delete, composition with when_disk_above, validation."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from fsutil import DAY, MiB, janitor_cmd, make_file, names, write_config

from janitor.config import load_config
from janitor.errors import ConfigError
from janitor.events import EventLog
from janitor.planner import build_plan
from janitor.runner import run_policies

KiB = 1024


def quota(path: Path, **keys: Any) -> dict[str, Any]:
    return {"name": "q", "path": str(path), "action": "quota", **keys}


def run(cfg_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """Run every policy in-process; returns the report and the JSON events."""
    cfg = load_config(cfg_path)
    stream = io.StringIO()
    events = EventLog("json", stream=stream)
    report = run_policies(cfg, cfg.select(None), events)
    return report, [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def aged(fs64: Path) -> Path:
    """out/f01..f10: 100 KiB each, f01 the oldest (10 days) ... f10 the newest (1 day)."""
    now = time.time()
    for i in range(1, 11):
        make_file(fs64 / "out" / f"f{i:02d}", 100 * KiB, now - (11 - i) * DAY)
    return fs64 / "out"


def test_evicts_oldest_down_to_low_watermark(aged: Path, tmp_path: Path) -> None:
    # 1000 KiB over a 600 KiB cap; low watermark 50% = 300 KiB: keep the 3 newest
    cfg = write_config(tmp_path, [quota(aged, max_size="600KiB", low_watermark="50%")])
    report, events = run(cfg)
    assert names(aged) == {"f08", "f09", "f10"}
    assert report.result.files == 7 and report.result.bytes == 700 * KiB
    (enforced,) = [e for e in events if e["event"] == "quota_enforced"]
    assert (enforced["files_before"], enforced["bytes_before"]) == (10, 1000 * KiB)
    assert (enforced["files_after"], enforced["bytes_after"]) == (3, 300 * KiB)
    assert {e["event"] for e in events if e.get("path")} == {"file_deleted"}


def test_default_watermark_is_90_percent_and_exact(aged: Path, tmp_path: Path) -> None:
    # over the cap by one byte; 90% of the cap is 921,599 bytes: 9 files (921,600) are one
    # byte too many, so 8 stay
    cfg = write_config(tmp_path, [quota(aged, max_size=1000 * KiB - 1)])
    run(cfg)
    assert names(aged) == {f"f{i:02d}" for i in range(3, 11)}


def test_at_the_cap_nothing_is_evicted(aged: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [quota(aged, max_size="1000KiB", max_files=10)])
    plan = build_plan(load_config(cfg), load_config(cfg).policies)
    assert plan.policies[0].actions == []
    assert plan.policies[0].matched == 10


def test_evict_largest(fs64: Path, tmp_path: Path) -> None:
    now = time.time()
    sizes = {"a": 50, "b": 400, "c": 10, "d": 300, "e": 200, "f": 40}  # KiB; 1000 in all
    for i, (name, kib) in enumerate(sizes.items()):
        make_file(fs64 / name, kib * KiB, now - (10 - i) * DAY)
    cfg = write_config(tmp_path, [quota(fs64, max_size="800KiB", evict="largest", low_watermark="50%")])
    plan = build_plan(load_config(cfg), load_config(cfg).policies)
    assert [os.path.basename(a.path) for a in plan.policies[0].actions] == ["b", "d"]
    run(cfg)
    assert names(fs64) == {"a", "c", "e", "f"}  # 300 KiB <= 400 KiB


def test_max_files(aged: Path, tmp_path: Path) -> None:
    # 10 files over a cap of 5; 80% of 5 is 4
    cfg = write_config(tmp_path, [quota(aged, max_files=5, low_watermark="80%")])
    run(cfg)
    assert names(aged) == {"f07", "f08", "f09", "f10"}


def test_both_caps_evict_until_both_are_under(aged: Path, tmp_path: Path) -> None:
    # over max_files only; eviction goes on until the size is under its watermark as well
    cfg = write_config(tmp_path, [quota(aged, max_files=9, max_size="10MiB", low_watermark="50%")])
    run(cfg)
    assert names(aged) == {"f07", "f08", "f09", "f10"}  # 4 <= 4.5 files, 400 KiB <= 5 MiB


def test_age_by_atime(fs64: Path, tmp_path: Path) -> None:
    now = time.time()
    # mtime says a is oldest, atime says b is
    make_file(fs64 / "a", 100 * KiB, now - 9 * DAY, atime=now - 1 * DAY)
    make_file(fs64 / "b", 100 * KiB, now - 1 * DAY, atime=now - 9 * DAY)
    make_file(fs64 / "c", 100 * KiB, now - 5 * DAY, atime=now - 5 * DAY)
    cfg = write_config(tmp_path, [quota(fs64, max_files=2, low_watermark="100%", age_by="atime")])
    run(cfg)
    assert names(fs64) == {"a", "c"}


def test_keep_newest_is_counted_and_never_evicted(aged: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [quota(aged, max_files=1, keep_newest=3)])
    config = load_config(cfg)
    plan = build_plan(config, config.policies)
    pp = plan.policies[0]
    assert {s.code for s in pp.skips} == {"keep_newest"} and len(pp.skips) == 3
    assert any("cannot reach its low watermark" in n for n in pp.notes), pp.notes
    run(cfg)
    assert names(aged) == {"f08", "f09", "f10"}


def test_file_being_written_is_counted_but_never_evicted(aged: Path, tmp_path: Path, writer: Any) -> None:
    w = writer(aged / "f01")  # the oldest file is still being written by a live process
    cfg = write_config(tmp_path, [quota(aged, max_size="600KiB", low_watermark="50%")])
    config = load_config(cfg)
    pp = build_plan(config, config.policies).policies[0]
    assert (pp.matched, pp.matched_bytes) == (10, 1000 * KiB)  # counted
    assert [(os.path.basename(s.path), s.code) for s in pp.skips] == [("f01", "open_for_write")]
    assert f"pid {w.proc.pid}" in pp.skips[0].reason
    report, _ = run(cfg)
    # f01's 100 KiB still count: to reach 300 KiB only 2 other files may stay
    assert names(aged) == {"f01", "f09", "f10"}
    assert report.result.exit_code == 0


def test_plan_is_a_dry_run(aged: Path, tmp_path: Path) -> None:
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in aged.iterdir()}
    cfg = write_config(tmp_path, [quota(aged, max_files=2)])
    result = janitor_cmd("plan", "-c", str(cfg), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["files"] == 9 and data["policies"][0]["actions"][0]["then"] == "delete"
    assert data["policies"][0]["actions"][0]["reason"].startswith("quota files 10/2: evict oldest to 1 files")
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in aged.iterdir()} == before


def test_then_soft_delete_goes_to_the_trash_and_restores(aged: Path, tmp_path: Path) -> None:
    trash = aged.parent / "trash"  # on the same fs64, outside the policy path
    cfg = write_config(tmp_path, [quota(aged, max_files=5, low_watermark="100%", then="soft-delete",
                                        trash_dir=str(trash))])
    report, events = run(cfg)
    assert names(aged) == {"f06", "f07", "f08", "f09", "f10"}
    assert len([e for e in events if e["event"] == "file_soft_deleted"]) == 5
    assert len(list(trash.rglob("f0*"))) == 5
    restored = janitor_cmd("restore", "-c", str(cfg), "--all")
    assert restored.returncode == 0, restored.stderr
    assert len(names(aged)) == 10
    assert (aged / "f01").stat().st_mtime == pytest.approx(time.time() - 10 * DAY, abs=60)


def test_quota_with_when_disk_above_acts_only_while_the_disk_is_over(fs64: Path, tmp_path: Path) -> None:
    now = time.time()
    for i in range(8):  # 8 x 5 MiB = 40 MiB of 64 MiB: 62.5%
        make_file(fs64 / f"v{i}", 5 * MiB, now - (10 - i) * DAY)
    pol = quota(fs64, max_files=2, evict="oldest", when_disk_above="70%")
    cfg = write_config(tmp_path, [pol])
    config = load_config(cfg)
    pp = build_plan(config, config.policies).policies[0]
    assert pp.inactive and "not above when_disk_above 70%" in pp.inactive
    run(cfg)
    assert len(names(fs64)) == 8

    # Above 50%: the quota alone would evict 6 files, but 2 bring the disk to 30 MiB (47%)
    cfg = write_config(tmp_path, [dict(pol, when_disk_above="50%")])
    report, _ = run(cfg)
    assert names(fs64) == {"v2", "v3", "v4", "v5", "v6", "v7"}
    assert report.result.policies[0].files == 2


def test_validate_rejects_bad_quota_policies(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [
        {"name": "a", "path": str(tmp_path), "action": "quota"},
        {"name": "b", "path": str(tmp_path), "action": "quota", "max_files": 3, "then": "keep"},
        {"name": "c", "path": str(tmp_path), "action": "quota", "max_files": 3, "target": "nas"},
        {"name": "d", "path": str(tmp_path), "action": "quota", "max_size": "1G", "evict": "newest"},
        {"name": "e", "path": str(tmp_path), "action": "delete", "max_files": 3},
    ])
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    text = "\n".join(exc.value.problems)
    assert "policies[0].action: quota needs max_size, max_files or both" in text
    assert "policies[1].then: 'keep' is not one of delete, soft-delete, archive for action quota" in text
    assert "policies[2].target: is only used with then: archive" in text
    assert "policies[3].evict: 'newest' is not one of" in text
    assert "policies[4].max_files: is not an option of action 'delete' (it belongs to quota)" in text


def test_then_archive_needs_the_archive_action_and_a_target(tmp_path: Path) -> None:
    from janitor.actions.base import ACTIONS

    cfg = write_config(tmp_path, [quota(tmp_path, max_files=3, then="archive")])
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    text = "\n".join(exc.value.problems)
    assert "policies[0].target: then: archive needs a target" in text
    if "archive" not in ACTIONS:
        assert "policies[0].then: archive action not available in this janitor" in text


def test_quota_runs_from_the_command_line(aged: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [quota(aged, max_size="500KiB", low_watermark="60%")])
    result = janitor_cmd("run", "-c", str(cfg), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    assert names(aged) == {"f08", "f09", "f10"}
    assert '"event": "quota_enforced"' in result.stderr


@pytest.mark.parametrize("largest", [False, True], ids=["oldest", "largest"])
@pytest.mark.parametrize("seed", range(5))
def test_the_eviction_order_is_a_plain_sort_of_the_columns(largest: bool, seed: int) -> None:
    """quota orders its files by a counting sort over buckets (no object per file); the
    order must be exactly (age, path) oldest first, or (blocks desc, age, path) largest
    first, whatever ties and extremes the files have."""
    import random

    from janitor.actions.quota import eviction_order
    from janitor.facttable import FactTable
    from janitor.scan import FileFact

    rnd = random.Random(seed)
    ages = [rnd.uniform(0, 1e9) for _ in range(5)] + [0.0, 1e9, 1.5e9 + 0.25]  # few values: many ties
    sizes = [0, 1, 7, 8, 1023, 1024, 2047, 2048, 4096, 2**20, 2**33 + 5, 2**40]
    table = FactTable()
    for i in range(3000):
        table.add_fact(FileFact(f"d{rnd.randrange(40)}/f{rnd.randrange(10**6)}-{i}", 2049, 1000 + i, 1, rnd.choice(ages),
                                0.0, 0.0, 0o100644, 0, 0, blocks=rnd.choice(sizes), nlink=1))
    rows = [r for r in range(len(table)) if rnd.random() < 0.8]
    mtime, blocks = table.column("mtime"), table.column("blocks")
    if largest:
        expected = sorted(rows, key=lambda r: (-blocks[r], mtime[r], table.relpath_of(r)))
    else:
        expected = sorted(rows, key=lambda r: (mtime[r], table.relpath_of(r)))
    assert list(eviction_order(table, rows, "mtime", largest=largest)) == expected


def test_a_file_moved_ahead_of_the_walk_is_counted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with one link moved, during the walk, from a directory the walk has read to
    one it has not is listed twice: counted twice it would push a quota that is under its
    cap over it, and evict other people's (older) files. Found by the red-team review."""
    import janitor.planner
    from janitor.config import load_config
    from janitor.planner import build_plan
    from janitor.scan import walk_files

    root = tmp_path / "pool"
    now = time.time()
    for i in range(6):  # other users' files, old: the first to be evicted
        path = root / "victim" / f"v{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"v" * 100 * 1024)
        os.utime(path, (now - (20 - i) * 86400,) * 2)
    for d in ("a1", "a2"):
        (root / d).mkdir()
        (root / d / "marker").write_bytes(b"")
    # the attacker's file goes where the walk looks first, then moves to where it looks next
    visits = [rel.split("/")[0] for rel, _, _ in walk_files(str(root)) if rel.endswith("/marker")]
    (root / visits[0] / "big").write_bytes(b"b" * 400 * 1024)

    def racing(*args, **kwargs):  # type: ignore[no-untyped-def]
        moved = False
        for rel, kind, st in walk_files(*args, **kwargs):
            yield rel, kind, st
            if rel.endswith("/big") and not moved:
                os.rename(root / rel, root / visits[1] / "big")
                moved = True

    monkeypatch.setattr(janitor.planner, "walk_files", racing)
    cfg_path = tmp_path / "janitor.yaml"
    cfg_path.write_text(f"version: 1\nsettings: {{state_dir: {tmp_path / 'state'}, settle: 0s}}\npolicies:\n"
                        f"  - {{name: q, path: {root}, action: quota, max_size: 1100KiB, low_watermark: 90%}}\n")
    config = load_config(cfg_path)
    plan = build_plan(config, config.policies)
    (pp,) = plan.policies
    assert pp.matched == 10  # 6 + 2 markers + the file listed twice: the race happened
    assert [item.fact.relpath for item in pp.actions] == []  # 1000 KiB used, under 1100 KiB: nothing goes
