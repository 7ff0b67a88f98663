"""Registry of actions by the name used in policy files."""

from __future__ import annotations

from .archive import ArchiveAction
from .base import Action
from .delete import DeleteAction
from .quota import QuotaAction
from .softdelete import SoftDeleteAction
from .truncate import TruncateAction
from .warn import WarnAction

ACTIONS: dict[str, type[Action]] = {
    cls.name: cls for cls in (DeleteAction, SoftDeleteAction, TruncateAction, ArchiveAction, QuotaAction,
                                WarnAction)
}


def action_names() -> list[str]:
    return list(ACTIONS)


def get_action(name: str) -> Action:
    return ACTIONS[name]()
