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


def timed(label: str, argv: list[str], **kw: object) -> Timing:
    """Run a command; wall time, CPU time and the command's own peak RSS (not a sampler).

    Dirty pages and pending discards of whatever ran before are flushed first, so one
    tool does not pay for the previous one's writes.

    The command runs under GNU time, which reports its peak RSS. Read from our own wait4
    instead, a child's ru_maxrss would include this (large) Python process: Linux carries a
    process's RSS high-water mark across fork and exec.
    """
    ensure_apt("time")
    os.sync()
    with tempfile.NamedTemporaryFile("r", prefix="bench-rss-") as rss:
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv],  # type: ignore[call-overload]
                                stdout=subprocess.DEVNULL, **kw)
        _, status, usage = os.wait4(proc.pid, 0)  # includes the command's rusage: time waited for it
        wall = time.perf_counter() - start
        lines = rss.read().split()
    peak_mb = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timing(label, wall, peak_mb, proc.returncode, usage.ru_utime + usage.ru_stime)


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
