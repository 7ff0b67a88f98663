"""Walk a policy path with directory file descriptors and produce compact file facts.

Symlinks are never followed (neither to files nor to directories), other filesystems
are not entered when `one_filesystem` is set, and directories are opened relative to
their parent's descriptor with O_NOFOLLOW, so a directory swapped for a symlink during
the walk cannot lead the walk outside the policy path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileFact(NamedTuple):
    """What the walk learned about one regular file; small, because there may be millions.

    A named tuple, not a frozen dataclass: as immutable and hashable, and made in a quarter
    of a microsecond instead of 2.5 (a frozen dataclass sets each field through
    object.__setattr__), which a plan of 1,000,000 files pays once per file it shows or runs.
    """

    relpath: str
    dev: int
    ino: int
    size: int
    mtime: float
    atime: float
    ctime: float
    mode: int
    uid: int
    gid: int
    # allocated 512-byte blocks and link count: what quota counts (each inode once, by blocks)
    blocks: int = 0
    nlink: int = 1

    def age_ts(self, age_by: str) -> float:
        return self.mtime if age_by == "mtime" else self.atime if age_by == "atime" else self.ctime


@dataclass(slots=True, frozen=True)
class WalkNote:
    """Something the walk passed over and the plan should mention."""

    relpath: str
    reason: str
    code: str


# Devices, modes and owners repeat across a tree: share one int object per value instead
# of one per file (28 bytes each, hundreds of thousands of files).
_shared: dict[int, int] = {}


def fact_from_stat(relpath: str, st: os.stat_result) -> FileFact:
    share = _shared.setdefault
    return FileFact(
        relpath, share(st.st_dev, st.st_dev), st.st_ino, st.st_size, st.st_mtime, st.st_atime, st.st_ctime,
        share(st.st_mode, st.st_mode), share(st.st_uid, st.st_uid), share(st.st_gid, st.st_gid),
        st.st_blocks, share(st.st_nlink, st.st_nlink),
    )


# Descriptors the walk keeps open at most (besides the root's): deeper levels are closed and
# reopened from the nearest kept ancestor, one component at a time, with a dev/ino check.
# A chain of directories deeper than the fd limit then costs reopening, never EMFILE.
KEEP_OPEN = 64

# errors of one directory that must not fail the policy: no descriptor left (the process's or
# the system's), a name too long for the kernel, a directory that went away or is refused
_DIR_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENAMETOOLONG, errno.ENOMEM})


class _Level:
    __slots__ = ("fd", "reldir", "pending", "ident")

    def __init__(self, fd: int, reldir: str, pending: list[str], ident: tuple[int, int]) -> None:
        self.fd = fd  # -1 while closed to bound the descriptors held
        self.reldir = reldir
        self.pending = pending
        self.ident = ident


def walk_files(
    root: str,
    *,
    one_filesystem: bool = True,
    prune_dir: Callable[[str], bool] | None = None,
    skip_inodes: frozenset[tuple[int, int]] = frozenset(),
    on_note: Callable[[WalkNote], None] | None = None,
    keep_open: int = KEEP_OPEN,
    root_entries: Callable[[str, bool], bool] | None = None,
    walked_dirs: set[tuple[int, int]] | None = None,
) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """Yield (relpath, kind, stat) for every entry below root that is a file or a symlink.

    kind is "file" (stat given) or "symlink" (stat None; never followed). Directories in
    `skip_inodes` (janitor's own trash and state directories) are not entered.

    At most `keep_open` directory descriptors are held, however deep the tree: a deeper
    level's descriptor is closed and, when the walk comes back to it, reopened from the
    nearest open ancestor by name (O_NOFOLLOW) and confirmed by dev/ino; a directory that
    changed meanwhile is passed over with a note. A directory that cannot be opened or read
    (no descriptor left, EACCES, a name too long) is passed over with a note: one directory
    never fails the policy.

    `root_entries(name, is_dir)` picks the entries directly in the root that are walked or
    yielded (the planner's walk in two processes gives each its share); `walked_dirs`, when
    given, is filled with the (dev, ino) of every directory entered.
    """

    def note(rel: str, reason: str, code: str = "unreadable") -> None:
        if on_note is not None:
            on_note(WalkNote(rel, reason, code))

    def reopen(levels: list[_Level], index: int) -> int:
        """Reopen levels[index] from its nearest open ancestor; -1 (noted) when it changed."""
        base = index - 1
        while levels[base].fd == -1:
            base -= 1
        fd = levels[base].fd
        try:
            for k in range(base + 1, index + 1):
                name = levels[k].reldir[len(levels[k - 1].reldir):].rstrip("/")
                child = os.open(name, O_DIR, dir_fd=fd)
                if fd != levels[base].fd:
                    os.close(fd)
                fd = child
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != levels[k].ident:
                    os.close(fd)
                    note(levels[index].reldir, "changed during the walk (renamed or replaced); not walked further",
                         "changed")
                    return -1
        except OSError as exc:
            if fd != levels[base].fd:
                os.close(fd)
            note(levels[index].reldir, f"cannot enter directory again: {exc.strerror}")
            return -1
        return fd

    root_fd = os.open(root, O_DIR)  # the policy path itself must not be a symlink either
    levels: list[_Level] = []
    try:
        root_st = os.fstat(root_fd)
        root_dev = root_st.st_dev
        # Depth-first; the levels on the way down keep their pending subdirectories.
        fd, reldir, ident = root_fd, "", (root_st.st_dev, root_st.st_ino)
        walked = walked_dirs if walked_dirs is not None else set()  # (dev, ino) of every directory entered
        walked.add(ident)
        while True:
            subdirs: list[str] = []
            picks = root_entries if fd == root_fd else None
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        name = entry.name
                        rel = reldir + name
                        try:
                            if picks is not None and not picks(name, entry.is_dir(follow_symlinks=False)):
                                continue
                            if entry.is_symlink():
                                yield rel, "symlink", None
                            elif entry.is_dir(follow_symlinks=False):
                                subdirs.append(name)
                            elif entry.is_file(follow_symlinks=False):
                                yield rel, "file", entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # vanished between readdir and stat: nothing to do
                        except OSError as exc:
                            if exc.errno not in _DIR_ERRNOS:
                                raise
                            note(rel, f"cannot look at it: {exc.strerror}")
            except OSError as exc:
                if fd == root_fd:
                    raise  # the policy path itself: the policy cannot run
                note(reldir, f"cannot read directory: {exc.strerror}")
            levels.append(_Level(fd, reldir, subdirs, ident))
            if sum(1 for level in levels if level.fd != -1) > keep_open + 1:
                # close the shallowest kept level below the root; it is reopened on the way back
                for level in levels[1:]:
                    if level.fd != -1:
                        os.close(level.fd)
                        level.fd = -1
                        break
            fd = -1
            while levels:
                top = levels[-1]
                if not top.pending:
                    levels.pop()
                    if top.fd not in (-1, root_fd):
                        os.close(top.fd)
                    continue
                if top.fd == -1:
                    top.fd = reopen(levels, len(levels) - 1)
                    if top.fd == -1:
                        top.pending.clear()
                        continue
                name = top.pending.pop()
                rel = top.reldir + name
                if prune_dir is not None and prune_dir(rel):
                    continue
                try:
                    child = os.open(name, O_DIR, dir_fd=top.fd)
                except OSError as exc:
                    note(rel + "/", f"cannot enter directory: {exc.strerror}")
                    continue
                st = os.fstat(child)
                if (st.st_dev, st.st_ino) in skip_inodes:
                    os.close(child)
                    continue
                if one_filesystem and st.st_dev != root_dev:
                    os.close(child)
                    note(rel + "/", "another filesystem (one_filesystem)", "other_fs")
                    continue
                if (st.st_dev, st.st_ino) in walked:
                    # a bind mount of a directory already walked: its files once, under the
                    # first path (a file with one link then has one row: quota counts it once)
                    os.close(child)
                    note(rel + "/", "the same directory as one already walked (a bind mount); walked once",
                         "walked_twice")
                    continue
                walked.add((st.st_dev, st.st_ino))
                fd, reldir, ident = child, rel + "/", (st.st_dev, st.st_ino)
                break
            if fd == -1:
                return
    finally:
        # on early exit (generator closed) close whatever is still open
        for level in levels:
            if level.fd not in (-1, root_fd):
                try:
                    os.close(level.fd)
                except OSError:
                    pass
        os.close(root_fd)
