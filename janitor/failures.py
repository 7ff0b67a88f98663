"""The error boundary of the front ends: an exception becomes a message and an exit code.

Shared by the typer CLI (janitor/cli.py) and guard's fast path (janitor/entry.py), so both
say the same. It lives above the library: the library raises, only a front end prints.
"""

from __future__ import annotations

from .errors import EXIT_PARTIAL, ConfigError, JanitorError
from .events import EventLog, display_text, log_file_mode_of


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
