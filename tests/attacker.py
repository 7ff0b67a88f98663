"""The attacker's side of the hostile-directory tests: a real unprivileged user.

janitor runs as root over directories that other accounts can write. These fixtures create a
real local account, give it a directory inside a policy path, and run attack code *as that
account* (a separate process with its uid, gid and no supplementary groups), racing janitor
in a loop bounded by time. The kernel's own permission checks then decide what the attacker
can do, exactly as on a real host; nothing is simulated.

Fixtures (import them into a test module with `from attacker import *`, or use them through
conftest, which re-exports them):

* `attacker`: an `Attacker` (uid, gid, name) created for the session, removed afterwards;
  skips the test cleanly where no user can be created (not root, no `useradd`).
* `sysctl_protection`: parametrised over 0 and 1; sets `fs.protected_hardlinks` and
  `fs.protected_symlinks` to that value for the test and restores both afterwards; skips
  where the sysctls cannot be written.
* `hostile_root`: a directory reachable by the attacker (mode 0755 on every ancestor), owned
  by root, removed afterwards. Put policy paths and state below it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SYSCTLS = ("fs.protected_hardlinks", "fs.protected_symlinks")
# The attacker needs an interpreter it may execute: the test's own may live under a 0700 home
# (pyenv, a venv in /root). The attack code uses the standard library only.
ATTACKER_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)),
                       sys.executable)


@dataclass
class Attacker:
    """A real unprivileged account and the attack processes started as it."""

    name: str
    uid: int
    gid: int
    running: list[subprocess.Popen[str]] = field(default_factory=list)

    def give(self, path: Path, mode: int = 0o755) -> Path:
        """Hand `path` (a directory or file janitor's test made) to the attacker."""
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)
        return path

    def mkdir(self, path: Path, mode: int = 0o755) -> Path:
        """A directory owned by the attacker (parents created root-owned 0755)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True)
        return self.give(path, mode)

    def run(self, code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run Python `code` as the attacker and wait for it; its output is returned."""
        return subprocess.run([ATTACKER_PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout, **self._creds())

    def start(self, code: str, *, seconds: float = 10.0) -> subprocess.Popen[str]:
        """Start Python `code` as the attacker in the background.

        The code finds `DEADLINE` (a time.monotonic() value `seconds` from now) defined and must
        loop only until then; it should print "ready" (flushed) once its first move is made, which
        `wait_ready` awaits. The process is killed at teardown whatever it does.
        """
        prelude = f"import time\nDEADLINE = time.monotonic() + {seconds!r}\n"
        proc = subprocess.Popen([ATTACKER_PYTHON, "-c", prelude + textwrap.dedent(code)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **self._creds())
        self.running.append(proc)
        return proc

    @staticmethod
    def wait_ready(proc: subprocess.Popen[str]) -> None:
        """Block until the attack process says it made its first move (an event, not a sleep)."""
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"attacker did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"

    def finish(self, proc: subprocess.Popen[str], timeout: float = 60) -> str:
        """Wait for an attack process to end by its deadline; its stderr (for diagnostics)."""
        _, err = proc.communicate(timeout=timeout)
        return err

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.running.clear()

    def _creds(self) -> dict[str, object]:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "env": env, "cwd": "/"}


def _make_user() -> Attacker | None:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        return None
    name = f"jatk{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    import pwd

    entry = pwd.getpwnam(name)
    return Attacker(name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def attacker_account() -> Iterator[Attacker]:
    account = _make_user()
    if account is None:
        pytest.skip("cannot create an unprivileged user here (needs root and useradd)")
    try:
        yield account
    finally:
        account.stop_all()
        subprocess.run(["userdel", account.name], capture_output=True)


@pytest.fixture
def attacker(attacker_account: Attacker) -> Iterator[Attacker]:
    """The session's attacker account; its attack processes are killed after each test."""
    yield attacker_account
    attacker_account.stop_all()


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> bool:
    try:
        Path("/proc/sys", *name.split(".")).write_text(value)
    except OSError:
        return False
    return _read_sysctl(name) == value


@pytest.fixture(params=[0, 1], ids=["protected=0", "protected=1"])
def sysctl_protection(request: pytest.FixtureRequest) -> Iterator[int]:
    """fs.protected_hardlinks and fs.protected_symlinks at 0, then at 1; restored afterwards."""
    value = str(request.param)
    saved = {name: _read_sysctl(name) for name in SYSCTLS}
    if any(v is None for v in saved.values()):
        pytest.skip("the fs.protected_* sysctls cannot be read here")
    try:
        for name in SYSCTLS:
            if not _write_sysctl(name, value):
                pytest.skip(f"cannot set {name}={value} here (read-only /proc/sys?)")
        yield int(value)
    finally:
        for name, old in saved.items():
            if old is not None:
                _write_sysctl(name, old)


@pytest.fixture
def hostile_root() -> Iterator[Path]:
    """A root-owned 0755 directory the attacker can reach (pytest's tmp_path is 0700 to root)."""
    base = Path(tempfile.mkdtemp(prefix="janitor-hostile-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        # The attacker may have left read-only or odd files: make everything removable first.
        subprocess.run(["chattr", "-R", "-i", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs (mode 0755) at `mnt`, created below a reachable root; skips where mount fails."""
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true or `timeout` seconds pass (for state that has no event)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
