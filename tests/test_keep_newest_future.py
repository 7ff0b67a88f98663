"""keep_newest is not taken by files dated in the future (red team finding 14): anyone may set
a file's times, and an unprivileged account's two files dated ten years ahead must not take
the slots that protect the team's two newest real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from attacker import Attacker
from fsutil import janitor_cmd

OLD = time.time() - 30 * 86400


def test_future_dated_files_take_no_keep_newest_slot(attacker: Attacker, hostile_root: Path) -> None:
    data = hostile_root / "data"
    data.mkdir()
    team = data / "team"
    team.mkdir()
    last, older = [], []
    for i in range(4):
        p = team / f"r{i}.mp4"
        p.write_bytes(b"render %d" % i)
        os.utime(p, (OLD + i, OLD + i))
        (last if i >= 2 else older).append(p)
    udir = attacker.mkdir(data / "u")
    far = time.time() + 10 * 365 * 86400
    r = attacker.run(f"""
        import os
        for i in range(2):
            p = os.path.join({str(udir)!r}, f"z{{i}}.mp4")
            open(p, "wb").close()
            os.utime(p, ({far!r}, {far!r}))
    """)
    assert r.returncode == 0, r.stderr
    cfg = hostile_root / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: renders\n    path: {data}\n    action: delete\n    match: ['**/*.mp4']\n"
                   f"    older_than: 7d\n    keep_newest: 2\n")
    done = janitor_cmd("run", "-c", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    for p in last:  # the two newest real files: kept, intact
        assert p.read_bytes() == b"render %d" % int(p.stem[1:]), "keep_newest lost to future-dated files"
    assert not any(p.exists() for p in older)  # the policy still does its work
    assert sorted(p.name for p in udir.iterdir()) == ["z0.mp4", "z1.mp4"]  # too new to act on


def test_a_file_within_clock_skew_still_counts_as_newest(hostile_root: Path) -> None:
    data = hostile_root / "data"
    data.mkdir()
    skewed = data / "skewed.mp4"  # written by an NFS client whose clock is 10 minutes ahead
    skewed.write_bytes(b"s")
    ahead = time.time() + 600
    os.utime(skewed, (ahead, ahead))
    old = data / "old.mp4"
    old.write_bytes(b"o")
    os.utime(old, (OLD, OLD))
    cfg = hostile_root / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: renders\n    path: {data}\n    action: delete\n    match: ['*.mp4']\n"
                   f"    older_than: 7d\n    keep_newest: 2\n")
    done = janitor_cmd("run", "-c", str(cfg))
    assert done.returncode == 0, done.stdout + done.stderr
    assert skewed.exists() and old.exists()  # both are among the 2 newest
