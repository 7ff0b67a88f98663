"""Loads the plug-ins (the built-in actions and storage targets) once, for the front ends.

The engine looks actions up by name in the registry (janitor/actions/base.py) and never
imports an action module; the command line, the server and guard's fast path call `load()`
before reading policy files, so an action is one module here plus one line below.
"""

from __future__ import annotations


def load() -> None:
    """Register every built-in action. Idempotent: Python imports each module once."""
    # the order is the order `valid: ...` lists the actions in
    from .actions import delete, softdelete, truncate, archive, quota, warn  # noqa: F401, I001
