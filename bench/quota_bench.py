#!/usr/bin/env python3
"""Benchmark: a quota over 200,000 files, against the shell glue an operator would write.

Builds DIRS x FILES small files (sizes 1-3 KB, mtimes spread over 30 days, fixed seed),
sets a quota that must evict about half of them (oldest first), and times

  janitor run -c CFG        (walk, plan, /proc scan, journal, re-check, unlink)
  shell glue                find | awk (total) ; find -printf | sort -n | awk | xargs rm

on identical trees, each in a fresh process: wall time and the peak RSS of the largest
process (GNU time, bench.common.run_measured). The glue does no open-file check, no settle, no journal and
no re-check before unlinking, so it is a floor rather than an equal.

As root the tree goes on a 2 GiB tmpfs mounted for the run, so the figures measure the
tools rather than a shared disk's writeback (on a virtual disk, deleting 100,000 files
took anywhere from 20 to 80 s from one run to the next); `--dir` puts it on a disk instead.

    python bench/quota_bench.py [--dirs 400] [--files 500] [--dir /var/tmp/qbench]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_files, run_measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOW = time.time()


def build_tree(root: Path, dirs: int, files: int, seed: int = 7) -> tuple[int, int]:
    """The same tree every time for a seed; returns (files, bytes)."""
    rng = random.Random(seed)
    if root.exists():
        shutil.rmtree(root)
    total = 0
    blob = b"x" * 4096
    for d in range(dirs):
        sub = root / f"job{d:04d}" / "frames"
        sub.mkdir(parents=True)
        for f in range(files):
            size = rng.randint(1000, 3000)
            mtime = NOW - 3600 - rng.uniform(0, 30 * 86400)
            path = sub / f"frame{f:05d}.png"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, blob[:size])
            os.close(fd)
            os.utime(path, (mtime, mtime))
            total += size
    return dirs * files, total


def allocated_bytes(root: Path) -> int:
    """What the files below root occupy: st_blocks * 512, as quota counts."""
    return sum(os.stat(os.path.join(d, f)).st_blocks * 512 for d, _, names in os.walk(root) for f in names)


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """(wall seconds, peak RSS MiB of the largest process in the tree, result)."""
    m = run_measured(argv, capture=True, env=env)
    return m.wall_s, m.peak_rss_mb, subprocess.CompletedProcess(argv, m.returncode, m.stdout, m.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", type=int, default=400)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--dir", help="work directory (default: a new one under /var/tmp)")
    ap.add_argument("--evict", type=float, default=0.5, help="share of the bytes to evict (default 0.5)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="janitor-qbench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    mounted = False
    if not args.dir and os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2G", "tmpfs", str(work)]).returncode == 0
    print(f"work dir: {work} ({'tmpfs' if mounted else 'disk'})")
    data, state = work / "data", work / "state"
    try:
        t0 = time.perf_counter()
        n, total = build_tree(data, args.dirs, args.files)
        os.sync()
        print(f"tree: {n} files, {total / 2**20:.1f} MiB in {args.dirs} dirs (built in {time.perf_counter() - t0:.1f}s)")
        # a quota counts what files occupy (allocated blocks: 4 KiB for a 1-3 KB file on
        # tmpfs or ext4), and so does the glue below (find's %b): both evict the same files
        total = allocated_bytes(data)
        # evict down to (1 - evict) of the bytes: cap just under the total, watermark to match
        max_size = total - 1
        watermark = round(100.0 * (1 - args.evict) * total / max_size, 6)  # as written in the policy below
        goal = int(max_size * (watermark / 100.0))  # as janitor computes its low watermark
        cfg = work / "janitor.yaml"
        cfg.write_text(
            f"version: 1\nsettings:\n  state_dir: {state}\n  settle: 0s\n  max_actions: 10000000\n"
            f"policies:\n  - name: frames\n    path: {data}\n    action: quota\n    max_size: {max_size}\n"
            f"    low_watermark: {watermark:.6f}%\n    evict: oldest\n"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        wall_j, rss_j, res = measure([sys.executable, "-m", "janitor", "run", "-c", str(cfg), "--json"], env)
        if res.returncode != 0:
            print(res.stderr.decode(errors="replace"), file=sys.stderr)
            return 1
        left_j = count_files(data)
        print(f"janitor run:  {wall_j:6.2f} s  peak RSS {rss_j:6.1f} MiB  evicted {n - left_j} files")

        shutil.rmtree(state)
        build_tree(data, args.dirs, args.files)
        os.sync()
        glue = (
            f"total=$(find {data} -type f -printf '%b\\n' | awk '{{s+=$1*512}} END {{printf \"%.0f\", s}}'); "
            f"find {data} -type f -printf '%T@ %b %p\\n' | sort -n "
            f"| awk -v total=\"$total\" -v goal={goal} '{{ if (total <= goal) exit; total -= $2*512; print $3 }}' "
            f"| xargs -d '\\n' -r rm -f"
        )
        wall_s, rss_s, res = measure(["bash", "-c", glue])
        if res.returncode != 0:
            print(res.stderr.decode(errors="replace"), file=sys.stderr)
            return 1
        left_s = count_files(data)
        print(f"shell glue:   {wall_s:6.2f} s  peak RSS {rss_s:6.1f} MiB  evicted {n - left_s} files")
        print(f"ratio janitor/glue: wall {wall_j / wall_s:.2f}x, peak RSS {rss_j / rss_s:.2f}x")
        if left_j != left_s:
            print(f"note: different results ({left_j} vs {left_s} files left)")
    finally:
        if mounted:
            subprocess.run(["umount", str(work)], check=False)
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
