"""truncate: shrink logs that a running service keeps open (janitor/logcut.py does the cut).

The policy's options become a `CutOptions`; the plan says which method each log gets
(collapse-range, copy-truncate or rename), and the run reports the method actually used
with the bytes cut and where the copy went. Files that a process writes without O_APPEND
are skipped with the reason (unless `allow_non_append_writers`), and the rotated copies
themselves (NAME.1, NAME.2.gz ...) are never cut, even when the globs match them.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..asowner import ROOT, Credentials, credentials_for_dir
from ..config import KeepTailValue, Reopen, RotateEvery, Size
from ..errors import FileSkipped, JanitorError
from ..logcut import (
    CutOptions,
    ForeignCopy,
    Ledger,
    LogRecord,
    NonAppendWriter,
    check_chain,
    cut_log_at,
    links_allowed,
    predict_method,
    recover_cut_at,
    validate_options,
)
from ..plan import Skip
from ..procfs import describe_pids
from ..safepath import open_dirs_below, open_parent_below
from ..scan import O_DIR
from ..units import format_size, parse_duration
from .base import Action, ActionOptions, Done, register

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext
    from ..plan import PlannedAction
    from ..planner import PlanContext
    from ..scan import FileFact

# NAME.1, NAME.12.gz, NAME.3.zst: what logcut names its rotated copies.
ROTATED_COPY_RE = re.compile(r".+\.\d+(?:\.gz|\.zst)?")
# NAME-20261204, NAME-20261204-1.gz: dated copies (dateext).
DATED_COPY_RE = re.compile(r".+-\d{8}(?:-\d+)?(?:\.gz|\.zst)?")
# NAME.janitor-20261204-183000-INO: a copy logcut parked because another rotator took NAME.1.
PARKED_COPY_RE = re.compile(r".+\.janitor-\d{8}-\d{6}-\d+")
# logcut's scratch files: .NAME.XXXX.tmp (copy in progress), .janitor-z-XXXX.tmp
# (compression), .janitor-probe-XXXX, .NAME.PID.old (rename mode with rotate 0),
# .NAME.janitor-cut (the record of a cut in progress).
SCRATCH_RE = re.compile(r"\.janitor-.*|\..+\.(?:tmp|old)|\..+\.janitor-cut")

# Engine option names as operators know them from the policy file.
_ENGINE_WORDS = (
    ("keep_tail_lines/keep_tail_bytes are", "keep_tail is"),
    ("reopen_signal, reopen_pidfile and postrotate need", "reopen and postrotate need"),
    ("keep_tail_lines and keep_tail_bytes", "keep_tail lines and bytes"),
    ("keep_tail_lines", "keep_tail"),
    ("keep_tail_bytes", "keep_tail"),
    ("reopen_signal", "reopen.signal"),
    ("reopen_pidfile", "reopen.pidfile"),
)


def cut_options(policy: Policy) -> CutOptions:
    """The policy's truncate keys as the engine's options (defaults like logrotate's)."""
    opts = TruncateOptions.of(policy)
    keep = opts.keep_tail
    return CutOptions(
        rotate=opts.rotate or 0,
        compress=opts.compress or "none",
        delay_compress=bool(opts.delay_compress),
        keep_tail_lines=keep.lines if keep else None,
        keep_tail_bytes=keep.bytes if keep else None,
        olddir=opts.olddir,
        mode=opts.mode or "copytruncate",
        allow_non_append_writers=bool(opts.allow_non_append_writers),
        reopen_signal=opts.reopen.signal if opts.reopen else None,
        reopen_pidfile=opts.reopen.pidfile if opts.reopen else None,
        postrotate=tuple(opts.postrotate or ()),
        dateext=bool(opts.dateext),
    )


def _policy_key(message: str, policy: Policy) -> str:
    """Which policy key an engine message is about."""
    opts = TruncateOptions.of(policy)
    if message.startswith("reopen_signal, reopen_pidfile and postrotate"):
        return "reopen" if opts.reopen is not None else "postrotate"
    for prefix, key in (("rotate", "rotate"), ("compress", "compress"), ("mode", "mode"),
                        ("set at most one of keep_tail", "keep_tail"), ("keep_tail", "keep_tail"),
                        ("reopen", "reopen"), ("postrotate", "postrotate")):  # fmt: skip
        if message.startswith(prefix):
            return key
    return "action"


def _policy_words(message: str) -> str:
    for engine, ours in _ENGINE_WORDS:
        message = message.replace(engine, ours)
    return message


def is_rotated_copy(name: str) -> bool:
    """Whether a file name is one of logcut's rotated copies (NAME.N, NAME.N.gz, NAME.N.zst)."""
    return bool(ROTATED_COPY_RE.fullmatch(name))


def expected_method(path: str, options: CutOptions) -> str:
    """The method a cut of `path` will use: logcut's one predictor (writes nothing)."""
    if options.mode == "rename":
        return "rename"
    try:
        dev = os.stat(path, follow_symlinks=False).st_dev
    except OSError:
        return "copy-truncate"
    return predict_method(options, dev)


def _iso_week(t: time.struct_time) -> tuple[int, int]:
    year, week, _ = datetime.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
    return year, week


def rotation_due(every: str, last: float | None, now: float) -> bool:
    """Whether a log last rotated at `last` is due under `rotate_every: every` at `now`.

    The words compare calendar periods in local time as logrotate does (`daily`: another
    day than the last rotation; `weekly`: another ISO week, or 7 days; `monthly`: another
    month); a duration is the time since the last rotation. A log janitor never rotated is
    due at once (logrotate instead waits one period after it first sees a log).
    """
    if last is None:
        return True
    if now < last:
        return False  # the clock went back: wait for it
    a, b = time.localtime(last), time.localtime(now)
    if every == "hourly":
        return (a.tm_year, a.tm_yday, a.tm_hour) != (b.tm_year, b.tm_yday, b.tm_hour)
    if every == "daily":
        return (a.tm_year, a.tm_yday) != (b.tm_year, b.tm_yday)
    if every == "weekly":
        return _iso_week(a) != _iso_week(b) or now - last >= 7 * 86400
    if every == "monthly":
        return (a.tm_year, a.tm_mon) != (b.tm_year, b.tm_mon)
    if every == "yearly":
        return a.tm_year != b.tm_year
    return now - last >= parse_duration(every)


_LOGROTATE_FLAGS: dict[str, tuple[str, object]] = {
    "compress": ("compress", "gzip"), "nocompress": ("compress", "none"),
    "delaycompress": ("delay_compress", True), "nodelaycompress": ("delay_compress", False),
    "missingok": ("missingok", True), "nomissingok": ("missingok", False),
    "notifempty": ("notifempty", True), "ifempty": ("notifempty", False),
    "copytruncate": ("mode", "copytruncate"), "nocopytruncate": ("mode", "rename"), "create": ("mode", "rename"),
    "dateext": ("dateext", True), "nodateext": ("dateext", False),
}
_LOGROTATE_PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


def _logrotate_size(text: str) -> str:
    unit = {"k": "KiB", "m": "MiB", "g": "GiB"}.get(text[-1:].lower())
    return f"{text[:-1]}{unit}" if unit else text


def from_logrotate(stanza: str) -> tuple[list[str], dict[str, Any]]:
    """A logrotate stanza (`PATHS { directives }`) as (paths, truncate policy keys), one to one.

    ValueError names any directive without a janitor equivalent (scripts, mail, sharedscripts...),
    so a translation is either exact or refused.
    """
    head, brace, rest = stanza.partition("{")
    body, close, _ = rest.partition("}")
    if not brace or not close:
        raise ValueError("expected PATHS { directives }")
    keys: dict[str, Any] = {}
    for raw in body.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        word, args = words[0].lower(), words[1:]
        if word in _LOGROTATE_PERIODS and not args:
            keys["rotate_every"] = word
        elif word in _LOGROTATE_FLAGS and not args:
            key, value = _LOGROTATE_FLAGS[word]
            keys[key] = value
        elif word == "rotate" and len(args) == 1 and args[0].isdigit():
            keys["rotate"] = int(args[0])
        elif word == "minsize" and len(args) == 1:
            keys["min_size"] = _logrotate_size(args[0])
        elif word == "size" and len(args) == 1:
            keys["larger_than"] = _logrotate_size(args[0])
        elif word == "olddir" and len(args) == 1:
            keys["olddir"] = args[0]
        elif word == "su" and len(args) in (1, 2):
            keys["su"] = ":".join(args)
        else:
            raise ValueError(f"logrotate directive {raw.strip()!r} has no janitor equivalent")
    return head.split(), keys


def _ledger_record(policy: Policy, path: str, state_dir: str) -> LogRecord:
    """janitor's record of this log (read only: plans write nothing)."""
    opts = TruncateOptions.of(policy)
    dest = opts.olddir or os.path.dirname(path)
    try:
        fd = os.open(dest, O_DIR)
    except OSError:
        return LogRecord()
    try:
        return Ledger(state_dir).load(Ledger.key(fd, os.path.basename(path)))
    finally:
        os.close(fd)


def _foreign_copy(policy: Policy, path: str, options: CutOptions, record: LogRecord) -> ForeignCopy | None:
    """The reason a run would leave this log alone because of its copies (read only)."""
    if options.rotate == 0:
        return None
    dest = TruncateOptions.of(policy).olddir or os.path.dirname(path)
    try:
        fd = os.open(dest, O_DIR)
    except OSError:
        return None
    try:
        check_chain(fd, os.path.basename(path), options, record, dest)
    except ForeignCopy as exc:
        return exc
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


class TruncateOptions(ActionOptions):
    """truncate's keys (docs/truncate.md); `su` is every policy's."""

    rotate: int | None = Field(None, ge=0, le=1000)
    compress: Literal["none", "gzip", "zstd"] | None = None
    delay_compress: bool | None = None
    keep_tail: KeepTailValue | None = None
    olddir: str | None = None  # absolute, checked by config
    mode: Literal["copytruncate", "rename"] | None = None
    reopen: Reopen | None = None
    postrotate: tuple[str, ...] | None = None
    allow_non_append_writers: bool | None = None
    # time-based rotation (logrotate's daily/weekly/monthly, dateext, minsize, notifempty, missingok)
    rotate_every: RotateEvery | None = None
    dateext: bool | None = None
    min_size: Size | None = None
    notifempty: bool | None = None
    missingok: bool | None = None


@register
class TruncateAction(Action):
    name = "truncate"
    Options = TruncateOptions
    # Open for writing is the point: the planner and the executor skip the busy and
    # settle checks for this action and re-check only the file's identity.
    skips_busy = False
    done_event = "log_truncated"
    # Skips the operator must hear about: another rotator, or a planted name among the copies.
    warning_skip_codes = frozenset({"rotated_by_writer", "unsafe_copy"})

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_policy(policy, target_names)
        opts = TruncateOptions.of(policy)
        options = cut_options(policy)
        for message in validate_options(options):
            problems.append((_policy_key(message, policy), _policy_words(message)))
        if opts.postrotate is not None and not opts.postrotate:
            problems.append(("postrotate", "needs at least the program to run (an argv list)"))
        if opts.notifempty is False:
            problems.append(("notifempty", "janitor never rotates an empty log (logrotate's ifempty is not "
                                           "supported); leave notifempty out or set it to true"))
        if opts.compress == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                problems.append(("compress", "zstd needs the Python package zstandard; install it or use gzip"))
        return problems

    def select(
        self, policy: Policy, matched: list[FileFact], eligible: list[FileFact], ctx: PlanContext
    ) -> Iterable[tuple[FileFact, str, dict[str, Any] | None] | Skip]:
        opts = TruncateOptions.of(policy)
        options = cut_options(policy)
        every, min_size = opts.rotate_every, opts.min_size
        state_dir = ctx.config.settings.state_dir
        if opts.missingok is False and not matched:
            ctx.note(f"no log matches {', '.join(policy.match)} (missingok: false)")
        for fact in eligible:
            path = os.path.join(policy.path, fact.relpath)
            name = os.path.basename(fact.relpath)
            if (is_rotated_copy(name) or PARKED_COPY_RE.fullmatch(name)
                    or (options.dateext and DATED_COPY_RE.fullmatch(name))):
                yield Skip(policy.name, path, fact.size, "rotated_copy",
                           "a rotated copy (NAME.N, NAME-YYYYMMDD, with .gz/.zst): never truncated itself")
                continue
            if SCRATCH_RE.fullmatch(name):
                yield Skip(policy.name, path, fact.size, "janitor_temp",
                           "a temporary file of an unfinished cut: never truncated")
                continue
            if fact.size == 0:
                yield Skip(policy.name, path, 0, "empty", "empty: nothing to cut (notifempty)")
                continue
            if min_size is not None and fact.size < min_size:
                yield Skip(policy.name, path, fact.size, "below_min_size",
                           f"smaller than min_size {format_size(min_size)}")
                continue
            if options.mode == "copytruncate" and not options.allow_non_append_writers:
                pids = ctx.open_files.non_append_writers.get((fact.dev, fact.ino))
                if pids:
                    yield Skip(policy.name, path, fact.size, "non_append_writer",
                               f"open for writing without O_APPEND by {describe_pids(pids)}: a cut would "
                               "leave a NUL-filled head; make the writer append ('>>' not '>'), use "
                               "mode: rename, or set allow_non_append_writers: true")
                    continue
            reason = ctx.reason_for(policy, fact)
            if every is not None or options.rotate > 0:
                record = _ledger_record(policy, path, state_dir)
                if every is not None:
                    if not rotation_due(every, record.last_rotated, ctx.now):
                        assert record.last_rotated is not None
                        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.last_rotated))
                        yield Skip(policy.name, path, fact.size, "not_due",
                                   f"rotated {when}; rotate_every {every} is not due yet")
                        continue
                    reason = f"rotate_every {every}" + (f", {reason}" if reason else "")
                foreign = _foreign_copy(policy, path, options, record)
                if foreign is not None:
                    yield Skip(policy.name, path, fact.size, foreign.skip_code, str(foreign))
                    continue
            yield fact, reason, {"method": predict_method(options, fact.dev)}

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any],
              ctx: ExecContext) -> Done:
        _check_link_count(item, dir_fd, name)
        policy = ctx.policy
        options = cut_options(policy)
        log_dir = os.path.dirname(item.path)
        dest_fd: int | None = None
        try:
            if options.olddir:
                try:
                    dest_fd = _open_olddir(options.olddir, policy.path, ctx)
                except OSError as exc:
                    raise JanitorError(f"olddir {options.olddir} cannot be opened: {exc.strerror}",
                                       code="E_OLDDIR") from exc
            creds = _acting_account(dir_fd, dest_fd, log_dir, options.olddir, policy)
            result = cut_log_at(dir_fd, name, options, state_dir=ctx.config.settings.state_dir,
                                display=item.path, dest_fd=dest_fd, dest_display=options.olddir or log_dir,
                                expect=(item.fact.dev, item.fact.ino), max_size=item.fact.size, creds=creds,
                                now=ctx.now)
        except NonAppendWriter as exc:
            # A writer without O_APPEND appeared after the plan: a skip, as in the plan.
            raise FileSkipped(str(exc), skip_code="non_append_writer") from exc
        except ForeignCopy as exc:
            # Another rotator (the writer itself, logrotate) or a planted name: never fight it.
            ctx.events.emit("log_rotated_elsewhere", "warning", policy=item.policy, path=item.path,
                            code=exc.skip_code, message=str(exc))
            raise FileSkipped(str(exc), skip_code=exc.skip_code) from exc
        finally:
            if dest_fd is not None:
                os.close(dest_fd)
        for warning in result.warnings:
            ctx.events.emit("log_truncate_warning", "warning", policy=item.policy, path=item.path,
                            method=result.method, message=warning)
        detail = {"method": result.method, "bytes_cut": result.bytes_cut, "bytes_after": result.bytes_after,
                  "rotated_to": result.rotated_to, "compressed": list(result.compressed)}
        event: dict[str, str | int | float] = {"method": result.method, "bytes_cut": result.bytes_cut,
                                               "bytes_after": result.bytes_after}
        if result.rotated_to:
            event["rotated_to"] = result.rotated_to
        return Done(bytes=result.bytes_cut, columns={"detail": json.dumps(detail)}, event=event)

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        return cls.reconcile_with(entry, None)

    @classmethod
    def reconcile_with(cls, entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
        # The log never leaves its path, so presence says nothing; janitor's ledger of the cut
        # in progress (logcut.recover_cut_at) does: the copy is kept if the live file lost
        # the prefix, dropped if it did not. Either way every byte is there exactly once.
        policy = None
        if config is not None:
            policy = next((p for p in config.policies if p.name == entry.policy), None)
        options = cut_options(policy) if policy is not None else CutOptions(rotate=1)
        state_dir = config.settings.state_dir if config is not None else None
        if state_dir is None:
            return "aborted", "interrupted; no configuration to find janitor's records, the log is as it was"
        dest_fd: int | None = None
        try:
            dir_fd, name = open_parent_below(entry.root, entry.path)
        except (OSError, JanitorError) as exc:
            return "failed", f"interrupted; the log's directory cannot be opened safely: {exc}"
        try:
            if options.olddir:
                dest_fd = os.open(options.olddir, O_DIR)
            creds = _acting_account(dir_fd, dest_fd, os.path.dirname(entry.path), options.olddir, policy)
            outcome = recover_cut_at(dir_fd, name, options, state_dir=state_dir, display=entry.path,
                                     dest_fd=dest_fd, creds=creds)
        except (OSError, JanitorError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return "failed", f"interrupted; could not settle the cut in progress: {message}"
        finally:
            os.close(dir_fd)
            if dest_fd is not None:
                os.close(dest_fd)
        if outcome == "kept":
            return "done", "interrupted after the cut; the rotated copy was put in place"
        if outcome == "dropped":
            return "aborted", "interrupted before the cut; the unused copy was removed, the log is whole"
        return "aborted", "interrupted; no cut was in progress, the log is as it was"


def _open_olddir(olddir: str, root: str, ctx: ExecContext) -> int:
    """olddir below the policy path is reached from the executor's root descriptor, one
    component at a time without following symlinks (safepath); elsewhere it is the operator's
    own directory, opened without following a final symlink."""
    inside = os.path.normpath(olddir).startswith(os.path.normpath(root).rstrip("/") + "/")
    if inside and ctx.dirs is not None:
        parts = os.path.relpath(os.path.normpath(olddir), os.path.normpath(root)).split("/")
        return open_dirs_below(ctx.dirs.root_fd, parts)
    return os.open(olddir, O_DIR)


def _acting_account(dir_fd: int, dest_fd: int | None, log_dir: str, olddir: str | None,
                    policy: Policy | None) -> Credentials:
    """Whom rotation acts as (janitor.asowner): root in a root-only directory, the owner in a
    directory only its owner can write, `su` where set; a shared directory without `su` is refused."""
    su = policy.su if policy is not None else None
    name = policy.name if policy is not None else "?"
    creds = credentials_for_dir(dir_fd, log_dir, su=su, policy=name)
    if dest_fd is not None and olddir is not None:
        other = credentials_for_dir(dest_fd, olddir, su=su, policy=name)
        if other != creds:
            raise JanitorError(f"{log_dir} and olddir {olddir} are writable by different accounts "
                               f"({creds.describe()}, {other.describe()}): set `su: USER[:GROUP]` on policy "
                               f"{name!r} to rotate as one account", code="E_UNSAFE_DIR")
    return creds


def _check_link_count(item: PlannedAction, dir_fd: int, name: str) -> None:
    """Refuse a log with other hard links: it may be a user's link to a file they cannot write.

    A user who may write into the log directory can hard-link /etc/shadow (where
    protected_hardlinks is off) or another user's file there; cutting "the log" would then
    truncate that file. logrotate refuses such files for the same reason. In a directory only
    root can write the name is root's own, and a link made elsewhere must not pin the log:
    allowed there, with a warning (logcut checks again, with the acting account, on the
    descriptor it cuts).
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if st.st_nlink > 1 and not links_allowed(dir_fd, ROOT):
        raise JanitorError(f"{item.path} has {st.st_nlink} hard links; not cutting a file that may be "
                           "someone else's file linked into the log directory", code="E_UNSAFE")
