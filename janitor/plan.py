"""The plan: pure data saying what a run would do to which file and why.

`janitor plan` renders it; `janitor run` executes this same object, so the dry run and
the run cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .disk import DiskUsage
from .facttable import ActionList
from .scan import FileFact


class LazyReason:
    """A reason computed from the file when asked, instead of one string kept per file.

    Plans hold 100,000s of actions; the planner's own reason ("mtime age 9d2h > 7d") is
    the same function of each file, so one shared object replaces a string per action.
    """

    __slots__ = ("_text",)

    def __init__(self, text: Callable[[FileFact], str]) -> None:
        self._text = text

    def text(self, fact: FileFact) -> str:
        return self._text(fact)


class PlannedAction:
    """One file the run will act on, and why."""

    __slots__ = ("policy", "action", "root", "fact", "_reason", "detail")

    def __init__(self, policy: str, action: str, root: str, fact: FileFact, reason: str | LazyReason,
                 detail: dict[str, Any] | None = None) -> None:
        self.policy = policy
        self.action = action
        self.root = root  # the policy path (one shared string: plans can hold 100,000s of actions)
        self.fact = fact
        self._reason = reason
        self.detail = detail

    @property
    def why(self) -> str | LazyReason:
        """The reason as stored: a string, or the shared LazyReason that computes it."""
        return self._reason

    @property
    def reason(self) -> str:
        why = self._reason
        return why.text(self.fact) if isinstance(why, LazyReason) else why

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PlannedAction):
            return NotImplemented
        return ((self.policy, self.action, self.root, self.fact, self.reason, self.detail)
                == (other.policy, other.action, other.root, other.fact, other.reason, other.detail))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"PlannedAction(policy={self.policy!r}, action={self.action!r}, root={self.root!r}, "
                f"fact={self.fact!r}, reason={self.reason!r}, detail={self.detail!r})")

    @property
    def path(self) -> str:
        """Absolute path of the file."""
        return self.root + "/" + self.fact.relpath if self.root != "/" else "/" + self.fact.relpath

    def to_dict(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "action": self.action,
            "path": self.path,
            "bytes": self.fact.size,
            "age_seconds": round(now - self.fact.mtime, 3),
            "mtime": self.fact.mtime,
            "reason": self.reason,
        }
        if self.detail:
            out.update(self.detail)
        return out


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
