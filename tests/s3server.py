"""Start moto's standalone S3 server as a subprocess on 127.0.0.1, for end-to-end tests.

A subprocess (not ThreadedMotoServer) so a test can kill it mid-run and watch janitor cope
with an endpoint that has gone away. We pass port 0 and read the port werkzeug actually
bound from its "Running on http://127.0.0.1:PORT" line: no free-port race, no fixed sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RUNNING_RE = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


@dataclass
class MotoServer:
    process: subprocess.Popen
    port: int
    log_path: str
    _log_file: object = field(repr=False, default=None)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crashed endpoint; waits so the port is really closed."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Polite stop: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_moto_server(timeout: float = 30.0) -> MotoServer:
    """Start `python -m moto.server -H 127.0.0.1 -p 0`; return once it accepts connections."""
    fd, log_path = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
    log_file = os.fdopen(fd, "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    server = MotoServer(process=process, port=0, log_path=log_path, _log_file=log_file)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{tail}")
        if server.port == 0 and (m := _RUNNING_RE.search(server.log_tail(100_000))):
            server.port = int(m.group(1))
        if server.port and _answers(server.port):
            return server
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    tail = server.log_tail()
    server.stop()
    raise RuntimeError(f"moto server did not answer within {timeout:g}s:\n{tail}")


def use_fake_aws_credentials(monkeypatch: Any, tmp_path_factory: Any) -> None:
    """Fake credentials for boto3; nothing reads ~/.aws or asks an instance-metadata service."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


_BAD_DIGEST = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>BadDigest</Code>"
    b"<Message>The SHA256 you specified did not match the calculated checksum.</Message></Error>"
)


class ChecksumCheckingProxy:
    """An HTTP proxy on 127.0.0.1 in front of the moto server that checks
    `x-amz-checksum-sha256` the way S3 and MinIO do: a PUT whose body does not hash to the
    header gets 400 BadDigest and never reaches moto. moto itself stores whatever checksum a
    client claims, so without this the "server verifies" half of an upload cannot be shown.
    """

    def __init__(self, upstream_port: int) -> None:
        self.rejected: list[str] = []
        self.checked: list[str] = []
        self.corrupt: set[str] = set()  # paths whose PUT body gets one byte flipped in transit
        # The corrupting proxy of issue 12 defect 1 (all off by default):
        self.flip_all = False  # flip one byte of every object PUT body (PutObject and UploadPart)
        self.strip = False  # remove Content-MD5 and every checksum header: the server checks nothing
        # PutObject answers: "keep" the server's ETag, "drop" it, "echo" the client's MD5 (a
        # lie), or "opaque" (a random one, as servers whose ETags are not MD5s)
        self.etag = "keep"
        self.flipped: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and Expect: 100-continue, as botocore uses

            def log_message(self, *_args: Any) -> None:
                pass

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if not any(name.lower() == "content-length" for name, _ in headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                object_put = self.command == "PUT" and "/" in self.path.split("?")[0].strip("/")
                if self.command == "PUT" and self.path in proxy.corrupt and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                elif object_put and proxy.flip_all and body and "x-amz-copy-source" not in self.headers:
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1:]
                    proxy.flipped.append(self.path)
                claimed = self.headers.get("x-amz-checksum-sha256")
                claimed_md5 = self.headers.get("Content-MD5")
                if self.command == "PUT" and (claimed or claimed_md5) and not proxy.strip:
                    proxy.checked.append(self.path)
                    if (claimed and base64.b64encode(hashlib.sha256(body).digest()).decode() != claimed) or (
                            claimed_md5 and base64.b64encode(hashlib.md5(body).digest()).decode() != claimed_md5):
                        proxy.rejected.append(self.path)
                        self._reply(400, [("Content-Type", "application/xml")], _BAD_DIGEST)
                        return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    skip = {"expect", "connection", "content-length"}
                    if proxy.strip:
                        skip |= {"content-md5", "x-amz-sdk-checksum-algorithm", "x-amz-trailer"}
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip
                               and not (proxy.strip and k.lower().startswith("x-amz-checksum"))}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                    keep = [(k, v) for k, v in resp.getheaders()
                            if k.lower() not in ("connection", "transfer-encoding")
                            and not (proxy.strip and k.lower().startswith("x-amz-checksum"))]
                    # (ETags of multipart parts stay: a server without them cannot complete an upload)
                    if object_put and proxy.etag != "keep" and "uploadId=" not in self.path:
                        keep = [(k, v) for k, v in keep if k.lower() != "etag"]
                        if proxy.etag == "echo" and claimed_md5:  # a server that lies: "stored what you sent"
                            keep.append(("ETag", '"' + base64.b64decode(claimed_md5).hex() + '"'))
                        elif proxy.etag == "opaque":  # ETags that are not MD5s (encrypting servers)
                            keep.append(("ETag", '"' + os.urandom(16).hex() + '"'))
                    if proxy.strip and self.command == "POST" and b"<ChecksumSHA256>" in data:
                        data = re.sub(rb"<ChecksumSHA256>[^<]*</ChecksumSHA256>", b"", data)
                    if self.command != "HEAD":
                        keep = [(k, v) for k, v in keep if k.lower() != "content-length"]
                    self._reply(resp.status, keep, data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
