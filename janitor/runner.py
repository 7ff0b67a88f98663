"""One run: take the lock, settle what an earlier killed run left, plan, execute, record."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .catalog import Catalog, JournalEntry, open_catalog
from .config import Config, Policy
from .events import EventLog
from .execute import RunResult, execute_plan
from .plan import Plan
from .planner import build_plan
from .state import RunLock, ensure_private_dir
from .trash import purge_from_trash


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a little randomness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@contextmanager
def locked_state(
    config: Config, *, lock_wait: float = 0.0, on_lock_wait: Callable[[str], None] | None = None
) -> Iterator[Catalog]:
    """Hold the run lock and an open catalog for the duration (waiting up to lock_wait s)."""
    state_dir = config.settings.state_dir
    ensure_private_dir(state_dir)
    with RunLock(state_dir, lock_wait, on_lock_wait):
        catalog = open_catalog(state_dir)
        try:
            yield catalog
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
    with locked_state(config, lock_wait=lock_wait, on_lock_wait=on_lock_wait) as catalog:
        catalog.start_run(run_id, command)
        events.emit("run_started", policies=",".join(p.name for p in policies), pid=os.getpid())
        started = time.monotonic()
        try:
            reconciled = reconcile(catalog, run_id, events, config)
            plan = build_plan(config, policies) if saved_plan is None else saved_plan
            if not plan.procfs_complete:
                events.emit("open_files_incomplete", "warning",
                            message="some processes could not be inspected (not root?): files they hold open "
                            "for writing may not be detected")
            result = execute_plan(plan, config, catalog, run_id, events, force=force)
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
    return RunReport(plan, result, reconciled)


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
    from .actions import ACTIONS

    entries = catalog.unfinished(run_id)
    outcomes: list[tuple[int, str, str | None, dict[str, Any]]] = []
    for entry in entries:
        action_cls = ACTIONS.get(entry.action)
        state, note = (action_cls.reconcile_with(entry, config) if action_cls else reconcile_by_presence(entry))
        outcomes.append((entry.id, state, note, {}))
        events.emit("journal_reconciled", policy=entry.policy, action=entry.action, path=entry.path,
                    state=state, reason=note, previous_run=entry.run_id)
    catalog.set_outcomes(outcomes)
    return len(entries)


def _same_file(path: str, entry: JournalEntry) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (entry.dev, entry.ino)


def reconcile_by_presence(entry: JournalEntry) -> tuple[str, str | None]:
    """For actions whose only effect is the file going away (delete)."""
    if _same_file(entry.path, entry):
        return "aborted", "interrupted before acting; the file is still in place"
    return "done", "interrupted after acting; recorded now"


def reconcile_trash_move(entry: JournalEntry) -> tuple[str, str | None]:
    """For moves into the trash: rename (atomic) or verified copy then unlink."""
    trash = entry.trash_path
    if trash:
        partial = trash + ".janitor-partial"
        if os.path.lexists(partial):
            os.unlink(partial)
    original_there = _same_file(entry.path, entry) or (
        os.path.lexists(entry.path) and not (trash and os.path.lexists(trash))
    )
    in_trash = bool(trash and os.path.lexists(trash))
    if original_there and in_trash:
        # a verified copy was made but the original not yet unlinked: keep the original
        assert trash is not None
        purge_from_trash(entry)
        return "aborted", "interrupted between copy and unlink; the copy was removed, the file is in place"
    if in_trash:
        return "done", "interrupted after moving to the trash; recorded now"
    if original_there:
        return "aborted", "interrupted before acting; the file is still in place"
    return "failed", "neither the file nor its trash copy exists"
