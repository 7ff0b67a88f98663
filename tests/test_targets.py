"""Archive targets: S3 (in-process moto and moto's standalone server) and file://."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from s3server import MotoServer, use_fake_aws_credentials

from janitor.errors import FileChanged, TargetError, UploadFailed, VerifyFailed
from janitor.targets import (
    ArchiveTarget,
    StoredObject,
    TargetSpec,
    file_sha256,
    is_verified,
    make_target,
)
from janitor.targets.base import join_key
from janitor.targets.filesystem import SIDECAR_SUFFIX, FileTarget
from janitor.targets.s3 import S3Target

BUCKET = "janitor-archive"
MiB = 1024 * 1024


# -- fixtures (to move to conftest.py) ------------------------------------------------------


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    use_fake_aws_credentials(monkeypatch, tmp_path_factory)


@pytest.fixture
def mocked_s3(aws_env: None) -> Iterator[None]:
    from moto import mock_aws

    with mock_aws():
        yield


def _make_bucket(endpoint_url: str | None, bucket: str = BUCKET, *, versioned: bool = False):
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    if versioned:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return client


_bucket_counter = iter(range(1_000_000))


@pytest.fixture
def server_bucket(moto_server: MotoServer) -> str:
    """A fresh bucket on the shared standalone server, so tests do not see each other's keys."""
    name = f"e2e-{os.getpid()}-{next(_bucket_counter)}"
    _make_bucket(moto_server.endpoint_url, name)
    return name


def s3_spec(bucket: str = BUCKET, prefix: str = "", **kw) -> TargetSpec:
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    kw.setdefault("region", "us-east-1")
    return TargetSpec(name="minio", url=url, **kw)


def write_file(path, size: int, seed: int = 0) -> tuple[str, str]:
    """Write `size` pseudo-random bytes; return (path, sha256)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
            block = hashlib.sha256(block[:64]).digest() * (MiB // 32)
    return str(path), file_sha256(str(path))


def upload_args(path: str, sha: str) -> dict:
    st = os.stat(path)
    return {"sha256": sha, "size": st.st_size, "mtime": st.st_mtime, "mode": st.st_mode & 0o7777}


# -- package-level API ------------------------------------------------------------------------


def test_importing_targets_does_not_import_boto3() -> None:
    code = (
        "import sys, janitor.targets\n"
        "from janitor.targets import make_target, TargetSpec\n"
        "t = make_target(TargetSpec('m', 's3://bkt/p'))\n"
        "t.key_for('logs', 'a.txt'); t.describe()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_single_part_uploads_do_not_import_boto3(moto_server: MotoServer, server_bucket: str, tmp_path) -> None:
    """boto3 and s3transfer (~40 ms to import) are needed only for multipart uploads."""
    src, sha = write_file(tmp_path / "small", 4096)
    code = (
        "import sys, os\n"
        "from janitor.targets import make_target, TargetSpec\n"
        f"t = make_target(TargetSpec('m', 's3://{server_bucket}', endpoint_url='{moto_server.endpoint_url}',"
        " region='us-east-1'))\n"
        f"st = os.stat('{src}')\n"
        f"t.upload('{src}', 'k', sha256='{sha}', size=st.st_size, mtime=st.st_mtime, mode=0o644)\n"
        "assert t.stat('k').sha256 == '" + sha + "'\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('boto3', 's3transfer')]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_make_target_by_scheme(tmp_path) -> None:
    s3 = make_target(s3_spec())
    nas = make_target(TargetSpec("nas", f"file://{tmp_path}"))
    assert isinstance(s3, S3Target) and isinstance(nas, FileTarget)
    assert isinstance(s3, ArchiveTarget) and isinstance(nas, ArchiveTarget)
    assert nas.describe() == f"file://{tmp_path}"
    assert s3.describe() == f"s3://{BUCKET} (endpoint AWS default)"
    with pytest.raises(ValueError, match=r"unsupported URL scheme 'gs'.*valid schemes: file, s3"):
        make_target(TargetSpec("x", "gs://bucket/p"))
    with pytest.raises(ValueError, match="valid schemes"):
        make_target(TargetSpec("x", "/plain/path"))


def test_key_for() -> None:
    assert make_target(s3_spec(prefix="host1/arch/")).key_for("logs", "a/b.gz") == (
        "host1/arch/logs/a/b.gz"
    )
    assert make_target(s3_spec()).key_for("logs", "./a//b.gz") == "logs/a/b.gz"
    for bad in ("../x", "a/../../x", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            join_key("", "logs", bad)
    with pytest.raises(ValueError):
        join_key("", "a/b", "x")


def test_is_verified() -> None:
    obj = StoredObject("k", 10, "ab" * 32, 1.0, 0o644)
    assert is_verified(obj, 10, "AB" * 32)
    assert not is_verified(obj, 11, "ab" * 32)
    assert not is_verified(obj, 10, "cd" * 32)
    assert not is_verified(None, 10, "ab" * 32)
    assert not is_verified(StoredObject("k", 10, None, None, None), 10, "ab" * 32)


def test_s3_spec_validation() -> None:
    with pytest.raises(ValueError, match="names no bucket"):
        S3Target(TargetSpec("m", "s3:///prefix"))


# -- S3, in-process moto ----------------------------------------------------------------------


def test_s3_round_trip(mocked_s3: None, tmp_path) -> None:
    _make_bucket(None)
    target = make_target(s3_spec(prefix="host1", storage_class="STANDARD_IA", sse="AES256"))
    src, sha = write_file(tmp_path / "a.log", 100_000)
    os.chmod(src, 0o640)
    os.utime(src, (1_700_000_000.123456, 1_700_000_000.123456))
    key = target.key_for("logs", "app/a.log")
    assert target.stat(key) is None

    seen: list[int] = []
    stored = target.upload(src, key, progress=seen.append, **upload_args(src, sha))
    assert stored == StoredObject(key, 100_000, sha, 1_700_000_000.123456, 0o640)
    assert sum(seen) == 100_000
    assert target.stat(key) == stored
    assert is_verified(target.stat(key), 100_000, sha)

    head = target.client.head_object(Bucket=BUCKET, Key=key)
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["janitor-mode"] == "0o640"

    dest = tmp_path / "restored"
    assert target.download(key, str(dest)) == stored
    assert file_sha256(str(dest)) == sha
    assert [o.key for o in target.list_objects("host1/")] == [key]


def test_s3_version_id(mocked_s3: None, tmp_path) -> None:
    _make_bucket(None, versioned=True)
    target = make_target(s3_spec())
    src, sha = write_file(tmp_path / "a", 1000)
    stored = target.upload(src, "k", **upload_args(src, sha))
    assert stored.version_id


def test_s3_missing_bucket(mocked_s3: None, tmp_path) -> None:
    target = make_target(s3_spec(bucket="no-such-bucket"))
    msg = "target minio: bucket 'no-such-bucket' does not exist"
    with pytest.raises(TargetError, match=msg):
        target.check()
    with pytest.raises(TargetError, match=msg):
        target.stat("k")
    src, sha = write_file(tmp_path / "a", 10)
    with pytest.raises(UploadFailed, match=msg):
        target.upload(src, "k", **upload_args(src, sha))


def test_s3_download_missing_and_corrupt(mocked_s3: None, tmp_path) -> None:
    client = _make_bucket(None)
    target = make_target(s3_spec())
    dest = tmp_path / "out"
    with pytest.raises(TargetError, match="object 'nope' does not exist"):
        target.download("nope", str(dest))
    # An object whose bytes do not match its recorded digest (e.g. overwritten by hand).
    client.put_object(
        Bucket=BUCKET, Key="bad", Body=b"tampered", Metadata={"janitor-sha256": "00" * 32}
    )
    assert not is_verified(target.stat("bad"), 8, hashlib.sha256(b"tampered").hexdigest())
    with pytest.raises(VerifyFailed, match="'bad' did not verify"):
        target.download("bad", str(dest))
    assert not dest.exists()


def test_s3_single_put_asks_the_server_to_check_our_digest(
    moto_server: MotoServer, checking_proxy, server_bucket: str, tmp_path
) -> None:
    """A single PutObject carries janitor's digest as x-amz-checksum-sha256: a server that
    checks it (S3, MinIO; here a proxy doing what they do) refuses bytes that are not the
    file janitor hashed, and nothing is stored."""
    target = make_target(s3_spec(server_bucket, endpoint_url=checking_proxy.endpoint_url))
    src, sha = write_file(tmp_path / "a", 1000)
    stored = target.upload(src, "good", **upload_args(src, sha))
    assert is_verified(stored, 1000, sha)
    assert checking_proxy.checked == [f"/{server_bucket}/good"] and not checking_proxy.rejected

    with pytest.raises(VerifyFailed, match="not janitor's digest"):
        target.upload(src, "stale", **upload_args(src, "11" * 32))
    assert checking_proxy.rejected == [f"/{server_bucket}/stale"]
    direct = make_target(s3_spec(server_bucket, endpoint_url=moto_server.endpoint_url))
    assert direct.stat("stale") is None and direct.stat("good") is not None


@pytest.mark.parametrize("size", [5000, 11 * MiB], ids=["single-part", "multipart"])
def test_s3_falls_back_when_checksums_rejected(mocked_s3: None, tmp_path, size: int) -> None:
    from botocore.awsrequest import AWSResponse

    _make_bucket(None)
    # Small parts so the multipart case stays quick.
    target = S3Target(
        s3_spec(),
        transfer_overrides={"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB},
    )
    rejected: list[str] = []

    class Raw:
        def __init__(self, body: bytes) -> None:
            self.body = body

        def stream(self, **_kw):
            yield self.body

    def reject_checksums(request, **_kw):
        # Like an S3-compatible that knows nothing of flexible checksums.
        if request.method in ("PUT", "POST") and any(
            h.lower().startswith(("x-amz-checksum-", "x-amz-sdk-checksum", "x-amz-trailer"))
            for h in request.headers
        ):
            rejected.append(request.url)
            body = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code>"
                b"<Message>A header you provided implies functionality that is not "
                b"implemented</Message></Error>"
            )
            return AWSResponse(request.url, 501, {}, Raw(body))
        return None

    target.client.meta.events.register_first("before-send.s3", reject_checksums)
    src, sha = write_file(tmp_path / "a", size)
    stored = target.upload(src, "k", **upload_args(src, sha))
    assert rejected, "the hook never saw a checksum header"
    assert is_verified(stored, size, sha)
    assert target._checksums_supported is False
    dest = tmp_path / "back"
    target.download("k", str(dest))
    assert file_sha256(str(dest)) == sha


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, "target minio: access denied (check credentials and bucket policy)"),
        ("InvalidAccessKeyId", 403, "access key not recognised (check credentials)"),
        ("SignatureDoesNotMatch", 403, "signature rejected (check the secret key)"),
        ("SlowDown", 503, "endpoint is throttling requests (SlowDown) after 5 attempts"),
        ("NoSuchBucket", 404, f"bucket '{BUCKET}' does not exist"),
        ("InternalError", 500, "endpoint server error (InternalError)"),
        ("WeirdThing", 400, "upload failed (WeirdThing: it broke)"),
    ],
)
def test_s3_client_error_mapping(code: str, status: int, expected: str) -> None:
    from botocore.exceptions import ClientError

    target = S3Target(s3_spec())
    response = {
        "Error": {"Code": code, "Message": "it\nbroke"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    err = target._error(ClientError(response, "PutObject"), action="upload", cls=UploadFailed)
    assert isinstance(err, UploadFailed)
    assert "\n" not in str(err)
    assert expected in str(err)


def test_s3_transport_error_mapping() -> None:
    from botocore.exceptions import EndpointConnectionError, FlexibleChecksumError

    target = S3Target(s3_spec(endpoint_url="http://minio.example:9000"))
    dns = EndpointConnectionError(
        endpoint_url="http://minio.example:9000", error=socket.gaierror(-2, "Name not known")
    )
    assert str(target._error(dns, action="check")) == (
        "target minio: cannot reach http://minio.example:9000 (host name not resolved)"
    )
    bad = target._error(FlexibleChecksumError(error_msg="x"), action="download", key="k")
    assert isinstance(bad, VerifyFailed)


def test_s3_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    target = make_target(s3_spec(endpoint_url="http://127.0.0.1:9", max_attempts=1))
    with pytest.raises(TargetError, match="no usable credentials"):
        target.check()


def test_s3_unknown_profile() -> None:
    target = make_target(s3_spec(profile="nope"))
    with pytest.raises(TargetError, match="AWS profile 'nope' not found"):
        target.check()


# -- S3, moto standalone server over real HTTP ------------------------------------------------


def test_e2e_multipart_round_trip(moto_server: MotoServer, server_bucket: str, tmp_path) -> None:
    target = make_target(
        s3_spec(server_bucket, prefix="arch", endpoint_url=moto_server.endpoint_url,
                multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    )
    target.check()
    assert moto_server.endpoint_url in target.describe()
    src, sha = write_file(tmp_path / "big.bin", 20 * MiB, seed=7)
    key = target.key_for("dumps", "db/big.bin")
    progress: list[int] = []
    lock = threading.Lock()

    def on_progress(n: int) -> None:
        with lock:  # s3transfer calls back from its worker threads
            progress.append(n)

    stored = target.upload(src, key, progress=on_progress, **upload_args(src, sha))
    assert is_verified(stored, 20 * MiB, sha)
    assert sum(progress) == 20 * MiB
    head = target.client.head_object(Bucket=server_bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # 8 MiB parts: 8 + 8 + 4

    # Re-run check: the stored copy is recognised, so no second upload is needed.
    assert is_verified(target.stat(key), 20 * MiB, sha)

    dest = tmp_path / "restored.bin"
    got = target.download(key, str(dest))
    assert got == stored
    with open(src, "rb") as a, open(dest, "rb") as b:
        assert a.read() == b.read()


def test_e2e_small_file_server_checksum(
    moto_server: MotoServer, server_bucket: str, tmp_path
) -> None:
    target = make_target(s3_spec(server_bucket, endpoint_url=moto_server.endpoint_url))
    src, sha = write_file(tmp_path / "small", 4096)
    target.upload(src, "small", **upload_args(src, sha))
    head = target.client.head_object(Bucket=server_bucket, Key="small", ChecksumMode="ENABLED")
    import base64

    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha)).decode()


def test_e2e_endpoint_down(private_moto_server: MotoServer, tmp_path) -> None:
    server = private_moto_server
    _make_bucket(server.endpoint_url)
    spec = s3_spec(endpoint_url=server.endpoint_url, max_attempts=2, connect_timeout=1)
    target = make_target(spec)
    src, sha = write_file(tmp_path / "a", 1000)
    target.upload(src, "k", **upload_args(src, sha))

    server.kill()
    expected = f"target minio: cannot reach {server.endpoint_url} (connection refused)"
    start = time.monotonic()
    with pytest.raises(TargetError) as info:
        target.stat("k")
    assert str(info.value) == expected
    with pytest.raises(UploadFailed, match=r"cannot reach .* \(connection refused\)"):
        target.upload(src, "k2", **upload_args(src, sha))
    with pytest.raises(TargetError, match="connection refused"):
        target.check()
    assert time.monotonic() - start < 10


def test_e2e_endpoint_dies_mid_upload(private_moto_server: MotoServer, tmp_path) -> None:
    server = private_moto_server
    _make_bucket(server.endpoint_url)
    target = make_target(
        s3_spec(endpoint_url=server.endpoint_url, max_attempts=2, connect_timeout=1, read_timeout=5,
                multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    )
    src, sha = write_file(tmp_path / "big", 20 * MiB)
    killed = threading.Event()

    def kill_on_first_progress(_n: int) -> None:
        if not killed.is_set():
            killed.set()
            server.kill()

    start = time.monotonic()
    with pytest.raises(UploadFailed) as info:
        target.upload(src, "big", progress=kill_on_first_progress, **upload_args(src, sha))
    assert killed.is_set()
    assert str(info.value).startswith("target minio: ")
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 20


def test_e2e_endpoint_hangs(tmp_path) -> None:
    """Accepts connections but never answers: read timeout, reported in one line."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        target = make_target(
            s3_spec(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1, read_timeout=0.5)
        )
        start = time.monotonic()
        with pytest.raises(TargetError, match=r"stopped responding \(read timed out after 0.5s"):
            target.stat("k")
        assert time.monotonic() - start < 5


def test_e2e_throttled_after_retries() -> None:
    hits: list[str] = []

    class SlowDown(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            hits.append(self.command)
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = _reply

        def log_message(self, *_args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowDown)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        target = make_target(s3_spec(endpoint_url=url, max_attempts=2))
        with pytest.raises(
            TargetError, match=r"endpoint is throttling requests \(SlowDown\) after 2 attempts"
        ):
            target.get_lifecycle()
        assert len(hits) == 2  # botocore retried once before we gave up
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_e2e_lifecycle_merge(moto_server: MotoServer, server_bucket: str) -> None:
    target = make_target(
        s3_spec(server_bucket, prefix="arch", endpoint_url=moto_server.endpoint_url)
    )
    assert target.get_lifecycle() == []
    target.set_lifecycle("janitor-logs", target.policy_prefix("logs"), 90, 30, "STANDARD_IA")
    target.set_lifecycle("janitor-dumps", target.policy_prefix("dumps"), 365, None, None)
    target.set_lifecycle("janitor-logs", target.policy_prefix("logs"), 120, None, None)
    rules = {r["ID"]: r for r in target.get_lifecycle()}
    assert set(rules) == {"janitor-logs", "janitor-dumps"}
    assert rules["janitor-logs"]["Expiration"] == {"Days": 120}
    assert not rules["janitor-logs"].get("Transitions")
    assert rules["janitor-logs"]["Filter"] == {"Prefix": "arch/logs/"}
    assert rules["janitor-logs"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert rules["janitor-dumps"]["Expiration"] == {"Days": 365}
    with pytest.raises(ValueError, match="less than expire"):
        target.set_lifecycle("x", "p/", 10, 20, "GLACIER")


def test_e2e_lifecycle_keeps_foreign_rules(moto_server: MotoServer, server_bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url)
    foreign = {
        "ID": "someone-else",
        "Filter": {"Prefix": "other/"},
        "Status": "Enabled",
        "Transitions": [{"Days": 10, "StorageClass": "GLACIER"}],
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=server_bucket, LifecycleConfiguration={"Rules": [foreign]}
    )
    target = make_target(s3_spec(server_bucket, endpoint_url=moto_server.endpoint_url))
    target.set_lifecycle("janitor-logs", "logs/", 30, None, None)
    rules = {r["ID"]: r for r in target.get_lifecycle()}
    assert set(rules) == {"someone-else", "janitor-logs"}
    assert rules["someone-else"]["Transitions"] == foreign["Transitions"]


# -- file:// target ---------------------------------------------------------------------------


@pytest.fixture
def nas(tmp_path) -> FileTarget:
    base = tmp_path / "nas"
    base.mkdir()
    target = make_target(TargetSpec("nas", f"file://{base}"))
    assert isinstance(target, FileTarget)
    return target


def test_file_round_trip(nas: FileTarget, tmp_path) -> None:
    nas.check()
    src, sha = write_file(tmp_path / "a.log", 3 * MiB + 5)
    os.chmod(src, 0o600)
    key = nas.key_for("logs", "app/2024/a.log")
    assert nas.stat(key) is None
    seen: list[int] = []
    stored = nas.upload(src, key, progress=seen.append, **upload_args(src, sha))
    assert stored.sha256 == sha and stored.size == 3 * MiB + 5 and stored.mode == 0o600
    assert stored.mtime == os.stat(src).st_mtime
    assert sum(seen) == 3 * MiB + 5
    assert is_verified(nas.stat(key), 3 * MiB + 5, sha)

    data_path = os.path.join(nas.base, "logs", "app", "2024", "a.log")
    with open(data_path + SIDECAR_SUFFIX) as f:
        assert json.load(f) == {
            "sha256": sha,
            "size": 3 * MiB + 5,
            "mtime": stored.mtime,
            "mode": 0o600,
        }
    leftovers = [n for n in os.listdir(os.path.dirname(data_path)) if "tmp" in n]
    assert leftovers == []

    dest = tmp_path / "restored"
    assert nas.download(key, str(dest)) == stored
    assert file_sha256(str(dest)) == sha
    assert [o.key for o in nas.list_objects()] == [key]

    # Overwrite with new content: the sidecar follows the data.
    src2, sha2 = write_file(tmp_path / "b.log", 10, seed=3)
    nas.upload(src2, key, **upload_args(src2, sha2))
    assert is_verified(nas.stat(key), 10, sha2)


def test_file_refuses_escaping_keys(nas: FileTarget, tmp_path) -> None:
    src, sha = write_file(tmp_path / "a", 10)
    for bad in ("../x", "a/../../x", "/etc/passwd", "a/b" + SIDECAR_SUFFIX, ""):
        with pytest.raises(ValueError):
            nas.upload(src, bad, **upload_args(src, sha))
        with pytest.raises(ValueError):
            nas.stat(bad)
    with pytest.raises(ValueError):
        nas.key_for("logs", "../../etc/passwd")
    # A symlink inside the base that points outside is refused too.
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, os.path.join(nas.base, "link"))
    with pytest.raises(ValueError, match="outside the target directory"):
        nas.upload(src, "link/x", **upload_args(src, sha))
    assert os.listdir(outside) == []


def test_file_detects_corruption(nas: FileTarget, tmp_path) -> None:
    src, sha = write_file(tmp_path / "a", 5000)
    key = nas.key_for("logs", "a")
    nas.upload(src, key, **upload_args(src, sha))
    stored_path = os.path.join(nas.base, key)
    with open(stored_path, "r+b") as f:  # flip one byte, keep the size
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    dest = tmp_path / "restored"
    with pytest.raises(VerifyFailed, match="is corrupt"):
        nas.download(key, str(dest))
    assert not dest.exists()


def test_file_without_sidecar_is_not_verified(nas: FileTarget, tmp_path) -> None:
    src, sha = write_file(tmp_path / "a", 100)
    key = nas.key_for("logs", "a")
    nas.upload(src, key, **upload_args(src, sha))
    os.unlink(os.path.join(nas.base, key) + SIDECAR_SUFFIX)  # e.g. crash before sidecar write
    obj = nas.stat(key)
    assert obj is not None and obj.sha256 is None
    assert not is_verified(obj, 100, sha)
    with pytest.raises(VerifyFailed, match="no readable metadata"):
        nas.download(key, str(tmp_path / "out"))


def test_file_source_changed(nas: FileTarget, tmp_path) -> None:
    src, sha = write_file(tmp_path / "a", 100)
    args = upload_args(src, sha)
    with open(src, "ab") as f:
        f.write(b"more")
    with pytest.raises(FileChanged):
        nas.upload(src, "logs/a", **args)
    assert os.listdir(os.path.join(nas.base, "logs")) == []


def test_file_check_and_lifecycle(tmp_path) -> None:
    target = make_target(TargetSpec("nas", f"file://{tmp_path}/not-mounted"))
    with pytest.raises(TargetError, match=r"does not exist \(is the share mounted\?\)"):
        target.check()
    with pytest.raises(TargetError, match="lifecycle rules are only supported on s3:// targets"):
        target.set_lifecycle("r", "p/", 30, None, None)
    with pytest.raises(TargetError, match="only supported on s3://"):
        target.get_lifecycle()
    with pytest.raises(ValueError, match="names host"):
        make_target(TargetSpec("nas", "file://server/share"))
