"""The trash: soft-deleted files wait here, restorable byte-for-byte, until purged.

A file goes to a trash on its own filesystem whenever one can be had, so that moving it
in and out is one atomic rename (the comment on `trash` in pipx's paths.py makes the same
point): first the configured trash (`trash_dir` or `<state_dir>/trash`) if it is on the
same filesystem, else `<mount point>/.janitor-trash` (as the freedesktop trash does with
`$topdir/.Trash-$uid`). Only when neither is possible is the file copied to the configured
trash, fsynced and verified before the original is unlinked.

Layout: `<trash root>/<run id>/<policy>/<path relative to the policy path>`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from .asowner import Credentials, credentials_for_dir, refuse_foreign_owner, run_as, writers_of
from .catalog import JournalEntry
from .errors import FileChanged, JanitorError
from .logcut import check_room
from .safepath import (
    O_CANDIDATE,
    Expected,
    copy_bounded,
    create_scratch,
    lexists_at,
    mismatch,
    open_candidate,
    open_dirs_below,
    relative_parts,
    rename_noreplace,
    sha256_fd,
    stat_below,
)
from .scan import O_DIR
from .state import ensure_private_dir

MOUNT_TRASH_NAME = ".janitor-trash"
# Half-made copies live in this directory of a trash root (run ids never start with a dot),
# under unguessable names ending in PARTIAL_SUFFIX; reconcile empties it.
SCRATCH_DIR = ".partial"
PARTIAL_SUFFIX = ".janitor-partial"
RESTORE_SUFFIX = ".janitor-restore"


def mount_point(path: str) -> str:
    """The mount point of the filesystem holding `path`."""
    path = os.path.realpath(path)
    dev = os.lstat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.lstat(parent).st_dev != dev:
            return path
        path = parent
    return "/"


@dataclass(frozen=True)
class TrashSlot:
    root: str
    same_fs: bool
    # Descriptors of the verified trash root ("") and of directories below it, kept for the
    # run (TrashBin.close): one verification per run, not one walk per file.
    fds: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def dir_fd(self, dirs: list[str]) -> int:
        """The directory `dirs` below this trash root (created 0700), borrowed: not to close."""
        key = "/".join(dirs)
        fd = self.fds.get(key)
        if fd is None:
            root = self.fds.get("")
            if root is None:
                root = self.fds[""] = open_trash_root(self.root)
            fd = root if not dirs else open_dirs_below(root, dirs, create=True, mode=0o700)
            self.fds[key] = fd
        return fd

    def trim(self, keep: int = 256) -> None:
        """Close cached directories beyond `keep` (not the root)."""
        if len(self.fds) > keep:
            for key in [k for k in self.fds if k]:
                os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class TrashBin:
    """Where files go for one run, cached per (configured trash, device).

    `on_refused(message)` hears once per mount why its `.janitor-trash` was not used (a user
    made it, a symlink, the wrong mode): files are then copied to the configured trash.
    """

    def __init__(self, run_id: str, on_refused: Callable[[str], None] | None = None,
                 state_dir: str | None = None) -> None:
        self.run_id = run_id
        self.on_refused = on_refused
        # where the (dev, ino) of every mount trash root janitor uses is recorded, so that
        # walks recognise it by identity even if it were renamed (known_trash_roots)
        self.state_dir = state_dir
        self._slots: dict[tuple[str, int], TrashSlot] = {}

    def slot(self, configured: str, policy_root: str, dev: int) -> TrashSlot:
        key = (configured, dev)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._choose(configured, policy_root, dev)
            self._slots[key] = slot
        return slot

    def _choose(self, configured: str, policy_root: str, dev: int) -> TrashSlot:
        ensure_private_dir(configured)
        if os.stat(configured).st_dev == dev:
            return TrashSlot(configured, True)
        try:
            top = mount_point(policy_root)
            top_st = os.lstat(top)
            problem = _foreign_writable(top_st)
            if problem is not None:
                # someone else could rename a trash there away (or plant one first)
                raise JanitorError(f"{top} {problem}; janitor keeps no trash there", code="E_UNSAFE")
            candidate = os.path.join(top, MOUNT_TRASH_NAME)
            ensure_private_dir(candidate)
            st = os.lstat(candidate)
            if st.st_dev == dev:
                if self.state_dir is not None:
                    remember_trash_root(self.state_dir, (st.st_dev, st.st_ino))
                return TrashSlot(candidate, True)
        except JanitorError as exc:
            # not janitor's: never used, never walked as trash; say so once
            if self.on_refused is not None:
                self.on_refused(f"{exc}; soft-deleted files on that filesystem are copied to {configured}")
        except OSError:
            pass  # read-only mount root: fall back to copying
        return TrashSlot(configured, False)

    def close(self) -> None:
        for slot in self._slots.values():
            slot.close()

    def destination(self, slot: TrashSlot, policy: str, relpath: str) -> str:
        return os.path.join(slot.root, self.run_id, policy, relpath)


def _foreign_writable(st: os.stat_result) -> str | None:
    """Why a directory is no place for a trash root, or None.

    Only root (or janitor's own uid) may be able to rename or remove a name in it: a
    directory writable by another account is refused, and so is a sticky one owned by
    another account (the sticky bit does not stop a directory's owner renaming entries).
    """
    who = writers_of(st)
    if who is None:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_mode & stat.S_ISVTX and st.st_uid in (0, os.geteuid()):
        return None  # sticky and root's: others may add names, never rename ours
    if st.st_mode & stat.S_ISVTX:
        return f"belongs to uid {st.st_uid} (mode {mode:o}): its owner could rename a trash there away"
    return f"is writable by {who} (mode {mode:o}, not sticky)"


TRASH_ROOTS_FILE = "trash-roots"


def _read_trash_roots(state_dir: str) -> set[tuple[int, int]]:
    try:
        fd = os.open(os.path.join(state_dir, TRASH_ROOTS_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK)
    except OSError:
        return set()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_nlink != 1:
            return set()  # not the file janitor wrote: trusted for nothing
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    out: set[tuple[int, int]] = set()
    for line in data.decode("ascii", "replace").splitlines():
        fields = line.split()
        if len(fields) == 2 and all(f.isdigit() for f in fields):
            out.add((int(fields[0]), int(fields[1])))
    return out


def known_trash_roots(state_dir: str) -> frozenset[tuple[int, int]]:
    """(dev, ino) of every mount trash root janitor has used (recorded in state_dir).

    Walks skip these by identity, whatever their name is now: a trash root renamed (by
    root, or before janitor refused mount roots others can write) is never walked as
    policy files.
    """
    return frozenset(_read_trash_roots(state_dir))


def remember_trash_root(state_dir: str, ident: tuple[int, int]) -> None:
    """Record a trash root's (dev, ino) in `<state_dir>/trash-roots` (state_dir is root 0700)."""
    known = _read_trash_roots(state_dir)
    if ident in known:
        return
    path = os.path.join(state_dir, TRASH_ROOTS_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise JanitorError(f"{path} is not janitor's own file; not recording trash roots in it", code="E_UNSAFE")
        os.write(fd, f"{ident[0]} {ident[1]}\n".encode("ascii"))
    finally:
        os.close(fd)


def open_trash_root(path: str) -> int:
    """Open a trash root and confirm janitor made it; a new descriptor.

    A trash root is a real directory (not a symlink), owned by janitor's uid and writable by
    nobody else (janitor creates it 0700). Anything else (a `.janitor-trash` a user made or
    swapped in on a mount whose root they can write) is refused with the reason and never
    walked as trash: everything below the root is then reached through this descriptor.
    """
    try:
        fd = os.open(path, O_DIR)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise JanitorError(f"trash {path} is a symlink or not a directory; janitor did not create it, "
                               "not using it", code="E_UNSAFE") from None
        raise
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to janitor"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if problem is not None:
        os.close(fd)
        raise JanitorError(f"trash {path} {problem}; janitor did not create it, not using it", code="E_UNSAFE")
    return fd


def own_dir_identity(path: str) -> tuple[int, int] | None:
    """(dev, ino) of `path` when it is a directory janitor could have made (a real directory,
    ours, writable by nobody else); None otherwise. A `.janitor-trash` a user made is not
    janitor's: it is walked like any directory, never skipped as trash."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return st.st_dev, st.st_ino


def _trash_location(entry: JournalEntry) -> tuple[str, list[str]]:
    """(trash root, components below it) of a journal row's trashed copy.

    The recorded trash path is `<root>/<run id>/<policy>/<path below the policy path>`; a row
    whose trash path does not end that way is refused rather than guessed at.
    """
    assert entry.trash_path is not None
    parts = [entry.run_id, entry.policy, *relative_parts(entry.path, entry.root)]
    suffix = "/" + "/".join(parts)
    trash_path = os.path.normpath(entry.trash_path)
    if not trash_path.endswith(suffix) or len(trash_path) == len(suffix):
        raise JanitorError(f"{entry.path}: recorded trash location {entry.trash_path} does not match its journal "
                           "row; not touching it", code="E_UNSAFE")
    return trash_path[: -len(suffix)], parts


def _prune_below(root_fd: int, dirs: list[str]) -> None:
    """Remove now-empty directories `dirs` (a chain below the trash root), deepest first."""
    for depth in range(len(dirs), 0, -1):
        try:
            parent = open_dirs_below(root_fd, dirs[: depth - 1])
        except OSError:
            return
        try:
            os.rmdir(dirs[depth - 1], dir_fd=parent)
        except OSError:
            return
        finally:
            os.close(parent)


def _clear_scratch(root_fd: int) -> None:
    """Remove half-made copies in a trash root's scratch directory (only a dead run leaves any:
    runs hold the lock)."""
    try:
        scratch = os.open(SCRATCH_DIR, O_DIR, dir_fd=root_fd)
    except FileNotFoundError:
        return
    try:
        for name in os.listdir(scratch):
            if name.endswith(PARTIAL_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=scratch)
    finally:
        os.close(scratch)


def move_into_trash(dir_fd: int, name: str, dest: str, slot: TrashSlot, size: int,
                    expected: Expected | None = None) -> None:
    """Move the file `name` (relative to dir_fd) to `dest` in the trash.

    Never follows symlinks, and never replaces a file already in the trash. The trash root is
    confirmed to be janitor's and every directory below it is reached by descriptor. A
    same-filesystem move is one rename(RENAME_NOREPLACE), after which the moved inode is
    confirmed to be the planned one (else it is put back and the file skipped). A copy to
    another filesystem reads only a regular, singly-linked file opened O_NOFOLLOW|O_NONBLOCK
    and confirmed by fstat, at most `size` bytes, into a 0600 scratch file with an
    unguessable name; the copy gets its mode, owner and times through its descriptor once
    complete and verified, and the original is unlinked only after that.
    """
    if expected is None:  # callers that do not pass the plan's identity: what is there now
        pre = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        expected = Expected(pre.st_dev, pre.st_ino, pre.st_uid)
    slot.trim()
    parts = relative_parts(dest, slot.root)
    parent = slot.dir_fd(parts[:-1])
    leaf = parts[-1]
    if lexists_at(parent, leaf):
        raise JanitorError(f"{dest} is already in the trash; not replacing it", code="E_EXISTS")
    if slot.same_fs:
        try:
            rename_noreplace(dir_fd, name, parent, leaf)
        except FileExistsError:
            raise JanitorError(f"{dest} is already in the trash; not replacing it", code="E_EXISTS") from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            _confirm_moved(parent, leaf, dir_fd, name, expected)
            return
    _copy_into_trash(dir_fd, name, slot.dir_fd([SCRATCH_DIR]), parent, leaf, size,
                     Expected(expected.dev, expected.ino, expected.uid, max_links=1))


def _confirm_moved(parent: int, leaf: str, dir_fd: int, name: str, expected: Expected) -> None:
    """After a rename into the trash: was it the planned file? If not, put it back."""
    st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
    bad = mismatch(st, Expected(expected.dev, expected.ino, expected.uid))
    if bad is None:
        return
    # Swapped in between the check and the rename: it goes back where it was found.
    try:
        rename_noreplace(parent, leaf, dir_fd, name)
    except OSError:
        raise JanitorError(f"{name}: another file was swapped in as it was moved to the trash; it is kept there",
                           code="E_CHANGED") from None
    raise FileChanged(f"{bad[1]}; what was found there was put back")


def _copy_into_trash(dir_fd: int, name: str, scratch: int, parent: int, leaf: str, size: int,
                     expected: Expected) -> None:
    src_fd, st = open_candidate(dir_fd, name, expected)
    try:
        out, tmp = create_scratch(scratch, PARTIAL_SUFFIX)
        placed = False
        try:
            # copy_bounded writes every byte of the apparent size, holes too: a sparse file of
            # 40 GiB that occupies 8 KiB must not make root fill the trash's filesystem.
            check_room(out, size, f"the trashed copy of {name}", "the file was left where it is")
            digest = copy_bounded(src_fd, size, out, name)
            os.fsync(out)
            if sha256_fd(out, size) != digest:
                raise JanitorError(f"{name}: copy does not match the original", code="E_VERIFY_FAILED")
            if os.geteuid() == 0:
                os.fchown(out, st.st_uid, st.st_gid)
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            rename_noreplace(scratch, tmp, parent, leaf)
            placed = True
            # the original goes only once the verified copy is in place, and only if unchanged
            try:
                now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
                    st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                raise FileChanged(f"{name}: changed or moved while copying to the trash; left where it is")
            os.unlink(name, dir_fd=dir_fd)
            placed = False  # the copy is now the file: it stays
        except BaseException:
            # nothing half-done stays: not the scratch file, not a copy whose original remains
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leaf if placed else tmp, dir_fd=parent if placed else scratch)
            raise
        finally:
            os.close(out)
    finally:
        os.close(src_fd)


@dataclass(frozen=True)
class DirRecord:
    """Owner and mode of a directory between the policy path and a trashed file, recorded at
    soft-delete time so that a restore can recreate it as it was."""

    uid: int
    gid: int
    mode: int


def dir_records(detail: str | None) -> list[DirRecord] | None:
    """The directory records a soft-delete journal row carries in `detail`, if any."""
    if not detail:
        return None
    try:
        value = json.loads(detail)
        return [DirRecord(int(u), int(g), int(m)) for u, g, m in value["dirs"]]
    except (ValueError, TypeError, KeyError):
        return None


def encode_dir_records(records: list[DirRecord]) -> str:
    return json.dumps({"dirs": [[r.uid, r.gid, r.mode] for r in records]})


def restore_from_trash(entry: JournalEntry, *, force: bool = False, su: Credentials | None = None) -> str:
    """Put one trashed file back at its original path with its mtime, mode and owner.

    Returns the restored path. Raises JanitorError when the destination exists (and not
    force), the trashed copy is gone or not janitor's, or the recorded path points outside
    its policy path.

    The destination is reached from the policy root through directories opened with
    O_NOFOLLOW; a missing directory is recreated with the owner and mode recorded when the
    file was trashed, as the account that owns the directory it is created in
    (janitor/asowner.py). A trashed inode on the destination's filesystem gets its owner,
    mode and times through its descriptor and is then moved by one
    rename(RENAME_NOREPLACE) into the verified directory: no name is created before the
    file is complete. Across filesystems the copy is made as the directory's owner (or the
    policy's `su`), into a 0600 scratch file with an unguessable name, and put in place the
    same way.
    """
    dest = entry.path
    if entry.trash_path is None:
        raise JanitorError(f"{dest}: no trash location recorded")
    rel = relative_parts(dest, entry.root)  # E_UNSAFE before anything else when it is not below
    troot, tparts = _trash_location(entry)
    try:
        troot_fd = open_trash_root(troot)
    except FileNotFoundError:
        raise JanitorError(f"{dest}: the trash {troot} is missing", code="E_MISSING") from None
    try:
        try:
            tparent = open_dirs_below(troot_fd, tparts[:-1])
            src_fd = os.open(tparts[-1], O_CANDIDATE, dir_fd=tparent)
        except FileNotFoundError:
            raise JanitorError(f"{dest}: the trashed copy {entry.trash_path} is missing", code="E_MISSING") from None
        try:
            st = os.fstat(src_fd)
            # What janitor put there: a regular file with one link, the recorded size, owned by
            # the file's owner (a move, or a copy janitor gave that owner) or by janitor.
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != entry.size or (
                    st.st_uid not in (entry.uid, os.geteuid())):
                raise JanitorError(f"{dest}: the trashed copy is not the file janitor trashed; not restoring it",
                                   code="E_UNSAFE")
            dparent = _open_dest_parent(entry, rel, su)
            try:
                name = rel[-1]
                if lexists_at(dparent, name) and not force:
                    raise JanitorError(f"{dest}: exists; not overwriting it (use --force)", code="E_EXISTS")
                moved = False
                if os.fstat(dparent).st_dev == st.st_dev:
                    # janitor's own inode, finished before it gets a name in the user's directory
                    _set_final(src_fd, entry, as_root=os.geteuid() == 0)
                    try:
                        _put(tparent, tparts[-1], dparent, name, force, dest)
                        moved = True
                    except OSError as exc:
                        if exc.errno != errno.EXDEV:  # a bind mount of the same filesystem: copy
                            raise
                if not moved:
                    creds = credentials_for_dir(dparent, os.path.dirname(dest), su=su, policy=entry.policy)
                    refuse_foreign_owner(creds, entry.uid, dest)
                    run_as(creds, lambda: _copy_back(src_fd, entry, dparent, name, force))
                    os.unlink(tparts[-1], dir_fd=tparent)
            finally:
                os.close(dparent)
        finally:
            os.close(src_fd)
            os.close(tparent)
        _prune_below(troot_fd, tparts[:-1])
    finally:
        os.close(troot_fd)
    return dest


def _set_final(fd: int, entry: JournalEntry, *, as_root: bool) -> None:
    if as_root:
        os.fchown(fd, entry.uid, entry.gid)
    os.fchmod(fd, entry.mode & 0o7777)
    os.utime(fd, (entry.atime, entry.mtime))


def _put(src_dir: int, src: str, dst_dir: int, name: str, force: bool, dest: str) -> None:
    if force:
        os.rename(src, name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        return
    try:
        rename_noreplace(src_dir, src, dst_dir, name)
    except FileExistsError:
        raise JanitorError(f"{dest}: exists; not overwriting it (use --force)", code="E_EXISTS") from None


def _copy_back(src_fd: int, entry: JournalEntry, dparent: int, name: str, force: bool) -> None:
    """Run as whoever may create files in `dparent`: a complete copy, then its name."""
    out, tmp = create_scratch(dparent, RESTORE_SUFFIX)
    try:
        try:
            check_room(out, entry.size, f"the restored copy of {entry.path}", "the trashed copy was kept")
            copy_bounded(src_fd, entry.size, out, entry.path)
            os.fsync(out)
            _set_final(out, entry, as_root=os.geteuid() == 0)
        finally:
            os.close(out)
        _put(dparent, tmp, dparent, name, force, entry.path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dparent)
        raise


def _open_dest_parent(entry: JournalEntry, rel: list[str], su: Credentials | None) -> int:
    """The directory that will hold the restored file, reached from the policy root by
    descriptor; missing directories are recreated as recorded (owner, mode), as the owner."""
    records = dir_records(entry.detail)
    root_fd = os.open(entry.root, O_DIR)
    fd = root_fd
    try:
        for depth, part in enumerate(rel[:-1]):
            if part in ("", ".", ".."):
                raise JanitorError(f"refusing path component {part!r} in {entry.path!r}", code="E_UNSAFE")
            shown = os.path.join(entry.root, *rel[:depth])
            try:
                try:
                    child = os.open(part, O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    record = records[depth] if records is not None and depth < len(records) else None
                    _make_dir(fd, part, record, shown, su, entry.policy)
                    child = os.open(part, O_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise JanitorError(f"{entry.path}: a directory on the way is now a symlink or not a directory; "
                                       "not restoring", code="E_UNSAFE") from None
                raise
            if fd != root_fd:
                os.close(fd)
            fd = child
        return fd if fd != root_fd else os.dup(root_fd)
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    finally:
        os.close(root_fd)


def _make_dir(parent: int, name: str, record: DirRecord | None, shown: str, su: Credentials | None,
              policy: str) -> None:
    """Create a directory removed since the file was trashed, as the parent's owner (or `su`),
    with the recorded mode (and owner, where that is who creates it or janitor acts as root)."""
    creds = credentials_for_dir(parent, shown, su=su, policy=policy)

    def make() -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)  # narrow until its owner and mode are set
        fd = os.open(name, O_DIR, dir_fd=parent)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                return  # someone else made it meanwhile: theirs, left as it is
            if record is not None and os.geteuid() == 0:
                os.fchown(fd, record.uid, record.gid)
            os.fchmod(fd, stat.S_IMODE(record.mode) if record is not None else 0o755)
        finally:
            os.close(fd)

    run_as(creds, make)


def purge_from_trash(entry: JournalEntry) -> None:
    """Delete a trashed file for good (a missing one counts as purged), only through a trash
    root janitor made and descriptors below it: nothing outside the trash is reached."""
    if entry.trash_path is None:
        return
    root, parts = _trash_location(entry)
    try:
        root_fd = open_trash_root(root)
    except FileNotFoundError:
        return
    try:
        try:
            parent = open_dirs_below(root_fd, parts[:-1])
        except FileNotFoundError:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=parent)
        finally:
            os.close(parent)
        _prune_below(root_fd, parts[:-1])
    finally:
        os.close(root_fd)


def trashed_stat(entry: JournalEntry) -> os.stat_result | None:
    """The trashed copy's lstat through the verified trash root; None when it is not there."""
    root, parts = _trash_location(entry)
    try:
        root_fd = open_trash_root(root)
    except FileNotFoundError:
        return None
    try:
        parent = open_dirs_below(root_fd, parts[:-1])
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(root_fd)
    try:
        return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)


def reconcile_trash_move(entry: JournalEntry) -> tuple[str, str | None]:
    """Settle a move into the trash a killed run left `planned`: (state, note).

    Every lookup goes through descriptors (a path deeper than PATH_MAX or a hostile name
    settles this one row, as `failed` with the reason, never the whole reconcile).
    """
    try:
        return _reconcile_trash_move(entry)
    except (OSError, JanitorError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "failed", f"could not be settled: {reason}"


def _reconcile_trash_move(entry: JournalEntry) -> tuple[str, str | None]:
    in_trash = False
    if entry.trash_path:
        root, _ = _trash_location(entry)
        try:
            root_fd = open_trash_root(root)
        except FileNotFoundError:
            pass
        else:
            try:
                _clear_scratch(root_fd)
            finally:
                os.close(root_fd)
        in_trash = trashed_stat(entry) is not None
    here = stat_below(entry.root, entry.path)
    same = here is not None and (here.st_dev, here.st_ino) == (entry.dev, entry.ino)
    original_there = same or (here is not None and not in_trash)
    if original_there and in_trash:
        # a verified copy was made but the original not yet unlinked: keep the original
        purge_from_trash(entry)
        return "aborted", "interrupted between copy and unlink; the copy was removed, the file is in place"
    if in_trash:
        return "done", "interrupted after moving to the trash; recorded now"
    if original_there:
        return "aborted", "interrupted before acting; the file is still in place"
    return "failed", "neither the file nor its trash copy exists"


__all__ = [
    "TrashBin",
    "TrashSlot",
    "move_into_trash",
    "open_trash_root",
    "reconcile_trash_move",
    "mount_point",
    "purge_from_trash",
    "restore_from_trash",
]
