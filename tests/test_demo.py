"""`janitor demo`: the newcomer's first five minutes work on a fresh machine, without root or a server."""

from __future__ import annotations

import os
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
