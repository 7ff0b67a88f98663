"""Execute a Plan: re-check each file just before acting, act relative to an open
directory descriptor, and journal the intent before and the outcome after.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from .actions.base import DONE, Done
from .catalog import JOURNAL_COLUMNS
from .disk import disk_usage
from .errors import EXIT_OK, EXIT_PARTIAL, FileSkipped, JanitorError
from .events import EventLog
from .plan import Plan, PlannedAction, PolicyPlan
from .procfs import OpenFiles, scan_open_files
from .runstop import EXIT_SIGNAL, stop_reason
from .runstop import current as current_stop
from .safepath import O_CANDIDATE, lexists_at, open_dirs_below
from .scan import O_DIR
from .trash import TrashBin, TrashSlot
from .units import format_duration

if TYPE_CHECKING:
    from .actions.base import Action
    from .catalog import Catalog
    from .config import Config, Policy

BATCH = 512


@dataclass
class PolicyOutcome:
    name: str
    action: str
    status: str = "done"  # done | blocked | inactive | error | stopped
    files: int = 0
    bytes: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # by error code
    messages: list[str] = field(default_factory=list)
    dirs_removed: int = 0  # remove_empty_dirs


@dataclass
class RunResult:
    run_id: str
    policies: list[PolicyOutcome] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(p.files for p in self.policies)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.policies)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.policies) + sum(
            1 for p in self.policies if p.status in ("error", "blocked")
        )

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK


def _dir_cache_size() -> int:
    """A quarter of the soft fd limit, 64..1024.

    A quota evicts oldest first, which hops between directories at random: with 400
    directories and 64 cached descriptors nearly every file cost two opens and a close.
    """
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(64, min(1024, soft // 4))


class DirCache:
    """Open directories below a policy root by descriptor, never following symlinks."""

    def __init__(self, root_fd: int, root_dev: int, one_filesystem: bool, size: int | None = None) -> None:
        self.root_fd = root_fd
        self.root_dev = root_dev
        self.one_filesystem = one_filesystem
        self.size = _dir_cache_size() if size is None else size
        self._fds: OrderedDict[str, int] = OrderedDict()

    def parent_of(self, relpath: str) -> tuple[int, str]:
        reldir, _, name = relpath.rpartition("/")
        if not reldir:
            return self.root_fd, name
        fd = self._fds.get(reldir)
        if fd is not None:
            self._fds.move_to_end(reldir)
            return fd, name
        fd = self._open_chain(reldir)
        self._fds[reldir] = fd
        if len(self._fds) > self.size:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd, name

    def _open_chain(self, reldir: str) -> int:
        return open_dirs_below(self.root_fd, reldir.split("/"), dev=self.root_dev if self.one_filesystem else None)

    def open_file(self, relpath: str) -> int:
        """Open a regular file below the root for reading, never following a symlink.

        Safe to call from worker threads: it uses only the root descriptor, not the cache.
        """
        reldir, _, name = relpath.rpartition("/")
        dir_fd = self._open_chain(reldir) if reldir else self.root_fd
        try:
            # A FIFO, socket or device swapped in is never opened (a device's open can act) and,
            # if swapped in between the look and the open, the open does not block and the
            # fstat refuses it: reading it could hang or never end (/dev/zero).
            if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise OSError(errno.EINVAL, "no longer a regular file (a FIFO, socket, device or symlink); not read")
            fd = os.open(name, O_CANDIDATE, dir_fd=dir_fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "no longer a regular file (a FIFO, socket or device); not read")
            os.set_blocking(fd, True)
            return fd
        finally:
            if dir_fd != self.root_fd:
                os.close(dir_fd)

    def forget(self, reldir: str) -> None:
        """Drop a cached directory (it was removed)."""
        fd = self._fds.pop(reldir, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass
class ExecContext:
    """What an action may use while applying itself to one policy's files."""

    config: Config
    policy: Policy
    catalog: Catalog
    events: EventLog
    run_id: str
    trash: TrashBin
    open_files: OpenFiles
    now: float = field(default_factory=time.time)
    # the policy root's open directories, while its batches run (for actions that read files)
    dirs: DirCache | None = None
    # remove_empty_dirs: directories (relative, with the dev/ino they had) a file left this run
    emptied: dict[str, tuple[int, int]] = field(default_factory=dict)

    def trash_slot(self, item: PlannedAction) -> TrashSlot:
        return self.trash.slot(self.config.trash_dir(self.policy), self.policy.path, item.fact.dev)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, JanitorError):
        return exc.code
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "E_PERMISSION"
        if exc.errno == errno.ENOSPC:
            return "E_DISK_FULL"
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return "E_UNSAFE"
        return "E_IO"
    return "E_INTERNAL"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def recheck(
    item: PlannedAction, dir_fd: int, name: str, ctx: ExecContext, action: Action
) -> tuple[str, str] | None:
    """(code, reason) when the file must be left alone after all; None to go ahead."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "vanished", "no longer exists"
    fact = item.fact
    if not stat.S_ISREG(st.st_mode):
        return "changed", "no longer a regular file"
    if (st.st_dev, st.st_ino) != (fact.dev, fact.ino):
        return "changed", "replaced by another file since the plan"
    if st.st_uid != fact.uid:
        return "changed", f"owner changed since the plan (uid {fact.uid} -> {st.st_uid})"
    if not action.skips_busy:
        return None
    if st.st_size != fact.size or st.st_mtime != fact.mtime:
        return "changed", "modified since the plan"
    busy = ctx.open_files.busy_reason(st.st_dev, st.st_ino, readers=ctx.policy.skip_open_readers)
    if busy is not None:
        return busy
    settle = ctx.config.effective_settle(ctx.policy)
    if time.time() - st.st_mtime < settle:
        return "settle", f"modified within settle {format_duration(settle)}"
    return None


def execute_plan(
    plan: Plan,
    config: Config,
    catalog: Catalog,
    run_id: str,
    events: EventLog,
    *,
    force: bool = False,
) -> RunResult:
    """Apply the plan. Every policy runs even if another failed; failures are counted."""
    result = RunResult(run_id)
    trash = TrashBin(run_id, on_refused=lambda message: events.emit("trash_refused", "warning", message=message,
                                                                     code="E_UNSAFE"),
                     state_dir=config.settings.state_dir)
    # One /proc scan per filesystem for the whole execution, made when the first policy that
    # needs it starts (after the plan: a writer may have opened a file since), shared by the
    # policies on that filesystem instead of one scan each.
    open_files: dict[int | None, OpenFiles] = {}
    try:
        for pp in plan.policies:
            if stop_reason() is not None:
                break  # a signal or a replaced state_dir: the runner records and says it
            policy = config.policy(pp.name)
            outcome = PolicyOutcome(pp.name, pp.action)
            result.policies.append(outcome)
            try:
                _execute_policy(pp, policy, config, catalog, run_id, events, trash, outcome, force, open_files)
            except JanitorError as exc:
                outcome.status = "error"
                outcome.errors[exc.code] += 1
                outcome.messages.append(str(exc))
                events.emit("policy_failed", "error", policy=pp.name, code=exc.code, message=str(exc))
    finally:
        trash.close()
    return result


def _execute_policy(
    pp: PolicyPlan,
    policy: Policy,
    config: Config,
    catalog: Catalog,
    run_id: str,
    events: EventLog,
    trash: TrashBin,
    outcome: PolicyOutcome,
    force: bool,
    open_files: dict[int | None, OpenFiles] | None = None,
) -> None:
    from .actions.base import get_action

    action = get_action(pp.action)
    ctx = ExecContext(config, policy, catalog, events, run_id, trash, OpenFiles())
    warn_codes: frozenset[str] = getattr(action, "warning_skip_codes", frozenset())  # e.g. truncate: another rotator
    for skip in pp.skips:  # decided while planning; counted and logged with the run
        outcome.skipped[skip.code] += 1
        events.emit("file_skipped", "warning" if skip.code in warn_codes else "info", policy=pp.name,
                    action=pp.action, path=skip.path, bytes=skip.bytes, reason=skip.reason, code=skip.code)
    if pp.error:
        outcome.status = "error"
        outcome.errors["E_PATH"] += 1
        outcome.messages.append(pp.error)
        events.emit("policy_failed", "error", policy=pp.name, code="E_PATH", message=pp.error)
        return
    action.before_run(policy, config, ctx)
    if pp.inactive:
        outcome.status = "inactive"
        outcome.messages.append(pp.inactive)
        return
    if pp.blocked and not force:
        outcome.status = "blocked"
        outcome.messages.append(pp.blocked)
        events.emit("policy_blocked", "warning", policy=pp.name, message=pp.blocked)
        return
    if not pp.actions:
        return
    # each file goes through this one (quota hands its files to its `then`); the
    # policy-wide steps, before_run and after_run, are the policy's own action's
    policy_action, action = action, action.per_file(ctx)

    root_fd = os.open(pp.root, O_DIR)
    try:
        st = os.fstat(root_fd)
        if (st.st_dev, st.st_ino) != (pp.root_dev, pp.root_ino):
            raise JanitorError(f"{pp.root} was replaced since the plan; not touching it", code="E_CHANGED")
        if action.skips_busy:
            ctx.open_files = _open_files_of(pp, config.effective_one_filesystem(policy), open_files)
        dirs = DirCache(root_fd, st.st_dev, config.effective_one_filesystem(policy))
        ctx.dirs = dirs
        workers = config.settings.delete_workers
        try:
            if _overrides(action, "before_actions"):
                # Each file's journal fields (an archive key, a trash path) first, one file at
                # a time: a name the action cannot handle fails that file alone, before the
                # step that sees every file (before_actions) can fail the policy for it.
                items, fields_of = _journal_fields_per_file(pp.actions, action, ctx, outcome)
                if items:
                    action.before_actions(items, ctx)
                    try:
                        for start in range(0, len(items), BATCH):
                            if not _execute_batch(items[start : start + BATCH], pp, action, ctx, outcome,
                                                  fields_of):
                                outcome.status = "stopped"
                                break
                    finally:
                        action.after_actions(ctx)
            else:
                # No step sees every file at once: the journal fields are made batch by batch
                # (still one file at a time, before the batch's own steps), so only one batch
                # of PlannedAction objects exists at a time, whatever the plan's size.
                actions = pp.actions
                # Acted on elsewhere while the next batch is journaled (not with a disk
                # threshold: that re-measures before each file, in order). By default in a
                # second process: journaling here and re-checking and unlinking there use
                # both cores. Only for actions without per-file journal fields (they would
                # cross the pipe), plans longer than a batch (a fork costs more than it
                # saves below that), and a process without other threads (a fork copies
                # none of them, so a lock one held would stay held: `janitor serve` acts in
                # its own process). With delete_workers > 1, in threads instead: they pay
                # off where the kernel makes each file wait (a network filesystem); on a
                # local disk they contend for the GIL (measured: bench/README.md).
                pipelined = (action.parallel_apply and len(actions) > 1 and pp.stop_at_pct is None
                             and not _overrides(action, "prepare_batch"))
                track_dirs = bool(getattr(policy, "remove_empty_dirs", False))
                child = None
                if (pipelined and workers == 1 and len(actions) > BATCH and config.settings.acting_process
                        and not _overrides(action, "journal_fields") and threading.active_count() == 1):
                    child = _acting_processes(actions, action, ctx, track_dirs)  # None: no fork, act here
                if pipelined and workers > 1:
                    # leaving the block waits for the workers, also when an exception escapes
                    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="janitor-act") as pool:
                        if not _execute_pipelined(actions, pp, action, ctx, outcome,
                                                  lambda _, items, fields: _start_acting(items, fields, action, ctx,
                                                                                         track_dirs, pool)):
                            outcome.status = "stopped"
                elif child is not None:
                    try:
                        if not _execute_pipelined(actions, pp, action, ctx, outcome,
                                                  lambda positions, items, _: child.start(positions, items)):
                            outcome.status = "stopped"
                    finally:
                        child.close()
                else:
                    for start in range(0, len(actions), BATCH):
                        if not _execute_batch(actions[start : start + BATCH], pp, action, ctx, outcome):
                            outcome.status = "stopped"
                            break
            if getattr(policy, "remove_empty_dirs", False):
                remove_emptied_dirs(ctx, outcome)
        finally:
            ctx.dirs = None
            dirs.close()
        policy_action.after_run(pp, outcome, ctx)
    finally:
        os.close(root_fd)


def _overrides(action: Action, method: str) -> bool:
    """Whether the action overrides this hook of the contract: `before_actions` (it is given
    every file of the policy), `prepare_batch` (it has work to do before acting)."""
    from .actions.base import Action as BaseAction

    return getattr(type(action), method) is not getattr(BaseAction, method)


def _open_files_of(pp: PolicyPlan, one_filesystem: bool, scans: dict[int | None, OpenFiles] | None) -> OpenFiles:
    """The run's /proc scan for the policy's filesystem (None: every filesystem), made once."""
    key = pp.root_dev if one_filesystem else None
    found = None if scans is None else scans.get(key)
    if found is None:
        # after the plan: a writer may have opened a file since the plan was made
        found = scan_open_files({pp.root_dev} if one_filesystem else None)
        if scans is not None:
            scans[key] = found
    return found


def remove_emptied_dirs(ctx: ExecContext, outcome: PolicyOutcome) -> None:
    """`remove_empty_dirs`: remove the directories that this run's removals left empty.

    Only a directory a file of this run left (and then its parents, once they are empty in
    turn), deepest first, never the policy path itself and never a directory that was empty
    before (an application may expect it). Each is removed with rmdir through its parent's
    descriptor after confirming the name is still the directory the run worked in (dev/ino);
    a directory that gained an entry meanwhile fails with ENOTEMPTY and is left alone, as is
    one the kernel refuses (a mount point, an immutable directory).
    """
    dirs = ctx.dirs
    assert dirs is not None
    pending = dict(ctx.emptied)
    while pending:
        reldir = max(pending, key=lambda d: (d.count("/"), d))
        identity = pending.pop(reldir)
        try:
            parent_fd, name = dirs.parent_of(reldir)
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != identity:
                continue  # not the directory this run emptied: someone else's, left alone
            dirs.forget(reldir)
            os.rmdir(name, dir_fd=parent_fd)
        except OSError:
            continue  # not empty (gained a file), gone, busy or refused: left as it is
        outcome.dirs_removed += 1
        ctx.events.emit("dir_removed", policy=ctx.policy.name, action=ctx.policy.action,
                        path=os.path.join(ctx.policy.path, reldir))
        parent = reldir.rpartition("/")[0]
        if parent and parent not in pending:
            parent_fd_st = os.fstat(parent_fd)
            pending[parent] = (parent_fd_st.st_dev, parent_fd_st.st_ino)


def _journal_row(item: PlannedAction, run_id: str, root: str, fields: dict[str, Any]) -> dict[str, Any]:
    f = item.fact
    row = {
        "run_id": run_id, "ts": time.time(), "policy": item.policy, "action": item.action,
        "root": root, "path": item.path, "size": f.size, "mtime": f.mtime, "atime": f.atime,
        "mode": f.mode, "uid": f.uid, "gid": f.gid, "dev": f.dev, "ino": f.ino, "state": "planned",
    }  # fmt: skip
    row.update(fields)
    return row


def _internal_failure(item: PlannedAction, step: str, exc: Exception) -> str:
    """One line for an unexpected exception of one file's step: names the file, no traceback."""
    name = exc.type_name if isinstance(exc, _ActingProcessError) else type(exc).__name__
    detail = f"{name}: {exc}".encode("unicode_escape", "backslashreplace").decode("ascii")[:300]
    return f"{item.path}: {step} failed ({detail}); this file was left alone"


def _fail_file(item: PlannedAction, ctx: ExecContext, outcome: PolicyOutcome, code: str, message: str) -> None:
    outcome.failed += 1
    outcome.errors[code] += 1
    if len(outcome.messages) < 20:
        outcome.messages.append(message if message.startswith(item.path) else f"{item.path}: {message}")
    ctx.events.emit("file_failed", "error", policy=item.policy, action=item.action, path=item.path,
                    bytes=item.fact.size, code=code, message=message)


def _journal_fields_per_file(
    items: list[PlannedAction], action: Action, ctx: ExecContext, outcome: PolicyOutcome
) -> tuple[list[PlannedAction], dict[int, dict[str, Any]]]:
    """The files whose journal fields could be made and stored, with those fields (by id()).

    Any Exception of one file (a key a target refuses, a name that cannot be stored in a
    text column) fails that file with E_INTERNAL; a JanitorError keeps its own code.
    """
    if not _overrides(action, "journal_fields"):  # none to make (a delete): nothing can fail
        return items, {id(item): {} for item in items}
    kept: list[PlannedAction] = []
    fields_of: dict[int, dict[str, Any]] = {}
    for item in items:
        try:
            fields = action.journal_fields(item, ctx)
            _check_storable(fields)
        except JanitorError as exc:
            if exc.stops_policy:
                raise  # not this file's fault (e.g. the trash cannot be used): the policy fails
            _fail_file(item, ctx, outcome, exc.code, str(exc))
            continue
        except OSError as exc:
            _fail_file(item, ctx, outcome, error_code(exc), describe_error(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one file's odd name fails that file only
            _fail_file(item, ctx, outcome, "E_INTERNAL", _internal_failure(item, "journaling", exc))
            continue
        kept.append(item)
        fields_of[id(item)] = fields
    return kept, fields_of


def _check_storable(fields: dict[str, Any]) -> None:
    """Raise ValueError for a text column SQLite cannot store (a str with surrogate escapes
    from a name that is not UTF-8): the catalog stores only root/path/trash_path as bytes."""
    for key, value in fields.items():
        if key in ("root", "path", "trash_path") or not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"its {key} is not valid UTF-8 and cannot be journaled") from None


def _release_transaction(catalog: Catalog) -> None:
    """After a catalog write failed with something other than a database error (which the
    catalog rolls back itself): never leave its BEGIN open, or every later write fails with
    "cannot start a transaction within a transaction"."""
    db = getattr(catalog, "db", None)
    if db is not None and db.in_transaction:
        db.execute("ROLLBACK")


def _add_planned(catalog: Catalog, rows: list[dict[str, Any]]) -> list[int | None]:
    """Journal the rows; a row the catalog cannot take (not a database error) is None."""
    try:
        return list(catalog.add_planned(rows))
    except JanitorError:
        raise  # the catalog itself failed: the run cannot journal anything
    except Exception:  # noqa: BLE001 - one row's value: retried one by one below
        _release_transaction(catalog)
    ids: list[int | None] = []
    for row in rows:
        try:
            ids.extend(catalog.add_planned([row]))
        except JanitorError:
            raise
        except Exception:  # noqa: BLE001
            _release_transaction(catalog)
            ids.append(None)
    return ids


def _set_outcomes(catalog: Catalog, results: list[tuple[int, str, str | None, dict[str, Any]]]) -> None:
    """Record outcomes; one whose extra columns cannot be stored is recorded without them."""
    try:
        catalog.set_outcomes(results)
        return
    except JanitorError:
        raise
    except Exception:  # noqa: BLE001
        _release_transaction(catalog)
    for row_id, state, error, extra in results:
        try:
            catalog.set_outcomes([(row_id, state, error, extra)])
        except JanitorError:
            raise
        except Exception as exc:  # noqa: BLE001
            _release_transaction(catalog)
            note = f"{error + '; ' if error else ''}columns not recorded ({type(exc).__name__})"
            catalog.set_outcomes([(row_id, state, note, {})])


def _journal_batch(
    items: list[PlannedAction],
    pp: PolicyPlan,
    action: Action,
    ctx: ExecContext,
    outcome: PolicyOutcome,
    fields_of: dict[int, dict[str, Any]] | None = None,
) -> tuple[list[PlannedAction], list[int], list[dict[str, Any]]]:
    """Journal a batch's intents: the files journaled, their row ids and journal fields.
    A file whose fields or row cannot be made fails alone, here."""
    if fields_of is None:
        items, fields_of = _journal_fields_per_file(items, action, ctx, outcome)
    journaled = None
    if items and not any(fields_of.values()) and all(
        (item.policy, item.action, item.root) == (pp.name, pp.action, pp.root) for item in items
    ):  # facts only (a delete's rows): made without a row dict each
        try:
            journaled = list[int | None](ctx.catalog.add_planned_files(ctx.run_id, pp.name, pp.action, pp.root,
                                                                       [item.fact for item in items]))
        except JanitorError:
            raise  # the catalog itself failed: the run cannot journal anything
        except Exception:  # noqa: BLE001 - one file's value: the rows one by one, below, find it
            _release_transaction(ctx.catalog)
    if journaled is None:
        journaled = _add_planned(
            ctx.catalog, [_journal_row(item, ctx.run_id, pp.root, fields_of[id(item)]) for item in items]
        )
    ids: list[int] = []
    kept: list[PlannedAction] = []
    for item, maybe_id in zip(items, journaled, strict=True):
        if maybe_id is None:
            _fail_file(item, ctx, outcome, "E_INTERNAL",
                       _internal_failure(item, "journaling", ValueError("the catalog refused its row")))
        else:
            ids.append(maybe_id)
            kept.append(item)
    return kept, ids, [fields_of[id(item)] for item in kept]


def _execute_pipelined(actions: list[PlannedAction], pp: PolicyPlan, action: Action, ctx: ExecContext,
                       outcome: PolicyOutcome, start_acting: _StartActing) -> bool:
    """The batches of an action applied elsewhere (worker threads, or the acting processes),
    journaling batch N+1 while batch N is acted on: each batch is still journaled before
    any of its files is touched (the write-ahead rule). Once batch N is back, batch N+1 is
    sent before N's outcomes are recorded (in plan order), so the acting side does not wait
    on the journal, unless N's outcomes say stop. False once a signal stopped the run (then
    the batch journaled ahead is recorded `skipped: not attempted`)."""
    pending: tuple[list[PlannedAction], list[int], list[dict[str, Any]], _InFlight] | None = None
    for start in range(0, len(actions), BATCH):
        items = actions[start : start + BATCH]
        position = {id(item): start + i for i, item in enumerate(items)}
        batch = _journal_batch(items, pp, action, ctx, outcome)
        acted: list[_Acted | _Halted] = []
        if pending is not None:
            try:
                acted = pending[3].wait()
            except JanitorError as exc:  # the acting process is gone: the batch journaled ahead is not attempted
                _not_attempted(batch[1], str(exc), ctx, outcome, code="not_attempted")
                raise
        # asked here too: a signal that reached only this process
        stop = _stop_in(acted) or (None if (halt := stop_reason()) is None else (halt, "interrupted"))
        unsent: JanitorError | None = None
        in_flight: _InFlight | None = None
        if stop is None:
            try:
                in_flight = start_acting([position[id(item)] for item in batch[0]], batch[0], batch[2])
            except JanitorError as exc:  # the acting process is gone: this batch was never sent
                unsent = exc
        if stop is not None or unsent is not None:
            reason, code = stop or (str(unsent), "not_attempted")
            _not_attempted(batch[1], reason, ctx, outcome, code=code)
        if pending is not None:
            _record_acted(*pending[:3], acted, action, ctx, outcome)  # raises the error that stops the policy
        if unsent is not None:
            raise unsent
        if in_flight is None:
            return False
        pending = (*batch, in_flight)
    if pending is None:
        return True
    return _record_acted(*pending[:3], pending[3].wait(), action, ctx, outcome) is None


def _stop_in(acted: list[_Acted | _Halted]) -> tuple[str, str] | None:
    """(reason, skip code) for the batch after these outcomes when one of them says stop:
    a file not attempted (a signal), or an error that stops the policy."""
    for done in acted:
        if isinstance(done, _Halted):
            return done.reason, "interrupted"
        if isinstance(done, _Failed) and isinstance(done.exc, JanitorError) and done.exc.stops_policy:
            return str(done.exc), "not_attempted"
    return None


def _not_attempted(ids: list[int], reason: str, ctx: ExecContext, outcome: PolicyOutcome,
                   code: str = "interrupted") -> None:
    outcome.skipped[code] += len(ids)
    _set_outcomes(ctx.catalog, [(row_id, "skipped", f"not attempted: {reason}", {}) for row_id in ids])


def _record_acted(items: list[PlannedAction], ids: list[int], fields_list: list[dict[str, Any]],
                  acted: list[_Acted | _Halted], action: Action, ctx: ExecContext,
                  outcome: PolicyOutcome) -> str | None:
    """Record a batch acted on elsewhere, in plan order; the reason a signal stopped it, if
    one did. Raises the error that stops the policy, if any."""
    if acted.count(_PLAIN_DONE) == len(acted) and not any(fields_list):
        _record_plain_done(items, ids, action, ctx, outcome)
        return None
    results: list[tuple[int, str, str | None, dict[str, Any]]] = []
    stopped_by: JanitorError | None = None
    halted: str | None = None
    try:
        for item, row_id, fields, done in zip(items, ids, fields_list, acted, strict=True):
            if isinstance(done, _Halted):
                results.append((row_id, "skipped", f"not attempted: {done.reason}", {}))
                outcome.skipped["interrupted"] += 1
                halted = done.reason
                continue
            stopped_by = stopped_by or _record(item, row_id, fields, done, action, ctx, outcome, results)
    finally:
        _set_outcomes(ctx.catalog, results)
    if stopped_by is not None:
        raise stopped_by
    return halted


def _record_plain_done(items: list[PlannedAction], ids: list[int], action: Action, ctx: ExecContext,
                       outcome: PolicyOutcome) -> None:
    """`_record` of a batch whose every file is done with nothing more to tell (a delete's,
    as a rule), at once: the same rows, counts and events."""
    if len(items) != len(ids):
        raise ValueError("a batch's outcomes and rows differ in number")
    sizes = [item.fact.size for item in items]
    try:
        outcome.files += len(items)
        outcome.bytes += sum(sizes)
        by_event: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_event.setdefault(action.done_event_for(item), []).append(index)
        for event, indexes in by_event.items():
            def each(indexes: list[int] = indexes) -> Iterator[dict[str, Any]]:
                for i in indexes:
                    item = items[i]
                    yield {"policy": item.policy, "action": item.action, "path": item.path, "bytes": sizes[i]}

            ctx.events.emit_each(event, len(indexes), sum(sizes[i] for i in indexes), each)
    finally:
        _set_outcomes(ctx.catalog, [(row_id, "done", None, {}) for row_id in ids])


def _execute_batch(
    items: list[PlannedAction],
    pp: PolicyPlan,
    action: Action,
    ctx: ExecContext,
    outcome: PolicyOutcome,
    fields_of: dict[int, dict[str, Any]] | None = None,
) -> bool:
    """Journal, apply and record one batch. False once the disk threshold says stop."""
    dirs = ctx.dirs
    assert dirs is not None  # set by _execute_policy for the policy's duration
    items, ids, fields_list = _journal_batch(items, pp, action, ctx, outcome, fields_of)
    results: list[tuple[int, str, str | None, dict[str, Any]]] = []
    keep_going = True
    stopped_by: JanitorError | None = None
    track_dirs = bool(getattr(ctx.policy, "remove_empty_dirs", False))
    one_by_one = False  # prepare_batch failed for the batch: prepare each file on its own
    try:
        try:
            action.prepare_batch(items, fields_list, ctx)
        except JanitorError:
            raise
        except Exception:  # noqa: BLE001 - one file's problem: find it by preparing one at a time
            one_by_one = True
        for item, row_id, fields in zip(items, ids, fields_list, strict=True):
            halt = stop_reason()  # before each file: SIGTERM/SIGINT, or state_dir replaced (runstop.py)
            if halt is not None:
                results.append((row_id, "skipped", f"not attempted: {halt}", {}))
                outcome.skipped["interrupted"] += 1
                keep_going = False
                continue
            if stopped_by is not None:
                results.append((row_id, "skipped", f"not attempted: {stopped_by}", {}))
                outcome.skipped["not_attempted"] += 1
                continue
            if not keep_going or (pp.stop_at_pct is not None
                                  and disk_usage(pp.root).used_pct <= pp.stop_at_pct):
                keep_going = False
                results.append((row_id, "skipped", "filesystem is back under its threshold", {}))
                outcome.skipped["under_threshold"] += 1
                continue
            done = _act(item, fields, action, ctx, dirs.parent_of, track_dirs, one_by_one)
            stopped_by = _record(item, row_id, fields, done, action, ctx, outcome, results)
    finally:
        # Rows not reached (an exception escaped) stay `planned`; reconcile settles them.
        _set_outcomes(ctx.catalog, results)
    if stopped_by is not None:
        raise stopped_by
    return keep_going


@dataclass(slots=True)
class _Done:
    result: Done
    emptied: tuple[str, int, int] | None  # (reldir, dev, ino) when the file's directory may now be empty


@dataclass(slots=True)
class _Failed:
    exc: Exception
    step: str  # "acting" or "preparing", for an unexpected exception's one line


@dataclass(slots=True)
class _Halted:
    reason: str  # stop_reason(): the file was not attempted


_Acted = _Done | _Failed | FileSkipped
# a file done with nothing more to tell (no emptied directory): what most of a delete's are,
# one shared object (the acting processes send a batch of only these as its length)
_PLAIN_DONE = _Done(DONE, None)


def _act(
    item: PlannedAction,
    fields: dict[str, Any],
    action: Action,
    ctx: ExecContext,
    parent_of: Callable[[str], tuple[int, str]],
    track_dirs: bool,
    one_by_one: bool = False,
) -> _Acted:
    """Re-check one file through its directory descriptor and act on it; records nothing.

    Safe in a worker thread when `parent_of` is the thread's own (the DirCache is not).
    """
    step = "acting"
    try:
        if one_by_one:
            step = "preparing"
            action.prepare_batch([item], [fields], ctx)
            step = "acting"
        relpath = item.fact.relpath
        dir_fd, name = parent_of(relpath)
        skip = recheck(item, dir_fd, name, ctx, action)
        if skip is not None:
            return FileSkipped(skip[1], skip_code=skip[0])
        result = action.apply(item, dir_fd, name, fields, ctx)
        emptied = None
        if track_dirs and "/" in relpath and not lexists_at(dir_fd, name):
            st_dir = os.fstat(dir_fd)
            emptied = (relpath.rpartition("/")[0], st_dir.st_dev, st_dir.st_ino)
        return _Done(result, emptied)
    except FileSkipped as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - never BaseException: Ctrl-C still stops the run
        return _Failed(exc, step)


def _record(
    item: PlannedAction,
    row_id: int,
    fields: dict[str, Any],
    done: _Acted,
    action: Action,
    ctx: ExecContext,
    outcome: PolicyOutcome,
    results: list[tuple[int, str, str | None, dict[str, Any]]],
) -> JanitorError | None:
    """Count, journal and announce one file's outcome. The error that stops the policy, if any."""
    events = ctx.events
    if isinstance(done, FileSkipped):
        results.append((row_id, "skipped", str(done), {}))
        outcome.skipped[done.skip_code] += 1
        events.emit("file_skipped", policy=item.policy, action=item.action, path=item.path,
                    bytes=item.fact.size, reason=str(done), code=done.skip_code)
        return None
    if isinstance(done, _Failed):
        exc = done.exc
        if isinstance(exc, OSError | JanitorError):
            code = error_code(exc)
            message = describe_error(exc)
            results.append((row_id, "failed", f"{code}: {message}", {}))
            outcome.failed += 1
            outcome.errors[code] += 1
            if isinstance(exc, JanitorError) and exc.stops_policy:
                # Not this file's fault: every later one would fail the same way. The
                # policy fails with this one message (execute_plan reports it).
                return exc
            if len(outcome.messages) < 20:
                outcome.messages.append(f"{item.path}: {message}")
            events.emit("file_failed", "error", policy=item.policy, action=item.action, path=item.path,
                        bytes=item.fact.size, code=code, message=message)
            return None
        # An action's unexpected exception on one file (a name a target refuses with
        # a ValueError, a bug): that file fails with one line, the run goes on.
        message = _internal_failure(item, done.step, exc)
        results.append((row_id, "failed", f"E_INTERNAL: {message}", {}))
        _fail_file(item, ctx, outcome, "E_INTERNAL", message)
        return None
    if done.emptied is not None and done.emptied[0] not in ctx.emptied:
        ctx.emptied[done.emptied[0]] = done.emptied[1:]
    result = done.result
    if result is DONE and not fields:  # the bulk of a large delete: nothing but the file to tell
        results.append((row_id, "done", None, {}))
        outcome.files += 1
        outcome.bytes += item.fact.size
        events.emit(action.done_event_for(item), policy=item.policy, action=item.action, path=item.path,
                    bytes=item.fact.size)
        return None
    # The action's columns are stored (and told in the event); its event fields only
    # go into the event (e.g. truncate's method). Its bytes are what it really
    # processed when that differs from the file's size (truncate cuts only a prefix).
    done_bytes = item.fact.size if result.bytes is None else result.bytes
    columns = {k: v for k, v in result.columns.items() if k in JOURNAL_COLUMNS}
    results.append((row_id, "done", None, columns))
    outcome.files += 1
    outcome.bytes += done_bytes
    event_fields: dict[str, Any] = {k: v for k, v in {**fields, **result.columns, **result.event}.items()
                                    if k != "detail" and isinstance(v, str | int | float)}
    events.emit(action.done_event_for(item), policy=item.policy, action=item.action, path=item.path,
                bytes=done_bytes, **event_fields)
    return None


class _Acting:
    """A batch the worker threads are acting on; `wait` gives the results in the items' order."""

    def __init__(self, futures: list[Future[None]], out: list[_Acted | _Halted | None]) -> None:
        self._futures, self._out = futures, out

    def wait(self) -> list[_Acted | _Halted]:
        for future in self._futures:
            future.result()
        assert all(done is not None for done in self._out)
        return cast("list[_Acted | _Halted]", self._out)


def _start_acting(
    items: list[PlannedAction],
    fields_list: list[dict[str, Any]],
    action: Action,
    ctx: ExecContext,
    track_dirs: bool,
    workers: ThreadPoolExecutor,
) -> _Acting:
    """`_act` on every item, each directory's files in one worker thread, in plan order
    within it; returns at once.

    A worker reaches its directory from the policy root's descriptor (O_NOFOLLOW at every
    step, on the policy's filesystem), as the DirCache would, and closes it when done. The
    re-check (fstatat) and the act (unlinkat) release the GIL: while one worker waits on
    the kernel the other runs Python.
    """
    dirs = ctx.dirs
    assert dirs is not None
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.fact.relpath.rpartition("/")[0], []).append(index)
    out: list[_Acted | _Halted | None] = [None] * len(items)

    def run_group(reldir: str, indexes: list[int]) -> None:
        dir_fd = -1
        opened: BaseException | None = None
        if reldir:
            try:
                dir_fd = open_dirs_below(dirs.root_fd, reldir.split("/"),
                                         dev=dirs.root_dev if dirs.one_filesystem else None)
            except (OSError, JanitorError) as exc:
                opened = exc  # each of its files fails with it, as with the DirCache

        def parent_of(relpath: str) -> tuple[int, str]:
            if opened is not None:
                raise opened
            name = relpath.rpartition("/")[2]
            return (dir_fd if reldir else dirs.root_fd), name

        try:
            for index in indexes:
                halt = stop_reason()  # before each file, as in the serial loop
                if halt is not None:
                    out[index] = _Halted(halt)
                    continue
                out[index] = _act(items[index], fields_list[index], action, ctx, parent_of, track_dirs)
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)

    return _Acting([workers.submit(run_group, reldir, indexes) for reldir, indexes in groups.items()], out)


class _InFlight(Protocol):
    """A batch being acted on elsewhere; `wait` gives its outcomes in plan order."""

    def wait(self) -> list[_Acted | _Halted]: ...


# (the batch's plan positions, its journaled items, their journal fields) -> the batch in flight
_StartActing = Callable[[list[int], list[PlannedAction], list[dict[str, Any]]], _InFlight]


MAX_ACTING_PROCESSES = 4


def acting_process_count() -> int:
    """How many processes act on a policy's batches: one per CPU this process may run on,
    up to MAX_ACTING_PROCESSES (the kernel's unlinks in different directories scale about
    that far on ext4; each process also costs a fork)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_ACTING_PROCESSES, cpus))


def _acting_processes(actions: list[PlannedAction], action: Action, ctx: ExecContext,
                      track_dirs: bool) -> _ActingProcesses | None:
    children: list[_ActingProcess] = []
    for _ in range(acting_process_count()):
        try:
            children.append(_ActingProcess(actions, action, ctx, track_dirs, siblings=children))
        except OSError:
            break  # no fork or pipe to be had (memory, processes, descriptors): fewer of them
    if not children:
        return None  # not one: this process does it all
    return _ActingProcesses(children)


class _ActingProcesses:
    """The processes acting on one policy's batches: each batch is cut into one contiguous
    run of files per process, cut where the directory changes when it can (two processes
    unlinking in one directory queue on its lock), and the outcomes are put back together
    in plan order."""

    def __init__(self, children: list[_ActingProcess]) -> None:
        self.children = children

    def start(self, positions: list[int], items: list[PlannedAction]) -> _SplitBatch:
        parts = _cut_points(items, len(self.children))
        started: list[_ChildBatch] = []
        for child, (begin, end) in zip(self.children, parts, strict=False):
            started.append(child.start(positions[begin:end]))
        return _SplitBatch(started)

    def close(self) -> None:
        for child in self.children:
            child.close()


def _cut_points(items: list[PlannedAction], parts: int) -> list[tuple[int, int]]:
    """(begin, end) of up to `parts` contiguous runs of `items` of about equal length, each
    cut moved to the nearest place the directory changes when one is within half a part."""
    n = len(items)
    if parts <= 1 or n < 2:
        return [(0, n)]
    reldirs = [item.fact.relpath.rpartition("/")[0] for item in items]
    changes = [i for i in range(1, n) if reldirs[i] != reldirs[i - 1]]
    bounds = [0]
    for k in range(1, parts):
        ideal = n * k // parts
        nearest = min(changes, key=lambda change: abs(change - ideal), default=ideal)
        cut = nearest if abs(nearest - ideal) <= n // (2 * parts) else ideal
        if bounds[-1] < cut < n:
            bounds.append(cut)
    bounds.append(n)
    return list(zip(bounds, bounds[1:], strict=False))


class _SplitBatch:
    """A batch cut among the acting processes; `wait` gives its outcomes in plan order."""

    def __init__(self, parts: list[_ChildBatch]) -> None:
        self._parts = parts

    def wait(self) -> list[_Acted | _Halted]:
        out: list[_Acted | _Halted] = []
        for part in self._parts:
            out.extend(part.wait())
        return out


class _ActingProcess:
    pipe_fds: tuple[int, int]  # (requests to it, its outcomes): what a later sibling closes
    """A second process that re-checks and acts on the batches this one has journaled: the
    journal's Python work here and the re-checks and unlinks there use both cores (threads
    cannot: they contend for the GIL, measured in bench/README.md).

    Forked once the policy's batches start, it has the plan, the run's /proc scan, the
    policy root's descriptor and the run lock's descriptor (no second run can start while
    it lives). It is sent the plan positions of each batch once that batch is journaled,
    acts on those files only, in plan order, through directory descriptors of its own,
    and sends back each file's outcome, which this process records. Before each file it
    asks what this process would (`stop_reason`: a signal, which RunStop passes on to it,
    or the state directory replaced) and whether this process still exists.
    """

    def __init__(self, actions: list[PlannedAction], action: Action, ctx: ExecContext, track_dirs: bool,
                 siblings: Sequence[_ActingProcess] = ()) -> None:
        """Fork it; OSError (no memory or process left for a fork, no descriptors for the
        pipes) with nothing left behind, and the caller acts in its own process instead.

        `siblings`, the acting processes forked before it: it closes their pipes' ends
        it inherits (held open here, a sibling would never see the end of its requests)."""
        parent = os.getpid()
        request_r, request_w = os.pipe()
        try:
            result_r, result_w = os.pipe()
        except OSError:
            os.close(request_r)
            os.close(request_w)
            raise
        # SIGTERM/SIGINT held until the new process is on the list they are passed on to:
        # one arriving in between would otherwise reach this process only
        held = signal.pthread_sigmask(signal.SIG_BLOCK, set(EXIT_SIGNAL))
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            for fd in (request_r, request_w, result_r, result_w):
                os.close(fd)
            raise
        if pid == 0:  # the acting process: never returns, never runs this process's clean-up
            status = 0
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                os.close(request_w)
                os.close(result_r)
                for sibling in siblings:
                    for fd in sibling.pipe_fds:
                        os.close(fd)
                _serve_batches(actions, action, ctx, track_dirs, request_r, result_w, parent)
            except BaseException:  # noqa: BLE001 - reported to the parent by the closed pipe
                status = 70
            finally:
                os._exit(status)
        os.close(request_r)
        os.close(result_w)
        self.pid = pid
        self.pipe_fds = (request_w, result_r)
        self._requests = os.fdopen(request_w, "wb")
        self._results = os.fdopen(result_r, "rb")
        self._in_flight = False
        self._stop = current_stop()
        if self._stop is not None:
            self._stop.children.add(pid)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # one that came meanwhile is handled now

    def start(self, positions: list[int]) -> _ChildBatch:
        try:
            pickle.dump(positions, self._requests, pickle.HIGHEST_PROTOCOL)
            self._requests.flush()
        except OSError:  # EPIPE: it is gone
            raise self._gone() from None
        self._in_flight = True
        return _ChildBatch(self)

    def results(self) -> list[_Acted | _Halted]:
        try:
            encoded = pickle.load(self._results)
        except (EOFError, pickle.UnpicklingError):
            raise self._gone() from None
        self._in_flight = False
        if isinstance(encoded, int):
            return [_PLAIN_DONE] * encoded
        return [_decoded(e) for e in encoded]

    @staticmethod
    def _gone() -> JanitorError:
        return JanitorError("the process acting on this policy's files stopped unexpectedly; the files of its "
                            "batch in hand stay journaled as planned, and the next run settles them",
                            code="E_INTERNAL")

    def close(self) -> None:
        """No more batches: the acting process sees the end of its requests and exits.

        When this process gives up with a batch still in flight (its journal failed, a disk
        full), the acting one is told to stop before its next file, and the outcomes it
        would send are not waited for: it ends on the closed pipe instead of blocking on
        a full one while this process waits for it (those files stay `planned`, for
        reconcile)."""
        if self._stop is not None:
            # off the list before it is reaped: a signal then never goes to a reused pid
            self._stop.children.discard(self.pid)
        if self._in_flight:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except OSError:
                pass  # gone already
        for stream in (self._requests, self._results):
            try:
                stream.close()
            except OSError:
                pass  # EPIPE flushing to a process that is gone: said already
        os.waitpid(self.pid, 0)


class _ChildBatch:
    """A batch the acting process is acting on; `wait` gives its outcomes in plan order."""

    def __init__(self, child: _ActingProcess) -> None:
        self._child = child

    def wait(self) -> list[_Acted | _Halted]:
        return self._child.results()


def _serve_batches(actions: list[PlannedAction], action: Action, ctx: ExecContext, track_dirs: bool,
                   request_fd: int, result_fd: int, parent: int) -> None:
    """The acting process's loop: each batch's positions in, each file's outcome out."""
    assert ctx.dirs is not None
    dirs = DirCache(ctx.dirs.root_fd, ctx.dirs.root_dev, ctx.dirs.one_filesystem)
    with os.fdopen(request_fd, "rb") as requests, os.fdopen(result_fd, "wb") as results:
        while True:
            try:
                positions = pickle.load(requests)
            except EOFError:
                return
            out: list[tuple[Any, ...]] = []
            run = range(positions[0], positions[0] + len(positions)) if positions else range(0)
            # a run of the plan (as a batch's part always is): its items made in one pass
            items = actions[run.start:run.stop] if positions == list(run) else [actions[p] for p in positions]
            for item in items:
                halt = stop_reason() or (None if os.getppid() == parent else "janitor's run process is gone")
                if halt is not None:
                    out.append(("h", halt))
                    continue
                out.append(_encoded(_act(item, {}, action, ctx, dirs.parent_of, track_dirs)))
            # a part of only plain "done" outcomes goes as its length
            plain = out.count(_PLAIN_ENCODED) == len(out)
            pickle.dump(len(out) if plain else out, results, pickle.HIGHEST_PROTOCOL)
            results.flush()


def _encoded(acted: _Acted) -> tuple[Any, ...]:
    """One outcome as plain values (an exception of janitor's own does not pickle whole)."""
    if isinstance(acted, _Done):
        result = acted.result
        if result is DONE:
            return ("d", acted.emptied)
        return ("D", result.bytes, dict(result.columns), dict(result.event), acted.emptied)
    if isinstance(acted, FileSkipped):
        return ("s", str(acted), acted.skip_code)
    exc = acted.exc
    if isinstance(exc, OSError):
        return ("o", acted.step, exc.errno, exc.strerror, str(exc))
    if isinstance(exc, JanitorError):
        return ("j", acted.step, str(exc), exc.code, exc.stops_policy)
    return ("x", acted.step, type(exc).__name__, str(exc))


_PLAIN_ENCODED = ("d", None)


def _decoded(encoded: tuple[Any, ...]) -> _Acted | _Halted:
    kind = encoded[0]
    if kind == "d":
        return _PLAIN_DONE if encoded[1] is None else _Done(DONE, encoded[1])
    if kind == "D":
        return _Done(Done(encoded[1], encoded[2], encoded[3]), encoded[4])
    if kind == "s":
        return FileSkipped(encoded[1], skip_code=encoded[2])
    if kind == "h":
        return _Halted(encoded[1])
    step = encoded[1]
    if kind == "o":
        errno_, strerror, text = encoded[2:]
        return _Failed(OSError(errno_, strerror) if errno_ is not None else OSError(text), step)
    if kind == "j":
        failure = JanitorError(encoded[2], code=encoded[3])
        failure.stops_policy = encoded[4]
        return _Failed(failure, step)
    return _Failed(_ActingProcessError(encoded[2], encoded[3]), step)


class _ActingProcessError(Exception):
    """An unexpected exception in the acting process, by its type's name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
