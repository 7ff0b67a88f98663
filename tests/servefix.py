"""`janitor serve` as a real process on an ephemeral loopback port (or a Unix socket)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import ROOT


class Served:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = ""

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def wait_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON event called `name` on the server's stderr (or AssertionError)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {name} event; stderr so far:\n{''.join(self.lines)}"
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"server exited ({self.proc.poll()}) before {name}:\n{''.join(self.lines)}"
            if line.startswith("{"):
                event = json.loads(line)
                if event["event"] == name:
                    return event

    def events(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(s) for s in list(self.lines) if s.startswith("{") and json.loads(s)["event"] == name]

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def serve_cmd(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "janitor", "serve", *map(str, args)]


@contextmanager
def served(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Iterator[Served]:
    """Start `janitor serve ARGS` (add --listen 127.0.0.1:0 unless given), wait until it listens."""
    argv = list(map(str, args))
    if "--listen" not in argv:
        argv += ["--listen", "127.0.0.1:0"]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("JANITOR_LOG_FORMAT", None)
    proc = subprocess.Popen(serve_cmd(*argv), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=full_env, cwd=ROOT)
    s = Served(proc)
    try:
        started = s.wait_event("serve_started")
        s.url = started["listen"]
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def token_file(directory: Path, token: str = "t0ken-" + "a" * 40, mode: int = 0o600) -> Path:
    path = directory / "token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path
