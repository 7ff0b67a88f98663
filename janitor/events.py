"""Event log: one call site for everything worth telling an operator or a log pipeline.

Text format (the default on a terminal) prints warnings and errors, and per-file events
only with --verbose. JSON format prints one object per line on stderr through structlog,
each with `ts` (ISO 8601, UTC), `level`, `event` and `run_id`. `--log-file` appends the
same JSON lines to a file, re-opened when it is rotated away. Event names are stable and
documented in docs/events.md.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


DEFAULT_LOG_FILE_MODE = 0o640


class _ReopeningFile:
    """Append-only file that re-opens itself when the path no longer names the open inode.

    That makes it safe to rotate with janitor itself (rename or copytruncate alike). A file
    janitor creates gets `mode` exactly (settings.log_file_mode, default 0640), whatever the
    umask; an existing file keeps the mode the operator gave it. A symlink or anything but
    a regular file at the path is refused (janitor appends as root).
    """

    def __init__(self, path: str, mode: int = DEFAULT_LOG_FILE_MODE) -> None:
        self.path = path
        self.mode = mode
        self._f: TextIO | None = None
        self._ino: tuple[int, int] | None = None

    def open_now(self) -> None:
        """Open (or create) the file before anything happens, so that a log that cannot be
        written fails the command at once, with a clear message, and never half way."""
        from .errors import JanitorError

        try:
            self._reopen()
        except OSError as exc:
            reason = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise JanitorError(f"log file {self.path}: cannot use it: {reason}",
                               code="E_UNSAFE" if exc.errno in (errno.ELOOP, errno.EINVAL, errno.EPERM) else "E_IO"
                               ) from None

    def _reopen(self) -> None:
        fd = self._open()  # the old file stays open until the new one is verified
        if self._f is not None:
            self._f.close()
            self._f = None
        self._f = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
        st = os.fstat(fd)
        self._ino = (st.st_dev, st.st_ino)

    def write(self, line: str) -> None:
        try:
            st = os.stat(self.path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._f is None or current != self._ino:
            try:
                self._reopen()
            except OSError as exc:
                if self._f is None:
                    raise
                # What now has the name is not janitor's log (see _open): keep appending to the
                # file already open, which is janitor's own, rather than to that one.
                if not self._refused:
                    self._refused = True
                    sys.stderr.write(f"janitor: warning: log file {self.path}: not reopening it: "
                                     f"{exc.strerror}; still writing to the file opened before\n")
        assert self._f is not None
        self._f.write(line)
        self._f.flush()

    _refused = False

    def _open(self) -> int:
        """The log file, opened for appending: only janitor's own file is ever written.

        janitor appends as root. Its directory must be writable by root (or janitor's own
        account) only, and an existing file must be a regular file with one link owned by
        janitor's effective uid: otherwise a hard link (fs.protected_hardlinks=0) or a rename
        of root's file to that name would make root append JSON lines to /etc/sudoers. A
        file janitor creates is created O_EXCL, so it is janitor's.
        """
        euid = os.geteuid()
        parent = os.path.dirname(self.path) or "."
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dst = os.fstat(dir_fd)
            if dst.st_mode & stat.S_IWOTH or (dst.st_mode & stat.S_IWGRP and dst.st_gid != 0) or (
                    dst.st_uid not in (0, euid)):
                raise OSError(errno.EPERM, f"its directory {parent} may be written by another account "
                              f"(owner uid {dst.st_uid}, mode {stat.S_IMODE(dst.st_mode):o})", self.path)
            name = os.path.basename(self.path)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
                created = True
            except FileExistsError:
                fd = os.open(name, flags, dir_fd=dir_fd)
                created = False
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "the log file is not a regular file", self.path)
            if st.st_nlink != 1:
                raise OSError(errno.EPERM, f"it has {st.st_nlink} hard links", self.path)
            if st.st_uid != euid:
                raise OSError(errno.EPERM, f"it belongs to uid {st.st_uid}, not janitor's ({euid})", self.path)
            if created:
                os.fchmod(fd, self.mode)  # the configured mode, not the umask's
        except BaseException:
            os.close(fd)
            raise
        return fd

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


_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_text(value: str) -> str:
    """Text as janitor shows it to people, in tables and in `error:` lines alike: undecodable
    bytes as `\\xNN`, a newline as `\\n` and other control characters as `\\xNN`/`\\uNNNN`,
    so one file name is always one line. Printable text, non-ASCII letters too, is kept."""
    shown: str = escape_undecodable(value)
    if shown.isprintable():
        return shown
    out = []
    for ch in shown:
        if ch.isprintable():
            out.append(ch)
        elif ch in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


class EventLog:
    def __init__(
        self,
        fmt: str = "text",
        *,
        log_file: str | None = None,
        verbose: bool = False,
        stream: TextIO | None = None,
        text_printer: Callable[[str, str], None] | None = None,
        log_file_mode: int = DEFAULT_LOG_FILE_MODE,
    ) -> None:
        self.fmt = fmt
        self.verbose = verbose
        self.run_id: str | None = None
        self.stream = stream
        self.text_printer = text_printer
        self.counts: dict[str, int] = {}
        # bytes per event name (`trash_purged` by retain shows in the run summary)
        self.bytes: dict[str, int] = {}
        # warnings and errors already printed as text lines, as "path: message" or
        # "message": the run summary does not print them a second time
        self.shown: set[str] = set()
        self._stream_closed = False
        self._file = _ReopeningFile(log_file, log_file_mode) if log_file else None
        if self._file is not None:
            self._file.open_now()
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
        if isinstance(fields.get("bytes"), int):
            self.bytes[event] = self.bytes.get(event, 0) + fields["bytes"]
        is_file_event = "path" in fields and level == "info"
        if is_file_event and not self.wants_file_events:
            return
        record = {k: escape_undecodable(v) for k, v in fields.items() if v is not None}
        if self._render is not None:
            line = self._render({"event": event, "level": level, "run_id": self.run_id, "host": _host(), **record})
            if self.fmt == "json":
                self._print(line)
            if self._file is not None:
                self._write_file(line + "\n")
        if self.fmt != "json" and (LEVELS[level] >= LEVELS["warning"] or self.verbose):
            text = _text_line(event, record)
            if self.text_printer is not None:
                self.text_printer(level, text)
            else:
                self._print(f"{level}: {text}")
                if LEVELS[level] >= LEVELS["warning"] and "message" in record:
                    message = str(record["message"])
                    self.shown.add(f"{record['path']}: {message}" if "path" in record else message)

    def emit_each(self, event: str, n: int, nbytes: int, fields: Callable[[], Iterable[dict[str, Any]]]) -> None:
        """`emit(event, **f)` for each f of `fields()` (n events, nbytes bytes in all), at
        the cost of one when nothing reads per-file info events (a large delete's files
        done): then only the counts move, as they would."""
        if not n:
            return
        if type(self).emit is EventLog.emit and not self.wants_file_events:
            self.counts[event] = self.counts.get(event, 0) + n
            self.bytes[event] = self.bytes.get(event, 0) + nbytes
            return
        for f in fields():
            self.emit(event, **f)

    def _write_file(self, line: str) -> None:
        """Logging must never stop a run half way: a log file that fails later (its disk
        full, rotated into a symlink) is reported once on stderr and then left alone."""
        assert self._file is not None
        try:
            self._file.write(line)
        except OSError as exc:
            self._file.close()
            self._file = None
            self._print(f"warning: log file stopped: {display_text(str(exc))}")

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
    msg = display_text(str(fields.get("message") or event.replace("_", " ")))
    extras = [f"{k}={_text_value(v)}" for k, v in fields.items() if k not in ("message",)]
    return msg + (f" ({', '.join(extras)})" if extras else "")


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(display_text(str(v)) for v in value)
    return display_text(str(value))


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
    return EventLog(fmt, log_file=log_file, verbose=verbose, log_file_mode=log_file_mode_of(config))


def log_file_mode_of(config: Any) -> int:
    """settings.log_file_mode ('0640' by default) as a number."""
    text = getattr(getattr(config, "settings", None), "log_file_mode", None)
    return DEFAULT_LOG_FILE_MODE if text is None else int(str(text), 8)
