"""JSON event logs, Prometheus metrics, history and the storage report, on real runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DAY, Tree

POLICY = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
  guard_max_used: 99.9%
policies:
  - name: videos
    path: {root}
    match: ["**/*.mp4"]
    older_than: 7d
    action: soft-delete
  - name: zips
    path: {root}
    match: ["*.zip"]
    older_than: 1h
    action: delete
"""


@pytest.fixture
def populated(tree: Tree) -> Tree:
    tree.file("a/old.mp4", 1000, age=10 * DAY)
    tree.file("b/older.mp4", 3000, age=40 * DAY)
    tree.file("new.mp4", 500, age=DAY)
    tree.file("x.zip", 200, age=2 * 3600)
    return tree


def json_lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("how", ["after", "before", "env", "settings"])
def test_every_json_log_line_parses_and_carries_the_fields(populated: Tree, write_config, cli, writer, how: str) -> None:  # type: ignore[no-untyped-def]
    text = POLICY
    if how == "settings":
        text = text.replace("  settle: 0s\n", "  settle: 0s\n  log_format: json\n")
    cfg = write_config(text)
    busy = populated.file("c/busy.mp4", 10, age=10 * DAY)
    writer(busy)
    os.utime(busy, (0, populated.now - 10 * DAY))
    args = {"after": ("run", "-c", cfg, "--log-format", "json"), "before": ("--log-format", "json", "run", "-c", cfg),
            "env": ("run", "-c", cfg), "settings": ("run", "-c", cfg)}[how]
    env = {"JANITOR_LOG_FORMAT": "json"} if how == "env" else None
    proc = cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stderr)
    run_ids = {e["run_id"] for e in events}
    assert len(run_ids) == 1 and None not in run_ids
    for e in events:
        assert {"ts", "level", "event", "run_id"} <= set(e), e
        assert datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    by_name = {}
    for e in events:
        by_name.setdefault(e["event"], []).append(e)
    assert {os.path.basename(e["path"]) for e in by_name["file_soft_deleted"]} == {"old.mp4", "older.mp4"}
    assert [os.path.basename(e["path"]) for e in by_name["file_deleted"]] == ["x.zip"]
    for e in by_name["file_soft_deleted"] + by_name["file_deleted"]:
        assert {"policy", "action", "path", "bytes"} <= set(e)
    skip = by_name["file_skipped"][0]
    assert skip["path"].endswith("busy.mp4") and skip["reason"].startswith("open for writing by pid")
    assert skip["code"] == "open_for_write"
    assert by_name["run_finished"][0]["files"] == 3


def test_log_file_appends_json_and_survives_rotation(populated: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY)
    log = tmp_path / "janitor.log"
    assert cli("run", "-c", cfg, "--log-file", log).returncode == 0
    first = json_lines(log.read_text())
    assert first[0]["event"] == "run_started" and first[-1]["event"] == "run_finished"
    os.rename(log, tmp_path / "janitor.log.1")  # rotated away by janitor itself or logrotate
    assert cli("run", "-c", cfg, "--log-file", log).returncode == 0
    second = json_lines(log.read_text())
    assert second[0]["event"] == "run_started" and second[0]["run_id"] != first[0]["run_id"]


def test_text_mode_prints_no_per_file_lines(populated: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("run", "-c", write_config(POLICY))
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_run_failed_event_and_exit_1_on_a_corrupt_catalog(populated: Tree, write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    state_dir.mkdir(mode=0o700)
    (state_dir / "catalog.db").write_bytes(b"this is not a database" * 100)
    before = populated.files()
    proc = cli("run", "-c", write_config(POLICY), "--log-format", "json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "catalog" in proc.stderr and "cannot be used" in proc.stderr
    assert populated.files() == before  # no partial work


def test_metrics_file_parses_with_prometheus_client(populated: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    metrics = tmp_path / "textfile" / "janitor.prom"
    assert cli("run", "-c", write_config(POLICY), "--metrics-file", metrics).returncode == 0
    samples = {}
    for family in text_string_to_metric_families(metrics.read_text()):
        for s in family.samples:
            assert s.labels.pop("host") == os.uname().nodename  # every series names its host (fleet)
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("janitor_files", (("action", "soft-delete"), ("policy", "videos")))] == 2
    assert samples[("janitor_bytes", (("action", "soft-delete"), ("policy", "videos")))] == 4000
    assert samples[("janitor_files", (("action", "delete"), ("policy", "zips")))] == 1
    assert samples[("janitor_trash_files", ())] == 2
    assert samples[("janitor_trash_bytes", ())] == 4000
    assert samples[("janitor_last_run_exit_code", ())] == 0
    assert abs(samples[("janitor_last_run_timestamp_seconds", ())] - time.time()) < 120
    assert samples[("janitor_last_success_timestamp_seconds", ())] == samples[("janitor_last_run_timestamp_seconds", ())]
    used = [v for (name, _), v in samples.items() if name == "janitor_filesystem_used_ratio"]
    assert used and all(0 < v < 1 for v in used)
    assert not list(metrics.parent.glob("*.tmp*"))  # written atomically


def test_history_says_where_each_file_is_now(populated: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY)
    run = json.loads(cli("run", "-c", cfg, "--json").stdout)
    cli("restore", "-c", cfg, str(populated.root / "a" / "old.mp4"))
    rows = json.loads(cli("history", "-c", cfg, "--json").stdout)
    where = {os.path.relpath(r["path"], populated.root): r["where_now"] for r in rows}
    assert where["a/old.mp4"].startswith("restored to its original path")
    assert where["b/older.mp4"].startswith("in the trash at ")
    assert where["x.zip"] == "deleted"
    assert all(r["run_id"] == run["run_id"] for r in rows)
    only = json.loads(cli("history", "-c", cfg, "--json", "--policy", "zips").stdout)
    assert [os.path.basename(r["path"]) for r in only] == ["x.zip"]
    by_glob = json.loads(cli("history", "-c", cfg, "--json", "--path", "*/b/*").stdout)
    assert [os.path.basename(r["path"]) for r in by_glob] == ["older.mp4"]
    assert json.loads(cli("history", "-c", cfg, "--json", "--run", "nope").stdout) == []
    assert len(json.loads(cli("history", "-c", cfg, "--json", "--since", "1h").stdout)) == 3
    table = cli("history", "-c", cfg).stdout
    assert "where now" in table and "in the trash at" in table


def test_report_on_the_catalog_of_a_real_run(populated: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY)
    cli("run", "-c", cfg)
    data = json.loads(cli("report", "-c", cfg, "--json").stdout)
    (path,) = data["paths"]
    assert path["path"] == str(populated.root)
    assert path["files"] == 1 and path["bytes"] == 500  # only new.mp4 is left
    assert path["threshold_pct"] == 99.9 and path["threshold_from"] == "settings.guard_max_used"
    assert [b["files"] for b in path["ages"]] == [0, 1, 0, 0, 0]
    assert path["largest"][0]["path"] == "new.mp4"
    assert data["trash_files"] == 2 and data["trash_bytes"] == 4000
    assert data["last_run"]["status"] == "ok" and data["last_run"]["files"] == 3
    assert {p["name"]: p["would_files"] for p in data["policies"]} == {"videos": 0, "zips": 0}


def test_report_shows_what_policies_would_free(populated: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(cli("report", "-c", write_config(POLICY), "--json").stdout)
    assert {p["name"]: (p["would_files"], p["would_bytes"]) for p in data["policies"]} == {
        "videos": (2, 4000), "zips": (1, 200)}
    assert data["last_run"] is None


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_report_renders_in_headless_chromium(populated: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY)
    cli("run", "-c", cfg)
    page = tmp_path / "report.html"
    proc = cli("report", "-c", cfg, "--html", page)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    if dom.returncode != 0 and not dom.stdout:
        pytest.skip(f"chromium cannot start here: {dom.stderr.strip()[-300:]}")
    assert "janitor storage report" in dom.stdout
    assert "what each policy would do now" in dom.stdout and "new.mp4" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_closed_log_pipe_does_not_stop_the_run(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`janitor run --log-format json 2>&1 | head -1`: the reader goes away, the run goes on."""
    import sys

    from conftest import ROOT

    cfg = write_config(POLICY)
    proc = subprocess.Popen([sys.executable, "-m", "janitor", "run", "-c", str(cfg), "--log-format", "json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert json.loads(first)["event"] == "run_started"
    proc.stderr.close()  # like head -1 exiting
    assert proc.wait(timeout=60) == 0
    assert populated.files() == ["new.mp4"]


def test_the_console_script_says_everything_before_its_fast_exit(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The console script skips the interpreter's teardown (os._exit) once a command is done:
    output still buffered for a file or a pipe must reach it, and exit codes are unchanged."""
    from conftest import ROOT, janitor_cmd

    env = {k: v for k, v in os.environ.items() if k not in ("JANITOR_CONFIG", "PYTHONUNBUFFERED")}
    env["PYTHONPATH"] = str(ROOT)
    cfg = write_config(POLICY)
    out = tmp_path / "plan.json"
    with open(out, "w") as f:  # a file: fully buffered, nothing reaches it without a flush
        proc = subprocess.run(janitor_cmd("plan", "--json", "-c", cfg), stdout=f, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    planned = {a["path"] for p in json.loads(out.read_text())["policies"] for a in p["actions"]}
    assert str(populated.root / "x.zip") in planned

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicies: [{name: x, path: /nonexistent-dir, action: delete, older_than: soon}]\n")
    proc = subprocess.run(janitor_cmd("validate", "-c", bad), capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 2 and "older_than" in proc.stdout + proc.stderr

    # output that cannot be written is not a success (120, as Python itself would exit) ...
    with open("/dev/full", "w") as full:
        proc = subprocess.run(janitor_cmd("plan", "--json", "-c", cfg), stdout=full, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT)
    assert proc.returncode == 120 and "Traceback" not in proc.stderr
    # ... and a closed stderr is not a crash
    proc = subprocess.run(janitor_cmd("validate", "-c", cfg), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env=env, cwd=ROOT, pass_fds=(), close_fds=True,
                          preexec_fn=lambda: os.close(2))
    assert proc.returncode == 0, proc.stdout
