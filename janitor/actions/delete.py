"""delete: unlink each selected file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import Action

if TYPE_CHECKING:
    from ..execute import ExecContext
    from ..plan import PlannedAction


class DeleteAction(Action):
    name = "delete"
    done_event = "file_deleted"
    parallel_apply = True

    def apply(self, item: PlannedAction, dir_fd: int, name: str, fields: dict[str, Any], ctx: ExecContext) -> dict[str, Any]:
        os.unlink(name, dir_fd=dir_fd)
        return {}
