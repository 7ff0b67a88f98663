"""quota: keep the files a policy matches under a size and/or count cap.

When the matching files are over `max_size` or `max_files`, evict (oldest by `age_by`, or
largest first) until both totals are at or below `low_watermark` of their cap (default
90%), applying `then:` (delete, soft-delete or archive) to each evicted file.

Totals count what is really used: allocated blocks (st_blocks * 512, so a sparse file counts
what it occupies, not its apparent size) and each inode (dev, ino) once, however many of its
names the policy matches; `max_files` counts inodes. A file with several links is evicted
only when all of its links are names this policy matches and may evict (then all go
together); otherwise evicting names would free nothing and it is left alone. Such a file
(a link count above the names matched here) is not counted either: the quota counts only
what it could free, so a hard link to a big file elsewhere cannot push it over its cap.
Every matching file counts towards the totals, including files still being written and
files `keep_newest` protects; only eligible files (not busy, not protected, passing the
policy's age and size filters) are evicted. Selection is arithmetic over the compact
facts of one walk: one sort of the eligible files, then a running total.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ..config import Percent, Size, Then
from ..units import format_size
from .base import DISPOSAL_OF_THEN, Action, Disposal, Done, register
from .softdelete import SoftDeleteOptions

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext, PolicyOutcome
    from ..plan import PlannedAction, PolicyPlan
    from ..planner import PlanContext
    from ..scan import FileFact

THEN_CHOICES = ("delete", "soft-delete", "archive")
DEFAULT_LOW_WATERMARK = 90.0


def used_bytes(fact: FileFact) -> int:
    """Bytes a file really occupies: its allocated blocks (st_blocks is in 512-byte units)."""
    return fact.blocks * 512


class QuotaOptions(SoftDeleteOptions):
    """quota's keys (trash_dir and retain for `then: soft-delete`)."""

    max_size: Size | None = None
    max_files: int | None = Field(None, ge=0)
    evict: Literal["oldest", "largest"] | None = None
    low_watermark: Percent | None = None
    then: Then | None = None  # what becomes of an evicted file (THEN_CHOICES)
    target: str | None = None  # for then: archive


def _then(policy: Policy) -> str:
    return QuotaOptions.of(policy).then or "delete"


def _watermark(policy: Policy) -> float:
    low = QuotaOptions.of(policy).low_watermark
    return DEFAULT_LOW_WATERMARK if low is None else low


@register
class QuotaAction(Action):
    name = "quota"
    needs_all_matched = True
    Options = QuotaOptions
    done_event = "file_deleted"
    orders_selection: ClassVar[bool] = True

    def __init__(self) -> None:
        self._delegate: Action | None = None

    # ---- validation -----------------------------------------------------------------

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        from .base import ACTIONS

        problems = super().check_policy(policy, target_names)
        opts = QuotaOptions.of(policy)
        if opts.max_size is None and opts.max_files is None:
            problems.append(("action", "quota needs max_size, max_files or both"))
        then = _then(policy)
        if then not in THEN_CHOICES:
            problems.append(("then", f"{then!r} is not one of {', '.join(THEN_CHOICES)} for action quota "
                                     "(an evicted file must leave the directory)"))
        if then == "archive":
            if "archive" not in ACTIONS:
                problems.append(("then", "archive action not available in this janitor"))
            if opts.target is None:
                problems.append(("target", "then: archive needs a target"))
            elif opts.target not in target_names:
                known = ", ".join(sorted(target_names)) or "none defined"
                problems.append(("target", f"unknown target {opts.target!r} (targets: {known})"))
        elif opts.target is not None:
            problems.append(("target", "is only used with then: archive"))
        if then != "soft-delete":
            for key in ("trash_dir", "retain"):
                if getattr(opts, key) is not None:
                    problems.append((key, "is only used with then: soft-delete"))
        return problems

    @classmethod
    def disposal(cls, policy: Policy) -> Disposal | None:
        return DISPOSAL_OF_THEN.get(_then(policy))  # then: archive archives, then deletes

    # ---- planning -------------------------------------------------------------------

    def select(
        self, policy: Policy, matched: list[FileFact], eligible: list[FileFact], ctx: PlanContext
    ) -> Iterable[tuple[FileFact, str, dict[str, Any] | None]]:
        # What is really used: allocated blocks (a sparse file counts what it occupies, not
        # its apparent size), and each inode once however many names it has here.
        names: dict[tuple[int, int], int] = {}
        first: dict[tuple[int, int], FileFact] = {}
        for fact in matched:
            key = (fact.dev, fact.ino)
            seen = names.get(key, 0)
            if not seen:
                first[key] = fact
            names[key] = seen + 1
        # Only what this policy could ever free counts: an inode with a link outside the
        # matched names (another user's hard link, a name elsewhere on the filesystem) keeps
        # its blocks whatever is evicted here, so it is neither counted nor evicted. Else one
        # link to a big file elsewhere would push the quota over and evict everyone's files.
        size = 0
        files = 0
        outside_files = 0
        outside_bytes = 0
        for key, fact in first.items():
            if fact.nlink > names[key]:
                outside_files += 1
                outside_bytes += used_bytes(fact)
                continue
            size += used_bytes(fact)
            files += 1
        if outside_files:
            ctx.note(
                f"quota does not count {outside_files} file{'s' if outside_files != 1 else ''} "
                f"({format_size(outside_bytes)}) with hard links outside the policy: evicting "
                "them here would free nothing"
            )
        opts = QuotaOptions.of(policy)
        max_size, max_files = opts.max_size, opts.max_files
        over = (max_size is not None and size > max_size) or (max_files is not None and files > max_files)
        if not over:
            return []
        low = _watermark(policy) / 100.0
        size_goal = None if max_size is None else int(max_size * low)
        files_goal = None if max_files is None else int(max_files * low)
        evict = opts.evict or "oldest"
        # oldest first, ties by path so the plan is stable; attrgetter keys are C-speed
        order = sorted(eligible, key=attrgetter(policy.age_by, "relpath"))
        if evict == "largest":
            # largest first; sort is stable (also reversed), so equal sizes stay oldest first
            order.sort(key=used_bytes, reverse=True)
        # A file with several names is evicted only with all of them, and only when every
        # one of its links is a name this policy matches and may evict: otherwise removing
        # names frees nothing (another user's hard link keeps the bytes).
        eligible_names: dict[tuple[int, int], list[FileFact]] = {}
        for fact in eligible:
            eligible_names.setdefault((fact.dev, fact.ino), []).append(fact)

        reason = _reason(evict, size, files, max_size, max_files, size_goal, files_goal)
        detail = {"then": _then(policy)}  # one shared dict: read-only, one per policy not per file
        chosen: list[tuple[FileFact, str, dict[str, Any] | None]] = []
        done: set[tuple[int, int]] = set()
        for fact in order:
            if (size_goal is None or size <= size_goal) and (files_goal is None or files <= files_goal):
                break
            key = (fact.dev, fact.ino)
            if key in done:
                continue
            done.add(key)
            group = eligible_names[key]
            if fact.nlink > 1 and not (fact.nlink == len(group) == names[key]):
                continue  # linked from elsewhere: evicting these names would free nothing
            for name in sorted(group, key=attrgetter("relpath")):
                chosen.append((name, reason, detail))
            size -= used_bytes(fact)
            files -= 1
        if (size_goal is not None and size > size_goal) or (files_goal is not None and files > files_goal):
            left = len(matched) - len(eligible)
            ctx.note(
                f"quota cannot reach its low watermark: after evicting every eligible file "
                f"{_totals(size, files, max_size, max_files)} remain; {left} matching files are "
                "still being written, protected by keep_newest or excluded by the policy's filters "
                "(files with hard links outside the policy are never evicted: that frees nothing)"
            )
        return chosen

    # ---- execution: delegate to the action `then` names ------------------------------

    def _then_action(self, ctx: ExecContext) -> Action:
        """The action that does `then` for each evicted file, with the quota's own context.

        Archive is told to delete after a verified copy: an evicted file has to leave.
        """
        if self._delegate is None:
            from .base import ACTIONS

            then = _then(ctx.policy)
            if then not in ACTIONS:
                from ..errors import JanitorError

                raise JanitorError(f"quota then: {then}: action not available", code="E_CONFIG")
            if then == "archive":
                from .archive import ArchiveAction

                self._delegate = ArchiveAction(then="delete")
            else:
                self._delegate = ACTIONS[then]()
        return self._delegate

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        self._then_action(ctx).before_run(policy, config, ctx)

    def before_actions(self, items: list[PlannedAction], ctx: ExecContext) -> None:
        self._then_action(ctx).before_actions(items, ctx)

    def after_actions(self, ctx: ExecContext) -> None:
        self._then_action(ctx).after_actions(ctx)

    def journal_fields(self, item: PlannedAction, ctx: ExecContext) -> dict[str, Any]:
        return self._then_action(ctx).journal_fields(item, ctx)

    def prepare_batch(self, items: list[PlannedAction], fields: list[dict[str, Any]], ctx: ExecContext) -> None:
        self._then_action(ctx).prepare_batch(items, fields, ctx)

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> Done:
        return self._then_action(ctx).apply(item, dir_fd, name, fields, ctx)

    def done_event_for(self, item: PlannedAction) -> str:
        return _DONE_EVENTS.get((item.detail or {}).get("then", "delete"), self.done_event)

    def after_run(self, pp: PolicyPlan, outcome: PolicyOutcome, ctx: ExecContext) -> None:
        policy = ctx.policy
        opts = QuotaOptions.of(policy)
        ctx.events.emit(
            "quota_enforced",
            policy=pp.name,
            evict=opts.evict or "oldest",
            then=_then(policy),
            max_size=opts.max_size,
            max_files=opts.max_files,
            low_watermark=_watermark(policy),
            files_before=pp.matched,
            bytes_before=pp.matched_bytes,
            files_after=pp.matched - outcome.files,
            bytes_after=pp.matched_bytes - outcome.bytes,
            evicted_files=outcome.files,
            evicted_bytes=outcome.bytes,
            failed=outcome.failed,
            message=f"quota {pp.name}: {_totals(pp.matched_bytes, pp.matched, opts.max_size, opts.max_files)}"
            f" -> {_totals(pp.matched_bytes - outcome.bytes, pp.matched - outcome.files, opts.max_size, opts.max_files)}",
        )

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        from ..reconcile import reconcile_by_presence, reconcile_trash_move
        from .base import ACTIONS

        if entry.trash_path:
            return reconcile_trash_move(entry)
        if entry.target and "archive" in ACTIONS:
            return ACTIONS["archive"].reconcile(entry)
        return reconcile_by_presence(entry)

    @classmethod
    def reconcile_with(cls, entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
        from .base import ACTIONS

        if entry.target and not entry.trash_path and "archive" in ACTIONS:
            return ACTIONS["archive"].reconcile_with(entry, config)
        return cls.reconcile(entry)


_DONE_EVENTS = {"delete": "file_deleted", "soft-delete": "file_soft_deleted", "archive": "file_archived"}


def _totals(size: int, files: int, max_size: int | None, max_files: int | None) -> str:
    count = f"files {files}/{max_files}" if max_files is not None else f"{files} files"
    if max_size is None:
        return count
    return f"{format_size(size)} / {format_size(max_size)} ({count})"


def _reason(
    evict: str, size: int, files: int, max_size: int | None, max_files: int | None,
    size_goal: int | None, files_goal: int | None,
) -> str:
    goals = []
    if size_goal is not None:
        goals.append(format_size(size_goal))
    if files_goal is not None:
        goals.append(f"{files_goal} files")
    return f"quota {_totals(size, files, max_size, max_files)}: evict {evict} to {', '.join(goals)}"
