"""One directory walked by two processes: this one and a forked one, each given half of the
root's subdirectories by name (the walk's stat of each file is most of a large plan's time,
and of a storage sample's).

The forked process walks the first half of the subdirectories in the order the root lists
them: a walk alone (janitor/scan.py, depth first, the last listed first) reaches those last,
so its result put after this process's own comes in the order a walk alone gives. Both walk
with `walk_files` (directory descriptors, O_NOFOLLOW, dev/ino checks); the forked one sends
the (dev, ino) of every directory it entered, then its result, down a private pipe. When the
two entered a directory in common (a bind mount across the halves, which a walk alone walks
once), or the forked one fails or sends less than it said, the caller walks alone instead.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from .scan import O_DIR

# a root with fewer subdirectories than this is walked alone (a fork costs more than it saves)
SPLIT_WALK_DIRS = 4

RootPick = Callable[[str, bool], bool]  # (name, is_dir) of an entry in the root -> walk it
T = TypeVar("T")
R = TypeVar("R")


def walk_in_two(root: str, ident: tuple[int, int], walk: Callable[[RootPick, set[tuple[int, int]]], T],
                send: Callable[[T, BinaryIO], None], receive: Callable[[T, BinaryIO], R]) -> tuple[T, R] | None:
    """`walk(pick, walked)` here, and in a forked process for the other half of the root's
    subdirectories; `send` writes the forked one's result down the pipe, `receive` reads it
    here once this process's own walk is done (it may add to that result). None when the
    walk was not split (few subdirectories, other threads, no fork) or the split failed:
    then the caller walks alone, and undoes whatever `receive` did to its own result.
    `ident`: the root's (dev, ino) as the caller found it; a root replaced since is not split."""
    theirs = _their_half(root, ident)
    if theirs is None:
        return None
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # never returns: its result down the pipe, or status 70
        status = 70
        try:
            os.close(read_fd)
            entered: set[tuple[int, int]] = set()
            result = walk(lambda name, is_dir: is_dir and name in theirs, entered)
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(entered, out, pickle.HIGHEST_PROTOCOL)
                send(result, out)
            status = 0
        except BaseException:  # noqa: BLE001 - said by the status and the closed pipe
            pass
        finally:
            os._exit(status)
    os.close(write_fd)
    received = False
    try:
        walked: set[tuple[int, int]] = set()
        mine = walk(lambda name, is_dir: not (is_dir and name in theirs), walked)
        with os.fdopen(read_fd, "rb") as src:
            try:
                if len(walked & pickle.load(src)) == 1:  # only the root in common, as it must be
                    got = receive(mine, src)
                    received = True
            except (EOFError, OSError, ValueError, OverflowError, pickle.UnpicklingError):
                pass
    finally:
        if not received:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # gone already
        os.waitpid(pid, 0)
    return (mine, got) if received else None


def _their_half(root: str, ident: tuple[int, int]) -> frozenset[str] | None:
    """The subdirectories of the root the forked process walks, or None to walk alone."""
    if threading.active_count() != 1:
        return None  # a fork copies no other thread: a lock one of them held would stay held
    try:
        fd = os.open(root, O_DIR)
    except OSError:
        return None  # the walk alone says why
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            return None
        with os.scandir(fd) as entries:
            names = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(names) < SPLIT_WALK_DIRS:
        return None
    return frozenset(names[: len(names) // 2])
