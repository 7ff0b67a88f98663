"""Issue 11 for delete, soft-delete, the trash, restore, purge, reconcile and quota: a real
unprivileged user attacks a root janitor (tests/attacker.py), with fs.protected_hardlinks and
fs.protected_symlinks at 0 and at 1. After each attack every file's owner, mode, content and
location is checked. docs/security.md ("Files, the trash and quota") lists what each proves.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacker import Attacker, mounted_tmpfs
from fsutil import janitor_cmd

DAY = 86400


def write_config(base: Path, policy: str, *, data: Path | None = None, store: Path | None = None) -> Path:
    cfg = base / "janitor.yaml"
    targets = f"targets:\n  store:\n    url: file://{store}\n" if store is not None else ""
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {base / 'state'}\n  settle: 0s\n{targets}"
                   f"policies:\n  - name: p\n    path: {data or base / 'data'}\n" + "".join(
                       f"    {line}\n" for line in policy.strip().splitlines()))
    return cfg


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tmpfs(hostile_root: Path) -> Iterator[Path]:
    """A fresh tmpfs mounted below hostile_root (another filesystem than /tmp)."""
    with mounted_tmpfs(hostile_root / "mnt", "64m") as mnt:
        yield mnt


def attacker_files(attacker: Attacker, up: Path, count: int, size: int = 4096, prefix: str = "f") -> None:
    proc = attacker.run(f"""
        import os, time
        old = time.time() - 10 * {DAY}
        for i in range({count}):
            p = os.path.join({str(up)!r}, "{prefix}%03d" % i)
            with open(p, "wb") as f:
                f.write(bytes([i % 256]) * {size})
            os.utime(p, (old, old))
    """)
    assert proc.returncode == 0, proc.stderr


# -- point 4 (and 1): a FIFO swapped in while copying into a trash on another filesystem ------


@pytest.mark.parametrize("action", ["soft-delete", "archive"])
def test_fifo_swapped_in_during_a_cross_filesystem_soft_delete_never_hangs(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int, action: str) -> None:
    """Old code: the recheck stat()s the file, then open()s the name without O_NONBLOCK (the
    copy into a trash on another filesystem; archive's read for upload); a FIFO swapped in
    between blocks the run for ever (the subprocess times out). The attacker keeps 40 old
    files in place and swaps each for a FIFO and back in a tight loop over several runs."""
    data = tmpfs / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    (tmpfs / ".janitor-trash").write_text("not a directory: no trash on this mount, so files are copied")
    store = hostile_root / "store"
    store.mkdir()
    policy = "action: soft-delete" if action == "soft-delete" else "action: archive\ntarget: store"
    cfg = write_config(hostile_root, policy + "\nolder_than: 1d", data=data, store=store)
    proc = attacker.start(f"""
        import os
        up = {str(up)!r}
        old = time.time() - 10 * {DAY}
        names = ["f%03d" % i for i in range(40)]
        said = False
        while time.monotonic() < DEADLINE:
            for n in names:
                p = os.path.join(up, n)
                if not os.path.lexists(p) and not os.path.lexists(p + ".x"):
                    with open(p, "wb") as f:
                        f.write(b"A" * 4096)
                    os.utime(p, (old, old))
            if not said:
                print("ready", flush=True)
                said = True
            for _ in range(20):
                for n in names:
                    p = os.path.join(up, n)
                    try:
                        os.rename(p, p + ".x")
                        os.mkfifo(p)
                        os.unlink(p)
                        os.rename(p + ".x", p)
                    except OSError:
                        pass
    """, seconds=25)
    attacker.wait_ready(proc)
    skipped = 0
    for _ in range(8):
        try:
            run = janitor_cmd("run", "-c", str(cfg), "--json", timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("janitor run hung on a FIFO swapped in for a planned file")
        assert run.returncode in (0, 1), run.stderr
        assert "Traceback" not in run.stderr
        skipped += run.stdout.count("changed")
    proc.kill()
    attacker.finish(proc)
    if action == "archive":
        assert [p for p in store.rglob("f*") if p.is_file()], "janitor did its work between the swaps"
        for p in up.iterdir():
            assert p.lstat().st_uid == attacker.uid
        return
    trash = hostile_root / "state" / "trash"
    trashed = [p for p in trash.rglob("*") if p.is_file() or p.is_fifo()]
    assert trashed, "janitor did its work between the swaps"
    for got in trashed:
        assert got.is_file() and got.read_bytes() == b"A" * 4096
        st = got.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (attacker.uid, attacker.gid, 0o644)
    assert not [p for p in (trash / ".partial").iterdir()] if (trash / ".partial").exists() else True
    for p in up.iterdir():  # what is left is the attacker's own: files or its FIFO of the moment
        assert p.lstat().st_uid == attacker.uid


# -- point 8: a .janitor-trash that janitor did not create -------------------------------------


@pytest.mark.parametrize("command", ["purge", "restore"])
def test_a_mount_trash_swapped_by_a_user_is_never_walked(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int, command: str) -> None:
    """The mount's root is writable by the attacker (0777, not sticky). After a soft-delete
    into `<mount>/.janitor-trash`, the attacker renames that directory away and puts a symlink
    (to a root-owned tree with the same layout) or a directory of their own in its place.

    Old code: `trash purge` unlinks through the symlink (root's files deleted) and `restore`
    links the attacker's planted bytes into the victim's directory, chowned to the victim.
    (janitor no longer makes a trash on a mount root others can write without the sticky
    bit; here the root is made writable after the trash was made.)"""
    data = tmpfs / "data"
    shared = data / "shared"
    shared.mkdir(parents=True)
    victim_uid, victim_gid = 54321, 54321
    secret = shared / "report.pdf"
    secret.write_bytes(b"victim's report")
    os.chown(secret, victim_uid, victim_gid)
    secret.chmod(0o640)
    os.utime(secret, (0, 1_000_000))
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
    run = janitor_cmd("run", "-c", str(cfg))
    assert run.returncode == 0, run.stderr
    trash = tmpfs / ".janitor-trash"
    [run_dir] = [p.name for p in trash.iterdir() if not p.name.startswith(".")]
    # what an attacker points the name at: a root-owned tree laid out like the trash
    canary = hostile_root / "canary"
    (canary / run_dir / "p" / "shared").mkdir(parents=True)
    (canary / run_dir / "p" / "shared" / "report.pdf").write_bytes(b"root's file")
    planted = "symlink" if command == "purge" else "own dir"
    tmpfs.chmod(0o777)
    proc = attacker.run(f"""
        import os
        mnt = {str(tmpfs)!r}
        os.rename(os.path.join(mnt, ".janitor-trash"), os.path.join(mnt, "stolen"))
        t = os.path.join(mnt, ".janitor-trash")
        if {planted!r} == "symlink":
            os.symlink({str(canary)!r}, t)
        else:
            d = os.path.join(t, {run_dir!r}, "p", "shared")
            os.makedirs(d)
            with open(os.path.join(d, "report.pdf"), "wb") as f:
                f.write(b"forged by the attacker")
            os.chmod(t, 0o700)
    """)
    assert proc.returncode == 0, proc.stderr
    args = ["trash", "purge", "--all"] if command == "purge" else ["restore", "--all"]
    out = janitor_cmd(*args, "-c", str(cfg))
    assert "Traceback" not in out.stderr
    assert out.returncode == 1
    assert "janitor did not create it" in out.stderr + out.stdout
    assert (canary / run_dir / "p" / "shared" / "report.pdf").read_bytes() == b"root's file"
    assert not secret.exists()  # nothing forged was put in the victim's place
    kept = tmpfs / "stolen" / run_dir / "p" / "shared" / "report.pdf"
    assert kept.read_bytes() == b"victim's report"  # the real trashed copy is untouched
    assert (kept.stat().st_uid, stat.S_IMODE(kept.stat().st_mode)) == (victim_uid, 0o640)


# -- point 2: restore recreates removed directories as the owner, with the recorded mode -----


def test_restore_recreates_a_removed_directory_as_its_owner_with_its_mode(
        attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """Old code: the missing directory came back root-owned 0755 inside the user's directory
    (root created a name where the user races every name) and the user's private 0700 was lost."""
    data = hostile_root / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    proc = attacker.run(f"""
        import os, time
        d = os.path.join({str(up)!r}, "2026-11-01")
        os.mkdir(d, 0o750)
        os.chmod(d, 0o750)
        p = os.path.join(d, "render.mp4")
        with open(p, "wb") as f:
            f.write(b"frames" * 1000)
        os.chmod(p, 0o640)
        old = time.time() - 10 * {DAY}
        os.utime(p, (old, old))
    """)
    assert proc.returncode == 0, proc.stderr
    before = digest(up / "2026-11-01" / "render.mp4")
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d")
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    proc = attacker.run(f"import os; os.rmdir({str(up / '2026-11-01')!r})")
    assert proc.returncode == 0, proc.stderr
    out = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    d = (up / "2026-11-01").stat()
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (attacker.uid, attacker.gid, 0o750)
    f = up / "2026-11-01" / "render.mp4"
    st = f.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (attacker.uid, attacker.gid, 0o640)
    assert digest(f) == before


# -- point 2 (and 1): restore finishes the inode before it has a name -------------------------


def test_restore_never_chowns_a_hard_link_swapped_in_for_the_restored_name(
        attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """The attacker hard-links a root-owned secret over each name as soon as restore creates it.

    Old code: link(trash copy, name), unlink, then open(name) and fchown/fchmod it to the
    recorded owner and mode: the secret can be handed to the attacker. Now the trashed inode
    gets its owner and mode through its own descriptor before one rename(RENAME_NOREPLACE)."""
    data = hostile_root / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    secret = data / "secret"  # same filesystem, so the attacker can link it (protected_hardlinks=0)
    secret.write_bytes(b"root only")
    secret.chmod(0o600)
    attacker_files(attacker, up, 200, size=100)
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d\nmatch: ['up/**']")
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    assert not list(up.iterdir())
    proc = attacker.start(f"""
        import os
        up, secret = {str(up)!r}, {str(secret)!r}
        names = ["f%03d" % i for i in range(200)]
        ino = os.stat(secret).st_ino
        print("ready", flush=True)
        while time.monotonic() < DEADLINE:
            for n in names:
                p = os.path.join(up, n)
                try:
                    if os.lstat(p).st_ino != ino:
                        os.unlink(p)
                        os.link(secret, p)
                except OSError:
                    pass
    """, seconds=6)
    attacker.wait_ready(proc)
    out = janitor_cmd("restore", "--all", "-c", str(cfg))
    attacker.finish(proc)
    assert "Traceback" not in out.stderr
    st = secret.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert secret.read_bytes() == b"root only"


# -- point 1/4: a path deeper than PATH_MAX never fails every later run through reconcile ----


def test_a_path_deeper_than_path_max_in_a_killed_run_settles_alone(
        attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """Old code: reconcile lstat()ed the recorded path by name: ENAMETOOLONG escaped and every
    later run failed before acting. Now the row is settled through descriptors."""
    data = hostile_root / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    proc = attacker.run(f"""
        import os, time
        fd = os.open({str(up)!r}, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(40):
            name = "d" * 200
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        old = time.time() - 10 * {DAY}
        f = os.open("deep.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"deep")
        os.close(f)
        os.utime("deep.bin", (old, old), dir_fd=fd)
    """)
    assert proc.returncode == 0, proc.stderr
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d")
    # a run killed after journaling its intents and before acting
    killed = subprocess.run(
        [sys.executable, "-c", f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from janitor.actions import softdelete
def die(*a, **k):
    os._exit(9)
softdelete.SoftDeleteAction.apply = die
from janitor.config import load_config
from janitor.events import EventLog
from janitor.runner import run_policies
config = load_config({str(cfg)!r})
run_policies(config, config.policies, EventLog())
"""], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    for _ in range(2):
        out = janitor_cmd("run", "-c", str(cfg))
        assert "Traceback" not in out.stderr
        assert out.returncode in (0, 1), out.stderr
        assert "internal error" not in out.stderr
    history = janitor_cmd("history", "--json", "-c", str(cfg))
    assert history.returncode == 0, history.stderr


# -- point 6: quota counts allocated blocks and each inode once -------------------------------


def test_sparse_files_and_hard_links_do_not_evict_other_users_files(
        attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """The attacker makes a 10 GiB sparse file and 200 hard links to one 1 MiB file in their
    directory. Old code summed st_size per name (10 GiB + 200 MiB): far over the 50 MiB cap,
    so it evicted everyone's oldest files. Only 1 MiB is really used."""
    data = hostile_root / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    victim = data / "victim"
    victim.mkdir()
    old = os_time_days_ago(30)
    for i in range(5):
        p = victim / f"v{i}.mp4"
        p.write_bytes(os.urandom(1 << 20))
        os.chown(p, 54321, 54321)
        os.utime(p, (old, old))
    proc = attacker.run(f"""
        import os, time
        up = {str(up)!r}
        with open(os.path.join(up, "sparse"), "wb") as f:
            f.truncate(10 << 30)
        with open(os.path.join(up, "one"), "wb") as f:
            f.write(os.urandom(1 << 20))
        for i in range(200):
            os.link(os.path.join(up, "one"), os.path.join(up, "link%03d" % i))
        now = time.time()
        for n in os.listdir(up):
            os.utime(os.path.join(up, n), (now, now))
    """)
    assert proc.returncode == 0, proc.stderr
    cfg = write_config(hostile_root, "action: quota\nmax_size: 50MiB")
    out = janitor_cmd("run", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    for i in range(5):
        assert (victim / f"v{i}.mp4").stat().st_uid == 54321
    assert len(list(up.iterdir())) == 202


def os_time_days_ago(days: int) -> float:
    import time

    return time.time() - days * DAY


def test_a_janitor_trash_a_user_made_is_not_skipped_as_trash(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """Old code skipped any `<mount>/.janitor-trash` during the walk: a user could hide files
    from every policy (a quota, a delete by age) by making one. Now only janitor's own counts."""
    tmpfs.chmod(0o777)
    proc = attacker.run(f"""
        import os, time
        d = os.path.join({str(tmpfs)!r}, ".janitor-trash", "run", "p")
        os.makedirs(d)
        p = os.path.join(d, "hidden.bin")
        with open(p, "wb") as f:
            f.write(b"x" * 1000)
        old = time.time() - 10 * {DAY}
        os.utime(p, (old, old))
    """)
    assert proc.returncode == 0, proc.stderr
    cfg = write_config(hostile_root, "action: delete\nolder_than: 1d", data=tmpfs)
    out = janitor_cmd("run", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert not (tmpfs / ".janitor-trash" / "run" / "p" / "hidden.bin").exists()
    assert (tmpfs / ".janitor-trash").lstat().st_uid == attacker.uid  # its directories are the user's


# -- point 1/4: hostile names fail (at most) that one file, never others or later runs -------


def test_a_reserved_suffix_and_a_name_too_long_for_a_temp_suffix(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """Old code: the copy into a trash on another filesystem was written as `NAME.janitor-partial`
    (ENAMETOOLONG for a 255-byte name: that file failed every run) and restore's copy as
    `.NAME.janitor-restore`; reconcile removed `TRASHED.janitor-partial` unconditionally, which
    is where a user's own file `y.janitor-partial` lies in the trash: it was lost."""
    data = tmpfs / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    (tmpfs / ".janitor-trash").write_text("not a directory: files are copied to the state trash")
    long_name = "L" * 255
    proc = attacker.run(f"""
        import os, time
        old = time.time() - 10 * {DAY}
        for n, body in (("y", b"plain"), ("y.janitor-partial", b"a user's own file"), ({long_name!r}, b"long")):
            p = os.path.join({str(up)!r}, n)
            with open(p, "wb") as f:
                f.write(body)
            os.utime(p, (old, old))
    """)
    assert proc.returncode == 0, proc.stderr
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
    first = janitor_cmd("run", "-c", str(cfg))
    assert first.returncode == 0, first.stdout + first.stderr
    assert not list(up.iterdir())
    # a run killed after moving `y` but before recording it leaves its row planned
    import sqlite3

    db = sqlite3.connect(hostile_root / "state" / "catalog.db")
    with db:
        db.execute("UPDATE journal SET state='planned' WHERE path=?", [os.fsencode(str(up / "y"))])
    db.close()
    second = janitor_cmd("run", "-c", str(cfg))
    assert second.returncode == 0, second.stderr
    out = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (up / "y").read_bytes() == b"plain"
    assert (up / "y.janitor-partial").read_bytes() == b"a user's own file"
    assert (up / long_name).read_bytes() == b"long"
    for p in up.iterdir():
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (attacker.uid, attacker.gid)  # made as the directory's owner


# -- point 5 for restore: a copy into a directory others can write is made as its owner, or refused


def test_restore_copy_into_a_shared_directory_is_refused_without_su(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """A cross-filesystem restore creates names: into a world-writable directory (sticky, like
    /tmp) janitor will not create them as root; the one line names the directory and `su`.
    Old code copied in as root, at a predictable `.NAME.janitor-restore` next to the file."""
    data = tmpfs / "data"
    shared = data / "drop"
    shared.mkdir(parents=True)
    shared.chmod(0o1777)
    (tmpfs / ".janitor-trash").write_text("not a directory: files are copied to the state trash")
    attacker_files(attacker, shared, 1)
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    assert not (shared / "f000").exists()
    proc = attacker.run(f"""
        import os
        os.symlink("/etc/passwd", os.path.join({str(shared)!r}, ".f000.janitor-restore"))
    """)
    assert proc.returncode == 0, proc.stderr
    out = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert out.returncode == 1
    assert "writable by everyone" in out.stderr and "su: USER" in out.stderr
    assert not (shared / "f000").exists()
    # the trashed copy is still there, restorable once `su` is set
    assert janitor_cmd("trash", "list", "--json", "-c", str(cfg)).stdout.count("f000") >= 1


# -- point 3: a copy never has a window in which others can read it --------------------------


def test_a_restore_copy_is_never_readable_by_others_while_it_is_written(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """A victim's 0600 file in a root-owned directory the attacker can list, restored from a
    trash on another filesystem. Old code wrote the copy as `.NAME.janitor-restore` with the
    umask's mode (0644) and chmodded it only at the end: the attacker, opening every name it
    sees in a loop, read the victim's bytes. Now the scratch file is 0600 from its creation."""
    data = tmpfs / "data"
    shared = data / "shared"
    shared.mkdir(parents=True)
    (tmpfs / ".janitor-trash").write_text("not a directory: files are copied to the state trash")
    secret = shared / "payroll.csv"
    secret.write_bytes(b"SECRET" * ((16 << 20) // 6))
    os.chown(secret, 54321, 54321)
    secret.chmod(0o600)
    os.utime(secret, (0, 1_000_000))
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
    assert janitor_cmd("run", "-c", str(cfg)).returncode == 0
    assert not secret.exists()
    proc = attacker.start(f"""
        import os
        d = {str(shared)!r}
        got = 0
        print("ready", flush=True)
        while time.monotonic() < DEADLINE and not got:
            for n in os.listdir(d):
                try:
                    with open(os.path.join(d, n), "rb") as f:
                        if b"SECRET" in f.read(64):
                            got = 1
                except OSError:
                    pass
        print("LEAKED" if got else "nothing", flush=True)
    """, seconds=15)
    attacker.wait_ready(proc)
    out = janitor_cmd("restore", "--all", "-c", str(cfg))
    proc.kill()
    stdout, _ = proc.communicate()
    assert out.returncode == 0, out.stderr
    assert "LEAKED" not in stdout
    st = secret.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (54321, 54321, 0o600)
    assert secret.read_bytes().startswith(b"SECRETSECRET")


# -- point 1: a hard link swapped in at the moment of the move never reaches the trash --------


def test_a_hard_link_swapped_in_as_a_file_is_trashed_never_stays_in_the_trash(
        attacker: Attacker, hostile_root: Path, sysctl_protection: int) -> None:
    """Between the executor's check and its rename into the trash, the attacker swaps each old
    file for a hard link to root's 0600 secret (possible with protected_hardlinks=0). Old code
    moved whatever the name held into the trash, and restore then chowned that inode to the
    file's recorded owner: the secret was handed to the attacker. Now the inode moved is
    confirmed and a stranger is put back; restore refuses any trashed inode with other links."""
    data = hostile_root / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    secret = data / "secret"
    secret.write_bytes(b"root only")
    secret.chmod(0o600)
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d\nmatch: ['up/**']")
    proc = attacker.start(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        EXCHANGE = 2  # renameat2(RENAME_EXCHANGE): the name holds each inode half of the time
        up, secret = {str(up)!r}, {str(secret)!r}
        old = time.time() - 10 * {DAY}
        names = ["f%03d" % i for i in range(40)]
        said = False
        while time.monotonic() < DEADLINE:
            for n in names:
                p = os.path.join(up, n)
                if not os.path.lexists(p):
                    with open(p, "wb") as f:
                        f.write(b"mine")
                    os.utime(p, (old, old))
                if not os.path.lexists(p + ".l"):
                    try:
                        os.link(secret, p + ".l")
                    except OSError:
                        pass
            if not said:
                print("ready", flush=True)
                said = True
            for _ in range(50):
                for n in names:
                    p = os.path.join(up, n).encode()
                    libc.renameat2(-100, p, -100, p + b".l", EXCHANGE)
    """, seconds=25)
    attacker.wait_ready(proc)
    for _ in range(6):
        run = janitor_cmd("run", "-c", str(cfg))
        assert run.returncode in (0, 1) and "Traceback" not in run.stderr, run.stderr
        rst = janitor_cmd("restore", "--all", "--force", "-c", str(cfg))
        assert "Traceback" not in rst.stderr, rst.stderr
    proc.kill()
    attacker.finish(proc)
    st = secret.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert secret.read_bytes() == b"root only"
    trash = hostile_root / "state" / "trash"
    for p in trash.rglob("*"):
        if p.is_file():
            assert p.stat().st_ino != st.st_ino, "root's secret was moved into the trash"


def test_no_trash_is_made_on_a_mount_root_others_can_write(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """A mount root writable by others without the sticky bit: a trash there could be renamed
    away by anyone (or planted first). janitor says so once and copies to its own trash."""
    tmpfs.chmod(0o777)
    data = tmpfs / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    attacker_files(attacker, up, 3)
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
    out = janitor_cmd("run", "-c", str(cfg), "--log-format", "json")
    assert out.returncode == 0, out.stderr
    assert "trash_refused" in out.stderr and "not sticky" in out.stderr
    assert not (tmpfs / ".janitor-trash").exists()
    assert len([p for p in (hostile_root / "state" / "trash").rglob("f*") if p.is_file()]) == 3
    assert janitor_cmd("restore", "--all", "-c", str(cfg)).returncode == 0
    assert sorted(p.name for p in up.iterdir()) == ["f000", "f001", "f002"]


def test_a_janitor_trash_planted_first_on_a_sticky_mount_root_is_refused_with_a_reason(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """A /tmp-like mount root (1777): the attacker makes `.janitor-trash` before janitor does.
    Old code refused it silently and went on; now the run says why (`trash_refused`) and the
    files go to janitor's own trash, from which they restore; the planted directory is
    untouched and never treated as trash."""
    tmpfs.chmod(0o1777)
    data = tmpfs / "data"
    data.mkdir()
    up = attacker.mkdir(data / "up")
    attacker_files(attacker, up, 2)
    proc = attacker.run(f"import os; os.mkdir({str(tmpfs / '.janitor-trash')!r}, 0o700)")
    assert proc.returncode == 0, proc.stderr
    cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
    out = janitor_cmd("run", "-c", str(cfg), "--log-format", "json")
    assert out.returncode == 0, out.stderr
    assert "trash_refused" in out.stderr and "not to us" in out.stderr
    assert list((tmpfs / ".janitor-trash").iterdir()) == []
    assert (tmpfs / ".janitor-trash").stat().st_uid == attacker.uid
    assert janitor_cmd("restore", "--all", "-c", str(cfg)).returncode == 0
    assert sorted(p.name for p in up.iterdir()) == ["f000", "f001"]


# -- red team 2: a copy-back as the directory's owner never recreates another account's file ----

def test_roots_file_is_not_copied_back_as_the_owner_of_its_directory(
        attacker: Attacker, hostile_root: Path, tmpfs: Path, sysctl_protection: int) -> None:
    """Root's 0600 report in a directory the user owns (its own mount), trashed across
    filesystems (the user planted `.janitor-trash`, so the file is copied to the state trash).
    Old code: restore copied it back as the user, which then owned and read root's bytes."""
    data = attacker.give(tmpfs, 0o755)
    proc = attacker.run(f"import os; os.mkdir({str(data / '.janitor-trash')!r}, 0o700)")
    assert proc.returncode == 0, proc.stderr
    report = data / "report.txt"
    report.write_bytes(b"root-only report\n")
    report.chmod(0o600)
    os.utime(report, (1e9, 1e9))
    cfg = write_config(hostile_root, "action: soft-delete\nmatch: ['*.txt']\nolder_than: 1d", data=data)
    done = janitor_cmd("run", "-c", str(cfg))
    assert done.returncode == 0 and not report.exists(), done.stdout + done.stderr
    out = janitor_cmd("restore", "--all", "-c", str(cfg))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "would be recreated as" in out.stderr and "not restoring it" in out.stderr, out.stderr
    assert not report.exists()
    assert sorted(p.name for p in data.iterdir()) == [".janitor-trash"]  # no scratch copy left behind
    trashed = [p for p in (hostile_root / "state").rglob("report.txt")]
    assert len(trashed) == 1, "the trashed copy must stay for a later restore"
    st = trashed[0].stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert trashed[0].read_bytes() == b"root-only report\n"


# -- red team 10: a sparse file copied into a trash on another filesystem never fills it --------

def test_a_sparse_file_bigger_than_the_trashs_free_space_is_not_copied(
        attacker: Attacker, hostile_root: Path, tmpfs: Path) -> None:
    """The user's 4 GiB sparse file (8 KiB allocated) is soft-deleted across filesystems into a
    64 MiB state trash. Old code: root wrote zeros until the trash's filesystem was full."""
    state = hostile_root / "state"
    state.mkdir(mode=0o700)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(state)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        data = tmpfs / "data"
        data.mkdir()
        up = attacker.mkdir(data / "up")
        (tmpfs / ".janitor-trash").write_text("not a directory: no trash on this mount, so files are copied")
        done = attacker.run(f"""
            import os, time
            p = os.path.join({str(up)!r}, "big.bin")
            with open(p, "wb") as f:
                f.write(b"head")
            os.truncate(p, 4 << 30)
            old = time.time() - 10 * {DAY}
            os.utime(p, (old, old))
        """)
        assert done.returncode == 0, done.stderr
        cfg = write_config(hostile_root, "action: soft-delete\nolder_than: 1d", data=data)
        out = janitor_cmd("run", "-c", str(cfg))
        assert "Traceback" not in out.stderr
        assert f"needs {4 << 30} bytes" in out.stdout + out.stderr, out.stdout + out.stderr
        big = up / "big.bin"
        assert big.stat().st_size == 4 << 30 and big.stat().st_uid == attacker.uid
        s = os.statvfs(state)
        assert s.f_bavail * s.f_frsize > 32 << 20, "the trash's filesystem was filled"
        assert not [p for p in state.rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True)
