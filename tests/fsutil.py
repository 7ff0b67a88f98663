"""Helpers for the quota, guard and disk-threshold tests: exact files and policy files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
NOW = 1_700_000_000.0  # fixed "now" for file ages; tests pass it or use ages far in the past
DAY = 86400


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


def names(directory: Path) -> set[str]:
    """Relative paths of the regular files below directory."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def fstype(path: Path) -> str:
    """Filesystem type of the mount holding `path` (the tests' own reading of mountinfo,
    independent of janitor.disk.fstype, whose answer they check)."""
    dev = os.stat(path).st_dev
    want = f"{os.major(dev)}:{os.minor(dev)}"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if left.split()[2] == want:
                return right.split()[0]
    return ""
