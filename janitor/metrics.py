"""Prometheus textfile-collector output, written atomically after every run.

Point node_exporter's `--collector.textfile.directory` at the directory of
`settings.metrics_file` (or `--metrics-file`). Metric names are documented in docs/metrics.md.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .catalog import Catalog
    from .config import Config
    from .execute import RunResult


def write_run_metrics(path: str, config: Config, result: RunResult, catalog: Catalog,
                      started: float, finished: float) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from .fleet import HostLabelled

    registry = CollectorRegistry()
    add_run_metrics(registry, config, result, catalog, started, finished)
    # every series carries host="<nodename>" (a fleet's textfiles stay apart)
    publish_textfile(path, generate_latest(HostLabelled(registry)))


def add_run_metrics(registry: CollectorRegistry, config: Config, result: RunResult, catalog: Catalog,
                    started: float, finished: float) -> None:
    """The run's metrics into `registry`: the textfile and `janitor serve`'s /metrics share this."""
    from prometheus_client import Gauge

    from .disk import disk_usage

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    gauge("janitor_last_run_timestamp_seconds", "When the last run finished (unix time).").set(finished)
    last_ok = finished if result.exit_code == 0 else _last_success(catalog)
    if last_ok is not None:
        gauge("janitor_last_success_timestamp_seconds", "When the last fully successful run finished.").set(last_ok)
    gauge("janitor_last_run_duration_seconds", "Wall time of the last run.").set(finished - started)
    gauge("janitor_last_run_exit_code", "Exit code of the last run (0 ok, 1 partial).").set(result.exit_code)

    files = gauge("janitor_files", "Files acted on in the last run.", ("policy", "action"))
    nbytes = gauge("janitor_bytes", "Bytes acted on in the last run.", ("policy", "action"))
    skipped = gauge("janitor_skipped_files", "Files skipped in the last run, by reason.", ("policy", "reason"))
    errors = gauge("janitor_errors", "Errors in the last run, by error code.", ("policy", "code"))
    status = gauge("janitor_policy_status", "1 for the status each policy ended the last run in.",
                   ("policy", "status"))
    for p in result.policies:
        files.labels(p.name, p.action).set(p.files)
        nbytes.labels(p.name, p.action).set(p.bytes)
        for reason, count in p.skipped.items():
            skipped.labels(p.name, reason).set(count)
        for code, count in p.errors.items():
            errors.labels(p.name, code).set(count)
        status.labels(p.name, p.status).set(1)

    used = gauge("janitor_filesystem_used_ratio", "Used share (0..1) of the filesystem holding each policy path.",
                 ("policy", "path"))
    for policy in config.policies:
        try:
            usage = disk_usage(policy.path)
        except OSError:
            continue
        used.labels(policy.name, policy.path).set(round(usage.used_pct / 100.0, 6))

    trash_files, trash_bytes = catalog.trash_totals()
    gauge("janitor_trash_files", "Files in the trash (restorable).").set(trash_files)
    gauge("janitor_trash_bytes", "Bytes in the trash (restorable).").set(trash_bytes)

    from .watch import add_threshold_metrics

    add_threshold_metrics(registry, config)


TEXTFILE_MODE = 0o644


def publish_textfile(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically, mode 0644 whatever the umask.

    node_exporter usually runs as another user; the packaged unit's UMask=0077 would make
    a file created the ordinary way unreadable to it, and its metrics would silently
    disappear. The temporary file has an unguessable name, is created O_EXCL|O_NOFOLLOW,
    gets its mode through the descriptor, is fsynced, then renamed over `path`: readers
    see the old file or the new one, never half of one.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, TEXTFILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _last_success(catalog: Catalog) -> float | None:
    row = catalog.db.execute("SELECT MAX(finished) FROM runs WHERE status='ok'").fetchone()
    return row[0] if row and row[0] else None


