"""Times as a program and as a person read them.

The ledger and the engine's tables store a time as UTC text, `YYYY-MM-DD HH:MM:SS.ffffff`
(`store.TS_FORMAT`), which sorts and compares as text on both backends but says nothing of its
zone. Whatever leaves tradeledger for a program (`--json`, `--csv`, the daily report's JSON) says
it: `iso_time` is the one formatting function, ISO 8601 with the zone (`2026-12-01T15:00:00+00:00`).
A person's table reads `table_time` (`2026-12-01 15:00:00`, UTC, as every table's times are).

Both take a datetime (a naive one is UTC by the same rule) or the stored text, and leave anything
else alone, so they can be applied to every value of a result.
"""

from __future__ import annotations

import datetime as dt
import re

UTC = dt.timezone.utc
# The stored text of a time (ISO with a space or a T, optional fraction, no zone), matched whole.
STORED_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")


def as_datetime(value: object) -> dt.datetime | None:
    """The aware time `value` holds (a datetime, or the stored text), else None (a date is a date)."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str) and STORED_TIME.fullmatch(value):
        return dt.datetime.fromisoformat(value).replace(tzinfo=UTC)
    return None


def iso_time(value: object) -> object:
    """A time as ISO 8601 with its zone (whole seconds without a fraction); other values unchanged."""
    time = as_datetime(value)
    if time is None:
        return value
    return time.isoformat(timespec="microseconds" if time.microsecond else "seconds")


def table_time(value: object) -> object:
    """A time as a table shows it: UTC to the second, `2026-12-01 15:00:00`; other values unchanged."""
    time = as_datetime(value)
    if time is None:
        return value
    return time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
