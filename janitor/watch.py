"""Watch-only thresholds (`action: warn`): measure, compare, tell; never touch a file.

A warn policy names `when_disk_above` (the filesystem holding its path) and/or
`when_size_above` (the total size of the files its globs select under the path). Each run,
and `janitor serve` at its sample interval, measures them; every threshold passed becomes a
`threshold_exceeded` event (path, used, total, percent, threshold) and the per-policy gauge
`janitor_threshold_exceeded` is 1. `janitor guard` ignores warn policies unless the policy
says `block_guard: true`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .disk import disk_usage

if TYPE_CHECKING:
    from .config import Config, Policy
    from .events import EventLog


@dataclass(frozen=True)
class ThresholdCheck:
    """One threshold of one warn policy, measured now."""

    policy: str
    path: str
    kind: str  # "disk": used/total are the filesystem's; "size": used is the path's matched bytes
    used: int
    total: int
    percent: float  # disk: used share of the filesystem; size: used as a share of the limit
    threshold: str  # as an operator reads it: "90%" or "10.0 GiB"
    exceeded: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matched_bytes(config: Config, policy: Policy) -> int:
    """Total size of the regular files the policy's globs select under its path (read-only walk)."""
    from .planner import janitor_dirs
    from .scan import walk_files

    selects = policy.selector()
    total = 0
    for rel, _kind, st in walk_files(policy.path, one_filesystem=config.effective_one_filesystem(policy),
                                     skip_inodes=janitor_dirs(config)):
        if st is not None and selects(rel):
            total += st.st_size
    return total


def check_policy(config: Config, policy: Policy) -> list[ThresholdCheck]:
    """Each threshold the policy declares, measured now. A path that cannot be measured
    yields a check with `error` set and `exceeded` False."""
    from .units import format_size

    out: list[ThresholdCheck] = []
    if policy.when_disk_above is not None:
        threshold = f"{policy.when_disk_above:g}%"
        try:
            usage = disk_usage(policy.path)
        except OSError as exc:
            out.append(ThresholdCheck(policy.name, policy.path, "disk", 0, 0, 0.0, threshold, False,
                                      f"cannot measure: {exc.strerror}"))
        else:
            pct = round(usage.used_pct, 2)
            out.append(ThresholdCheck(policy.name, policy.path, "disk", usage.used, usage.used + usage.free, pct,
                                      threshold, usage.used_pct > policy.when_disk_above))
    if policy.when_size_above is not None:
        limit = policy.when_size_above
        threshold = format_size(limit)
        try:
            used = matched_bytes(config, policy)
        except OSError as exc:
            out.append(ThresholdCheck(policy.name, policy.path, "size", 0, limit, 0.0, threshold, False,
                                      f"cannot measure: {exc.strerror}"))
        else:
            pct = round(100.0 * used / limit, 2) if limit else 100.0
            out.append(ThresholdCheck(policy.name, policy.path, "size", used, limit, pct, threshold, used > limit))
    return out


def warn_policies(config: Config) -> tuple[Policy, ...]:
    return tuple(p for p in config.select(None) if p.action == "warn")


def check_all(config: Config) -> list[ThresholdCheck]:
    """Every enabled warn policy's thresholds, measured now."""
    return [c for p in warn_policies(config) for c in check_policy(config, p)]


def emit_exceeded(checks: list[ThresholdCheck], events: EventLog) -> int:
    """One `threshold_exceeded` warning per threshold passed; returns how many."""
    n = 0
    for c in checks:
        if c.exceeded:
            n += 1
            events.emit("threshold_exceeded", "warning", policy=c.policy, path=c.path, kind=c.kind, used=c.used,
                        total=c.total, percent=c.percent, threshold=c.threshold,
                        message=f"{c.path}: {c.kind} {c.percent:.1f}% "
                                f"({'used' if c.kind == 'disk' else 'of the size limit'}), above {c.threshold}")
    return n


def add_threshold_metrics(registry: Any, config: Config, checks: list[ThresholdCheck] | None = None) -> None:
    """`janitor_threshold_exceeded{policy,path,kind}` (1/0) and the measured ratio against each
    warn threshold, into a prometheus_client registry (textfile and /metrics alike)."""
    from prometheus_client import Gauge

    checks = check_all(config) if checks is None else checks
    if not checks:
        return
    exceeded = Gauge("janitor_threshold_exceeded", "1 while a warn policy's threshold is passed (kind: disk or size).",
                     ("policy", "path", "kind"), registry=registry)
    ratio = Gauge("janitor_threshold_ratio", "Measured value as a share of the warn threshold's scale (disk: used "
                  "share of the filesystem; size: bytes over the limit, 1 = at the limit).",
                  ("policy", "path", "kind"), registry=registry)
    for c in checks:
        if c.error is not None:
            continue
        exceeded.labels(c.policy, c.path, c.kind).set(1 if c.exceeded else 0)
        ratio.labels(c.policy, c.path, c.kind).set(round(c.percent / 100.0, 6))
