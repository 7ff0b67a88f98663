"""What an operator sees at the command line: exit codes, closed pipes, JSON logs of failed
commands, escaped names, plurals, summaries (issue 12: defects 10, 12, 14 and friction)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DAY, ROOT, Tree

POLICY = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
policies:
  - name: logs
    path: {root}
    match: ["*.log"]
    older_than: 1d
    action: delete
"""

BAD = "version: 1\npolicies: [{name: x, path: /nonexistent-dir, action: delete, older_than: soon}]\n"


def json_lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def shell(command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JANITOR_CONFIG", "JANITOR_LOG_FORMAT")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


@pytest.fixture
def many_logs(tree: Tree) -> Tree:
    for i in range(3000):  # far more than a pipe buffer of plan output
        tree.file(f"app-{i:04d}.log", 10, age=3 * DAY)
    return tree


@pytest.mark.parametrize("extra", ["", "--json"])
def test_plan_into_head_exits_0(many_logs: Tree, write_config, tmp_path: Path, extra: str) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY)
    proc = shell(f"{sys.executable} -m janitor plan -c {cfg} {extra} | head -1", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1
    assert "error" not in proc.stderr.lower()


def test_run_into_head_keeps_the_runs_exit_code(many_logs: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY)
    proc = shell(f"{sys.executable} -m janitor run -c {cfg} --json | head -1", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert many_logs.files() == []  # the run did all its work


def test_plan_on_a_symlinked_policy_path_exits_1_like_run(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("old.log", 10, age=3 * DAY)
    link = tmp_path / "link"
    link.symlink_to(tree.root)
    cfg = write_config(POLICY, root=link)
    plan = cli("plan", "-c", cfg)
    assert plan.returncode == 1 and "symlink" in plan.stdout
    assert cli("plan", "-c", cfg, "--json").returncode == 1
    run = cli("run", "-c", cfg)
    assert run.returncode == 1
    assert tree.files() == ["old.log"]


def test_validate_json_prints_the_problems_of_a_bad_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    proc = cli("validate", "-c", bad, "--json")
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["valid"] is False
    (problem,) = data["problems"]
    assert problem["file"] == str(bad) and problem["line"] == 2 and "older_than" in problem["message"]


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["run"], ["report"], ["trash", "list"], ["history"]])
def test_a_configuration_error_reaches_the_json_log_and_the_log_file(cli, tmp_path: Path, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    log = tmp_path / "janitor.log"
    proc = cli(*command, "-c", bad, "--log-format", "json", "--log-file", log)
    assert proc.returncode == 2
    (event,) = json_lines(proc.stderr)  # stderr is JSON only
    assert event["event"] == "command_failed" and event["code"] == "E_CONFIG" and event["level"] == "error"
    assert event["command"] == command[0]
    assert any("older_than" in p for p in event["problems"])
    assert json_lines(log.read_text()) == [event]


def test_an_unsafe_state_dir_reaches_the_json_log(tree: Tree, write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    state_dir.mkdir(mode=0o777)
    state_dir.chmod(0o777)
    cfg = write_config(POLICY)
    proc = cli("run", "-c", cfg, "--log-format", "json")
    assert proc.returncode != 0
    events = json_lines(proc.stderr)
    assert [e["event"] for e in events] == ["command_failed"]
    assert events[0]["code"] == "E_UNSAFE" and "writable by group or others" in events[0]["message"]
    text = cli("run", "-c", cfg)  # and in text, one line, as before
    assert text.stderr.startswith("janitor: ") and "writable by group or others" in text.stderr


def test_settings_log_file_gets_the_failure_of_a_loaded_config(tree: Tree, write_config, cli, state_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state_dir.mkdir(mode=0o777)
    state_dir.chmod(0o777)
    log = tmp_path / "from-settings.log"
    cfg = write_config(POLICY.replace("  settle: 0s\n", f"  settle: 0s\n  log_file: {log}\n"))
    proc = cli("run", "-c", cfg)
    assert proc.returncode != 0 and "writable by group" in proc.stderr
    (event,) = json_lines(log.read_text())
    assert event["event"] == "command_failed" and event["code"] == "E_UNSAFE"


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "typer"])
def test_guard_refusal_reaches_the_json_log(cli, tmp_path: Path, fast: bool) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "guard.log"
    args = ["guard", "--path", str(tmp_path), "--max-used", "0%", "--log-format", "json", "--log-file", str(log)]
    if fast:
        proc = cli(*args)  # the console entry point: a plain guard command line never imports typer
    else:  # the typer command, as for `guard` command lines the fast parser leaves to it
        env = {k: v for k, v in os.environ.items() if k not in ("JANITOR_CONFIG", "JANITOR_LOG_FORMAT")}
        proc = subprocess.run([sys.executable, "-c", "import sys; from janitor.cli import main; main(sys.argv[1:])",
                               *args], capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)},
                              cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    (event,) = json_lines(proc.stderr)
    assert event["event"] == "guard_refused" and event["level"] == "error" and "must be freed" in event["message"]
    assert json_lines(log.read_text()) == [event]
    usage = cli("guard", "--path", str(tmp_path / "nope"), "--max-used", "80%", "--log-format", "json")
    assert usage.returncode == 2
    (failed,) = json_lines(usage.stderr)
    assert failed["event"] == "command_failed" and failed["code"] == "E_USAGE"


def test_a_newline_in_a_name_is_escaped_alike_in_error_lines_and_tables(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("evil\nname.log", 10, age=3 * DAY)
    cfg = write_config(POLICY)
    assert "evil\\nname.log" in cli("plan", "-c", cfg).stdout  # the table
    link = tmp_path / "li\nnk"
    link.symlink_to(tree.root)
    cfg = write_config(POLICY.replace("path: {root}", "path: " + json.dumps(str(link))))
    plan = cli("plan", "-c", cfg)
    assert "li\\nnk is a symlink" in plan.stdout
    run = cli("run", "-c", cfg)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "li\\nnk is a symlink" in errors[0], run.stderr
    assert not any(line.startswith("nk") for line in run.stderr.splitlines() + run.stdout.splitlines())
    guard = cli("guard", "--path", str(tmp_path / "no\nsuch"), "--max-used", "80%")
    assert guard.returncode == 2 and guard.stderr.splitlines() == [f"janitor: --path {tmp_path}/no\\nsuch: no such file or directory"]
    over = cli("guard", "--path", str(link), "--max-used", "0%")
    assert over.returncode == 1 and len(over.stderr.splitlines()) == 1 and "li\\nnk is" in over.stderr, over.stderr


def test_a_run_error_is_printed_once(tree: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On a terminal or in the journal (stdout and stderr one file) the error line is not
    repeated by the summary; with stdout apart (`run > result.txt`) each gets it."""
    link = tmp_path / "link"
    link.symlink_to(tree.root)
    cfg = write_config(POLICY, root=link)
    together = shell(f"{sys.executable} -m janitor run -c {cfg} 2>&1", tmp_path)
    assert together.returncode == 1 and together.stdout.count("is a symlink") == 1, together.stdout
    apart = shell(f"{sys.executable} -m janitor run -c {cfg}", tmp_path)
    assert apart.stdout.count("is a symlink") == 1 and apart.stderr.count("is a symlink") == 1


def test_metrics_textfile_is_0644_under_the_units_umask(tree: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("old.log", 10, age=3 * DAY)
    cfg = write_config(POLICY)
    metrics = tmp_path / "textfile" / "janitor.prom"
    for _ in range(2):  # created, then replaced: both times 0644, atomically, no temp left behind
        proc = shell(f"umask 077; {sys.executable} -m janitor run -c {cfg} --metrics-file {metrics}", tmp_path)
        assert proc.returncode == 0, proc.stderr
        st = metrics.stat()
        assert oct(st.st_mode & 0o777) == oct(0o644) and st.st_nlink == 1
        assert "janitor_last_run_timestamp_seconds" in metrics.read_text()
        assert os.listdir(metrics.parent) == ["janitor.prom"]


@pytest.mark.parametrize(("setting", "mode"), [("", 0o640), ("  log_file_mode: '0600'\n", 0o600),
                                               ("  log_file_mode: '644'\n", 0o644)])
def test_log_file_is_created_with_the_configured_mode(tree: Tree, write_config, tmp_path: Path, setting: str, mode: int) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "janitor.log"
    cfg = write_config(POLICY.replace("  settle: 0s\n", f"  settle: 0s\n  log_file: {log}\n{setting}"))
    proc = shell(f"umask 077; {sys.executable} -m janitor run -c {cfg}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert oct(log.stat().st_mode & 0o777) == oct(mode)
    assert json_lines(log.read_text())[0]["event"] == "run_started"


def test_an_existing_log_file_keeps_its_mode_and_a_symlink_is_refused(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "janitor.log"
    log.write_text("")
    log.chmod(0o604)
    cfg = write_config(POLICY)
    assert cli("run", "-c", cfg, "--log-file", log).returncode == 0
    assert log.stat().st_mode & 0o777 == 0o604 and json_lines(log.read_text())
    secret = tmp_path / "shadow"
    secret.write_text("root:x\n")
    link = tmp_path / "evil.log"
    link.symlink_to(secret)
    tree.file("old.log", 10, age=3 * DAY)
    proc = cli("run", "-c", cfg, "--log-file", link)
    assert proc.returncode == 1 and "cannot use it: a symlink" in proc.stderr and "internal error" not in proc.stderr
    assert secret.read_text() == "root:x\n"
    assert tree.files() == ["old.log"]  # refused before the run: nothing was acted on


def test_log_file_mode_must_be_a_quoted_octal_mode(write_config, cli) -> None:  # type: ignore[no-untyped-def]
    for bad in ("0640", "'0777'", "'rw-r-----'"):  # unquoted YAML 0640 is a number
        cfg = write_config(POLICY.replace("  settle: 0s\n", f"  settle: 0s\n  log_file_mode: {bad}\n"))
        proc = cli("validate", "-c", cfg)
        assert proc.returncode == 2 and "log_file_mode" in proc.stderr, (bad, proc.stderr)


SOFT = """\
version: 1
settings:
  state_dir: {state}
  settle: 0s
policies:
  - name: renders
    path: {root}
    match: ["**/*.mp4"]
    older_than: 1d
    action: soft-delete
    retain: 1s
"""


def test_trash_list_sorted_history_narrow_and_retain_in_the_summary(tree: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    for name in ("m/zeta.mp4", "a/alpha.mp4", "q/mid.mp4", "b/beta.mp4"):
        tree.file(name, 2000, age=3 * DAY)
    cfg = write_config(SOFT)
    first = cli("run", "-c", cfg)
    assert first.returncode == 0 and "4 files, 7.8 KiB; 0 failures" in first.stdout
    listed = [line.split()[-3] for line in cli("trash", "list", "-c", cfg).stdout.splitlines()[1:-1]]
    assert listed == sorted(listed) and len(listed) == 4, listed
    history = cli("history", "-c", cfg, env={"COLUMNS": "120"}).stdout
    rows = [line.rstrip() for line in history.splitlines() if not line.startswith("run ")]
    assert rows and max(len(line) for line in rows) <= 120, history  # the header names the (long) policy path once
    assert "in the trash at" in history and "4 entries" in history
    trashed = time.time()
    while time.time() < trashed + 1.5:  # let retain: 1s expire (an age, not a synchronisation)
        time.sleep(0.1)
    tree.file("c/one.mp4", 2000, age=3 * DAY)
    second = cli("run", "-c", cfg)
    assert second.returncode == 0
    assert "retain: 4 files purged from the trash for good, 7.8 KiB" in second.stdout
    assert "1 file, 2.0 KiB; 0 failures" in second.stdout  # "1 file", not "1 files"
    data = json.loads(cli("run", "-c", cfg, "--json").stdout)
    assert data["trash_purged"]["bytes"] == 2000 * data["trash_purged"]["files"]


def test_trash_purge_without_a_filter_names_only_what_it_accepts(write_config, cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("trash", "purge", "-c", write_config(SOFT))
    assert proc.returncode == 2
    assert "--older-than" in proc.stderr and "--all" in proc.stderr
    # every form the message suggests is accepted: its example glob included (issue 12, item 16)
    example = re.search(r"\(e\.g\. '([^']+)'\)", proc.stderr)
    assert example is not None, proc.stderr
    accepted = cli("trash", "purge", "-c", write_config(SOFT), example.group(1), "--dry-run")
    assert accepted.returncode == 0, accepted.stderr


def test_validate_json_also_logs_and_a_usage_error_is_json(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    proc = cli("validate", "-c", bad, "--json", "--log-format", "json")
    assert proc.returncode == 2 and json.loads(proc.stdout)["valid"] is False
    (event,) = json_lines(proc.stderr)
    assert event["event"] == "command_failed" and event["message"] == "1 problem in the policy files"
    usage = cli("run", "--no-such-option", "--log-format", "json")
    assert usage.returncode == 2
    (event,) = json_lines(usage.stderr)
    assert event["code"] == "E_USAGE" and "--no-such-option" in event["message"]


def test_restore_and_purge_dry_runs_change_nothing(tree: Tree, write_config, cli, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    tree.file("a/one.mp4", 1500, age=3 * DAY)
    tree.file("b/two.mp4", 2500, age=3 * DAY)
    cfg = write_config(SOFT.replace("    retain: 1s\n", ""))
    assert cli("run", "-c", cfg).returncode == 0
    before = sorted(str(p) for p in state_dir.rglob("*") if p.is_file() and "catalog" not in p.name)
    restore = cli("restore", "-c", cfg, "--all", "--dry-run")
    assert restore.returncode == 0
    assert "dry run: 2 files, 3.9 KiB would be restored from the trash; nothing changed" in restore.stdout
    assert f"would restore {tree.root}/a/one.mp4 (1.5 KiB)" in restore.stdout
    purge = json.loads(cli("trash", "purge", "-c", cfg, "--all", "--dry-run", "--json").stdout)
    assert purge["dry_run"] is True and (purge["files"], purge["bytes"]) == (2, 4000)
    assert sorted(e["path"] for e in purge["would_purge"]) == [f"{tree.root}/a/one.mp4", f"{tree.root}/b/two.mp4"]
    assert tree.files() == []  # nothing restored
    assert sorted(str(p) for p in state_dir.rglob("*") if p.is_file() and "catalog" not in p.name) == before
    assert len(json.loads(cli("trash", "list", "-c", cfg, "--json").stdout)) == 2  # nothing purged


@pytest.mark.parametrize("args", [["plan"], ["plan", "--json"], ["validate"], ["validate", "--json"], ["report"],
                                  ["history"], ["trash", "list"], ["--version"]], ids=" ".join)
def test_a_reader_gone_before_the_first_byte_is_not_a_failure(tree: Tree, write_config, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    """stdout is a pipe whose reader has already exited: every write fails with EPIPE."""
    tree.file("old.log", 10, age=3 * DAY)
    cfg = write_config(POLICY)
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k not in ("JANITOR_CONFIG", "JANITOR_LOG_FORMAT")}
    command = [*args] if args == ["--version"] else [*args, "-c", str(cfg)]
    try:
        proc = subprocess.run([sys.executable, "-m", "janitor", *command], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
