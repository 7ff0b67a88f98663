"""when_disk_above on a real 64 MiB tmpfs: the policy is gated on the filesystem's usage,
deletes oldest first only as much as needed, and stops as soon as statvfs says it is under."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from fsutil import DAY, MiB, janitor_cmd, make_file, names, write_config

from janitor.config import load_config
from janitor.disk import disk_usage
from janitor.events import EventLog
from janitor.execute import execute_plan
from janitor.planner import build_plan
from janitor.runner import locked_state, new_run_id


def fill(directory: Path, sizes_mib: list[int], suffix: str = ".mp4") -> list[str]:
    """Files v00, v01, ... with the given sizes, v00 the oldest; returns their names."""
    now = time.time()
    out = []
    for i, size in enumerate(sizes_mib):
        name = f"v{i:02d}{suffix}"
        make_file(directory / name, size * MiB, now - (len(sizes_mib) - i) * DAY)
        out.append(name)
    return out


def policy(path: Path, threshold: str, **keys: object) -> dict[str, object]:
    return {"name": "disk", "path": str(path), "match": ["*.mp4"], "action": "delete",
            "when_disk_above": threshold, **keys}


def test_under_the_threshold_the_policy_is_inactive(fs64: Path, tmp_path: Path) -> None:
    files = fill(fs64, [5] * 8)  # 40 of 64 MiB: 62.5%
    cfg = write_config(tmp_path, [policy(fs64, "70%")])
    result = janitor_cmd("plan", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "inactive: filesystem at 62.5% used, not above when_disk_above 70%" in result.stdout
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    assert names(fs64) == set(files)


def test_above_deletes_the_oldest_needed_and_no_more(fs64: Path, tmp_path: Path) -> None:
    # 2+8+3+6+4+5+5+5+5+5 = 48 MiB: 75%. 60% is 38.4 MiB: 9.6 MiB must go, oldest first:
    # v00 (2) + v01 (8) = 10 MiB is enough; v02 (3) is not needed.
    files = fill(fs64, [2, 8, 3, 6, 4, 5, 5, 5, 5, 5])
    cfg = write_config(tmp_path, [policy(fs64, "60%")])
    result = janitor_cmd("run", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert names(fs64) == set(files) - {"v00.mp4", "v01.mp4"}
    assert disk_usage(str(fs64)).used_pct <= 60.0


def test_older_than_and_busy_files_are_respected(fs64: Path, tmp_path: Path, writer) -> None:  # type: ignore[no-untyped-def]
    files = fill(fs64, [5] * 10)  # 50 MiB: 78%; 60% needs 3 files gone
    w = writer(fs64 / "v00.mp4")
    cfg = write_config(tmp_path, [policy(fs64, "60%")])
    config = load_config(cfg)
    pp = build_plan(config, config.policies).policies[0]
    assert [(os.path.basename(s.path), s.code) for s in pp.skips] == [("v00.mp4", "open_for_write")]
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    assert names(fs64) == set(files) - {"v01.mp4", "v02.mp4", "v03.mp4"}
    w.stop()


def test_execution_stops_as_soon_as_the_filesystem_is_under(fs64: Path, tmp_path: Path) -> None:
    """The plan's count is an estimate: the executor re-measures before every file."""
    files = fill(fs64, [5] * 10)  # 50 MiB: 78%; 60% (38.4 MiB) needs 3 files gone
    make_file(fs64 / "other.bin", 8 * MiB, time.time() - DAY)  # 58 MiB: 90.6%
    cfg = write_config(tmp_path, [policy(fs64, "60%")])
    config = load_config(cfg)
    plan = build_plan(config, config.policies)
    assert [os.path.basename(a.path) for a in plan.policies[0].actions] == files[:4]  # 19.6 MiB to free
    # Someone frees 8 MiB between plan and run: 50 MiB, so two files are now enough.
    (fs64 / "other.bin").unlink()
    events = EventLog("text", stream=io.StringIO())
    with locked_state(config) as catalog:
        result = execute_plan(plan, config, catalog, new_run_id(), events)
    outcome = result.policies[0]
    assert (outcome.status, outcome.files, outcome.skipped["under_threshold"]) == ("stopped", 3, 1)
    assert names(fs64) == set(files[3:])


def test_an_earlier_policy_in_the_same_run_frees_space_first(fs64: Path, tmp_path: Path) -> None:
    """Both policies are planned before either runs; the second re-measures and stops early."""
    videos = fill(fs64, [5] * 10)  # 50 MiB
    temps = fill(fs64, [4, 4], suffix=".tmp")  # +8 MiB: 58 MiB, 90.6%
    cfg = write_config(tmp_path, [
        {"name": "tmp", "path": str(fs64), "match": ["*.tmp"], "action": "delete"},
        policy(fs64, "60%"),
    ])
    plan = janitor_cmd("plan", "-c", str(cfg), "--json")
    assert '"files": 6' in plan.stdout  # 2 temps + 4 videos as planned from 90.6%
    result = janitor_cmd("run", "-c", str(cfg), "--json")
    assert result.returncode == 0, result.stderr
    assert names(fs64) == set(videos[3:])
    assert not set(temps) & names(fs64)
    assert '"under_threshold": 1' in result.stdout
