"""packaging/prometheus/: the shipped alert rules, checked and unit-tested by promtool, and one
end-to-end alert: a real Prometheus scraping a real `janitor serve` while a tmpfs fills up."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from servefix import served, token_file

RULES = ROOT / "packaging" / "prometheus"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install prometheus)")
    return path


def test_promtool_check_rules() -> None:
    proc = subprocess.run([_need("promtool"), "check", "rules", str(RULES / "janitor-rules.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_test_rules() -> None:
    """Each alert fires on the series it is about, after its `for`, and absent() covers no series at all."""
    proc = subprocess.run([_need("promtool"), "test", "rules", "janitor-rules.test.yml"], cwd=RULES,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scrape_example_is_a_valid_config(tmp_path: Path) -> None:
    text = (RULES / "scrape-janitor.yml").read_text()
    for name in ("janitor.token", "rules/janitor-rules.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x" * 32 if name.endswith("token") else (RULES / "janitor-rules.yml").read_text())
    text = text.replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "prometheus.yml").write_text(text)
    proc = subprocess.run([_need("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_serve_metrics_pass_promtool_check_metrics(tmp_path: Path, write_config, tree) -> None:  # type: ignore[no-untyped-def]
    """Prometheus's own parser and linter on what /metrics serves (after a run, with a warn policy)."""
    promtool = _need("promtool")
    tree.file("运行实时日志.log", 5000)
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}, settle: 0s}}\npolicies:\n"
                       "  - {{name: logs, path: {root}, action: warn, when_size_above: 1KiB, when_disk_above: 1%}}\n",
                       root=tree.root)
    with served("-c", cfg, "--no-auth", "--sample-interval", "1s") as srv, httpx.Client(base_url=srv.url) as c:
        srv.wait_event("threshold_exceeded")
        r = c.post("/api/v1/runs", json={})
        assert r.status_code == 202
        text = c.get("/metrics").text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'janitor_threshold_exceeded{host="' in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_alert_fires_in_a_real_prometheus(tmpfs, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prometheus = _need("prometheus")
    root = tmpfs("fill", "4M")
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}}}\npolicies:\n"
                       "  - {{name: cache, path: {root}, action: warn, when_disk_above: 50%}}\n", root=root)
    token = "prom-" + "e" * 40
    # the shipped rules with every `for:` at 0s: the expressions are what this test is about
    # (promtool's unit tests cover the durations)
    rules = re.sub(r"for: \S+", "for: 0s", (RULES / "janitor-rules.yml").read_text())
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "prom.token").write_text(token)
    port = _free_port()
    with served("-c", cfg, "--token-file", token_file(tmp_path, token), "--sample-interval", "1s") as srv:
        target = srv.url.removeprefix("http://")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{tmp_path / 'rules.yml'}]\n"
            "scrape_configs:\n"
            "  - job_name: janitor\n"
            f"    authorization: {{type: Bearer, credentials_file: {tmp_path / 'prom.token'}}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            with httpx.Client(timeout=5) as c:
                def wait(what: str, check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline:
                        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                        try:
                            result = check(c)
                        except (httpx.HTTPError, ValueError, KeyError):
                            result = None  # Prometheus still starting: "Service Unavailable", not JSON
                        if result:
                            return result
                        time.sleep(0.5)  # Prometheus's own evaluation interval is 1 s
                    raise AssertionError(f"timed out waiting for {what}")

                def scraped(c: httpx.Client):  # type: ignore[no-untyped-def]
                    r = c.get(f"{api}/query", params={"query": 'janitor_filesystem_used_ratio{policy="cache"}'}).json()
                    return r["data"]["result"]

                series = wait("a scrape of janitor serve", scraped)
                assert series[0]["metric"]["host"] and float(series[0]["value"][1]) < 0.5

                def firing(c: httpx.Client):  # type: ignore[no-untyped-def]
                    alerts = c.get(f"{api}/alerts").json()["data"]["alerts"]
                    return [a for a in alerts if a["state"] == "firing"]

                assert not [a for a in firing(c) if a["labels"]["alertname"] == "JanitorFilesystemOverThreshold"]
                (root / "fill").write_bytes(b"x" * (3 * 1024 * 1024))  # 75% of the tmpfs

                def over(c: httpx.Client):  # type: ignore[no-untyped-def]
                    return [a for a in firing(c) if a["labels"]["alertname"] == "JanitorFilesystemOverThreshold"]

                alert = wait("JanitorFilesystemOverThreshold to fire", over)[0]
                assert alert["labels"]["path"] == str(root)
                names = wait("the watch alerts", lambda c: {
                    a["labels"]["alertname"] for a in firing(c)} >= {"JanitorWatchThresholdExceeded",
                                                                     "JanitorThresholdExceededRepeatedly"} and
                    {a["labels"]["alertname"] for a in firing(c)})
                assert "JanitorMetricsAbsent" in names  # it never ran: no success recorded anywhere
        finally:
            proc.terminate()
            proc.wait(30)
