"""Library side of `janitor restore --from-archive` and `janitor archive lifecycle`.

Restore streams each object into a temporary file next to its destination (the target
verifies size and SHA-256 while downloading), sets the original mode, owner and mtime,
and only then moves it into place: a half-downloaded or corrupt copy never appears under
the original name. Destinations are reached through directory descriptors opened with
O_NOFOLLOW below the policy path, so neither a recorded path nor a symlink planted in
the tree can make a restore write outside it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import JanitorError, UsageError, VerifyFailed
from .globs import path_matcher
from .safepath import lexists_at, open_parent_below, relative_parts
from .trashops import TrashOpResult, put_back_each

if TYPE_CHECKING:
    from .catalog import Catalog, JournalEntry
    from .config import Config
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
) -> list[JournalEntry]:
    """The newest verified archive of each original path matching every given filter."""
    wanted = path_matcher(patterns or [])
    latest: dict[str, JournalEntry] = {}
    for entry in catalog.entries("state='done' AND object_key IS NOT NULL AND target IS NOT NULL"):
        if policies and entry.policy not in policies:
            continue
        if run_id and entry.run_id != run_id:
            continue
        if patterns and not wanted(entry.path):
            continue
        if entry.path not in latest or entry.id > latest[entry.path].id:
            latest[entry.path] = entry
    return sorted(latest.values(), key=lambda e: e.path)


def restore_from_archive(
    catalog: Catalog,
    config: Config,
    entries: list[JournalEntry],
    events: EventLog,
    *,
    force: bool = False,
) -> TrashOpResult:
    """Download each entry's object back to its original path. A target that cannot be
    used raises TargetError (one message) before any file is written."""
    from .progress import make_progress
    from .targets import target_for

    targets: dict[str, ArchiveTarget] = {}
    for name in sorted({e.target for e in entries if e.target}):
        target = target_for(config, name)
        target.check()
        targets[name] = target
    progress = make_progress("restore", len(entries), sum(e.size for e in entries), events) if entries else None

    def put_back(entry: JournalEntry) -> None:
        if entry.target is None:
            raise JanitorError(f"{entry.path}: no archive target recorded")
        restore_archived(entry, targets[entry.target], force=force, progress=progress)

    try:
        result = put_back_each(catalog, entries, events, put_back)
    finally:
        if progress is not None:
            progress.close()
    return result


def _check_key(entry: JournalEntry) -> None:
    """Refuse a recorded path outside its policy path, or an object key that climbs out."""
    from .targets.base import clean_key_parts

    relative_parts(entry.path, entry.root)
    assert entry.object_key is not None
    try:
        clean_key_parts(entry.object_key, what="object key")
    except ValueError as exc:
        raise JanitorError(f"{entry.path}: {exc}; not restoring", code="E_UNSAFE") from None


def restore_archived(
    entry: JournalEntry, target: ArchiveTarget, *, force: bool = False, progress: TransferProgress | None = None
) -> str:
    """Restore one archived file to its original path; returns the path.

    Raises JanitorError when the destination exists (and not force), the path or key is
    unsafe, or the object does not verify (then nothing is left behind).
    """
    _check_key(entry)
    parent, name = open_parent_below(entry.root, entry.path, create=True)
    try:
        exists = lexists_at(parent, name)
        if exists and not force:
            raise JanitorError(f"{entry.path}: exists; not overwriting it (use --force)", code="E_EXISTS")
        tmp = f".{name}.janitor-restore-{secrets.token_hex(4)}"
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent))
        placed = False
        try:
            assert entry.object_key is not None
            obj = target.download(entry.object_key, f"/proc/self/fd/{parent}/{tmp}",
                                  progress=progress.advance if progress is not None else None)
            if entry.sha256 and obj.sha256 and obj.sha256.lower() != entry.sha256.lower():
                raise VerifyFailed(f"{entry.path}: object {entry.object_key} was replaced since it was archived "
                                   "(digest differs from the catalog); not restoring it")
            _set_metadata(parent, tmp, entry, obj.mode, obj.mtime)
            if force:
                os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
            else:
                try:  # link + unlink: atomic "create only if absent", unlike rename
                    os.link(tmp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
                except FileExistsError:
                    raise JanitorError(f"{entry.path}: exists; not overwriting it (use --force)",
                                       code="E_EXISTS") from None
                os.unlink(tmp, dir_fd=parent)
            placed = True
        finally:
            if not placed:
                try:
                    os.unlink(tmp, dir_fd=parent)
                except FileNotFoundError:
                    pass
        if progress is not None:
            progress.file_done()
    finally:
        os.close(parent)
    return entry.path


def _set_metadata(dir_fd: int, name: str, entry: JournalEntry, mode: int | None, mtime: float | None) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, (mode if mode is not None else entry.mode) & 0o7777)
        os.utime(fd, (entry.atime, mtime if mtime is not None else entry.mtime))
    finally:
        os.close(fd)


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


def set_lifecycle(
    config: Config,
    target_name: str,
    *,
    expire_after: float,
    transition_after: float | None = None,
    storage_class: str | None = None,
) -> LifecycleResult:
    """Write (or replace) janitor's lifecycle rule for the target's prefix; other rules stay."""
    from .targets import target_for

    if (transition_after is None) != (storage_class is None):
        raise UsageError("--transition-after and --storage-class go together")
    expire_days = whole_days(expire_after, "--expire-after")
    transition_days = None if transition_after is None else whole_days(transition_after, "--transition-after")
    if transition_days is not None and transition_days >= expire_days:
        raise UsageError("--transition-after must be shorter than --expire-after")
    target = target_for(config, target_name)
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
    from .targets import target_for

    target = target_for(config, target_name)
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
