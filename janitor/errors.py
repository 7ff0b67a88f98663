"""Exceptions janitor raises, each mapped to one exit code at the CLI boundary.

Exit codes are part of the contract (docs/policy-format): 0 success, 1 work failed in
part (or guard found a filesystem over its threshold), 2 bad command line or invalid
policy, 3 another run holds the lock.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3


class JanitorError(Exception):
    """Base class: a problem we can explain in one line, with an exit code and error code."""

    exit_code = EXIT_PARTIAL
    code = "E_FAILED"
    # True when the cause is not this file but something every later file would hit too
    # (an archive target gone away): the executor then stops the policy with one message.
    stops_policy = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(JanitorError):
    """Bad command line or arguments."""

    exit_code = EXIT_USAGE
    code = "E_USAGE"


class ConfigError(JanitorError):
    """One or more problems in policy files; `problems` holds every message."""

    exit_code = EXIT_USAGE
    code = "E_CONFIG"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class LockHeld(JanitorError):
    """Another janitor run holds the state lock."""

    exit_code = EXIT_LOCKED
    code = "E_LOCKED"


class CatalogError(JanitorError):
    """The catalog database is locked, corrupt or unreadable."""

    code = "E_CATALOG"


class TargetError(JanitorError):
    """An archive target failed (endpoint down, credentials, missing bucket, ...)."""

    code = "E_TARGET"


class TargetUnavailable(TargetError):
    """The target itself failed (unreachable, credentials, missing bucket): stop the policy."""

    code = "E_TARGET_UNAVAILABLE"
    stops_policy = True


class UploadFailed(TargetError):
    code = "E_UPLOAD_FAILED"


class VerifyFailed(TargetError):
    code = "E_VERIFY_FAILED"


class DiskFull(JanitorError):
    """ENOSPC while writing a copy; the original is untouched."""

    code = "E_DISK_FULL"


class FileSkipped(JanitorError):
    """Raised by an action to leave one file alone at run time: a skip, not a failure.

    `skip_code` is the stable code shown in the run summary and the `file_skipped` event.
    """

    code = "E_FILE_SKIPPED"
    skip_code = "skipped"

    def __init__(self, message: str, *, code: str | None = None, skip_code: str | None = None) -> None:
        super().__init__(message, code=code)
        if skip_code is not None:
            self.skip_code = skip_code


class FileChanged(FileSkipped):
    """A file changed between planning (or upload) and acting; it was left alone."""

    code = "E_FILE_CHANGED"
    skip_code = "changed"


class OutputClosed(Exception):
    """stdout went away while printing a result (`janitor plan | head -1`): not a failure.

    Deliberately not an OSError: click turns EPIPE into exit 1 on its own.
    """


def report_error(exc: BaseException, debug: bool = False, *, command: str | None = None,
                 log_format: str | None = None, log_file: str | None = None, config: object = None,
                 already_logged: bool = False) -> int:
    """The one place an exception becomes a message on stderr and an exit code.

    With `--log-format json` (or $JANITOR_LOG_FORMAT, or the settings of a configuration
    that did load) the message is one `command_failed` event on stderr instead of text;
    with a log file, that event is appended there too. Re-raises under --debug (for the
    traceback), and anything that is not an error (SystemExit). Shared by the typer CLI
    and guard's fast path so both say the same.
    """
    import sys

    if isinstance(exc, KeyboardInterrupt):
        print("janitor: interrupted", file=sys.stderr)
        return 130
    if debug or not isinstance(exc, Exception):
        raise exc
    from .events import display_text

    problems = exc.problems if isinstance(exc, ConfigError) else None
    if isinstance(exc, ConfigError):
        code, exit_code = exc.code, exc.exit_code
        summary = f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''} in the policy files"
    elif isinstance(exc, JanitorError):
        code, exit_code, summary = exc.code, exc.exit_code, str(exc)
    else:  # a bug: say so plainly, details with --debug
        code, exit_code = "E_INTERNAL", EXIT_PARTIAL
        summary = f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    json_on_stderr = False
    if not already_logged:
        json_on_stderr = log_failure(command, code, summary, problems, log_format, log_file, config)
    if json_on_stderr:
        return exit_code
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            print(display_text(problem), file=sys.stderr)
    print(f"janitor: {display_text(summary)}", file=sys.stderr)
    return exit_code


def log_failure(command: str | None, code: str, message: str, problems: list[str] | None,
                 log_format: str | None, log_file: str | None, config: object) -> bool:
    """Emit `command_failed` where the operator asked for JSON; True if stderr got it."""
    import os

    settings = getattr(config, "settings", None)
    fmt = log_format or os.environ.get("JANITOR_LOG_FORMAT") or getattr(settings, "log_format", None) or "text"
    log_file = log_file or getattr(settings, "log_file", None)
    if fmt not in ("text", "json"):
        fmt = "text"
    if fmt != "json" and not log_file:
        return False
    from .events import EventLog, log_file_mode_of

    for file in (log_file, None) if log_file and fmt == "json" else (log_file,):
        try:
            events = EventLog(fmt, log_file=file, log_file_mode=log_file_mode_of(config),
                              text_printer=lambda level, text: None)
            try:
                events.emit("command_failed", "error", command=command, code=code, message=message,
                            problems=problems)
            finally:
                events.close()
            return fmt == "json"
        except (OSError, ValueError, JanitorError):
            continue  # the log file itself cannot be written: JSON on stderr only, or text
    return False
