"""packaging/systemd/janitor-serve.service: the same sandbox as janitor.service, verified by systemd."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_packaging import (
    JANITOR_BIN,
    SERVICE,
    SYSTEMD,
    _assert_verified,
    _verify,
    last,
    parse_unit,
)

SERVE = SYSTEMD / "janitor-serve.service"
# settings janitor.service has for its work that a long-running service does not share
RUN_ONLY = {"Type", "ExecStart", "SuccessExitStatus", "TimeoutStartSec"}


def test_serve_unit_runs_serve_with_a_token_on_loopback() -> None:
    unit = parse_unit(SERVE)
    assert last(unit, "Service", "ExecStart") == (
        f"{JANITOR_BIN} serve -c /etc/janitor/ --listen 127.0.0.1:8427 --token-file /etc/janitor/serve.token")
    assert last(unit, "Service", "Type") == "exec" and last(unit, "Service", "Restart") == "on-failure"
    assert last(unit, "Service", "StateDirectory") == "janitor"  # the run unit's lock and catalog


def test_serve_unit_keeps_the_run_units_sandbox() -> None:
    """API runs act on the same files as timer runs: every sandbox setting is the same."""
    run, serve = parse_unit(SERVICE)["Service"], parse_unit(SERVE)["Service"]
    for key, values in run.items():
        if key in RUN_ONLY:
            continue
        assert serve.get(key) == values, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_serve_unit(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "janitor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    (units / "janitor-serve.service").write_text(SERVE.read_text().replace(JANITOR_BIN, str(stub)))
    result = _verify([units / "janitor-serve.service"], units)
    _assert_verified(result, ("janitor-serve.service",))
