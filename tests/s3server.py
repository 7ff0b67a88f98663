"""Start moto's standalone S3 server as a subprocess on 127.0.0.1, for end-to-end tests.

A subprocess (not ThreadedMotoServer) so a test can kill it mid-run and watch janitor cope
with an endpoint that has gone away. We pass port 0 and read the port werkzeug actually
bound from its "Running on http://127.0.0.1:PORT" line: no free-port race, no fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
