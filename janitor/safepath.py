"""Reaching a file below a policy path without ever leaving it.

Every change janitor makes below a policy path goes through directories opened from the
policy root, one component at a time, with O_NOFOLLOW: a directory that someone swapped
for a symlink (to /etc, say) makes the operation fail instead of following it (the
systemd-tmpfiles CVE-2018-6954 pattern). Paths recorded in the catalog are checked to lie
below their policy path before they are used at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass

from .errors import FileChanged, FileSkipped, JanitorError
from .scan import O_DIR

_CHUNK = 1 << 20


def relative_parts(path: str, root: str) -> list[str]:
    """`path` below `root` as components; E_UNSAFE for anything that is not strictly below."""
    path_n, root_n = os.path.normpath(path), os.path.normpath(root)
    inside = path_n.startswith(root_n.rstrip("/") + "/") and path_n != root_n
    if not os.path.isabs(path) or ".." in path.split("/") or not inside:
        raise JanitorError(f"{path}: recorded path is outside policy path {root}; not touching it", code="E_UNSAFE")
    return os.path.relpath(path_n, root_n).split("/")


def open_dirs_below(root_fd: int, parts: list[str], *, create: bool = False, dev: int | None = None,
                    mode: int = 0o755) -> int:
    """Open the directories `parts` below root_fd (creating them `mode` if asked), no symlinks;
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
                    os.mkdir(part, mode, dir_fd=fd)
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


def stat_below(root: str, path: str) -> os.stat_result | None:
    """lstat of `path` reached from `root` by descriptor (no symlink on the way, no PATH_MAX
    limit); None when it, or a directory on the way, is not there or is not a directory."""
    try:
        parent, name = open_parent_below(root, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)


def lexists_at(dir_fd: int, name: str) -> bool:
    """Whether `name` exists in the directory (a dangling symlink counts)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


# ---- opening and confirming one candidate file ------------------------------------------

# Every open of a file a user could have swapped: never through a symlink, never blocking
# on a FIFO (or a device's open), never becoming our controlling terminal.
O_CANDIDATE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class Expected:
    """What the plan saw of a file: the identity an open descriptor must still have."""

    dev: int
    ino: int
    uid: int | None = None
    max_links: int | None = None  # 1 for actions that copy the bytes


def mismatch(st: os.stat_result, expected: Expected) -> tuple[str, str] | None:
    """(skip code, reason) when `st` is not the planned regular file; None when it is."""
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file")
        return "changed", f"is now {kind}; not opened or read"
    if (st.st_dev, st.st_ino) != (expected.dev, expected.ino):
        return "changed", "replaced by another file since the plan"
    if expected.uid is not None and st.st_uid != expected.uid:
        return "changed", f"owner changed since the plan (uid {expected.uid} -> {st.st_uid})"
    if expected.max_links is not None and st.st_nlink > expected.max_links:
        return "hard_links", (f"has {st.st_nlink} hard links: its bytes are reachable through other names, "
                              "so janitor does not copy them")
    return None


def open_candidate(dir_fd: int, name: str, expected: Expected) -> tuple[int, os.stat_result]:
    """Open a planned file through its parent's descriptor and confirm it by fstat.

    The name is first looked at without opening (so a FIFO or device swapped in is never
    even opened), then opened with O_NOFOLLOW|O_NONBLOCK, and the descriptor is checked
    against what the plan saw: regular file, same dev/ino, owner, link count. A file that
    fails any check raises FileSkipped with the reason; the descriptor is the caller's.
    """
    try:
        pre = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise FileSkipped("no longer exists", skip_code="vanished") from None
    bad = mismatch(pre, expected)
    if bad is not None:
        raise FileSkipped(bad[1], skip_code=bad[0])
    try:
        fd = os.open(name, O_CANDIDATE, dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileSkipped("no longer exists", skip_code="vanished") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENODEV, errno.EMLINK):
            raise FileSkipped("is now a symlink or special file; not opened", skip_code="changed") from None
        raise
    try:
        st = os.fstat(fd)
        bad = mismatch(st, expected)
        if bad is not None:
            raise FileSkipped(bad[1], skip_code=bad[0])
        # A read must not be told "try again": clear O_NONBLOCK now that it is a regular file.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def copy_bounded(src_fd: int, size: int, dst_fd: int, display: str) -> str:
    """Copy exactly `size` bytes (what the plan saw) from src_fd to dst_fd; their sha256.

    Never reads past `size`: a file that keeps growing (or turned into /dev/zero) cannot
    keep janitor busy; one that is longer or shorter than planned raises FileChanged.
    """
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(src_fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            raise FileChanged(f"{display}: shrank while copying; left in place")
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst_fd, view):]
        offset += len(chunk)
    if os.pread(src_fd, 1, size) or os.fstat(src_fd).st_size != size:
        raise FileChanged(f"{display}: changed size while copying; left in place")
    return digest.hexdigest()


def sha256_fd(fd: int, size: int) -> str:
    """sha256 of the first `size` bytes of an open file (read back through the descriptor)."""
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def create_scratch(dir_fd: int, suffix: str) -> tuple[int, str]:
    """A new, empty 0600 file with an unguessable name in the directory; (fd, name).

    O_CREAT|O_EXCL|O_NOFOLLOW: an existing name (a planted symlink or hard link) fails
    instead of being opened; the fstat confirms it is ours (our uid, one link).
    """
    for _ in range(8):
        name = f".{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            os.close(fd)
            raise JanitorError(f"scratch file {name} is not what janitor created", code="E_UNSAFE")
        os.fchmod(fd, 0o600)  # whatever the umask said
        return fd, name
    raise JanitorError("could not create a scratch file with a fresh name", code="E_IO")


# ---- renaming without replacing ---------------------------------------------------------

_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """renameat2(RENAME_NOREPLACE): move a name, failing with FileExistsError if `dst` exists.

    A plain rename would silently replace a file created meanwhile. Where the kernel or the
    filesystem lacks renameat2, link + unlink gives the same "only if absent".
    """
    if _renameat2 is not None:
        if _renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), dst)
    os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    os.unlink(src, dir_fd=src_dir_fd)
