"""action: warn: watch-only thresholds that report and never touch a file."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import snapshot

WARN = """\
version: 1
settings: {{state_dir: {state}, settle: 0s}}
policies:
  - name: cache
    path: {root}
    action: warn
    when_disk_above: DISK
    when_size_above: SIZE
    EXTRA
"""


def _warn(disk: str, size: str, extra: str = "") -> str:
    return WARN.replace("DISK", disk).replace("SIZE", size).replace("EXTRA", extra)


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_warn_reports_both_thresholds_and_touches_nothing(tmpfs, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    root = tmpfs("cache", "4M")
    (root / "运行实时日志.log").write_bytes(b"x" * (3 * 1024 * 1024))
    (root / "old.bin").write_bytes(b"y" * 1000)
    before = snapshot(root)
    cfg = write_config(_warn("50%", "1MiB", ""), root=root)
    metrics = root.parent / "janitor.prom"
    proc = cli("run", "-c", cfg, "--log-format", "json", "--metrics-file", metrics)
    assert proc.returncode == 0, proc.stderr
    exceeded = [e for e in _events(proc.stderr) if e["event"] == "threshold_exceeded"]
    assert {e["kind"] for e in exceeded} == {"disk", "size"}
    from prometheus_client.parser import text_string_to_metric_families

    gauges = {(s.labels["policy"], s.labels["kind"]): s.value
              for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples
              if s.name == "janitor_threshold_exceeded"}
    assert gauges == {("cache", "disk"): 1, ("cache", "size"): 1}  # the gauge per policy, in the textfile
    disk = next(e for e in exceeded if e["kind"] == "disk")
    size = next(e for e in exceeded if e["kind"] == "size")
    assert disk["path"] == str(root) and disk["threshold"] == "50%" and disk["percent"] > 50
    assert disk["total"] >= 4 * 1024 * 1024 - 65536 and disk["used"] >= 3 * 1024 * 1024
    assert size["used"] == 3 * 1024 * 1024 + 1000 and size["total"] == 1024 * 1024
    assert snapshot(root) == before  # never touches a file
    plan = json.loads(cli("plan", "-c", cfg, "--json").stdout)
    assert plan["files"] == 0 and plan["policies"][0]["skips"] == []


def test_warn_size_limit_is_checked_when_the_disk_is_under(tmpfs, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    root = tmpfs("cache", "16M")
    (root / "a.log").write_bytes(b"x" * 2048)
    cfg = write_config(_warn("99%", "1KiB", ""), root=root)
    proc = cli("run", "-c", cfg, "--log-format", "json")
    exceeded = [e for e in _events(proc.stderr) if e["event"] == "threshold_exceeded"]
    assert [e["kind"] for e in exceeded] == ["size"]


def test_warn_does_not_block_guard_unless_asked(tmpfs, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    root = tmpfs("cache", "4M")
    (root / "big").write_bytes(b"x" * (3 * 1024 * 1024))
    cfg = write_config(_warn("50%", "1GiB", ""), root=root)
    assert cli("guard", "-c", cfg, "--min-free", "1K").returncode == 0  # the warn threshold is not applied
    cfg = write_config(_warn("50%", "1GiB", "block_guard: true"), root=root)
    proc = cli("guard", "-c", cfg, "--min-free", "1K")
    assert proc.returncode == 1 and str(root) in proc.stderr


def test_warn_keys_are_validated(write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}}}\npolicies:\n"
                       "  - {{name: w, path: {root}, action: warn}}\n"
                       "  - {{name: d, path: {root}, action: delete, when_size_above: 1G}}\n")
    proc = cli("validate", "-c", cfg)
    assert proc.returncode == 2
    assert "warn needs when_disk_above and/or when_size_above" in proc.stderr
    assert "when_size_above: is not an option of action 'delete' (it belongs to warn)" in proc.stderr
