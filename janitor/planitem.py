"""One planned action: a file, the action and why (the rows a plan is made of).

Below the fact table that stores them in columns (janitor/facttable.py) and the plan that
holds those (janitor/plan.py, which re-exports both names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
