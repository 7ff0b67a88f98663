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
