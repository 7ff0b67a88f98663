"""Hundreds of SIGKILLs: the fault-injection harness of tests/test_crash.py at scale.

    sudo PYTHONPATH=. .venv/bin/python bench/crash_harness.py --kills 300 [--seed N] [--workdir DIR]

Prints one line per kill and a summary (per kill mode: runs killed, killed in the middle of
an action, reconciled rows, iterations with any lost, duplicated or misplaced file), and
writes bench/results/crash_harness.json. Root and strace are needed (a tmpfs, and kills on
a chosen syscall).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from crashharness import run_harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--files", type=int, default=24, help="files per policy")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the harness's tmpfs is unmounted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="janitor-crash-") as tmp:
        work = args.workdir or Path(tmp) / "crash"
        results, harness = run_harness(work, seed=args.seed, kills=args.kills, files_per_policy=args.files,
                                       progress=True)
    elapsed = time.monotonic() - started
    by_mode: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        m = by_mode[r.mode]
        m["iterations"] += 1
        m["killed"] += r.killed
        m["killed_mid_action"] += bool(r.killed and r.planned_at_kill)
        m["rows_reconciled"] += r.reconciled
        m["iterations_with_loss_or_error"] += bool(r.errors)
    summary = {
        "seed": args.seed, "iterations": len(results), "elapsed_s": round(elapsed, 1),
        "typical_run_s": round(harness.typical_s, 3), "syscall_counts": harness.syscall_counts,
        "files_per_iteration": len(harness.originals), "by_mode": {k: dict(v) for k, v in by_mode.items()},
        "failures": [{"index": r.index, "mode": r.mode, "kill": r.kill_after, "errors": r.errors}
                     for r in results if r.errors],
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "crash_harness.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
