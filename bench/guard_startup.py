#!/usr/bin/env python3
"""Benchmark: how long `janitor guard` takes to start, check and exit, against `python -c pass`.

Median wall time of RUNS runs each (hyperfine when installed, else a perf_counter loop), of

  python -c pass                                        the floor: the interpreter alone
  python -m janitor guard --path /tmp --max-used 99%    the fast path (no typer)
  the same through janitor.cli.main                     what typer would cost
  python -m janitor guard -c CFG                        thresholds from a policy file, as
                                                        guard's cache keeps them (every start
                                                        but the first after a change)
  the same with JANITOR_GUARD_CACHE=off                 the validating loader (pydantic, yaml)

    python bench/guard_startup.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_hyperfine(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", out.name, "--style", "none"]
        subprocess.run(argv + [shlex.join(c) for c in commands.values()], check=True, stdout=subprocess.DEVNULL)
        results = json.loads(Path(out.name).read_text())["results"]
    return {name: r["median"] for name, r in zip(commands, results, strict=True)}


def median_loop(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    out = {}
    for name, argv in commands.items():
        for _ in range(3):
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = str(REPO)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["JANITOR_GUARD_CACHE"] = f"{tmp}/guard-cache"  # not the machine's /run/janitor-guard
        cfg = Path(tmp) / "janitor.yaml"
        (Path(tmp) / "data").mkdir()  # a policy path must not hold janitor's state_dir
        cfg.write_text(f"version: 1\nsettings:\n  state_dir: {tmp}/state\n  guard_max_used: 99%\n"
                       f"policies:\n  - name: t\n    path: {tmp}/data\n    action: delete\n    match: ['*.tmp']\n")
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "janitor guard --path --max-used": [py, "-m", "janitor", "guard", "--path", "/tmp", "--max-used", "99%"],
            "same, through typer": [py, "-c", "from janitor.cli import main; main()", "guard", "--path", "/tmp",
                                    "--max-used", "99%"],
            # the policy files validated before, read from guard's cache (every start but the first)
            "janitor guard -c CFG": [py, "-m", "janitor", "guard", "-c", str(cfg)],
            # the first start after the files changed: the validating loader (pydantic, yaml)
            "same, no cache (first start)": ["env", "JANITOR_GUARD_CACHE=off", py, "-m", "janitor", "guard", "-c",
                                             str(cfg)],
        }
        for argv in commands.values():
            subprocess.run(argv, check=True)  # every command must succeed (exit 0)
        tool = "hyperfine" if shutil.which("hyperfine") else "perf_counter loop"
        medians = (median_hyperfine if tool == "hyperfine" else median_loop)(commands, args.runs)
    base = medians["python -c pass"]
    print(f"median of {args.runs} runs ({tool}):")
    for name, value in medians.items():
        print(f"  {name:34s} {value * 1000:7.1f} ms  {value / base:5.2f}x  (+{(value - base) * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
