"""What `janitor guard -c CFG` needs of a policy file it has validated before, kept so that
the next start of a service does not load the validating config loader again.

`guard` runs in ExecStartPre= before a service on every start. Reading its thresholds from
the policy files takes pydantic, yaml and every action's options model: ~150 ms, six times
the interpreter's own start-up. What it needs of them is small (`guard_max_used`, each
enabled policy's path and `when_disk_above`, the log settings), so after a full load it
keeps that here, and the next `guard -c` with the same policy files reads it back.

Sound because the key is the policy files' bytes, not their times: the list of files
(for a directory, the same `*.yaml`/`*.yml` selection the loader makes), the SHA-256 of each,
and the value of every environment variable their text can expand (`$VAR`, `${VAR}`,
`~` through HOME), and janitor's version. Text with `~user` (a password-database lookup)
or with a YAML escape that spells `$` or `~` (`"\x24{VAR}"`) is never kept. A file
edited, added, removed or renamed, or a variable changed, is a miss: the full loader runs,
with its full error reporting. The checks the loader makes against the filesystem (a policy
path that has become an alias of /etc) are made again by every `plan` and `run`, the
commands that act; guard only reads usage.

Kept where only janitor's user can write: root's in /run/janitor-guard (a tmpfs, emptied at
boot), another user's in $XDG_RUNTIME_DIR/janitor-guard. The directory must be that user's
own with no access for anyone else, and each file that user's own, regular and not writable
by others, or the entry is not read (and nothing is written there). $JANITOR_GUARD_CACHE
names another directory, or `off`.

This module imports only os, json, hashlib and re: it is on guard's fast path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat

from . import __version__
from .policyfiles import policy_files

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~4 ms of start-up
if TYPE_CHECKING:
    from typing import Any

    # (entry file name, what the entry must have been made from)
    Key = tuple[str, dict[str, Any]]

# the layout of an entry and what it holds: bumped whenever either changes
FORMAT = 1
_MAX_ENTRY = 1 << 20
_VAR = re.compile(rb"\$(?:\{([^}]*)\}|(\w+))")
_TILDE_USER = re.compile(rb"~[^/\s\"',\]}]")  # ~user: a password-database lookup, not kept
# a YAML escape that spells `$` or `~` in a double-quoted string, which the scan of the
# bytes for variables would not see: files with one are not kept
_ESCAPED = re.compile(rb"\\(?:x24|u0024|U00000024|x7[eE]|u007[eE]|U0000007[eE])")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def cache_dir() -> str | None:
    override = os.environ.get("JANITOR_GUARD_CACHE")
    if override:
        return None if override == "off" else override
    if os.geteuid() == 0:
        return "/run/janitor-guard"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "janitor-guard") if runtime else None


def _key(config_path: str) -> Key | None:
    """(entry name, what the entry must have been made from); None when the policy files
    cannot be kept (unreadable, `~user`)."""
    where = os.path.abspath(config_path)
    try:
        files = policy_files(where)
        digests = []
        variables: set[str] = set()
        tilde = False
        for name in files:
            with open(name, "rb") as f:
                data = f.read()
            if _TILDE_USER.search(data) or _ESCAPED.search(data):
                return None
            tilde = tilde or b"~" in data
            variables.update((m.group(1) or m.group(2)).decode("utf-8", "replace") for m in _VAR.finditer(data))
            digests.append([name, hashlib.sha256(data).hexdigest()])
    except (OSError, ValueError):
        return None
    if tilde:
        variables.add("HOME")
    made_from = {"format": FORMAT, "janitor": __version__, "config": where, "files": digests,
                 "env": {name: os.environ.get(name) for name in sorted(variables)}}
    return hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".json", made_from


def _private(st: os.stat_result, kind: int, no_access: int) -> bool:
    """Ours (our euid), of this kind, and without these permission bits for anyone else."""
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.geteuid() and not st.st_mode & no_access


def lookup(config_path: str) -> tuple[dict[str, Any] | None, Key | None]:
    """(the view kept for these policy files or None, the key to keep one under or None).

    The key is made before the loader reads the files: a file edited meanwhile then makes
    the entry's key differ from the new bytes, never the other way round."""
    key = _key(config_path) if cache_dir() else None
    return (None if key is None else _read(key)), key


def _read(key: Key) -> dict[str, Any] | None:
    where = cache_dir()
    if where is None:
        return None
    name, made_from = key
    try:
        dir_fd = os.open(where, _O_DIR)
    except OSError:
        return None
    try:
        if not _private(os.fstat(dir_fd), stat.S_IFDIR, 0o077):
            return None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not _private(st, stat.S_IFREG, 0o022) or st.st_size > _MAX_ENTRY:
                return None
            entry = json.loads(os.read(fd, _MAX_ENTRY))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None
    finally:
        os.close(dir_fd)
    if not isinstance(entry, dict) or entry.get("made_from") != made_from:
        return None
    view = entry.get("view")
    return view if isinstance(view, dict) else None


def store(key: Key, view: dict[str, Any]) -> None:
    """Keep the view under the key `lookup` gave, if the files still have that key (an edit
    while the loader read them: not kept, as it could be a view of either version). Best
    effort: a directory that cannot be made or is not private, or a failed write, only
    means the next guard loads in full."""
    where = cache_dir()
    if where is None or _key(key[1]["config"]) != key:
        return
    name, made_from = key
    try:
        try:
            os.mkdir(where, 0o700)
        except FileExistsError:
            pass
        dir_fd = os.open(where, _O_DIR)
    except OSError:
        return
    tmp = f".{name}.{os.getpid()}"
    try:
        if not _private(os.fstat(dir_fd), stat.S_IFDIR, 0o077):
            return
        data = json.dumps({"made_from": made_from, "view": view}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
    finally:
        os.close(dir_fd)
