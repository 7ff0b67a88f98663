"""The plan: pure data saying what a run would do to which file and why.

`janitor plan` renders it; `janitor run` executes this same object, so the dry run and
the run cannot drift apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .disk import DiskUsage
from .facttable import ActionList
from .planitem import LazyReason as LazyReason  # re-exported: the rows a plan is made of
from .planitem import PlannedAction as PlannedAction


@dataclass(slots=True)
class Skip:
    policy: str
    path: str
    bytes: int
    code: str  # stable: open_for_write, locked, settle, keep_newest, symlink, changed, ...
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "path": self.path,
            "bytes": self.bytes,
            "code": self.code,
            "reason": self.reason,
        }


@dataclass
class PolicyPlan:
    name: str
    action: str
    root: str
    root_dev: int = 0
    root_ino: int = 0
    matched: int = 0
    matched_bytes: int = 0
    actions: list[PlannedAction] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked: str | None = None  # circuit breaker: not executed without --force
    inactive: str | None = None  # e.g. disk not above when_disk_above
    error: str | None = None  # e.g. path missing or unreadable
    disk: DiskUsage | None = None
    stop_at_pct: float | None = None  # executor stops once the filesystem is at or below this
    purges: int = 0  # trashed files older than `retain` that the run deletes for good
    # what becomes of each file acted on: "delete", "trash", "keep" (archive's then: keep),
    # or None when no file leaves (truncate, warn); janitor/actions/base.py
    disposal: str | None = None

    @property
    def bytes(self) -> int:
        actions = self.actions
        if isinstance(actions, ActionList):
            return actions.sizes_total()
        return sum(a.fact.size for a in actions)

    def to_dict(self, now: float, *, rows: bool = True) -> dict[str, Any]:
        """This policy's plan; `rows=False` leaves out the actions and skips (streamed apart)."""
        out = {
            "policy": self.name,
            "action": self.action,
            "path": self.root,
            "matched": self.matched,
            "matched_bytes": self.matched_bytes,
            "files": len(self.actions),
            "bytes": self.bytes,
            "trash_purges": self.purges,
            "disposal": self.disposal,
            "blocked": self.blocked,
            "inactive": self.inactive,
            "error": self.error,
            "notes": self.notes,
            "disk": None
            if self.disk is None
            else {
                "total": self.disk.total,
                "used": self.disk.used,
                "free": self.disk.free,
                "used_pct": round(self.disk.used_pct, 2),
            },
        }
        if rows:
            out["actions"] = [a.to_dict(now) for a in self.actions]
            out["skips"] = [s.to_dict() for s in self.skips]
        return out


@dataclass
class Plan:
    policies: list[PolicyPlan]
    created: float = field(default_factory=time.time)
    procfs_complete: bool = True

    @property
    def total_files(self) -> int:
        return sum(len(p.actions) for p in self.policies)

    @property
    def total_bytes(self) -> int:
        return sum(p.bytes for p in self.policies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "files": self.total_files,
            "bytes": self.total_bytes,
            "open_files_fully_checked": self.procfs_complete,
            "policies": [p.to_dict(self.created) for p in self.policies],
        }
