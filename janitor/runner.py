"""One run: take the lock, settle what an earlier killed run left, plan, execute, record."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .actions.base import registered_action
from .catalog import Catalog, open_catalog
from .config import Config, Policy
from .errors import JanitorError
from .events import EventLog
from .execute import RunResult, execute_plan
from .plan import Plan
from .planner import build_plan
from .reconcile import reconcile_by_presence
from .runstop import RunInterrupted, acting, run_stop
from .state import RunLock, ensure_private_dir


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a little randomness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@contextmanager
def locked_state(
    config: Config, *, lock_wait: float = 0.0, on_lock_wait: Callable[[str], None] | None = None
) -> Iterator[Catalog]:
    """Hold the run lock and an open catalog for the duration (waiting up to lock_wait s)."""
    with _locked(config, lock_wait=lock_wait, on_lock_wait=on_lock_wait) as (_, catalog):
        yield catalog


@contextmanager
def _locked(
    config: Config, *, lock_wait: float = 0.0, on_lock_wait: Callable[[str], None] | None = None
) -> Iterator[tuple[RunLock, Catalog]]:
    state_dir = config.settings.state_dir
    ensure_private_dir(state_dir)
    with RunLock(state_dir, lock_wait, on_lock_wait) as lock:
        catalog = open_catalog(state_dir)
        try:
            yield lock, catalog
        finally:
            catalog.close()


@dataclass
class RunReport:
    plan: Plan
    result: RunResult
    reconciled: int


def run_policies(
    config: Config,
    policies: tuple[Policy, ...],
    events: EventLog,
    *,
    force: bool = False,
    command: str = "run",
    metrics_file: str | None = None,
    lock_wait: float = 0.0,
    on_lock_wait: Callable[[str], None] | None = None,
    saved_plan: Plan | None = None,
) -> RunReport:
    """The whole `janitor run`: lock, reconcile, plan, execute, record the run (and its metrics).

    With `saved_plan` (engine: `run --plan FILE`), that reviewed plan is executed instead of a
    new one; each file is re-checked before acting as always.
    """
    run_id = new_run_id()
    wall_started = time.time()
    events.bind(run_id)
    with _locked(config, lock_wait=lock_wait, on_lock_wait=on_lock_wait) as (lock, catalog):
        catalog.start_run(run_id, command)
        events.emit("run_started", policies=[p.name for p in policies], pid=os.getpid())
        started = time.monotonic()
        recorded = False
        # signals are handled from here on; before, SIGTERM kills (the next run reconciles)
        with run_stop(lock.verify) as stop:
            try:
                with acting(stop):  # reconcile settles files too: a signal waits for it
                    reconciled = reconcile(catalog, run_id, events, config)
                if stop.reason() is not None:
                    raise stop.error("only an earlier run's journal was settled")
                plan = build_plan(config, policies) if saved_plan is None else saved_plan
                if not plan.procfs_complete:
                    events.emit("open_files_incomplete", "warning",
                                message="some processes could not be inspected (not root?): files they hold open "
                                "for writing may not be detected")
                # From here to the end a signal only sets the flag: the executor asks
                # stop_reason() before each file, and the run's record is always written.
                stop.acting = True
                result = execute_plan(plan, config, catalog, run_id, events, force=force)
                if stop.reason() is not None:
                    catalog.finish_run(run_id, "interrupted", result.files, result.bytes, result.failed,
                                       _summary(result))
                    recorded = True
                    interrupted = stop.error(f"{result.files} file{'s' if result.files != 1 else ''} done")
                    events.emit("run_interrupted", message=str(interrupted), code=interrupted.code, files=result.files,
                                bytes=result.bytes, errors=result.failed,
                                duration_seconds=round(time.monotonic() - started, 3))
                    raise interrupted
            except RunInterrupted as exc:
                if not recorded:  # stopped before the executor ran (while planning)
                    catalog.finish_run(run_id, "interrupted", 0, 0, 0, str(exc))
                    events.emit("run_interrupted", message=str(exc), code=exc.code, files=0, bytes=0, errors=0,
                                duration_seconds=round(time.monotonic() - started, 3))
                raise
            except BaseException as exc:
                catalog.finish_run(run_id, "failed", 0, 0, 1, f"{type(exc).__name__}: {exc}")
                events.emit("run_failed", "error", message=str(exc), code=getattr(exc, "code", "E_INTERNAL"))
                raise
            status = "ok" if result.exit_code == 0 else "partial"
            catalog.finish_run(run_id, status, result.files, result.bytes, result.failed, _summary(result))
            _prune_catalog(catalog, config, events)
            events.emit("run_finished", status=status, files=result.files, bytes=result.bytes,
                        errors=result.failed, duration_seconds=round(time.monotonic() - started, 3))
            metrics_path = metrics_file or config.settings.metrics_file
            if metrics_path:
                from .metrics import write_run_metrics

                try:
                    write_run_metrics(metrics_path, config, result, catalog, wall_started, time.time())
                except OSError as exc:
                    events.emit("metrics_failed", "warning", path=metrics_path, code="E_IO",
                                message=f"cannot write metrics: {exc.strerror}")
            _record_samples(config, events, result, wall_started)
    return RunReport(plan, result, reconciled)


def _record_samples(config: Config, events: EventLog, result: RunResult, started: float) -> None:
    """A storage trend sample after every run, and the run's outcome per policy
    (janitor/samples.py; `janitor serve`'s dashboard and /metrics read them)."""
    import sqlite3

    from .samples import record, record_run

    try:
        record_run(config, result, started, time.time())
        record(config, min_interval=60.0)
    except (OSError, sqlite3.Error) as exc:
        events.emit("samples_failed", "warning", code="E_IO", message=f"cannot record a trend sample: {exc}")
def _prune_catalog(catalog: Catalog, config: Config, events: EventLog) -> None:
    """engine: the catalog stays bounded (settings.history_retain). The run's own work is done
    and recorded by now: a failure here is a warning, not a failed run."""
    from .errors import CatalogError

    try:
        gone = catalog.prune(config.settings.history_retain)
    except CatalogError as exc:
        events.emit("catalog_prune_failed", "warning", code=exc.code, message=str(exc))
        return
    if gone:
        events.emit("catalog_pruned", rows=gone, catalog_bytes=catalog.size_bytes())


def _summary(result: RunResult) -> str:
    return "; ".join(f"{p.name}: {p.status} {p.files} files {p.bytes} bytes" for p in result.policies)


def reconcile(catalog: Catalog, run_id: str, events: EventLog, config: Config | None = None) -> int:
    """Settle journal rows left `planned` by a run that was killed before recording outcomes.

    The filesystem says what happened: for each row, where the file is now decides whether
    the change happened (`done`) or not (`aborted`); half-made copies are removed so every
    file is in exactly one place.
    """
    entries = catalog.unfinished(run_id)
    outcomes: list[tuple[int, str, str | None, dict[str, Any]]] = []
    for entry in entries:
        action_cls = registered_action(entry.action)
        try:
            state, note = (action_cls.reconcile_with(entry, config) if action_cls else reconcile_by_presence(entry))
        except Exception as exc:  # noqa: BLE001 - one row must never stop reconcile (finding 5)
            # one row that cannot be settled (a hostile name, a path too long, a target that
            # rejects the key with a ValueError) is recorded as failed with the reason: it must
            # not fail this run and every later one. BaseException (Ctrl-C) still stops the run.
            state, note = "failed", f"could not be settled: {_reason(exc)}"
        outcomes.append((entry.id, state, note, {}))
        events.emit("journal_reconciled", policy=entry.policy, action=entry.action, path=entry.path,
                    state=state, reason=note, previous_run=entry.run_id)
    catalog.set_outcomes(outcomes)
    return len(entries)


def _reason(exc: Exception) -> str:
    """One line for a row reconcile could not settle: no traceback, no raw control bytes."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    elif isinstance(exc, JanitorError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:300]
