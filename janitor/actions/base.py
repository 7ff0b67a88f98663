"""The action interface: what every action (delete, soft-delete, archive, truncate, quota) provides.

An action declares the policy keys it accepts and validates them, chooses among the
eligible files when planning (most take them all), and applies itself to one file whose
parent directory is already open, so every change is made relative to a verified
directory descriptor. The executor does the rest: re-checks, journal, batching, events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext, PolicyOutcome
    from ..plan import PlannedAction, PolicyPlan, Skip
    from ..planner import PlanContext
    from ..scan import FileFact

# Keys that only some actions accept; each action lists those it takes in `options`.
ACTION_SPECIFIC_KEYS = frozenset(
    {
        "trash_dir", "retain", "target", "then",
        "rotate", "compress", "delay_compress", "keep_tail", "olddir", "mode", "reopen",
        "postrotate", "allow_non_append_writers",
        "max_size", "max_files", "evict", "low_watermark",
        "when_size_above", "block_guard",
    }
)  # fmt: skip


class Action:
    name: ClassVar[str]
    options: ClassVar[frozenset[str]] = frozenset()
    # Files still being written are never acted on; truncate is the exception by design.
    skips_busy: ClassVar[bool] = True
    # Whether select() needs every glob-matched file (quota counts them all), not only
    # those that pass the age and size filters.
    needs_all_matched: ClassVar[bool] = False
    # the event emitted for each file done (docs/events.md)
    done_event: ClassVar[str] = "file_processed"
    # True when `select` returns files in the order they should go (quota's eviction order):
    # when_disk_above then trims that order instead of re-sorting oldest first.
    orders_selection: ClassVar[bool] = False
    # True when `apply` is safe in worker threads, on different directories at once: it uses
    # only the directory descriptor and name it is given, and touches no shared state (delete).
    parallel_apply: ClassVar[bool] = False

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        """(key, message) for each problem with the policy's action-specific keys."""
        problems = []
        for key in sorted((policy.model_fields_set & ACTION_SPECIFIC_KEYS) - cls.options):
            owners = [a.name for a in _registry().values() if key in a.options]
            problems.append((key, f"is not an option of action {cls.name!r} (it belongs to {', '.join(owners)})"))
        return problems

    def select(
        self, policy: Policy, matched: list[FileFact], eligible: list[FileFact], ctx: PlanContext
    ) -> Iterable[tuple[FileFact, str, dict[str, Any] | None] | Skip]:
        """Choose files to act on: (fact, reason, detail). Default: every eligible file.

        An action may also yield a `Skip` for an eligible file it must leave alone (e.g.
        truncate and a writer without O_APPEND); the plan lists it with its reason.
        """
        for fact in eligible:
            yield fact, ctx.reason_for(policy, fact), None

    def journal_fields(self, item: PlannedAction, ctx: ExecContext) -> dict[str, Any]:
        """Extra journal columns known before acting (e.g. the trash location)."""
        return {}

    def prepare_batch(self, items: list[PlannedAction], fields: list[dict[str, Any]], ctx: ExecContext) -> None:
        """Called once per batch after the intents are journaled and before any `apply`.

        Actions with slow, independent work (archive uploads) do it here concurrently and
        keep the results for `apply`, which then only verifies and finishes each file.
        """

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> dict[str, Any]:
        """Do it. Return extra journal columns for the outcome; raise to fail this file."""
        raise NotImplementedError

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        """Housekeeping before a policy's items run (e.g. purging expired trash)."""

    def before_actions(self, items: list[PlannedAction], ctx: ExecContext) -> None:
        """Called once, only when the policy has files to act on, before anything is journaled.

        Raise a JanitorError to fail the whole policy without touching a file (e.g. an
        archive target that cannot be reached).
        """

    def after_actions(self, ctx: ExecContext) -> None:
        """Called once after the last batch (also when one failed), if before_actions ran."""

    def after_run(self, pp: PolicyPlan, outcome: PolicyOutcome, ctx: ExecContext) -> None:
        """Called once after a policy's planned items ran (e.g. to report totals)."""

    def done_event_for(self, item: PlannedAction) -> str:
        """The event for one file done; actions whose effect differs per file override it."""
        return self.done_event

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        """Settle a journal row a killed run left `planned`: (state, note)."""
        from ..runner import reconcile_by_presence

        return reconcile_by_presence(entry)

    @classmethod
    def reconcile_with(cls, entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
        """`reconcile`, for actions that need the configuration (archive asks its target)."""
        return cls.reconcile(entry)


def _registry() -> dict[str, type[Action]]:
    from . import ACTIONS

    return ACTIONS
