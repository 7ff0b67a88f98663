"""Reaching a file below a policy path without ever leaving it.

Every change janitor makes below a policy path goes through directories opened from the
policy root, one component at a time, with O_NOFOLLOW: a directory that someone swapped
for a symlink (to /etc, say) makes the operation fail instead of following it (the
systemd-tmpfiles CVE-2018-6954 pattern). Paths recorded in the catalog are checked to lie
below their policy path before they are used at all.
"""

from __future__ import annotations

import contextlib
import os

from .errors import JanitorError
from .scan import O_DIR


def relative_parts(path: str, root: str) -> list[str]:
    """`path` below `root` as components; E_UNSAFE for anything that is not strictly below."""
    path_n, root_n = os.path.normpath(path), os.path.normpath(root)
    inside = path_n.startswith(root_n.rstrip("/") + "/") and path_n != root_n
    if not os.path.isabs(path) or ".." in path.split("/") or not inside:
        raise JanitorError(f"{path}: recorded path is outside policy path {root}; not touching it", code="E_UNSAFE")
    return os.path.relpath(path_n, root_n).split("/")


def open_dirs_below(root_fd: int, parts: list[str], *, create: bool = False, dev: int | None = None) -> int:
    """Open the directories `parts` below root_fd (creating them 0755 if asked), no symlinks;
    with `dev`, every one of them must be on that filesystem. A new descriptor either way."""
    if not parts:
        return os.dup(root_fd)
    fd = root_fd
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise JanitorError(f"refusing path component {part!r} in {'/'.join(parts)!r}", code="E_UNSAFE")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, O_DIR, dir_fd=fd)  # a symlinked directory fails here
            if fd != root_fd:
                os.close(fd)
            fd = child
            if dev is not None and os.fstat(fd).st_dev != dev:
                raise JanitorError(f"{'/'.join(parts)} is on another filesystem now", code="E_UNSAFE")
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd


def open_parent_below(root: str, path: str, *, create: bool = False) -> tuple[int, str]:
    """(directory fd, name) for `path`, reached from `root` without following symlinks."""
    parts = relative_parts(path, root)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return open_dirs_below(root_fd, parts[:-1], create=create), parts[-1]
    finally:
        os.close(root_fd)


def lexists_at(dir_fd: int, name: str) -> bool:
    """Whether `name` exists in the directory (a dangling symlink counts)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
