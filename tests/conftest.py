"""Shared fixtures: small real filesystems, trees with exact sizes and ages, a real writer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
NOW = 1_700_000_000.0  # fixed "now" for file ages; tests pass it or use ages far in the past
DAY = 86400


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 64 MiB tmpfs mounted in tmp_path, unmounted afterwards.

    A filesystem of our own makes `df` figures exact and independent of whatever else the
    machine is doing: what we write is all that is used.
    """
    mnt = tmp_path / "fs"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64M,mode=0755", "tmpfs", str(mnt)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip() or result.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if os.path.ismount(mnt):  # something still has it open: detach it anyway
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def make_file(path: Path, size: int, mtime: float, atime: float | None = None) -> Path:
    """A file of exactly `size` bytes (real blocks, not sparse) with the given times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = b"x" * min(size, MiB) if size else b""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    os.utime(path, (atime if atime is not None else mtime, mtime))
    return path


def write_config(directory: Path, policies: list[dict[str, Any]], **settings: Any) -> Path:
    """A policy file with a private state dir; settle 0s unless given."""
    state = directory / "state"
    settings.setdefault("state_dir", str(state))
    settings.setdefault("settle", "0s")
    cfg = directory / "janitor.yaml"
    cfg.write_text(yaml.safe_dump({"version": 1, "settings": settings, "policies": policies}, sort_keys=False))
    return cfg


def janitor_cmd(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python -m janitor ARGS` with this worktree first on the path."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    full_env.pop("JANITOR_CONFIG", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "janitor", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, check=False, **kwargs)


WRITER = textwrap.dedent(
    """
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    print("ready", flush=True)
    sys.stdin.read()  # hold the file open until the test closes our stdin
    os.close(fd)
    """
)


class Writer:
    """A child process holding a file open for writing, like a service mid-render."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the file is open: no sleeps
        assert line.strip() == "ready", line

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture
def writer() -> Iterator[type[Writer]]:
    started: list[Writer] = []

    class _Writer(Writer):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            started.append(self)

    yield _Writer
    for w in started:
        w.stop()


def names(directory: Path) -> set[str]:
    """Relative paths of the regular files below directory."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
