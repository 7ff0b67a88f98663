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
import hashlib
import os
from dataclasses import dataclass

from .catalog import JournalEntry
from .errors import FileChanged, JanitorError
from .safepath import lexists_at, open_parent_below, relative_parts
from .state import ensure_private_dir
from .targets.base import file_sha256

MOUNT_TRASH_NAME = ".janitor-trash"
_CHUNK = 1 << 20


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


class TrashBin:
    """Where files go for one run, cached per (configured trash, device)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._slots: dict[tuple[str, int], TrashSlot] = {}

    def slot(self, configured: str, policy_root: str, dev: int) -> TrashSlot:
        key = (configured, dev)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._choose(configured, policy_root, dev)
            self._slots[key] = slot
        return slot

    @staticmethod
    def _choose(configured: str, policy_root: str, dev: int) -> TrashSlot:
        ensure_private_dir(configured)
        if os.stat(configured).st_dev == dev:
            return TrashSlot(configured, True)
        try:
            candidate = os.path.join(mount_point(policy_root), MOUNT_TRASH_NAME)
            ensure_private_dir(candidate)
            if os.stat(candidate).st_dev == dev:
                return TrashSlot(candidate, True)
        except (OSError, JanitorError):
            pass  # read-only mount root, or not ours: fall back to copying
        return TrashSlot(configured, False)

    def destination(self, slot: TrashSlot, policy: str, relpath: str) -> str:
        return os.path.join(slot.root, self.run_id, policy, relpath)


def _makedirs_private(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)


def copy_verified(src_fd: int, dest: str, size: int) -> str:
    """Copy an open file to `dest` (fsynced), verify the copy, return its sha256.

    Raises FileChanged when the source changed size while copying; the partial copy is
    removed on any failure so nothing half-written is left behind.
    """
    tmp = dest + ".janitor-partial"
    digest = hashlib.sha256()
    try:
        with open(tmp, "xb") as out:
            os.lseek(src_fd, 0, os.SEEK_SET)
            while chunk := os.read(src_fd, _CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if os.fstat(src_fd).st_size != size or os.stat(tmp).st_size != size:
            raise FileChanged(f"{dest}: source changed while copying")
        if file_sha256(tmp, chunk=_CHUNK) != digest.hexdigest():
            raise JanitorError(f"{dest}: copy does not match the original", code="E_VERIFY_FAILED")
        os.rename(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return digest.hexdigest()


def move_into_trash(dir_fd: int, name: str, dest: str, slot: TrashSlot, size: int) -> None:
    """Move the file `name` (relative to dir_fd) to `dest`. Never follows symlinks, and never
    replaces a file already in the trash (rename would, silently)."""
    _makedirs_private(os.path.dirname(dest))
    if os.path.lexists(dest):
        raise JanitorError(f"{dest} is already in the trash; not replacing it", code="E_EXISTS")
    if slot.same_fs:
        try:
            os.rename(name, dest, src_dir_fd=dir_fd)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        copy_verified(fd, dest, size)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(dest, st.st_mode & 0o7777)
        # the original goes only once the verified copy is in place
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns):
            os.unlink(dest)
            raise FileChanged(f"{name}: changed while copying to the trash; left in place")
        os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(fd)


def restore_from_trash(entry: JournalEntry, *, force: bool = False) -> str:
    """Put one trashed file back at its original path with its mtime, mode and owner.

    Returns the restored path. Raises JanitorError when the destination exists (and not
    force), the trashed copy is gone, or the recorded path points outside its policy path.

    The destination is reached the way the executor reaches files: from the policy root
    through directory descriptors opened with O_NOFOLLOW, so a directory below the root
    that a user swapped for a symlink (to /etc, say) makes the restore fail instead of
    writing there (the systemd-tmpfiles CVE-2018-6954 pattern).
    """
    dest = entry.path
    src = entry.trash_path
    if src is None:
        raise JanitorError(f"{dest}: no trash location recorded")
    relative_parts(dest, entry.root)  # E_UNSAFE before anything else when it is not below
    if not os.path.lexists(src):
        raise JanitorError(f"{dest}: the trashed copy {src} is missing", code="E_MISSING")
    try:
        parent, name = open_parent_below(entry.root, dest, create=True)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise JanitorError(f"{dest}: a directory on the way is now a symlink or not a directory; "
                               "not restoring", code="E_UNSAFE") from None
        raise
    try:
        if lexists_at(parent, name) and not force:
            raise JanitorError(f"{dest}: exists; not overwriting it (use --force)", code="E_EXISTS")
        try:
            _place(src, None, parent, name, force, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            tmp = f".{name}.janitor-restore"
            try:
                # /proc/self/fd/N/NAME resolves through the verified descriptor, no path walk
                copy_verified(fd, f"/proc/self/fd/{parent}/{tmp}", os.fstat(fd).st_size)
                try:
                    _place(tmp, parent, parent, name, force, dest)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=parent)
                    raise
            finally:
                os.close(fd)
            os.unlink(src)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, entry.mode & 0o7777)
            os.utime(fd, (entry.atime, entry.mtime))
        finally:
            os.close(fd)
    finally:
        os.close(parent)
    _prune_empty_dirs(os.path.dirname(src), _trash_levels(entry))
    return dest


def _place(src: str, src_dir_fd: int | None, dir_fd: int, name: str, force: bool, dest: str) -> None:
    """Move src to dir_fd/name: replacing it with force, else only if absent (link + unlink is
    an atomic "create if absent"; a plain rename would silently replace a file made meanwhile)."""
    if force:
        os.rename(src, name, src_dir_fd=src_dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        os.link(src, name, src_dir_fd=src_dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise JanitorError(f"{dest}: exists; not overwriting it (use --force)", code="E_EXISTS") from None
    os.unlink(src, dir_fd=src_dir_fd)


def purge_from_trash(entry: JournalEntry) -> None:
    """Delete a trashed file for good (a missing one counts as purged)."""
    if entry.trash_path is None:
        return
    try:
        os.unlink(entry.trash_path)
    except FileNotFoundError:
        pass
    _prune_empty_dirs(os.path.dirname(entry.trash_path), _trash_levels(entry))


def _trash_levels(entry: JournalEntry) -> int:
    """Directories between a trashed file and its trash root: run id, policy, and its own."""
    return os.path.relpath(entry.path, entry.root).count("/") + 2


def _prune_empty_dirs(path: str, levels: int) -> None:
    """Remove now-empty directories upwards, never the trash root itself."""
    for _ in range(levels):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)



__all__ = [
    "TrashBin",
    "TrashSlot",
    "copy_verified",
    "move_into_trash",
    "mount_point",
    "purge_from_trash",
    "restore_from_trash",
]
