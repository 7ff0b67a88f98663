"""`janitor report`: storage health per policy path, computed once, rendered three ways.

For each policy path: the filesystem (size, used, free, threshold), what lies under the
path (files, bytes, an age histogram, the largest files), what each policy would act on
right now and how much that frees; then the trash and archive totals and the last run.
"""

from __future__ import annotations

import heapq
import html
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Config
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


@dataclass
class Report:
    generated: float
    paths: list[PathReport]
    policies: list[PolicyReport]
    trash_files: int = 0
    trash_bytes: int = 0
    archived: dict[str, dict[str, int]] = field(default_factory=dict)
    last_run: dict[str, Any] | None = None
    catalog_bytes: int = 0  # engine: the catalog database on disk (pruned by history_retain)
    catalog_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(config: Config) -> Report:
    now = time.time()
    plan = build_plan(config, config.select(None), now=now)
    policies = []
    for pp in plan.policies:
        status = "error" if pp.error else "blocked" if pp.blocked else "inactive" if pp.inactive else "ready"
        policies.append(PolicyReport(pp.name, pp.action, pp.root, len(pp.actions), pp.bytes, len(pp.skips), status,
                                     pp.error or pp.blocked or pp.inactive))
    skip = janitor_dirs(config)
    by_path: dict[str, PathReport] = {}
    for policy in config.select(None):
        report = by_path.get(policy.path)
        if report is None:
            report = by_path[policy.path] = _path_report(policy.path, config.settings.one_filesystem, skip, now)
        report.policies.append(policy.name)
        threshold, source = _threshold(config, policy.when_disk_above, policy.name)
        if threshold is not None and (report.threshold_pct is None or threshold < report.threshold_pct):
            report.threshold_pct, report.threshold_from = threshold, source
    result = Report(now, list(by_path.values()), policies)
    _add_catalog_totals(result, config)
    return result


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
        for target, files, nbytes in catalog.db.execute(
            "SELECT target, COUNT(*), COALESCE(SUM(size), 0) FROM journal "
            "WHERE state='done' AND object_key IS NOT NULL GROUP BY target"
        ):
            report.archived[target] = {"files": files, "bytes": nbytes}
        report.last_run = catalog.last_run()
        report.catalog_bytes, report.catalog_rows = catalog.size_bytes(), catalog.journal_rows()


# -- rendering ---------------------------------------------------------------------------


def render_report(report: Report, out: Any) -> None:
    from rich.table import Table

    from .render import _display_path, _esc

    for p in report.paths:
        out.print(f"[bold]{_esc(_display_path(p.path))}[/] ({', '.join(p.policies)})")
        if not p.exists:
            out.print("  [dim]does not exist[/]")
            continue
        threshold = f", threshold {p.threshold_pct:g}% ({p.threshold_from})" if p.threshold_pct is not None else ""
        color = "red" if p.over_threshold else "green"
        out.print(f"  filesystem: {format_size(p.total)}, [{color}]{p.used_pct:.1f}% used[/], "
                  f"{format_size(p.free)} free{threshold}")
        out.print(f"  under the path: {p.files} files, {format_size(p.bytes)}")
        biggest = max((b.bytes for b in p.ages), default=0) or 1
        for b in p.ages:
            bar = "#" * round(30 * b.bytes / biggest)
            out.print(f"    {b.label:>10}  {b.files:7d} files  {format_size(b.bytes):>10}  {bar}")
        if p.largest:
            out.print("  largest:")
            for f in p.largest:
                out.print(f"    {format_size(f.bytes):>10}  {format_duration(f.age_seconds):>7}  {_esc(_display_path(f.path))}")
        out.print()
    table = Table(title="what each policy would do now", show_edge=False, box=None, header_style="bold")
    for col in ("policy", "action", "status", "files", "frees", "skipped", "note"):
        table.add_column(col, justify="right" if col in ("files", "frees", "skipped") else "left", overflow="fold")
    for pol in report.policies:
        table.add_row(_esc(pol.name), pol.action, pol.status, str(pol.would_files), format_size(pol.would_bytes),
                      str(pol.skipped), _esc(pol.note or ""))
    out.print(table)
    out.print(f"trash: {report.trash_files} files, {format_size(report.trash_bytes)}")
    for target, totals in report.archived.items():
        out.print(f"archived to {target}: {totals['files']} files, {format_size(totals['bytes'])}")
    out.print(f"catalog: {format_size(report.catalog_bytes)}, {report.catalog_rows} journal rows")
    if report.last_run:
        r = report.last_run
        finished = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished"] or r["started"]))
        out.print(f"last run: {r['run_id']} {r['status']} at {finished}: {r['files']} files, "
                  f"{format_size(r['bytes'] or 0)}, {r['errors']} errors")
    else:
        out.print("last run: none recorded")


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;background:#f6f7f9;padding:0 1rem}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:0 0 .6rem}.sub{color:#667}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:1.1rem 1.3rem;margin:1rem 0}
.bar{position:relative;height:22px;background:#e6e9ef;border-radius:6px;overflow:hidden;margin:.4rem 0 .2rem}
.bar .used{height:100%;background:#3d7be0}.bar .used.over{background:#d9534f}
.bar .mark{position:absolute;top:0;bottom:0;width:2px;background:#1d2330}
.hist{display:grid;grid-template-columns:7rem 1fr 9rem;gap:.25rem .6rem;align-items:center;margin-top:.6rem}
.hist .b{height:14px;background:#7fb069;border-radius:3px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;width:1%}.pill{padding:.05rem .5rem;border-radius:9px;font-size:.85em}
.ready{background:#e3f4e1}.blocked,.error{background:#fde2e1}.inactive{background:#eceff4}
.kpis{display:flex;gap:1rem;flex-wrap:wrap}.kpi{flex:1;min-width:12rem}.kpi b{display:block;font-size:1.3rem}
code{font-size:.9em;word-break:break-all}
"""


def render_report_html(report: Report) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>janitor storage report</title><style>{_CSS}</style></head><body>",
        "<h1>janitor storage report</h1>",
        f"<div class='sub'>generated {e(time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(report.generated)))}</div>",
    ]
    run = report.last_run
    run_text = "none recorded" if not run else (
        f"{e(run['status'])} &middot; {run['files']} files, {e(format_size(run['bytes'] or 0))}, {run['errors']} errors")
    parts.append("<div class='card kpis'>"
                 f"<div class='kpi'>trash<b>{e(format_size(report.trash_bytes))}</b>{report.trash_files} files</div>"
                 + "".join(f"<div class='kpi'>archived to {e(t)}<b>{e(format_size(v['bytes']))}</b>{v['files']} files</div>"
                           for t, v in report.archived.items())
                 + f"<div class='kpi'>last run<b>{e(run['run_id']) if run else '&mdash;'}</b>{run_text}</div></div>")
    for p in report.paths:
        parts.append(f"<section class='card'><h2><code>{e(p.path)}</code></h2>")
        parts.append(f"<div class='sub'>policies: {e(', '.join(p.policies))}</div>")
        if not p.exists:
            parts.append("<p>does not exist</p></section>")
            continue
        over = " over" if p.over_threshold else ""
        mark = (f"<div class='mark' style='left:{p.threshold_pct:.2f}%' title='threshold'></div>"
                if p.threshold_pct is not None else "")
        parts.append(f"<div class='bar'><div class='used{over}' style='width:{p.used_pct:.2f}%'></div>{mark}</div>")
        threshold = (f", threshold {p.threshold_pct:g}% ({e(p.threshold_from or '')})" if p.threshold_pct is not None else "")
        parts.append(f"<div>filesystem {e(format_size(p.total))}: <b>{p.used_pct:.1f}% used</b>, "
                     f"{e(format_size(p.free))} free{threshold}</div>")
        parts.append(f"<div>under the path: {p.files} files, {e(format_size(p.bytes))}</div>")
        biggest = max((b.bytes for b in p.ages), default=0) or 1
        parts.append("<div class='hist'>")
        for b in p.ages:
            width = 100.0 * b.bytes / biggest
            parts.append(f"<div>{e(b.label)}</div><div><div class='b' style='width:{width:.1f}%'></div></div>"
                         f"<div class='n'>{b.files} files, {e(format_size(b.bytes))}</div>")
        parts.append("</div>")
        if p.largest:
            parts.append("<h3>largest files</h3><table><tr><th class='n'>size</th><th class='n'>age</th><th>file</th></tr>")
            for f in p.largest:
                parts.append(f"<tr><td class='n'>{e(format_size(f.bytes))}</td><td class='n'>{e(format_duration(f.age_seconds))}</td>"
                             f"<td><code>{e(f.path)}</code></td></tr>")
            parts.append("</table>")
        parts.append("</section>")
    parts.append("<section class='card'><h2>what each policy would do now</h2><table>"
                 "<tr><th>policy</th><th>action</th><th>status</th><th class='n'>files</th><th class='n'>frees</th>"
                 "<th class='n'>skipped</th><th>note</th></tr>")
    for pol in report.policies:
        parts.append(f"<tr><td>{e(pol.name)}</td><td>{e(pol.action)}</td><td><span class='pill {e(pol.status)}'>"
                     f"{e(pol.status)}</span></td><td class='n'>{pol.would_files}</td>"
                     f"<td class='n'>{e(format_size(pol.would_bytes))}</td><td class='n'>{pol.skipped}</td>"
                     f"<td>{e(pol.note or '')}</td></tr>")
    parts.append("</table></section></body></html>")
    return "\n".join(parts)
