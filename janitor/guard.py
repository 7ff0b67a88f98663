"""`janitor guard`: a pre-start disk check for systemd's ExecStartPre=.

Exit 0 when every filesystem checked is within its threshold, 1 when one is over (a
one-line reason per filesystem on stderr, naming path, usage and threshold), 2 for a bad
command line, 3 when `--clean` could not get the run lock in time.

Thresholds come from `--path DIR --max-used PCT` pairs and `--min-free SIZE`, or, without
--path, from the config: `settings.guard_max_used` for the filesystem of every policy path
and each policy's `when_disk_above` for its own path. Paths on one filesystem (same
st_dev) are checked once, against the strictest threshold.

It must start fast, since it runs before a service on every start: this module imports
only `os`, `sys`, `time` and janitor's light modules (errors, units, disk). The config
loader (pydantic, yaml) is imported only when the config is needed (-c without --path,
or --clean), and typer not at all on the common path (see janitor/entry.py).
"""

from __future__ import annotations

import os
import sys

from .disk import DiskUsage, disk_usage
from .errors import EXIT_OK, EXIT_PARTIAL, UsageError
from .units import parse_percent, parse_size

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~4 ms of start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TextIO

    from .config import Config
    from .events import EventLog

DEFAULT_LOCK_TIMEOUT = 60.0


class GuardRequest:
    """What the command line asked for, parsed by typer or by the fast path alike."""

    __slots__ = ("paths", "max_used", "min_free", "config", "clean", "lock_timeout", "verbose",
                 "debug", "log_format", "log_file")

    def __init__(
        self,
        paths: list[str] | None = None,
        max_used: list[str] | None = None,
        min_free: str | None = None,
        config: str | None = None,
        clean: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        verbose: bool = False,
        debug: bool = False,
        log_format: str | None = None,
        log_file: str | None = None,
    ) -> None:
        self.paths = list(paths or [])
        self.max_used = list(max_used or [])
        self.min_free = min_free
        self.config = config
        self.clean = clean
        self.lock_timeout = lock_timeout
        self.verbose = verbose
        self.debug = debug
        self.log_format = log_format
        self.log_file = log_file

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GuardRequest):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return "GuardRequest(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class Threshold:
    """One limit on the filesystem holding `path`: at most `max_used` % used, or at least
    `min_free` bytes available. `source` says where it came from, for the message."""

    __slots__ = ("path", "max_used", "min_free", "source")

    def __init__(self, path: str, *, max_used: float | None = None, min_free: int | None = None,
                 source: str = "") -> None:
        self.path = path
        self.max_used = max_used
        self.min_free = min_free
        self.source = source


class Verdict:
    """The strictest threshold of each kind on one filesystem, and its usage."""

    __slots__ = ("usage", "max_used", "min_free")

    def __init__(self, usage: DiskUsage) -> None:
        self.usage = usage
        self.max_used: Threshold | None = None
        self.min_free: Threshold | None = None

    def problems(self) -> list[str]:
        """One line per threshold exceeded (normally at most one)."""
        out = []
        u = self.usage
        t = self.max_used
        if t is not None and t.max_used is not None and u.used_pct > t.max_used:
            out.append(
                f"{t.path} is {u.used_pct:.1f}% used (threshold {_pct(t.max_used)}{_from(t)}): "
                f"{_size(u.bytes_to_free_for(t.max_used))} must be freed"
            )
        t = self.min_free
        if t is not None and t.min_free is not None and u.free < t.min_free:
            out.append(
                f"{t.path} has {_size(u.free)} free (minimum {_size(t.min_free)}{_from(t)}): "
                f"{_size(t.min_free - u.free)} must be freed"
            )
        return out

    def summary(self) -> str:
        u = self.usage
        parts = []
        t = self.max_used
        if t is not None and t.max_used is not None:
            parts.append(f"{t.path} is {u.used_pct:.1f}% used (threshold {_pct(t.max_used)}{_from(t)})")
        t = self.min_free
        if t is not None and t.min_free is not None:
            parts.append(f"{t.path} has {_size(u.free)} free (minimum {_size(t.min_free)}{_from(t)})")
        return "; ".join(parts)


def _pct(value: float) -> str:
    return f"{value:g}%"


def _from(t: Threshold) -> str:
    return f", {t.source}" if t.source else ""


def _size(n: int) -> str:
    from .units import format_size  # humanize: only paid when there is something to say

    return format_size(n)


# ---- thresholds -----------------------------------------------------------------------


def thresholds_from_command_line(req: GuardRequest) -> list[Threshold]:
    """--path/--max-used pairs (in order) and --min-free for every --path."""
    if req.max_used and not req.paths:
        raise UsageError("--max-used needs --path: give one --path DIR --max-used PCT pair per filesystem")
    if req.paths and len(req.max_used) != len(req.paths) and not (not req.max_used and req.min_free):
        raise UsageError(
            f"{len(req.paths)} --path but {len(req.max_used)} --max-used: "
            "give one --max-used per --path, in order (or --min-free SIZE for every path)"
        )
    min_free = _min_free(req)
    out = []
    for i, path in enumerate(req.paths):
        if not os.path.exists(path):
            raise UsageError(f"--path {path}: no such file or directory")
        if i < len(req.max_used):
            try:
                pct = parse_percent(req.max_used[i])
            except ValueError as exc:
                raise UsageError(f"--max-used: {exc}") from None
            out.append(Threshold(path, max_used=pct))
        if min_free is not None:
            out.append(Threshold(path, min_free=min_free))
    return out


def _min_free(req: GuardRequest) -> int | None:
    if req.min_free is None:
        return None
    try:
        return parse_size(req.min_free)
    except ValueError as exc:
        raise UsageError(f"--min-free: {exc}") from None


def guard_view(config: Config) -> dict[str, Any]:
    """What guard needs of a config, as plain data (janitor/guardcache.py keeps it): the
    thresholds' inputs and the log settings."""
    settings = config.settings
    return {
        "guard_max_used": settings.guard_max_used,
        # a watch-only policy (action: warn) only reports, unless it asks to hold guard too
        "policies": [{"name": p.name, "path": p.path,
                      "when_disk_above": p.when_disk_above if p.action != "warn" or p.block_guard else None}
                     for p in config.select(None)],
        "log_format": settings.log_format, "log_file": settings.log_file, "log_file_mode": settings.log_file_mode,
    }


def thresholds_from_config(config: Config, min_free: int | None) -> list[Threshold]:
    return thresholds_from_view(guard_view(config), min_free)


def thresholds_from_view(view: dict[str, Any], min_free: int | None) -> list[Threshold]:
    """settings.guard_max_used on every enabled policy's path, each when_disk_above on its
    own path, and --min-free on every policy path. Paths that do not exist are passed over
    (the planner treats them as nothing to do, too)."""
    out = []
    guard_max = view["guard_max_used"]
    for policy in view["policies"]:
        path = policy["path"]
        if not os.path.exists(path):
            continue
        if guard_max is not None:
            out.append(Threshold(path, max_used=guard_max, source="settings.guard_max_used"))
        if policy["when_disk_above"] is not None:
            out.append(Threshold(path, max_used=policy["when_disk_above"],
                                 source=f"when_disk_above of policy {policy['name']}"))
        if min_free is not None:
            out.append(Threshold(path, min_free=min_free))
    return out


def check(thresholds: list[Threshold]) -> list[Verdict]:
    """Measure each filesystem once (grouped by st_dev) against its strictest thresholds."""
    by_dev: dict[int, Verdict] = {}
    for t in thresholds:
        dev = os.stat(t.path).st_dev
        verdict = by_dev.get(dev)
        if verdict is None:
            verdict = by_dev[dev] = Verdict(disk_usage(t.path))
        if t.max_used is not None and (verdict.max_used is None or t.max_used < (verdict.max_used.max_used or 0.0)):
            verdict.max_used = t
        if t.min_free is not None and (verdict.min_free is None or t.min_free > (verdict.min_free.min_free or 0)):
            verdict.min_free = t
    return list(by_dev.values())


# ---- the command ----------------------------------------------------------------------


def run_guard(req: GuardRequest, load_config: Callable[[str | None], Config], out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Check (after cleaning, with --clean); print the reasons; return the exit code.

    `load_config` is the front end's validating loader (plug-ins loaded), called only when
    the policy files are needed and guard's cache does not hold them."""
    out = out or sys.stdout
    err = err or sys.stderr
    if req.lock_timeout < 0:
        raise UsageError("--lock-timeout must not be negative")
    # Usage errors first, before --clean changes anything.
    cli_thresholds = thresholds_from_command_line(req)
    config = None
    view = None
    if req.clean:
        config = load_config(req.config)
        clean(config, req, out, err)
    elif not req.paths:
        # the thresholds of policy files validated before, when they are byte for byte
        # the same (janitor/guardcache.py): no config loader on a service's every start
        from . import guardcache
        from .policyfiles import config_path

        where = config_path(req.config)
        view, key = guardcache.lookup(where)
        if view is None:
            config = load_config(where)
            view = guard_view(config)
            if key is not None:
                guardcache.store(key, view)
    thresholds = cli_thresholds
    if not req.paths:
        if view is None:
            assert config is not None
            view = guard_view(config)
        thresholds = thresholds_from_view(view, _min_free(req))
        if not thresholds:
            raise UsageError(
                "nothing to check: give --path DIR --max-used PCT or --min-free SIZE, or set "
                "settings.guard_max_used or when_disk_above in the policy files"
            )
    verdicts = check(thresholds)
    over = False
    events = _guard_events(view, req)
    try:
        for verdict in verdicts:
            problems = verdict.problems()
            for line in problems:
                # a refused service start must reach the JSON log (and the log file)
                if events is not None:
                    events.emit("guard_refused", "error", message=line, directory=verdict.usage.path,
                                used_pct=round(verdict.usage.used_pct, 2), free_bytes=verdict.usage.free)
                if events is None or events.fmt != "json":
                    from .events import display_text  # a newline in a path stays on its line

                    print(f"janitor guard: {display_text(line)}", file=err)
            over = over or bool(problems)
            if req.verbose and not problems:
                print(f"janitor guard: {verdict.summary()}: ok", file=out)
    finally:
        if events is not None:
            events.close()
    return EXIT_PARTIAL if over else EXIT_OK


def _guard_events(view: dict[str, Any] | None, req: GuardRequest) -> EventLog | None:
    """The event log for guard's verdicts when JSON lines are wanted anywhere, else None
    (the plain text lines stay the only output, and the fast path imports nothing more)."""
    settings = view or {}
    fmt = req.log_format or os.environ.get("JANITOR_LOG_FORMAT") or settings.get("log_format")
    if fmt != "json" and not (req.log_file or settings.get("log_file")):
        return None
    from types import SimpleNamespace

    from .events import event_log_for

    # the log settings are all event_log_for reads of a config
    config = None if view is None else SimpleNamespace(settings=SimpleNamespace(
        log_format=settings.get("log_format"), log_file=settings.get("log_file"),
        log_file_mode=settings.get("log_file_mode")))
    # text lines are printed by run_guard itself, as without a log
    events = event_log_for(config, fmt=req.log_format, log_file=req.log_file)
    events.text_printer = lambda level, text: None
    return events


def clean(config: Config, req: GuardRequest, out: TextIO, err: TextIO) -> None:
    """Run the configured policies, waiting for a run that holds the lock to finish."""
    from .events import event_log_for
    from .runner import run_policies

    def on_wait(message: str) -> None:
        print(f"janitor guard: {message}", file=err, flush=True)

    events = event_log_for(config, fmt=req.log_format, log_file=req.log_file, verbose=req.verbose)
    try:
        report = run_policies(config, config.select(None), events, command="guard --clean",
                              lock_wait=req.lock_timeout, on_lock_wait=on_wait)
    finally:
        events.close()
    result = report.result
    n = len(result.policies)
    line = (f"janitor guard: --clean ran {n} {'policy' if n == 1 else 'policies'}: "
            f"{result.files} {'file' if result.files == 1 else 'files'}, {_size(result.bytes)}")
    if result.failed:
        line += f"; {result.failed} {'failure' if result.failed == 1 else 'failures'} (janitor history shows them)"
    print(line, file=out)


# ---- fast path: parse `janitor guard ...` without typer ---------------------------------

_FLAGS = {"--clean": "clean", "-v": "verbose", "--verbose": "verbose", "--debug": "debug"}
_VALUES = {"--path": "paths", "--max-used": "max_used", "--min-free": "min_free", "-c": "config",
           "--config": "config", "--lock-timeout": "lock_timeout", "--log-format": "log_format",
           "--log-file": "log_file"}
_GLOBAL_ONLY = {"-v", "--verbose", "--debug", "--log-format", "--log-file"}


def parse_fast(argv: list[str]) -> GuardRequest | None:
    """A GuardRequest for a plain `janitor [global options] guard [options]`, else None.

    Anything this does not fully understand (help, an unknown option, a missing value, a
    positional argument) returns None, and the typer CLI handles it, with its usual usage
    messages, so both paths accept the same command lines with the same meaning.
    """
    req = GuardRequest()
    seen_guard = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "guard" and not seen_guard:
            seen_guard = True
            i += 1
            continue
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name.startswith("-c") and len(name) > 2 and seen_guard:  # -c/etc/janitor
            name, eq, inline = "-c", "=", name[2:]
        if not seen_guard and name not in _GLOBAL_ONLY:
            return None
        if name in _FLAGS and not eq:
            setattr(req, _FLAGS[name], True)
        elif name in _VALUES:
            if eq:
                value = inline
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                value = argv[i]
            else:
                return None  # let click decide what `--path --clean` means
            key = _VALUES[name]
            if key in ("paths", "max_used"):
                getattr(req, key).append(value)
            elif key == "lock_timeout":
                try:
                    req.lock_timeout = float(value)
                except ValueError:
                    return None
            else:
                setattr(req, key, value)
        else:
            return None
        i += 1
    return req if seen_guard else None
