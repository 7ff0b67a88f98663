"""Holds: files no policy touches until a given time (issue 12, defect 4).

A restored file keeps the mtime it had, so without a hold the next scheduled run would take
it again. `janitor restore` therefore holds every file it puts back (default
`settings.restore_hold`, 30 days; `restore --hold DURATION`, `--no-hold`), and an operator
holds or releases files by glob with `janitor hold GLOB... [--for DURATION]` /
`janitor unhold GLOB...`. The plan lists a held file as skipped (code `held`) with the
reason and the time the hold ends; every action honours it, quota included (a held file is
neither evicted nor counted as evictable).

A hold is a row in the catalog: an absolute path or an absolute glob (the policy glob rules:
`*` stays within one directory, `**` crosses them), which must lie under a policy path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UsageError
from .globs import path_matcher
from .units import format_duration

if TYPE_CHECKING:
    from .catalog import Catalog, Hold, JournalEntry
    from .config import Config

_WILDCARDS = ("*", "?", "[")


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in _WILDCARDS)


@dataclass(frozen=True)
class HeldPaths:
    """The holds in force, as one test of an absolute path."""

    holds: tuple[Hold, ...]

    def for_root(self, root: str) -> Callable[[str], Hold | None] | None:
        """A test of a path under `root` (None when no hold can select anything there)."""
        base = os.fsencode(root.rstrip("/") + "/")
        relevant = [h for h in self.holds
                    if h.pattern_prefix().startswith(base) or base.startswith(h.pattern_prefix())]
        if not relevant:
            return None
        exact = {h.pattern: h for h in relevant if not h.is_glob}
        globs = [(path_matcher([h.pattern]), h) for h in relevant if h.is_glob]

        def held(path: str) -> Hold | None:
            found = exact.get(path)
            if found is not None:
                return found
            for matches, hold in globs:
                if matches(path):
                    return hold
            return None

        return held


NO_HOLDS = HeldPaths(())


def holds_in_force(state_dir: str, now: float | None = None) -> HeldPaths:
    """The holds recorded in the catalog under state_dir (none before the first run)."""
    from .catalog import existing_catalog

    with existing_catalog(state_dir) as catalog:
        return NO_HOLDS if catalog is None else HeldPaths(tuple(catalog.holds(now)))


def skip_reason(hold: Hold) -> str:
    return f"on hold until {hold.until_text()} ({hold.reason})"


def _checked_pattern(config: Config, pattern: str) -> str:
    """An absolute, normalised pattern under a policy path, or a UsageError saying why not."""
    if not pattern.startswith("/"):
        raise UsageError(f"{pattern!r}: give an absolute path or glob (e.g. /srv/out/**/*.mp4)")
    parts = pattern.split("/")
    if any(p in (".", "..") for p in parts):
        raise UsageError(f"{pattern!r}: '.' and '..' are not allowed in a hold")
    normal = "/" + "/".join(p for p in parts if p)
    literal = normal
    for c in _WILDCARDS:
        literal = literal.split(c, 1)[0]
    for policy in config.policies:
        root = policy.path.rstrip("/")
        if literal == root or literal.startswith(root + "/"):
            return normal
    roots = ", ".join(sorted({p.path for p in config.policies})) or "(no policies)"
    raise UsageError(f"{pattern!r} is not under any policy path ({roots})")


def add_holds(config: Config, catalog: Catalog, patterns: Sequence[str], duration: float,
              reason: str = "held by janitor hold") -> list[Hold]:
    """Hold each pattern for `duration` seconds from now (all checked before any is written)."""
    if duration <= 0:
        raise UsageError("--for: a hold must last longer than 0s")
    checked = [_checked_pattern(config, p) for p in patterns]
    until = time.time() + duration
    return [catalog.add_hold(p, until, reason, is_glob=is_glob(p)) for p in checked]


def remove_holds(catalog: Catalog, patterns: Sequence[str]) -> list[Hold]:
    """Release the holds whose pattern is one of `patterns`, or whose path one of them selects."""
    wanted = set(patterns)
    absolute = [p for p in patterns if p.startswith("/")]
    matches = path_matcher(absolute) if absolute else (lambda _path: False)
    gone = [h for h in catalog.holds() if h.pattern in wanted or (not h.is_glob and matches(h.pattern))]
    catalog.remove_holds(h.id for h in gone)
    return gone


def hold_restored(catalog: Catalog, entries: Iterable[JournalEntry], duration: float | None) -> int:
    """After a restore: hold each file put back (None or 0: no hold). Returns how many."""
    if not duration:
        return 0
    until = time.time() + duration
    count = 0
    for entry in entries:
        catalog.add_hold(entry.path, until, f"restored {time.strftime('%Y-%m-%d')}, hold {format_duration(duration)}")
        count += 1
    return count
