"""Which files are in use: written, locked, mapped, backing a loop device or swap, or read.

Read once per run while planning, and once more per filesystem when execution reaches the
first policy there that skips busy files (shared by the later ones), from /proc and /sys,
matched by device and inode:

* every process's fds whose flags give write access (`/proc/PID/fdinfo`), and /proc/locks;
* what fdinfo cannot show, because no fd is left once it is set up: shared writable
  mappings (`/proc/PID/maps`, `rw-s`: a process that mmapped a file and closed the fd
  still writes it), loop devices' backing files (the kernel holds the file, no process
  does) and active swap files (/proc/swaps). Each is "in use" whatever `settle` says;
* readers: fds open read-only and any other file mapping, for policies with
  `skip_open_readers` (a download in progress must not vanish under the web server).

Without root only our own user's processes are visible; `plan` says so.
"""

from __future__ import annotations

import fcntl
import glob
import os
import struct
from collections import defaultdict
from collections.abc import Container
from dataclasses import dataclass, field

O_ACCMODE = 0o3
LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s16s")  # struct loop_info64 (linux/loop.h)

Key = tuple[int, int]


@dataclass
class OpenFiles:
    """(dev, ino) -> who uses the file, one table per way of using it."""

    writers: dict[Key, list[int]] = field(default_factory=dict)
    non_append_writers: dict[Key, list[int]] = field(default_factory=dict)
    lockers: dict[Key, list[int]] = field(default_factory=dict)
    complete: bool = True  # False when some processes could not be inspected
    # pids with a MAP_SHARED writable mapping of the file
    mappers: dict[Key, list[int]] = field(default_factory=dict)
    # loop devices (/dev/loopN) the file backs
    loops: dict[Key, list[str]] = field(default_factory=dict)
    # the file is an active swap area (its name in /proc/swaps)
    swaps: dict[Key, str] = field(default_factory=dict)
    # pids that have the file open read-only or mapped without shared write access
    readers: dict[Key, list[int]] = field(default_factory=dict)
    _busy: dict[bool, frozenset[Key]] = field(default_factory=dict, repr=False, compare=False)

    def busy_reason(self, dev: int, ino: int, *, readers: bool = False) -> tuple[str, str] | None:
        """(code, reason) when the file is in use; readers count only when `readers` is set."""
        key = (dev, ino)
        pids = self.writers.get(key)
        if pids:
            return "open_for_write", f"open for writing by {describe_pids(pids)}"
        pids = self.mappers.get(key)
        if pids:
            return "mapped_for_write", f"mapped shared and writable by {describe_pids(pids)}"
        devices = self.loops.get(key)
        if devices:
            return "loop_device", f"backs loop device {', '.join(sorted(devices))}"
        if key in self.swaps:
            return "swap_file", "an active swap file"
        pids = self.lockers.get(key)
        if pids:
            return "locked", f"locked by {describe_pids(pids)}"
        if readers:
            pids = self.readers.get(key)
            if pids:
                return "open_for_read", f"open for reading by {describe_pids(pids)} (skip_open_readers)"
        return None

    def busy_keys(self, *, readers: bool = False) -> Container[Key]:
        """Every (dev, ino) busy_reason has a reason for: one set lookup in a hot loop."""
        keys = self._busy.get(readers)
        if keys is None:
            union = {*self.writers, *self.mappers, *self.loops, *self.swaps, *self.lockers}
            if readers:
                union.update(self.readers)
            keys = self._busy[readers] = frozenset(union)
        return keys


def describe_pids(pids: list[int]) -> str:
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
    """Scan /proc (and /sys for loop devices). `devices` limits the work to files on those filesystems."""
    writers: dict[Key, list[int]] = defaultdict(list)
    non_append: dict[Key, list[int]] = defaultdict(list)
    readers: dict[Key, list[int]] = defaultdict(list)
    mappers: dict[Key, list[int]] = defaultdict(list)
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
            key = (st.st_dev, st.st_ino)
            flags = _read_flags(pid, fd)
            if flags is None or (flags & O_ACCMODE) == os.O_RDONLY:
                readers[key].append(int(pid))
                continue
            writers[key].append(int(pid))
            if not flags & os.O_APPEND:
                non_append[key].append(int(pid))
        # A process whose maps root may not read (PID 1 of a container seen from inside, under
        # some ptrace policies) cannot be checked for mappings; that alone does not make the
        # scan "incomplete" in the not-root sense the plan warns about (docs/security.md).
        _scan_maps(pid, devices, mappers, readers)
    return OpenFiles(dict(writers), dict(non_append), scan_locks(me), complete, mappers=dict(mappers),
                     loops=scan_loop_backing(devices), swaps=scan_swaps(devices), readers=dict(readers))


def _scan_maps(pid: str, devices: set[int] | None, mappers: dict[Key, list[int]],
               readers: dict[Key, list[int]]) -> None:
    """File mappings of one process: `rw-s` ones write the file, the others read it.

    `7f..-7f.. rw-s 00000000 08:01 1234   /srv/x` (major:minor in hex, inode in decimal).
    """
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            data = f.read()
    except OSError:
        return  # exited, or not ours to read (see the caller)
    seen: set[tuple[Key, bool]] = set()
    for line in data.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[4] == b"0":
            continue  # anonymous memory
        try:
            major, minor = parts[3].split(b":")
            key = (os.makedev(int(major, 16), int(minor, 16)), int(parts[4]))
        except ValueError:
            continue
        if devices is not None and key[0] not in devices:
            continue
        perms = parts[1]
        writes = perms[1:2] == b"w" and perms[3:4] == b"s"
        if (key, writes) in seen:
            continue
        seen.add((key, writes))
        (mappers if writes else readers)[key].append(int(pid))


def scan_loop_backing(devices: set[int] | None = None) -> dict[Key, list[str]]:
    """(dev, ino) of every loop device's backing file -> the loop devices.

    The kernel keeps the backing file open itself: no process's fd shows it. The identity
    comes from LOOP_GET_STATUS64 (exact, even for a renamed or deleted file); where /dev
    has no node for the device, from the name in /sys/block/loopN/loop/backing_file.
    """
    out: dict[Key, list[str]] = defaultdict(list)
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        name = backing.split("/")[3]
        key = _loop_status(f"/dev/{name}")
        if key is None:
            try:
                with open(backing, encoding="utf-8", errors="surrogateescape") as f:
                    path = f.read().rstrip("\n")
                st = os.stat(path)
            except (OSError, ValueError):
                continue
            key = (st.st_dev, st.st_ino)
        if devices is None or key[0] in devices:
            out[key].append(f"/dev/{name}")
    return dict(out)


def _loop_status(device: str) -> Key | None:
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64.size))
    except OSError:
        return None  # ENXIO: no backing file (any more)
    finally:
        os.close(fd)
    lo_device, lo_inode = _LOOP_INFO64.unpack(info)[:2]
    return lo_device, lo_inode


def scan_swaps(devices: set[int] | None = None) -> dict[Key, str]:
    """(dev, ino) of every active swap file -> its name in /proc/swaps."""
    out: dict[Key, str] = {}
    try:
        with open("/proc/swaps", "rb") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[1] != b"file":
            continue
        # the kernel escapes space, tab, newline and backslash in octal (\040)
        name = parts[0].decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")
        try:
            st = os.stat(name)
        except (OSError, ValueError):
            continue
        if devices is None or st.st_dev in devices:
            out[(st.st_dev, st.st_ino)] = name
    return out


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
