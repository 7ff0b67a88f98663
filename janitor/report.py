"""`janitor report`: storage health per policy path, computed once, rendered three ways.

For each policy path: the filesystem (size, used, free, threshold), what lies under the
path (files, bytes, an age histogram, the largest files), what each policy would act on
right now and how much that frees; then the trash and archive totals and the last run.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Config, Policy
from .disk import DiskUsage, disk_usage
from .planner import build_plan, janitor_dirs
from .scan import walk_files
from .units import format_duration, format_size

AGE_BUCKETS = ((86400, "< 1 day"), (7 * 86400, "1-7 days"), (30 * 86400, "7-30 days"),
               (90 * 86400, "30-90 days"), (float("inf"), "> 90 days"))
LARGEST = 10


@dataclass
class AgeBucket:
    label: str
    files: int = 0
    bytes: int = 0


@dataclass
class LargeFile:
    path: str
    bytes: int
    age_seconds: float


@dataclass
class PathReport:
    path: str
    policies: list[str]
    exists: bool = True
    total: int = 0
    used: int = 0
    free: int = 0
    used_pct: float = 0.0
    threshold_pct: float | None = None
    threshold_from: str | None = None
    files: int = 0
    bytes: int = 0
    ages: list[AgeBucket] = field(default_factory=list)
    largest: list[LargeFile] = field(default_factory=list)
    # the filesystem, as (st_dev): paths on one filesystem share one usage line
    device: int | None = None
    # policy paths below this one: their files are counted there, not here
    excluded: list[str] = field(default_factory=list)

    @property
    def over_threshold(self) -> bool:
        return self.threshold_pct is not None and self.used_pct > self.threshold_pct


@dataclass
class PolicyReport:
    name: str
    action: str
    path: str
    would_files: int
    would_bytes: int
    skipped: int
    status: str  # ready | blocked | inactive | error
    note: str | None = None
    # what the filesystem gains now: a move into a trash on the same filesystem frees
    # nothing until the trash is purged, `then: keep` frees nothing at all
    frees_bytes: int = 0
    frees_note: str | None = None


@dataclass
class Report:
    generated: float
    paths: list[PathReport]
    policies: list[PolicyReport]
    trash_files: int = 0
    trash_bytes: int = 0
    # per target: distinct objects stored (not journal rows: a re-run that found an object
    # already stored adds a row, not an object)
    archived: dict[str, dict[str, int]] = field(default_factory=dict)
    last_run: dict[str, Any] | None = None
    catalog_bytes: int = 0  # engine: the catalog database on disk (pruned by history_retain)
    catalog_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def filesystems(self) -> list[list[PathReport]]:
        """The existing paths grouped by filesystem, in order of first appearance."""
        groups: dict[int, list[PathReport]] = {}
        for p in self.paths:
            if p.exists and p.device is not None:
                groups.setdefault(p.device, []).append(p)
        return list(groups.values())


def build_report(config: Config) -> Report:
    now = time.time()
    plan = build_plan(config, config.select(None), now=now)
    policies = []
    for pp in plan.policies:
        status = "error" if pp.error else "blocked" if pp.blocked else "inactive" if pp.inactive else "ready"
        frees, frees_note = _frees(config.policy(pp.name), pp.bytes)
        policies.append(PolicyReport(pp.name, pp.action, pp.root, len(pp.actions), pp.bytes, len(pp.skips), status,
                                     pp.error or pp.blocked or pp.inactive, frees, frees_note))
    skip = janitor_dirs(config)
    by_path: dict[str, PathReport] = {}
    all_paths = sorted({p.path for p in config.select(None)})
    for policy in config.select(None):
        report = by_path.get(policy.path)
        if report is None:
            nested = [other for other in all_paths if other.startswith(policy.path.rstrip("/") + "/")]
            report = by_path[policy.path] = _path_report(policy.path, config.settings.one_filesystem,
                                                         skip | _inodes(nested), now)
            report.excluded = nested
        report.policies.append(policy.name)
        threshold, source = _threshold(config, policy.when_disk_above, policy.name)
        if threshold is not None and (report.threshold_pct is None or threshold < report.threshold_pct):
            report.threshold_pct, report.threshold_from = threshold, source
    result = Report(now, list(by_path.values()), policies)
    _add_catalog_totals(result, config)
    return result


def _inodes(paths: list[str]) -> frozenset[tuple[int, int]]:
    found = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def _frees(policy: Policy, would_bytes: int) -> tuple[int, str | None]:
    """Bytes the policy's filesystem gains if it runs now, and why that is less than it acts on."""
    then = policy.then or "delete"
    if policy.action == "soft-delete" or (policy.action in ("archive", "quota") and then == "soft-delete"):
        # the trash is on the file's own filesystem whenever it can be (docs: trash), so the
        # move frees nothing there until the trash is purged
        retain = f" (retain {format_duration(policy.retain)})" if policy.retain is not None else ""
        return 0, f"moved into a trash on the same filesystem: frees space only when purged{retain}"
    if policy.action == "archive" and then == "keep":
        return 0, "then: keep: the files stay"
    return would_bytes, None


def _threshold(config: Config, when_disk_above: float | None, policy: str) -> tuple[float | None, str | None]:
    candidates = []
    if when_disk_above is not None:
        candidates.append((when_disk_above, f"when_disk_above of {policy}"))
    if config.settings.guard_max_used is not None:
        candidates.append((config.settings.guard_max_used, "settings.guard_max_used"))
    return min(candidates) if candidates else (None, None)


def _path_report(path: str, one_filesystem: bool, skip: frozenset[tuple[int, int]], now: float) -> PathReport:
    report = PathReport(path, [], ages=[AgeBucket(label) for _, label in AGE_BUCKETS])
    try:
        usage: DiskUsage = disk_usage(path)
    except OSError:
        report.exists = False
        return report
    report.total, report.used, report.free, report.used_pct = usage.total, usage.used, usage.free, round(usage.used_pct, 2)
    try:
        report.device = os.stat(path).st_dev
    except OSError:
        report.exists = False
        return report
    largest: list[tuple[int, str, float]] = []
    try:
        for rel, _kind, st in walk_files(path, one_filesystem=one_filesystem, skip_inodes=skip):
            if st is None:
                continue
            report.files += 1
            report.bytes += st.st_size
            age = now - st.st_mtime
            for (limit, _), bucket in zip(AGE_BUCKETS, report.ages, strict=True):
                if age < limit:
                    bucket.files += 1
                    bucket.bytes += st.st_size
                    break
            entry = (st.st_size, rel, age)
            if len(largest) < LARGEST:
                heapq.heappush(largest, entry)
            elif entry > largest[0]:
                heapq.heapreplace(largest, entry)
    except OSError:
        report.exists = False
    report.largest = [LargeFile(rel, size, age) for size, rel, age in sorted(largest, reverse=True)]
    return report


def _add_catalog_totals(report: Report, config: Config) -> None:
    from .catalog import existing_catalog

    with existing_catalog(config.settings.state_dir) as catalog:
        if catalog is None:
            return
        report.trash_files, report.trash_bytes = catalog.trash_totals()
        # one object per (target, key): a later run that found it already stored, or stored a
        # newer file under the same key, does not make two objects
        for target, files, nbytes in catalog.db.execute(
            "SELECT target, COUNT(*), COALESCE(SUM(size), 0) FROM ("
            " SELECT target, object_key, size FROM journal j"
            " WHERE state='done' AND object_key IS NOT NULL AND id = ("
            "  SELECT MAX(id) FROM journal k WHERE k.state='done' AND k.target=j.target"
            "  AND k.object_key=j.object_key)"
            ") GROUP BY target"
        ):
            report.archived[target] = {"files": files, "bytes": nbytes}
        report.last_run = catalog.last_run()
        report.catalog_bytes, report.catalog_rows = catalog.size_bytes(), catalog.journal_rows()


# -- rendering ---------------------------------------------------------------------------


def render_report(report: Report, out: Any) -> None:
    from .render import display_path, escape_markup, plural

    for p in report.paths:
        if not p.exists:
            out.print(f"[bold]{escape_markup(display_path(p.path))}[/] ({', '.join(p.policies)})")
            out.print("  [dim]does not exist[/]")
            out.print()
    for group in report.filesystems():
        # one usage line per filesystem, with the strictest threshold of its paths
        first = group[0]
        strictest = min((p for p in group if p.threshold_pct is not None), key=lambda p: p.threshold_pct or 0.0,
                        default=None)
        threshold = (f", threshold {strictest.threshold_pct:g}% ({strictest.threshold_from})"
                     if strictest is not None else "")
        color = "red" if any(p.over_threshold for p in group) else "green"
        out.print(f"[bold]filesystem[/] ({plural(len(group), 'policy path')} below): {format_size(first.total)}, [{color}]{first.used_pct:.1f}% used[/], "
                  f"{format_size(first.free)} free{threshold}")
        out.print()
        for p in group:
            _render_path(p, out)
    _render_policies(report, out)


def _render_path(p: PathReport, out: Any) -> None:
    from .render import display_path, escape_markup, plural

    out.print(f"[bold]{escape_markup(display_path(p.path))}[/] ({', '.join(p.policies)})")
    nested = f" (not counting {', '.join(escape_markup(display_path(x)) for x in p.excluded)}: reported on its own)" \
        if p.excluded else ""
    out.print(f"  under the path: {plural(p.files, 'file')}, {format_size(p.bytes)}{nested}")
    biggest = max((b.bytes for b in p.ages), default=0) or 1
    for b in p.ages:
        bar = "#" * round(30 * b.bytes / biggest)
        out.print(f"    {b.label:>10}  {b.files:7d} {'file ' if b.files == 1 else 'files'}  {format_size(b.bytes):>10}  {bar}")
    if p.largest:
        out.print("  largest:")
        for f in p.largest:
            out.print(f"    {format_size(f.bytes):>10}  {format_duration(f.age_seconds):>7}  {escape_markup(display_path(f.path))}")
    out.print()


def _render_policies(report: Report, out: Any) -> None:
    from rich.table import Table

    from .render import escape_markup, plural

    table = Table(title="what each policy would do now", show_edge=False, box=None, header_style="bold")
    for col in ("policy", "action", "status", "files", "bytes", "frees", "skipped", "note"):
        table.add_column(col, justify="right" if col in ("files", "bytes", "frees", "skipped") else "left",
                         overflow="fold")
    for pol in report.policies:
        note = "; ".join(n for n in (pol.note, pol.frees_note) if n)
        table.add_row(escape_markup(pol.name), pol.action, pol.status, str(pol.would_files), format_size(pol.would_bytes),
                      format_size(pol.frees_bytes), str(pol.skipped), escape_markup(note))
    out.print(table)
    out.print(f"trash: {plural(report.trash_files, 'file')}, {format_size(report.trash_bytes)}")
    for target, totals in report.archived.items():
        out.print(f"stored in the archive {target}: {plural(totals['files'], 'object')}, {format_size(totals['bytes'])}")
    out.print(f"catalog: {format_size(report.catalog_bytes)}, {plural(report.catalog_rows, 'journal row')}")
    if report.last_run:
        r = report.last_run
        finished = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished"] or r["started"]))
        out.print(f"last run: {r['run_id']} {r['status']} at {finished}: {plural(r['files'] or 0, 'file')}, "
                  f"{format_size(r['bytes'] or 0)}, {plural(r['errors'] or 0, 'error')}")
    else:
        out.print("last run: none recorded")
