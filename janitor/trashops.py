"""Library side of `janitor restore` and `janitor trash list|purge`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .asowner import Credentials
from .catalog import Catalog, JournalEntry
from .errors import JanitorError, UsageError
from .events import EventLog
from .globs import path_matcher
from .trash import purge_from_trash, restore_from_trash

if TYPE_CHECKING:
    from .config import Config


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


def require_filter(patterns: list[str] | None, policies: list[str] | None, run_id: str | None, all_: bool,
                   *, verb: str = "act on", older_than: bool = False) -> None:
    """Refuse a command that names nothing; the message lists exactly the filters it accepts."""
    if not (patterns or policies or run_id or all_):
        accepted = "a path glob (e.g. '/srv/out/**/*.mp4'), --policy, --run, " + (
            "--older-than or --all" if older_than else "or --all")
        raise UsageError(f"say what to {verb}: {accepted}")


@dataclass
class TrashOpResult:
    done: list[JournalEntry] = field(default_factory=list)
    failed: list[tuple[JournalEntry, str]] = field(default_factory=list)


def latest_per_path(entries: list[JournalEntry]) -> list[JournalEntry]:
    """What a restore puts back: the newest trash entry per original path, sorted by path."""
    latest: dict[str, JournalEntry] = {}
    for entry in entries:
        if entry.path not in latest or entry.id > latest[entry.path].id:
            latest[entry.path] = entry
    return sorted(latest.values(), key=lambda e: e.path)


def su_for(config: Config | None, policy_name: str) -> Credentials | None:
    """The policy's `su:` as credentials (None when unset or the policy is gone from the
    configuration): restore uses it to create files in a directory that several accounts can
    write (janitor/asowner.py)."""
    if config is None:
        return None
    try:
        return config.policy(policy_name).su
    except (KeyError, JanitorError):
        return None


def restore_entries(catalog: Catalog, entries: list[JournalEntry], events: EventLog, *, force: bool = False,
                    config: Config | None = None) -> TrashOpResult:
    # newest trash entry per original path wins when the same path was trashed twice
    ordered = latest_per_path(entries)
    return put_back_each(catalog, ordered, events,
                         lambda entry: restore_from_trash(entry, force=force, su=su_for(config, entry.policy)))


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
        except (OSError, JanitorError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.failed.append((entry, reason))
            events.emit("trash_purge_failed", "error", policy=entry.policy, path=entry.path, message=reason)
            continue
        result.done.append(entry)
        events.emit("trash_purged", policy=entry.policy, action=entry.action, path=entry.path, bytes=entry.size,
                    reason="trash purge", run=entry.run_id)
    catalog.mark((e.id for e in result.done), "purged_at")
    return result
