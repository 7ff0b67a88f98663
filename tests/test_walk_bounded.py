"""The walk holds a bounded number of descriptors however deep the tree (red team finding 11):
a directory chain deeper than the fd limit, made by an unprivileged account, must neither
fail the policy nor hide the files of other users."""

from __future__ import annotations

import gc
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from attacker import Attacker
from conftest import janitor_cmd

from janitor.scan import WalkNote, walk_files

OLD = time.time() - 30 * 86400
ROOT = Path(__file__).resolve().parent.parent


def _limit_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_chain_deeper_than_the_fd_limit_fails_nothing(attacker: Attacker, hostile_root: Path) -> None:
    data = hostile_root / "data"
    data.mkdir()
    udir = attacker.mkdir(data / "u")
    others = data / "other"
    others.mkdir()
    victim_junk = others / "old.tmp"  # another user's file the policy is meant to delete
    victim_junk.write_bytes(b"x" * 100)
    os.utime(victim_junk, (OLD, OLD))
    r = attacker.run(f"""
        import os
        fd = os.open({str(udir)!r}, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(1300):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
        f = os.open("deep.tmp", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"y")
        os.utime(f, ({OLD!r}, {OLD!r}))
        os.close(f)
    """)
    assert r.returncode == 0, r.stderr
    cfg = hostile_root / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: tmpfiles\n    path: {data}\n    action: delete\n    match: ['**/*.tmp']\n"
                   f"    older_than: 1d\n")
    env = {**{k: v for k, v in os.environ.items() if k != "JANITOR_CONFIG"}, "PYTHONPATH": str(ROOT)}
    try:
        for _ in range(2):
            done = subprocess.run(janitor_cmd("run", "-c", cfg), capture_output=True, text=True, env=env,
                                  preexec_fn=_limit_1024, timeout=120, cwd="/")
            text = done.stdout + done.stderr
            assert "Traceback" not in text and "Too many open files" not in text, text[-2000:]
            assert done.returncode == 0, text[-2000:]
        assert not victim_junk.exists(), "other users' files are no longer cleaned"
        bottom = udir / "/".join(["d"] * 1300) / "deep.tmp"  # 2.6 KB: below PATH_MAX
        assert not os.path.lexists(bottom), "the file at the bottom of the chain was never reached"
    finally:
        subprocess.run(["rm", "-rf", str(udir)], check=False)


def test_the_walk_keeps_at_most_keep_open_descriptors_and_sees_everything(tmp_path: Path) -> None:
    depth = 200
    path = tmp_path
    expected = set()
    for i in range(depth):
        path = path / "d"
        path.mkdir()
        (path / f"f{i}").write_bytes(b"")
        expected.add("/".join(["d"] * (i + 1)) + f"/f{i}")
        (path / "side").mkdir()  # a second subdirectory per level: the walk comes back up
        (path / "side" / "s").write_bytes(b"")
        expected.add("/".join(["d"] * (i + 1)) + "/side/s")
    gc.collect()  # pipes of earlier tests' processes closed now, not while counting
    before = _open_fds()
    peak = 0
    seen = set()
    for rel, kind, _st in walk_files(str(tmp_path), keep_open=8):
        assert kind == "file"
        seen.add(rel)
        peak = max(peak, _open_fds() - before)
    assert seen == expected
    assert peak <= 8 + 3  # kept levels, the root, the scandir dup
    assert _open_fds() == before


def test_a_closed_level_renamed_meanwhile_is_passed_over_with_a_note(tmp_path: Path) -> None:
    """A level closed to bound descriptors is reopened by name only if it is still the same
    directory (dev/ino): a swap in between is noted, never followed into another tree."""
    top = tmp_path / "top"
    path = top / "d"
    for _ in range(20):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "bottom").write_bytes(b"")
    for i in range(10):  # siblings of the chain, left pending while the walk is deep
        (top / "d" / f"later{i}").mkdir()
    elsewhere = tmp_path / "elsewhere"
    for i in range(10):
        (elsewhere / f"later{i}").mkdir(parents=True)
        (elsewhere / f"later{i}" / "secret").write_bytes(b"")
    notes: list[WalkNote] = []
    seen = []
    for rel, _kind, _st in walk_files(str(top), keep_open=4, on_note=notes.append):
        seen.append(rel)
        if rel.endswith("bottom"):  # deep: level "d/" is closed now; swap it
            os.rename(top / "d", tmp_path / "gone")
            os.rename(elsewhere, top / "d")
    assert any(r.endswith("bottom") for r in seen)
    assert not any(r.endswith("secret") for r in seen), seen
    assert [n for n in notes if n.code == "changed" and n.relpath == "d/"], notes
    shutil.rmtree(tmp_path / "gone")


def test_a_directory_bind_mounted_inside_the_policy_path_is_walked_once(tmp_path: Path) -> None:
    """A bind mount of a directory below the policy path shows its files twice: they are
    walked once, under the first path, with a note (quota then counts each file once)."""
    root = tmp_path / "data"
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "frame.png").write_bytes(b"x" * 10)
    (root / "zz-view").mkdir()
    if subprocess.run(["mount", "--bind", str(root / "jobs"), str(root / "zz-view")],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot bind mount (needs root)")
    try:
        notes: list[WalkNote] = []
        files = sorted(rel for rel, _, _ in walk_files(str(root), on_note=notes.append))
        assert len(files) == 1 and os.path.basename(files[0]) == "frame.png"
        assert [n.code for n in notes] == ["walked_twice"]
    finally:
        subprocess.run(["umount", str(root / "zz-view")], check=True)
