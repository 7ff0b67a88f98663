"""Glob patterns as the policy format defines them, compiled to one regex per policy.

Patterns match the path relative to the policy's `path`, `/` separated:
`*` and `?` never cross `/`, `[...]` is a character class, `**/` is zero or more
directories, a trailing `/**` is everything below, and `**` alone is everything.
`*` does match names that start with a dot: a janitor must see hidden files too.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable


def glob_to_regex(pattern: str) -> str:
    """Translate one glob into a regex source (without anchors)."""
    if pattern.startswith("/"):
        raise ValueError(f"{pattern!r}: globs are relative to the policy path; drop the leading '/'")
    return _translate(pattern)


def _translate(pattern: str, shown: str | None = None) -> str:
    """`shown`: the pattern as the operator wrote it, for messages."""
    if "\0" in pattern:
        raise ValueError(f"{shown or pattern!r}: a glob cannot contain a NUL byte")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                at_segment_start = i == 0 or pattern[i - 1] == "/"
                rest = pattern[i + 2 :]
                if at_segment_start and rest.startswith("/"):
                    out.append("(?:[^/]*/)*")  # zero or more whole directories
                    i += 3
                    continue
                if at_segment_start and rest == "":
                    out.append(".*")  # trailing ** : everything below
                    i += 2
                    continue
                out.append("[^/]*")  # 'a**b' is just a star
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                body = body.replace("\\", "\\\\")
                _check_class(shown or pattern, pattern[i : j + 1], body)
                # a class must not match '/', or it would cross directories
                out.append(f"(?!/)[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _check_class(pattern: str, written: str, body: str) -> None:
    """A class the regex engine refuses (`[z-a]`) is the operator's mistake: say which."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" for [[:alpha:]]: still valid
            re.compile(f"[{body}]")
    except re.error as exc:
        raise ValueError(f"{pattern!r}: {written} is not a valid character class ({exc.msg})") from None


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation for all patterns; None when there are none."""
    patterns = list(patterns)
    sources = [glob_to_regex(p) for p in patterns]
    if not sources:
        return None
    return _compile(sources, patterns)


def _compile(sources: list[str], patterns: list[str]) -> re.Pattern[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile("(?:" + "|".join(sources) + r")\Z", re.DOTALL)
    except re.error as exc:  # each class was checked; kept so no glob can end in a traceback
        raise ValueError(f"{', '.join(map(repr, patterns))}: not a valid glob ({exc.msg})") from None


def prunable_dir_regex(excludes: Iterable[str]) -> re.Pattern[str] | None:
    """Directories that an exclude like `keep/**` removes whole, so the walk need not enter them.

    Matched against a directory's relative path. Only patterns ending in `/**` qualify.
    """
    prunable = [p[:-3] for p in excludes if p.endswith("/**") and len(p) > 3]
    sources = [glob_to_regex(p) for p in prunable]
    if not sources:
        return None
    return _compile(sources, prunable)


def path_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """For restore and history selectors: the same glob rules applied to absolute paths.

    An absolute pattern must match the whole path (`/srv/out/*.mp4` does not reach into
    subdirectories); a relative one matches the path's tail at a directory boundary, so
    `render_1017.mp4` or `*/render_1017.mp4` find the file wherever it was.
    """
    from .errors import UsageError

    patterns = list(patterns)
    sources = []
    for pattern in patterns:
        try:
            if pattern.startswith("/"):
                sources.append("/" + _translate(pattern.lstrip("/"), pattern))
            else:
                sources.append("(?:.*/)?" + glob_to_regex(pattern))
        except ValueError as exc:
            # from the command line: a usage error (exit 2), never an internal error
            raise UsageError(f"{exc}") from None
    if not sources:
        return lambda path: True
    try:
        regex = _compile(sources, patterns)
    except ValueError as exc:
        raise UsageError(f"{exc}") from None
    return lambda path: regex.match(path) is not None
