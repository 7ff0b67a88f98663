"""`janitor serve` over real HTTP: auth, endpoints, runs under the CLI's lock, limits, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import DAY, Tree
from servefix import serve_cmd, served, token_file

POLICY = """\
version: 1
settings: {{state_dir: {state}, settle: 0s, guard_max_used: 99%}}
policies:
  - name: videos
    path: {root}
    match: ["**/*.mp4"]
    older_than: 7d
    action: soft-delete
  - name: logs-watch
    path: {root}
    action: warn
    when_size_above: 1KiB
"""
TOKEN = "s3cret-" + "b" * 40


@pytest.fixture
def populated(tree: Tree) -> Tree:
    tree.file("a/old.mp4", 1000, age=30 * DAY)
    tree.file("a/older.mp4", 3000, age=60 * DAY)
    tree.file("a/new.mp4", 500, age=1 * DAY)
    tree.file("运行实时日志.log", 4000, age=2 * DAY)
    return tree


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait_run(client: httpx.Client, run_id: str, headers: dict[str, str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}", headers=headers).json()
        if run["status"] not in ("starting", "running"):
            return run
        time.sleep(0.1)  # polling the documented API, as a client does
    raise AssertionError(f"run {run_id} did not finish")


def test_refuses_to_start_without_safe_auth(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)

    def start(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
        return subprocess.run(serve_cmd("-c", cfg, *args), capture_output=True, text=True, timeout=60, env=env)

    proc = start("--listen", "127.0.0.1:0")
    assert proc.returncode == 2 and "no --token-file" in proc.stderr
    proc = start("--listen", "0.0.0.0:0", "--no-auth")
    assert proc.returncode == 2 and "--no-auth is only allowed on loopback" in proc.stderr
    loose = token_file(tmp_path, TOKEN, 0o640)
    proc = start("--listen", "127.0.0.1:0", "--token-file", loose)
    assert proc.returncode == 2 and "lets others read it" in proc.stderr
    os.chown(loose, 65534, 65534)
    loose.chmod(0o600)
    proc = start("--listen", "127.0.0.1:0", "--token-file", loose)
    assert proc.returncode == 2 and "owned by uid 65534" in proc.stderr
    link = tmp_path / "token-link"
    link.symlink_to(loose)
    proc = start("--listen", "127.0.0.1:0", "--token-file", link)
    assert proc.returncode == 2 and "cannot open" in proc.stderr


def test_token_auth_and_the_api_session(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)
    with served("-c", cfg, "--token-file", token_file(tmp_path, TOKEN), "--sample-interval", "0") as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/api/v1/plan", "/api/v1/report", "/api/v1/trash", "/api/v1/history", "/metrics", "/readyz",
                     "/dashboard/content"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers=_auth("wrong-" + "c" * 40)).status_code == 401, path
        assert c.post("/api/v1/runs", json={"policies": ["videos"]}).status_code == 401
        assert (populated.root / "a" / "old.mp4").exists()  # nothing ran
        denied = srv.events("api_unauthorized")
        assert denied and all(e["client"].startswith("127.0.0.1:") for e in denied)

        plan = c.get("/api/v1/plan", params={"policy": "videos"}, headers=_auth()).json()
        assert plan["files"] == 2 and {os.path.basename(a["path"]) for a in plan["policies"][0]["actions"]} == {
            "old.mp4", "older.mp4"}
        assert c.get("/api/v1/plan", params={"policy": "nope"}, headers=_auth()).status_code == 404

        started = c.post("/api/v1/runs", json={"policies": ["videos"], "dry_run": False}, headers=_auth())
        assert started.status_code == 202, started.text
        run = _wait_run(c, started.json()["run_id"], _auth())
        assert run["status"] == "ok" and run["result"]["files"] == 2 and run["result"]["bytes"] == 4000
        assert not (populated.root / "a" / "old.mp4").exists() and (populated.root / "a" / "new.mp4").exists()

        trash = c.get("/api/v1/trash", headers=_auth()).json()
        assert {os.path.basename(e["path"]) for e in trash} == {"old.mp4", "older.mp4"}
        history = c.get("/api/v1/history", params={"policy": "videos", "since": "1d"}, headers=_auth()).json()
        assert {h["where_now"] for h in history} == {"trash"} or all("trash" in h["where_now"] for h in history)
        report = c.get("/api/v1/report", headers=_auth()).json()
        assert report["last_run"]["run_id"] == run["run_id"] and report["trash_files"] == 2
        assert c.get("/openapi.json").json()["paths"]["/api/v1/runs"]["post"]
        runs = c.get("/api/v1/runs", headers=_auth()).json()
        assert runs[0]["run_id"] == run["run_id"] and runs[0]["command"] == "serve"

        requested = srv.events("api_run_requested")
        assert requested[0]["token_id"] and requested[0]["client"].startswith("127.0.0.1:")
        assert requested[0]["policies"] == "videos" and requested[0]["run"] == run["run_id"]
        assert TOKEN not in srv.stderr  # the token id, never the token


def test_requests_that_must_be_refused(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)
    with served("-c", cfg, "--token-file", token_file(tmp_path, TOKEN), "--sample-interval", "0") as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        h = _auth()
        r = c.post("/api/v1/runs", json={"policies": ["../../etc"]}, headers=h)
        assert r.status_code == 404 and "no policy named" in r.json()["detail"]
        r = c.post("/api/v1/runs", json={"policies": ["videos"], "path": str(populated.root)}, headers=h)
        assert r.status_code == 422  # no field can carry a path
        r = c.post("/api/v1/runs", content=b'{"policies": ["' + b"x" * 100_000 + b'"]}',
                   headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 413

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(100):
                yield b" " * 1024  # no Content-Length: counted as it streams

        r = c.post("/api/v1/runs", content=chunks(), headers={**h, "Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/api/v1/runs", content=b'{"policies": ["videos"]}', headers={**h, "Content-Type": "text/plain"})
        assert r.status_code in (415, 422)
        r = c.post("/api/v1/runs", json={"policies": ["videos"]}, headers={**h, "Origin": "https://evil.example"})
        assert r.status_code == 403
        assert c.get("/api/v1/runs/../../etc/passwd", headers=h).status_code == 404
        assert (populated.root / "a" / "old.mp4").exists()  # none of them ran anything
        assert srv.events("api_forbidden")[0]["origin"] == "https://evil.example"


def test_a_run_while_the_lock_is_held_is_409(populated: Tree, write_config, tmp_path: Path, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from janitor.state import RunLock, ensure_private_dir

    cfg = write_config(POLICY, root=populated.root)
    with served("-c", cfg, "--token-file", token_file(tmp_path, TOKEN), "--sample-interval", "0") as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        ensure_private_dir(str(state_dir))
        with RunLock(str(state_dir)):  # what a `janitor run` from the timer holds
            r = c.post("/api/v1/runs", json={"policies": ["videos"]}, headers=_auth())
            assert r.status_code == 409 and f"pid {os.getpid()}" in r.json()["detail"]
        assert (populated.root / "a" / "old.mp4").exists()
        r = c.post("/api/v1/runs", json={"policies": ["videos"], "dry_run": True}, headers=_auth())
        assert r.status_code == 202
        run = _wait_run(c, r.json()["run_id"], _auth())
        assert run["dry_run"] and run["result"]["files"] == 2 and (populated.root / "a" / "old.mp4").exists()
        r = c.post("/api/v1/runs", json={"policies": ["videos"]}, headers=_auth())
        assert r.status_code == 202
        assert _wait_run(c, r.json()["run_id"], _auth())["status"] == "ok"


def test_metrics_and_readyz(tmpfs, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    root = tmpfs("disk", "4M")
    (root / "运行实时日志.log").write_bytes(b"x" * 2048)
    cfg = write_config(POLICY.replace("99%", "50%"), root=root)
    with served("-c", cfg, "--token-file", token_file(tmp_path, TOKEN), "--metrics-no-auth",
                "--sample-interval", "1s") as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/readyz").status_code == 200
        exceeded = srv.wait_event("threshold_exceeded")
        assert exceeded["policy"] == "logs-watch" and exceeded["kind"] == "size" and exceeded["used"] == 2048
        (root / "fill").write_bytes(b"y" * (3 * 1024 * 1024))
        r = c.get("/readyz")
        assert r.status_code == 503
        over = r.json()["over"]
        assert over[0]["path"] == str(root) and "threshold 50%" in over[0]["problems"][0]
        text = c.get("/metrics").text
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                assert s.labels["host"] == os.uname().nodename
                samples[(s.name, s.labels.get("policy"), s.labels.get("kind"))] = s.value
        assert samples[("janitor_threshold_exceeded", "logs-watch", "size")] == 1
        assert samples[("janitor_filesystem_used_ratio", "videos", None)] > 0.5
        assert samples[("janitor_filesystem_threshold_ratio", None, None)] == 0.5
        assert ("janitor_last_success_timestamp_seconds", None, None) not in samples  # never ran: absent
        assert samples[("janitor_threshold_exceeded_events_total", "logs-watch", "size")] >= 1


def test_unix_socket_and_no_auth_loopback_only_names(populated: Tree, write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)
    sock = tmp_path / "api.sock"
    with served("-c", cfg, "--listen", f"unix:{sock}", "--no-auth", "--sample-interval", "0"):
        assert (sock.stat().st_mode & 0o777) == 0o600
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://janitor", timeout=30) as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            assert c.get("/api/v1/plan").json()["files"] == 2
    assert not sock.exists()
    with served("-c", cfg, "--no-auth", "--sample-interval", "0") as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/api/v1/plan").status_code == 200
        # DNS rebinding: a name of the attacker's resolving to 127.0.0.1
        assert c.get("/api/v1/plan", headers={"Host": "rebind.evil.example"}).status_code == 421
        r = c.post("/api/v1/runs", json={"policies": ["videos"]}, headers={"Host": "rebind.evil.example"})
        assert r.status_code == 421 and (populated.root / "a" / "old.mp4").exists()


def test_server_killed_mid_run_the_next_run_reconciles(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for i in range(3000):
        tree.file(f"d{i % 30}/f{i}.mp4", 10, age=30 * DAY)
    cfg = write_config(POLICY.replace("soft-delete", "delete"), root=tree.root)
    with served("-c", cfg, "--token-file", token_file(tmp_path, TOKEN), "--sample-interval", "0") as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/api/v1/runs", json={"policies": ["videos"]}, headers=_auth())
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if c.get(f"/api/v1/runs/{run_id}", headers=_auth()).json()["progress"]["files"] > 0:
                break
        srv.proc.kill()
        srv.proc.wait()
    left = len(list(tree.root.rglob("*.mp4")))
    proc = cli("run", "-c", cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert 0 < left < 3000  # killed half way
    # rows the killed run left `planned` (if it died inside a batch) were settled from the disk
    assert out["reconciled"] >= 0
    assert not list(tree.root.rglob("*.mp4"))
    history = json.loads(cli("history", "-c", cfg, "--json", "--limit", "0").stdout)
    assert {h["state"] for h in history} <= {"done", "aborted"}
    assert sum(1 for h in history if h["state"] == "done") == 3000


def test_serve_has_help(cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("serve", "--help")
    assert proc.returncode == 0 and "Usage: janitor serve" in proc.stdout
    for option in ("--listen", "--token-file", "--no-auth", "--metrics-no-auth", "--sample-interval"):
        assert option in proc.stdout


def test_metrics_after_runs_with_an_unreachable_target(tree: Tree, write_config, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What JanitorArchiveTargetUnreachable and JanitorLastRunFailed read, from serve's /metrics,
    after a run of the timer (the CLI) and after a run over the API."""
    from prometheus_client.parser import text_string_to_metric_families

    tree.file("a.mp4", 100, age=3 * DAY)
    cfg = write_config("version: 1\nsettings: {{state_dir: {state}, settle: 0s}}\ntargets:\n"
                       "  s3: {{url: 's3://bucket/{{hostname}}', endpoint_url: 'http://127.0.0.1:1', max_attempts: 1,"
                       " connect_timeout: 1s}}\npolicies:\n"
                       "  - {{name: arch, path: {root}, action: archive, target: s3, older_than: 1d}}\n",
                       root=tree.root)
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    assert cli("run", "-c", cfg, env=env).returncode == 1
    with served("-c", cfg, "--no-auth", "--sample-interval", "0", env=env) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        def metrics() -> dict:
            return {(s.name, s.labels.get("code") or s.labels.get("status")): s.value
                    for f in text_string_to_metric_families(c.get("/metrics").text) for s in f.samples}

        for _ in ("cli", "api"):
            samples = metrics()
            assert samples[("janitor_errors", "E_TARGET_UNAVAILABLE")] == 1
            assert samples[("janitor_policy_status", "error")] == 1
            assert samples[("janitor_last_run_exit_code", None)] == 1
            r = c.post("/api/v1/runs", json={"policies": ["arch"]})
            run = _wait_run(c, r.json()["run_id"], {})
            assert run["status"] == "partial" and run["result"]["exit_code"] == 1
    assert (tree.root / "a.mp4").exists()


def test_a_cli_run_is_found_by_id(populated: Tree, write_config, cli) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(POLICY, root=populated.root)
    run = json.loads(cli("run", "-c", cfg, "--policy", "videos", "--json").stdout)
    with served("-c", cfg, "--no-auth", "--sample-interval", "0") as srv, httpx.Client(base_url=srv.url) as c:
        got = c.get(f"/api/v1/runs/{run['run_id']}").json()
        assert got["status"] == "ok" and got["requested_by"].startswith("run (pid ")
        assert (got["result"]["files"], got["result"]["bytes"], got["result"]["exit_code"]) == (2, 4000, 0)
        assert c.get("/api/v1/runs/20991231T000000Z-000000").status_code == 404
