"""A fleet of hosts: `{hostname}`/`{policy}` in archive key prefixes, the host on metrics and events."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_archive import (  # noqa: F401 (fixtures)
    BUCKET,
    _fresh_bucket,
    _s3,
    aws_env,
    janitor,
    make_tree,
    mocked_s3,
    objects,
    run_inprocess,
)
from test_archive import write_config as archive_config

from janitor.targets.base import join_key, join_prefix


@pytest.mark.parametrize(("prefix", "key", "policy_prefix"), [
    ("arch", "arch/outputs/sub/a.mp4", "arch/outputs/"),
    ("arch/{hostname}", "arch/gpu-07/outputs/sub/a.mp4", "arch/gpu-07/outputs/"),
    ("{hostname}/{policy}/raw", "gpu-07/outputs/raw/sub/a.mp4", "gpu-07/outputs/raw/"),
    ("", "outputs/sub/a.mp4", "outputs/"),
])
def test_key_prefix_placeholders(monkeypatch: pytest.MonkeyPatch, prefix: str, key: str, policy_prefix: str) -> None:
    monkeypatch.setenv("JANITOR_HOSTNAME", "gpu-07")
    assert join_key(prefix, "outputs", "sub/a.mp4") == key
    assert join_prefix(prefix, "outputs") == policy_prefix
    assert key.startswith(policy_prefix)  # restore --from-archive lists under the policy prefix


@pytest.mark.parametrize(("host", "prefix", "message"), [
    ("..", "arch/{hostname}", "cannot name this host"),
    ("a/b", "arch/{hostname}", "cannot name this host"),
    ("gpu-07", "arch/{region}", "only {hostname} and {policy}"),
])
def test_key_prefix_refuses_what_would_climb_or_collide(monkeypatch: pytest.MonkeyPatch, host: str, prefix: str,
                                                         message: str) -> None:
    monkeypatch.setenv("JANITOR_HOSTNAME", host)
    with pytest.raises(ValueError, match=message):
        join_key(prefix, "outputs", "a.mp4")


def test_two_hosts_archive_into_one_bucket_without_colliding(mocked_s3: None, tmp_path: Path,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for host in ("gpu-01", "gpu-02"):
        monkeypatch.setenv("JANITOR_HOSTNAME", host)
        hostdir = tmp_path / host
        data = hostdir / "data"
        make_tree(data, {"render_1.mp4": host.encode() * 100})
        report, _ = run_inprocess(archive_config(hostdir, data, url=f"s3://{BUCKET}/fleet/{{hostname}}"))
        assert report.result.exit_code == 0
    assert sorted(objects(None)) == ["fleet/gpu-01/outputs/render_1.mp4", "fleet/gpu-02/outputs/render_1.mp4"]


def test_json_events_carry_the_host(tmp_path: Path, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}}}\npolicies:\n"
                       "  - {{name: v, path: {root}, action: delete, older_than: 1d}}\n")
    proc = cli("run", "-c", cfg, "--log-format", "json", env={"JANITOR_HOSTNAME": "gpu-42"})
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert events and all(e["host"] == "gpu-42" for e in events)
    assert os.uname().nodename  # the default when JANITOR_HOSTNAME is unset


def test_file_target_directory_per_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from janitor.targets import make_target
    from janitor.targets.base import TargetSpec

    monkeypatch.setenv("JANITOR_HOSTNAME", "gpu-07")
    target = make_target(TargetSpec(name="nas", url=f"file://{tmp_path}/{{hostname}}"))
    assert target.describe() == f"file://{tmp_path}/gpu-07"


def test_each_host_writes_its_own_lifecycle_rule(moto_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = moto_server.endpoint_url
    bucket = _fresh_bucket(endpoint, "fleet-lifecycle")
    (tmp_path / "data").mkdir()  # beside the state_dir (a policy path holding it is refused)
    cfg = archive_config(tmp_path, tmp_path / "data", url=f"s3://{bucket}/fleet/{{hostname}}/{{policy}}",
                         endpoint=endpoint)
    for host in ("gpu-01", "gpu-02"):
        monkeypatch.setenv("JANITOR_HOSTNAME", host)
        r = janitor("archive", "lifecycle", "-c", str(cfg), "--target", "store", "--expire-after", "365d")
        assert r.returncode == 0, r.stderr
    rules = _s3(endpoint).get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted((x["ID"], x["Filter"]["Prefix"]) for x in rules) == [
        ("janitor-store-gpu-01", "fleet/gpu-01/"), ("janitor-store-gpu-02", "fleet/gpu-02/")]


def test_an_unusable_hostname_never_stops_a_run(tmp_path: Path, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    """Labels fall back to the node name; only archive keys refuse a name that would climb."""
    (tmp_path / "data").mkdir()
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}}}\npolicies:\n"
                       "  - {{name: v, path: {root}, action: delete, older_than: 1d}}\n")
    proc = cli("run", "-c", cfg, "--log-format", "json", "--metrics-file", tmp_path / "m.prom",
               env={"JANITOR_HOSTNAME": "../evil"})
    assert proc.returncode == 0, proc.stderr
    assert f'host="{os.uname().nodename}"' in (tmp_path / "m.prom").read_text()
