"""Helpers shared by the benchmarks: tree generation, timing with peak RSS, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DAY = 86400


@dataclass
class Timing:
    label: str
    wall_s: float
    peak_rss_mb: float
    returncode: int
    cpu_s: float = 0.0  # user + system: less sensitive than wall time to a busy machine


@dataclass
class Measured:
    wall_s: float
    cpu_s: float  # user + system of the command and the children it waited for
    peak_rss_mb: float  # the largest single process among them
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""


def run_measured(argv: list[str], *, capture: bool = False, **kw: object) -> Measured:
    """Run a command under GNU time; its wall time, CPU time and peak RSS.

    GNU time reports the command's own peak RSS. Read from this process's wait4, a child's
    ru_maxrss would include this (large) Python process: Linux carries a process's RSS
    high-water mark across fork and exec (a 300 MB parent made `true` report 313 MB).
    """
    ensure_apt("time")
    with (tempfile.NamedTemporaryFile("r", prefix="bench-rss-") as rss,
          tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err):
        if capture:  # files, not pipes: nothing to drain while we wait, whatever the volume
            kw.update(stdout=out, stderr=err)
        kw.setdefault("stdout", subprocess.DEVNULL)
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], **kw)  # type: ignore[call-overload]
        _, status, usage = os.wait4(proc.pid, 0)  # includes the command's rusage: time waited for it
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
        lines = rss.read().split()
        out.seek(0)
        err.seek(0)
        stdout, stderr = (out.read(), err.read()) if capture else (b"", b"")
    peak_mb = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    return Measured(wall, usage.ru_utime + usage.ru_stime, peak_mb, proc.returncode, stdout, stderr)


def timed(label: str, argv: list[str], **kw: Any) -> Timing:
    """Run a command; wall time, CPU time and its own peak RSS (run_measured).

    Dirty pages and pending discards of whatever ran before are flushed first, so one
    tool does not pay for the previous one's writes.
    """
    os.sync()
    m = run_measured(argv, **kw)
    return Timing(label, m.wall_s, m.peak_rss_mb, m.returncode, m.cpu_s)


def janitor_argv(*args: str) -> list[str]:
    janitor = ROOT / ".venv" / "bin" / "janitor"
    if janitor.exists():
        return [str(janitor), *args]
    return [sys.executable, "-m", "janitor", *args]


def make_tree(root: Path, *, dirs: int, subdirs: int, files_per_dir: int, old_share: float,
              now: float, size: int = 64) -> int:
    """A nested tree of small files; `old_share` of them 10 days old, the rest 1 day old."""
    payload = b"x" * size
    count = 0
    old_every = round(1 / old_share) if old_share else 0
    for d in range(dirs):
        for s in range(subdirs):
            directory = root / f"d{d:03d}" / f"s{s:03d}"
            directory.mkdir(parents=True, exist_ok=True)
            for f in range(files_per_dir):
                path = directory / f"f{f:05d}.bin"
                with open(path, "wb") as fh:
                    fh.write(payload)
                age = 10 * DAY if old_every and count % old_every == 0 else DAY
                os.utime(path, (now - age, now - age))
                count += 1
    return count


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def save(name: str, data: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "kernel": platform.release()}, **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=lambda o: asdict(o)))
    return path


def ensure_apt(*packages: str) -> None:
    """Install Debian packages the comparison needs (bench only; never in the tests)."""
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def rusage_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
