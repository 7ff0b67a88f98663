"""HTML for people: `report --html` and the `janitor serve` dashboard, from one set of Jinja2
templates (janitor/templates/) with autoescaping on for everything.

File names are chosen by whoever writes into a policy path, so every value reaches the page
through the template engine's escaping; nothing here builds HTML by string concatenation.
Charts are inline SVG whose coordinates are computed here (numbers only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .events import escape_undecodable
from .units import format_duration, format_size

if TYPE_CHECKING:
    from jinja2 import Environment

    from .config import Config
    from .report import Report
    from .samples import Forecast, Sample
    from .server import ServerState

CHART_W, CHART_H = 600, 150
PAD_L, PAD_R, PAD_T, PAD_B = 92, 8, 14, 26


@lru_cache(maxsize=1)
def environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("janitor", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = lambda n: format_size(int(n or 0))
    env.filters["duration"] = lambda s: format_duration(float(s))
    env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"
    # undecodable bytes in a file name as visible \xNN (then escaped like any text)
    env.filters["name"] = escape_undecodable
    env.filters["days"] = _days
    return env


def _days(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


@dataclass
class Series:
    label: str
    css: str
    points: str  # "x,y x,y ..." in the chart's viewBox
    last: str


@dataclass
class Chart:
    title: str
    series: list[Series]
    y_labels: list[tuple[float, str]]  # (y, text)
    x_labels: list[tuple[float, str]]
    threshold_y: float | None = None
    threshold_label: str = ""
    width: int = CHART_W
    height: int = CHART_H
    empty: bool = False
    pad_l: int = PAD_L


def _scale(values: list[float], lo: float, hi: float) -> list[float]:
    span = hi - lo or 1.0
    top, bottom = PAD_T, CHART_H - PAD_B
    return [bottom - (v - lo) / span * (bottom - top) for v in values]


def _xs(times: list[float]) -> list[float]:
    t0, t1 = times[0], times[-1]
    span = t1 - t0 or 1.0
    return [PAD_L + (t - t0) / span * (CHART_W - PAD_L - PAD_R) for t in times]


def _x_labels(times: list[float]) -> list[tuple[float, str]]:
    fmt = "%H:%M" if times[-1] - times[0] < 86400 else "%m-%d %H:%M"
    return [(PAD_L, time.strftime(fmt, time.localtime(times[0]))),
            (CHART_W - PAD_R, time.strftime(fmt, time.localtime(times[-1])))]


def usage_chart(samples: list[Sample], threshold_pct: float | None) -> Chart:
    """Filesystem use (%) over time, 0..100, with the threshold drawn across."""
    if len(samples) < 2:
        return Chart("filesystem used", [], [], [], empty=True)
    times = [s.ts for s in samples]
    ys = _scale([s.used_pct for s in samples], 0.0, 100.0)
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(_xs(times), ys, strict=True))
    y_labels = [(_scale([v], 0.0, 100.0)[0], f"{v:g}%") for v in (0, 50, 100)]
    thr = _scale([threshold_pct], 0.0, 100.0)[0] if threshold_pct is not None else None
    return Chart("filesystem used", [Series("used", "s-used", pts, f"{samples[-1].used_pct:.1f}%")], y_labels,
                 _x_labels(times), thr, f"threshold {threshold_pct:g}%" if threshold_pct is not None else "")


def size_chart(samples: list[Sample]) -> Chart:
    """Bytes under the path and the logs' share of them, over time."""
    if len(samples) < 2:
        return Chart("size under the path", [], [], [], empty=True)
    times = [s.ts for s in samples]
    hi = max(max(s.bytes for s in samples), 1)
    xs = _xs(times)
    series = []
    for label, css, values in (("all files", "s-bytes", [float(s.bytes) for s in samples]),
                               ("logs", "s-logs", [float(s.log_bytes) for s in samples])):
        ys = _scale(values, 0.0, float(hi))
        series.append(Series(label, css, " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True)),
                             format_size(int(values[-1]))))
    y_labels = [(_scale([v], 0.0, float(hi))[0], format_size(int(v))) for v in (0.0, hi / 2, float(hi))]
    return Chart("size under the path", series, y_labels, _x_labels(times))


@dataclass
class PathView:
    """Everything the page shows about one policy path beyond the report's own numbers."""

    path: str
    log_bytes: int | None = None
    usage: Chart | None = None
    sizes: Chart | None = None
    forecast: Forecast | None = None
    warnings: list[Any] = field(default_factory=list)


def render_report_page(report: Report, paths: dict[str, PathView] | None = None, *,
                       runs: list[dict[str, Any]] | None = None) -> str:
    """`janitor report --html`: one self-contained page, no scripts, nothing loaded from elsewhere."""
    return environment().get_template("report.html.j2").render(
        report=report, views=paths or {}, runs=runs or [], generated=report.generated)


def path_views(config: Any, report: Report, checks: list[Any] | None = None) -> dict[str, PathView]:
    """Trend charts and forecasts per report path, from the samples table."""
    from .samples import forecast, load

    views: dict[str, PathView] = {}
    now = time.time()
    for p in report.paths:
        samples = load(config, p.path, since=now - 7 * 86400, limit=400)
        view = PathView(p.path)
        if samples:
            view.log_bytes = samples[-1].log_bytes
            view.usage = usage_chart(samples, p.threshold_pct)
            view.sizes = size_chart(samples)
            view.forecast = forecast(samples, p.threshold_pct, now)
        view.warnings = [c for c in (checks or []) if c.path == p.path]
        views[p.path] = view
    return views


def _context(state: ServerState) -> dict[str, Any]:
    from .history import recent_runs
    from .report import build_report
    from .watch import check_all

    report = build_report(state.config)
    # measured now, like the rest of the page (the sampler's last checks may be minutes old)
    return {"report": report, "views": path_views(state.config, report, check_all(state.config)),
            "runs": recent_runs(state.config, 10), "generated": report.generated, "host": state.host}


CONTENT_TTL = 10.0  # seconds: many open dashboards cost one plan, walk and /proc scan per TTL


def render_dashboard_content(state: ServerState) -> str:
    """The dashboard's data as HTML, rendered at most once per CONTENT_TTL for all viewers."""
    with state.content_lock:
        cached = state.content_cache
        if cached is not None and time.monotonic() - cached[0] < CONTENT_TTL:
            return cached[1]
        html = environment().get_template("dashboard_content.html.j2").render(**_context(state))
        state.content_cache = (time.monotonic(), html)
        return html


def render_dashboard(state: ServerState, *, with_content: bool) -> str:
    from markupsafe import Markup

    content = Markup(render_dashboard_content(state)) if with_content else None
    return environment().get_template("dashboard.html.j2").render(
        content=content, needs_token=state.token is not None, host=state.host, refresh_seconds=30)


def render_report_html(report: Report, config: Config | None = None) -> str:
    """The self-contained HTML page (Jinja2 templates shared with the `serve` dashboard,
    autoescaped: file names are attacker-chosen text). With `config`, trend charts and the
    forecast from the samples janitor recorded are drawn too."""
    return render_report_page(report, path_views(config, report) if config is not None else None)
