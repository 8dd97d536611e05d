"""The back-adjusted (Panama) continuous series of a future, from contract closes at the roll
dates actually used.

Each date belongs to one contract: the contract held (or priced) from one roll to the next. The
roll dates are the ones the account actually used (`roll_event`, recorded when a roll order was
planned), else the calendar's (the day the current contract changed). At a roll date R from old
to new, the gap close(new, R) - close(old, R) is added to every earlier price, so the series has
no jump at a roll and its latest part equals the current contract's own closes:

    adjusted(d) = close(contract of d, d) + sum of gaps of the rolls after d

Every stored row keeps its raw close, its contract and its cumulative adjustment, so a reader can
redo any figure (`adjusted_price`; `tradeledger data adjusted INSTRUMENT`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.futures import calendar as cal
from tradeledger.ledger.numbers import from_scaled, to_scaled

ZERO = Decimal(0)


@dataclass(frozen=True)
class AdjustedRow:
    date: dt.date
    contract: str
    raw: Decimal
    adjustment: Decimal

    @property
    def price(self) -> Decimal:
        return self.raw + self.adjustment


def panama(closes: dict[tuple[str, dt.date], Decimal], segments: list[tuple[dt.date, str]]) -> list[AdjustedRow]:
    """Back-adjust (pure). `segments`: (first date, contract) in date order, each contract in force
    from its date to the next segment's; `closes`: (contract, date) -> close. A date whose contract
    has no close is left out; a roll whose gap cannot be measured (either close missing on the roll
    date) is an error naming it."""
    dates_by_segment: list[tuple[str, list[dt.date]]] = []
    all_dates = sorted({d for (_c, d) in closes})
    for i, (start, code) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else None
        dates_by_segment.append((code, [d for d in all_dates if d >= start and (end is None or d < end)]))
    rows: list[AdjustedRow] = []
    adjustment = ZERO
    for i in range(len(dates_by_segment) - 1, -1, -1):
        code, dates = dates_by_segment[i]
        if i + 1 < len(dates_by_segment):
            roll_day, new_code = segments[i + 1]
            old_close, new_close = closes.get((code, roll_day)), closes.get((new_code, roll_day))
            if old_close is None or new_close is None:
                raise ValueError(f"roll {code} -> {new_code} on {roll_day}: need both closes on that day")
            adjustment += new_close - old_close
        rows += [AdjustedRow(d, code, closes[(code, d)], adjustment) for d in dates if (code, d) in closes]
    return sorted(rows, key=lambda r: r.date)


def segments_for(instrument, start: dt.date, end: dt.date, used: dict[str, dt.date]) -> list[tuple[dt.date, str]]:
    """(first date, contract) from `start` to `end`: the calendar's current contract, switched on
    the roll dates actually used (`used`: old contract -> the date its roll was planned)."""
    result: list[tuple[dt.date, str]] = []
    day = start
    while day <= end:
        code = cal.current(instrument.schedule, day).code
        if not result or result[-1][1] != code:
            previous = result[-1][1] if result else None
            switch = used.get(previous, day) if previous else day
            result.append((switch, code))
        day += dt.timedelta(days=1)
    return result


def rebuild(env, config, name: str, conn) -> list[AdjustedRow]:
    """Recompute and store instrument `name`'s adjusted series from its contract closes."""
    instrument = config.instruments[name]
    bar, event, adj = tables.contract_bar, tables.roll_event, tables.adjusted_price
    root = instrument.schedule.root
    closes = {(code, dt.date.fromisoformat(d)): from_scaled(p) for code, d, p in conn.execute(
        sa.select(bar.c.contract, bar.c.date, bar.c.close).where(bar.c.contract.like(f"{root}%")))
        if code[len(root):len(root) + 1] in cal.MONTH_CODES and len(code) == len(root) + 3}
    if not closes:
        return []
    used = {old: dt.date.fromisoformat(d) for old, d in conn.execute(
        sa.select(event.c.old, event.c.date).where(event.c.instrument == name))}
    dates = sorted(d for (_c, d) in closes)
    rows = panama(closes, segments_for(instrument, dates[0], dates[-1], used))
    conn.execute(adj.delete().where(adj.c.instrument == name))
    if rows:
        conn.execute(adj.insert(), [{"instrument": name, "date": r.date.isoformat(), "price": to_scaled(r.price),
                                     "contract": r.contract, "raw": to_scaled(r.raw),
                                     "adjustment": to_scaled(r.adjustment)} for r in rows])
    return rows


def rebuild_series(env, name: str) -> list[AdjustedRow]:
    """`rebuild` in its own transaction, for the command line."""
    from tradeledger.engine.targets.prices import trading_config

    config = trading_config(env)
    if name not in config.instruments or not config.instruments[name].is_future:
        raise ValueError(f"{name!r} is not a configured future")
    with env.engine.begin() as conn:
        return rebuild(env, config, name, conn)
