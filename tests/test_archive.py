"""The archive action through the real planner and executor; restore --from-archive; lifecycle.

Unit tests use in-process moto (mock_aws). End-to-end tests run the CLI in a subprocess
against moto's standalone server on 127.0.0.1 (tests/s3server.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3server import MotoServer, start_moto_server, use_fake_aws_credentials

from janitor.actions.archive import ArchiveAction
from janitor.catalog import open_catalog
from janitor.config import load_config
from janitor.errors import ConfigError, TargetUnavailable, UploadFailed
from janitor.events import EventLog
from janitor.runner import RunReport, run_policies

REPO = Path(__file__).resolve().parents[1]
BUCKET = "janitor-archive"
DAY = 86400
MiB = 1024 * 1024


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    use_fake_aws_credentials(monkeypatch, tmp_path_factory)


@pytest.fixture
def mocked_s3() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws():
        _s3(None).create_bucket(Bucket=BUCKET)
        yield


def _s3(endpoint_url: str | None):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")


def _fresh_bucket(endpoint_url: str, name: str) -> str:
    _s3(endpoint_url).create_bucket(Bucket=name)
    return name


def make_tree(root: Path, files: dict[str, bytes], *, age: float = 2 * DAY, mode: int = 0o640) -> dict[str, str]:
    """Write files with an exact age and mode; returns relpath -> sha256."""
    digests = {}
    when = time.time() - age
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
        os.utime(p, (when, when))
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def write_config(
    tmp_path: Path,
    data: Path,
    *,
    url: str = f"s3://{BUCKET}/arch",
    endpoint: str | None = None,
    then: str | None = None,
    workers: int = 4,
    policy: str = "outputs",
    extra: str = "",
    target_extra: str = "",
) -> Path:
    target = f"    url: {url}\n    max_attempts: 2\n    connect_timeout: 2s\n" + target_extra
    if endpoint:
        target += f"    endpoint_url: {endpoint}\n"
    cfg = tmp_path / "janitor.yaml"
    cfg.write_text(
        "version: 1\n"
        f"settings:\n  state_dir: {tmp_path / 'state'}\n  settle: 0s\n  archive_workers: {workers}\n"
        f"targets:\n  store:\n{target}"
        "policies:\n"
        f"  - name: {policy}\n    path: {data}\n    action: archive\n    target: store\n    older_than: 1d\n"
        + (f"    then: {then}\n" if then else "")
        + extra
    )
    return cfg


def run_inprocess(cfg: Path) -> tuple[RunReport, str]:
    config = load_config(cfg)
    stream = io.StringIO()
    events = EventLog("text", stream=stream)
    report = run_policies(config, config.policies, events)
    return report, stream.getvalue()


def janitor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "janitor", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO)


def journal(tmp_path: Path) -> list:  # type: ignore[type-arg]
    catalog = open_catalog(str(tmp_path / "state"))
    try:
        return list(catalog.entries())
    finally:
        catalog.close()


def objects(endpoint_url: str | None, bucket: str = BUCKET) -> dict[str, dict]:
    client = _s3(endpoint_url)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = item
    return out


def head(endpoint_url: str | None, key: str, bucket: str = BUCKET) -> dict:
    return _s3(endpoint_url).head_object(Bucket=bucket, Key=key)


# -- policy checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy_keys", "expected"),
    [
        ("", "policies[0].target: is required for archive (defined targets: store)"),
        ("    target: nas\n", "policies[0].target: no target named 'nas' (defined targets: store)"),
        ("    target: store\n    then: archive\n", "policies[0].then: 'archive' is not one of delete, soft-delete, keep"),
        ("    target: store\n    retain: 7d\n", "policies[0].retain: only applies with then: soft-delete"),
        ("    target: store\n    rotate: 3\n", "policies[0].rotate: is not an option of action 'archive'"),
    ],
)
def test_check_policy(tmp_path: Path, policy_keys: str, expected: str) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        "version: 1\ntargets:\n  store: {url: 's3://b/p'}\n"
        f"policies:\n  - name: a\n    path: {tmp_path}\n    action: archive\n" + policy_keys
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_valid_policy_with_each_then(tmp_path: Path) -> None:
    for then in ("delete", "soft-delete", "keep"):
        cfg = write_config(tmp_path, tmp_path / "d", then=then)
        assert load_config(cfg).policies[0].then == then


def test_startup_does_not_import_boto3(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args in (["--help"], ["validate", "-c", str(write_config(tmp_path, tmp_path / "d"))]):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "janitor", *args],
                             capture_output=True, text=True, env=env, check=True)
        assert "boto" not in out.stderr
    assert "janitor.actions.archive" in out.stderr  # validate loads the action; only boto3 waits


# -- archive through planner + executor (in-process moto) -------------------------------------


def test_archive_then_delete(mocked_s3: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    digests = make_tree(data, {"a.mp4": b"a" * 1000, "sub/b.mp4": os.urandom(5000), "new.mp4": b"n"})
    os.utime(data / "new.mp4")  # too young for older_than: 1d
    report, _ = run_inprocess(write_config(tmp_path, data))
    assert report.result.exit_code == 0
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()) == ["new.mp4"]
    objs = objects(None)
    assert sorted(objs) == ["arch/outputs/a.mp4", "arch/outputs/sub/b.mp4"]
    meta = head(None, "arch/outputs/sub/b.mp4")["Metadata"]
    assert meta["janitor-sha256"] == digests["sub/b.mp4"]
    assert meta["janitor-mode"] == "0o640"
    rows = {e.object_key: e for e in journal(tmp_path)}
    row = rows["arch/outputs/sub/b.mp4"]
    assert (row.state, row.target, row.sha256, row.size, row.detail) == ("done", "store", digests["sub/b.mp4"], 5000,
                                                                          "uploaded")


def test_dry_run_changes_nothing(mocked_s3: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, {"a.mp4": b"a" * 10})
    before = [(p, p.stat().st_mtime_ns) for p in data.rglob("*")]
    from janitor.planner import build_plan

    config = load_config(write_config(tmp_path, data))
    plan = build_plan(config, config.policies)
    assert [a.path for a in plan.policies[0].actions] == [str(data / "a.mp4")]
    assert [(p, p.stat().st_mtime_ns) for p in data.rglob("*")] == before
    assert objects(None) == {}


def test_rerun_uploads_nothing_twice(mocked_s3: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, {f"f{i}.bin": os.urandom(100 + i) for i in range(10)})
    cfg = write_config(tmp_path, data, then="keep")
    run_inprocess(cfg)
    first = {k: v["LastModified"] for k, v in objects(None).items()}
    time.sleep(1.1)  # LastModified has one-second resolution
    report, _ = run_inprocess(cfg)
    assert report.result.files == 10
    assert {k: v["LastModified"] for k, v in objects(None).items()} == first
    details = [e.detail for e in journal(tmp_path)]
    assert details.count("uploaded") == 10 and details.count("already archived") == 10
    assert len(list(data.iterdir())) == 10  # then: keep


def test_then_soft_delete_and_restore_from_trash(mocked_s3: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, {"x/a.log": b"hello"})
    report, _ = run_inprocess(write_config(tmp_path, data, then="soft-delete"))
    assert report.result.exit_code == 0
    assert not (data / "x/a.log").exists()
    (row,) = journal(tmp_path)
    assert row.trash_path and os.path.exists(row.trash_path)
    assert row.object_key == "arch/outputs/x/a.log"
    assert "arch/outputs/x/a.log" in objects(None)


def test_missing_bucket_fails_policy_keeps_files(mocked_s3: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, {"a": b"1", "b": b"2"})
    report, log = run_inprocess(write_config(tmp_path, data, url="s3://no-such-bucket/x"))
    assert report.result.exit_code == 1
    (outcome,) = report.result.policies
    assert outcome.status == "error"
    assert outcome.messages == ["target store: bucket 'no-such-bucket' does not exist"]
    assert sorted(os.listdir(data)) == ["a", "b"]
    assert journal(tmp_path) == []  # nothing journaled: nothing was attempted
    assert log.count("\n") == 1


def test_upload_failure_keeps_that_file(mocked_s3: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from janitor.targets.s3 import S3Target

    real_upload = S3Target.upload

    def flaky(self, local_path, key, **kw):  # type: ignore[no-untyped-def]
        if key.endswith("bad.bin"):
            raise UploadFailed("target store: upload failed (InternalError)")
        return real_upload(self, local_path, key, **kw)

    monkeypatch.setattr(S3Target, "upload", flaky)
    data = tmp_path / "data"
    make_tree(data, {"bad.bin": b"x", "good.bin": b"y"})
    report, _ = run_inprocess(write_config(tmp_path, data))
    assert report.result.exit_code == 1
    assert os.listdir(data) == ["bad.bin"]
    rows = {os.path.basename(e.path): e for e in journal(tmp_path)}
    assert rows["bad.bin"].state == "failed" and rows["bad.bin"].error.startswith("E_UPLOAD_FAILED")
    assert rows["good.bin"].state == "done"


def test_repeated_target_failures_stop_the_policy(mocked_s3: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from janitor.targets.s3 import S3Target

    def throttled(self, local_path, key, **kw):  # type: ignore[no-untyped-def]
        raise UploadFailed("target store: endpoint is throttling requests (SlowDown) after 2 attempts")

    monkeypatch.setattr(S3Target, "upload", throttled)
    data = tmp_path / "data"
    make_tree(data, {f"f{i:02}": b"x" for i in range(40)})
    report, log = run_inprocess(write_config(tmp_path, data, workers=1))
    (outcome,) = report.result.policies
    assert report.result.exit_code == 1 and outcome.status == "error"
    assert "stopping this policy" in outcome.messages[-1]
    assert len(os.listdir(data)) == 40
    # one line for the cause, not one per file
    assert sum("throttling" in line for line in log.splitlines()) <= 5


def test_file_changed_during_upload_is_kept(mocked_s3: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from janitor.targets.s3 import S3Target

    data = tmp_path / "data"
    make_tree(data, {"grow.log": b"a" * 100})
    real_upload = S3Target.upload

    def writer_appends(self, local_path, key, **kw):  # type: ignore[no-untyped-def]
        obj = real_upload(self, local_path, key, **kw)
        with open(data / "grow.log", "ab") as f:
            f.write(b"more")
        return obj

    monkeypatch.setattr(S3Target, "upload", writer_appends)
    report, _ = run_inprocess(write_config(tmp_path, data))
    assert (data / "grow.log").read_bytes() == b"a" * 100 + b"more"
    (outcome,) = report.result.policies
    assert outcome.files == 0 and outcome.skipped["changed"] == 1


def test_files_hashed_ahead_are_still_checked_and_never_leak(
    mocked_s3: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first files are hashed while the target is checked. One appended to after its
    hash is kept as changed; when the check fails, the descriptors opened ahead are closed."""
    from janitor.actions.archive import ArchiveSession

    data = tmp_path / "data"
    make_tree(data, {f"f{i}.bin": bytes([i]) * 1000 for i in range(6)})
    real_check = ArchiveSession.check_target

    def check_after_hashes_then_append(self: ArchiveSession) -> None:
        assert len(self._ahead) == 4  # archive_workers: 4 in write_config
        for future in list(self._ahead.values()):
            future.result()
        with open(data / "f0.bin", "ab") as f:
            f.write(b"late line")
        real_check(self)

    monkeypatch.setattr(ArchiveSession, "check_target", check_after_hashes_then_append)
    report, _ = run_inprocess(write_config(tmp_path, data))
    (outcome,) = report.result.policies
    assert outcome.files == 5 and outcome.skipped["changed"] == 1
    assert sorted(os.listdir(data)) == ["f0.bin"]

    def target_down(self: ArchiveSession) -> None:
        for future in list(self._ahead.values()):
            future.result()
        raise TargetUnavailable("target store: cannot reach it")

    make_tree(data, {f"g{i}.bin": b"g" * 10 for i in range(6)})
    open_before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(ArchiveSession, "check_target", target_down)
    report, _ = run_inprocess(write_config(tmp_path, data))
    assert report.result.exit_code == 1 and len(os.listdir(data)) == 7
    assert set(os.listdir("/proc/self/fd")) <= open_before


def test_closing_a_session_whose_hashing_never_started_does_not_wait_for_it(tmp_path: Path) -> None:
    """A hashing task cancelled by the pool's shutdown leaves its futures pending: close()
    must not wait for results that will never come."""
    from concurrent.futures import Future

    from janitor.actions.archive import ArchiveSession, HashedFile
    from janitor.targets import make_target
    from janitor.targets.base import TargetSpec

    session = ArchiveSession(make_target(TargetSpec("nas", f"file://{tmp_path}")), workers=1)
    never_started: Future[HashedFile] = Future()
    session._ahead["key"] = never_started
    closer = threading.Thread(target=session.close, daemon=True)
    closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive() and never_started.cancelled()


@pytest.mark.parametrize("endpoint", ["checking", "plain moto"])
def test_a_file_rewritten_after_hashing_is_kept_even_if_the_server_does_not_check(
    moto_server: MotoServer, checking_proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    """Rewritten in place after janitor hashed it, with size and mtime put back. A server
    that checks the digest refuses the upload; moto stores it. Either way the ctime moved,
    so the file is kept (skipped: changed) and the next run uploads it again."""
    import janitor.actions.archive as archive_mod

    bucket = _fresh_bucket(moto_server.endpoint_url, f"e2e-rewrite-{endpoint.replace(' ', '-')}")
    data = tmp_path / "data"
    make_tree(data, {"render.mp4": b"v" * 4096, "other.mp4": b"o" * 4096})
    victim = data / "render.mp4"
    real_hash = archive_mod.sha256_of_fd

    def hash_then_rewrite(fd: int, *args: object) -> str:
        digest = real_hash(fd, *args)
        if os.fstat(fd).st_ino == victim.stat().st_ino:
            st = victim.stat()
            with open(victim, "r+b") as f:
                f.write(b"X")
            os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
        return digest

    monkeypatch.setattr(archive_mod, "sha256_of_fd", hash_then_rewrite)
    url = checking_proxy.endpoint_url if endpoint == "checking" else moto_server.endpoint_url
    report, log = run_inprocess(write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=url))
    (outcome,) = report.result.policies
    assert outcome.files == 1 and outcome.skipped["changed"] == 1, log
    assert victim.read_bytes() == b"X" + b"v" * 4095  # kept, as it now is
    assert not (data / "other.mp4").exists()  # the other file went up and was deleted
    if endpoint == "checking":
        assert checking_proxy.rejected == [f"/{bucket}/arch/outputs/render.mp4"]
        assert sorted(objects(moto_server.endpoint_url, bucket)) == ["arch/outputs/other.mp4"]


def test_a_body_damaged_in_transit_is_refused_and_the_file_kept(
    moto_server: MotoServer, checking_proxy, tmp_path: Path
) -> None:
    """The server's check of janitor's digest is what catches bytes damaged on the way. The
    refusal is that file's error (exit 1, one line), not a sign that the target is down:
    the files after it still go up."""
    bucket = _fresh_bucket(moto_server.endpoint_url, "e2e-damaged")
    data = tmp_path / "data"
    make_tree(data, {f"f{i}.bin": bytes([i]) * 4096 for i in range(8)})
    checking_proxy.corrupt = {f"/{bucket}/arch/outputs/f{i}.bin" for i in range(6)}
    report, log = run_inprocess(
        write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=checking_proxy.endpoint_url)
    )
    (outcome,) = report.result.policies
    assert report.result.exit_code == 1 and outcome.files == 2, log
    assert sorted(os.listdir(data)) == [f"f{i}.bin" for i in range(6)]  # all six kept, intact
    assert all((data / f"f{i}.bin").read_bytes() == bytes([i]) * 4096 for i in range(6))
    assert sorted(objects(moto_server.endpoint_url, bucket)) == ["arch/outputs/f6.bin", "arch/outputs/f7.bin"]
    assert "not janitor's digest" in log and "stopping this policy" not in log and "Traceback" not in log


def test_closing_a_session_does_not_wait_to_hash_files_nobody_will_upload(tmp_path: Path) -> None:
    """When the target check fails (or on Ctrl-C) while files are being hashed ahead, only
    the file being hashed is finished; the others are never opened, nothing stays open."""
    from janitor.actions.archive import ArchiveSession
    from janitor.targets import make_target
    from janitor.targets.base import TargetSpec

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(b"x" * 1000)
    session = ArchiveSession(make_target(TargetSpec("nas", f"file://{tmp_path / 'nas'}")), workers=4)
    entered, release = threading.Event(), threading.Event()
    opened: list[int] = []

    def opener(i: int):  # type: ignore[no-untyped-def]
        def open_file() -> int:
            opened.append(i)
            if i == 0:
                entered.set()
                release.wait(30)
            return os.open(paths[i], os.O_RDONLY)
        return open_file

    open_before = set(os.listdir("/proc/self/fd"))
    session.hash_ahead([(f"k{i}", opener(i)) for i in range(4)])
    assert entered.wait(30)
    real_shutdown = session.pool.shutdown

    def shutdown_releasing_the_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        release.set()  # only once close() has cancelled what was not started
        real_shutdown(*args, **kwargs)

    session.pool.shutdown = shutdown_releasing_the_first  # type: ignore[method-assign]
    session.close()
    assert opened == [0]
    assert set(os.listdir("/proc/self/fd")) <= open_before


def test_symlinks_are_not_followed(mocked_s3: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    make_tree(data, {"ok.bin": b"1"})
    (data / "link.bin").symlink_to(secret)
    (data / "dirlink").symlink_to(tmp_path)
    run_inprocess(write_config(tmp_path, data))
    assert sorted(objects(None)) == ["arch/outputs/ok.bin"]
    assert secret.read_text() == "secret" and (data / "link.bin").is_symlink()


def test_reconcile_after_kill(mocked_s3: None, tmp_path: Path) -> None:
    """Rows a killed run left `planned`: kept file -> aborted; gone + verified object -> done;
    gone without a verified object -> failed (never silently done)."""
    data = tmp_path / "data"
    make_tree(data, {"kept": b"k", "archived": b"a", "lost": b"l"})
    cfg = write_config(tmp_path, data)
    config = load_config(cfg)
    from janitor.targets import target_for

    target = target_for(config, "store")
    st = os.stat(data / "archived")
    target.upload(str(data / "archived"), "arch/outputs/archived", sha256=hashlib.sha256(b"a").hexdigest(),
                  size=1, mtime=st.st_mtime, mode=0o640)
    os.makedirs(tmp_path / "state", exist_ok=True)
    catalog = open_catalog(str(tmp_path / "state"))
    rows = []
    for name in ("kept", "archived", "lost"):
        s = os.stat(data / name)
        rows.append({"run_id": "killed", "ts": 0, "policy": "outputs", "action": "archive", "root": str(data),
                     "path": str(data / name), "size": s.st_size, "mtime": s.st_mtime, "atime": s.st_atime,
                     "mode": s.st_mode, "uid": 0, "gid": 0, "dev": s.st_dev, "ino": s.st_ino, "state": "planned",
                     "target": "store", "object_key": f"arch/outputs/{name}"})
    catalog.add_planned(rows)
    catalog.close()
    os.unlink(data / "archived")
    os.unlink(data / "lost")
    os.utime(data / "kept")  # too young now, so this run plans nothing for it
    report, _ = run_inprocess(cfg)
    assert report.reconciled == 3
    states = {os.path.basename(e.path): e.state for e in journal(tmp_path) if e.run_id == "killed"}
    assert states == {"kept": "aborted", "archived": "done", "lost": "failed"}


def test_plain_progress_lines() -> None:
    from janitor.progress import PlainProgress

    out = io.StringIO()
    p = PlainProgress("archive x -> y", 2, 2 * MiB, stream=out, interval=0)
    p.advance(MiB)
    p.file_done()
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("archive x -> y: 0/2 files, 1.0 MiB/2.0 MiB")
    assert lines[-1].startswith("archive x -> y: 1/2 files")


# -- file:// target end to end ----------------------------------------------------------------


def test_file_target_end_to_end_and_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    nas = tmp_path / "nas"
    nas.mkdir()
    digests = make_tree(data, {"v/a.mp4": os.urandom(300_000), "b.txt": b"b"}, mode=0o604)
    mtimes = {rel: os.stat(data / rel).st_mtime for rel in digests}
    cfg = write_config(tmp_path, data, url=f"file://{nas}")
    r = janitor("run", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert not (data / "v/a.mp4").exists()
    assert (nas / "outputs/v/a.mp4").read_bytes() and (nas / "outputs/v/a.mp4.janitor.json").exists()
    r = janitor("restore", "--from-archive", "--policy", "outputs", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    for rel, digest in digests.items():
        p = data / rel
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
        assert p.stat().st_mtime == pytest.approx(mtimes[rel], abs=1e-5)
        assert p.stat().st_mode & 0o7777 == 0o604


# -- end to end against moto's standalone server ----------------------------------------------


def test_e2e_multipart_and_restore_round_trip(moto_server: MotoServer, tmp_path: Path) -> None:
    endpoint = moto_server.endpoint_url
    bucket = _fresh_bucket(endpoint, "e2e-multipart")
    data = tmp_path / "data"
    big = os.urandom(20 * MiB)
    digests = make_tree(data, {"renders/big.mp4": big, "small.txt": b"small"}, mode=0o640)
    mtime = os.stat(data / "renders/big.mp4").st_mtime
    # the default threshold (100 MiB) would send 20 MiB as one PUT: lower it to force multipart
    cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=endpoint,
                       target_extra="    multipart_threshold: 8MiB\n    multipart_chunksize: 8MiB\n")
    r = janitor("run", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert not (data / "renders/big.mp4").exists()
    h = head(endpoint, "arch/outputs/renders/big.mp4", bucket)
    assert "-" in h["ETag"]  # multipart
    assert h["ContentLength"] == 20 * MiB and h["Metadata"]["janitor-sha256"] == digests["renders/big.mp4"]

    # a restore by glob; an existing file is never overwritten without --force
    r = janitor("restore", "--from-archive", str(data / "renders/*.mp4"), "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    restored = data / "renders/big.mp4"
    assert restored.read_bytes() == big
    st = restored.stat()
    assert st.st_mtime == pytest.approx(mtime, abs=1e-5) and st.st_mode & 0o7777 == 0o640
    assert not [p for p in (data / "renders").iterdir() if "janitor-restore" in p.name]
    # big.mp4 is in place with the same bytes: "already there", not a failure (issue 12
    # defect 9); small.txt is in the way with other bytes: refused, never overwritten
    (data / "small.txt").write_bytes(b"other")
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 1 and "exists; not overwriting it (use --force)" in r.stdout + r.stderr
    assert (data / "small.txt").read_bytes() == b"other"
    assert f"already there {data / 'renders/big.mp4'}" in r.stdout


def test_e2e_restore_refuses_paths_outside_policy(moto_server: MotoServer, tmp_path: Path) -> None:
    endpoint = moto_server.endpoint_url
    bucket = _fresh_bucket(endpoint, "e2e-unsafe")
    data = tmp_path / "data"
    make_tree(data, {"a.txt": b"a"})
    cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=endpoint)
    assert janitor("run", "-c", str(cfg)).returncode == 0
    catalog = open_catalog(str(tmp_path / "state"))
    catalog.db.execute("UPDATE journal SET path=?", [os.fsencode(str(data / ".." / "escaped.txt"))])
    catalog.close()
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 1
    assert "outside policy path" in r.stdout + r.stderr
    assert not (tmp_path / "escaped.txt").exists()


def test_e2e_missing_bucket_and_bad_credentials(
    private_moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = private_moto_server.endpoint_url
    data = tmp_path / "data"
    make_tree(data, {"a": b"a", "b": b"b"})
    cfg = write_config(tmp_path, data, url="s3://not-there/arch", endpoint=endpoint)
    r = janitor("run", "-c", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: target store: bucket 'not-there' does not exist (policy=outputs, code=E_TARGET_UNAVAILABLE)"
    ]
    assert sorted(os.listdir(data)) == ["a", "b"]


def test_e2e_bad_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto authenticates requests after the first N (here: after creating the bucket)
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "1")
    server = start_moto_server()
    try:
        bucket = _fresh_bucket(server.endpoint_url, "e2e-auth")
        data = tmp_path / "data"
        make_tree(data, {"a": b"a"})
        cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=server.endpoint_url)
        r = janitor("run", "-c", str(cfg))
    finally:
        server.stop()
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "access denied" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert os.listdir(data) == ["a"]


def test_e2e_endpoint_down(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    data = tmp_path / "data"
    make_tree(data, {"a": b"a"})
    cfg = write_config(tmp_path, data, endpoint=f"http://127.0.0.1:{port}")
    r = janitor("run", "-c", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: target store: cannot reach http://127.0.0.1:{port} (connection refused) "
        "(policy=outputs, code=E_TARGET_UNAVAILABLE)"
    ]
    assert os.listdir(data) == ["a"]


def run_until_stored(cfg: Path, endpoint: str, bucket: str, count: int, *, then: Callable[[], None]) -> tuple[int, str]:
    """Start `janitor run`, wait until the bucket holds `count` objects (real progress, not a
    fixed time), call `then` (kill the endpoint), and return the run's exit code and stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "janitor", "run", "-c", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while len(objects(endpoint, bucket)) < count:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        then()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


class Proxy:
    """A TCP forwarder on 127.0.0.1 in front of the moto server. `kill()` drops the listener
    and every connection at once: to janitor the endpoint is gone, while the objects stay in
    moto for the test to verify."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dead = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dead.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                if self.dead.is_set():
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self.dead.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    (b if s is a else a).sendall(chunk)
        except OSError:
            return

    def kill(self) -> None:
        self.dead.set()
        self.listener.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_e2e_endpoint_killed_mid_run_loses_nothing(moto_server: MotoServer, tmp_path: Path) -> None:
    endpoint = moto_server.endpoint_url
    bucket = _fresh_bucket(endpoint, "e2e-killed")
    data = tmp_path / "data"
    contents = {f"d{i % 7}/f{i:04}.bin": os.urandom(64 * 1024) for i in range(600)}
    digests = make_tree(data, contents)
    proxy = Proxy(moto_server.port)
    cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=f"http://127.0.0.1:{proxy.port}")
    returncode, err = run_until_stored(cfg, endpoint, bucket, 100, then=proxy.kill)
    assert returncode == 1, err
    assert "Traceback" not in err
    cause = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(cause) == 1 and ("cannot reach" in cause[0] or "dropped" in cause[0]), err

    def check_nothing_lost() -> int:
        stored = objects(endpoint, bucket)
        gone = 0
        for rel, digest in digests.items():
            if (data / rel).exists():
                assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == digest
                continue
            gone += 1
            key = f"arch/outputs/{rel}"
            assert key in stored, f"{rel} deleted without an object"
            h = head(endpoint, key, bucket)
            assert h["ContentLength"] == 64 * 1024 and h["Metadata"]["janitor-sha256"] == digest
        return gone

    gone = check_nothing_lost()
    assert 0 < gone < len(digests)
    first_modified = {k: v["LastModified"] for k, v in objects(endpoint, bucket).items()}

    # the endpoint is back: the next run settles the journal and finishes without re-uploading
    time.sleep(1.1)
    cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=endpoint)
    r = janitor("run", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert check_nothing_lost() == len(digests)
    after = objects(endpoint, bucket)
    for key, modified in first_modified.items():
        assert after[key]["LastModified"] == modified, f"{key} uploaded twice"
    uploads: dict[str, int] = {}
    for e in journal(tmp_path):
        if e.detail == "uploaded":
            uploads[e.object_key] = uploads.get(e.object_key, 0) + 1
    assert max(uploads.values()) == 1


def test_e2e_server_process_killed(private_moto_server: MotoServer, tmp_path: Path) -> None:
    """The moto process itself SIGKILLed mid-run: every file is still local or journaled as
    archived with its digest (the objects died with the server, so the journal is the witness)."""
    endpoint = private_moto_server.endpoint_url
    bucket = _fresh_bucket(endpoint, "e2e-sigkill")
    data = tmp_path / "data"
    digests = make_tree(data, {f"f{i:04}.bin": os.urandom(32 * 1024) for i in range(400)})
    cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=endpoint)
    returncode, err = run_until_stored(cfg, endpoint, bucket, 50, then=private_moto_server.kill)
    assert returncode == 1 and "Traceback" not in err
    archived = {os.path.basename(e.path): e.sha256 for e in journal(tmp_path) if e.state == "done"}
    for rel, digest in digests.items():
        if not (data / rel).exists():
            assert archived.get(rel) == digest, f"{rel} deleted without a verified upload"
    assert 0 < len(archived) < len(digests)


def test_e2e_lifecycle_cli(moto_server: MotoServer, tmp_path: Path) -> None:
    endpoint = moto_server.endpoint_url
    bucket = _fresh_bucket(endpoint, "e2e-lifecycle")
    cfg = write_config(tmp_path, tmp_path / "d", url=f"s3://{bucket}/arch", endpoint=endpoint)
    r = janitor("archive", "lifecycle", "-c", str(cfg), "--target", "store", "--expire-after", "365d",
                "--transition-after", "30d", "--storage-class", "GLACIER")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote janitor-store: prefix 'arch/', enabled, expire after 365d, GLACIER after 30d")
    rules = _s3(endpoint).get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [(x["ID"], x["Filter"]["Prefix"], x["Expiration"]["Days"]) for x in rules] == [("janitor-store", "arch/", 365)]
    r = janitor("archive", "lifecycle", "-c", str(cfg), "--target", "store", "--show")
    assert r.returncode == 0 and "janitor-store: prefix 'arch/'" in r.stdout
    r = janitor("archive", "lifecycle", "-c", str(cfg), "--target", "store", "--expire-after", "36h")
    assert r.returncode == 2 and "whole days" in r.stderr
    r = janitor("archive", "lifecycle", "-c", str(cfg), "--target", "nope", "--show")
    assert r.returncode == 2, r.stderr  # a usage error (issue 12 defect 12), not a failed run
    assert "no target named 'nope' (defined: store)" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_every_archive_command_has_help() -> None:
    for args in (["archive", "--help"], ["archive", "lifecycle", "--help"], ["restore", "--help"]):
        r = janitor(*args)
        assert r.returncode == 0 and len(r.stdout) > 100
    assert "--from-archive" in janitor("restore", "--help").stdout


def test_action_is_registered() -> None:
    from janitor.actions.base import ACTIONS

    assert ACTIONS["archive"] is ArchiveAction
