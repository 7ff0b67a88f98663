"""A delete acts in a second process (janitor/execute.py `_ActingProcess`) while janitor's
own journals the next batch: the same run, file for file, as acting in one process.

One reviewed plan (`plan --out`) of 660 files over six directories, then, before it runs:
one file replaced, one removed, one rewritten, one made immutable, one held open for writing
by a real process, a directory's worth of files all going (remove_empty_dirs), and a name
that is not UTF-8. `run --plan` over identical trees, with and without the second process,
must leave the same files, say the same, and journal the same."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DAY, Writer
from fsutil import REPO, janitor_cmd

from janitor.execute import acting_process_count

DIRS, PER_DIR = 6, 110


def build(root: Path) -> None:
    old = time.time() - 3 * DAY
    for d in range(DIRS):
        for i in range(PER_DIR):
            path = root / f"d{d}" / f"f{i:03d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * (i + 1))
            os.utime(path, (old, old))
    odd = root / "d1" / os.fsdecode(b"caf\xe9.bin")
    odd.write_bytes(b"latin-1 name")
    os.utime(odd, (old, old))
    (root / "keep").mkdir()  # an empty directory from before: never removed


def config(base: Path, acting_process: bool, remove_empty_dirs: bool = True) -> Path:
    cfg = base / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {base / 'state'}\n  settle: 0s\n"
                   f"  acting_process: {str(acting_process).lower()}\n"
                   f"policies:\n  - name: p\n    path: {base / 'data'}\n    action: delete\n    older_than: 1d\n"
                   f"    remove_empty_dirs: {str(remove_empty_dirs).lower()}\n")
    return cfg


def disturb(data: Path, writer: Callable[..., Writer], immutable: list[Path]) -> None:
    """What happens to a tree between its plan and its run."""
    replaced = data / "d0" / "f005.bin"
    fresh = replaced.with_name("fresh.tmp")
    fresh.write_bytes(b"new")  # made while the planned one still exists: surely another inode
    fresh.rename(replaced)
    (data / "d0" / "f006.bin").unlink()  # gone
    with open(data / "d2" / "f007.bin", "ab") as f:
        f.write(b"more")  # modified since the plan
    stuck = data / "d3" / "f008.bin"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    immutable.append(stuck)
    writer(data / "d4" / "f009.bin")  # held open for writing when the run looks


def outcome(base: Path, cfg: Path) -> tuple[tuple[int, dict[str, object], set[str], list[tuple[str, str, str]]], int]:
    """What the run did and said, and how many processes unlinked its files (strace -f):
    -1 when janitor's own process (the one that forks) unlinked any."""
    trace = base / "unlinks.trace"
    result = subprocess.run(["strace", "-f", "-qq", "-e", "trace=unlinkat,clone,clone3,fork", "-o", str(trace),
                             sys.executable, "-m",
                             "janitor", "run", "--json", "--plan", str(base / "plan.json"), "-c", str(cfg)],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)
    report = json.loads(result.stdout)
    (policy,) = report["policies"]
    said = {k: policy[k] for k in ("status", "files", "bytes", "failed", "skipped")}
    said["messages"] = sorted(re.sub(r"pid \d+", "pid N", m.replace(str(base), "BASE")) for m in policy["messages"])
    left = {str(p.relative_to(base / "data")) for p in (base / "data").rglob("*")}
    db = sqlite3.connect(base / "state" / "catalog.db")
    try:
        journal = sorted((os.fsdecode(path).replace(str(base), "BASE"), state, re.sub(r"pid \d+", "pid N", error or ""))
                         for path, state, error in db.execute("SELECT path, state, error FROM journal"))
    finally:
        db.close()
    lines = trace.read_text().splitlines()
    unlinkers = {line.split()[0] for line in lines if "unlinkat(" in line and ".bin" in line and "= 0" in line}
    forking = {line.split()[0] for line in lines if re.match(r"\d+ +(clone3?|fork)\(", line)}
    return (result.returncode, said, left, journal), -1 if unlinkers & forking else len(unlinkers)


@pytest.fixture
def immutable() -> list[Path]:
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root")
    marked: list[Path] = []
    yield marked  # type: ignore[misc]
    for p in marked:
        subprocess.run(["chattr", "-i", str(p)], check=False)


def test_acting_in_a_second_process_is_the_same_run(tmp_path: Path, writer: Callable[..., Writer],
                                                    immutable: list[Path]) -> None:
    if shutil.which("strace") is None:
        pytest.skip("needs strace (to see which process unlinks)")
    results, unlinkers = [], []
    for acting_process in (False, True):
        base = tmp_path / ("second" if acting_process else "one")
        build(base / "data")
        cfg = config(base, acting_process)
        planned = janitor_cmd("plan", "--out", str(base / "plan.json"), "-c", str(cfg))
        assert planned.returncode == 0, planned.stderr
        disturb(base / "data", writer, immutable)
        result, processes = outcome(base, cfg)
        results.append(result)
        unlinkers.append(processes)
    (code, said, left, journal), second = results
    assert [row for row in second[3] if row not in journal] == [] and second == results[0]
    # one process unlinked the files, or the acting ones, each given its part of every batch
    # (janitor's own unlinked none)
    assert unlinkers == [1, acting_process_count()]
    # and what that run is: each disturbance told apart, everything else gone
    assert code == 1 and said["failed"] == 1 and said["files"] == DIRS * PER_DIR + 1 - 5
    assert said["skipped"] == {"vanished": 1, "changed": 2, "open_for_write": 1}, said
    assert left == {"d0", "d0/f005.bin", "d2", "d2/f007.bin", "d3", "d3/f008.bin", "d4", "d4/f009.bin", "keep"}
    assert {state for _, state, _ in journal} == {"done", "skipped", "failed"}


def test_batches_of_plain_deletions_are_recorded_as_one_by_one(tmp_path: Path) -> None:
    """Batches the acting processes send back as "all done" (no directory left to tidy) are
    recorded as the files of a run in one process are: the same rows, totals and events."""
    said = []
    for acting_process in (False, True):
        base = tmp_path / ("second" if acting_process else "one")
        build(base / "data")
        cfg = config(base, acting_process, remove_empty_dirs=False)
        planned = janitor_cmd("plan", "--out", str(base / "plan.json"), "-c", str(cfg))
        assert planned.returncode == 0, planned.stderr
        (code, report, left, journal), unlinkers = outcome(base, cfg)
        said.append((code, report, left, journal))
        assert unlinkers == (acting_process_count() if acting_process else 1)
    assert said[0] == said[1]
    code, report, left, journal = said[0]
    assert code == 0 and report["files"] == DIRS * PER_DIR + 1 and report["skipped"] == {}
    assert report["bytes"] == DIRS * sum(range(1, PER_DIR + 1)) + len(b"latin-1 name")
    assert {state for _, state, _ in journal} == {"done"} and len(journal) == report["files"]


def tree_of(root: Path, n: int) -> None:
    old = time.time() - 3 * DAY
    for i in range(n):
        path = root / f"d{i % 5}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (old, old))


def test_no_fork_to_be_had_means_one_process_does_it_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork refused (no memory or processes left) is no failure: the run acts in its own."""
    import janitor.execute
    from janitor.config import load_config
    from janitor.events import EventLog
    from janitor.runner import run_policies

    forks: list[int] = []

    def refused() -> int:
        forks.append(1)
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(janitor.execute.os, "fork", refused)
    tree_of(tmp_path / "data", 1200)
    cfg = load_config(config(tmp_path, True))
    report = run_policies(cfg, cfg.select(None), EventLog())
    assert forks == [1, 1]  # tried, and refused: by the plan's walk in two, then by the first acting process
    assert report.result.exit_code == 0 and report.result.files == 1200
    assert not any((tmp_path / "data").rglob("*.bin"))


def test_a_run_giving_up_with_a_batch_in_flight_does_not_wait_on_a_full_pipe(tmp_path: Path) -> None:
    """The journal fails (its disk full) while the acting process has a batch whose outcomes
    fill more than a pipe (long directory names, remove_empty_dirs): the run must end, not
    wait for a process that waits for it. A real fork, with each outcome made long."""
    script = f"""
import os, sys, types
sys.path.insert(0, {str(REPO)!r})
from janitor import execute
from janitor.actions.base import DONE
execute._act = lambda item, fields, action, ctx, parent_of, track, *a: execute._Done(DONE, ("d/" * 100 + str(item), 1, 2))
execute.stop_reason = lambda: None  # it finishes the batch whatever it is told: its outcomes fill the pipe
ctx = types.SimpleNamespace(dirs=types.SimpleNamespace(root_fd=os.open("/", os.O_RDONLY), root_dev=0, one_filesystem=False))
from janitor.runstop import acting, run_stop
with run_stop() as stop, acting(stop):  # as in a run: SIGTERM only asks it to stop
    child = execute._ActingProcess(list(range(1024)), None, ctx, True)
    child.start(list(range(512)))
    child.close()  # the batch in flight is never read: as when the next journal write fails
print("closed", child.pid)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("closed"), done.stderr
    pid = int(done.stdout.split()[1])
    assert not os.path.exists(f"/proc/{pid}")  # reaped, not left behind


def test_each_acting_process_gets_a_contiguous_part_of_a_batch_cut_where_the_directory_changes() -> None:
    from janitor.execute import _cut_points
    from janitor.plan import PlannedAction
    from janitor.scan import FileFact

    def batch(sizes: list[int]) -> list[PlannedAction]:
        """Files of directories d0, d1, ... in plan order, sizes[k] of them in dk."""
        return [PlannedAction("p", "delete", "/r", FileFact(f"d{k}/f{i}", 1, 1, 1, 0.0, 0.0, 0.0, 0o100644, 0, 0),
                              "old")
                for k, n in enumerate(sizes) for i in range(n)]

    for sizes, parts in [([100] * 5 + [12], 2), ([100] * 5 + [12], 4), ([512], 2), ([3, 500, 9], 2),
                         ([1], 4), ([2], 4), ([60, 60, 60, 60], 3), ([7] * 70, 4)]:
        items = batch(sizes)
        cuts = _cut_points(items, parts)
        # together, in order, exactly the batch; never more parts than asked
        assert cuts[0][0] == 0 and cuts[-1][1] == len(items) and len(cuts) <= parts
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(cuts, cuts[1:], strict=False))
        n = len(items)
        for begin, _ in cuts[1:]:
            ideal = min(range(1, parts), key=lambda k: abs(begin - n * k // parts)) * n // parts
            dirs = [item.fact.relpath.rpartition("/")[0] for item in items]
            changes = [i for i in range(1, n) if dirs[i] != dirs[i - 1]]
            near = [c for c in changes if abs(c - ideal) <= n // (2 * parts)]
            # at a change of directory when one is near, else where the part would end
            assert begin in changes if near else begin == ideal, (sizes, parts, cuts)
    assert _cut_points(batch([100] * 5 + [12]), 2) == [(0, 300), (300, 512)]
    assert _cut_points(batch([100] * 5 + [12]), 1) == [(0, 512)]
