"""Library side of `janitor restore --from-archive` and `janitor archive lifecycle`.

Restore streams each object into a temporary file next to its destination (the target
verifies size and SHA-256 while downloading), sets the original mode, owner and mtime,
and only then moves it into place: a half-downloaded or corrupt copy never appears under
the original name. Destinations are reached through directory descriptors opened with
O_NOFOLLOW below the policy path, so neither a recorded path nor a symlink planted in
the tree can make a restore write outside it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DiskFull, JanitorError, UsageError, VerifyFailed
from .globs import path_matcher
from .safepath import lexists_at, relative_parts
from .trashops import TrashOpResult

if TYPE_CHECKING:
    from .asowner import Credentials
    from .catalog import Catalog, JournalEntry
    from .config import Config, Policy
    from .events import EventLog
    from .progress import TransferProgress
    from .targets import ArchiveTarget

SECONDS_PER_DAY = 86400


def select_archived(
    catalog: Catalog,
    *,
    patterns: list[str] | None = None,
    policies: list[str] | None = None,
    run_id: str | None = None,
    version: str | None = None,
) -> list[JournalEntry]:
    """The archived copy to restore of each original path matching every given filter:
    the newest, or the one `version` chooses (see `version_filter`)."""
    wanted = path_matcher(patterns or [])
    pick = version_filter(version)
    latest: dict[str, JournalEntry] = {}
    for entry in catalog.entries("state='done' AND object_key IS NOT NULL AND target IS NOT NULL"):
        if policies and entry.policy not in policies:
            continue
        if run_id and entry.run_id != run_id:
            continue
        if patterns and not wanted(entry.path):
            continue
        if not pick(entry):
            continue
        if entry.path not in latest or entry.id > latest[entry.path].id:
            latest[entry.path] = entry
    return sorted(latest.values(), key=lambda e: e.path)


def version_filter(version: str | None) -> Callable[[JournalEntry], bool]:
    """`--version`: an object key (or its `@` content suffix, or a version id) picks that
    copy; a time (`2026-12-01`, `2026-12-01T10:00`, or an age such as `3d`) picks the
    newest copy archived at or before it. None: every copy (the newest wins)."""
    if not version:
        return lambda entry: True
    import datetime

    from .units import parse_duration

    when: float | None = None
    try:
        when = datetime.datetime.fromisoformat(version).timestamp()
    except ValueError:
        try:
            when = time.time() - parse_duration(version)
        except ValueError:
            when = None
    if when is not None:
        cutoff = when
        return lambda entry: (entry.done_at or entry.ts) <= cutoff
    return lambda entry: version in (entry.object_key, entry.version_id) or bool(
        entry.object_key and entry.object_key.endswith("@" + version))


@dataclass
class ArchiveRestoreResult(TrashOpResult):
    """restore --from-archive: also the files found already in place with the same bytes,
    and why the restore stopped early (ENOSPC, a free-space threshold)."""

    already: list[JournalEntry] = field(default_factory=list)
    stopped: str | None = None
    not_attempted: list[JournalEntry] = field(default_factory=list)


def restore_from_archive(
    catalog: Catalog,
    config: Config,
    entries: list[JournalEntry],
    events: EventLog,
    *,
    force: bool = False,
) -> ArchiveRestoreResult:
    """Download each entry's object back to its original path. A target that cannot be
    used raises TargetError (one message) before any file is written, and so does a
    restore the filesystem has no room for (free space, the guard's thresholds)."""
    from .progress import make_progress
    from .targets import target_for

    policies = {p.name: p for p in config.policies}
    targets: dict[tuple[str, str], ArchiveTarget] = {}
    checked: set[str] = set()
    for name, policy in sorted({(e.target, e.policy) for e in entries if e.target}):
        target = target_for(config, name, policies.get(policy))  # the policy's bwlimit applies
        if name not in checked:
            target.check()
            checked.add(name)
        targets[(name, policy)] = target
    check_room(config, entries)
    su_of = {p.name: _policy_su(p) for p in config.policies}
    scratch_dir = config.settings.state_dir
    progress = make_progress("restore", len(entries), sum(e.size for e in entries), events) if entries else None
    result = ArchiveRestoreResult()
    try:
        for i, entry in enumerate(entries):
            try:
                if entry.target is None:
                    raise JanitorError(f"{entry.path}: no archive target recorded")
                outcome = restore_archived(entry, targets[(entry.target, entry.policy)], force=force, progress=progress,
                                           config=config, su=su_of.get(entry.policy), scratch_dir=scratch_dir)
            except (OSError, JanitorError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                result.failed.append((entry, reason))
                _quiet_emit(events, "restore_failed", "error", policy=entry.policy, path=entry.path,
                            message=reason)
                if isinstance(exc, DiskFull | NoRoom):
                    result.stopped = reason
                    result.not_attempted = entries[i + 1:]
                    break
                continue
            if outcome == "already":
                result.already.append(entry)
                continue
            catalog.mark([entry.id], "restored_at")
            result.done.append(entry)
            events.emit("file_restored", policy=entry.policy, path=entry.path, bytes=entry.size,
                        run=entry.run_id, target=entry.target, object_key=entry.object_key)
    finally:
        if progress is not None:
            progress.close()
    return result


def render_archive_restore(result: TrashOpResult, out: Any) -> None:
    """Each path once: restored, already there (same bytes in place: not a failure), or not
    restored with its reason; then why the restore stopped, if it did, and the counts."""
    from .render import display_path, escape_markup

    already = getattr(result, "already", [])
    for e in result.done:
        out.print(f"restored {escape_markup(display_path(e.path))}")
    for e in already:
        out.print(f"already there {escape_markup(display_path(e.path))} (same content)")
    for e, reason in result.failed:
        out.print(f"[red]not restored[/] {escape_markup(display_path(e.path))}: {escape_markup(reason)}")
    skipped = getattr(result, "not_attempted", [])
    if skipped:
        out.print(f"stopped: {len(skipped)} more not attempted")
    out.print(f"{len(result.done)} restored, {len(already)} already there, {len(result.failed)} failed")


def _quiet_emit(events: EventLog, event: str, level: str, **fields: Any) -> None:
    """Log an event (JSON, --log-file) without its text line: the command prints the
    outcome of each path once itself."""
    saved = events.text_printer
    events.text_printer = lambda _level, _text: None
    try:
        events.emit(event, level, **fields)
    finally:
        events.text_printer = saved


def _policy_su(policy: Policy) -> Credentials | None:
    return policy.su


class NoRoom(JanitorError):
    """A restore would overfill the filesystem (or cross a guard threshold): refused."""

    code = "E_NO_ROOM"


def _thresholds_on(config: Config, dev: int) -> list[tuple[float, str]]:
    """(max used %, where it comes from) of the guard thresholds on the filesystem `dev`."""
    from .guard import thresholds_from_config

    out = []
    for t in thresholds_from_config(config, None):
        try:
            if os.stat(t.path).st_dev != dev or t.max_used is None:
                continue
        except OSError:
            continue
        out.append((t.max_used, t.source or t.path))
    return out


def _room_problem(st: os.statvfs_result, need: int, thresholds: list[tuple[float, str]], where: str) -> str | None:
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    if need > free:
        return (f"{where}: restoring {need} bytes needs more than the {free} bytes free there; "
                "not restoring (free space first)")
    denominator = used + free
    after = 100.0 * (used + need) / denominator if denominator else 100.0
    for max_used, source in thresholds:
        if after > max_used:
            return (f"{where}: restoring {need} bytes would take the filesystem to {after:.1f}% used, over "
                    f"{max_used:g}% ({source}); not restoring (free space first)")
    return None


def check_room(config: Config, entries: list[JournalEntry]) -> None:
    """Before anything is written: each filesystem must have room for what is restored to
    it, without crossing the guard's thresholds there; else NoRoom, one line."""
    need: dict[int, tuple[int, str]] = {}
    for entry in entries:
        try:
            dev = os.stat(entry.root).st_dev
        except OSError:
            continue  # the restore of that entry says why
        try:  # an estimate only (each file is checked again through its directory)
            st = os.lstat(entry.path)
            if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
                continue  # most likely already there: it needs no room
        except OSError:
            pass
        total, where = need.get(dev, (0, entry.root))
        need[dev] = (total + entry.size, where)
    for dev, (total, where) in need.items():
        problem = _room_problem(os.statvfs(where), total, _thresholds_on(config, dev), where)
        if problem is not None:
            raise NoRoom(problem)


def _check_key(entry: JournalEntry) -> None:
    """Refuse a recorded path outside its policy path, or an object key that climbs out."""
    from .targets.base import clean_key_parts

    relative_parts(entry.path, entry.root)
    assert entry.object_key is not None
    try:
        clean_key_parts(entry.object_key, what="object key")
    except ValueError as exc:
        raise JanitorError(f"{entry.path}: {exc}; not restoring", code="E_UNSAFE") from None


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def _same_content(parent: int, name: str, entry: JournalEntry) -> bool:
    """Whether `name` is a regular file holding exactly the archived bytes (read through a
    descriptor, bounded by the recorded size)."""
    if not entry.sha256:
        return False
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size or st.st_uid != entry.uid:
            return False  # not read at all: it is not the file (someone else's, a FIFO, ...)
        from .actions.archive import sha256_of_fd

        try:
            return sha256_of_fd(fd, entry.size) == entry.sha256.lower()
        except (OSError, JanitorError):
            return False
    finally:
        os.close(fd)


def _open_parent(entry: JournalEntry, su: Credentials | None,
                 recorded: Callable[[], list[tuple[int, int, int]] | None] | None = None) -> tuple[int, str]:
    """The destination's directory, reached from the policy path through descriptors with
    O_NOFOLLOW; missing directories are created by whoever may create names in their
    parent (asowner: root, the directory's owner, or `su`), with the owner and mode recorded
    when the file was archived (`recorded()`, asked only when one is missing) where known."""
    from .asowner import credentials_for_dir, run_as
    from .safepath import open_dirs_below

    parts = relative_parts(entry.path, entry.root)
    fd = os.open(entry.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = entry.root
    chain: list[tuple[int, int, int]] | None = None
    asked = False
    try:
        for index, part in enumerate(parts[:-1]):
            try:
                child = open_dirs_below(fd, [part])
            except FileNotFoundError:
                if not asked and recorded is not None:
                    asked = True
                    with contextlib.suppress(JanitorError, OSError, ValueError):
                        chain = recorded()
                    if chain is not None and len(chain) != len(parts) - 1:
                        chain = None
                want = chain[index] if chain is not None else None
                creds = credentials_for_dir(fd, shown, su=su, policy=entry.policy)
                run_as(creds, functools.partial(_make_dir, fd, part, want))
                child = open_dirs_below(fd, [part])
            os.close(fd)
            fd = child
            shown = os.path.join(shown, part)
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def _make_dir(parent: int, name: str, want: tuple[int, int, int] | None) -> None:
    """mkdir `name`; with `want` (uid, gid, mode) give it that owner (only root can) and mode,
    through its descriptor, and only if it is the directory this call made."""
    from .scan import O_DIR

    try:
        os.mkdir(name, 0o755 if want is None else 0o700, dir_fd=parent)
    except FileExistsError:
        return
    if want is None:
        return
    fd = os.open(name, O_DIR, dir_fd=parent)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            return
        uid, gid, mode = want
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _new_copy(dir_fd: int) -> tuple[int, str | None]:
    """A new, empty 0600 file for a copy in `dir_fd`: unnamed (O_TMPFILE) where the
    filesystem allows, else O_CREAT|O_EXCL|O_NOFOLLOW under an unguessable name. Checked
    with fstat: a regular file of ours with the links we expect. (fd, name or None)."""
    name: str | None = None
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            raise
        name = f".janitor-restore-{secrets.token_hex(16)}"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != (0 if name is None else 1):
        os.close(fd)
        raise JanitorError("a copy janitor just created is not its own; not restoring", code="E_UNSAFE")
    return fd, name


def _drop_name(dir_fd: int, name: str | None, fd: int) -> None:
    """Remove a named temporary copy, only while the name still is that copy."""
    if name is None:
        return
    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        mine = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            os.unlink(name, dir_fd=dir_fd)


def _finish_copy(fd: int, entry: JournalEntry, mode: int | None, mtime: float | None) -> None:
    """Final owner, mode and mtime, through the descriptor, once the bytes are complete."""
    if os.geteuid() == 0:
        os.fchown(fd, entry.uid, entry.gid)
    os.fchmod(fd, (mode if mode is not None else entry.mode) & 0o7777)
    os.utime(fd, (entry.atime, mtime if mtime is not None else entry.mtime))


def _place(fd: int, tmp: str | None, parent: int, name: str, entry: JournalEntry, *, force: bool) -> None:
    """Give the finished copy its name: never replacing anything without --force (link
    fails when the name exists, whatever it is); with --force, a fresh name renamed over."""
    source = f"/proc/self/fd/{fd}" if tmp is None else tmp
    src_dir = None if tmp is None else parent
    if not force:
        try:
            os.link(source, name, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=tmp is None)
        except FileExistsError:
            raise JanitorError(f"{entry.path}: exists; not overwriting it (use --force)", code="E_EXISTS") from None
        _drop_name(parent, tmp, fd)
        return
    fresh = tmp
    if fresh is None:
        fresh = f".janitor-restore-{secrets.token_hex(16)}"
        os.link(source, fresh, dst_dir_fd=parent, follow_symlinks=True)
    os.rename(fresh, name, src_dir_fd=parent, dst_dir_fd=parent)


def _copy_fd(src: int, dst: int, size: int, entry: JournalEntry) -> None:
    from .targets.base import pread_exact, write_all

    for offset in range(0, size, 1 << 20):
        write_all(dst, pread_exact(src, offset, min(1 << 20, size - offset)))
    os.fsync(dst)


def restore_archived(
    entry: JournalEntry,
    target: ArchiveTarget,
    *,
    force: bool = False,
    progress: TransferProgress | None = None,
    config: Config | None = None,
    su: Credentials | None = None,
    scratch_dir: str | None = None,
) -> str:
    """Restore one archived file to its original path: "restored", or "already" when the
    same bytes are in place.

    The copy is written to a new 0600 file (unnamed where possible), verified (size and
    SHA-256, and the catalog's digest), given its owner, mode and mtime through its
    descriptor, and only then linked into place, never over an existing name without
    --force. In a directory a non-root account can write, the name is created as that
    account (asowner): the object is first downloaded to a scratch file under state_dir.
    Raises JanitorError (DiskFull naming the path on ENOSPC) and leaves nothing behind.
    """
    from .asowner import credentials_for_dir, run_as

    _check_key(entry)
    assert entry.object_key is not None
    key = entry.object_key
    def recorded() -> list[tuple[int, int, int]] | None:
        from .targets.base import parse_dirs_meta

        obj = target.stat(key)
        return None if obj is None else parse_dirs_meta(obj.dirs)

    parent, name = _open_parent(entry, su, recorded)
    try:
        if lexists_at(parent, name):
            if _same_content(parent, name, entry):
                if progress is not None:
                    progress.file_done(entry.size)
                return "already"
            if not force:
                raise JanitorError(f"{entry.path}: exists; not overwriting it (use --force)", code="E_EXISTS")
        thresholds = _thresholds_on(config, os.fstat(parent).st_dev) if config is not None else []
        problem = _room_problem(os.fstatvfs(parent), entry.size, thresholds, entry.path)
        if problem is not None:
            raise NoRoom(problem)
        creds = credentials_for_dir(parent, os.path.dirname(entry.path), su=su, policy=entry.policy)
        advance = progress.advance if progress is not None else None

        def verify(obj_sha: str | None) -> None:
            if entry.sha256 and obj_sha and obj_sha.lower() != entry.sha256.lower():
                raise VerifyFailed(f"{entry.path}: object {key} was replaced since it was archived "
                                   "(digest differs from the catalog); not restoring it")

        try:
            if creds.is_root or scratch_dir is None:
                fd, tmp = _new_copy(parent)
                try:
                    obj = target.download(key, fd, progress=advance, version_id=entry.version_id)
                    verify(obj.sha256)
                    _finish_copy(fd, entry, obj.mode, obj.mtime)
                    _place(fd, tmp, parent, name, entry, force=force)
                except BaseException:
                    _drop_name(parent, tmp, fd)
                    raise
                finally:
                    os.close(fd)
            else:
                if entry.uid != creds.uid:
                    # Created as that account, the copy would belong to it: another account's
                    # file (moved or linked into this directory) would be handed over.
                    raise JanitorError(
                        f"{entry.path}: belonged to uid {entry.uid}, but {os.path.dirname(entry.path)} is written "
                        f"as {creds.describe()}; not restoring it there as someone else's file",
                        code="E_UNSAFE_DIR")
                scratch_parent = os.open(scratch_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    scratch, scratch_name = _new_copy(scratch_parent)
                    _drop_name(scratch_parent, scratch_name, scratch)  # nobody needs its name
                finally:
                    os.close(scratch_parent)
                try:
                    obj = target.download(key, scratch, progress=advance, version_id=entry.version_id)
                    verify(obj.sha256)
                    size = obj.size

                    def step() -> None:
                        fd, tmp = _new_copy(parent)
                        try:
                            _copy_fd(scratch, fd, size, entry)
                            os.fchmod(fd, (obj.mode if obj.mode is not None else entry.mode) & 0o7777)
                            os.utime(fd, (entry.atime, obj.mtime if obj.mtime is not None else entry.mtime))
                            _place(fd, tmp, parent, name, entry, force=force)
                        except OSError as exc:
                            _drop_name(parent, tmp, fd)
                            if exc.errno == errno.ENOSPC:
                                raise DiskFull(f"{entry.path}: no space left on device; restore stopped") from None
                            raise JanitorError(f"{entry.path}: {exc.strerror or exc}") from None
                        except BaseException:
                            _drop_name(parent, tmp, fd)
                            raise
                        finally:
                            os.close(fd)

                    run_as(creds, step)
                finally:
                    os.close(scratch)
        except DiskFull:
            raise DiskFull(f"{entry.path}: no space left on device; restore stopped") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"{entry.path}: no space left on device; restore stopped") from None
            raise JanitorError(f"{entry.path}: {exc.strerror or exc}") from None
        if progress is not None:
            progress.file_done()
    finally:
        os.close(parent)
    return "restored"


# -- lifecycle ------------------------------------------------------------------------------


@dataclass
class LifecycleResult:
    target: str
    where: str
    rules: list[dict[str, Any]] = field(default_factory=list)
    written: dict[str, Any] | None = None


def whole_days(seconds: float, option: str) -> int:
    """S3 lifecycle rules count in days: accept only durations that are whole days."""
    days, rest = divmod(seconds, SECONDS_PER_DAY)
    if rest or (days < 1 and option != "--transition-after"):
        raise UsageError(f"{option}: lifecycle rules count whole days (examples: 30d, 52w, 365d)")
    return int(days)


def rule_id_for(target_name: str) -> str:
    return f"janitor-{target_name}"


def _named_target(config: Config, name: str) -> ArchiveTarget:
    """The target `--target NAME` names; a name no policy file defines is a usage error (exit 2)."""
    from .targets import target_for

    if name not in config.targets:
        known = ", ".join(sorted(config.targets)) or "none"
        raise UsageError(f"no target named {name!r} (defined: {known})")
    return target_for(config, name)


def set_lifecycle(
    config: Config,
    target_name: str,
    *,
    expire_after: float,
    transition_after: float | None = None,
    storage_class: str | None = None,
) -> LifecycleResult:
    """Write (or replace) janitor's lifecycle rule for the target's prefix; other rules stay."""
    if (transition_after is None) != (storage_class is None):
        raise UsageError("--transition-after and --storage-class go together")
    expire_days = whole_days(expire_after, "--expire-after")
    transition_days = None if transition_after is None else whole_days(transition_after, "--transition-after")
    if transition_days is not None and transition_days >= expire_days:
        raise UsageError("--transition-after must be shorter than --expire-after")
    target = _named_target(config, target_name)
    prefix = str(getattr(target, "prefix", "") or "")
    rule_id = rule_id_for(target_name)
    if "{" in prefix:
        # a fleet prefix (docs/fleet.md): this host's part of the bucket, under a rule of its own
        from .fleet import host_name

        if "{hostname}" in prefix:
            rule_id += "-" + host_name()
        prefix = prefix.split("{policy}", 1)[0].replace("{hostname}", host_name())
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    try:
        target.set_lifecycle(rule_id, prefix, expire_days, transition_days, storage_class)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rules = target.get_lifecycle()
    written = next((r for r in rules if r.get("ID") == rule_id), None)
    return LifecycleResult(target_name, target.describe(), rules, written)


def show_lifecycle(config: Config, target_name: str) -> LifecycleResult:
    target = _named_target(config, target_name)
    return LifecycleResult(target_name, target.describe(), target.get_lifecycle())


def lifecycle_rule_line(rule: dict[str, Any]) -> str:
    """One line per rule: `ID: prefix 'x/' enabled, expire after 365d, GLACIER after 30d`."""
    filt = rule.get("Filter") or {}
    prefix = filt.get("Prefix", rule.get("Prefix", ""))
    if "And" in filt:
        prefix = filt["And"].get("Prefix", "")
    bits = [f"prefix {prefix!r}", str(rule.get("Status", "?")).lower()]
    if "Expiration" in rule:
        exp = rule["Expiration"]
        bits.append(f"expire after {exp['Days']}d" if "Days" in exp else f"expire {exp}")
    for t in rule.get("Transitions", []) or []:
        bits.append(f"{t.get('StorageClass')} after {t.get('Days')}d")
    abort = rule.get("AbortIncompleteMultipartUpload")
    if abort:
        bits.append(f"abort incomplete uploads after {abort.get('DaysAfterInitiation')}d")
    return f"{rule.get('ID', '?')}: " + ", ".join(bits)
