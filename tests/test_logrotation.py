"""truncate next to other rotators and on a schedule (issue 12: defect 2, time-based rotation).

* A writer that rotates its own log (Python's RotatingFileHandler) while janitor truncates
  it: janitor must never remove or rename a file it cannot prove it wrote, must notice the
  other rotator and leave the log alone, and every line must be somewhere afterwards.
* logrotate's stanza `daily rotate 7 compress delaycompress missingok notifempty copytruncate`
  translated key for key into a policy, and run over simulated days.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fsutil import fstype

from janitor.actions.truncate import from_logrotate, rotation_due

CLI = Callable[..., subprocess.CompletedProcess[str]]

# Python's own size-based rotation: app.log -> app.log.1 -> app.log.2 ... Each record is one
# 4096-byte line, so a block-aligned collapse-range cut always falls between two lines.
ROTATING_WRITER = r"""
import logging, logging.handlers, os, sys, time
path, stop = sys.argv[1], sys.argv[2]
handler = logging.handlers.RotatingFileHandler(path, maxBytes=400_000, backupCount=1000)
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("writer")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
n = 0
while not os.path.exists(stop):
    for _ in range(20):
        n += 1
        log.info("%09d%s", n, "x" * 4086)
    if n == 20:
        print("ready", flush=True)
    time.sleep(0.002)
handler.close()
print(n, flush=True)
"""


@pytest.fixture
def ext4_logs(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    root.mkdir()
    if fstype(root) not in ("ext4", "xfs"):
        pytest.skip(f"{root} is not on ext4/xfs")
    return root


@pytest.fixture
def rotating_writer(ext4_logs: Path) -> Iterator[subprocess.Popen[str]]:
    stop = ext4_logs.parent / "stop"
    proc = subprocess.Popen([sys.executable, "-c", ROTATING_WRITER, str(ext4_logs / "app.log"), str(stop)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    stop.touch()
    if proc.poll() is None:
        proc.communicate(timeout=60)


def size_of(log: Path) -> int:
    """The live log's size; 0 between the writer's rename of it and its new one's creation."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def read_any(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


def config_file(tmp_path: Path, root: Path, keys: dict[str, object], match: str = "*.log*") -> Path:
    body = {"version": 1, "settings": {"state_dir": str(tmp_path / "state")},
            "policies": [{"name": "applogs", "path": str(root), "match": [match], "action": "truncate", **keys}]}
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


def run_events(cli: CLI, config: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    done = cli("run", "-c", config, "--log-format", "json")
    return done, [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def test_a_log_its_writer_rotates_is_left_alone_and_every_line_survives(
        cli: CLI, tmp_path: Path, ext4_logs: Path, rotating_writer: subprocess.Popen[str]) -> None:
    """Issue 12 defect 2: on the old code about half the lines vanished with exit 0."""
    log = ext4_logs / "app.log"
    config = config_file(tmp_path, ext4_logs, {"rotate": 5, "compress": "gzip"})
    seen_events: list[dict] = []
    for _ in range(8):
        start = len(list(ext4_logs.iterdir()))
        deadline = time.monotonic() + 30
        # wait for the writer to have written more (and, after the first runs, rotated)
        while len(list(ext4_logs.iterdir())) == start and size_of(log) < 200_000:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        done, events = run_events(cli, config)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        seen_events += events
    (ext4_logs.parent / "stop").touch()
    out, _ = rotating_writer.communicate(timeout=60)
    written = int(out.strip())

    counts: Counter[int] = Counter()
    for path in ext4_logs.iterdir():
        data = read_any(path)
        assert len(data) % 4096 == 0, path
        for i in range(0, len(data), 4096):
            line = data[i:i + 4096]
            assert line.endswith(b"x\n") and line[:9].isdigit(), (path, line[:20])
            counts[int(line[:9])] += 1
    missing = [n for n in range(1, written + 1) if counts[n] == 0]
    doubled = [n for n, c in counts.items() if c > 1]
    assert (len(missing), len(doubled)) == (0, 0), (missing[:10], doubled[:10])
    # janitor noticed the other rotator and said so, instead of fighting it
    warned = [e for e in seen_events if e["event"] == "log_rotated_elsewhere" or (
        e["event"] == "file_skipped" and e.get("code") == "rotated_by_writer")]
    assert warned and all(e["level"] == "warning" for e in warned), seen_events
    assert all("rotated by its writer" in (e.get("reason") or e.get("message")) for e in warned)


def test_a_plain_copy_janitor_did_not_write_is_never_removed(cli: CLI, tmp_path: Path, ext4_logs: Path) -> None:
    """A plain app.log.1 next to janitor's own app.log.1.gz: the old code took it for a leftover."""
    log = ext4_logs / "app.log"
    config = config_file(tmp_path, ext4_logs, {"rotate": 3, "compress": "gzip"}, match="app.log")
    log.write_bytes(b"first\n" * 5000)
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in ext4_logs.iterdir()) == ["app.log", "app.log.1.gz"]
    theirs = b"written by someone else\n" * 100
    (ext4_logs / "app.log.1").write_bytes(theirs)
    log.write_bytes(log.read_bytes() + b"second\n" * 5000)
    before = {p.name: p.read_bytes() for p in ext4_logs.iterdir()}
    done, events = run_events(cli, config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in ext4_logs.iterdir()} == before  # nothing touched
    [skip] = [e for e in events if e["event"] == "file_skipped"]
    assert skip["code"] == "rotated_by_writer" and "app.log.1 was not written by janitor" in skip["reason"]


# --------------------------------------------------------------------------- time-based rotation

STANZA = """
/srv/video/logs/*.log {
    daily
    rotate 7
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}
"""


def test_the_logrotate_stanza_translates_one_to_one() -> None:
    paths, keys = from_logrotate(STANZA)
    assert paths == ["/srv/video/logs/*.log"]
    assert keys == {"rotate_every": "daily", "rotate": 7, "compress": "gzip", "delay_compress": True,
                    "missingok": True, "notifempty": True, "mode": "copytruncate"}
    with pytest.raises(ValueError, match="sharedscripts"):
        from_logrotate("/x.log {\n daily\n sharedscripts\n}\n")


def _rewind_ledger(state: Path, seconds: float) -> None:
    """Pretend janitor's last rotation of every log happened `seconds` earlier."""
    for record in (state / "logcut").glob("*.json"):
        data = json.loads(record.read_text())
        if data.get("last_rotated"):
            data["last_rotated"] -= seconds
        record.write_text(json.dumps(data))


def test_the_stanza_behaves_like_logrotate_over_nine_days(cli: CLI, tmp_path: Path, ext4_logs: Path) -> None:
    _, keys = from_logrotate(STANZA)
    config = config_file(tmp_path, ext4_logs, keys, match="*.log")
    log = ext4_logs / "app.log"
    days = []
    for day in range(1, 10):
        content = b"".join(b"day %d line %05d\n" % (day, i) for i in range(2000))
        days.append(content)
        with log.open("ab") as f:
            f.write(content)
        done = cli("run", "-c", config)
        assert done.returncode == 0, done.stdout + done.stderr
        # a second run the same day does nothing: not due
        again = cli("plan", "-c", config, "--json")
        [skip] = json.loads(again.stdout)["policies"][0]["skips"][-1:]
        assert skip["code"] in ("not_due", "empty"), skip
        _rewind_ledger(tmp_path / "state", 86400)
    names = sorted(p.name for p in ext4_logs.iterdir())
    # rotate 7, compress, delaycompress: the newest copy stays plain one more day
    assert names == ["app.log", "app.log.1"] + [f"app.log.{i}.gz" for i in range(2, 8)]
    stream = b"".join(read_any(ext4_logs / n) for n in reversed(names[1:])) + log.read_bytes()
    assert stream == b"".join(days)[-len(stream):]  # the last 7 days and the live tail, in order
    assert b"day 9" in stream and b"day 2 " not in stream[:20]
    # notifempty: an empty log is never rotated; missingok: a missing one is not an error
    log.write_bytes(b"")
    _rewind_ledger(tmp_path / "state", 86400)
    plan = json.loads(cli("plan", "-c", config, "--json").stdout)["policies"][0]
    assert plan["actions"] == [] and plan["skips"][-1]["code"] == "empty"
    log.unlink()
    assert cli("run", "-c", config).returncode == 0


def test_dateext_names_and_min_size(cli: CLI, tmp_path: Path, ext4_logs: Path) -> None:
    log = ext4_logs / "app.log"
    config = config_file(tmp_path, ext4_logs, {"rotate_every": "daily", "rotate": 2, "dateext": True,
                                               "compress": "gzip", "min_size": "100KiB"}, match="*.log")
    log.write_bytes(b"small\n" * 100)
    plan = json.loads(cli("plan", "-c", config, "--json").stdout)["policies"][0]
    assert plan["actions"] == [] and plan["skips"][0]["code"] == "below_min_size"
    log.write_bytes(b"big line\n" * 50_000)
    done = cli("run", "-c", config)
    assert done.returncode == 0, done.stdout + done.stderr
    today = time.strftime("%Y%m%d")
    assert sorted(p.name for p in ext4_logs.iterdir()) == ["app.log", f"app.log-{today}.gz"]


@pytest.mark.parametrize("every, last, now, due", [
    ("daily", "2026-12-03 23:59", "2026-12-04 00:01", True),
    ("daily", "2026-12-04 00:01", "2026-12-04 23:59", False),
    ("weekly", "2026-11-30 10:00", "2026-12-06 10:00", False),  # Monday .. Sunday: one ISO week
    ("weekly", "2026-12-06 10:00", "2026-12-07 10:00", True),
    ("monthly", "2026-11-30 10:00", "2026-12-01 10:00", True),
    ("monthly", "2026-12-01 10:00", "2026-12-31 10:00", False),
    ("12h", "2026-12-04 00:00", "2026-12-04 11:59", False),
    ("12h", "2026-12-04 00:00", "2026-12-04 12:00", True),
    ("daily", None, "2026-12-04 12:00", True),  # never rotated by janitor: due at once
])  # fmt: skip
def test_rotation_due(every: str, last: str | None, now: str, due: bool) -> None:
    def ts(text: str) -> float:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M"))

    assert rotation_due(every, ts(last) if last else None, ts(now)) is due


def test_the_plan_and_the_run_share_one_method_predictor_and_one_proc_scanner() -> None:
    """Issue 13: logcut has no /proc scanner of its own and no probe that writes."""
    import inspect

    import janitor.actions.truncate as truncate
    import janitor.logcut as logcut

    source = inspect.getsource(logcut)
    assert '"/proc' not in source and "/proc/self/fd" not in source and "mkstemp" not in source
    assert "/proc/self/fd" not in inspect.getsource(truncate)
    assert truncate.predict_method is logcut.predict_method


def test_an_untrusted_ledger_proves_nothing(cli: CLI, tmp_path: Path, ext4_logs: Path) -> None:
    """A record another account could have written (mode 0666) is not janitor's word."""
    log = ext4_logs / "app.log"
    config = config_file(tmp_path, ext4_logs, {"rotate": 2}, match="app.log")
    log.write_bytes(b"one\n" * 5000)
    assert cli("run", "-c", config).returncode == 0
    log.write_bytes(log.read_bytes() + b"two\n" * 5000)
    assert cli("run", "-c", config).returncode == 0
    assert sorted(p.name for p in ext4_logs.iterdir()) == ["app.log", "app.log.1", "app.log.2"]
    [record] = (tmp_path / "state" / "logcut").glob("*.json")
    record.chmod(0o666)
    log.write_bytes(log.read_bytes() + b"three\n" * 5000)
    before = {p.name: p.read_bytes() for p in ext4_logs.iterdir()}
    done, events = run_events(cli, config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in ext4_logs.iterdir()} == before  # app.log.2 not dropped
    assert [e["code"] for e in events if e["event"] == "file_skipped"] == ["rotated_by_writer"]


def test_missingok_false_says_when_no_log_matches(cli: CLI, tmp_path: Path, ext4_logs: Path) -> None:
    quiet = config_file(tmp_path, ext4_logs, {"rotate": 1, "missingok": True}, match="*.log")
    assert json.loads(cli("plan", "-c", quiet, "--json").stdout)["policies"][0]["notes"] == []
    loud = config_file(tmp_path, ext4_logs, {"rotate": 1, "missingok": False}, match="*.log")
    [note] = json.loads(cli("plan", "-c", loud, "--json").stdout)["policies"][0]["notes"]
    assert "no log matches *.log (missingok: false)" in note
