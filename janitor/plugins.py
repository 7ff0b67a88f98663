"""Loads the plug-ins (the built-in actions and storage targets) once, for the front ends.

The engine looks actions up by name in the registry (janitor/actions/base.py) and never
imports an action module; the command line, the server and guard's fast path call `load()`
before reading policy files, so an action is one module here plus one line below.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: guard's fast path imports this module
if TYPE_CHECKING:
    from .config import Config


def load() -> None:
    """Register every built-in action. Idempotent: Python imports each module once."""
    # the order is the order `valid: ...` lists the actions in
    from .actions import delete, softdelete, truncate, archive, quota, warn  # noqa: F401, I001


def load_policy_files(path: str | None) -> Config:
    """The validating config loader, with the actions it checks each policy against: what
    a command that may or may not need the policy files is handed (guard)."""
    from .config import load_config

    load()
    return load_config(path)
