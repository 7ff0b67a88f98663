"""soft-delete: move each selected file into the trash, restorable with `janitor restore`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..config import Duration
from ..errors import JanitorError
from ..safepath import Expected
from ..trash import DirRecord, encode_dir_records, move_into_trash, purge_from_trash
from ..units import format_duration
from .base import DONE, Action, ActionOptions, Disposal, Done, register

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext
    from ..plan import PlannedAction


class SoftDeleteOptions(ActionOptions):
    """soft-delete's keys; also archive's and quota's for `then: soft-delete`."""

    trash_dir: str | None = None  # absolute, checked by config (the policy's own trash)
    retain: Duration | None = None  # purge from the trash after this long


@register
class SoftDeleteAction(Action):
    name = "soft-delete"
    Options = SoftDeleteOptions
    done_event = "file_soft_deleted"

    @classmethod
    def disposal(cls, policy: Policy) -> Disposal | None:
        return "trash"

    def journal_fields(self, item: PlannedAction, ctx: ExecContext) -> dict[str, Any]:
        slot = ctx.trash_slot(item)
        fields: dict[str, Any] = {"trash_path": ctx.trash.destination(slot, item.policy, item.fact.relpath)}
        records = _parent_records(item.fact.relpath, ctx)
        if records:
            fields["detail"] = encode_dir_records(records)
        return fields

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> Done:
        fact = item.fact
        move_into_trash(dir_fd, name, fields["trash_path"], ctx.trash_slot(item), fact.size,
                        Expected(fact.dev, fact.ino, fact.uid))
        return DONE

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        purge_expired(policy, ctx)

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        from ..trash import reconcile_trash_move

        return reconcile_trash_move(entry)


def _parent_records(relpath: str, ctx: ExecContext) -> list[DirRecord] | None:
    """Owner and mode of each directory between the policy path and the file, so that a
    restore can recreate the ones removed meanwhile as they were. None when unknown."""
    if ctx.dirs is None or "/" not in relpath:
        return None
    parts = relpath.split("/")[:-1]
    records = []
    try:
        for depth in range(1, len(parts) + 1):
            fd, _ = ctx.dirs.parent_of("/".join(parts[:depth]) + "/-")
            st = os.fstat(fd)
            records.append(DirRecord(st.st_uid, st.st_gid, st.st_mode & 0o7777))
    except OSError:
        return None
    return records


def purge_expired(policy: Policy, ctx: ExecContext) -> int:
    """Purge this policy's trash entries older than its `retain`; returns how many."""
    retain = SoftDeleteOptions.of(policy).retain
    if retain is None:
        return 0
    expired = ctx.catalog.expired_in_trash(policy.name, retain)
    purged = []
    for entry in expired:
        try:
            purge_from_trash(entry)
        except (OSError, JanitorError) as exc:
            # e.g. a trash that is no longer janitor's: that entry stays, the policy goes on
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            ctx.events.emit("trash_purge_failed", "error", policy=policy.name, path=entry.path, message=reason)
            continue
        purged.append(entry)
        ctx.events.emit("trash_purged", policy=policy.name, action=entry.action, path=entry.path, bytes=entry.size,
                        reason="retain", run=entry.run_id,
                        message=f"in the trash longer than retain {format_duration(retain)}")
    ctx.catalog.mark((e.id for e in purged), "purged_at")
    return len(purged)
