"""Which files are still being written: open for writing by some process, or locked.

Read once per run (and again just before a policy executes) from /proc: every
process's fds whose flags give write access, matched by device and inode, and
/proc/locks. Without root only our own user's processes are visible; `plan` says so.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

O_ACCMODE = 0o3


@dataclass
class OpenFiles:
    """(dev, ino) -> pids, for writers and for lock holders."""

    writers: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    non_append_writers: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    lockers: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    complete: bool = True  # False when some processes could not be inspected

    def busy_reason(self, dev: int, ino: int) -> tuple[str, str] | None:
        """(code, reason) when the file is open for writing or locked by another process."""
        key = (dev, ino)
        pids = self.writers.get(key)
        if pids:
            return "open_for_write", f"open for writing by {_describe_pids(pids)}"
        pids = self.lockers.get(key)
        if pids:
            return "locked", f"locked by {_describe_pids(pids)}"
        return None


def _describe_pids(pids: list[int]) -> str:
    parts = []
    for pid in sorted(set(pids))[:3]:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                parts.append(f"pid {pid} ({f.read().strip()})")
        except OSError:
            parts.append(f"pid {pid}")
    more = len(set(pids)) - 3
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _read_flags(pid: str, fd: str) -> int | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def scan_open_files(devices: set[int] | None = None) -> OpenFiles:
    """Scan /proc. `devices` limits the work to files on those filesystems."""
    writers: dict[tuple[int, int], list[int]] = defaultdict(list)
    non_append: dict[tuple[int, int], list[int]] = defaultdict(list)
    complete = True
    me = os.getpid()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return OpenFiles(complete=False)
    for pid in pids:
        if int(pid) == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            complete = False
            continue
        except OSError:
            continue  # process exited
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if devices is not None and st.st_dev not in devices:
                continue
            if (st.st_mode & 0o170000) != 0o100000:
                continue  # only regular files matter
            flags = _read_flags(pid, fd)
            if flags is None or (flags & O_ACCMODE) == os.O_RDONLY:
                continue
            key = (st.st_dev, st.st_ino)
            writers[key].append(int(pid))
            if not flags & os.O_APPEND:
                non_append[key].append(int(pid))
    return OpenFiles(dict(writers), dict(non_append), scan_locks(me), complete)


def scan_locks(exclude_pid: int | None = None) -> dict[tuple[int, int], list[int]]:
    """Parse /proc/locks: `1: POSIX ADVISORY WRITE 1234 08:01:5678 0 EOF`.

    Major and minor are hex, the inode decimal; `->` lines are waiters, not holders.
    """
    holders: dict[tuple[int, int], list[int]] = defaultdict(list)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return {}
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":
            continue
        try:
            pid = int(parts[4])
            major, minor, ino = parts[5].split(":")
            key = (os.makedev(int(major, 16), int(minor, 16)), int(ino))
        except ValueError:
            continue
        if pid != exclude_pid:
            holders[key].append(pid)
    return dict(holders)
