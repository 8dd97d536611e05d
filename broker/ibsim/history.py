"""Historical bars for the simulated gateway, built from the exchange's price history.

The exchange records every price it is set to; a bar is the open/high/low/close of the prices
recorded in its interval (daily bars by UTC date). Intervals without a price have no bar, as
IB omits bars for periods without trades. Volume is not simulated and is reported as 0.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tradeledger.broker.ibsim.messages import Bar

_UNIT_SECONDS = {"sec": 1, "min": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
                 "month": 30 * 86400}
_DURATION_SECONDS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}


def bar_seconds(bar_size: str) -> int:
    """ "1 day" -> 86400, "5 mins" -> 300, "1 hour" -> 3600."""
    count, _, unit = bar_size.strip().partition(" ")
    unit = unit.strip().rstrip("s") or "day"
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"bar size {bar_size!r}")
    return int(count or 1) * _UNIT_SECONDS[unit]


def duration_seconds(duration: str) -> int:
    """ "30 D" -> 30 days in seconds; an unreadable duration means one year."""
    count, _, unit = duration.strip().partition(" ")
    try:
        return int(count) * _DURATION_SECONDS[unit.strip().upper()[:1]]
    except (ValueError, KeyError):
        return _DURATION_SECONDS["Y"]


def bars_from_history(history: list[tuple[dt.datetime, Decimal]], bar_size: str,
                      duration: str, end: dt.datetime) -> list[Bar]:
    size = bar_seconds(bar_size)
    start = end - dt.timedelta(seconds=duration_seconds(duration))
    daily = size >= 86400
    buckets: dict[object, list[Decimal]] = {}
    for when, price in history:
        if not start <= when <= end:
            continue
        key = when.date() if daily else int(when.timestamp()) // size * size
        buckets.setdefault(key, []).append(price)
    bars = []
    for key, prices in buckets.items():
        if daily:
            label = key.strftime("%Y%m%d")
        else:
            moment = dt.datetime.fromtimestamp(key, dt.timezone.utc)
            label = moment.strftime("%Y%m%d %H:%M:%S UTC")
        bars.append(Bar(label, prices[0], max(prices), min(prices), prices[-1],
                        Decimal(0), len(prices)))
    return bars
