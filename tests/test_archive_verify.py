"""Issue 12 defect 1: an archive never deletes a source without proof of the bytes stored.

A proxy between janitor and a real moto server flips one byte of every object upload body.
Four servers are shown: one that checks nothing (Content-MD5 and checksum headers removed
before moto sees them) but whose ETag is the MD5 of what it stored; one that also gives no
ETag (no proof at all: janitor reads the object back); one that lies (its ETag echoes the
MD5 janitor sent: only `verify: readback` catches it); and one that checks the headers the
way S3 does. In every case 0 sources are deleted, and once the damage stops, the next run
archives everything and every restore works.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from s3server import ChecksumCheckingProxy, MotoServer, use_fake_aws_credentials
from test_archive import _fresh_bucket, janitor, make_tree, objects, run_inprocess, write_config

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    use_fake_aws_credentials(monkeypatch, tmp_path_factory)


@pytest.fixture
def proxy(moto_server: MotoServer):  # type: ignore[no-untyped-def]
    p = ChecksumCheckingProxy(moto_server.port)
    yield p
    p.close()


SERVERS = {
    # name: (strip headers, ETag handling, verify mode)
    "checks-nothing": (True, "keep", "server"),
    "checks-nothing-no-etag": (True, "drop", "server"),
    "lying-etag-readback": (True, "echo", "readback"),
    "checks-like-s3": (False, "keep", "server"),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_corrupting_proxy_deletes_no_source_and_every_restore_works(
    moto_server: MotoServer, proxy: ChecksumCheckingProxy, tmp_path: Path, server: str
) -> None:
    strip, etag, verify = SERVERS[server]
    bucket = _fresh_bucket(moto_server.endpoint_url, f"verify-{server}")
    data = tmp_path / "data"
    files = {f"d/f{i}.bin": os.urandom(4096 + i) for i in range(6)}
    files["big/multi.bin"] = os.urandom(11 * MiB)  # three parts of 5 MiB, 5 MiB, 1 MiB
    digests = make_tree(data, files)
    cfg = write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=proxy.endpoint_url,
                       target_extra=f"    verify: {verify}\n    multipart_threshold: 5MiB\n"
                                    "    multipart_chunksize: 5MiB\n")
    proxy.flip_all, proxy.strip, proxy.etag = True, strip, etag

    report, log = run_inprocess(cfg)

    (outcome,) = report.result.policies
    assert proxy.flipped, "the proxy damaged nothing: the test proves nothing"
    assert outcome.files == 0 and report.result.exit_code == 1, log
    for rel, digest in digests.items():  # 0 sources deleted, every one intact
        assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == digest, rel
    assert "Traceback" not in log
    # nothing damaged is left where a later run could take it for a copy
    assert all(not k.startswith("arch/") for k in objects(moto_server.endpoint_url, bucket)) or strip is False

    # the damage stops: the next run stores and proves everything, and restores are exact
    proxy.flip_all = False
    report, log = run_inprocess(cfg)
    assert report.result.exit_code == 0 and report.result.policies[0].files == len(files), log
    assert not any((data / rel).exists() for rel in files)
    r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    for rel, digest in digests.items():
        assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == digest, rel


def test_a_server_whose_etags_are_not_md5s_still_archives_after_a_read_back(
    moto_server: MotoServer, proxy: ChecksumCheckingProxy, tmp_path: Path
) -> None:
    """ETags that are not MD5s (encrypting S3-compatibles) prove nothing, and disprove
    nothing either: the objects are read back, match, and the sources go."""
    bucket = _fresh_bucket(moto_server.endpoint_url, "verify-opaque")
    data = tmp_path / "data"
    make_tree(data, {f"f{i}.bin": os.urandom(3000) for i in range(4)})
    proxy.etag = "opaque"
    report, log = run_inprocess(write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=proxy.endpoint_url))
    assert report.result.exit_code == 0 and report.result.policies[0].files == 4, log
    assert os.listdir(data) == []


def test_without_proof_and_without_read_access_the_source_is_kept_with_one_line(
    moto_server: MotoServer, proxy: ChecksumCheckingProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ETag from the server and the read-back refused: the file stays, one line says so."""
    from janitor.targets.s3 import S3Target

    bucket = _fresh_bucket(moto_server.endpoint_url, "verify-no-read")
    data = tmp_path / "data"
    make_tree(data, {"a.bin": b"a" * 1000})
    proxy.strip, proxy.etag = True, "drop"

    def no_get(self, key, version_id, *, size, sha256):  # type: ignore[no-untyped-def]
        from janitor.errors import VerifyFailed

        raise VerifyFailed(self._fail(f"'{key}': the server gave no proof of the bytes it stored and reading "
                                      "it back failed (access denied); source kept"))

    monkeypatch.setattr(S3Target, "_read_back", no_get)
    report, log = run_inprocess(write_config(tmp_path, data, url=f"s3://{bucket}/arch", endpoint=proxy.endpoint_url))
    assert report.result.exit_code == 1 and (data / "a.bin").read_bytes() == b"a" * 1000
    assert "source kept" in log and len(log.strip().splitlines()) == 1, log


def test_an_object_stored_without_proof_is_not_taken_for_a_copy(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    """Idempotency needs proof too: an object under the file's key whose metadata names the
    file's digest but whose bytes differ (stored through a damaging path) is not 'already
    archived': the file is uploaded again, and deleted only once that copy is proven."""
    import boto3

    bucket = _fresh_bucket(moto_server.endpoint_url, "verify-idem")
    data = tmp_path / "data"
    digests = make_tree(data, {"a.bin": b"good" * 1000})
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key="arch/outputs/a.bin", Body=b"bad!" * 1000,
                  Metadata={"janitor-sha256": digests["a.bin"], "janitor-mtime": "0", "janitor-mode": "0o644"})
    report, log = run_inprocess(write_config(tmp_path, data, url=f"s3://{bucket}/arch",
                                             endpoint=moto_server.endpoint_url))
    assert report.result.exit_code == 0, log
    body = s3.get_object(Bucket=bucket, Key="arch/outputs/a.bin")["Body"].read()
    assert body == b"good" * 1000


def test_readback_mode_is_per_policy(tmp_path: Path) -> None:
    from janitor.config import load_config
    from janitor.targets import target_for

    data = tmp_path / "data"
    data.mkdir()
    cfg = write_config(tmp_path, data, url="s3://b/arch", endpoint="http://127.0.0.1:1",
                       extra="    verify: readback\n    bwlimit: 20MiB/s\n")
    config = load_config(cfg)
    target = target_for(config, "store", config.policies[0])
    assert target.spec.verify == "readback" and target.spec.bwlimit == 20 * MiB
    assert target_for(config, "store").spec.verify == "server"


def _elapsed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    fn()
    return time.monotonic() - start


@pytest.mark.parametrize("where", ["target", "policy", "s3 target"])
def test_bwlimit_bounds_uploads_and_restores(tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    """`bwlimit: 1MiB/s`: 2 MiB take at least about 2 s up and 2 s back down (a lower
    bound from size/limit; no upper bound is asserted)."""
    data = tmp_path / "data"
    store = tmp_path / "store"
    store.mkdir()
    payload = {"a.bin": os.urandom(MiB), "b.bin": os.urandom(MiB)}
    digests = make_tree(data, payload)
    limit = "    bwlimit: 1MiB/s\n"
    url, endpoint = f"file://{store}", None
    if where == "s3 target":
        server = request.getfixturevalue("moto_server")
        url, endpoint = f"s3://{_fresh_bucket(server.endpoint_url, 'bwlimit')}/arch", server.endpoint_url
    cfg = write_config(tmp_path, data, url=url, endpoint=endpoint, workers=2,
                       target_extra=limit if where != "policy" else "",
                       extra=limit if where == "policy" else "")
    size = sum(len(v) for v in payload.values())
    floor = 0.8 * size / MiB  # seconds; the bucket starts empty and holds at most 1/4 s
    report_log: list[str] = []

    def run() -> None:
        report, log = run_inprocess(cfg)
        report_log.append(log)
        assert report.result.exit_code == 0, log

    assert _elapsed(run) >= floor, report_log
    assert not (data / "a.bin").exists()

    def restore() -> None:
        r = janitor("restore", "--from-archive", "--all", "-c", str(cfg))
        assert r.returncode == 0, r.stdout + r.stderr

    assert _elapsed(restore) >= floor
    for rel, digest in digests.items():
        assert hashlib.sha256((data / rel).read_bytes()).hexdigest() == digest


def test_bwlimit_values() -> None:
    from janitor.targets.base import parse_rate

    assert parse_rate("20MiB/s") == 20 * MiB
    assert parse_rate("500KiB") == 500 * 1024
    assert parse_rate("1 MiB / s") == MiB
    for bad in ("fast", "0/s", "-1MiB/s", True):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_reads_stop_at_the_planned_size_even_on_an_endless_file(tmp_path: Path) -> None:
    """/dev/zero (or a file growing without end) is read only as far as the size the plan
    saw: hashing, the upload body and a file:// copy all stop there."""
    from janitor.actions.archive import sha256_of_fd
    from janitor.targets import TargetSpec, make_target
    from janitor.targets.base import BoundedFdReader

    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        assert sha256_of_fd(fd, 3 * MiB + 5) == hashlib.sha256(bytes(3 * MiB + 5)).hexdigest()
        assert BoundedFdReader(fd, 0, 1000).read_all() == bytes(1000)
        store = tmp_path / "store"
        store.mkdir()
        target = make_target(TargetSpec("nas", f"file://{store}"))
        obj = target.upload(fd, "p/zero.bin", sha256=hashlib.sha256(bytes(4096)).hexdigest(), size=4096,
                            mtime=0.0, mode=0o600)
    finally:
        os.close(fd)
    assert obj.size == 4096 and (store / "p/zero.bin").read_bytes() == bytes(4096)


def test_restore_version_by_key_suffix_or_time() -> None:
    from types import SimpleNamespace

    from janitor.archiveops import version_filter

    old = SimpleNamespace(object_key="arch/p/a.txt", version_id=None, done_at=time.time() - 10 * 86400, ts=0.0)
    new = SimpleNamespace(object_key="arch/p/a.txt@0123456789abcdef", version_id="v2", done_at=time.time(), ts=0.0)
    assert [version_filter(None)(e) for e in (old, new)] == [True, True]
    assert [version_filter("arch/p/a.txt")(e) for e in (old, new)] == [True, False]
    assert [version_filter("0123456789abcdef")(e) for e in (old, new)] == [False, True]
    assert [version_filter("v2")(e) for e in (old, new)] == [False, True]
    assert [version_filter("3d")(e) for e in (old, new)] == [True, False]  # archived 3 days ago or earlier
    day = time.strftime("%Y-%m-%d", time.localtime(time.time() - 5 * 86400))
    assert [version_filter(day)(e) for e in (old, new)] == [True, False]
