"""Event log: one call site for everything worth telling an operator or a log pipeline.

Text format (the default on a terminal) prints warnings and errors, and per-file events
only with --verbose. JSON format prints one object per line on stderr through structlog,
each with `ts` (ISO 8601, UTC), `level`, `event` and `run_id`. `--log-file` appends the
same JSON lines to a file, re-opened when it is rotated away. Event names are stable and
documented in docs/events.md.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _ReopeningFile:
    """Append-only file that re-opens itself when the path no longer names the open inode.

    That makes it safe to rotate with janitor itself (rename or copytruncate alike).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._f: TextIO | None = None
        self._ino: tuple[int, int] | None = None

    def write(self, line: str) -> None:
        try:
            st = os.stat(self.path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._f is None or current != self._ino:
            if self._f is not None:
                self._f.close()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._f = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
            st = os.fstat(fd)
            self._ino = (st.st_dev, st.st_ino)
        self._f.write(line)
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def escape_undecodable(value: Any) -> Any:
    """A file name's undecodable bytes (kept as surrogate escapes) as visible `\\xNN` text,
    so JSON and terminals get valid UTF-8. Anything else is returned as it is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # surrogate-escaped bytes from an undecodable file name
            return os.fsencode(value).decode("utf-8", "backslashreplace")
    return value


class EventLog:
    def __init__(
        self,
        fmt: str = "text",
        *,
        log_file: str | None = None,
        verbose: bool = False,
        stream: TextIO | None = None,
        text_printer: Callable[[str, str], None] | None = None,
    ) -> None:
        self.fmt = fmt
        self.verbose = verbose
        self.run_id: str | None = None
        self.stream = stream
        self.text_printer = text_printer
        self.counts: dict[str, int] = {}
        self._stream_closed = False
        self._file = _ReopeningFile(log_file) if log_file else None
        self._render: Callable[[dict[str, Any]], str] | None = None
        if fmt == "json" or self._file is not None:
            self._render = _structlog_renderer()

    def bind(self, run_id: str) -> None:
        self.run_id = run_id

    @property
    def wants_file_events(self) -> bool:
        """Whether per-file info events are printed or written anywhere (they cost time)."""
        return self.fmt == "json" or self._file is not None or self.verbose

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        is_file_event = "path" in fields and level == "info"
        if is_file_event and not self.wants_file_events:
            return
        record = {k: escape_undecodable(v) for k, v in fields.items() if v is not None}
        if self._render is not None:
            line = self._render({"event": event, "level": level, "run_id": self.run_id, "host": _host(), **record})
            if self.fmt == "json":
                self._print(line)
            if self._file is not None:
                self._file.write(line + "\n")
        if self.fmt != "json" and (LEVELS[level] >= LEVELS["warning"] or self.verbose):
            text = _text_line(event, record)
            if self.text_printer is not None:
                self.text_printer(level, text)
            else:
                self._print(f"{level}: {text}")

    def _print(self, line: str) -> None:
        """To stderr, unless it has gone away (`janitor run ... 2>&1 | head`): logging must
        never stop a run half way, so a closed pipe just ends the printing."""
        if self._stream_closed:
            return
        try:
            print(line, file=self.stream or sys.stderr)
        except (BrokenPipeError, ValueError):
            self._stream_closed = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


_HOST: list[str] = []


def _host() -> str:
    """The host name every JSON event carries (a fleet's logs end up in one place)."""
    if not _HOST:
        from .fleet import label_host

        _HOST.append(label_host())
    return _HOST[0]


def _text_line(event: str, fields: dict[str, Any]) -> str:
    msg = fields.get("message") or event.replace("_", " ")
    extras = [f"{k}={v}" for k, v in fields.items() if k not in ("message",)]
    return msg + (f" ({', '.join(extras)})" if extras else "")


def _structlog_renderer() -> Callable[[dict[str, Any]], str]:
    """A structlog processor chain used as a pure function: event dict -> JSON line."""
    import structlog  # lazy: 100 ms of imports that text-mode runs never pay

    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
    renderer = structlog.processors.JSONRenderer(serializer=json.dumps, ensure_ascii=False, default=str)

    def render(event_dict: dict[str, Any]) -> str:
        ordered = {"ts": None, "level": event_dict.pop("level"), "event": event_dict.pop("event")}
        ordered.update(event_dict)
        stamped = stamper(None, "info", ordered)
        return str(renderer(None, "info", stamped))

    return render


def event_log_for(config: Any = None, *, fmt: str | None = None, log_file: str | None = None,
                  verbose: bool = False) -> EventLog:
    """The event log a command uses: options first, then $JANITOR_LOG_FORMAT, then settings."""
    from .errors import UsageError

    fmt = fmt or os.environ.get("JANITOR_LOG_FORMAT") or (
        config.settings.log_format if config is not None else None
    ) or "text"
    if fmt not in ("text", "json"):
        raise UsageError(f"--log-format must be text or json, not {fmt!r}")
    log_file = log_file or (config.settings.log_file if config is not None else None)
    return EventLog(fmt, log_file=log_file, verbose=verbose)
