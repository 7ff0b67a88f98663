"""delete: unlink each selected file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import DONE, Action, Disposal, Done, register

if TYPE_CHECKING:
    from ..config import Policy
    from ..execute import ExecContext
    from ..plan import PlannedAction


@register
class DeleteAction(Action):
    name = "delete"
    done_event = "file_deleted"
    parallel_apply = True

    @classmethod
    def disposal(cls, policy: Policy) -> Disposal | None:
        return "delete"

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> Done:
        os.unlink(name, dir_fd=dir_fd)
        return DONE
