"""Benchmark: janitor's truncate against logrotate's copytruncate, lines lost per cut.

For each filesystem (the checkout's, normally ext4: janitor uses collapse-range; a tmpfs:
janitor falls back to copy-truncate) and each writer shape (as fast as it can; paced at
20,000 lines/s), a writer process appends numbered lines "%09d\\n" with O_APPEND while a
cutter cuts the log every 0.3 s for 10 s:

* ``janitor``      `janitor.logcut.cut_log` called directly at the cadence (what the
                   engine can do; no process start-up in the way),
* ``janitor-cli``  `python -m janitor run -c policy.yaml` started at the cadence (each run
                   takes ~0.3 s to start, so it cuts less often),
* ``logrotate``    `logrotate -f` with `copytruncate`, `rotate 1000`, `nocompress`.

Afterwards the rotated copies (oldest first) and the live file are read back and every
line is accounted for: lost, duplicated, out of order, NUL bytes. Results go to
bench/results/truncate_vs_logrotate.json and a table on stdout.

Needs root (tmpfs mount) and logrotate (`apt-get install -y logrotate`). Run:

    PYTHONPATH=. python bench/truncate_vs_logrotate.py [--seconds 10] [--interval 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from janitor.disk import fstype as mount_fstype  # noqa: E402
from janitor.logcut import CutOptions, cut_log, plan_method  # noqa: E402

# rate 0: as fast as possible. Otherwise paced: catch up to rate * elapsed, one write() a line.
WRITER = r"""
import os, sys, time
path, stop, rate = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
n = 0
print("ready", flush=True)
t0 = time.monotonic()
while not os.path.exists(stop):
    if rate:
        target = int((time.monotonic() - t0) * rate)
        if n >= target:
            time.sleep(0.0005)
            continue
        batch = target - n
    else:
        batch = 512
    for _ in range(batch):
        n += 1
        os.write(fd, b"%09d\n" % n)
print(n, time.monotonic() - t0, flush=True)
"""

WRITERS = {"max-speed": 0, "20k-lines/s": 20_000}
LINE_RE = re.compile(rb"\d{9}")


@dataclass
class Result:
    filesystem: str
    fstype: str
    writer: str
    cutter: str
    method: str
    seconds: float
    cuts: int
    lines_written: int
    lines_per_second: float
    lines_lost: int
    lines_duplicated: int
    lines_out_of_order: int
    nul_bytes: int
    garbled_lines: int
    lost_per_cut: float
    duplicated_per_cut: float
    nul_per_cut: float
    cut_ms_median: float
    cut_ms_max: float
    errors: list[str] = field(default_factory=list)


def copies_oldest_first(log: Path) -> list[Path]:
    pattern = re.compile(re.escape(log.name) + r"\.(\d+)(\.gz|\.zst)?")
    found = [(int(m.group(1)), p) for p in log.parent.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def account(stream: bytes, written: int) -> tuple[int, int, int, int, int]:
    """(lost, duplicated, out of order, NUL bytes, garbled lines) for lines 1..written."""
    nul = stream.count(b"\0")
    seen = bytearray(written + 2)
    dup = disorder = garbled = 0
    last = 0
    for line in stream.replace(b"\0", b"").split(b"\n"):
        if not line:
            continue
        if not LINE_RE.fullmatch(line):
            garbled += 1
            continue
        n = int(line)
        if n > written:
            garbled += 1
            continue
        if seen[n]:
            dup += 1
        seen[n] = 1
        if n < last:
            disorder += 1
        last = n
    present = sum(seen[1 : written + 1])
    return written - present, dup, disorder, nul, garbled


def logrotate_config(workdir: Path, log: Path) -> Path:
    conf = workdir / "logrotate.conf"
    conf.write_text(textwrap.dedent(f"""\
        {log} {{
            copytruncate
            rotate 1000
            nocompress
            missingok
            notifempty
        }}
    """))
    conf.chmod(0o644)
    return conf


def janitor_config(workdir: Path, log: Path) -> Path:
    conf = workdir / "janitor.yaml"
    conf.write_text(textwrap.dedent(f"""\
        version: 1
        settings:
          state_dir: {workdir / "janitor-state"}
        policies:
          - name: bench
            path: {log.parent}
            match: ["{log.name}"]
            action: truncate
            rotate: 1000
    """))
    return conf


def run_case(logdir: Path, workdir: Path, writer: str, cutter: str, seconds: float, interval: float) -> Result:
    for p in list(logdir.iterdir()):
        p.unlink()
    log = logdir / "app.log"
    stop = workdir / "stop"
    stop.unlink(missing_ok=True)
    (workdir / "logrotate.state").unlink(missing_ok=True)
    shutil.rmtree(workdir / "janitor-state", ignore_errors=True)
    options = CutOptions(rotate=1000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lr_conf = logrotate_config(workdir, log)
    jn_conf = janitor_config(workdir, log)
    errors: list[str] = []
    durations: list[float] = []
    methods: set[str] = set()

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(stop), str(WRITERS[writer])],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    start = time.monotonic()
    next_cut = start + interval
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if now < next_cut:
            time.sleep(next_cut - now)
        next_cut += interval
        t0 = time.perf_counter()
        if cutter == "janitor":
            try:
                result = cut_log(log, options)
                methods.add(result.method)
            except Exception as exc:  # noqa: BLE001 - a benchmark records, never stops
                errors.append(f"{type(exc).__name__}: {exc}")
        elif cutter == "janitor-cli":
            done = subprocess.run([sys.executable, "-m", "janitor", "run", "-c", str(jn_conf), "--log-format", "json"],
                                  capture_output=True, text=True, env=env)
            for line in done.stderr.splitlines():
                if '"log_truncated"' in line:
                    methods.add(json.loads(line)["method"])
            if done.returncode:
                errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        else:
            done = subprocess.run(["logrotate", "-f", "-s", str(workdir / "logrotate.state"), str(lr_conf)],
                                  capture_output=True, text=True)
            methods.add("copytruncate")
            if done.returncode:
                errors.append(done.stderr.strip()[:300])
        durations.append(time.perf_counter() - t0)
        next_cut = max(next_cut, time.monotonic())  # a slow cutter just cuts less often
    stop.touch()
    out, _ = proc.communicate(timeout=60)
    written, elapsed = int(out.split()[0]), float(out.split()[1])

    stream = b"".join(p.read_bytes() for p in copies_oldest_first(log)) + log.read_bytes()
    lost, dup, disorder, nul, garbled = account(stream, written)
    cuts = len(durations)
    durations.sort()
    return Result(
        filesystem=str(logdir), fstype=mount_fstype(os.stat(logdir).st_dev) or "?", writer=writer, cutter=cutter,
        method="/".join(sorted(methods)) or "-", seconds=round(elapsed, 2), cuts=cuts,
        lines_written=written, lines_per_second=round(written / elapsed),
        lines_lost=lost, lines_duplicated=dup, lines_out_of_order=disorder, nul_bytes=nul,
        garbled_lines=garbled, lost_per_cut=round(lost / cuts, 2) if cuts else 0.0,
        duplicated_per_cut=round(dup / cuts, 2) if cuts else 0.0, nul_per_cut=round(nul / cuts, 2) if cuts else 0.0,
        cut_ms_median=round(1000 * durations[cuts // 2], 2) if cuts else 0.0,
        cut_ms_max=round(1000 * durations[-1], 2) if cuts else 0.0, errors=errors[:5],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--cutters", default="janitor,janitor-cli,logrotate")
    parser.add_argument("--writers", default=",".join(WRITERS))
    parser.add_argument("--filesystems", default="checkout,tmpfs")
    parser.add_argument("--tmpfs-size", default="1G")
    parser.add_argument("--out", default=str(HERE / "results" / "truncate_vs_logrotate.json"))
    args = parser.parse_args()
    if shutil.which("logrotate") is None and "logrotate" in args.cutters:
        print("logrotate is not installed: apt-get install -y logrotate", file=sys.stderr)
        return 2

    results: list[Result] = []
    base = Path(tempfile.mkdtemp(prefix="bench-truncate-", dir=HERE))
    mounted: Path | None = None
    try:
        places: dict[str, Path] = {}
        if "checkout" in args.filesystems:
            places["checkout"] = base / "checkout"
            places["checkout"].mkdir()
        if "tmpfs" in args.filesystems:
            mounted = base / "tmpfs"
            mounted.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_size}", "tmpfs", str(mounted)], check=True)
            places["tmpfs"] = mounted
        for where, top in places.items():
            logdir = top / "logs"  # logrotate refuses a world-writable parent (tmpfs root)
            logdir.mkdir(mode=0o755)
            logdir.chmod(0o755)
            work = top / "work"
            work.mkdir()
            probe = logdir / "probe"
            probe.write_bytes(b"")
            print(f"# {where}: {logdir} on {mount_fstype(os.stat(logdir).st_dev) or '?'}, janitor method: {plan_method(probe, CutOptions())}",
                  flush=True)
            probe.unlink()
            for writer in args.writers.split(","):
                for cutter in args.cutters.split(","):
                    r = run_case(logdir, work, writer, cutter, args.seconds, args.interval)
                    results.append(r)
                    print(f"{where:8} {writer:12} {cutter:12} {r.method:15} cuts={r.cuts:3} "
                          f"written={r.lines_written:9} lost={r.lines_lost:7} dup={r.lines_duplicated} "
                          f"nul={r.nul_bytes} lost/cut={r.lost_per_cut}"
                          + (f" errors={r.errors[:1]}" if r.errors else ""), flush=True)
    finally:
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=False)
        shutil.rmtree(base, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "logrotate": subprocess.run(["logrotate", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
                 if shutil.which("logrotate") else None},
        "seconds": args.seconds, "interval": args.interval,
        "results": [asdict(r) for r in results],
    }, indent=2) + "\n")
    print()
    print(render_table(results))
    print(f"\nwritten to {out}")
    return 0


def render_table(results: list[Result]) -> str:
    head = ("fs", "writer", "cutter", "method", "cuts", "lines written", "lost", "dup", "NUL",
            "lost/cut", "dup/cut", "NUL/cut", "cut ms p50", "cut ms max")
    rows = [head] + [
        (r.fstype, r.writer, r.cutter, r.method, str(r.cuts), str(r.lines_written), str(r.lines_lost),
         str(r.lines_duplicated), str(r.nul_bytes), f"{r.lost_per_cut:g}", f"{r.duplicated_per_cut:g}",
         f"{r.nul_per_cut:g}", f"{r.cut_ms_median:g}", f"{r.cut_ms_max:g}")
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
