"""The state directory (catalog, lock, default trash) and the one-run-at-a-time lock."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable

from .asowner import register_private_fd, unregister_private_fd
from .errors import JanitorError, LockHeld


def ensure_private_dir(path: str) -> None:
    """Create `path` 0700 if missing; refuse a symlink or a directory others can write to.

    janitor runs as root over directories other users can write; a state or trash directory
    that someone else controls would let them steer what janitor moves where.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise JanitorError(f"cannot create {path}: {exc.strerror}", code="E_PERMISSION") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise JanitorError(f"{path} is a symlink; refusing to use it as a janitor directory", code="E_UNSAFE")
    if not stat.S_ISDIR(st.st_mode):
        raise JanitorError(f"{path} is not a directory", code="E_UNSAFE")
    if st.st_mode & 0o022:
        raise JanitorError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "refusing to use it as a janitor directory",
            code="E_UNSAFE",
        )
    if st.st_uid != os.geteuid():
        raise JanitorError(f"{path} belongs to uid {st.st_uid}, not to us", code="E_UNSAFE")


class RunLock:
    """An flock on `state_dir/lock`. The holder writes its pid so a second run can name it.

    `wait`: seconds to wait for a run that holds the lock to finish (`guard --clean` in
    ExecStartPre waits rather than fails); 0 fails at once. `on_wait(message)` is called
    once when waiting starts.
    """

    def __init__(self, state_dir: str, wait: float = 0.0, on_wait: Callable[[str], None] | None = None) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "lock")
        self.fd: int | None = None
        self.wait = wait
        self.on_wait = on_wait
        self._identity: tuple[tuple[int, int], tuple[int, int]] | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.wait
        pause = 0.02
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            left = deadline - time.monotonic()
            if left <= 0:
                os.close(fd)
                waited = f"; gave up after waiting {self.wait:g}s" if self.wait > 0 else ""
                raise LockHeld(f"another janitor run holds {self.path} (pid {holder}){waited}") from None
            if pause == 0.02 and self.on_wait is not None:
                self.on_wait(f"waiting up to {self.wait:g}s for the janitor run holding {self.path} (pid {holder})")
            # polling keeps this interruptible and bounded; a run takes seconds to minutes
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        # a child acting as a user's account (asowner.run_as) must not hold the run lock open
        register_private_fd(fd)
        lock_st = os.fstat(fd)
        try:
            dir_st = os.stat(self.state_dir, follow_symlinks=False)
            named = os.stat(self.path, follow_symlinks=False)
        except OSError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (lock_st.st_dev, lock_st.st_ino):
            # the lock file was removed or replaced between open and flock: a lock on it
            # would exclude nobody
            self.release()
            raise JanitorError(f"{self.path} changed while janitor took the lock; not running",
                               code="E_STATE_CHANGED")
        self._identity = ((dir_st.st_dev, dir_st.st_ino), (lock_st.st_dev, lock_st.st_ino))

    def verify(self) -> str | None:
        """None while the state directory and the lock file are still the ones locked.

        The lock only excludes runs that open the same inode: if the state directory is
        removed or replaced (or the lock file in it), the next run takes a lock of its own
        and the two would overlap. The holder notices here and stops.
        """
        if self._identity is None:
            return None
        dir_id, lock_id = self._identity
        try:
            # one lookup in the common case: `state_dir/lock` still names the inode locked, so
            # state_dir is still the directory holding it (only root could link it elsewhere)
            st = os.stat(self.path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == lock_id:
                return None
        except OSError:
            pass
        overlap = "; another run could take a lock of its own"
        try:
            dir_st = os.stat(self.state_dir, follow_symlinks=False)
        except OSError:
            return f"the state directory {self.state_dir} was removed during the run"
        if (dir_st.st_dev, dir_st.st_ino) != dir_id:
            return f"the state directory {self.state_dir} was replaced during the run{overlap}"
        try:
            lock_st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return f"the lock {self.path} was removed during the run{overlap}"
        if (lock_st.st_dev, lock_st.st_ino) != lock_id:
            return f"the lock {self.path} was replaced during the run{overlap}"
        return None

    def release(self) -> None:
        self._identity = None
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            unregister_private_fd(self.fd)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
