"""Files in use that /proc/*/fdinfo cannot show are still in use (issue 11 point 10), and
readers count for policies that say so (issue 12 defect 13).

Each case is a real process or a real kernel object: a process that mmaps a file shared and
writable and closes its fd, a loop device, a swap file, a process holding a ZIP open for
reading. The plan skips the file with the reason, with `settle: 0s`, and `run` leaves it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DAY, Tree

from janitor.config import load_config
from janitor.planner import build_plan
from janitor.procfs import scan_open_files

ROOT = Path(__file__).resolve().parent.parent


def config_for(write_config, extra: str = ""):  # type: ignore[no-untyped-def]
    return write_config(
        "version: 1\nsettings:\n  state_dir: {state}\n  settle: 0s\npolicies:\n"
        "  - name: p\n    path: {root}\n    action: delete\n    older_than: 1h\n" + extra
    )


def plan_skips(cfg: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    config = load_config(cfg)
    pp = build_plan(config, config.policies).policies[0]
    return (sorted(a.fact.relpath for a in pp.actions),
            {os.path.relpath(s.path, pp.root): (s.code, s.reason) for s in pp.skips})


class Holder:
    """A real process running `code` (which sets things up, prints ready, waits for stdin)."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()  # an event, not a sleep
        assert ready.strip() == "ready", ready

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture
def holder() -> Iterator[type[Holder]]:
    started: list[Holder] = []

    class Tracked(Holder):
        def __init__(self, code: str) -> None:
            super().__init__(code)
            started.append(self)

    yield Tracked
    for h in started:
        h.stop()


def test_a_shared_writable_mapping_is_in_use(tree: Tree, write_config, holder, cli) -> None:  # type: ignore[no-untyped-def]
    mapped = tree.file("mapped.db", 8192, age=DAY)
    tree.file("idle.db", 10, age=DAY)
    h = holder(f"""
        import ctypes, mmap, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        fd = os.open({str(mapped)!r}, os.O_RDWR)
        # libc's mmap, not Python's (which keeps a dup of the fd)
        addr = libc.mmap(None, 8192, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        os.close(fd)  # no fd left: /proc/PID/fdinfo shows nothing, the mapping still writes
        print("ready", flush=True)
        sys.stdin.read()
        ctypes.memmove(addr, b"later", 5)
    """)
    os.utime(mapped, (tree.now - DAY, tree.now - DAY))
    assert not any(os.path.realpath(f"/proc/{h.proc.pid}/fd/{fd}") == str(mapped)
                   for fd in os.listdir(f"/proc/{h.proc.pid}/fd"))
    chosen, skips = plan_skips(config_for(write_config))
    assert chosen == ["idle.db"]
    code, reason = skips["mapped.db"]
    assert code == "mapped_for_write" and f"mapped shared and writable by pid {h.proc.pid} (python" in reason
    proc = cli("run", "-c", config_for(write_config))
    assert proc.returncode == 0, proc.stderr
    assert mapped.exists() and not (tree.root / "idle.db").exists()


def test_a_read_only_mapping_is_a_reader(tree: Tree, write_config, holder) -> None:  # type: ignore[no-untyped-def]
    mapped = tree.file("model.bin", 8192, age=DAY)
    h = holder(f"""
        import mmap, os, sys
        fd = os.open({str(mapped)!r}, os.O_RDONLY)
        m = mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ)
        os.close(fd)
        print("ready", flush=True)
        sys.stdin.read()
    """)
    assert plan_skips(config_for(write_config))[0] == ["model.bin"]  # readers do not count by default
    chosen, skips = plan_skips(config_for(write_config, "    skip_open_readers: true\n"))
    assert chosen == [] and skips["model.bin"][0] == "open_for_read"
    assert f"pid {h.proc.pid}" in skips["model.bin"][1]


@pytest.fixture
def loop_device(tree: Tree) -> Iterator[tuple[Path, str]]:
    backing = tree.file("disk.img", 4 << 20, age=DAY)
    proc = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot attach a loop device here: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        yield backing, device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_a_loop_devices_backing_file_is_in_use(tree: Tree, write_config, loop_device, cli) -> None:  # type: ignore[no-untyped-def]
    backing, device = loop_device
    tree.file("old.img", 10, age=DAY)
    os.utime(backing, (tree.now - DAY, tree.now - DAY))
    chosen, skips = plan_skips(config_for(write_config))
    assert chosen == ["old.img"]
    assert skips["disk.img"] == ("loop_device", f"backs loop device {device}")
    proc = cli("run", "-c", config_for(write_config))
    assert proc.returncode == 0, proc.stderr
    assert backing.exists() and not (tree.root / "old.img").exists()


def test_a_renamed_loop_backing_file_is_still_found_by_inode(tree: Tree, loop_device) -> None:  # type: ignore[no-untyped-def]
    backing, device = loop_device
    moved = backing.with_name("renamed.img")
    backing.rename(moved)  # the name in /sys/block/loopN/loop/backing_file is now stale
    st = moved.stat()
    assert scan_open_files({st.st_dev}).loops.get((st.st_dev, st.st_ino)) == [device]


@pytest.fixture
def swap_file(tree: Tree) -> Iterator[Path]:
    swap = tree.root / "swapfile"
    fd = os.open(swap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, bytes(16 << 20))  # written, not sparse: swapon refuses holes
        os.fsync(fd)
    finally:
        os.close(fd)
    mk = subprocess.run(["mkswap", str(swap)], capture_output=True, text=True)
    on = subprocess.run(["swapon", str(swap)], capture_output=True, text=True) if mk.returncode == 0 else mk
    if on.returncode != 0:
        pytest.skip(f"cannot enable a swap file here: {on.stderr.strip()}")
    try:
        yield swap
    finally:
        subprocess.run(["swapoff", str(swap)], check=False)


def test_an_active_swap_file_is_in_use(tree: Tree, write_config, swap_file, cli) -> None:  # type: ignore[no-untyped-def]
    os.utime(swap_file, (tree.now - DAY, tree.now - DAY))
    chosen, skips = plan_skips(config_for(write_config))
    assert chosen == [] and skips["swapfile"] == ("swap_file", "an active swap file")
    proc = cli("run", "-c", config_for(write_config))
    assert proc.returncode == 0, proc.stderr
    assert swap_file.exists()


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("video.mp4", os.urandom(4096))
    return path


def test_a_zip_being_downloaded_is_skipped_when_readers_count(tree: Tree, write_config, holder, cli) -> None:  # type: ignore[no-untyped-def]
    bundle = _zip(tree.root / "videos_1017.zip")
    done = _zip(tree.root / "videos_1016.zip")
    for p in (bundle, done):
        os.utime(p, (tree.now - DAY, tree.now - DAY))
    h = holder(f"""
        import sys
        f = open({str(bundle)!r}, "rb")  # a web server sending the bundle: read, half way
        f.read(100)
        print("ready", flush=True)
        sys.stdin.read()
    """)
    cfg = config_for(write_config, "    skip_open_readers: true\n")
    chosen, skips = plan_skips(cfg)
    assert chosen == ["videos_1016.zip"]
    code, reason = skips["videos_1017.zip"]
    assert code == "open_for_read" and reason.startswith(f"open for reading by pid {h.proc.pid} (python")
    proc = cli("run", "-c", cfg)
    assert proc.returncode == 0, proc.stderr
    assert bundle.exists() and not done.exists()
    h.stop()
    proc = cli("run", "-c", cfg)  # the download finished: now it goes
    assert proc.returncode == 0 and not bundle.exists()


def test_the_download_bundle_policy_counts_readers() -> None:
    # policies/heygem-digital-human.yaml says "a bundle still open by the web server is skipped"
    config = load_config(ROOT / "policies" / "heygem-digital-human.yaml")
    assert config.policy("heygem-tmp-zips").skip_open_readers is True
    assert all(not p.skip_open_readers for p in config.policies if p.name != "heygem-tmp-zips")


def test_another_accounts_mapping_is_seen_by_root(attacker, hostile_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A service account (here the harness's unprivileged user) writes its file through a
    shared mapping and has closed the fd: root's janitor must see it in that user's maps."""
    out = attacker.mkdir(hostile_root / "out")
    attacker.run(f"""
        import os
        for name in ("live.bin", "done.bin"):
            with open({str(out)!r} + "/" + name, "wb") as f:
                f.write(bytes(8192))
            os.utime({str(out)!r} + "/" + name, (1, 1))
    """).check_returncode()
    proc = attacker.start(f"""
        import ctypes, mmap, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        fd = os.open({str(out / "live.bin")!r}, os.O_RDWR)
        addr = libc.mmap(None, 8192, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        os.close(fd)
        print("ready", flush=True)
        n = 0
        while time.monotonic() < DEADLINE:
            ctypes.memmove(addr, b"%08d" % n, 8)  # writes through the mapping, no fd, no write(2)
            n += 1
            time.sleep(0.01)
    """, seconds=20)
    attacker.wait_ready(proc)
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(f"version: 1\nsettings:\n  state_dir: {hostile_root / 'state'}\n  settle: 0s\npolicies:\n"
                   f"  - name: p\n    path: {out}\n    action: delete\n")
    config = load_config(cfg)
    pp = build_plan(config, config.policies).policies[0]
    assert [a.fact.relpath for a in pp.actions] == ["done.bin"]
    assert [(os.path.basename(s.path), s.code) for s in pp.skips] == [("live.bin", "mapped_for_write")]
    assert f"pid {proc.pid}" in pp.skips[0].reason
