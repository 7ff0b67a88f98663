"""Injected faults: a file the kernel will not let go of, a locked catalog, a full trash.

Each must fail exactly what it affects with one clear line and exit 1, and leave every
file where it was (no partial work, no half-written copy). Other faults are covered next
to their features: a corrupt catalog (test_observability), S3 endpoint down, killed or
failing mid-run (test_archive, test_targets), a full disk while truncating (test_truncate).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsutil import janitor_cmd

DAY = 86400


def old_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - 10 * DAY
    os.utime(path, (t, t))
    return path


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def config(tmp_path: Path, data: Path, action: str = "delete", extra: str = "") -> Path:
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n"
                   f"policies:\n  - name: p\n    path: {data}\n    action: {action}\n    older_than: 1d\n{extra}")
    return cfg


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable with chattr +i (unlink fails with EPERM even for root); undone after."""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root")
    marked: list[Path] = []
    yield marked
    for p in marked:
        subprocess.run(["chattr", "-i", str(p)], check=False)


@pytest.mark.parametrize("action", ["delete", "soft-delete"])
def test_a_file_the_kernel_refuses_fails_alone_with_one_line(tmp_path: Path, immutable: list[Path],
                                                             action: str) -> None:
    data = tmp_path / "data"
    for i in range(5):
        old_file(data / f"f{i}.bin", b"x" * (i + 1))
    stuck = data / "f2.bin"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    immutable.append(stuck)
    proc = janitor_cmd("run", "-c", str(config(tmp_path, data, action)))
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in data.iterdir()) == ["f2.bin"]  # the others went
    # one line on stderr (the event, with its code), and the file once in the summary
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "f2.bin" in errors[0] and "code=E_PERMISSION" in errors[0], proc.stderr
    assert "Operation not permitted" in errors[0]
    assert [ln for ln in proc.stdout.splitlines() if "f2.bin" in ln] != []
    assert "Traceback" not in proc.stderr
    with sqlite3.connect(tmp_path / "state" / "catalog.db") as con:
        assert con.execute("SELECT error FROM journal WHERE state='failed'").fetchall() == [
            ("E_PERMISSION: Operation not permitted",)]
        assert con.execute("SELECT count(*) FROM journal WHERE state='planned'").fetchone() == (0,)
    if action == "soft-delete":
        assert not list((tmp_path / "state" / "trash").rglob("f2.bin*"))


HOLDER = textwrap.dedent("""
    import sqlite3, sys
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_a_locked_catalog_is_a_clear_error_and_no_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = config(tmp_path, data)
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0  # creates the catalog
    for i in range(3):
        old_file(data / f"f{i}.bin", b"data")
    db = tmp_path / "state" / "catalog.db"
    assert db.exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = tree_digest(data)
        started = time.monotonic()
        proc = janitor_cmd("run", "-c", str(cfg), timeout=60)
        waited = time.monotonic() - started
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "catalog" in proc.stderr and "locked" in proc.stderr, proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) <= 2, proc.stderr
    assert tree_digest(data) == before  # no partial work
    assert waited < 30


def _mount(target: Path, size: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")


def test_full_trash_on_another_filesystem_keeps_the_file_and_no_partial(tmp_path: Path) -> None:
    """ENOSPC half way through the verified copy to a cross-filesystem trash."""
    datafs, trashfs = tmp_path / "datafs", tmp_path / "trashfs"
    _mount(datafs, "16M")
    try:
        _mount(trashfs, "1M")
        try:
            # janitor would make <mount>/.janitor-trash on the data filesystem; a plain file
            # there forces the copy into the configured (full) trash
            (datafs / ".janitor-trash").write_bytes(b"")
            data = datafs / "data"
            big = old_file(data / "big.bin", os.urandom(3 * 1024 * 1024))
            small = old_file(data / "small.bin", b"fits")
            before = tree_digest(data)
            cfg = config(tmp_path, data, "soft-delete", f"    trash_dir: {trashfs / 'trash'}\n")
            proc = janitor_cmd("run", "-c", str(cfg))
            assert proc.returncode == 1, proc.stderr
            assert big.exists() and tree_digest(data)["big.bin"] == before["big.bin"]
            assert not small.exists()  # the file that fits went
            assert not [p for p in trashfs.rglob("*") if p.name.endswith(".janitor-partial")]
            assert "code=E_DISK_FULL" in proc.stderr and "free there" in proc.stdout + proc.stderr  # refused before a byte
            assert "Traceback" not in proc.stderr
            assert janitor_cmd("restore", "--all", "-c", str(cfg)).returncode == 0
            assert tree_digest(data) == before
        finally:
            subprocess.run(["umount", str(trashfs)], check=False)
    finally:
        subprocess.run(["umount", str(datafs)], check=False)
