"""Red team 16: `--log-file` / `settings.log_file` is appended to as root, so only janitor's own
file is ever written: its directory writable by root (or janitor's account) only, an existing
file a regular file with one link owned by janitor's euid (docs/security.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from attacker import Attacker

OLD = time.time() - 30 * 86400
SUDOERS = b"root ALL=(ALL) ALL\n"


def _config(base: Path, log: Path) -> Path:
    data = base / "data"
    data.mkdir()
    junk = data / "x.tmp"
    junk.write_bytes(b"x")
    os.utime(junk, (OLD, OLD))
    cfg = base / "j.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {base / 'state'}\n  settle: 0s\n  log_file: {log}\n"
                   f"policies:\n  - name: tmp\n    path: {data}\n    action: delete\n    match: ['*.tmp']\n"
                   f"    older_than: 1d\n")
    return cfg


def test_a_log_file_in_a_directory_the_service_account_writes_is_refused(
        cli, attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:  # type: ignore[no-untyped-def]
    """Old code (protected_hardlinks=0): root appended JSON event lines to root's 0440 'sudoers'."""
    logs = attacker.mkdir(hostile_root / "applogs", 0o755)
    sudoers = hostile_root / "sudoers"
    sudoers.write_bytes(SUDOERS)
    sudoers.chmod(0o440)
    linked = attacker.run(f"import os\ntry:\n    os.link({str(sudoers)!r}, {str(logs / 'janitor.log')!r})\n"
                          f"except OSError as e:\n    print('refused', e.errno)")
    assert linked.returncode == 0, linked.stderr
    cfg = _config(hostile_root, logs / "janitor.log")
    done = cli("run", "-c", cfg)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"log file {logs / 'janitor.log'}: cannot use it" in done.stderr, done.stderr
    assert "may be written by another account" in done.stderr, done.stderr
    assert sudoers.read_bytes() == SUDOERS
    assert (hostile_root / "data" / "x.tmp").exists()  # nothing ran without its log


@pytest.mark.parametrize("kind", ["hard link", "foreign owner"])
def test_a_log_file_that_is_not_janitors_own_is_refused(
        cli, attacker: Attacker, hostile_root: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    logs = hostile_root / "logs"
    logs.mkdir(mode=0o755)
    log = logs / "janitor.log"
    victim = hostile_root / "sudoers"
    victim.write_bytes(SUDOERS)
    victim.chmod(0o440)
    if kind == "hard link":
        os.link(victim, log)  # what a user could do where protected_hardlinks=0 and it once could write logs/
        why = "it has 2 hard links"
    else:
        victim = log
        log.write_bytes(SUDOERS)
        os.chown(log, attacker.uid, attacker.gid)
        why = f"it belongs to uid {attacker.uid}"
    cfg = _config(hostile_root, log)
    done = cli("run", "-c", cfg)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert why in done.stderr, done.stderr
    assert victim.read_bytes() == SUDOERS


def test_janitors_own_log_file_is_created_and_appended_to(cli, hostile_root: Path) -> None:  # type: ignore[no-untyped-def]
    logs = hostile_root / "logs"
    logs.mkdir(mode=0o755)
    log = logs / "janitor.log"
    cfg = _config(hostile_root, log)
    assert cli("run", "-c", cfg).returncode == 0
    first = log.read_bytes()
    assert b'"run_started"' in first and log.stat().st_uid == os.geteuid() and log.stat().st_nlink == 1
    assert cli("run", "-c", cfg).returncode == 0
    assert log.read_bytes().startswith(first) and len(log.read_bytes()) > len(first)
