"""`janitor guard` on a real 64 MiB tmpfs: exit codes, the one-line reasons, thresholds from
the config, --clean (also while another run holds the lock), and a start-up that imports
nothing heavy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fsutil import DAY, REPO, MiB, janitor_cmd, make_file, names, write_config

from janitor.guard import GuardRequest, parse_fast


def fill(directory: Path, count: int, size_mib: int = 5, suffix: str = ".bin") -> list[str]:
    now = time.time()
    out = []
    for i in range(count):
        make_file(directory / f"f{i:02d}{suffix}", size_mib * MiB, now - (count - i) * DAY)
        out.append(f"f{i:02d}{suffix}")
    return out


@pytest.fixture
def full(fs64: Path) -> Path:
    """The tmpfs with 40 of its 64 MiB used: 62.5%."""
    fill(fs64, 8)
    return fs64


def test_under_the_threshold_exits_0_and_says_nothing(full: Path) -> None:
    result = janitor_cmd("guard", "--path", str(full), "--max-used", "80%")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verbose_says_ok_on_stdout(full: Path) -> None:
    result = janitor_cmd("guard", "--path", str(full), "--max-used", "80%", "-v")
    assert result.returncode == 0
    assert result.stdout == f"janitor guard: {full} is 62.5% used (threshold 80%): ok\n"


def test_over_the_threshold_exits_1_with_one_line(full: Path) -> None:
    result = janitor_cmd("guard", "--path", str(full), "--max-used", "50%")
    assert result.returncode == 1
    assert result.stdout == ""
    # 40 MiB used, 32 MiB allowed
    assert result.stderr == f"janitor guard: {full} is 62.5% used (threshold 50%): 8.0 MiB must be freed\n"


def test_at_the_threshold_is_fine(full: Path) -> None:
    assert janitor_cmd("guard", "--path", str(full), "--max-used", "62.5%").returncode == 0


def test_min_free(full: Path) -> None:
    ok = janitor_cmd("guard", "--path", str(full), "--min-free", "24MiB")
    assert ok.returncode == 0, ok.stderr
    result = janitor_cmd("guard", "--path", str(full), "--min-free", "30MiB")
    assert result.returncode == 1
    assert result.stderr == f"janitor guard: {full} has 24.0 MiB free (minimum 30.0 MiB): 6.0 MiB must be freed\n"


def test_paths_on_one_filesystem_are_checked_once_against_the_strictest(full: Path, tmp_path: Path) -> None:
    (full / "a").mkdir()
    (full / "b").mkdir()
    result = janitor_cmd("guard", "--path", str(full / "a"), "--max-used", "55%",
                         "--path", str(full / "b"), "--max-used", "50%",
                         "--path", str(tmp_path), "--max-used", "100%")
    assert result.returncode == 1
    assert result.stderr == f"janitor guard: {full / 'b'} is 62.5% used (threshold 50%): 8.0 MiB must be freed\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--path", "/nonexistent/dir", "--max-used", "80%"], "janitor: --path /nonexistent/dir: no such file or directory"),
        (["--path", "{fs}", "--max-used", "80"], "janitor: --max-used: '80' is not a percent (examples: 80%, 92.5%)"),
        (["--path", "{fs}", "--max-used", "120%"], "janitor: --max-used: '120%' is not a percent: it is above 100%"),
        (["--path", "{fs}"], "janitor: 1 --path but 0 --max-used: give one --max-used per --path, in order"),
        (["--path", "{fs}", "--path", "{fs}", "--max-used", "80%"], "janitor: 2 --path but 1 --max-used"),
        (["--max-used", "80%"], "janitor: --max-used needs --path"),
        (["--path", "{fs}", "--min-free", "5 lightyears"], "janitor: --min-free: '5 lightyears' is not a size"),
        (["--path", "{fs}", "--max-used", "80%", "--lock-timeout", "-1"], "janitor: --lock-timeout must not be negative"),
        (["--path", "{fs}", "--max-used", "80%", "--bogus"], "No such option: --bogus"),
        (["--path", "{fs}", "--max-used"], "Option '--max-used' requires an argument"),
        (["--path", "{fs}", "--max-used", "80%", "--lock-timeout", "soon"], "Invalid value for '--lock-timeout'"),
    ],
)
def test_bad_usage_exits_2(fs64: Path, args: list[str], message: str) -> None:
    result = janitor_cmd("guard", *[a.replace("{fs}", str(fs64)) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_nothing_to_check_is_bad_usage(fs64: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [{"name": "p", "path": str(fs64), "action": "delete", "match": ["*.tmp"]}])
    result = janitor_cmd("guard", "-c", str(cfg))
    assert result.returncode == 2
    assert "janitor: nothing to check" in result.stderr


def test_invalid_config_is_bad_usage(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("version: 1\npolicies:\n  - name: x\n    path: relative\n    action: delete\n")
    result = janitor_cmd("guard", "-c", str(cfg))
    assert result.returncode == 2
    assert f"{cfg}:4: policies[0].path: 'relative' is not an absolute path" in result.stderr


def test_thresholds_from_the_config(full: Path, tmp_path: Path) -> None:
    (full / "cache").mkdir()
    policies = [
        {"name": "outputs", "path": str(full), "action": "delete", "match": ["*.tmp"]},
        {"name": "cache", "path": str(full / "cache"), "action": "delete", "when_disk_above": "60%"},
        {"name": "gone", "path": str(tmp_path / "missing"), "action": "delete"},  # passed over
    ]
    # when_disk_above 60% is stricter than guard_max_used 70%
    cfg = write_config(tmp_path, policies, guard_max_used="70%")
    result = janitor_cmd("guard", "-c", str(cfg))
    assert result.returncode == 1
    assert result.stderr == (f"janitor guard: {full / 'cache'} is 62.5% used (threshold 60%, when_disk_above "
                             "of policy cache): 1.6 MiB must be freed\n")
    # guard_max_used 55% is now the strictest, and applies to every policy's filesystem
    cfg = write_config(tmp_path, policies, guard_max_used="55%")
    result = janitor_cmd("guard", "-c", str(cfg))
    assert result.returncode == 1
    assert result.stderr == (f"janitor guard: {full} is 62.5% used (threshold 55%, settings.guard_max_used): "
                             "4.8 MiB must be freed\n")
    cfg = write_config(tmp_path, policies, guard_max_used="65%")
    cfg_ok = janitor_cmd("guard", "-c", str(cfg))
    assert cfg_ok.returncode == 1  # when_disk_above 60% still applies
    policies[1]["when_disk_above"] = "90%"
    cfg = write_config(tmp_path, policies, guard_max_used="65%")
    assert janitor_cmd("guard", "-c", str(cfg)).returncode == 0


def test_path_on_the_command_line_overrides_config_thresholds(full: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [{"name": "p", "path": str(full), "action": "delete"}], guard_max_used="50%")
    result = janitor_cmd("guard", "-c", str(cfg), "--path", str(full), "--max-used", "80%")
    assert result.returncode == 0, result.stderr


def test_clean_frees_space_then_exits_0(fs64: Path, tmp_path: Path) -> None:
    keep = fill(fs64, 4, suffix=".mp4")  # 20 MiB
    fill(fs64, 4, suffix=".tmp")  # +20 MiB: 62.5%
    cfg = write_config(tmp_path, [{"name": "tmp", "path": str(fs64), "action": "delete", "match": ["*.tmp"]}])
    result = janitor_cmd("guard", "--path", str(fs64), "--max-used", "50%", "--clean", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert names(fs64) == set(keep)
    assert result.stdout == "janitor guard: --clean ran 1 policy: 4 files, 20.0 MiB\n"
    assert result.stderr == ""


def test_clean_not_enough_exits_1(fs64: Path, tmp_path: Path) -> None:
    fill(fs64, 7, suffix=".mp4")  # 35 MiB
    fill(fs64, 1, suffix=".tmp")  # +5 MiB: 62.5% -> 54.7% after cleaning
    cfg = write_config(tmp_path, [{"name": "tmp", "path": str(fs64), "action": "delete", "match": ["*.tmp"]}])
    result = janitor_cmd("guard", "--path", str(fs64), "--max-used", "50%", "--clean", "-c", str(cfg))
    assert result.returncode == 1
    assert result.stderr == f"janitor guard: {fs64} is 54.7% used (threshold 50%): 3.0 MiB must be freed\n"


def test_clean_uses_config_thresholds_after_cleaning(fs64: Path, tmp_path: Path) -> None:
    fill(fs64, 8, suffix=".mp4")  # 62.5%
    cfg = write_config(tmp_path, [{"name": "videos", "path": str(fs64), "action": "delete",
                                   "when_disk_above": "50%"}])
    result = janitor_cmd("guard", "--clean", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert len(names(fs64)) == 6  # the two oldest went: 30 MiB, 46.9%


LOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
    print("ready", flush=True)
    sys.stdin.read()  # hold the lock until the test closes our stdin
    """
)


@pytest.fixture
def lock_holder(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A separate process holding the run lock in tmp_path/state, as a running janitor would."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(state / "lock")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def test_clean_waits_for_a_run_holding_the_lock(fs64: Path, tmp_path: Path, lock_holder) -> None:  # type: ignore[no-untyped-def]
    fill(fs64, 4, suffix=".mp4")
    fill(fs64, 4, suffix=".tmp")
    cfg = write_config(tmp_path, [{"name": "tmp", "path": str(fs64), "action": "delete", "match": ["*.tmp"]}])
    guard = subprocess.Popen(
        [sys.executable, "-m", "janitor", "guard", "--path", str(fs64), "--max-used", "50%", "--clean",
         "-c", str(cfg), "--lock-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert guard.stderr is not None
    waiting = guard.stderr.readline()  # printed once guard finds the lock taken: no sleeps
    assert waiting == (f"janitor guard: waiting up to 60s for the janitor run holding {tmp_path}/state/lock "
                       f"(pid {lock_holder.pid})\n")
    assert len(names(fs64)) == 8  # nothing done while waiting
    lock_holder.stdin.close()  # the other run finishes
    lock_holder.wait(timeout=10)
    out, err = guard.communicate(timeout=60)
    assert guard.returncode == 0, err
    assert len(names(fs64)) == 4
    assert out == "janitor guard: --clean ran 1 policy: 4 files, 20.0 MiB\n"


def test_clean_gives_up_after_the_lock_timeout(fs64: Path, tmp_path: Path, lock_holder) -> None:  # type: ignore[no-untyped-def]
    fill(fs64, 8, suffix=".tmp")
    cfg = write_config(tmp_path, [{"name": "tmp", "path": str(fs64), "action": "delete", "match": ["*.tmp"]}])
    started = time.monotonic()
    result = janitor_cmd("guard", "--path", str(fs64), "--max-used", "50%", "--clean", "-c", str(cfg),
                         "--lock-timeout", "0.5")
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == (
        f"janitor: another janitor run holds {tmp_path}/state/lock (pid {lock_holder.pid}); "
        "gave up after waiting 0.5s"
    )
    assert 0.5 <= time.monotonic() - started < 30
    assert len(names(fs64)) == 8


# ---- the fast path ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["guard", "--path", "/a", "--max-used", "80%"], GuardRequest(["/a"], ["80%"])),
        (["-v", "guard", "--path=/a", "--max-used=80%", "--path", "/b", "--max-used", "90%", "--debug"],
         GuardRequest(["/a", "/b"], ["80%", "90%"], verbose=True, debug=True)),
        (["guard", "-c", "/etc/j", "--clean", "--lock-timeout", "5"],
         GuardRequest(config="/etc/j", clean=True, lock_timeout=5.0)),
        (["guard", "-c/etc/j", "--min-free", "5GiB", "--log-format", "json"],
         GuardRequest(config="/etc/j", min_free="5GiB", log_format="json")),
        (["--log-file", "guard", "guard"], GuardRequest(log_file="guard")),
        (["guard", "--help"], None),
        (["guard", "-h"], None),
        (["guard", "--bogus"], None),
        (["guard", "--path"], None),
        (["guard", "--path", "--max-used", "80%"], None),
        (["guard", "extra"], None),
        (["guard", "--lock-timeout", "soon"], None),
        (["guard", "--clean=yes"], None),
        (["-c", "x", "guard"], None),
        (["run", "-c", "guard"], None),
        (["--version", "guard"], None),
    ],
)
def test_fast_parser(argv: list[str], expected: GuardRequest | None) -> None:
    assert parse_fast(argv) == expected


def test_typer_path_behaves_the_same(full: Path) -> None:
    """janitor.cli.main (typer) and the fast entry point: same outputs, same exit codes."""
    for args in (["--path", str(full), "--max-used", "50%"], ["--path", str(full), "--max-used", "80%", "-v"],
                 ["--path", str(full), "--max-used", "80"]):
        fast = janitor_cmd("guard", *args)
        slow = subprocess.run([sys.executable, "-c", "from janitor.cli import main; main()", "guard", *args],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)


def test_help_is_typer_help() -> None:
    result = janitor_cmd("guard", "--help")
    assert result.returncode == 0
    assert "Usage: janitor guard [OPTIONS]" in result.stdout
    assert "--max-used PCT" in result.stdout and "--lock-timeout SECONDS" in result.stdout


@pytest.mark.parametrize("over", [False, True])
def test_start_up_imports_nothing_heavy(tmp_path: Path, over: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "janitor", "guard", "--path", str(tmp_path), "--max-used",
         "0%" if over else "100%"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False,
    )
    assert result.returncode == (1 if over else 0)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"typer", "click", "pydantic", "yaml", "rich", "boto3", "botocore", "sqlite3", "structlog",
             "dataclasses", "janitor.config", "janitor.cli"}
    assert not imported & heavy, sorted(imported & heavy)


@pytest.mark.parametrize("clean", [False, True])
def test_the_default_config_is_read_as_with_c(full: Path, tmp_path: Path, clean: bool) -> None:
    """Without -c, $JANITOR_CONFIG (else /etc/janitor/): its actions are known there too (it
    once failed with "no actions are registered")."""
    cfg = write_config(tmp_path, [{"name": "p", "path": str(full), "action": "delete", "match": ["*.tmp"],
                                   "when_disk_above": "50%"}])
    result = janitor_cmd("guard", *(["--clean"] if clean else []), env={"JANITOR_CONFIG": str(cfg)})
    assert result.returncode == 1, result.stderr
    assert "62.5% used (threshold 50%, when_disk_above of policy p)" in result.stderr
