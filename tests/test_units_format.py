"""How durations and sizes read in every table, reason and summary: one format each."""

from __future__ import annotations

import pytest

from janitor.units import format_duration, format_size

DAY, HOUR, MIN = 86400, 3600, 60


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (HOUR, "1h"), (HOUR + 30, "1h"),
    (2 * HOUR + 5 * MIN, "2h5m"), (DAY, "1d"), (7 * DAY, "7d"), (DAY + HOUR + 1, "1d1h"), (DAY + HOUR + MIN, "1d1h1m"),
    (26 * DAY + 25 * MIN, "26d0h25m"), (DAY + 12 * HOUR, "1d12h"),
])  # fmt: skip
def test_format_duration_never_skips_a_unit_between_the_leading_and_the_last(seconds: int, shown: str) -> None:
    assert format_duration(seconds) == shown


@pytest.mark.parametrize(("num_bytes", "shown"), [
    (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (3 * 1024**2, "3.0 MiB"), (5 * 1024**3, "5.0 GiB"), (2 * 1024**4, "2.0 TiB"),
])  # fmt: skip
def test_format_size_is_one_binary_unit_family(num_bytes: int, shown: str) -> None:
    assert format_size(num_bytes) == shown
