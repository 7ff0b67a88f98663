"""Which files a policy configuration is: one definition for the loader (janitor/config.py)
and for guard's cache of it (janitor/guardcache.py), which must agree on it.

Light on purpose (os only): guard's fast path imports it.
"""

from __future__ import annotations

import os

DEFAULT_CONFIG = "/etc/janitor/"


def config_path(path: str | os.PathLike[str] | None) -> str:
    """The configuration asked for: the option, else $JANITOR_CONFIG, else /etc/janitor/."""
    if path is None:
        return os.environ.get("JANITOR_CONFIG") or DEFAULT_CONFIG
    return os.fspath(path)


def policy_files(path: str) -> list[str]:
    """The file itself, or a directory's `*.yaml`/`*.yml` files (symlinks to them too) in
    name order, possibly none. FileNotFoundError when the path does not exist."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if _suffix(n) in (".yaml", ".yml"))
        return [f for f in (os.path.join(path, n) for n in names) if os.path.isfile(f)]
    if os.path.exists(path):
        return [path]
    raise FileNotFoundError(path)


def _suffix(name: str) -> str:
    """pathlib's suffix: the last dot's part, but not a leading dot's (`.yaml` has none)."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""
