"""`janitor demo`: the newcomer's first five minutes work on a fresh machine, without root or a server."""

from __future__ import annotations

import os
import re
from pathlib import Path


def test_demo_runs_end_to_end_and_cleans_up(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sandbox = tmp_path / "sandbox"
    proc = cli("demo", "--dir", sandbox, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in ("1. A service's disk", "2. The policy", "3. janitor plan", "4. janitor run", "5. What changed",
                 "6. janitor trash list", "7. janitor restore", "Try it yourself"):
        assert step in out, step
    assert "app.log: open for writing by pid" in out
    assert "latest.mp4: symlink: never followed" in out
    assert "logs/render.log was cut while being written" in out and "render.log.1.gz" in out
    assert "back in place:" in out
    assert not sandbox.exists()  # removed unless --keep


def test_demo_keep_leaves_a_sandbox_that_validates(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sandbox = tmp_path / "sandbox"
    assert cli("demo", "--dir", sandbox, "--keep", timeout=180).returncode == 0
    assert (sandbox / "janitor.yaml").exists()
    assert cli("validate", "-c", sandbox / "janitor.yaml").returncode == 0
    assert os.listdir(sandbox / "outputs" / "keep") == ["showreel.mp4"]  # excluded, never touched


def test_demo_refuses_a_directory_holding_someone_elses_files(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sandbox = tmp_path / "mine"
    (sandbox / "outputs").mkdir(parents=True)
    (sandbox / "thesis.tex").write_text("three years of work")
    (sandbox / "outputs" / "render.mp4").write_bytes(b"x" * 100)
    proc = cli("demo", "--dir", sandbox, timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not empty" in proc.stderr
    assert (sandbox / "thesis.tex").read_text() == "three years of work"
    assert sorted(p.name for p in sandbox.rglob("*")) == ["outputs", "render.mp4", "thesis.tex"]


def test_demo_in_an_existing_empty_directory_leaves_it_empty(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sandbox = tmp_path / "empty"
    sandbox.mkdir()
    assert cli("demo", "--dir", sandbox, timeout=180).returncode == 0
    assert sandbox.is_dir() and os.listdir(sandbox) == []


def test_demo_keep_twice_builds_the_sandbox_again(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sandbox = tmp_path / "sandbox"
    first = cli("demo", "--dir", sandbox, "--keep", timeout=180)
    assert first.returncode == 0, first.stderr
    second = cli("demo", "--dir", sandbox, "--keep", timeout=180)
    assert second.returncode == 0, second.stderr
    assert "internal error" not in second.stderr
    assert "back in place:" in second.stdout
    assert cli("validate", "-c", sandbox / "janitor.yaml").returncode == 0
    # a file of the user's next to a kept sandbox: refused, not removed
    (sandbox / "notes.txt").write_text("mine")
    third = cli("demo", "--dir", sandbox, timeout=180)
    assert third.returncode == 2 and (sandbox / "notes.txt").read_text() == "mine"
    assert (sandbox / "janitor.yaml").exists()


def _try_it_yourself(out: str) -> str:
    return out.split("Try it yourself", 1)[1]


def test_demo_try_it_yourself_points_at_what_exists(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gone = tmp_path / "gone"
    proc = cli("demo", "--dir", gone, timeout=180)
    assert proc.returncode == 0 and not gone.exists()
    assert str(gone) not in _try_it_yourself(proc.stdout)  # nothing names the removed sandbox
    assert "--keep" in _try_it_yourself(proc.stdout)
    kept = tmp_path / "kept"
    proc = cli("demo", "--dir", kept, "--keep", timeout=180)
    commands = [line.split() for line in _try_it_yourself(proc.stdout).splitlines() if line.strip().startswith("janitor ")]
    assert commands
    for words in commands:
        config = Path(words[words.index("-c") + 1])
        assert config.exists(), words


def test_demo_plan_total_equals_run_total_and_nothing_is_cut(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = cli("demo", "--dir", tmp_path / "sandbox", timeout=180, env={"COLUMNS": "100"})
    out = proc.stdout
    plan_total = re.search(r"^Plan: (\d+ files?, [\d.]+ \w+)", out, re.M)
    run_total = re.search(r"^(\d+ files?, [\d.]+ \w+); \d+ failures?", out, re.M)
    assert plan_total and run_total, out
    assert plan_total.group(1) == run_total.group(1)
    assert "…" not in out and "..." not in out
    assert "7. janitor restore -c" in out and ".mp4'" in out  # the whole command, copyable
    # ages keep their hours: 26d0h25m, never 26d25m
    for age in re.findall(r"\b(\d+d\d+m)\b", out):
        raise AssertionError(f"age without its hours: {age}")
