"""Shared fixtures: real trees with exact ages, real writer processes, the CLI as a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from attacker import attacker, attacker_account, hostile_root, sysctl_protection  # noqa: F401  (fixtures)

import janitor.plugins

ROOT = Path(__file__).resolve().parent.parent
janitor.plugins.load()  # what every front end does before reading policy files
DAY = 86400.0


@pytest.fixture(autouse=True)
def private_guard_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """guard's cache of validated policy files (janitor/guardcache.py) in a directory of the
    test's own, not the machine's /run/janitor-guard: every subprocess inherits it."""
    where = tmp_path_factory.mktemp("guard-cache-parent") / "guard-cache"
    monkeypatch.setenv("JANITOR_GUARD_CACHE", str(where))
    return where


@dataclass
class Tree:
    """A directory of files with exact sizes and ages."""

    root: Path
    now: float

    def file(self, rel: str, data: bytes | str | int = b"x", *, age: float = 0.0, atime_age: float | None = None,
             mode: int | None = None) -> Path:
        """Create root/rel; `data` as content or a size in bytes; ages in seconds before now."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, int):
            data = os.urandom(data)
        elif isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        if mode is not None:
            path.chmod(mode)
        mtime = self.now - age
        atime = self.now - (age if atime_age is None else atime_age)
        os.utime(path, (atime, mtime))
        return path

    def files(self) -> list[str]:
        out = []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                out.append(os.path.relpath(os.path.join(dirpath, name), self.root))
        return sorted(out)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    root = tmp_path / "data"
    root.mkdir()
    return Tree(root, time.time())


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def write_config(tmp_path: Path, state_dir: Path) -> Callable[..., Path]:
    """Write a policy file; `{state}` and `{root}` in the text are filled in."""

    def write(text: str, name: str = "janitor.yaml", root: Path | None = None) -> Path:
        path = tmp_path / name
        body = textwrap.dedent(text).format(state=state_dir, root=root or tmp_path / "data")
        path.write_text(body)
        return path

    return write


def janitor_cmd(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "janitor", *map(str, args)]


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real CLI in a subprocess, as an operator or systemd would."""

    def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        inherited = {k: v for k, v in os.environ.items() if k not in ("JANITOR_CONFIG", "JANITOR_LOG_FORMAT")}
        full_env = {**inherited, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
        return subprocess.run(janitor_cmd(*args), capture_output=True, text=True, env=full_env,
                              timeout=timeout, cwd=ROOT)

    return run


class Writer:
    """A real process that holds a file open (and writes to it) until stopped."""

    def __init__(self, path: Path, *, mode: str = "a", lock: bool = False) -> None:
        code = textwrap.dedent(f"""
            import fcntl, sys
            f = open({str(path)!r}, {mode!r})  # opened, not written: size and mtime stay
            if {lock!r}:
                fcntl.flock(f, fcntl.LOCK_EX)
            print("ready", flush=True)
            sys.stdin.read()
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()  # an event, not a sleep
        assert ready.strip() == "ready", ready

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture
def writer() -> Iterator[Callable[..., Writer]]:
    started: list[Writer] = []

    def start(path: Path, **kw: object) -> Writer:
        w = Writer(path, **kw)  # type: ignore[arg-type]
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def snapshot(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """Everything observable about a tree: kind, mode, mtime_ns and content digest (or link target)."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", st.st_mode, st.st_mtime_ns, os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns, "")
            else:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                out[rel] = ("file", st.st_mode, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mount small tmpfs filesystems (root only); skipped with a reason where mount fails."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "16M") -> Path:
        target = tmp_path / name
        target.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def fs64(tmp_path: Path) -> Iterator[Path]:
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


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """moto's standalone S3 server on 127.0.0.1, shared by the session (tests use their own buckets)."""
    from s3server import start_moto_server

    server = start_moto_server()
    yield server
    server.stop()


@pytest.fixture
def private_moto_server() -> Iterator[Any]:
    """A server of the test's own, for tests that kill it."""
    from s3server import start_moto_server

    server = start_moto_server()
    yield server
    server.stop()


@pytest.fixture
def checking_proxy(moto_server: Any) -> Iterator[Any]:
    """The shared moto server behind a proxy that checks x-amz-checksum-sha256 like S3."""
    from s3server import ChecksumCheckingProxy

    proxy = ChecksumCheckingProxy(moto_server.port)
    yield proxy
    proxy.close()
