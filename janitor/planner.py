"""Policies + the filesystem -> a Plan. Reads, never writes.

For each policy: walk its path (never following symlinks, staying on one filesystem),
keep the files its globs select, apply the age and size filters, protect the newest,
set aside files still being written (with the reason), let the action choose, trim to
what the disk threshold needs, and apply the circuit breaker.
"""

from __future__ import annotations

import functools
import heapq
import os
import pickle
import stat
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, BinaryIO, cast

from .disk import disk_usage
from .facttable import ActionList, FactRows, FactTable
from .holds import NO_HOLDS, HeldPaths, holds_in_force, skip_reason
from .plan import LazyReason, Plan, PolicyPlan, Skip
from .procfs import OpenFiles, scan_open_files
from .scan import FileFact, WalkNote, walk_files
from .trash import MOUNT_TRASH_NAME, known_trash_roots, mount_point, own_dir_identity
from .units import format_duration, format_size
from .walksplit import RootPick, walk_in_two

if TYPE_CHECKING:
    from .config import Config, Policy


@dataclass
class PlanContext:
    config: Config
    now: float
    open_files: OpenFiles
    skip_inodes: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    held: HeldPaths = NO_HOLDS
    _formatted: dict[float, str] = field(default_factory=dict)
    # what an action says while selecting (e.g. a quota it cannot meet); the planner moves
    # these into the policy's plan notes
    notes: list[str] = field(default_factory=list)
    _own_reasons: dict[str, LazyReason] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def reason_for(self, policy: Policy, fact: FileFact) -> str:
        """Why the policy selects this file (its age or size against the thresholds), as text
        for an action that builds on it; one that passes it on unchanged yields `own_reason`."""
        return _OwnReason(self._reason_text(policy, fact))

    def own_reason(self, policy: Policy) -> LazyReason:
        """The same reason, made only when asked (a plan shown or saved), one object per policy:
        formatting an age per file that a run never shows cost a tenth of a run's time."""
        lazy = self._own_reasons.get(policy.name)
        if lazy is None:
            lazy = self._own_reasons[policy.name] = LazyReason(functools.partial(self._reason_text, policy))
        return lazy

    def _reason_text(self, policy: Policy, fact: FileFact) -> str:
        parts = []
        if policy.older_than is not None:
            age = self.now - fact.age_ts(policy.age_by)
            parts.append(f"{policy.age_by} age {format_duration(age)} > {self._threshold(policy.older_than)}")
        if policy.larger_than is not None:
            parts.append(f"size {format_size(fact.size)} > {format_size(policy.larger_than)}")
        if policy.smaller_than is not None:
            parts.append(f"size {format_size(fact.size)} < {format_size(policy.smaller_than)}")
        return ", ".join(parts) or f"matches {', '.join(policy.match)}"

    def _threshold(self, seconds: float) -> str:
        text = self._formatted.get(seconds)
        if text is None:
            text = self._formatted[seconds] = format_duration(seconds)
        return text


class _OwnReason(str):
    """A reason made by `PlanContext.reason_for`: the plan keeps a LazyReason in its place."""

    __slots__ = ()


def janitor_dirs(config: Config) -> frozenset[tuple[int, int]]:
    """(dev, ino) of janitor's own state and trash directories: walks never enter them."""
    candidates = {config.settings.state_dir, config.trash_dir()}
    for policy in config.policies:
        candidates.add(config.trash_dir(policy))
        try:
            candidates.add(os.path.join(mount_point(policy.path), MOUNT_TRASH_NAME))
        except OSError:
            pass
    # only directories janitor made count: a `.janitor-trash` a user planted is walked as usual
    found = frozenset(ident for ident in map(own_dir_identity, candidates) if ident is not None)
    return found | known_trash_roots(config.settings.state_dir)  # recorded by (dev, ino): renamed or not


def build_plan(
    config: Config,
    policies: tuple[Policy, ...] | list[Policy],
    *,
    now: float | None = None,
    open_files: OpenFiles | None = None,
) -> Plan:
    """The plan for the given policies. Pure with respect to the filesystem: it only reads."""
    now = time.time() if now is None else now
    if open_files is None:
        open_files = scan_open_files(_devices(policies, config))
    ctx = PlanContext(config, now, open_files, janitor_dirs(config), held=holds_in_force(config.settings.state_dir, now))
    plans = [plan_policy(policy, ctx) for policy in policies]
    _note_trash_purges(config, policies, plans, now)
    return Plan(plans, created=now, procfs_complete=open_files.complete)


def _note_trash_purges(config: Config, policies: tuple[Policy, ...] | list[Policy], plans: list[PolicyPlan],
                       now: float) -> None:
    """`retain` purges are deletions too: the plan says how many the run will make."""
    from .catalog import existing_catalog

    with_retain = [(p, pp) for p, pp in zip(policies, plans, strict=True) if p.retain is not None]
    if not with_retain:
        return
    with existing_catalog(config.settings.state_dir) as catalog:
        if catalog is None:
            return
        for policy, pp in with_retain:
            assert policy.retain is not None
            expired = catalog.expired_in_trash(policy.name, policy.retain, now)
            pp.purges = len(expired)
            if expired:
                pp.notes.append(
                    f"{len(expired)} trashed files ({format_size(sum(e.size for e in expired))}) are older than "
                    f"retain {format_duration(policy.retain)}: this run purges them from the trash for good")


def _devices(policies: tuple[Policy, ...] | list[Policy], config: Config) -> set[int] | None:
    devices = set()
    for p in policies:
        if not config.effective_one_filesystem(p):
            return None  # files may be on any filesystem below the path
        try:
            devices.add(os.stat(p.path).st_dev)
        except OSError:
            pass
    return devices


def plan_policy(policy: Policy, ctx: PlanContext) -> PolicyPlan:
    from .actions.base import Action, RowSelection, action_class, get_action

    config = ctx.config
    pp = PolicyPlan(policy.name, policy.action, policy.path, disposal=action_class(policy.action).disposal(policy))
    try:
        st = os.lstat(policy.path)
        if stat.S_ISLNK(st.st_mode):
            # Whoever can write the parent could point it anywhere between runs: name the
            # real directory in the policy instead.
            pp.error = (f"{policy.path} is a symlink (to {os.readlink(policy.path)}); "
                        "refusing it: write the directory it points to as the policy path")
            return pp
    except FileNotFoundError:
        pp.inactive = "path does not exist; nothing to do"
        return pp
    except OSError as exc:
        pp.error = f"cannot read {policy.path}: {exc.strerror}"
        return pp
    if not stat.S_ISDIR(st.st_mode):
        pp.error = f"{policy.path} is not a directory"
        return pp
    pp.root_dev, pp.root_ino = st.st_dev, st.st_ino

    if policy.when_disk_above is not None:
        pp.disk = disk_usage(policy.path)
        if pp.disk.used_pct <= policy.when_disk_above:
            pp.inactive = (
                f"filesystem at {pp.disk.used_pct:.1f}% used, not above when_disk_above "
                f"{policy.when_disk_above:g}%"
            )
            return pp

    action = get_action(policy.action)
    # Most actions only ever act on files that pass the age and size filters: keep just
    # those (and count the rest), so memory follows what may be acted on, not the tree.
    # Quota counts every matching file and keep_newest ranks them all: they keep everything.
    walk = _PolicyWalk(policy, ctx, None if (action.needs_all_matched or policy.keep_newest)
                       else _attribute_filter(policy, ctx.now))
    try:
        matched = walk.in_two(pp) or walk.alone(pp)
    except OSError as exc:
        pp.error = f"cannot walk {policy.path}: {exc.strerror}"
        return pp
    count, total = walk.count, walk.total

    pp.matched = count
    pp.matched_bytes = total
    eligible = _eligible(policy, matched, ctx, pp)
    ctx.notes.clear()
    # Straight into the plan (no list of (fact, reason, detail) tuples beside it), with one
    # shared LazyReason in place of each reason the planner itself wrote.
    root, name, verb = policy.path, policy.name, policy.action
    lazy = ctx.own_reason(policy)
    if type(action).select is Action.select:
        # The plain selection (every eligible file, for the planner's reason): a view of the
        # walk's columns through the eligible row numbers, without a FileFact per file.
        chosen = ActionList.of_rows(name, verb, root, eligible, lazy)
    else:
        # Actions read `matched` and `eligible` as sequences of FileFact (iteration, len,
        # sorted); these are columnar ones that make each FileFact as it is read.
        selection = action.select(policy, cast("list[FileFact]", matched), cast("list[FileFact]", eligible), ctx)
        if isinstance(selection, RowSelection):  # rows of the walk's table: a view, as above
            chosen = ActionList.of_rows(name, verb, root, selection.rows, selection.reason, selection.detail)
        else:
            chosen = ActionList(name, verb, root)
            for choice in selection:
                if isinstance(choice, Skip):
                    pp.skips.append(choice)
                else:
                    fact, reason, detail = choice
                    chosen.add(fact, lazy if type(reason) is _OwnReason else reason, detail)
    pp.notes.extend(ctx.notes)
    ctx.notes.clear()
    del eligible, matched

    if policy.when_disk_above is not None and pp.disk is not None and action.skips_busy:
        chosen = _enough_to_get_under(policy, chosen, pp, keep_order=action.orders_selection)

    pp.actions = chosen
    _circuit_breaker(policy, pp, config)
    return pp


class _PolicyWalk:
    """The planner's walk of one policy path: the files it keeps (a FactTable), how many
    matched and their bytes; symlink skips and the walk's notes go to the PolicyPlan."""

    def __init__(self, policy: Policy, ctx: PlanContext, prefilter: Callable[[os.stat_result], bool] | None) -> None:
        self.policy, self.ctx, self.prefilter = policy, ctx, prefilter
        self.count = self.total = 0

    def alone(self, pp: PolicyPlan, root_entries: RootPick | None = None,
              walked: set[tuple[int, int]] | None = None) -> FactTable:
        """The walk in this process (of the root's entries `root_entries` picks)."""
        policy = self.policy
        matched = FactTable()
        selects, prefilter, skips = policy.selector(), self.prefilter, pp.skips
        globs = policy.globs
        count, total = 0, 0

        def note(n: WalkNote) -> None:
            pp.notes.append(f"{n.relpath}: {n.reason}")

        for rel, _kind, st_entry in walk_files(
            policy.path,
            one_filesystem=self.ctx.config.effective_one_filesystem(policy),
            prune_dir=globs.prunes_dir if globs.prune_re is not None else None,
            skip_inodes=self.ctx.skip_inodes,
            on_note=note,
            root_entries=root_entries,
            walked_dirs=walked,
        ):
            if not selects(rel):
                continue
            if st_entry is None:  # a symlink the globs select: say why it is left alone
                skips.append(Skip(policy.name, os.path.join(policy.path, rel), 0, "symlink",
                                  "symlink: never followed"))
                continue
            count += 1
            total += st_entry.st_size
            if prefilter is None or prefilter(st_entry):
                matched.add_stat(rel, st_entry)
        self.count += count
        self.total += total
        return matched

    def in_two(self, pp: PolicyPlan) -> FactTable | None:
        """The walk shared with a forked process (janitor/walksplit.py): its rows, skips and
        notes after this one's, in the order a walk alone gives. None: walk alone."""
        if not self.ctx.config.settings.acting_process:
            return None
        half = tuple[FactTable, int, int, list[Skip], list[str]]

        def walk(pick: RootPick, walked: set[tuple[int, int]]) -> half:
            part = PolicyPlan(pp.name, pp.action, pp.root)
            sub = _PolicyWalk(self.policy, self.ctx, self.prefilter)
            table = sub.alone(part, root_entries=pick, walked=walked)
            return table, sub.count, sub.total, part.skips, part.notes

        def send(theirs: half, out: BinaryIO) -> None:
            pickle.dump(theirs[1:], out, pickle.HIGHEST_PROTOCOL)
            theirs[0].write_to(out)

        def receive(mine: half, src: BinaryIO) -> tuple[int, int, list[Skip], list[str]]:
            counts: tuple[int, int, list[Skip], list[str]] = pickle.load(src)
            mine[0].append_from(src)  # a failure here: the whole walk is made again alone
            return counts

        both = walk_in_two(self.policy.path, (pp.root_dev, pp.root_ino), walk, send, receive)
        if both is None:
            return None
        matched, theirs = both[0][0], both[1]
        for count, total, skips, notes in (both[0][1:], theirs):
            self.count += count
            self.total += total
            pp.skips.extend(skips)
            pp.notes.extend(notes)
        return matched


def _age_size_test(policy: Policy, now: float) -> Callable[[float, int], bool] | None:
    """The age and size filters as one test of (age timestamp, size); None when there are none."""
    older_than, larger, smaller = policy.older_than, policy.larger_than, policy.smaller_than
    if older_than is None and larger is None and smaller is None:
        return None

    def passes(age_ts: float, size: int) -> bool:
        if older_than is not None and now - age_ts < older_than:
            return False
        if larger is not None and size <= larger:
            return False
        return not (smaller is not None and size >= smaller)

    return passes


def _attribute_filter(policy: Policy, now: float) -> Callable[[os.stat_result], bool] | None:
    """`_age_size_test` on a stat result, for the walk."""
    test = _age_size_test(policy, now)
    if test is None:
        return None
    age_of = attrgetter("st_" + policy.age_by)
    older_than = policy.older_than
    if older_than is not None and policy.larger_than is None and policy.smaller_than is None:
        # the usual policy, an age alone: the same test as `passes`, one call less per file
        return lambda st: not now - age_of(st) < older_than
    return lambda st: test(age_of(st), st.st_size)


# How far in the future a file's time may be and still count as real (NFS clock skew).
FUTURE_SKEW = 3600.0


def _eligible(policy: Policy, matched: FactTable, ctx: PlanContext, pp: PolicyPlan) -> FactRows:
    from .actions.base import action_class

    skips_busy = action_class(policy.action).skips_busy
    now = ctx.now
    settle = ctx.config.effective_settle(policy)
    ages, mtimes = matched.age_column(policy.age_by), matched.age_column("mtime")
    keep: set[tuple[int, int]] = set()
    if policy.keep_newest:
        # nlargest over row numbers: O(n log k), no object per file. A file dated in the
        # future (beyond clock skew) takes no slot: anyone can set a file's times, and two
        # files dated ten years ahead would otherwise protect themselves instead of the
        # newest real ones (red team 14). They are not old enough to be acted on either.
        horizon = now + FUTURE_SKEW
        real = (r for r in range(len(matched)) if ages[r] <= horizon)
        newest = heapq.nlargest(policy.keep_newest, real, key=ages.__getitem__)
        keep = {matched.key_of(r) for r in newest}
    passes = _age_size_test(policy, now)
    # This loop runs once per matching file (hundreds of thousands for a quota): it reads
    # the columns, looks the busy tables up directly and builds a path only for a skip.
    busy_keys = ctx.open_files.busy_keys(readers=policy.skip_open_readers)
    root = policy.path
    held = ctx.held.for_root(root)
    size_of, key_of, relpath_of = matched.size_of, matched.key_of, matched.relpath_of
    eligible = array("I")  # row numbers: a table of 2**32 rows would not fit in memory anyway
    for row in range(len(matched)):
        size = size_of(row)
        if passes is not None and not passes(ages[row], size):
            continue
        if held is not None:
            hold = held(os.path.join(root, relpath_of(row)))
            if hold is not None:
                pp.skips.append(Skip(policy.name, os.path.join(root, relpath_of(row)), size, "held",
                                     skip_reason(hold)))
                continue
        key = key_of(row)
        if key in keep:
            pp.skips.append(Skip(policy.name, os.path.join(root, relpath_of(row)), size, "keep_newest",
                                 f"one of the {policy.keep_newest} newest matching files (keep_newest)"))
            continue
        if skips_busy:
            if key in busy_keys:
                busy = ctx.open_files.busy_reason(*key, readers=policy.skip_open_readers)
                if busy is not None:
                    pp.skips.append(Skip(policy.name, os.path.join(root, relpath_of(row)), size, *busy))
                    continue
            if now - mtimes[row] < settle:
                pp.skips.append(Skip(policy.name, os.path.join(root, relpath_of(row)), size, "settle",
                                     f"modified {format_duration(now - mtimes[row])} ago, within settle "
                                     f"{format_duration(settle)}"))
                continue
        eligible.append(row)
    # every row (the usual case of a pre-filtered walk): a range, in constant space
    return FactRows(matched, range(len(matched)) if len(eligible) == len(matched) else eligible)


def _enough_to_get_under(
    policy: Policy, chosen: ActionList, pp: PolicyPlan, *, keep_order: bool = False
) -> ActionList:
    """Oldest first (or in the action's own order), only as much as brings the filesystem
    to when_disk_above.

    The executor re-measures as it goes and stops as soon as the filesystem is under.
    """
    assert pp.disk is not None and policy.when_disk_above is not None
    need = pp.disk.bytes_to_free_for(policy.when_disk_above)
    order: Sequence[int] = range(len(chosen))
    if not keep_order:
        ages = chosen.age_column(policy.age_by)
        order = sorted(order, key=ages.__getitem__)
    keep, freed = array("I"), 0
    for row in order:
        if freed >= need:
            break
        keep.append(row)
        # only the last link frees the blocks
        freed += chosen.size_of(row)
    chosen.reorder(keep)
    pp.stop_at_pct = policy.when_disk_above
    pp.notes.append(
        f"filesystem at {pp.disk.used_pct:.1f}% used, above {policy.when_disk_above:g}%: "
        f"{format_size(need)} to free, {'in eviction order' if keep_order else 'oldest first'}; "
        "stops as soon as it is under"
    )
    if policy.action == "soft-delete" or policy.then == "soft-delete":
        pp.notes.append(
            "soft-delete frees space only if the trash is on another filesystem: a trash on this one "
            "keeps the bytes until retain purges them"
        )
    return chosen


def _circuit_breaker(policy: Policy, pp: PolicyPlan, config: Config) -> None:
    count = len(pp.actions)
    limit = config.effective_max_actions(policy)
    if count > limit:
        pp.blocked = (
            f"selects {count} files, more than max_actions {limit}; review the plan and re-run "
            "with --force if it is right"
        )
    elif policy.max_percent is not None and pp.matched and 100.0 * count / pp.matched > policy.max_percent:
        pp.blocked = (
            f"selects {count} of {pp.matched} matching files ({100.0 * count / pp.matched:.0f}%), "
            f"more than max_percent {policy.max_percent:g}%; review the plan and re-run with --force "
            "if it is right"
        )
