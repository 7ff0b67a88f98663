"""Library side of `janitor restore` and `janitor trash list|purge`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .catalog import Catalog, JournalEntry
from .errors import JanitorError, UsageError
from .events import EventLog
from .globs import path_matcher
from .trash import purge_from_trash, restore_from_trash


def select_trash(
    catalog: Catalog,
    *,
    patterns: list[str] | None = None,
    policies: list[str] | None = None,
    run_id: str | None = None,
    older_than: float | None = None,
) -> list[JournalEntry]:
    """Entries still in the trash matching every given filter (patterns match the original path)."""
    cutoff = None if older_than is None else time.time() - older_than
    wanted = path_matcher(patterns or [])
    out = []
    for entry in catalog.in_trash():
        if policies and entry.policy not in policies:
            continue
        if run_id and entry.run_id != run_id:
            continue
        if cutoff is not None and (entry.done_at or entry.ts) > cutoff:
            continue
        if patterns and not wanted(entry.path):
            continue
        out.append(entry)
    return out


def require_filter(patterns: list[str] | None, policies: list[str] | None, run_id: str | None, all_: bool) -> None:
    if not (patterns or policies or run_id or all_):
        raise UsageError("say what to act on: a path glob, --policy, --run, or --all")


@dataclass
class TrashOpResult:
    done: list[JournalEntry] = field(default_factory=list)
    failed: list[tuple[JournalEntry, str]] = field(default_factory=list)


def restore_entries(catalog: Catalog, entries: list[JournalEntry], events: EventLog, *, force: bool = False) -> TrashOpResult:
    # newest trash entry per original path wins when the same path was trashed twice
    latest: dict[str, JournalEntry] = {}
    for entry in entries:
        if entry.path not in latest or entry.id > latest[entry.path].id:
            latest[entry.path] = entry
    ordered = sorted(latest.values(), key=lambda e: e.path)
    return put_back_each(catalog, ordered, events, lambda entry: restore_from_trash(entry, force=force))


def put_back_each(
    catalog: Catalog,
    entries: list[JournalEntry],
    events: EventLog,
    put_back: Callable[[JournalEntry], object],
) -> TrashOpResult:
    """Restore each entry with `put_back`; one failure does not stop the others.

    Shared by restores from the trash and from an archive: each success is marked restored
    in the catalog and logged, each failure collected with its reason.
    """
    result = TrashOpResult()
    for entry in entries:
        try:
            put_back(entry)
        except (OSError, JanitorError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.failed.append((entry, reason))
            events.emit("restore_failed", "error", policy=entry.policy, path=entry.path, message=reason)
            continue
        catalog.mark([entry.id], "restored_at")
        result.done.append(entry)
        events.emit("file_restored", policy=entry.policy, path=entry.path, bytes=entry.size,
                    run=entry.run_id, target=entry.target, object_key=entry.object_key)
    return result


def purge_entries(catalog: Catalog, entries: list[JournalEntry], events: EventLog) -> TrashOpResult:
    result = TrashOpResult()
    for entry in entries:
        try:
            purge_from_trash(entry)
        except OSError as exc:
            result.failed.append((entry, exc.strerror or str(exc)))
            continue
        result.done.append(entry)
        events.emit("trash_purged", policy=entry.policy, action=entry.action, path=entry.path, bytes=entry.size,
                    reason="trash purge", run=entry.run_id)
    catalog.mark((e.id for e in result.done), "purged_at")
    return result
