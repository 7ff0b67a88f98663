"""Kill `janitor run` with SIGKILL at random points, run it again, and check nothing was lost.

The harness (tests/crashharness.py) kills at a seeded random moment of a measured run or,
with strace, on entering the k-th call of one changing syscall (rename, unlink, fsync,
fallocate, pwrite...), so kills land inside the work and not only in Python's start-up.
After each kill the next run must reconcile, finish the work, and leave every file in
exactly one place; `restore --all` must bring back every soft-deleted file byte-identical.

Bounded: JANITOR_CRASH_KILLS (default 40) kills or 80 s, whichever comes first; the seed is
JANITOR_CRASH_SEED (default 20261122). bench/crash_harness.py runs the same for hundreds.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from crashharness import run_harness

SEED = int(os.environ.get("JANITOR_CRASH_SEED", "20261122"))
KILLS = int(os.environ.get("JANITOR_CRASH_KILLS", "40"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the harness mounts a tmpfs (root only)")


def test_sigkill_at_random_points_loses_nothing(tmp_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("strace") is None:
        pytest.skip("strace is needed to kill on a syscall")
    results, harness = run_harness(tmp_path / "crash", seed=SEED, kills=KILLS, deadline_s=80, restore_every=2)
    failures = [f"iteration {r.index} ({r.mode} {r.kill_after}): {'; '.join(r.errors[:5])}"
                for r in results if r.errors]
    killed = [r for r in results if r.killed]
    mid_action = [r for r in killed if r.planned_at_kill]
    record_property("iterations", len(results))
    record_property("killed", len(killed))
    record_property("killed_mid_action", len(mid_action))
    record_property("modes", dict(Counter(r.mode for r in killed)))
    print(f"seed {SEED}: {len(results)} iterations, {len(killed)} runs killed "
          f"({dict(Counter(r.mode for r in killed))}), {len(mid_action)} with journal rows 'planned', "
          f"{sum(r.reconciled for r in results)} rows reconciled, {len(failures)} with any loss or error")
    assert not failures, f"seed {SEED}:\n" + "\n".join(failures)
    assert len(results) >= min(KILLS, 20), f"only {len(results)} iterations fit in the time bound"
    # the harness must really hit janitor at work, not only during start-up
    assert len(killed) >= len(results) // 2
    assert len(mid_action) >= 5, f"only {len(mid_action)} kills left journal rows 'planned'"
