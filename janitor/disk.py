"""Filesystem usage as `df` reports it."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DiskUsage:
    path: str
    total: int
    used: int
    free: int  # available to unprivileged users, as df's "Avail"

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
