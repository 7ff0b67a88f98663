"""Filesystem usage as `df` reports it, and a mount's filesystem type.

Imported by `janitor guard`, which must start fast: nothing here may pull in more than
`os` (not even dataclasses, which costs ~13 ms of imports).
"""

from __future__ import annotations

import os


class DiskUsage:
    """One statvfs measurement; immutable by convention."""

    __slots__ = ("path", "total", "used", "free")

    def __init__(self, path: str, total: int, used: int, free: int) -> None:
        self.path = path
        self.total = total
        self.used = used
        self.free = free  # available to unprivileged users, as df's "Avail"

    def __repr__(self) -> str:
        return f"DiskUsage(path={self.path!r}, total={self.total}, used={self.used}, free={self.free})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskUsage):
            return NotImplemented
        return (self.path, self.total, self.used, self.free) == (other.path, other.total, other.used, other.free)

    def __hash__(self) -> int:
        return hash((self.path, self.total, self.used, self.free))

    @property
    def used_pct(self) -> float:
        # df's Use%: used / (used + avail), so reserved blocks count as unusable
        denominator = self.used + self.free
        return 100.0 * self.used / denominator if denominator else 0.0

    def bytes_to_free_for(self, threshold_pct: float) -> int:
        """How many bytes must go for used_pct to be at or below threshold_pct."""
        denominator = self.used + self.free
        target_used = threshold_pct / 100.0 * denominator
        return max(0, int(self.used - target_used) + 1)


def disk_usage(path: str) -> DiskUsage:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return DiskUsage(path, total, used, free)


def fstype(dev: int) -> str:
    """The type (ext4, xfs, tmpfs...) of the mounted filesystem with this device number,
    from /proc/self/mountinfo; "" when it is not found."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 2 and fields[2] == want and right:
                    return right.split()[0]
    except OSError:
        pass
    return ""
