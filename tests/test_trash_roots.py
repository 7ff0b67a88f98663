"""Mount trash roots (red team finding 12): janitor never makes one where another account
could rename it away, and walks recognise every trash root janitor used by (dev, ino), not by
its name, so a renamed trash is never walked as policy files."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacker import Attacker, mounted_tmpfs
from fsutil import janitor_cmd

OLD = time.time() - 30 * 86400


@pytest.fixture
def tmpfs(hostile_root: Path) -> Iterator[Path]:
    with mounted_tmpfs(hostile_root / "mnt", "32m") as mnt:
        yield mnt


def _config(base: Path, data: Path) -> Path:
    cfg = base / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {base / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: outputs\n    path: {data}\n    action: soft-delete\n"
                   f"    match: ['**/*.bin']\n    older_than: 1d\n")
    return cfg


def _victim(mnt: Path) -> Path:
    team = mnt / "team-b"  # another account's directory on that filesystem (root here)
    team.mkdir(mode=0o755)
    f = team / "render.bin"
    f.write_bytes(b"team b's render")
    os.utime(f, (OLD, OLD))
    return f


def test_no_trash_on_a_sticky_mount_root_another_account_owns(
        attacker: Attacker, hostile_root: Path, tmpfs: Path) -> None:
    """The service account owns its mount root, 1777: the sticky bit does not stop the
    directory's owner renaming root's `.janitor-trash`. janitor refuses it, says why, and
    copies to its own trash; restore puts the file back."""
    attacker.give(tmpfs, 0o1777)
    f = _victim(tmpfs)
    cfg = _config(hostile_root, tmpfs)
    out = janitor_cmd("run", "-c", str(cfg), "--log-format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not f.exists()
    assert not (tmpfs / ".janitor-trash").exists(), "a trash was made where its owner can rename it away"
    assert "trash_refused" in out.stderr and "could rename" in out.stderr
    assert sorted(p.name for p in tmpfs.iterdir()) == ["team-b"]
    back = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert back.returncode == 0, back.stdout + back.stderr
    assert f.read_bytes() == b"team b's render" and f.stat().st_uid == 0
    assert oct(f.stat().st_mode & 0o7777) == oct(0o644)


def test_a_renamed_trash_root_is_never_walked(hostile_root: Path, tmpfs: Path) -> None:
    """A trash root janitor used, renamed (by root, or made by an older janitor on a mount root
    its owner could write): the next run does not walk it, the copy stays restorable by hand."""
    f = _victim(tmpfs)
    cfg = _config(hostile_root, tmpfs)
    out = janitor_cmd("run", "-c", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    trash = tmpfs / ".janitor-trash"
    assert trash.is_dir() and not f.exists()
    copies = [p for p in trash.rglob("render.bin")]
    assert len(copies) == 1
    os.rename(trash, tmpfs / "junk")
    for _ in range(2):
        again = janitor_cmd("run", "-c", str(cfg), "--log-format", "json")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "junk" not in again.stderr, again.stderr[-2000:]
    moved = [p for p in (tmpfs / "junk").rglob("render.bin")]
    assert len(moved) == 1 and moved[0].read_bytes() == b"team b's render"
    assert not (tmpfs / ".janitor-trash").exists() or not list((tmpfs / ".janitor-trash").rglob("render.bin"))
