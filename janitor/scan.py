"""Walk a policy path with directory file descriptors and produce compact file facts.

Symlinks are never followed (neither to files nor to directories), other filesystems
are not entered when `one_filesystem` is set, and directories are opened relative to
their parent's descriptor with O_NOFOLLOW, so a directory swapped for a symlink during
the walk cannot lead the walk outside the policy path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True, frozen=True)
class FileFact:
    """What the walk learned about one regular file; small, because there may be millions."""

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


def walk_files(
    root: str,
    *,
    one_filesystem: bool = True,
    prune_dir: Callable[[str], bool] | None = None,
    skip_inodes: frozenset[tuple[int, int]] = frozenset(),
    on_note: Callable[[WalkNote], None] | None = None,
) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """Yield (relpath, kind, stat) for every entry below root that is a file or a symlink.

    kind is "file" (stat given) or "symlink" (stat None; never followed). Directories in
    `skip_inodes` (janitor's own trash and state directories) are not entered.
    """
    root_fd = os.open(root, O_DIR)  # the policy path itself must not be a symlink either
    try:
        root_dev = os.fstat(root_fd).st_dev
        # Depth-first with one open descriptor per level: a wide tree must not exhaust fds.
        stack: list[tuple[int, str, list[str]]] = []
        fd, reldir = root_fd, ""
        while True:
            subdirs: list[str] = []
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = entry.name
                    rel = reldir + name
                    try:
                        if entry.is_symlink():
                            yield rel, "symlink", None
                        elif entry.is_dir(follow_symlinks=False):
                            subdirs.append(name)
                        elif entry.is_file(follow_symlinks=False):
                            yield rel, "file", entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # vanished between readdir and stat: nothing to do
            pending = subdirs
            stack.append((fd, reldir, pending))
            fd = -1
            while stack:
                parent_fd, parent_rel, pending = stack[-1]
                if not pending:
                    stack.pop()
                    if parent_fd != root_fd:
                        os.close(parent_fd)
                    continue
                name = pending.pop()
                rel = parent_rel + name
                if prune_dir is not None and prune_dir(rel):
                    continue
                try:
                    child = os.open(name, O_DIR, dir_fd=parent_fd)
                except OSError as exc:
                    if on_note is not None:
                        on_note(WalkNote(rel + "/", f"cannot enter directory: {exc.strerror}", "unreadable"))
                    continue
                st = os.fstat(child)
                if (st.st_dev, st.st_ino) in skip_inodes:
                    os.close(child)
                    continue
                if one_filesystem and st.st_dev != root_dev:
                    os.close(child)
                    if on_note is not None:
                        on_note(WalkNote(rel + "/", "another filesystem (one_filesystem)", "other_fs"))
                    continue
                fd, reldir = child, rel + "/"
                break
            if fd == -1:
                return
    finally:
        # on early exit (generator closed) close whatever is still open
        for open_fd, _, _ in locals().get("stack", []):
            if open_fd != root_fd:
                try:
                    os.close(open_fd)
                except OSError:
                    pass
        os.close(root_fd)
