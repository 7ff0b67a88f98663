"""Issue 11 (archive upload and `restore --from-archive`) against a real unprivileged user,
and issue 12 defect 9 (restore: already there, free space, ENOSPC).

janitor runs as root; the attacker owns a directory inside the policy path and acts as
itself (tests/attacker.py), with fs.protected_hardlinks/protected_symlinks at 0 and at 1.
The archive target is a file:// directory only root can reach. Afterwards every file's
owner, mode, content and location is checked.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from test_archive import janitor, run_inprocess, write_config

DAY = 86400
OLD = time.time() - 2 * DAY


def _setup(hostile_root: Path) -> tuple[Path, Path]:
    data = hostile_root / "data"
    data.mkdir()
    store = hostile_root / "store"
    store.mkdir(mode=0o700)
    return data, store


def _old(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def _as_attacker_write(attacker, path: Path, data: bytes) -> None:  # type: ignore[no-untyped-def]
    r = attacker.run(f"""
        import os
        with open({str(path)!r}, "wb") as f:
            f.write({data!r})
        os.utime({str(path)!r}, ({OLD!r}, {OLD!r}))
        """)
    assert r.returncode == 0, r.stderr


# -- issue 11 point 6: another account's file, hard-linked into the attacker's directory ----------


def test_a_hard_link_to_another_accounts_file_is_not_uploaded(attacker, sysctl_protection, hostile_root) -> None:  # type: ignore[no-untyped-def]
    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    secret = hostile_root / "secret.txt"
    secret.write_bytes(b"root's secret")
    # with protected_hardlinks=1 the kernel lets a user link only files it may read and write
    secret.chmod(0o600 if sysctl_protection == 0 else 0o666)
    _old(secret)
    r = attacker.run(f"import os; os.link({str(secret)!r}, {str(udir / 'loot.txt')!r})")
    assert r.returncode == 0, r.stderr
    _as_attacker_write(attacker, udir / "own.txt", b"mine")

    report, log = run_inprocess(write_config(hostile_root, data, url=f"file://{store}"))

    assert not (store / "outputs/u/loot.txt").exists(), "another account's file was uploaded"
    assert secret.read_bytes() == b"root's secret" and secret.stat().st_nlink == 2  # the link stays, untouched
    assert (udir / "loot.txt").exists()
    assert (store / "outputs/u/own.txt").read_bytes() == b"mine" and not (udir / "own.txt").exists()
    (outcome,) = report.result.policies
    assert outcome.skipped["foreign_link"] == 1, log
    assert "Traceback" not in log


# -- issue 11 points 1 and 4: a FIFO or a symlink swapped in after the plan ------------------------


def test_a_fifo_or_symlink_swapped_in_after_the_plan_never_hangs_nor_is_read(  # type: ignore[no-untyped-def]
    attacker, sysctl_protection, hostile_root, monkeypatch: pytest.MonkeyPatch
) -> None:
    import janitor.runner as runner

    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    for name in ("fifo.bin", "link.bin", "ok.bin"):
        _as_attacker_write(attacker, udir / name, name.encode() * 100)
    victim = hostile_root / "victim.txt"
    victim.write_bytes(b"root only")
    victim.chmod(0o600)
    real_build_plan = runner.build_plan

    def plan_then_swap(*args, **kwargs):  # type: ignore[no-untyped-def]
        plan = real_build_plan(*args, **kwargs)
        r = attacker.run(f"""
            import os
            os.unlink({str(udir / 'fifo.bin')!r}); os.mkfifo({str(udir / 'fifo.bin')!r})
            os.unlink({str(udir / 'link.bin')!r}); os.symlink({str(victim)!r}, {str(udir / 'link.bin')!r})
            """)
        assert r.returncode == 0, r.stderr
        return plan

    monkeypatch.setattr(runner, "build_plan", plan_then_swap)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(run_inprocess(write_config(hostile_root, data,
                                                                                      url=f"file://{store}"))),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the run hangs on a FIFO swapped in after the plan"
    report, log = result[0]  # type: ignore[misc]
    assert stat.S_ISFIFO(os.lstat(udir / "fifo.bin").st_mode) and os.path.islink(udir / "link.bin")
    assert sorted(p.name for p in (store / "outputs/u").iterdir() if not p.name.endswith(".janitor.json")) == \
        ["ok.bin"]
    assert victim.read_bytes() == b"root only"
    assert "Traceback" not in log


# -- issue 11 point 5: restore into a directory others can write -----------------------------------


def test_restore_into_a_shared_directory_without_su_is_refused_with_one_line(hostile_root) -> None:  # type: ignore[no-untyped-def]
    data, store = _setup(hostile_root)
    shared = data / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "f.bin").write_bytes(b"x" * 100)
    _old(shared / "f.bin")
    cfg = write_config(hostile_root, data, url=f"file://{store}")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0 and not (shared / "f.bin").exists(), log
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 1
    assert "writable by everyone" in r.stdout and "su: USER[:GROUP]" in r.stdout
    assert os.listdir(shared) == []  # nothing created there as root


def test_restore_into_the_attackers_directory_acts_as_the_attacker(  # type: ignore[no-untyped-def]
    attacker, sysctl_protection, hostile_root
) -> None:
    """The file and a missing parent are created with the directory owner's credentials
    (the parent recreated by the attacker's account, not as root); an attacker racing
    symlinks to a root file over every name in its directory gets nothing written there."""
    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    sub = udir / "sub"
    r = attacker.run(f"import os; os.mkdir({str(sub)!r}, 0o750)")
    assert r.returncode == 0, r.stderr
    payload = os.urandom(256 * 1024)
    (sub / "f.bin").write_bytes(payload)  # the attacker's own file (too long for its argv)
    os.chown(sub / "f.bin", attacker.uid, attacker.gid)
    os.chmod(sub / "f.bin", 0o640)
    _old(sub / "f.bin")
    _as_attacker_write(attacker, udir / "g.bin", b"g" * 1000)
    cfg = write_config(hostile_root, data, url=f"file://{store}")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0 and not (sub / "f.bin").exists(), log
    r = attacker.run(f"import os; os.rmdir({str(sub)!r})")
    assert r.returncode == 0, r.stderr
    victim = hostile_root / "victim.txt"
    victim.write_bytes(b"root only")
    victim.chmod(0o644)

    proc = attacker.start(f"""
        import os
        d = {str(udir)!r}
        print("ready", flush=True)
        while time.monotonic() < DEADLINE:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                if n.startswith(".") and "janitor" in n:
                    try:
                        os.unlink(os.path.join(d, n)); os.symlink({str(victim)!r}, os.path.join(d, n))
                    except OSError:
                        pass
        """, seconds=8)
    attacker.wait_ready(proc)
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    attacker.finish(proc)

    assert victim.read_bytes() == b"root only" and victim.stat().st_uid == 0
    assert "Traceback" not in r.stderr and "/proc/self/fd" not in r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    st = os.lstat(sub)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == attacker.uid  # made by the owner's account
    assert stat.S_IMODE(st.st_mode) == 0o750  # with the mode recorded when it was archived
    got = os.lstat(sub / "f.bin")
    assert stat.S_ISREG(got.st_mode) and got.st_uid == attacker.uid and got.st_mode & 0o7777 == 0o640
    assert (sub / "f.bin").read_bytes() == payload
    assert (udir / "g.bin").read_bytes() == b"g" * 1000


# -- issue 11 point 7: an archived copy is never silently replaced ---------------------------------


def test_a_later_file_at_the_same_path_never_replaces_the_only_archived_copy(attacker, hostile_root) -> None:  # type: ignore[no-untyped-def]
    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    _as_attacker_write(attacker, udir / "report.pdf", b"the original")
    cfg = write_config(hostile_root, data, url=f"file://{store}")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0 and not (udir / "report.pdf").exists(), log
    # the attacker puts other bytes at the same path; the next run archives them too
    _as_attacker_write(attacker, udir / "report.pdf", b"attacker's bytes")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0, log
    assert (store / "outputs/u/report.pdf").read_bytes() == b"the original"
    versioned = [p for p in (store / "outputs/u").iterdir() if p.name.startswith("report.pdf@")
                 and not p.name.endswith(".janitor.json")]
    assert len(versioned) == 1 and versioned[0].read_bytes() == b"attacker's bytes"
    sha = hashlib.sha256(b"attacker's bytes").hexdigest()
    assert versioned[0].name == f"report.pdf@{sha[:16]}"

    # the same bytes again: idempotent, nothing new is stored
    _as_attacker_write(attacker, udir / "report.pdf", b"attacker's bytes")
    report, log = run_inprocess(cfg)
    assert "already archived" in str(janitor("history", "-c", str(cfg)).stdout) or report.result.exit_code == 0
    assert len(list((store / "outputs/u").glob("report.pdf@*.janitor.json"))) == 1

    # restore: the newest by default; --version picks the original by key
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 0 and (udir / "report.pdf").read_bytes() == b"attacker's bytes", r.stdout + r.stderr
    r = janitor("restore", "--from-archive", "--all", "--force", "--version", "outputs/u/report.pdf", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (udir / "report.pdf").read_bytes() == b"the original"
    assert os.stat(udir / "report.pdf").st_uid == attacker.uid


def test_a_copy_a_killed_run_left_without_its_sidecar_is_recognised_not_stored_twice(tmp_path: Path) -> None:
    """A run killed between renaming the data into place and writing its sidecar leaves the
    bytes without their digest; the next run reads them back: the same bytes are completed
    in place (no second copy under a versioned key), other bytes are kept and get their own key."""
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    store.mkdir()
    bodies = {"same.bin": b"s" * 300, "other.bin": b"o" * 300}
    for name, body in bodies.items():
        (data / name).write_bytes(body)
        _old(data / name)
    cfg = write_config(tmp_path, data, url=f"file://{store}")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0, log
    stored = {name: next(store.rglob(name)) for name in bodies}
    for name, body in bodies.items():
        Path(f"{stored[name]}.janitor.json").unlink()  # the state a kill before the sidecar leaves
        (data / name).write_bytes(body)
        _old(data / name)
    stored["other.bin"].write_bytes(b"x" * 300)  # same size, other bytes: someone else's copy

    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0, log
    assert not (data / "same.bin").exists() and not (data / "other.bin").exists()
    copies = sorted(p.name for p in store.rglob("*") if p.is_file() and not p.name.endswith(".janitor.json"))
    sha = hashlib.sha256(bodies["other.bin"]).hexdigest()
    assert copies == sorted(["same.bin", "other.bin", f"other.bin@{sha[:16]}"])
    assert Path(f"{stored['same.bin']}.janitor.json").exists() and stored["same.bin"].read_bytes() == bodies["same.bin"]
    assert stored["other.bin"].read_bytes() == b"x" * 300


# -- issue 12 defect 9: already there, free space, ENOSPC ------------------------------------------


def _archived_tree(tmp_path: Path, files: dict[str, bytes], data: Path, **kw: object) -> Path:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    for rel, body in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(body)
        _old(data / rel)
    cfg = write_config(tmp_path, data, url=f"file://{store}", **kw)  # type: ignore[arg-type]
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0, log
    return cfg


def test_a_restore_of_files_already_in_place_succeeds_and_names_each_path_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = _archived_tree(tmp_path, {"a.txt": b"a" * 10, "b.txt": b"b" * 10}, data)
    assert janitor("restore", "--from-archive", "--all", "-c", str(cfg)).returncode == 0
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    for name in ("a.txt", "b.txt"):
        assert out.count(str(data / name)) == 1, out
    assert "2 already there" in r.stdout and "0 failed" in r.stdout


def test_a_restore_the_filesystem_has_no_room_for_is_refused_before_writing(tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    data = tmpfs("data", "16M")
    cfg = _archived_tree(tmp_path, {f"f{i}.bin": os.urandom(4 * 1024 * 1024) for i in range(3)}, data)
    (data / "filler").write_bytes(b"\0" * 6 * 1024 * 1024)  # 10 MiB free for 12 MiB of restores
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 1
    assert "not restoring (free space first)" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(data) == ["filler"]


def test_a_restore_over_a_guard_threshold_is_refused(tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    data = tmpfs("data", "32M")
    cfg = _archived_tree(tmp_path, {"f.bin": os.urandom(12 * 1024 * 1024)}, data)
    cfg.write_text(cfg.read_text().replace("settings:\n", "settings:\n  guard_max_used: 30%\n"))
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 1 and "settings.guard_max_used" in r.stderr, r.stdout + r.stderr
    assert os.listdir(data) == []


def test_a_restore_stops_at_the_first_enospc_and_names_the_users_path(
    tmp_path: Path, tmpfs, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """Free space is checked first; to reach the write path anyway, the check is switched
    off here: the first ENOSPC stops the restore, names the file, leaves nothing partial."""
    import janitor.archiveops as archiveops
    from janitor.catalog import open_catalog
    from janitor.config import load_config
    from janitor.events import EventLog

    data = tmpfs("data", "16M")
    data.chmod(0o755)  # a tmpfs root is 1777: janitor would (rightly) refuse to restore there as root
    files = {f"f{i}.bin": os.urandom(3 * 1024 * 1024) for i in range(4)}
    cfg = _archived_tree(tmp_path, files, data)
    (data / "filler").write_bytes(b"\0" * 8 * 1024 * 1024)  # room for two of the four
    monkeypatch.setattr(archiveops, "check_room", lambda config, entries: None)
    monkeypatch.setattr(archiveops, "_room_problem", lambda *a: None)
    config = load_config(cfg)
    catalog = open_catalog(config.settings.state_dir)
    try:
        entries = archiveops.select_archived(catalog, patterns=None)
        result = archiveops.restore_from_archive(catalog, config, entries, EventLog("text"))
    finally:
        catalog.close()
    assert len(result.done) == 2 and len(result.failed) == 1 and len(result.not_attempted) == 1
    (entry, reason), = result.failed
    assert reason == f"{entry.path}: no space left on device; restore stopped"
    assert "/proc/self/fd" not in reason
    assert sorted(os.listdir(data)) == sorted(["filler"] + [e.path.rsplit("/", 1)[1] for e in result.done])


def test_hostile_names_fail_only_their_own_file(attacker, hostile_root) -> None:  # type: ignore[no-untyped-def]
    """Issue 11 point 4: names the target cannot hold (its reserved suffixes, a name too
    long for its temp and sidecar names), six of them, more than the run's 'target keeps
    failing' limit: each fails alone, the other files are archived, no internal error."""
    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    hostile = ["a.janitor.json", "b.janitor-tmp", "c.janitor.json", "d.janitor-tmp", "e" * 250, "f" * 249]
    for name in [*hostile, "fine.txt", "z@0123456789abcdef"]:
        _as_attacker_write(attacker, udir / name, b"x")
    report, log = run_inprocess(write_config(hostile_root, data, url=f"file://{store}", workers=1))
    (outcome,) = report.result.policies
    assert outcome.failed == len(hostile) and outcome.files == 2, log
    assert "internal error" not in log and "stopping this policy" not in log
    assert sorted(os.listdir(udir)) == sorted(hostile)
    assert (store / "outputs/u/fine.txt").read_bytes() == b"x"


def test_an_attacker_racing_every_name_during_an_archive_run_gets_nothing_uploaded_or_hung(  # type: ignore[no-untyped-def]
    attacker, sysctl_protection, hostile_root
) -> None:
    """While the run uploads, the attacker keeps swapping its files for symlinks to a root
    secret, hard links to it (where the kernel allows), FIFOs and endlessly growing files.
    Whatever wins each race: the run ends, nothing of the secret is stored, the secret and
    the attacker's own files are never lost (each one is either still there or archived)."""
    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    secret = hostile_root / "secret.txt"
    secret.write_bytes(b"SECRET" * 1000)
    secret.chmod(0o600)
    _old(secret)
    names = [f"f{i}.bin" for i in range(40)]
    r = attacker.run(f"""
        import os
        for n in {names!r}:
            p = os.path.join({str(udir)!r}, n)
            with open(p, "wb") as f:
                f.write(n.encode() * 2000)
            os.utime(p, ({OLD!r}, {OLD!r}))
        """)
    assert r.returncode == 0, r.stderr
    originals = {n: (n.encode() * 2000) for n in names}
    proc = attacker.start(f"""
        import os, itertools
        d, secret = {str(udir)!r}, {str(secret)!r}
        names = {names!r}
        print("ready", flush=True)
        for i in itertools.count():
            if time.monotonic() > DEADLINE:
                break
            n = names[i % len(names)]
            p = os.path.join(d, n)
            kind = i % 4
            try:
                os.rename(p, p + ".saved")
            except OSError:
                continue
            try:
                if kind == 0:
                    os.symlink(secret, p)
                elif kind == 1:
                    os.link(secret, p)
                elif kind == 2:
                    os.mkfifo(p)
                else:
                    with open(p, "wb") as f:
                        f.truncate(1 << 30)
            except OSError:
                pass
            time.sleep(0.001)
            try:
                os.unlink(p)
            except OSError:
                pass
            try:
                os.rename(p + ".saved", p)
            except OSError:
                pass
        """, seconds=6)
    attacker.wait_ready(proc)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(run_inprocess(
        write_config(hostile_root, data, url=f"file://{store}", workers=4))), daemon=True)
    worker.start()
    worker.join(timeout=120)
    attacker.finish(proc)
    assert not worker.is_alive(), "the archive run hangs"
    report, log = result[0]  # type: ignore[misc]
    assert "Traceback" not in log and "internal error" not in log
    assert secret.read_bytes() == b"SECRET" * 1000 and secret.stat().st_uid == 0
    stored = {p.name: p.read_bytes() for p in (store / "outputs/u").iterdir()
              if not p.name.endswith(".janitor.json")} if (store / "outputs/u").exists() else {}
    assert not any(b"SECRET" in body for body in stored.values())
    for n, body in originals.items():
        here = udir / n
        saved = udir / (n + ".saved")
        kept = [p for p in (here, saved) if p.exists() and not p.is_symlink() and p.is_file()
                and p.read_bytes() == body]
        archived = any(k.split("@")[0] == n and v == body for k, v in stored.items())
        assert kept or archived, f"{n} lost"


def test_another_accounts_file_is_not_restored_into_the_attackers_directory(attacker, hostile_root) -> None:  # type: ignore[no-untyped-def]
    """A root-owned 0600 file that ended up in the attacker's directory (moved there, made
    there by a root job) is archived; restoring it there would have to create it as the
    attacker, who would then own root's bytes: refused, nothing created."""
    data, store = _setup(hostile_root)
    udir = attacker.mkdir(data / "u")
    (udir / "root.key").write_bytes(b"root key")
    os.chmod(udir / "root.key", 0o600)
    _old(udir / "root.key")
    cfg = write_config(hostile_root, data, url=f"file://{store}")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0 and not (udir / "root.key").exists(), log
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 1 and "not restoring it there as someone else's file" in r.stdout, r.stdout + r.stderr
    assert os.listdir(udir) == []


def test_missing_directories_are_recreated_with_their_recorded_owner_and_mode(attacker, hostile_root) -> None:  # type: ignore[no-untyped-def]
    """Issue 11 point 5: a restore recreates the directories removed since the archive with
    the owner and mode they had then: root's `r` (0751) as root, the user's `r/home` (0700,
    inside a root-only directory) by root and given to the user, and the file inside as the
    user (its directory is the user's)."""
    import shutil

    data, store = _setup(hostile_root)
    r = data / "r"
    r.mkdir()
    r.chmod(0o751)
    home = r / "home"
    home.mkdir()
    os.chown(home, attacker.uid, attacker.gid)
    home.chmod(0o700)
    (home / "f.txt").write_bytes(b"user data")
    os.chown(home / "f.txt", attacker.uid, attacker.gid)
    _old(home / "f.txt")
    cfg = write_config(hostile_root, data, url=f"file://{store}")
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0 and not (home / "f.txt").exists(), log
    shutil.rmtree(r)
    rr = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert rr.returncode == 0, rr.stdout + rr.stderr
    assert (os.lstat(r).st_uid, stat.S_IMODE(os.lstat(r).st_mode)) == (0, 0o751)
    assert (os.lstat(home).st_uid, os.lstat(home).st_gid, stat.S_IMODE(os.lstat(home).st_mode)) == \
        (attacker.uid, attacker.gid, 0o700)
    assert (home / "f.txt").read_bytes() == b"user data" and os.lstat(home / "f.txt").st_uid == attacker.uid
