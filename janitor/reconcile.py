"""Settling a journal row a killed run left `planned`, by where the file is now.

Shared by the runner and the actions' `reconcile` (the action contract's default), so it
sits below both: it needs only the catalog's row and the safe path helpers.
"""

from __future__ import annotations

from .catalog import JournalEntry
from .safepath import stat_below
from .trash import reconcile_trash_move as _trash_reconcile


def same_file(path: str, entry: JournalEntry) -> bool:
    """Whether `path` (below the row's root) is still the very file the row recorded."""
    # reached from the policy root by descriptor: no symlink on the way, no PATH_MAX limit
    st = stat_below(entry.root, path)
    return st is not None and (st.st_dev, st.st_ino) == (entry.dev, entry.ino)


def reconcile_by_presence(entry: JournalEntry) -> tuple[str, str | None]:
    """For actions whose only effect is the file going away (delete)."""
    if same_file(entry.path, entry):
        return "aborted", "interrupted before acting; the file is still in place"
    return "done", "interrupted after acting; recorded now"


def reconcile_trash_move(entry: JournalEntry) -> tuple[str, str | None]:
    """For moves into the trash: rename (atomic) or verified copy then unlink (janitor/trash.py)."""
    return _trash_reconcile(entry)
