"""truncate: shrink logs that a running service keeps open (janitor/logcut.py does the cut).

The policy's options become a `CutOptions`; the plan says which method each log gets
(collapse-range, copy-truncate or rename), and the run reports the method actually used
with the bytes cut and where the copy went. Files that a process writes without O_APPEND
are skipped with the reason (unless `allow_non_append_writers`), and the rotated copies
themselves (NAME.1, NAME.2.gz ...) are never cut, even when the globs match them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..disk import fstype
from ..errors import FileSkipped, JanitorError
from ..logcut import CutOptions, NonAppendWriter, cut_log, recover_cut, validate_options
from ..plan import Skip
from ..procfs import _describe_pids
from ..safepath import open_parent_below
from .base import Action

if TYPE_CHECKING:
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import ExecContext
    from ..plan import PlannedAction
    from ..planner import PlanContext
    from ..scan import FileFact

# NAME.1, NAME.12.gz, NAME.3.zst: what logcut names its rotated copies.
ROTATED_COPY_RE = re.compile(r".+\.\d+(?:\.gz|\.zst)?")
# logcut's scratch files: .NAME.XXXX.tmp (copy in progress), .janitor-z-XXXX.tmp
# (compression), .janitor-probe-XXXX, .NAME.PID.old (rename mode with rotate 0),
# .NAME.janitor-cut (the record of a cut in progress).
SCRATCH_RE = re.compile(r"\.janitor-.*|\..+\.(?:tmp|old)|\..+\.janitor-cut")

_FS_IOC_GETFLAGS = 0x80086601
_FS_EXTENT_FL = 0x00080000
_COLLAPSE_FS = ("ext4", "xfs")

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
    keep = policy.keep_tail
    return CutOptions(
        rotate=policy.rotate or 0,
        compress=policy.compress or "none",
        delay_compress=bool(policy.delay_compress),
        keep_tail_lines=keep.lines if keep else None,
        keep_tail_bytes=keep.bytes if keep else None,
        olddir=policy.olddir,
        mode=policy.mode or "copytruncate",
        allow_non_append_writers=bool(policy.allow_non_append_writers),
        reopen_signal=policy.reopen.signal if policy.reopen else None,
        reopen_pidfile=policy.reopen.pidfile if policy.reopen else None,
        postrotate=tuple(policy.postrotate or ()),
    )


def _policy_key(message: str, policy: Policy) -> str:
    """Which policy key an engine message is about."""
    if message.startswith("reopen_signal, reopen_pidfile and postrotate"):
        return "reopen" if policy.reopen is not None else "postrotate"
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
    """The method `cut_log` will use, found without writing anything (plans only read).

    logcut's own `plan_method` probes by collapsing a scratch file next to the log, which
    would change the directory during a dry run. Here: ext4 or XFS (from mountinfo, by
    the file's device) and, on ext4, an extent-mapped file (FS_EXTENT_FL); collapse-range
    works exactly there. Anything else gets copy-truncate.
    """
    if options.mode == "rename":
        return "rename"
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return "copy-truncate"
    kind = fstype(st.st_dev)
    if kind not in _COLLAPSE_FS:
        return "copy-truncate"
    if kind == "ext4" and not _uses_extents(path):
        return "copy-truncate"
    return "collapse-range"


def _uses_extents(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 8)
        flags = struct.unpack("l", buf)[0]
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & _FS_EXTENT_FL)


class TruncateAction(Action):
    name = "truncate"
    options = frozenset(
        {"rotate", "compress", "delay_compress", "keep_tail", "olddir", "mode", "reopen",
         "postrotate", "allow_non_append_writers"}
    )  # fmt: skip
    # Open for writing is the point: the planner and the executor skip the busy and
    # settle checks for this action and re-check only the file's identity.
    skips_busy = False
    done_event = "log_truncated"

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_policy(policy, target_names)
        options = cut_options(policy)
        for message in validate_options(options):
            problems.append((_policy_key(message, policy), _policy_words(message)))
        if policy.postrotate is not None and not policy.postrotate:
            problems.append(("postrotate", "needs at least the program to run (an argv list)"))
        if policy.compress == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                problems.append(("compress", "zstd needs the Python package zstandard; install it or use gzip"))
        return problems

    def select(
        self, policy: Policy, matched: list[FileFact], eligible: list[FileFact], ctx: PlanContext
    ) -> Iterable[tuple[FileFact, str, dict[str, Any] | None] | Skip]:
        options = cut_options(policy)
        for fact in eligible:
            path = os.path.join(policy.path, fact.relpath)
            name = os.path.basename(fact.relpath)
            if is_rotated_copy(name):
                yield Skip(policy.name, path, fact.size, "rotated_copy",
                           "a rotated copy (NAME.N, NAME.N.gz, NAME.N.zst): never truncated itself")
                continue
            if SCRATCH_RE.fullmatch(name):
                yield Skip(policy.name, path, fact.size, "janitor_temp",
                           "a temporary file of an unfinished cut: never truncated")
                continue
            if fact.size == 0:
                yield Skip(policy.name, path, 0, "empty", "empty: nothing to cut")
                continue
            if options.mode == "copytruncate" and not options.allow_non_append_writers:
                pids = ctx.open_files.non_append_writers.get((fact.dev, fact.ino))
                if pids:
                    yield Skip(policy.name, path, fact.size, "non_append_writer",
                               f"open for writing without O_APPEND by {_describe_pids(pids)}: a cut would "
                               "leave a NUL-filled head; make the writer append ('>>' not '>'), use "
                               "mode: rename, or set allow_non_append_writers: true")
                    continue
            yield fact, ctx.reason_for(policy, fact), {"method": expected_method(path, options)}

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any],
              ctx: ExecContext) -> dict[str, Any]:
        _check_link_count(item, dir_fd, name)
        # cut_log works with paths (the copy goes next to the log, older copies are
        # renamed). /proc/self/fd/N/NAME names the log inside the directory the executor
        # opened with O_NOFOLLOW and re-checked: no path component is looked up again, so
        # a directory swapped for a symlink after the check cannot send the cut elsewhere.
        pinned_dir = f"/proc/self/fd/{dir_fd}"
        real_dir = os.path.dirname(item.path)

        def shown(text: str) -> str:
            return text.replace(pinned_dir, real_dir)

        try:
            result = cut_log(f"{pinned_dir}/{name}", cut_options(ctx.policy))
        except NonAppendWriter as exc:
            # A writer without O_APPEND appeared after the plan: a skip, as in the plan.
            raise FileSkipped(shown(str(exc)), skip_code="non_append_writer") from exc
        except JanitorError as exc:
            raise JanitorError(shown(str(exc)), code=exc.code) from exc
        for warning in result.warnings:
            ctx.events.emit("log_truncate_warning", "warning", policy=item.policy, path=item.path,
                            method=result.method, message=shown(warning))
        rotated_to = shown(result.rotated_to) if result.rotated_to else None
        result = dataclasses.replace(result, path=item.path, rotated_to=rotated_to,
                                     compressed=tuple(shown(c) for c in result.compressed))
        detail = {"method": result.method, "bytes_cut": result.bytes_cut, "bytes_after": result.bytes_after,
                  "rotated_to": result.rotated_to, "compressed": list(result.compressed)}
        out: dict[str, Any] = {"detail": json.dumps(detail), "bytes": result.bytes_cut,
                               "method": result.method, "bytes_cut": result.bytes_cut,
                               "bytes_after": result.bytes_after}
        if result.rotated_to:
            out["rotated_to"] = result.rotated_to
        return out

    @classmethod
    def reconcile(cls, entry: JournalEntry) -> tuple[str, str | None]:
        return cls.reconcile_with(entry, None)

    @classmethod
    def reconcile_with(cls, entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
        # The log never leaves its path, so presence says nothing; the record of the cut
        # in progress (logcut.recover_cut) does: the copy is kept if the live file lost
        # the prefix, dropped if it did not. Either way every byte is there exactly once.
        policy = None
        if config is not None:
            policy = next((p for p in config.policies if p.name == entry.policy), None)
        options = cut_options(policy) if policy is not None else CutOptions(rotate=1)
        try:
            dir_fd, name = open_parent_below(entry.root, entry.path)
        except (OSError, JanitorError) as exc:
            return "failed", f"interrupted; the log's directory cannot be opened safely: {exc}"
        try:
            outcome = recover_cut(f"/proc/self/fd/{dir_fd}/{name}", options)
        except OSError as exc:
            return "failed", f"interrupted; could not settle the cut in progress: {exc.strerror or exc}"
        finally:
            os.close(dir_fd)
        if outcome == "kept":
            return "done", "interrupted after the cut; the rotated copy was put in place"
        if outcome == "dropped":
            return "aborted", "interrupted before the cut; the unused copy was removed, the log is whole"
        return "aborted", "interrupted; no cut was in progress, the log is as it was"


def _check_link_count(item: PlannedAction, dir_fd: int, name: str) -> None:
    """Refuse a log with other hard links: it may be a user's link to a file they cannot write.

    A user who may write into the log directory can hard-link /etc/shadow (where
    protected_hardlinks is off) or another user's file there; cutting "the log" would then
    truncate that file. logrotate refuses such files for the same reason.
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if st.st_nlink > 1:
        raise JanitorError(f"{item.path} has {st.st_nlink} hard links; not cutting a file that may be "
                           "someone else's file linked into the log directory", code="E_UNSAFE")
