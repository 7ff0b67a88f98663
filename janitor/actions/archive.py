"""archive: copy each selected file to a target, verify the stored copy, only then apply `then`.

The order is what makes a killed run safe: the journal row (with target and key) is
written first, the upload is verified (size and SHA-256, see janitor.targets), and only
then is the local file deleted, moved to the trash or kept. A file whose upload failed,
or that changed while it was being uploaded, stays where it is.

Uploads run concurrently for a whole batch in `prepare_batch` (a bounded thread pool of
`settings.archive_workers`); `apply` then only checks the result and finishes one file.
The building blocks (`archive_open_file`, `ArchiveSession`) take a target and a file, so
other actions (quota's `then: archive`) can reuse them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..config import Rate, Then, VerifyMode
from ..errors import (
    FileChanged,
    FileSkipped,
    JanitorError,
    TargetError,
    TargetUnavailable,
    VerifyFailed,
)
from ..trash import move_into_trash
from .base import DISPOSAL_OF_THEN, Action, Disposal, Done, register
from .softdelete import SoftDeleteOptions

if TYPE_CHECKING:
    from ..asowner import Credentials
    from ..catalog import JournalEntry
    from ..config import Config, Policy
    from ..execute import DirCache, ExecContext
    from ..plan import PlannedAction
    from ..progress import TransferProgress
    from ..scan import FileFact
    from ..targets import ArchiveTarget, StoredObject

THEN_VALUES = ("delete", "soft-delete", "keep")
_HASH_CHUNK = 1 << 20
# After this many target failures in a row with no success between them, the target is
# treated as down for the rest of the policy (throttling that outlasts the retries, ...).
_FAILURES_BEFORE_STOP = 5


@dataclass
class ArchivedFile:
    """What the upload of one file came to; `apply` turns it into an outcome."""

    obj: StoredObject | None = None
    uploaded: bool = False  # False: an identical verified object was already there
    error: BaseException | None = None
    changed: str | None = None  # set when the file changed during the upload: keep it
    skipped: FileSkipped | None = None  # left alone on purpose (another user's hard link, ...)


def sha256_of_fd(fd: int, size: int | None = None, md5: Any = None) -> str:
    """SHA-256 of an open file from its start (pread: the fd's offset is left alone).

    With `size`, exactly that many bytes are read, never more (a file that keeps growing,
    or something endless, cannot make the read go on) and FileChanged if it is shorter.
    `md5`, a hashlib object, is fed the same bytes (the Content-MD5 of the upload).
    """
    h = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    offset = 0
    while size is None or offset < size:
        want = _HASH_CHUNK if size is None else min(_HASH_CHUNK, size - offset)
        n = os.preadv(fd, [view[:want]], offset)
        if n <= 0:
            if size is not None:
                raise FileChanged(f"shrank since the plan ({offset} of {size} bytes)")
            break
        h.update(view[:n])
        if md5 is not None:
            md5.update(view[:n])
        offset += n
    return h.hexdigest()


@dataclass(frozen=True)
class HashedFile:
    """An open file, its stat and its SHA-256 and MD5, all taken together before the upload."""

    fd: int
    before: os.stat_result
    digest: str
    md5: str | None = None


def _hash_open(fd: int, before: os.stat_result) -> HashedFile:
    md5 = hashlib.md5(usedforsecurity=False)
    digest = sha256_of_fd(fd, before.st_size, md5)
    return HashedFile(fd, before, digest, md5.hexdigest())


def _open_and_hash(open_file: Callable[[], int]) -> HashedFile:
    fd = open_file()
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return HashedFile(fd, before, "")  # archive_open_file says why it is not read
        return _hash_open(fd, before)
    except BaseException:
        os.close(fd)
        raise


_SOURCE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def open_candidate(dirs: DirCache, relpath: str, su: Credentials | None = None) -> int:
    """Open a file to archive through the policy root's directory chain: every directory
    and the file itself without following a symlink, the file O_NONBLOCK (a FIFO swapped
    in cannot block the open; a non-regular file is refused after fstat by the caller).

    A file with more than one link whose owner is not the account that could have made
    that link in this directory is left alone (FileSkipped, code `foreign_link`): with
    fs.protected_hardlinks=0 anyone can hard-link another user's (or root's) file into a
    directory they can write, and uploading it would leak it.
    """
    from ..safepath import open_dirs_below

    reldir, _, name = relpath.rpartition("/")
    dev = dirs.root_dev if dirs.one_filesystem else None
    dir_fd = open_dirs_below(dirs.root_fd, reldir.split("/"), dev=dev) if reldir else os.dup(dirs.root_fd)
    try:
        fd = os.open(name, _SOURCE_FLAGS, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            reason = foreign_link_reason(st, os.fstat(dir_fd), su)
            if reason is not None:
                raise FileSkipped(reason, code="E_FOREIGN_LINK", skip_code="foreign_link")
        except BaseException:
            os.close(fd)
            raise
        return fd
    finally:
        os.close(dir_fd)


def foreign_link_reason(st: os.stat_result, dir_st: os.stat_result, su: Credentials | None) -> str | None:
    """Why a file with several links is not archived from this directory, or None.

    Who could have linked it here: root alone where only root can write the directory; its
    owner where only the owner can; anyone where a group or everyone can (then only the
    policy's `su` account's own files are trusted). A link to a file of anyone else is
    skipped.
    """
    from ..asowner import writers_of

    if not stat.S_ISREG(st.st_mode) or st.st_nlink <= 1:
        return None
    who = writers_of(dir_st)
    if who is None:
        return None
    if who == "owner" and st.st_uid == dir_st.st_uid:
        return None
    if su is not None and st.st_uid == su.uid:
        return None
    return (f"a hard link ({st.st_nlink} links) to a file of uid {st.st_uid} in a directory "
            f"{'its owner uid ' + str(dir_st.st_uid) if who == 'owner' else 'others'} can write: "
            "not uploading another account's file")


def dir_chain_meta(root_fd: int, reldir: str, cache: dict[str, str | None]) -> str | None:
    """Owner and mode of each directory from the policy root down to `reldir`, as
    "uid:gid:mode/..." (octal), for a restore that must recreate them; None when not known."""
    from ..safepath import open_dirs_below

    if not reldir:
        return None
    if reldir in cache:
        return cache[reldir]
    parent = reldir.rpartition("/")[0]
    head = dir_chain_meta(root_fd, parent, cache) if parent else ""
    value: str | None = None
    if head is not None:
        try:
            fd = open_dirs_below(root_fd, reldir.split("/"))
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            item = f"{st.st_uid}:{st.st_gid}:{stat.S_IMODE(st.st_mode):o}"
            value = f"{head}/{item}" if head else item
        except (OSError, JanitorError):
            value = None
    cache[reldir] = value
    return value


def policy_su(policy: Policy) -> Credentials | None:
    """The policy's `su: USER[:GROUP]` (janitor/asowner.py), parsed by the loader."""
    return policy.su


def versioned_key(key: str, sha256: str) -> str:
    """The key for a file whose plain key already holds other bytes: never overwrite them.
    Derived from the content, so a re-run finds (and does not re-upload) the same copy."""
    return f"{key}@{sha256[:16].lower()}"


def _discard(ahead: Future[HashedFile]) -> None:
    """Give up a file hashed ahead: stop it if it has not started, else close what it opened."""
    if not ahead.cancel() and ahead.exception() is None:
        os.close(ahead.result().fd)


def _is_verified(target: ArchiveTarget, obj: StoredObject, size: int, digest: str, md5: str | None,
                 fd: int) -> bool:
    verified = getattr(target, "verified", None)
    if verified is None:  # a target without proofs of its own (tests' fakes)
        from ..targets import is_verified

        return is_verified(obj, size, digest)
    return bool(verified(obj, size, digest, md5, fd))


def _holds_bytes(target: ArchiveTarget, obj: StoredObject, size: int, digest: str) -> bool:
    """Whether a stored object without a digest of its own holds these bytes (read back).
    Only targets that can leave such an object behind (the filesystem's data file before
    its sidecar) answer; elsewhere an object without a digest is someone else's."""
    holds = getattr(target, "holds_bytes", None)
    return holds is not None and bool(holds(obj, size, digest))


def archive_open_file(
    target: ArchiveTarget,
    key: str,
    fd: int,
    fact: FileFact,
    *,
    fallback_path: str = "",
    progress: Callable[[int], None] | None = None,
    listed_size: int | None | Literal[False] = False,
    hashed: HashedFile | None = None,
    dirs: str | None = None,
) -> ArchivedFile:
    """Archive one open file under `key` unless a verified copy is already there.

    `listed_size`: what a listing said about the key (None: absent, an int: its size,
    False: not listed, so ask the target). An absent key needs no HEAD.
    `hashed`: the file's stat and digests when they were taken ahead (ArchiveSession).
    The file is read only through `fd` and only as far as the size the plan saw.
    A key that holds other bytes is never overwritten: the file goes to its
    content-derived `versioned_key` instead (issue 11 point 7).
    Never raises for the file's own problems: they come back in `error` / `changed`.
    TargetError is raised (the caller decides whether the target is down).
    """
    before = hashed.before if hashed is not None else os.fstat(fd)
    if not stat.S_ISREG(before.st_mode) or (before.st_dev, before.st_ino) != (fact.dev, fact.ino):
        return ArchivedFile(changed="replaced by another file since the plan")
    if (before.st_size, before.st_mtime) != (fact.size, fact.mtime):
        return ArchivedFile(changed="modified since the plan")
    if (before.st_uid, before.st_gid) != (fact.uid, fact.gid):
        return ArchivedFile(changed="owner changed since the plan")
    if hashed is None or not hashed.digest:
        hashed = _hash_open(fd, before)
    digest, md5 = hashed.digest, hashed.md5
    existing = None if listed_size is None else target.stat(key)
    if existing is not None:
        if _is_verified(target, existing, before.st_size, digest, md5, fd):
            return ArchivedFile(obj=existing, uploaded=False)
        if existing.sha256 is None and _holds_bytes(target, existing, before.st_size, digest):
            pass  # these very bytes without their metadata (a run killed before writing it): store again in place
        elif not (existing.sha256 and existing.sha256.lower() == digest and existing.size == before.st_size):
            # Other bytes (another file that had this path, maybe deleted since) hold the
            # key: they may be the only copy left, so this file gets a key of its own.
            key = versioned_key(key, digest)
            other = target.stat(key)
            if other is not None:
                if _is_verified(target, other, before.st_size, digest, md5, fd):
                    return ArchivedFile(obj=other, uploaded=False)
                if not (other.sha256 and other.sha256.lower() == digest):
                    return ArchivedFile(error=VerifyFailed(
                        f"{key} already holds other bytes; not overwriting it (file kept)"))
        # else: a copy that claims these bytes but has no proof: replace it

    def changed_since_hashed() -> bool:
        # ctime too: a rewrite that keeps the size and puts the mtime back still moves it.
        after = os.fstat(fd)
        return (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            before.st_size, before.st_mtime_ns, before.st_ctime_ns)

    extra: dict[str, Any] = {"dirs": dirs} if dirs else {}  # the owner/mode of its directories
    try:
        obj = target.upload(
            fd,
            key,
            sha256=digest,
            md5=md5,
            size=before.st_size,
            mtime=before.st_mtime,
            mode=before.st_mode & 0o7777,
            progress=progress,
            **extra,
        )
    except (VerifyFailed, FileChanged):
        # A server that refused our digest (BadDigest) most likely saw a file being written.
        if changed_since_hashed():
            return ArchivedFile(changed="changed while it was being uploaded; kept")
        raise
    if changed_since_hashed():
        return ArchivedFile(obj=obj, uploaded=True, changed="changed while it was being uploaded; kept")
    return ArchivedFile(obj=obj, uploaded=True)


class ArchiveSession:
    """One policy's uploads to one target: a worker pool, progress, and a circuit breaker.

    The breaker: when an upload fails, one `check()` of the target tells a bad file from
    a target that is down; when the target is down (or keeps failing), the remaining
    files are not attempted and the policy fails with that one message.
    """

    def __init__(self, target: ArchiveTarget, workers: int, progress: TransferProgress | None = None) -> None:
        self.target = target
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="janitor-archive")
        self.unavailable: TargetUnavailable | None = None
        self._failures_in_a_row = 0
        self._lock = threading.Lock()
        self._ahead: dict[str, Future[HashedFile]] = {}
        # object key -> owner/mode of the file's directories (META_DIRS), set per batch
        self.dir_meta: dict[str, str] = {}

    def hash_ahead(self, jobs: Sequence[tuple[str, Callable[[], int]]]) -> None:
        """Open and hash these (key, open_file) files now, in the pool, while the caller
        checks the target: creating an S3 client keeps one CPU busy for ~0.2 s, and the
        first uploads need their digest before their first byte can be sent."""
        # One thread, in order: the first upload can start once its own file is hashed,
        # and hashing threads that outnumber the CPUs would only take the GIL from the
        # thread building the client.
        futures: list[tuple[Future[HashedFile], Callable[[], int]]] = []
        for key, open_file in jobs:
            future: Future[HashedFile] = Future()
            self._ahead[key] = future
            futures.append((future, open_file))

        def hash_in_order() -> None:
            for future, open_file in futures:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(_open_and_hash(open_file))
                except BaseException as exc:
                    future.set_exception(exc)

        self.pool.submit(hash_in_order)

    def _take_ahead(self, key: str) -> Future[HashedFile] | None:
        with self._lock:
            return self._ahead.pop(key, None)

    def check_target(self) -> None:
        """Fail fast, before any file is touched, when the target cannot be used."""
        try:
            self.target.check()
        except TargetError as exc:
            raise TargetUnavailable(str(exc)) from None

    def archive_many(self, jobs: Sequence[tuple[str, FileFact, Callable[[], int], str]]) -> list[ArchivedFile]:
        """Archive (key, fact, open_file, fallback_path) jobs concurrently; results in order."""
        listed = self._list_directories([job[0] for job in jobs])
        futures = [self.pool.submit(self._archive_one, *job, listed.get(job[0], False)) for job in jobs]
        return [f.result() for f in futures]

    def _list_directories(self, keys: list[str]) -> dict[str, int | None]:
        """What the target lists in the keys' directories: key -> size, None when absent.

        One LIST per directory (concurrently) instead of one HEAD per key: most keys of a
        first run are absent. Keys in directories too large to list are left out (HEAD).
        """
        list_sizes = getattr(self.target, "list_sizes", None)
        if list_sizes is None or self.unavailable is not None:
            return {}
        by_dir: dict[str, list[str]] = {}
        for key in keys:
            by_dir.setdefault(key.rpartition("/")[0] + "/", []).append(key)
        out: dict[str, int | None] = {}
        futures = {d: self.pool.submit(list_sizes, d) for d in by_dir}
        for directory, future in futures.items():
            try:
                sizes = future.result()
            except TargetError:
                continue  # the per-file path reports (and classifies) target problems
            if sizes is None:
                continue
            for key in by_dir[directory]:
                out[key] = sizes.get(key)
        return out

    def _archive_one(self, key: str, fact: FileFact, open_file: Callable[[], int], fallback_path: str,
                     listed_size: int | None | Literal[False] = False) -> ArchivedFile:
        ahead = self._take_ahead(key)
        if self.unavailable is not None:  # no file is opened for a target known to be down
            if ahead is not None:
                _discard(ahead)
            return ArchivedFile(error=self.unavailable)
        hashed: HashedFile | None = None
        try:
            # Submitted before this job, so already running or done: waiting cannot deadlock.
            hashed = ahead.result() if ahead is not None else None
            fd = hashed.fd if hashed is not None else open_file()
        except FileSkipped as exc:
            return ArchivedFile(skipped=exc)
        except OSError as exc:
            return ArchivedFile(error=exc)  # a local read problem: this file only
        except CancelledError:  # the session is closing (interrupted)
            return ArchivedFile(error=self.unavailable or TargetUnavailable("archive interrupted"))
        reported = 0

        def advance(n: int) -> None:
            nonlocal reported
            reported += n
            if self.progress is not None:
                self.progress.advance(n)

        try:
            result = archive_open_file(self.target, key, fd, fact, fallback_path=fallback_path, progress=advance,
                                       listed_size=listed_size, hashed=hashed, dirs=self.dir_meta.get(key))
        except FileChanged as exc:
            result = ArchivedFile(changed=str(exc))
        except FileSkipped as exc:
            result = ArchivedFile(skipped=exc)
        except (TargetError, OSError) as exc:
            result = ArchivedFile(error=self._classify(exc))
        except ValueError as exc:  # a key the target cannot hold (a reserved suffix): this file only
            result = ArchivedFile(error=JanitorError(f"not archived: {exc}", code="E_KEY_REJECTED"))
        finally:
            os.close(fd)
        if result.error is None:
            with self._lock:
                self._failures_in_a_row = 0
        if self.progress is not None:
            self.progress.file_done(max(fact.size - reported, 0) if result.error is None else -reported)
        return result

    def _classify(self, exc: BaseException) -> BaseException:
        """The file's own error, or TargetUnavailable when the target is the problem."""
        from ..targets.base import KeyRejected

        if not isinstance(exc, TargetError) or isinstance(exc, VerifyFailed | KeyRejected):
            return exc
        with self._lock:
            if self.unavailable is not None:
                return self.unavailable
            self._failures_in_a_row += 1
            try:
                self.target.check()
            except TargetError as down:
                self.unavailable = TargetUnavailable(str(down))
                return self.unavailable
            if self._failures_in_a_row >= _FAILURES_BEFORE_STOP:
                self.unavailable = TargetUnavailable(
                    f"{exc} ({self._failures_in_a_row} uploads failed in a row; stopping this policy)"
                )
                return self.unavailable
        return exc

    def close(self) -> None:
        # Files not hashed yet will not be: a target that failed its check (or Ctrl-C) must
        # not wait for them to be read. The hashing task skips cancelled futures.
        for ahead in self._ahead.values():
            ahead.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for ahead in self._ahead.values():  # hashed ahead but never claimed by an upload
            _discard(ahead)
        self._ahead.clear()
        if self.progress is not None:
            self.progress.close()


class ArchiveOptions(SoftDeleteOptions):
    """archive's keys (trash_dir and retain for `then: soft-delete`)."""

    target: str | None = None  # a name under `targets:`
    then: Then | None = None  # what becomes of the local file once archived (THEN_VALUES)
    verify: VerifyMode | None = None  # overrides the target's for this policy
    bwlimit: Rate | None = None  # overrides the target's for this policy


@register
class ArchiveAction(Action):
    name = "archive"
    Options = ArchiveOptions
    done_event = "file_archived"

    def __init__(self, then: str | None = None) -> None:
        # `then` given here wins over the policy's: a quota archives evicted files and must
        # always remove them (its own `then` is "archive").
        self.then_override = then
        self.target: ArchiveTarget | None = None
        self.session: ArchiveSession | None = None
        self._results: dict[str, ArchivedFile] = {}

    # -- policy checks ------------------------------------------------------------------

    @classmethod
    def check_policy(cls, policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
        problems = super().check_policy(policy, target_names)
        problems.extend(check_archive_keys(policy, target_names))
        options = ArchiveOptions.of(policy)
        if options.then in (None, "delete", "keep") and {"trash_dir", "retain"} & options.model_fields_set:
            for key in sorted({"trash_dir", "retain"} & options.model_fields_set):
                problems.append((key, "only applies with then: soft-delete"))
        return problems

    @classmethod
    def disposal(cls, policy: Policy) -> Disposal | None:
        return DISPOSAL_OF_THEN[ArchiveOptions.of(policy).then or "delete"]

    def then_of(self, policy: Policy) -> str:
        return self.then_override or ArchiveOptions.of(policy).then or "delete"

    # -- execution ----------------------------------------------------------------------

    def _target(self, ctx: ExecContext) -> ArchiveTarget:
        if self.target is None:
            from ..targets import target_for

            name = ArchiveOptions.of(ctx.policy).target
            assert name is not None  # check_policy guarantees it
            self.target = target_for(ctx.config, name, ctx.policy)
        return self.target

    def before_run(self, policy: Policy, config: Config, ctx: ExecContext) -> None:
        # then: soft-delete keeps a local copy in the trash; `retain` bounds how long
        from .softdelete import purge_expired

        purge_expired(policy, ctx)

    def journal_fields(self, item: PlannedAction, ctx: ExecContext) -> dict[str, Any]:
        target = self._target(ctx)
        fields: dict[str, Any] = {
            "target": target.spec.name,
            "object_key": target.key_for(item.policy, item.fact.relpath),
        }
        if self.then_of(ctx.policy) == "soft-delete":
            fields["trash_path"] = ctx.trash.destination(ctx.trash_slot(item), item.policy, item.fact.relpath)
        return fields

    def before_actions(self, items: list[PlannedAction], ctx: ExecContext) -> None:
        from ..progress import make_progress

        target = self._target(ctx)
        workers = ctx.config.settings.archive_workers
        session = ArchiveSession(target, workers)
        dirs = ctx.dirs
        if dirs is not None:
            session.hash_ahead([
                (target.key_for(item.policy, item.fact.relpath),
                 functools.partial(open_candidate, dirs, item.fact.relpath, policy_su(ctx.policy)))
                for item in items[:workers]
            ])
        try:
            session.check_target()
        except BaseException:
            session.close()
            raise
        session.progress = make_progress(
            f"archive {ctx.policy.name} -> {target.spec.name}",
            len(items), sum(i.fact.size for i in items), ctx.events,
        )
        self.session = session

    def after_actions(self, ctx: ExecContext) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def prepare_batch(self, items: list[PlannedAction], fields: list[dict[str, Any]], ctx: ExecContext) -> None:
        assert self.session is not None and ctx.dirs is not None
        dirs = ctx.dirs
        jobs = [
            (f["object_key"], item.fact, functools.partial(open_candidate, dirs, item.fact.relpath, policy_su(ctx.policy)),
             item.path)
            for item, f in zip(items, fields, strict=True)
        ]
        cache: dict[str, str | None] = {}
        self.session.dir_meta = {}
        for item, f in zip(items, fields, strict=True):
            meta = dir_chain_meta(dirs.root_fd, item.fact.relpath.rpartition("/")[0], cache)
            if meta:
                self.session.dir_meta[f["object_key"]] = meta
        results = self.session.archive_many(jobs)
        self._results = {item.fact.relpath: r for item, r in zip(items, results, strict=True)}
        record_final_keys(ctx, items, results)

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> Done:
        result = self._results.pop(item.fact.relpath, None)
        if result is None:
            raise JanitorError(f"{item.path}: no upload result", code="E_INTERNAL")
        return finish_archived(result, self.then_of(ctx.policy), item, dir_fd, name, fields, ctx)

    @classmethod
    def reconcile_with(cls, entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
        return reconcile_archive(entry, config)


def record_final_keys(ctx: ExecContext, items: list[PlannedAction], results: list[ArchivedFile]) -> None:
    """Before any `then:` runs, write each verified object's key and digest into its
    journal row: a run killed between a delete and the end of the batch leaves rows that
    reconcile can check against exactly that object (the key may be a versioned one)."""
    rows = [
        (r.obj.key, r.obj.sha256, ctx.run_id, os.fsencode(item.path))
        for item, r in zip(items, results, strict=True)
        if r.obj is not None and r.error is None and r.changed is None
    ]
    if rows:
        ctx.catalog._write(  # noqa: SLF001 (one narrow update; the catalog has no public one)
            "UPDATE journal SET object_key=?, sha256=? WHERE run_id=? AND path=? AND state='planned'", rows
        )


def check_archive_keys(policy: Policy, target_names: set[str]) -> list[tuple[str, str]]:
    """Problems with `target` and `then` (shared with quota's then: archive)."""
    problems: list[tuple[str, str]] = []
    defined = ", ".join(sorted(target_names)) or "none"
    options = ArchiveOptions.of(policy)
    if options.target is None:
        problems.append(("target", f"is required for archive (defined targets: {defined})"))
    elif options.target not in target_names:
        problems.append(("target", f"no target named {options.target!r} (defined targets: {defined})"))
    if policy.action == "archive" and options.then not in (None, *THEN_VALUES):
        problems.append(("then", f"{options.then!r} is not one of {', '.join(THEN_VALUES)}"))
    return problems


def finish_archived(
    result: ArchivedFile, then: str, item: PlannedAction, dir_fd: int, name: str,
    fields: dict[str, Any], ctx: ExecContext,
) -> Done:
    """Apply `then` to a file whose upload verified; raise (file stays) for anything else."""
    if result.skipped is not None:
        raise result.skipped
    if result.error is not None:
        raise result.error
    if result.changed is not None:
        raise FileChanged(result.changed)
    obj = result.obj
    assert obj is not None
    if then == "delete":
        os.unlink(name, dir_fd=dir_fd)
    elif then == "soft-delete":
        move_into_trash(dir_fd, name, fields["trash_path"], ctx.trash_slot(item), item.fact.size)
    return Done(columns={
        "object_key": obj.key,
        "sha256": obj.sha256,
        "version_id": obj.version_id,
        "detail": "uploaded" if result.uploaded else "already archived",
    })


# one client per target while a run settles many rows (creating a boto3 client is slow)
_reconcile_targets: dict[tuple[int, str], ArchiveTarget] = {}


def reconcile_archive(entry: JournalEntry, config: Config | None) -> tuple[str, str | None]:
    """Settle a row a killed archive run left `planned`. A missing local file is only
    recorded as done when a verified object backs it."""
    from ..reconcile import reconcile_trash_move, same_file

    target: ArchiveTarget | None = None
    if config is not None and entry.target and entry.object_key:
        try:
            key = (id(config), entry.target)
            target = _reconcile_targets.get(key)
            if target is None:
                from ..targets import target_for

                target = _reconcile_targets[key] = target_for(config, entry.target)
            discard = getattr(target, "discard_partial", None)
            if discard is not None:
                discard(entry.object_key)  # an upload killed half way: its temp files
        except (TargetError, OSError, ValueError, KeyError):
            pass  # cleanup only; the checks below decide the row
    if entry.trash_path:
        return reconcile_trash_move(entry)
    if same_file(entry.path, entry):
        return "aborted", "interrupted before the local file was removed; it is still in place"
    if target is None or not entry.object_key:
        return "failed", "the file is gone and the archive could not be checked"
    try:
        obj = target.stat(entry.object_key)
    except TargetError as exc:
        return "failed", f"the file is gone and the archive could not be checked: {exc}"
    if (obj is not None and obj.size == entry.size and obj.sha256
            and (entry.sha256 is None or obj.sha256.lower() == entry.sha256.lower())):
        return "done", f"interrupted after archiving; object {entry.object_key} verified"
    return "failed", f"the file is gone and no verified object {entry.object_key} exists"
