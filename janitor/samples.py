"""Storage trend samples: filesystem usage and what lies under each policy path, over time.

One row per policy path per sample, in `<state_dir>/samples.db` (its own small SQLite file,
0600 in the 0700 state directory, so it never contends with the catalog's writers). A sample
is recorded after every run and by `janitor serve` at its interval; rows older than the
settings' `history_retain` (default 90 days) are pruned as new ones
are written. The dashboard draws them, and `forecast()` turns the recent ones into "passes
its threshold in 2.1 days, full in 4.2 days".
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config
    from .execute import RunResult

DEFAULT_RETAIN = 30 * 86400.0
FORECAST_WINDOW = 24 * 3600.0  # growth rate from the samples of the last day
LOG_SUFFIXES = (".log", ".out", ".err")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    ts REAL NOT NULL,
    path BLOB NOT NULL,
    fs_total INTEGER NOT NULL,
    fs_used INTEGER NOT NULL,
    fs_free INTEGER NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    log_bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_path_ts ON samples(path, ts);
CREATE TABLE IF NOT EXISTS run_outcomes (
    run_id TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    policy TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    skipped TEXT NOT NULL,
    errors TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_outcomes_run ON run_outcomes(run_id);
"""


@dataclass(frozen=True)
class Sample:
    ts: float
    path: str
    fs_total: int
    fs_used: int
    fs_free: int
    files: int
    bytes: int
    log_bytes: int

    @property
    def used_pct(self) -> float:
        denominator = self.fs_used + self.fs_free
        return 100.0 * self.fs_used / denominator if denominator else 0.0


@dataclass(frozen=True)
class Forecast:
    """At the recent growth rate: seconds until the threshold and until full (None: not growing)."""

    path: str
    growth_bytes_per_second: float | None
    threshold_in_seconds: float | None
    full_in_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "growth_bytes_per_second": self.growth_bytes_per_second,
                "threshold_in_seconds": self.threshold_in_seconds, "full_in_seconds": self.full_in_seconds}


def is_log_name(name: str) -> bool:
    """Logs as the dashboard counts them: *.log (also rotated *.log.1, *.log.gz), *.out, *.err."""
    return name.endswith(LOG_SUFFIXES) or ".log." in name


def retain_seconds(config: Config) -> float:
    value = config.settings.history_retain
    return float(value) if value else DEFAULT_RETAIN


def _open(state_dir: str) -> sqlite3.Connection:
    from .state import ensure_private_dir

    ensure_private_dir(state_dir)
    path = os.path.join(state_dir, "samples.db")
    # created 0600 here, in a directory only we can write: the name cannot be planted
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # a trend sample lost to a power cut costs nothing
    db.executescript(_SCHEMA)
    return db


def measure(config: Config, now: float | None = None, skip: frozenset[str] = frozenset()) -> list[Sample]:
    """One sample per distinct policy path (enabled policies, not in `skip`): statvfs plus a
    read-only walk."""
    from .disk import disk_usage
    from .planner import janitor_dirs
    from .scan import walk_files
    from .walksplit import RootPick, walk_in_two

    now = time.time() if now is None else now
    if {p.path for p in config.select(None)} <= skip:
        return []
    janitor_own = janitor_dirs(config)
    out: list[Sample] = []
    seen: set[str] = set(skip)
    for policy in config.select(None):
        if policy.path in seen:
            continue
        seen.add(policy.path)
        try:
            usage = disk_usage(policy.path)
        except OSError:
            continue
        one_filesystem = config.effective_one_filesystem(policy)

        def walk(pick: RootPick | None, walked: set[tuple[int, int]], path: str = policy.path,
                 one_filesystem: bool = one_filesystem) -> tuple[int, int, int]:
            files = nbytes = log_bytes = 0
            try:
                for rel, _kind, st in walk_files(path, one_filesystem=one_filesystem, skip_inodes=janitor_own,
                                                 root_entries=pick, walked_dirs=walked):
                    if st is None:
                        continue
                    files += 1
                    nbytes += st.st_size
                    if is_log_name(rel.rsplit("/", 1)[-1]):
                        log_bytes += st.st_size
            except OSError:
                pass
            return files, nbytes, log_bytes

        both = None
        try:
            st = os.stat(policy.path, follow_symlinks=False)
            if config.settings.acting_process:  # false: one process, this walk too
                both = walk_in_two(policy.path, (st.st_dev, st.st_ino), walk,
                                   lambda counts, pipe: pickle.dump(counts, pipe), lambda _, pipe: pickle.load(pipe))
        except OSError:
            pass
        files, nbytes, log_bytes = walk(None, set()) if both is None else (
            both[0][0] + both[1][0], both[0][1] + both[1][1], both[0][2] + both[1][2])
        out.append(Sample(now, policy.path, usage.used + usage.free, usage.used, usage.free, files, nbytes, log_bytes))
    return out


def record(config: Config, samples: Iterable[Sample] | None = None, *, min_interval: float = 0.0) -> list[Sample]:
    """Store samples (measured now unless given) and prune those older than the retention.

    `min_interval`: paths sampled less than this many seconds ago are not walked again (runs
    in quick succession, e.g. a `guard --clean` per service start, cost one walk a minute).
    """
    db = _open(config.settings.state_dir)
    try:
        if samples is None:
            recent: frozenset[str] = frozenset()
            if min_interval > 0:
                rows = db.execute("SELECT DISTINCT path FROM samples WHERE ts > ?", (time.time() - min_interval,))
                recent = frozenset(os.fsdecode(r[0]) for r in rows)
            taken = measure(config, skip=recent)
        else:
            taken = list(samples)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?)",
                       [(s.ts, os.fsencode(s.path), s.fs_total, s.fs_used, s.fs_free, s.files, s.bytes, s.log_bytes)
                        for s in taken])
        db.execute("DELETE FROM samples WHERE ts < ?", (time.time() - retain_seconds(config),))
        db.execute("COMMIT")
    finally:
        db.close()
    return taken


def load(config: Config, path: str, since: float | None = None, limit: int = 2000) -> list[Sample]:
    """A path's samples, oldest first (at most `limit`, evenly thinned)."""
    if not os.path.exists(os.path.join(config.settings.state_dir, "samples.db")):
        return []
    db = _open(config.settings.state_dir)
    try:
        rows = db.execute("SELECT * FROM samples WHERE path=? AND ts>=? ORDER BY ts",
                          (os.fsencode(path), since or 0.0)).fetchall()
    finally:
        db.close()
    if len(rows) > limit:
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit - 1)] + [rows[-1]]
    return [Sample(r[0], os.fsdecode(r[1]), *r[2:]) for r in rows]


def forecast(samples: list[Sample], threshold_pct: float | None, now: float | None = None) -> Forecast | None:
    """Least-squares growth of used bytes over the last FORECAST_WINDOW of samples."""
    if not samples:
        return None
    now = time.time() if now is None else now
    last = samples[-1]
    recent = [s for s in samples if s.ts >= last.ts - FORECAST_WINDOW]
    if len(recent) < 2 or recent[-1].ts - recent[0].ts < 1.0:
        return Forecast(last.path, None, None, None)
    n = len(recent)
    mean_t = sum(s.ts for s in recent) / n
    mean_u = sum(s.fs_used for s in recent) / n
    var = sum((s.ts - mean_t) ** 2 for s in recent)
    slope = sum((s.ts - mean_t) * (s.fs_used - mean_u) for s in recent) / var if var else 0.0
    if slope <= 0:
        return Forecast(last.path, slope, None, None)
    capacity = last.fs_used + last.fs_free
    elapsed = max(0.0, now - last.ts)
    full_in = max(0.0, (capacity - last.fs_used) / slope - elapsed)
    threshold_in = None
    if threshold_pct is not None:
        threshold_in = max(0.0, (threshold_pct / 100.0 * capacity - last.fs_used) / slope - elapsed)
    return Forecast(last.path, slope, threshold_in, full_in)


def record_run(config: Config, result: RunResult, started: float, finished: float) -> None:
    """Each policy's outcome of a run (status, counts, skip reasons, error codes): what the
    runs table does not keep and `janitor serve`'s /metrics needs to say what the textfile says."""
    import json

    db = _open(config.settings.state_dir)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO run_outcomes VALUES (?,?,?,?,?,?,?,?,?,?,?)", [
            (result.run_id, started, finished, p.name, p.action, p.status, p.files, p.bytes, p.failed,
             json.dumps(dict(p.skipped)), json.dumps(dict(p.errors))) for p in result.policies])
        db.execute("DELETE FROM run_outcomes WHERE finished < ?", (time.time() - retain_seconds(config),))
        db.execute("COMMIT")
    finally:
        db.close()


def load_run(config: Config, run_id: str) -> tuple[RunResult, float, float] | None:
    """A run as `record_run` stored it, or None."""
    import json
    from collections import Counter

    from .execute import PolicyOutcome, RunResult

    if not os.path.exists(os.path.join(config.settings.state_dir, "samples.db")):
        return None
    db = _open(config.settings.state_dir)
    try:
        rows = db.execute("SELECT * FROM run_outcomes WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
    finally:
        db.close()
    if not rows:
        return None
    result = RunResult(run_id)
    for _, _, _, policy, action, status, files, nbytes, failed, skipped, errors in rows:
        result.policies.append(PolicyOutcome(policy, action, status, files, nbytes, failed,
                                             Counter(json.loads(skipped)), Counter(json.loads(errors))))
    return result, rows[0][1], rows[0][2]
