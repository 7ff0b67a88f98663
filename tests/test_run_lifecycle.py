"""A run stops cleanly (issue 11 point 11): SIGTERM and SIGINT finish the file in hand,
journal it, record the run as interrupted and exit 143/130 with one line; a state directory
removed or replaced during the run stops it before another file.

Each test runs a real `janitor run` over thousands of files, waits for it to report
progress, freezes it with SIGSTOP so the files done so far can be counted, does the deed,
lets it go on, and then checks the catalog, the tree and a clean re-run.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DAY, ROOT, janitor_cmd

FILES = 3000


def make_tree(root: Path) -> None:
    old = time.time() - 3 * DAY
    for i in range(FILES):
        path = root / f"d{i % 30}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d" % i)
        os.utime(path, (old, old))


def files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def present(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.bin")}


def config(tmp_path: Path, action: str, settings: str = "") -> Path:
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n{settings}policies:\n"
                   f"  - name: p\n    path: {tmp_path / 'data'}\n    action: {action}\n    older_than: 1d\n")
    return cfg


def start_and_freeze(cfg: Path) -> subprocess.Popen[str]:
    """A `janitor -v run` that has acted on at least one file, stopped (SIGSTOP)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a session of its own: a delete acts in a second process (janitor/execute.py), and the
    # freeze must hold both, as a cgroup freeze or a stop of the process group would
    proc = subprocess.Popen(janitor_cmd("-v", "run", "-c", cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # progress: the first file done is an event, not a guess
        if line.startswith("info: file "):
            break
    else:
        pytest.fail(f"the run ended before acting: {proc.wait()}")
    os.killpg(proc.pid, signal.SIGSTOP)
    return proc


def _catches(pid: int, signum: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask & (1 << (signum - 1)))


def finish(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    os.killpg(proc.pid, signal.SIGCONT)
    assert proc.stderr is not None
    # through the same buffered reader that read the first lines (communicate() would read
    # the fd behind its back and cut a line in two); stdout stays small
    err = proc.stderr.read()
    proc.wait(timeout=120)
    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        pipe.close()  # now, not whenever the collector gets to it (fds are counted elsewhere)
    return proc.returncode, [line for line in err.splitlines() if not line.startswith("info: ")]


def catalog_rows(state: Path) -> tuple[list[tuple[str, str]], dict[str, int], list[tuple[str, str, str | None]]]:
    db = sqlite3.connect(state / "catalog.db")
    try:
        runs = db.execute("SELECT run_id, status FROM runs ORDER BY started").fetchall()
        states = dict(db.execute("SELECT state, count(*) FROM journal GROUP BY state").fetchall())
        done = db.execute("SELECT CAST(path AS TEXT), CAST(trash_path AS TEXT), error FROM journal "
                          "WHERE state = 'done'").fetchall()
    finally:
        db.close()
    return runs, states, done


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_a_signal_finishes_the_file_in_hand_and_records_the_run(tmp_path: Path, signum: int, code: int) -> None:
    data = tmp_path / "data"
    make_tree(data)
    cfg = config(tmp_path, "soft-delete")
    proc = start_and_freeze(cfg)
    gone_before = FILES - len(present(data))
    os.kill(proc.pid, signum)
    returncode, lines = finish(proc)
    gone = FILES - len(present(data))

    assert returncode == code, lines
    name = signal.Signals(signum).name
    assert lines == [f"janitor: interrupted by {name}: finished the file in hand and stopped ({files(gone)} done); "
                     "the run is recorded as interrupted, run again to do the rest"]
    assert gone_before <= gone <= gone_before + 1  # at most the file that was in hand
    assert gone < FILES  # it really stopped early
    runs, states, done = catalog_rows(tmp_path / "state")
    assert [status for _, status in runs] == ["interrupted"]
    assert "planned" not in states  # every row journaled: nothing for reconcile to guess
    # the rest of the batch in hand is journaled "skipped: not attempted", later batches not at all
    assert states["done"] == gone and states["skipped"] >= 1 and set(states) == {"done", "skipped"}
    for path, trash_path, _ in done:  # done means moved, each in exactly one place
        assert not os.path.lexists(path) and os.path.exists(trash_path)

    rerun = subprocess.run(janitor_cmd("run", "-c", cfg), capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    assert "settled" not in rerun.stdout  # nothing left for reconcile
    assert present(data) == set()
    runs, states, _ = catalog_rows(tmp_path / "state")
    assert [status for _, status in runs] == ["interrupted", "ok"]
    assert states["done"] == FILES and "planned" not in states


@pytest.mark.parametrize("settings", ["  acting_process: false\n", "", "  delete_workers: 2\n"],
                         ids=["serial", "second process", "2 workers"])
def test_a_signal_stops_a_delete_with_every_row_recorded(tmp_path: Path, settings: str) -> None:
    """A delete acts in a second process (by default) or worker threads while the next batch
    is journaled: a signal to janitor's process (passed on to the acting one) stops them
    before their next file, and the batch journaled ahead is recorded as not attempted."""
    data = tmp_path / "data"
    make_tree(data)
    cfg = config(tmp_path, "delete", settings)
    proc = start_and_freeze(cfg)  # blocked on its stderr pipe too: it cannot finish meanwhile
    os.kill(proc.pid, signal.SIGTERM)  # the run's own process only, as `kill PID` does
    returncode, lines = finish(proc)
    left = present(data)

    assert returncode == 143, lines
    assert 0 < len(left) < FILES
    runs, states, done = catalog_rows(tmp_path / "state")
    assert [status for _, status in runs] == ["interrupted"]
    assert "planned" not in states and set(states) == {"done", "skipped"}
    assert states["done"] == FILES - len(left)  # journaled done = really gone, each of them
    assert not any(os.path.lexists(path) for path, _, _ in done)

    rerun = subprocess.run(janitor_cmd("run", "-c", cfg), capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    assert present(data) == set()
    runs, states, _ = catalog_rows(tmp_path / "state")
    assert [status for _, status in runs] == ["interrupted", "ok"]
    assert states["done"] == FILES and "planned" not in states


@pytest.mark.parametrize("how", ["state_dir replaced", "state_dir removed", "lock replaced"])
def test_a_state_dir_changed_during_the_run_stops_it(tmp_path: Path, how: str) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    make_tree(data)
    cfg = config(tmp_path, "delete")
    proc = start_and_freeze(cfg)
    gone_before = FILES - len(present(data))
    in_hand = max(1, len(acting_processes_of(proc)))  # a file each, at most, that each process acts in
    kept = tmp_path / "state-kept"
    if how == "state_dir replaced":
        state.rename(kept)
        state.mkdir(mode=0o700)  # a second run would lock this one: the two must not overlap
    elif how == "state_dir removed":
        state.rename(kept)  # (kept aside to read its catalog afterwards)
    else:
        (state / "lock").unlink()
        (state / "lock").write_text("")
        kept = state
    returncode, lines = finish(proc)
    gone = FILES - len(present(data))

    assert returncode == 1, lines
    said = {"state_dir replaced": f"the state directory {state} was replaced during the run; another run could "
                                  "take a lock of its own",
            "state_dir removed": f"the state directory {state} was removed during the run",
            "lock replaced": f"the lock {state / 'lock'} was replaced during the run; another run could take a "
                             "lock of its own"}[how]
    assert lines == [f"janitor: {said}; stopped before acting on another file ({files(gone)} done)"]
    assert gone_before <= gone <= gone_before + in_hand
    runs, states, _ = catalog_rows(kept)
    assert [status for _, status in runs] == ["interrupted"]
    assert "planned" not in states and states["done"] == gone

    state.mkdir(mode=0o700, exist_ok=True)
    rerun = subprocess.run(janitor_cmd("run", "-c", cfg), capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    assert present(data) == set()


def test_a_signal_while_planning_stops_at_once(tmp_path: Path) -> None:
    """Nothing is in hand while planning: the run ends there, recorded, nothing touched."""
    data = tmp_path / "data"
    make_tree(data)
    cfg = config(tmp_path, "delete")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(janitor_cmd("run", "-c", cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT, start_new_session=True)
    # the moment janitor catches SIGTERM (its handler is installed right before it plans)
    # is visible in /proc: await it instead of guessing a delay
    deadline = time.monotonic() + 30
    while not _catches(proc.pid, signal.SIGTERM):
        assert proc.poll() is None and time.monotonic() < deadline, "janitor never installed its handler"
    os.killpg(proc.pid, signal.SIGSTOP)
    acted = FILES - len(present(data))
    os.kill(proc.pid, signal.SIGTERM)
    returncode, lines = finish(proc)
    assert returncode == 143, lines
    assert len(lines) == 1 and lines[0].startswith("janitor: interrupted by SIGTERM"), lines
    gone = FILES - len(present(data))
    assert gone <= acted + 1
    runs, states, _ = catalog_rows(tmp_path / "state")
    assert [status for _, status in runs] == ["interrupted"] and "planned" not in states


def acting_processes_of(proc: subprocess.Popen[str]) -> list[int]:
    """The processes a delete acts in (janitor/execute.py `_ActingProcess`): janitor's children."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


def test_the_acting_process_killed_fails_the_policy_and_the_rerun_settles_its_batch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data)
    cfg = config(tmp_path, "delete")
    proc = start_and_freeze(cfg)
    os.kill(acting_processes_of(proc)[0], signal.SIGKILL)  # one of them: the policy fails all the same
    returncode, lines = finish(proc)
    assert returncode == 1, lines
    assert any("the process acting on this policy's files stopped unexpectedly" in line for line in lines), lines
    left = present(data)
    assert 0 < len(left) < FILES
    runs, states, done = catalog_rows(tmp_path / "state")
    assert not any(os.path.lexists(path) for path, _, _ in done)  # done is never a lie

    rerun = subprocess.run(janitor_cmd("run", "-c", cfg), capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    assert present(data) == set()
    runs, states, _ = catalog_rows(tmp_path / "state")
    assert "planned" not in states and states["done"] == FILES


def test_the_acting_process_stops_before_its_next_file_when_janitor_is_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data)
    cfg = config(tmp_path, "delete")
    proc = start_and_freeze(cfg)
    children = [os.pidfd_open(pid) for pid in acting_processes_of(proc)]  # each readable once it has exited
    assert children
    try:
        gone_before = FILES - len(present(data))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            pipe.close()
        os.killpg(proc.pid, signal.SIGCONT)  # the acting process, still in the group
        for child in children:
            assert select.select([child], [], [], 60)[0], "an acting process went on after janitor died"
    finally:
        for child in children:
            os.close(child)
    gone = FILES - len(present(data))
    assert gone_before <= gone <= gone_before + len(children)  # at most the file each had in hand

    rerun = subprocess.run(janitor_cmd("run", "-c", cfg), capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert rerun.returncode == 0, rerun.stderr
    assert present(data) == set()
    runs, states, _ = catalog_rows(tmp_path / "state")
    assert "planned" not in states and states["done"] == FILES
