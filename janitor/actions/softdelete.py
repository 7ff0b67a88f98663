"""soft-delete: move each selected file into the trash, restorable with `janitor restore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..trash import move_into_trash, purge_from_trash
from ..units import format_duration
from .base import Action

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext
    from ..plan import PlannedAction


class SoftDeleteAction(Action):
    name = "soft-delete"
    options = frozenset({"trash_dir", "retain"})
    done_event = "file_soft_deleted"

    def journal_fields(self, item: PlannedAction, ctx: ExecContext) -> dict[str, Any]:
        slot = ctx.trash_slot(item)
        return {"trash_path": ctx.trash.destination(slot, item.policy, item.fact.relpath)}

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> dict[str, Any]:
        move_into_trash(dir_fd, name, fields["trash_path"], ctx.trash_slot(item), item.fact.size)
        return {}

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        purge_expired(policy, ctx)

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        from ..runner import reconcile_trash_move

        return reconcile_trash_move(entry)


def purge_expired(policy: Policy, ctx: ExecContext) -> int:
    """Purge this policy's trash entries older than its `retain`; returns how many."""
    if policy.retain is None:
        return 0
    expired = ctx.catalog.expired_in_trash(policy.name, policy.retain)
    for entry in expired:
        purge_from_trash(entry)
        ctx.events.emit("trash_purged", policy=policy.name, action=entry.action, path=entry.path, bytes=entry.size,
                        reason="retain", run=entry.run_id,
                        message=f"in the trash longer than retain {format_duration(policy.retain)}")
    ctx.catalog.mark((e.id for e in expired), "purged_at")
    return len(expired)
