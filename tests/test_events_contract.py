"""docs/events.md is the contract: every event a real run and the commands around it emit
is in the doc's table, at the documented level, with only documented fields, and every
code is in the doc's code tables (issue 12, defect 11). The test parses the doc."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DAY, ROOT, Tree

DOC = ROOT / "docs" / "events.md"
FILE_FIELDS = {"policy", "action", "path", "bytes"}


def _table(title: str) -> list[list[str]]:
    """The rows of the first markdown table after the heading `title`."""
    text = DOC.read_text()
    section = text.split(f"## {title}", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header row


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def documented_events() -> dict[str, tuple[set[str], set[str]]]:
    """event name -> (levels, extra fields)."""
    out = {}
    for event, level, _when, extra in _table("Event names"):
        levels = set(re.findall(r"info|warning|error", level))
        for name in _ticked(event):
            out[name] = (levels, set(_ticked(extra)))
    return out


def documented_codes(title: str) -> set[str]:
    return {name for row in _table(title) for name in _ticked(row[0])}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def common_fields() -> set[str]:
    """The fields every event has: the doc's "Fields" table, plus `policy` (events about a policy)."""
    return {row[0].strip("`") for row in _table("Fields")} | {"policy"}


def check_against_doc(events: list[dict[str, Any]]) -> None:
    documented = documented_events()
    common = common_fields()
    assert {"ts", "level", "event", "run_id"} <= common, common
    skip_codes = documented_codes("Skip codes")
    error_codes = documented_codes("Error codes")
    for e in events:
        name = e["event"]
        assert name in documented, f"{name} is emitted but not in docs/events.md"
        levels, extra = documented[name]
        assert e["level"] in levels, f"{name} at level {e['level']}, documented {levels}"
        allowed = common | extra | (FILE_FIELDS if "path" in e else set())
        if name in ("file_skipped",):
            allowed |= {"reason", "code"}
        if name in ("file_failed",):
            allowed |= {"message", "code"}
        undocumented = set(e) - allowed
        assert not undocumented, f"{name} carries undocumented fields {undocumented}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", e["ts"])
        if name == "file_skipped":
            assert e["code"] in skip_codes, e
        elif "code" in e:
            assert e["code"] in error_codes, e


POLICY = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
  metrics_file: {metrics}
targets:
  nas:
    url: file://{target}
policies:
  - name: tmp-files
    path: {root}/tmp
    match: ["*.tmp"]
    older_than: 1d
    action: delete
  - name: renders
    path: {root}/out
    match: ["*.mp4"]
    older_than: 1d
    keep_newest: 1
    action: soft-delete
    retain: 1s
  - name: logs
    path: {root}/logs
    match: ["app.log"]
    larger_than: 1KiB
    action: truncate
    rotate: 2
  - name: cap
    path: {root}/cap
    max_files: 2
    action: quota
  - name: cold
    path: {root}/cold
    older_than: 1d
    action: archive
    target: nas
  - name: linked
    path: {link}
    older_than: 1d
    action: delete
"""


@pytest.fixture
def scene(tree: Tree, tmp_path: Path, write_config):  # type: ignore[no-untyped-def]
    for i in range(3):
        tree.file(f"tmp/x{i}.tmp", 100, age=2 * DAY)
        tree.file(f"out/r{i}.mp4", 1000 + i, age=(5 - i) * DAY)
        tree.file(f"cap/c{i}", 10, age=(5 - i) * DAY)
        tree.file(f"cold/a{i}.bin", 300, age=3 * DAY)
    tree.file("logs/app.log", "line\n" * 1000)
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tree.root / "tmp")
    (tmp_path / "not-a-dir").write_text("")
    return write_config(POLICY.format(state="{state}", root="{root}", target=tmp_path / "target",
                                      link=tmp_path / "link", metrics=tmp_path / "not-a-dir" / "janitor.prom"))


def test_every_event_of_a_real_run_and_its_commands_is_documented(scene: Path, cli, tree: Tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, Any]] = []

    def janitor(*args: Any) -> Any:
        proc = cli(*args, "--log-format", "json")
        seen.extend(json_lines(proc.stderr))
        return proc

    first = janitor("run", "-c", scene)
    assert first.returncode == 1  # the symlinked policy path fails its policy
    started = [e for e in seen if e["event"] == "run_started"]
    assert started and started[0]["policies"] == ["tmp-files", "renders", "logs", "cap", "cold", "linked"]
    trashed_at = time.time()
    while time.time() < trashed_at + 1.5:  # let `retain: 1s` expire: an age, not a synchronisation
        time.sleep(0.1)
    tree.file("out/r9.mp4", 10, age=3 * DAY)
    janitor("run", "-c", scene)  # purges by retain
    retained = [e for e in seen if e["event"] == "trash_purged"]
    assert retained and all(e["reason"] == "retain" and e["action"] == "soft-delete" and e["run_id"] for e in retained)
    janitor("restore", "-c", scene, "--all", "--no-hold")  # r9 back in place, unheld: the next run may trash it again
    tree.file("out/r9.mp4", 10, age=3 * DAY)  # occupied again ...
    janitor("run", "-c", scene)  # ... trashed again, then
    tree.file("out/r9.mp4", 10, age=0)  # a new file at its path
    janitor("restore", "-c", scene, "--all")  # restore_failed: E_EXISTS
    janitor("trash", "purge", "-c", scene, "--all")
    purged = [e for e in seen if e["event"] == "trash_purged" and e["reason"] == "trash purge"]
    assert purged and all(e["run_id"] and e["action"] == "soft-delete" and e["run"] for e in purged)
    janitor("guard", "--path", str(tmp_path), "--max-used", "0%")
    janitor("validate", "-c", tmp_path / "missing.yaml")
    names = {e["event"] for e in seen}
    for expected in ("run_started", "run_finished", "file_deleted", "file_soft_deleted", "log_truncated",
                     "quota_enforced", "file_archived", "file_skipped", "policy_failed", "trash_purged",
                     "file_restored", "restore_failed", "metrics_failed", "guard_refused", "command_failed"):
        assert expected in names, expected
    check_against_doc(seen)


def test_the_doc_lists_every_error_code_in_the_source() -> None:
    """A code an exception can carry into file_failed/policy_failed/run_failed/command_failed."""
    source = "\n".join(p.read_text() for p in (ROOT / "janitor").rglob("*.py"))
    codes = set(re.findall(r"\"(E_[A-Z_]+)\"", source))
    internal = {"E_FILE_SKIPPED", "E_FILE_CHANGED"}  # FileSkipped: reported as a skip code, never as an error
    missing = codes - internal - documented_codes("Error codes")
    assert not missing, f"error codes not in docs/events.md: {sorted(missing)}"


def test_every_skip_code_in_the_source_is_documented() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "janitor").rglob("*.py"))
    codes = set(re.findall(r"skip_code=\"([a-z_]+)\"", source)) | set(re.findall(r"Skip\([^)]*?\"([a-z_]+)\",", source, re.S))
    codes |= {"open_for_write", "locked", "under_threshold", "vanished", "changed"}
    assert codes - documented_codes("Skip codes") == set()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_events_emitted_at_once_are_the_events_emitted_one_by_one(fmt: str, tmp_path: Path) -> None:
    """`EventLog.emit_each` (a batch of files done): the same counts, bytes and lines as one
    `emit` per file, whether or not anything reads per-file events."""
    from janitor.events import EventLog

    files = [{"policy": "p", "action": "delete", "path": f"/srv/f{i}", "bytes": 10 + i} for i in range(5)]
    logs = []
    for how in ("one by one", "at once"):
        log = tmp_path / f"{how}.log"
        events = EventLog(fmt, log_file=str(log) if fmt == "json" else None)
        events.bind("r1")
        if how == "one by one":
            for f in files:
                events.emit("file_deleted", **f)
        else:
            events.emit_each("file_deleted", len(files), sum(int(f["bytes"]) for f in files), lambda: iter(files))
            events.emit_each("file_deleted", 0, 0, lambda: iter(()))
        events.close()
        lines = [json.loads(line) for line in log.read_text().splitlines()] if fmt == "json" else []
        logs.append((events.counts, events.bytes, [{k: v for k, v in e.items() if k != "ts"} for e in lines]))
    assert logs[0] == logs[1]
    assert logs[0][0] == {"file_deleted": 5} and logs[0][1] == {"file_deleted": 60}
    assert len(logs[0][2]) == (5 if fmt == "json" else 0)
