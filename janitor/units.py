"""Parsing and formatting of the value syntax in policy files: durations, sizes, percents.

Parsers raise ValueError with a message fit for the operator; the config loader adds
file, line and field.
"""

from __future__ import annotations

import math
import re

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_BARE_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
DURATION_EXAMPLES = "examples: 7d, 12h, 30m"

_BINARY = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_DECIMAL = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgtp])(ib|b|i)?|b)?", re.IGNORECASE)
SIZE_EXAMPLES = "examples: 512, 100K, 20MB, 1.5GiB"

_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
PERCENT_EXAMPLES = "examples: 80%, 92.5%"


def parse_duration(value: object) -> float:
    """'1d12h' -> 129600.0 seconds.

    Every duration carries its unit, zero included (the policy-format contract):
    `older_than: 7` was once read as 7 seconds and selected nearly everything.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({DURATION_EXAMPLES})")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a duration ({DURATION_EXAMPLES})")
        raise ValueError(_no_unit(value, f"{value:g}"))
    text = str(value).strip().lower()
    if _BARE_NUMBER_RE.fullmatch(text):
        raise ValueError(_no_unit(value, text))
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos and text[pos : m.start()].strip():
            break
        total += float(m.group(1)) * DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"{value!r} is not a duration ({DURATION_EXAMPLES})")
    return total


def _no_unit(value: object, n: str) -> str:
    return f"{value!r} is a duration without a unit: write {n}d, {n}h, {n}m or {n}s ({DURATION_EXAMPLES})"


def parse_size(value: object) -> int:
    """'1.5G' -> 1610612736 bytes. K/M/G/T and KiB/MiB/... are binary, KB/MB/... decimal."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size ({SIZE_EXAMPLES})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size: it is negative")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a size ({SIZE_EXAMPLES})")
        return int(value)
    text = str(value).strip()
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"{value!r} is not a size ({SIZE_EXAMPLES})")
    number = float(m.group(1))
    prefix = (m.group(2) or "").lower()
    suffix = (m.group(3) or "").lower()
    if not prefix:
        factor = 1
    elif suffix == "b":
        factor = _DECIMAL[prefix]
    else:  # "", "i", "ib": binary, as logrotate and most operators read 100K
        factor = _BINARY[prefix]
    return int(number * factor)


def parse_percent(value: object) -> float:
    """'80%' -> 80.0. The % sign is required so a size is never mistaken for a share."""
    text = str(value).strip()
    m = _PERCENT_RE.fullmatch(text)
    if not m:
        raise ValueError(f"{value!r} is not a percent ({PERCENT_EXAMPLES})")
    pct = float(m.group(1))
    if pct > 100:
        raise ValueError(f"{value!r} is not a percent: it is above 100%")
    return pct


def format_duration(seconds: float) -> str:
    """Compact human form: every unit from the leading one down to the last that is not zero,
    minutes at the finest once past an hour. 26d 0h 25m -> '26d0h25m' (an hour is never
    skipped, so '25m' cannot read as part of the days), 90061 -> '1d1h1m', 7d exactly -> '7d'.
    A reason such as 'mtime age 7d0h1m > 7d' thus shows by how much a threshold is passed.
    Used in every table and reason."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    # past a minute only whole minutes show: days, hours (never skipped between days and
    # minutes), minutes, each trailing zero unit left out. Straight arithmetic: a plan
    # formats one age per file.
    hours, minutes = divmod(seconds // 60, 60)
    days, hours = divmod(hours, 24)
    if days:
        if minutes:
            return f"{days}d{hours}h{minutes}m"
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_size(num_bytes: int) -> str:
    """Binary units, as `ls -lh` and `du -h` show them, one family: '0 B', '512 B', '1.5 KiB'."""
    value = float(num_bytes)
    if abs(value) < 1024:
        return f"{int(num_bytes)} B"
    for unit in _SIZE_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover
