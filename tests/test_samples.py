"""Trend samples (samples.db): recorded by runs, pruned by retention, turned into forecasts."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import DAY, Tree

from janitor.config import load_config
from janitor.samples import Sample, forecast, load, record, retain_seconds

POLICY = "version: 1\nsettings: {{state_dir: {state}, settle: 0s}}\npolicies:\n" \
         "  - {{name: v, path: {root}, action: delete, older_than: 7d}}\n"


def test_each_run_records_its_outcome_and_a_sample_at_most_once_a_minute(tree: Tree, write_config, cli,
                                                                          state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("a.mp4", 1000, age=30 * DAY)
    tree.file("b.log", 300, age=1 * DAY)
    cfg = write_config(POLICY, root=tree.root)
    for _ in range(2):
        assert cli("run", "-c", cfg).returncode == 0
    db = sqlite3.connect(state_dir / "samples.db")
    samples = db.execute("SELECT files, bytes, log_bytes FROM samples").fetchall()
    outcomes = db.execute("SELECT policy, status, files, bytes FROM run_outcomes ORDER BY rowid").fetchall()
    assert samples == [(1, 300, 300)]  # after the first run (a.mp4 gone); the second was within a minute
    assert outcomes == [("v", "done", 1, 1000), ("v", "done", 0, 0)]
    assert (state_dir / "samples.db").stat().st_mode & 0o777 == 0o600


def test_old_samples_are_pruned(tree: Tree, write_config) -> None:  # type: ignore[no-untyped-def]
    config = load_config(write_config(POLICY, root=tree.root))
    assert retain_seconds(config) == config.settings.history_retain == 90 * DAY  # the documented default
    old = Sample(time.time() - 91 * DAY, str(tree.root), 100, 50, 50, 1, 1, 0)
    record(config, [old])
    assert load(config, str(tree.root)) == []  # older than history_retain: pruned at once
    fresh = Sample(time.time(), str(tree.root), 100, 50, 50, 1, 1, 0)
    record(config, [fresh])
    assert load(config, str(tree.root)) == [fresh]


@pytest.mark.parametrize(("used", "threshold", "threshold_in", "full_in"), [
    ([50, 60, 70], 80.0, 3600.0, 3 * 3600.0),      # +10 an hour from 70 of 100: 80 in 1 h, full in 3 h
    ([90, 80, 70], 80.0, None, None),              # shrinking: no forecast
    ([70, 85, 90], 80.0, 0.0, 3600.0),             # already over: 0, full in an hour (+10/h from 90... fit)
])
def test_forecast(used: list[int], threshold: float, threshold_in: float | None, full_in: float | None) -> None:
    t0 = 1_000_000.0
    samples = [Sample(t0 + i * 3600, "/p", 100, u, 100 - u, 0, 0, 0) for i, u in enumerate(used)]
    fc = forecast(samples, threshold, now=samples[-1].ts)
    assert fc is not None
    if full_in is None:
        assert fc.full_in_seconds is None and fc.threshold_in_seconds is None
    else:
        assert fc.threshold_in_seconds == pytest.approx(threshold_in, abs=1)
        assert fc.full_in_seconds == pytest.approx(full_in, rel=0.25)
