"""The one way janitor acts in a directory other accounts can write (docs/security.md, point 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from attacker import Attacker

from janitor.asowner import ROOT, Credentials, credentials_for_dir, run_as
from janitor.errors import JanitorError


def test_a_step_run_as_the_owner_creates_files_as_the_owner_and_cannot_read_roots(
        attacker: Attacker, hostile_root: Path) -> None:
    home = attacker.mkdir(hostile_root / "home")
    secret = hostile_root / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        creds = credentials_for_dir(dir_fd, str(home), su=None, policy="p")
        assert creds == Credentials(attacker.uid, attacker.gid)

        def step() -> int:
            fd = os.open("made", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            os.close(fd)
            return os.getuid()

        assert run_as(creds, step) == attacker.uid
        assert (home / "made").stat().st_uid == attacker.uid
        with pytest.raises(PermissionError):
            run_as(creds, secret.read_text)
    finally:
        os.close(dir_fd)


def test_a_root_only_directory_is_acted_in_as_root_and_a_shared_one_is_refused(hostile_root: Path) -> None:
    private = hostile_root / "private"
    private.mkdir(mode=0o755)
    shared = hostile_root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for path, expected in ((private, ROOT), (shared, None)):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if expected is None:
                with pytest.raises(JanitorError, match=r"writable by everyone.*su: USER"):
                    credentials_for_dir(fd, str(path), su=None, policy="uploads")
            else:
                assert credentials_for_dir(fd, str(path), su=None, policy="p") == expected
        finally:
            os.close(fd)
