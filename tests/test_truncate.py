"""End-to-end tests of the truncate action through the CLI (`janitor plan` / `janitor run`).

Writers are real processes appending numbered lines while separate `janitor run`
processes cut the log; afterwards the rotated copies (decompressed, oldest first) plus
the live file are read back and every line is accounted for.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fsutil import fstype

# Appends "%09d\n" lines; `burst` lines per write loop, then sleeps `pause` seconds.
# With O_APPEND unless told otherwise; reopens its log on SIGHUP like a daemon.
WRITER = r"""
import os, signal, sys, time
path, stop, burst, pause, append = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
reopen = False
def on_hup(signum, frame):
    global reopen
    reopen = True
signal.signal(signal.SIGHUP, on_hup)
fd = os.open(path, flags, 0o644)
os.lseek(fd, 0, os.SEEK_END)
n = 0
while not os.path.exists(stop):
    for _ in range(burst):
        if reopen:
            reopen = False
            os.close(fd)
            fd = os.open(path, flags, 0o644)
        n += 1
        os.write(fd, b"%09d\n" % n)
    if n == burst:
        print("ready", flush=True)
    if pause:
        time.sleep(pause)
print(n, flush=True)
"""

# Holds the log open O_WRONLY without O_APPEND (a shell `>` redirection) and does nothing.
HOLD_WITHOUT_APPEND = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.lseek(fd, 0, os.SEEK_END)
print("ready", flush=True)
sys.stdin.read()
"""

POLICY = """\
version: 1
settings:
  state_dir: {state}
policies:
  - name: applogs
    path: {root}
    match: ["*.log*"]
    action: truncate
"""

CLI = Callable[..., subprocess.CompletedProcess[str]]


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Mode, mtime_ns and content digest of every file and directory below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def write_policy(tmp_path: Path, state: Path, root: Path, extra: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    lines = "".join(f"    {line}\n" for line in extra.strip().splitlines())
    path.write_text(POLICY.format(state=state, root=root) + lines)
    return path


@pytest.fixture
def ext4_root(tmp_path: Path) -> Path:
    """A directory on the checkout's filesystem (ext4 or XFS: collapse-range works)."""
    root = tmp_path / "logs"
    root.mkdir()
    kind = fstype(root)
    if kind not in ("ext4", "xfs"):
        pytest.skip(f"{root} is on {kind}, not ext4/xfs")
    return root


@pytest.fixture
def tmpfs_root(tmpfs: Callable[[str, str], Path]) -> Path:
    root = tmpfs("logs", "128M")
    root.chmod(0o755)  # a fresh tmpfs is 1777: rotation there needs `su` (janitor/asowner.py)
    return root


def read_copy(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".zst"):
        import zstandard

        with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as z:
            return z.read()
    return path.read_bytes()


def copies(log: Path, where: Path | None = None) -> list[Path]:
    """Rotated copies of `log`, oldest first."""
    pattern = re.compile(re.escape(log.name) + r"\.(\d+)(\.gz|\.zst)?")
    found = [(int(m.group(1)), p) for p in (where or log.parent).iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def whole_stream(log: Path, where: Path | None = None) -> bytes:
    return b"".join(read_copy(p) for p in copies(log, where)) + log.read_bytes()


@dataclass
class Accounting:
    written: int
    present: int
    lost: int
    duplicated: int
    out_of_order: int
    nul_bytes: int


def account(stream: bytes, written: int) -> Accounting:
    """Line-exact accounting of a stream of "%09d\\n" lines 1..written."""
    nul = stream.count(b"\0")
    seen: set[int] = set()
    dup = disorder = 0
    last = 0
    for line in stream.replace(b"\0", b"").split(b"\n"):
        if not line:
            continue
        n = int(line)
        if n in seen:
            dup += 1
        seen.add(n)
        if n < last:
            disorder += 1
        last = n
    return Accounting(written, len(seen), written - len(seen), dup, disorder, nul)


class LogWriter:
    """A writer process appending numbered lines to `log` until stopped."""

    def __init__(self, log: Path, *, burst: int = 256, pause: float = 0.001, append: bool = True) -> None:
        self.log = log
        self.stop_file = log.parent.parent / f"stop-{log.name}-{os.getpid()}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log), str(self.stop_file), str(burst), str(pause),
             "1" if append else "0"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "ready\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        """Stop writing; the number of lines written."""
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=60)
        return int(out.split()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def log_writer() -> Iterator[Callable[..., LogWriter]]:
    started: list[LogWriter] = []

    def start(log: Path, **kw: object) -> LogWriter:
        w = LogWriter(log, **kw)  # type: ignore[arg-type]
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def wait_for_size(path: Path, size: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while path.stat().st_size < size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not reach {size} bytes")
        time.sleep(0.005)


def plan_json(cli: CLI, config: Path) -> dict:
    done = cli("plan", "-c", config, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["policies"][0]


def run_json_events(cli: CLI, config: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    done = cli("run", "-c", config, "--log-format", "json")
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return done, events


def cut_while_writing(cli: CLI, config: Path, log: Path, writer: LogWriter, runs: int) -> list[dict]:
    """`runs` CLI runs while the writer keeps appending; the log_truncated events."""
    truncated = []
    for _ in range(runs):
        wait_for_size(log, 256 * 1024)
        done, events = run_json_events(cli, config)
        assert done.returncode == 0, done.stdout + done.stderr
        truncated += [e for e in events if e["event"] == "log_truncated"]
    return truncated


# --------------------------------------------------------------------------- live writers


def test_ext4_collapse_range_loses_nothing(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path,
                                           log_writer: Callable[..., LogWriter]) -> None:
    log = ext4_root / "app.log"
    config = write_policy(tmp_path, state_dir, ext4_root,
                          "larger_than: 64K\nrotate: 20\ncompress: gzip\ndelay_compress: true")
    writer = log_writer(log)
    wait_for_size(log, 256 * 1024)
    planned = plan_json(cli, config)
    assert [(a["path"], a["method"]) for a in planned["actions"]] == [(str(log), "collapse-range")]

    truncated = cut_while_writing(cli, config, log, writer, runs=4)
    written = writer.stop()

    assert [e["method"] for e in truncated] == ["collapse-range"] * 4
    assert all(e["bytes_cut"] > 0 and e["rotated_to"] == str(log) + ".1" for e in truncated)
    names = sorted(p.name for p in copies(log))
    assert names == ["app.log.1", "app.log.2.gz", "app.log.3.gz", "app.log.4.gz"]
    acc = account(whole_stream(log), written)
    assert (acc.lost, acc.duplicated, acc.out_of_order, acc.nul_bytes) == (0, 0, 0, 0), acc


def test_tmpfs_copy_truncate_keeps_order_and_loses_little(
    cli: CLI, tmp_path: Path, state_dir: Path, tmpfs_root: Path, log_writer: Callable[..., LogWriter]
) -> None:
    log = tmpfs_root / "app.log"
    config = write_policy(tmp_path, state_dir, tmpfs_root, "larger_than: 64K\nrotate: 20\ncompress: zstd")
    writer = log_writer(log)
    wait_for_size(log, 256 * 1024)
    planned = plan_json(cli, config)
    assert [a["method"] for a in planned["actions"]] == ["copy-truncate"]

    truncated = cut_while_writing(cli, config, log, writer, runs=4)
    written = writer.stop()

    assert [e["method"] for e in truncated] == ["copy-truncate"] * 4
    assert sorted(p.name for p in copies(log)) == ["app.log.1.zst", "app.log.2.zst", "app.log.3.zst",
                                                   "app.log.4.zst"]
    acc = account(whole_stream(log), written)
    assert (acc.duplicated, acc.out_of_order, acc.nul_bytes) == (0, 0, 0), acc
    # Only the fstat -> ftruncate window can lose lines (docs/truncate.md); this writer
    # pauses between bursts of 256 lines, so at most a few bursts per cut.
    assert acc.lost <= 4 * 4 * 256, acc


def test_rename_mode_with_sighup_reopen_loses_nothing(
    cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path, log_writer: Callable[..., LogWriter]
) -> None:
    log = ext4_root / "app.log"
    pidfile = tmp_path / "app.pid"
    config = write_policy(tmp_path, state_dir, ext4_root,
                          f"larger_than: 64K\nrotate: 10\nmode: rename\ncompress: gzip\n"
                          f"reopen: {{signal: HUP, pidfile: {pidfile}}}")
    writer = log_writer(log)
    pidfile.write_text(f"{writer.pid}\n")
    assert [a["method"] for a in plan_json(cli, config)["actions"]] == ["rename"]

    truncated = cut_while_writing(cli, config, log, writer, runs=3)
    written = writer.stop()

    assert [e["method"] for e in truncated] == ["rename"] * 3
    assert sorted(p.name for p in copies(log)) == ["app.log.1.gz", "app.log.2.gz", "app.log.3.gz"]
    acc = account(whole_stream(log), written)
    assert (acc.lost, acc.duplicated, acc.out_of_order, acc.nul_bytes) == (0, 0, 0, 0), acc


def test_rename_mode_postrotate_runs_argv_without_shell(cli: CLI, tmp_path: Path, state_dir: Path,
                                                        ext4_root: Path) -> None:
    log = ext4_root / "app.log"
    log.write_bytes(b"x\n" * 1000)
    marker = tmp_path / "postrotate ran; $HOME"
    config = write_policy(tmp_path, state_dir, ext4_root,
                          f"rotate: 2\nmode: rename\npostrotate: [touch, '{marker}']")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.exists()  # the literal name: no shell expanded `;` or `$HOME`
    assert (ext4_root / "app.log.1").read_bytes() == b"x\n" * 1000
    assert log.read_bytes() == b""


# --------------------------------------------------------------------------- non-O_APPEND writers


@pytest.fixture
def non_append_holder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(log: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_WITHOUT_APPEND, str(log)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_non_append_writer_is_skipped_with_reason(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path,
                                                  non_append_holder: Callable[[Path], subprocess.Popen[str]]) -> None:
    log = ext4_root / "app.log"
    log.write_bytes(b"".join(b"%09d\n" % i for i in range(100_000)))
    config = write_policy(tmp_path, state_dir, ext4_root, "larger_than: 64K\nrotate: 3")
    holder = non_append_holder(log)
    before = snapshot(ext4_root)

    planned = plan_json(cli, config)
    assert planned["actions"] == []
    [skip] = planned["skips"]
    assert skip["code"] == "non_append_writer"
    assert f"without O_APPEND by pid {holder.pid}" in skip["reason"]
    assert "allow_non_append_writers" in skip["reason"]

    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(ext4_root) == before


def test_non_append_writer_allowed_is_cut(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path,
                                          non_append_holder: Callable[[Path], subprocess.Popen[str]]) -> None:
    log = ext4_root / "app.log"
    data = b"".join(b"%09d\n" % i for i in range(100_000))
    log.write_bytes(data)
    config = write_policy(tmp_path, state_dir, ext4_root,
                          "larger_than: 64K\nrotate: 3\nallow_non_append_writers: true")
    non_append_holder(log)
    assert [a["method"] for a in plan_json(cli, config)["actions"]] == ["collapse-range"]
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert log.stat().st_size < 4096
    assert whole_stream(log) == data


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("compress, delay, expected", [
    ("none", False, ["app.log.1", "app.log.2", "app.log.3"]),
    ("gzip", False, ["app.log.1.gz", "app.log.2.gz", "app.log.3.gz"]),
    ("gzip", True, ["app.log.1", "app.log.2.gz", "app.log.3.gz"]),
    ("zstd", True, ["app.log.1", "app.log.2.zst", "app.log.3.zst"]),
])  # fmt: skip
def test_rotation_count_naming_and_compression_round_trip(
    cli: CLI, tmp_path: Path, state_dir: Path, tmpfs_root: Path, compress: str, delay: bool, expected: list[str]
) -> None:
    # tmpfs: copy-truncate cuts exactly at the end, so each copy is one run's content.
    log = tmpfs_root / "app.log"
    config = write_policy(tmp_path, state_dir, tmpfs_root,
                          f"rotate: 3\ncompress: {compress}\ndelay_compress: {str(delay).lower()}")
    contents = []
    for run in range(1, 6):
        content = b"".join(b"run %d line %d\n" % (run, i) for i in range(5000))
        contents.append(content)
        with log.open("ab") as f:
            f.write(content)
        done = cli("run", "-c", config)
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in copies(log)) == expected
    assert [read_copy(p) for p in copies(log)] == contents[-3:]  # oldest first: .3, .2, .1
    assert log.read_bytes() == b""


def test_olddir_receives_the_copies(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path) -> None:
    olddir = ext4_root / "old"
    olddir.mkdir()
    log = ext4_root / "app.log"
    data = b"".join(b"%09d\n" % i for i in range(50_000))
    log.write_bytes(data)
    config = write_policy(tmp_path, state_dir, ext4_root, f"rotate: 2\ncompress: gzip\nolddir: {olddir}")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in copies(log, olddir)] == ["app.log.1.gz"]
    assert copies(log) == []
    assert whole_stream(log, olddir) == data


def test_keep_tail_lines_on_tmpfs_is_exact(cli: CLI, tmp_path: Path, state_dir: Path, tmpfs_root: Path) -> None:
    log = tmpfs_root / "app.log"
    lines = [b"%09d\n" % i for i in range(20_000)]
    log.write_bytes(b"".join(lines))
    config = write_policy(tmp_path, state_dir, tmpfs_root, "rotate: 1\nkeep_tail: 100 lines")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert log.read_bytes() == b"".join(lines[-100:])
    assert (tmpfs_root / "app.log.1").read_bytes() == b"".join(lines[:-100])


def test_keep_tail_on_ext4_keeps_at_least_the_tail(cli: CLI, tmp_path: Path, state_dir: Path,
                                                   ext4_root: Path) -> None:
    log = ext4_root / "app.log"
    lines = [b"%09d\n" % i for i in range(20_000)]
    data = b"".join(lines)
    log.write_bytes(data)
    config = write_policy(tmp_path, state_dir, ext4_root, "rotate: 1\nkeep_tail: 100 lines")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    live = log.read_bytes()
    # Collapse-range cuts at a block boundary: the tail plus less than one block stays.
    assert live.endswith(b"".join(lines[-100:]))
    assert len(live) < 100 * 10 + os.statvfs(ext4_root).f_bsize
    assert (ext4_root / "app.log.1").read_bytes() + live == data


def test_keep_tail_size(cli: CLI, tmp_path: Path, state_dir: Path, tmpfs_root: Path) -> None:
    log = tmpfs_root / "app.log"
    data = os.urandom(300_000)
    log.write_bytes(data)
    config = write_policy(tmp_path, state_dir, tmpfs_root, "keep_tail: 100KiB")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert log.read_bytes() == data[-100 * 1024:]
    assert copies(log) == []  # rotate defaults to 0: the cut part is dropped


# --------------------------------------------------------------------------- plan and edge cases


def test_rotated_copies_are_never_selected(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path) -> None:
    for name in ("app.log", "app.log.1", "app.log.2.gz", "app.log.3.zst"):
        (ext4_root / name).write_bytes(b"y" * 100_000)
    config = write_policy(tmp_path, state_dir, ext4_root, "rotate: 5")
    planned = plan_json(cli, config)
    # The copies are never selected. Since janitor did not write them (its ledger does not
    # know them), the live log is left alone too: something else rotates it (issue 12.2).
    assert planned["actions"] == []
    assert sorted((Path(s["path"]).name, s["code"]) for s in planned["skips"]) == [
        ("app.log", "rotated_by_writer"), ("app.log.1", "rotated_copy"), ("app.log.2.gz", "rotated_copy"),
        ("app.log.3.zst", "rotated_copy")]


def test_plan_and_dry_run_change_nothing(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path) -> None:
    (ext4_root / "app.log").write_bytes(b"z\n" * 50_000)
    config = write_policy(tmp_path, state_dir, ext4_root, "rotate: 3\ncompress: gzip")
    before = snapshot(ext4_root)
    text = cli("plan", "-c", config)
    assert text.returncode == 0 and "method=collapse-range" in text.stdout
    assert cli("run", "-c", config, "--dry-run").returncode == 0
    assert snapshot(ext4_root) == before


def test_missing_log_is_not_an_error(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path) -> None:
    config = write_policy(tmp_path, state_dir, ext4_root, "rotate: 3")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failures" in done.stdout
    missing_dir = write_policy(tmp_path, state_dir, ext4_root / "not-there", "rotate: 3")
    done = cli("run", "-c", missing_dir)
    assert done.returncode == 0, done.stdout + done.stderr


def test_larger_than_is_the_trigger(cli: CLI, tmp_path: Path, state_dir: Path, tmpfs_root: Path) -> None:
    (tmpfs_root / "small.log").write_bytes(b"s\n" * 100)
    (tmpfs_root / "big.log").write_bytes(b"b\n" * 100_000)
    config = write_policy(tmp_path, state_dir, tmpfs_root, "larger_than: 10K\nrotate: 1")
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmpfs_root / "small.log").read_bytes() == b"s\n" * 100
    assert (tmpfs_root / "big.log").read_bytes() == b""
    assert not (tmpfs_root / "small.log.1").exists()


def test_disk_full_leaves_the_log_untouched(cli: CLI, tmp_path: Path, state_dir: Path,
                                            tmpfs: Callable[[str, str], Path]) -> None:
    root = tmpfs("small", "1M")
    root.chmod(0o755)  # a fresh tmpfs is 1777: rotation there needs `su`
    log = root / "app.log"
    data = os.urandom(700 * 1024)
    log.write_bytes(data)
    config = write_policy(tmp_path, state_dir, root, "rotate: 3")
    done = cli("run", "-c", config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert log.read_bytes() == data
    assert sorted(p.name for p in root.iterdir()) == ["app.log"]  # no copy, no partial temp file
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "no space left" in errors[0] and "left untouched" in errors[0], errors


def test_check_policy_names_the_key(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path) -> None:
    config = write_policy(tmp_path, state_dir, ext4_root, "mode: rename\nkeep_tail: 10 lines")
    done = cli("validate", "-c", config)
    assert done.returncode == 2
    assert "policies[0].keep_tail: keep_tail is not supported with mode rename" in done.stderr
    config = write_policy(tmp_path, state_dir, ext4_root, "reopen: {pidfile: /run/app.pid}")
    done = cli("validate", "-c", config)
    assert done.returncode == 2
    assert "policies[0].reopen: reopen and postrotate need mode rename" in done.stderr


def test_non_ascii_log_name(cli: CLI, tmp_path: Path, state_dir: Path, ext4_root: Path) -> None:
    log = ext4_root / "运行实时日志.log"
    data = b"".join(b"%09d\n" % i for i in range(50_000))
    log.write_bytes(data)
    config = write_policy(tmp_path, state_dir, ext4_root, "rotate: 2\ncompress: gzip")
    assert [a["path"] for a in plan_json(cli, config)["actions"]] == [str(log)]
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in copies(log)] == ["运行实时日志.log.1.gz"]
    assert whole_stream(log) == data


def test_non_append_writer_appearing_after_the_plan_is_a_skip(
    tmp_path: Path, state_dir: Path, ext4_root: Path, non_append_holder: Callable[[Path], subprocess.Popen[str]]
) -> None:
    from janitor.catalog import open_catalog
    from janitor.config import load_config
    from janitor.events import EventLog
    from janitor.execute import execute_plan
    from janitor.planner import build_plan
    from janitor.state import ensure_private_dir

    log = ext4_root / "app.log"
    data = b"".join(b"%09d\n" % i for i in range(50_000))
    log.write_bytes(data)
    config = load_config(write_policy(tmp_path, state_dir, ext4_root, "rotate: 2"))
    plan = build_plan(config, config.policies)
    assert len(plan.policies[0].actions) == 1
    non_append_holder(log)
    ensure_private_dir(str(state_dir))
    catalog = open_catalog(str(state_dir))
    try:
        result = execute_plan(plan, config, catalog, "test-run", EventLog("text"))
    finally:
        catalog.close()
    assert result.exit_code == 0
    assert dict(result.policies[0].skipped) == {"non_append_writer": 1}
    assert log.read_bytes() == data


def test_interrupted_truncate_is_reconciled_without_claiming_presence_means_nothing_happened(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from janitor.actions.base import ACTIONS

    # Every action can settle a row a killed run left `planned` (base class method).
    assert all(callable(getattr(cls, "reconcile", None)) for cls in ACTIONS.values())
    log = tmp_path / "app.log"
    log.write_text("x\n")
    entry = SimpleNamespace(root=str(tmp_path), path=str(log), policy="gone")
    state, note = ACTIONS["truncate"].reconcile(entry)  # type: ignore[arg-type]
    # no record of a cut in progress: the log is as it was, nothing to claim
    assert state == "aborted" and note is not None and "as it was" in note
