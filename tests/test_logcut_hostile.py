"""truncate's rotation, compression and crash records against a real unprivileged attacker (issue 11).

The attacker owns the log directory (a service account's `logs/`) or shares a sticky one, knows
every name janitor uses, and plants or races symlinks, FIFOs and hard links among the rotated
copies, with fs.protected_hardlinks/protected_symlinks at 0 and at 1. janitor runs as root
through the real CLI. Afterwards every file's owner, mode, content and location is checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from attacker import Attacker, mounted_tmpfs

CLI = Callable[..., subprocess.CompletedProcess[str]]
SECRET = b"root:$6$only-root-may-read-this\n"


def _setup(hostile_root: Path, attacker: Attacker, *, logs_mode: int = 0o755, owner: bool = True,
           extra: str = "") -> tuple[Path, Path, Path]:
    """(policy file, logs dir, root's secret) with the attacker's app.log in it."""
    secret = hostile_root / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    logs = hostile_root / "logs"
    if owner:
        attacker.mkdir(logs, logs_mode)
    else:
        logs.mkdir()
        logs.chmod(logs_mode)
    log = logs / "app.log"
    log.write_bytes(b"".join(b"%09d\n" % i for i in range(50_000)))
    attacker.give(log, 0o640)
    config = hostile_root / "janitor.yaml"
    config.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n"
                      f"policies:\n  - name: applogs\n    path: {logs}\n    match: ['*.log']\n"
                      f"    action: truncate\n    rotate: 3\n    compress: gzip\n{extra}")
    return config, logs, secret


def _secret_intact(secret: Path) -> None:
    st = secret.lstat()
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert secret.read_bytes() == SECRET


def _no_root_files(logs: Path, secret: Path) -> None:
    """janitor never leaves a root-owned file in a directory it acted in as the owner (the
    attacker's own hard links to root's secret, possible with protected_hardlinks=0, aside)."""
    secret_ino = secret.stat().st_ino
    rooted = [p.name for p in logs.iterdir() if p.lstat().st_uid == 0 and p.lstat().st_ino != secret_ino]
    assert rooted == [], rooted


def test_planted_symlink_fifo_and_hard_link_among_the_copies_are_refused(
        cli: CLI, attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    config, logs, secret = _setup(hostile_root, attacker)
    before = (logs / "app.log").read_bytes()
    made = attacker.run(f"""
        import os
        os.mkfifo({str(logs / 'app.log.1')!r})
        os.symlink({str(secret)!r}, {str(logs / 'app.log.2')!r})
        try:
            os.link({str(secret)!r}, {str(logs / 'app.log.3')!r})
            print("linked")
        except OSError:
            print("not linked")
    """)
    assert made.returncode == 0, made.stderr
    linked = made.stdout.strip() == "linked"
    assert linked == (sysctl_protection == 0)

    # the old code blocked for ever opening the FIFO to compress it
    done = cli("run", "-c", config, "--log-format", "json", timeout=60)
    assert "Traceback" not in done.stderr
    skips = [json.loads(line) for line in done.stderr.splitlines()
             if line.startswith("{") and '"file_skipped"' in line]
    assert [(s["code"], s["level"]) for s in skips] == [("unsafe_copy", "warning")], done.stderr
    assert "is a FIFO" in skips[0]["reason"]
    # nothing followed, read, renamed or unlinked
    _secret_intact(secret)
    assert stat.S_ISFIFO((logs / "app.log.1").lstat().st_mode)
    assert os.readlink(logs / "app.log.2") == str(secret)
    assert (logs / "app.log.3").exists() == linked
    assert (logs / "app.log").read_bytes() == before
    assert sorted(p.name for p in logs.iterdir()) == ["app.log", "app.log.1", "app.log.2"] + (
        ["app.log.3"] if linked else [])


RACE = """
import os, random
logs, secret = {logs!r}, {secret!r}
names = ["app.log.1", "app.log.2", "app.log.3", "app.log.4", "app.log.1.gz", "app.log.2.gz",
         "app.log.3.gz", "app.log.4.gz"]
moves = 0
print("ready", flush=True)
while time.monotonic() < DEADLINE:
    with open(os.path.join(logs, "app.log"), "ab") as f:
        f.write(b"attacker line\\n" * 2000)
    # janitor's scratch names are random: race whatever dot-file appears, and every copy name
    for name in names + [n for n in os.listdir(logs) if n.startswith(".")]:
        path = os.path.join(logs, name)
        move = random.choice(("symlink", "fifo", "link", "swap", "leave"))
        try:
            if move == "leave":
                continue
            if move == "swap" and os.path.exists(path):
                os.rename(path, path + ".moved")
                os.symlink(secret, path)
            elif move != "swap":
                if os.path.lexists(path):
                    os.unlink(path)
                if move == "symlink":
                    os.symlink(secret, path)
                elif move == "fifo":
                    os.mkfifo(path)
                else:
                    os.link(secret, path)
            moves += 1
        except OSError:
            pass
print(moves)
"""


def test_a_racing_attacker_cannot_steer_rotation_or_hang_it(
        cli: CLI, attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    config, logs, secret = _setup(hostile_root, attacker)
    proc = attacker.start(RACE.format(logs=str(logs), secret=str(secret)), seconds=12)
    attacker.wait_ready(proc)
    for _ in range(5):
        done = cli("run", "-c", config, timeout=60)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    attacker.finish(proc)
    _secret_intact(secret)
    _no_root_files(logs, secret)  # every name janitor made there, it made as the directory's owner
    for path in logs.iterdir():
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_ino == secret.stat().st_ino:
            continue  # the attacker's own hard link (protected_hardlinks=0)
        if stat.S_ISREG(st.st_mode):
            assert st.st_uid == attacker.uid and not st.st_mode & 0o007, (path.name, oct(st.st_mode))


def _planted_record(logs: Path, victim: str) -> str:
    """The old code's crash record at its predictable name, pointing at someone else's file."""
    log = logs / "app.log"
    st = log.stat()
    with log.open("rb") as f:
        head = hashlib.sha256(f.read(4096)).hexdigest()
    return json.dumps({"copy": victim, "cut": 4096, "size": st.st_size, "dev": st.st_dev, "ino": st.st_ino,
                       "head": head, "next": "0" * 64})


def test_a_shared_directory_needs_su_and_records_planted_there_are_never_trusted(
        cli: CLI, attacker: Attacker, hostile_root: Path) -> None:
    config, logs, secret = _setup(hostile_root, attacker, logs_mode=0o1777, owner=False)
    keep = logs / "keep.me"  # root's file in a sticky directory: the attacker cannot remove it
    keep.write_bytes(b"root's\n")
    planted = attacker.run(f"""
        open({str(logs / '.app.log.janitor-cut')!r}, "w").write({_planted_record(logs, 'keep.me')!r})
    """)
    assert planted.returncode == 0, planted.stderr
    before = {p.name: p.read_bytes() for p in logs.iterdir()}

    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 1
    [line] = [x for x in done.stderr.splitlines() if "su: USER" in x]
    assert str(logs) in line and "writable by everyone" in line
    assert {p.name: p.read_bytes() for p in logs.iterdir()} == before

    config.write_text(config.read_text() + f"    su: {attacker.name}\n")
    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert keep.read_bytes() == b"root's\n" and keep.stat().st_uid == 0
    copy = logs / "app.log.1.gz"
    assert (copy.stat().st_uid, stat.S_IMODE(copy.stat().st_mode)) == (attacker.uid, 0o640)
    assert (logs / ".app.log.janitor-cut").exists()  # not janitor's: neither read nor removed
    _secret_intact(secret)


def test_a_fifo_as_pidfile_or_as_the_log_cannot_hang_a_run(
        cli: CLI, attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    run_dir = attacker.mkdir(hostile_root / "run")
    pidfile = run_dir / "app.pid"
    config, logs, secret = _setup(hostile_root, attacker, extra=(
        f"    mode: rename\n    reopen: {{signal: HUP, pidfile: {pidfile}}}\n"))
    config.write_text(config.read_text().replace("compress: gzip", "compress: none"))
    assert attacker.run(f"import os; os.mkfifo({str(pidfile)!r})").returncode == 0
    done = cli("run", "-c", config, timeout=60)  # the old code blocked opening the FIFO
    assert done.returncode == 1 and "cannot read a pid" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

    # the log itself swapped for a FIFO between the plan and the run
    from janitor.config import load_config
    from janitor.events import EventLog
    from janitor.execute import execute_plan
    from janitor.planner import build_plan
    from janitor.runner import locked_state, new_run_id

    config.write_text(config.read_text().replace("mode: rename", "mode: copytruncate")
                      .replace(f"    reopen: {{signal: HUP, pidfile: {pidfile}}}\n", ""))
    (logs / "app.log").write_bytes(b"x\n" * 10_000)  # the rename above left it empty
    loaded = load_config(str(config))
    plan = build_plan(loaded, loaded.policies)
    assert [a.path for a in plan.policies[0].actions] == [str(logs / "app.log")]
    swapped = attacker.run(f"""
        import os
        os.rename({str(logs / 'app.log')!r}, {str(logs / 'app.log.real')!r})
        os.mkfifo({str(logs / 'app.log')!r})
    """)
    assert swapped.returncode == 0, swapped.stderr
    with locked_state(loaded) as catalog:
        result = execute_plan(plan, loaded, catalog, new_run_id(), EventLog())
    assert result.files == 0
    assert stat.S_ISFIFO((logs / "app.log").lstat().st_mode)
    _secret_intact(secret)


READER = """
import os
logs = {logs!r}
got = set()
print("ready", flush=True)
while time.monotonic() < DEADLINE:
    for name in os.listdir(logs):
        try:
            fd = os.open(os.path.join(logs, name), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if os.read(fd, 64):
                got.add(name)
        except OSError:
            pass
        finally:
            os.close(fd)
print(sorted(got))
"""


def test_copies_of_a_private_log_are_never_readable_by_others(
        cli: CLI, attacker: Attacker, hostile_root: Path) -> None:
    """Issue 11.3: copies and compressed copies are 0600 until complete, then the log's mode."""
    logs = hostile_root / "logs"
    logs.mkdir(mode=0o755)
    log = logs / "app.log"
    log.write_bytes(os.urandom(4 << 20))
    log.chmod(0o600)
    config = hostile_root / "janitor.yaml"
    config.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n"
                      f"policies:\n  - name: applogs\n    path: {logs}\n    match: ['*.log']\n"
                      f"    action: truncate\n    rotate: 5\n    compress: gzip\n")
    proc = attacker.start(READER.format(logs=str(logs)), seconds=8)
    attacker.wait_ready(proc)
    for _ in range(4):
        with log.open("ab") as f:
            f.write(os.urandom(4 << 20))
        done = cli("run", "-c", config, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "[]"  # not one byte of any file in there
    for path in logs.iterdir():
        st = path.lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), path.name


def test_an_olddir_swapped_for_a_symlink_receives_nothing(
        cli: CLI, attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """olddir below the policy path is reached by descriptors from the root, never through a symlink."""
    elsewhere = hostile_root / "elsewhere"  # root's directory the attacker would like janitor to fill
    elsewhere.mkdir(mode=0o755)
    config, logs, secret = _setup(hostile_root, attacker, extra="")
    olddir = logs / "old" / "archive"
    config.write_text(config.read_text() + f"    olddir: {olddir}\n")
    made = attacker.run(f"""
        import os
        os.symlink({str(elsewhere)!r}, {str(logs / 'old')!r})
    """)
    assert made.returncode == 0, made.stderr
    (elsewhere / "archive").mkdir(mode=0o755)
    before = (logs / "app.log").read_bytes()
    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert list((elsewhere / "archive").iterdir()) == []
    assert (logs / "app.log").read_bytes() == before
    _secret_intact(secret)


@pytest.mark.parametrize("mode", ["copytruncate", "rename"])
def test_roots_private_log_in_a_users_directory_is_not_copied_as_that_user(
        cli: CLI, attacker: Attacker, hostile_root: Path, mode: str) -> None:
    """Acting as the directory's owner must not hand the owner a log it could not read."""
    config, logs, secret = _setup(hostile_root, attacker, extra=f"    mode: {mode}\n")
    log = logs / "app.log"
    os.chown(log, 0, 0)
    log.chmod(0o600)
    before = log.read_bytes()
    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 1 and "may write the directory but not read the log" in done.stderr, done.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["app.log"]
    assert log.read_bytes() == before and (log.stat().st_uid, stat.S_IMODE(log.stat().st_mode)) == (0, 0o600)


@pytest.mark.parametrize("mode", ["copytruncate", "rename"])
def test_a_readable_log_of_another_account_is_not_copied_as_the_directory_owner(
        cli: CLI, attacker: Attacker, hostile_root: Path, mode: str) -> None:
    """Red team 3, the class: a copy made as the directory's owner belongs to it, so only a log that
    account owns is rotated as it (root's 0644 log: its copies would let the account rewrite them)."""
    config, logs, secret = _setup(hostile_root, attacker, extra=f"    mode: {mode}\n")
    log = logs / "app.log"
    os.chown(log, 0, 0)
    log.chmod(0o644)
    before = log.read_bytes()
    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 1 and "who may write the directory but does not own the log" in done.stderr, \
        done.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["app.log"]
    assert log.read_bytes() == before and (log.stat().st_uid, stat.S_IMODE(log.stat().st_mode)) == (0, 0o644)
    _secret_intact(secret)


def test_reopen_signals_only_a_writer_of_the_log_named_by_a_trusted_pidfile(
        cli: CLI, attacker: Attacker, hostile_root: Path) -> None:
    """Red team 1: the pidfile sits where the service keeps it, in a directory the service account
    (the attacker) writes. Old code: root sent SIGHUP to whatever pid the file held (a root daemon)."""
    run_dir = attacker.mkdir(hostile_root / "run")
    pidfile = run_dir / "app.pid"
    config, logs, secret = _setup(hostile_root, attacker, extra=(
        f"    mode: rename\n    reopen: {{signal: HUP, pidfile: {pidfile}}}\n"))
    config.write_text(config.read_text().replace("compress: gzip", "compress: none"))
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)  # root's daemon, no HUP handler
    try:
        assert attacker.run(f"open({str(pidfile)!r}, 'w').write('{victim.pid}\\n')").returncode == 0
        done = cli("run", "-c", config, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"pid {victim.pid} from {pidfile} does not hold" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert victim.poll() is None, "janitor signalled root's process"
    finally:
        victim.kill()
        victim.wait()
    _secret_intact(secret)

    # the log's own writer, named by the owner's pidfile, is signalled and reopens
    (logs / "app.log").write_bytes(b"x\n" * 1000)
    writer = attacker.start(f"""
        import os, signal
        log = {str(logs / 'app.log')!r}
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        def hup(signum, frame):
            print("hup", flush=True)
            raise SystemExit(0)
        signal.signal(signal.SIGHUP, hup)
        open({str(pidfile)!r}, "w").write("%d\\n" % os.getpid())
        print("ready", flush=True)
        while time.monotonic() < DEADLINE:
            signal.pause()
    """, seconds=30)
    attacker.wait_ready(writer)
    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out, _ = writer.communicate(timeout=30)
    assert out.strip() == "hup"


def test_a_pidfile_others_can_write_or_holding_0_1_or_minus_1_is_refused(tmp_path: Path) -> None:
    from janitor.logcut import _read_pid

    pidfile = tmp_path / "app.pid"
    for text in ("-1\n", "0\n", "1\n", "12abc\n"):
        pidfile.write_text(text)
        with pytest.raises(ValueError, match="not a process id above 1"):
            _read_pid(str(pidfile), 0)
    pidfile.write_text("1234\n")
    assert _read_pid(str(pidfile), 0) == 1234
    pidfile.chmod(0o666)
    with pytest.raises(ValueError, match="other accounts may write it"):
        _read_pid(str(pidfile), 0)
    pidfile.chmod(0o644)
    os.chown(pidfile, 4321, 4321)
    with pytest.raises(ValueError, match="neither root nor the log's owner"):
        _read_pid(str(pidfile), 0)
    assert _read_pid(str(pidfile), 4321) == 1234


def test_a_hard_link_made_elsewhere_does_not_stop_rotation_of_roots_log(
        cli: CLI, attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """Red team 18: a second name for root's log, made by a user in its own directory on the same
    filesystem (protected_hardlinks=0). Old code: the log's rotation was refused on every run."""
    logs = hostile_root / "varlog"
    logs.mkdir(mode=0o755)
    log = logs / "syslog"
    content = b"".join(b"line %06d\n" % i for i in range(50_000))
    log.write_bytes(content)
    log.chmod(0o640)
    home = attacker.mkdir(hostile_root / "home", 0o700)
    linked = attacker.run(f"import os\ntry:\n    os.link({str(log)!r}, {str(home / 'pin')!r}); print('linked')\n"
                          f"except OSError as e:\n    print('refused', e.errno)").stdout.strip()
    assert linked == ("linked" if sysctl_protection == 0 else "refused 1"), linked
    config = hostile_root / "janitor.yaml"
    config.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n"
                      f"policies:\n  - name: sys\n    path: {logs}\n    match: ['syslog']\n"
                      f"    action: truncate\n    rotate: 2\n    compress: none\n")
    done = cli("run", "-c", config, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = logs / "syslog.1"
    assert log.stat().st_size < len(content) and copy.read_bytes() + log.read_bytes() == content
    assert (copy.stat().st_uid, stat.S_IMODE(copy.stat().st_mode)) == (0, 0o640)
    if sysctl_protection == 0:
        assert "has 2 hard links; cut anyway" in done.stdout + done.stderr, done.stdout + done.stderr
        assert (home / "pin").stat().st_ino == log.stat().st_ino  # the attacker's name: the same inode


@pytest.fixture
def small_tmpfs(hostile_root: Path):  # type: ignore[no-untyped-def]
    with mounted_tmpfs(hostile_root / "varlog", "200m") as mnt:
        yield mnt


def test_a_sparse_log_is_copied_with_its_holes_and_never_fills_the_filesystem(
        cli: CLI, attacker: Attacker, hostile_root: Path, small_tmpfs: Path) -> None:
    """Red team 10: the service account makes its log (in a root-only directory, so janitor copies
    as root) 40 GiB sparse. Old code: root wrote zeros until the 200 MiB filesystem was full, then
    failed with E_DISK_FULL on every run."""
    import threading
    import time

    logs = small_tmpfs / "app"
    logs.mkdir(mode=0o755)
    log = logs / "app.log"
    log.write_bytes(b"hello\n")
    attacker.give(log, 0o640)
    done = attacker.run(f"import os; os.truncate({str(log)!r}, 40 << 30); open({str(log)!r}, 'ab').write(b'tail\\n')")
    assert done.returncode == 0, done.stderr
    size = log.stat().st_size
    allocated = log.stat().st_blocks * 512
    st = os.statvfs(small_tmpfs)
    free_before = st.f_bavail * st.f_frsize
    low = [free_before]
    stop = threading.Event()

    def watch() -> None:  # the lowest free space while janitor runs (no event exists for it)
        while not stop.is_set():
            s = os.statvfs(small_tmpfs)
            low[0] = min(low[0], s.f_bavail * s.f_frsize)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    config = hostile_root / "janitor.yaml"
    config.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n"
                      f"policies:\n  - name: applogs\n    path: {logs}\n    match: ['*.log']\n"
                      f"    action: truncate\n    rotate: 1\n    compress: none\n")
    try:
        run = cli("run", "-c", config, timeout=120)
    finally:
        stop.set()
        watcher.join()
    assert run.returncode == 0, run.stdout + run.stderr
    assert free_before - low[0] <= allocated + (8 << 20), f"janitor wrote {free_before - low[0]} bytes"
    copy = logs / "app.log.1"
    cst = copy.stat()
    assert cst.st_blocks * 512 <= allocated + (1 << 20), "the copy's holes were filled"
    assert (cst.st_uid, stat.S_IMODE(cst.st_mode)) == (attacker.uid, 0o640)
    assert cst.st_size + log.stat().st_size == size
    with open(copy, "rb") as f:
        assert f.read(6) == b"hello\n"
        f.seek(1 << 30)
        assert f.read(16) == b"\0" * 16


def test_a_copy_that_does_not_fit_is_refused_before_a_byte_is_written(tmp_path: Path, small_tmpfs: Path) -> None:
    from janitor.errors import DiskFull
    from janitor.logcut import CutOptions, cut_log

    (small_tmpfs / "filler").write_bytes(b"\1" * (100 << 20))
    log = small_tmpfs / "app.log"
    data = os.urandom(60 << 20)  # data, not holes: fits once, not twice
    log.write_bytes(data)
    with pytest.raises(DiskFull, match=r"needs \d+ bytes \(data, not counting holes\)"):
        cut_log(log, CutOptions(rotate=1))
    assert log.read_bytes() == data
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["app.log", "filler"]
