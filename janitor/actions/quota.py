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

from array import array
from collections.abc import Sequence
from itertools import compress
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ..config import Percent, Size, Then
from ..facttable import FactRows, FactTable
from ..units import format_size
from .base import DISPOSAL_OF_THEN, Action, Disposal, RowSelection, register
from .softdelete import SoftDeleteOptions

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext, PolicyOutcome
    from ..plan import PolicyPlan
    from ..planner import PlanContext
    from ..scan import FileFact

THEN_CHOICES = ("delete", "soft-delete", "archive")
DEFAULT_LOW_WATERMARK = 90.0


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
    ) -> RowSelection | list[tuple[FileFact, str, dict[str, Any] | None]]:
        # Arithmetic over the walk's columns and row numbers: a quota counts every matching
        # file (millions in a cache), so no object is made per file (it took 1.8 GB for
        # 1,000,000 files when each was a FileFact in dicts and lists).
        table, rows = _as_columns(matched, eligible)
        blocks, nlink = table.column("blocks"), table.column("nlink")
        key_of = table.key_of
        # What is really used: allocated blocks (a sparse file counts what it occupies, not
        # its apparent size), and each inode once however many names it has here. Grouped
        # by inode: files with several links, and files with one that the walk still saw
        # twice (moved during the walk into a directory it had not read yet: counted twice,
        # it would push the quota over and evict other people's files).
        twice = _seen_twice(table, nlink)
        linked: dict[tuple[int, int], list[int]] = {}
        for row in [r for r, links in enumerate(nlink) if links > 1]:
            linked.setdefault(key_of(row), []).append(row)
        if twice:
            for row in range(len(table)):
                if nlink[row] == 1 and key_of(row) in twice:
                    linked.setdefault(key_of(row), []).append(row)
        several = [r for group in linked.values() for r in group]
        size = 512 * (sum(blocks) - sum(blocks[r] for r in several))
        files = len(table) - len(several)
        # Only what this policy could ever free counts: an inode with a link outside the
        # matched names (another user's hard link, a name elsewhere on the filesystem) keeps
        # its blocks whatever is evicted here, so it is neither counted nor evicted. Else one
        # link to a big file elsewhere would push the quota over and evict everyone's files.
        outside_files = 0
        outside_bytes = 0
        for group in linked.values():
            first = group[0]
            if nlink[first] > len(group):
                outside_files += 1
                outside_bytes += 512 * blocks[first]
                continue
            size += 512 * blocks[first]
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
        order = eviction_order(table, rows, policy.age_by, largest=evict == "largest")
        # A file with several names is evicted only with all of them, and only when every
        # one of its links is a name this policy matches and may evict: otherwise removing
        # names frees nothing (another user's hard link keeps the bytes).
        eligible_linked: dict[tuple[int, int], list[int]] = {}
        for row in rows:
            if nlink[row] > 1 or (twice and key_of(row) in twice):
                eligible_linked.setdefault(key_of(row), []).append(row)

        reason = _reason(evict, size, files, max_size, max_files, size_goal, files_goal)
        chosen = array("I")
        done: set[tuple[int, int]] = set()
        relpath_of = table.relpath_of
        for row in order:
            if (size_goal is None or size <= size_goal) and (files_goal is None or files <= files_goal):
                break
            links = nlink[row]
            if links > 1 or (twice and key_of(row) in twice):
                key = key_of(row)
                if key in done:
                    continue
                done.add(key)
                group = eligible_linked[key]
                if links > 1 and not links == len(group) == len(linked[key]):
                    continue  # linked from elsewhere: evicting these names would free nothing
                chosen.extend(sorted(group, key=relpath_of))
            else:
                chosen.append(row)
            size -= 512 * blocks[row]
            files -= 1
        if (size_goal is not None and size > size_goal) or (files_goal is not None and files > files_goal):
            left = len(table) - len(rows)
            ctx.note(
                f"quota cannot reach its low watermark: after evicting every eligible file "
                f"{_totals(size, files, max_size, max_files)} remain; {left} matching files are "
                "still being written, protected by keep_newest or excluded by the policy's filters "
                "(files with hard links outside the policy are never evicted: that frees nothing)"
            )
        # one shared detail: read-only, one per policy not per file
        return RowSelection(FactRows(table, chosen), reason, {"then": _then(policy)})

    # ---- execution: every file goes through the action `then` names ------------------

    def per_file(self, ctx: ExecContext) -> Action:
        return self._then_action(ctx)

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


def _as_columns(matched: list[FileFact], eligible: list[FileFact]) -> tuple[FactTable, Sequence[int]]:
    """The walk's table and the eligible rows in it: what the planner passes (a FactTable
    and its FactRows, read as lists), or the same made from plain lists of facts."""
    if isinstance(matched, FactTable) and isinstance(eligible, FactRows) and eligible.table is matched:
        return matched, eligible.row_numbers
    table = FactTable()
    for fact in matched:
        table.add_fact(fact)
    row_of = {fact: row for row, fact in enumerate(matched)}
    return table, array("I", (row_of[fact] for fact in eligible))


def _seen_twice(table: FactTable, nlink: array[int]) -> set[tuple[int, int]]:
    """(dev, ino) of the files with one link that the walk listed more than once.

    A bitmap over the inode numbers of one filesystem (a bit a number: 125 KB for numbers
    spread over 1,000,000) instead of a set of every inode; a set only where the numbers
    are too sparse for one (several filesystems, 64-bit inode numbers far apart).
    """
    dev, ino = table.column("dev"), table.column("ino")
    twice: set[tuple[int, int]] = set()
    if not len(ino):
        return twice
    # the rows with one link, one at a time: a list of a million row numbers would cost
    # about 36 MB, more than half the plan
    single = compress(range(len(nlink)), map((1).__eq__, nlink))
    low, high = min(ino), max(ino)
    if len(set(dev)) == 1 and high - low < 1 << 28:
        seen = bytearray(((high - low) >> 3) + 1)
        for row in single:
            number = ino[row] - low
            bit = 1 << (number & 7)
            if seen[number >> 3] & bit:
                twice.add((dev[row], ino[row]))
            seen[number >> 3] |= bit
        return twice
    keys: set[tuple[int, int]] = set()
    for row in single:
        key = (dev[row], ino[row])
        if key in keys:
            twice.add(key)
        keys.add(key)
    return twice


def eviction_order(table: FactTable, rows: Sequence[int], age_by: str, *, largest: bool) -> array[int]:
    """The rows in eviction order: oldest first, or largest (allocated blocks) first and
    oldest first among equals; ties by path, so a plan is stable.

    A counting sort into buckets that only rise along that order, then an exact sort of each
    bucket: 4 bytes a row, where `sorted()` would make an int and a key object per row.
    """
    out = array("I")
    if not rows:
        return out
    ages, blocks = table.age_column(age_by), table.column("blocks")
    if largest:
        buckets = 65 << 10

        def bucket_of(row: int) -> int:  # falls as blocks rise: the leading bit, then ten more
            value: int = blocks[row]
            width = value.bit_length()
            mantissa = (value >> (width - 11) if width > 11 else value) & 1023
            return buckets - 1 - ((width << 10) | mantissa)

        def exact(row: int) -> tuple[int, float]:
            return -blocks[row], ages[row]
    else:
        low = min(ages[r] for r in rows)
        high = max(ages[r] for r in rows)
        buckets = max(1, min(1 << 16, len(rows) // 8))
        scale = (buckets - 1) / (high - low) if high > low else 0.0

        def bucket_of(row: int) -> int:  # rises with the age
            return int((ages[row] - low) * scale)

        exact = ages.__getitem__  # type: ignore[assignment]
    bucket = array("I", map(bucket_of, rows))
    starts = array("I", bytes(4 * (buckets + 1)))
    for b in bucket:
        starts[b + 1] += 1
    for b in range(buckets):
        starts[b + 1] += starts[b]
    out = array("I", bytes(4 * len(rows)))
    fill = array("I", starts)
    for row, b in zip(rows, bucket, strict=True):
        out[fill[b]] = row
        fill[b] += 1
    del bucket, fill
    relpath_of = table.relpath_of
    for b in range(buckets):
        start, end = starts[b], starts[b + 1]
        if end - start < 2:
            continue
        run = sorted(out[start:end], key=exact)
        # equal keys (files written in the same instant) in path order
        i = 0
        while i < len(run):
            j = i + 1
            while j < len(run) and exact(run[j]) == exact(run[i]):
                j += 1
            if j - i > 1:
                run[i:j] = sorted(run[i:j], key=relpath_of)
            i = j
        out[start:end] = array("I", run)
    return out
