"""`remove_empty_dirs` (issue 12, "Empty directories"): the directories a run emptied go,
nothing else; a user racing the run cannot make janitor remove anything else."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from attacker import Attacker
from fsutil import janitor_cmd

DAY = 86400


def _config(base: Path, action: str, remove: bool = True) -> Path:
    cfg = base / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {base / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: p\n    path: {base / 'data'}\n    action: {action}\n    older_than: 1d\n"
                   + ("    remove_empty_dirs: true\n" if remove else ""))
    return cfg


@pytest.mark.parametrize("action", ["delete", "soft-delete"])
def test_only_directories_this_run_emptied_are_removed(attacker: Attacker, hostile_root: Path,
                                                       sysctl_protection: int, action: str) -> None:
    data = hostile_root / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    canary = hostile_root / "canary-empty"
    canary.mkdir()
    proc = attacker.run(f"""
        import os, time
        up = {str(up)!r}
        old = time.time() - 10 * {DAY}
        def f(rel, age=old):
            p = os.path.join(up, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as fh:
                fh.write(b"x" * 100)
            os.utime(p, (age, age))
        f("2026-10-01/a.mp4"); f("2026-10-01/b.mp4")
        f("deep/er/est/c.mp4")
        f("mixed/old.mp4"); f("mixed/new.mp4", time.time())
        os.mkdir(os.path.join(up, "was-empty"))
        # a directory whose only file the run removes, swapped for a symlink to a root-owned
        # empty directory as soon as it is empty
        f("swapped/d.mp4")
    """)
    assert proc.returncode == 0, proc.stderr
    racer = attacker.start(f"""
        import os
        up = {str(up)!r}
        print("ready", flush=True)
        while time.monotonic() < DEADLINE:
            d = os.path.join(up, "swapped")
            try:
                if not os.listdir(d):
                    os.rename(d, d + ".real")
                    os.symlink({str(canary)!r}, d)
                    break
            except OSError:
                pass
    """, seconds=15)
    attacker.wait_ready(racer)
    out = janitor_cmd("run", "-c", str(_config(hostile_root, action)))
    attacker.finish(racer)
    assert out.returncode == 0, out.stderr
    left = sorted(str(p.relative_to(up)) for p in up.rglob("*"))
    assert "2026-10-01" not in left and "deep" not in left  # emptied, with the chain above them
    assert "mixed" in left and "mixed/new.mp4" in left  # still holds a file
    assert "was-empty" in left  # empty before the run: not this run's doing
    assert data.is_dir() and up.is_dir()  # never the policy path (nor a directory still in use)
    assert canary.is_dir()  # the symlink's target is never removed
    for rel in left:
        assert (up / rel).lstat().st_uid == attacker.uid


def test_a_directory_that_gains_a_file_meanwhile_stays(hostile_root: Path) -> None:
    """rmdir through the parent's descriptor: a directory with a new entry is left (ENOTEMPTY)."""
    from janitor.config import load_config
    from janitor.events import EventLog
    from janitor.runner import run_policies

    data = hostile_root / "data"
    (data / "d").mkdir(parents=True)
    old = os.path.getmtime(data) - 10 * DAY
    (data / "d" / "old.bin").write_bytes(b"x")
    os.utime(data / "d" / "old.bin", (old, old))
    config = load_config(str(_config(hostile_root, "delete")))
    import janitor.execute as execute

    real = execute.remove_emptied_dirs

    def add_file_first(ctx, outcome):  # type: ignore[no-untyped-def]
        (data / "d" / "arrived.txt").write_text("new")  # a writer's file lands just before rmdir
        real(ctx, outcome)

    execute.remove_emptied_dirs = add_file_first
    try:
        report = run_policies(config, config.policies, EventLog())
    finally:
        execute.remove_emptied_dirs = real
    assert report.result.files == 1
    assert (data / "d" / "arrived.txt").read_text() == "new"
    assert stat.S_ISDIR((data / "d").lstat().st_mode)


def test_off_by_default(hostile_root: Path) -> None:
    data = hostile_root / "data"
    (data / "d").mkdir(parents=True)
    (data / "d" / "old.bin").write_bytes(b"x")
    os.utime(data / "d" / "old.bin", (0, 0))
    assert janitor_cmd("run", "-c", str(_config(hostile_root, "delete", remove=False))).returncode == 0
    assert (data / "d").is_dir() and not (data / "d" / "old.bin").exists()
