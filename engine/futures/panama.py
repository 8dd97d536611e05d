"""The back-adjusted (Panama) continuous series of a future, from contract closes at the roll
dates actually used; what signals read for a future.

Each date belongs to one contract: the contract held (or priced) from one roll to the next. The
roll dates are the ones the account actually used (`roll_event`, recorded when a roll order was
planned), else the calendar's (the day the current contract changed). At a roll date R from old
to new, the gap close(new, R) - close(old, R) is added to every earlier price, so the series has
no jump at a roll and its latest part equals the current contract's own closes:

    adjusted(d) = close(contract of d, d) + sum of gaps of the rolls after d

The gap is measured on the first day on or after the roll date on which both contracts have a
close (a calendar switch may fall on a weekend), else on the last day before it on which both do;
two contracts never priced on the same day is an error naming the roll.

Every stored row keeps its raw close, its contract and its cumulative adjustment, so a reader can
redo any figure (`adjusted_price`; `tradeledger data adjusted INSTRUMENT`).

Kept current as contract closes are stored (`refresh`, called by `prices.store_rows` in the same
transaction): closes of later days in the contract the series already ends in are appended with
adjustment 0 (the latest part is the current contract's own closes); anything else -- a roll
reached, a roll date recorded since, an earlier close changed -- rebuilds the instrument's series.

Signals (EWMAC, volatility for sizing and carry) read it (`with_adjusted`): a future whose
back-adjusted series goes back as far as its instrument closes is read from it, so a roll gap is
never a price move; a future without contract closes, or with contract closes for a recent window
only (kept for carry), is read from its instrument closes as imported. A run's explanation says
which (`signal_prices`). Carry reads the contract closes themselves (engine/targets/carry.py).
"""


from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.futures import calendar as cal
from tradeledger.errors import UnknownName, UserError
from tradeledger.ledger.numbers import from_scaled, to_scaled

ZERO = Decimal(0)


class SeriesError(UserError):
    """The back-adjusted series cannot be built; the message names the roll and what to import."""


@dataclass(frozen=True)
class AdjustedRow:
    date: dt.date
    contract: str
    raw: Decimal
    adjustment: Decimal

    @property
    def price(self) -> Decimal:
        return self.raw + self.adjustment


def _measurable(closes, old: str, new: str, planned: dt.date, dates: list[dt.date],
                until: dt.date | None) -> dt.date:
    """The day a roll's gap is measured: the first on or after `planned` (before `until`) with
    both closes, else the last before it with both; an error naming the roll when there is none."""
    both = [d for d in dates if (old, d) in closes and (new, d) in closes]
    after = [d for d in both if d >= planned and (until is None or d < until)]
    if after:
        return after[0]
    before = [d for d in both if d < planned]
    if before:
        return before[-1]
    raise ValueError(f"roll {old} -> {new} on {planned}: need both closes on that day (no day has both)")


def panama(closes: dict[tuple[str, dt.date], Decimal], segments: list[tuple[dt.date, str]]) -> list[AdjustedRow]:
    """Back-adjust (pure). `segments`: (first date, contract) in date order, each contract in force
    from its date to the next segment's; `closes`: (contract, date) -> close. A date whose contract
    has no close is left out, and so are leading contracts without any close (the history starts
    later). Each roll is measured (and switches) on the day `_measurable` finds."""
    all_dates = sorted({d for (_c, d) in closes})
    priced = {c for (c, _d) in closes}
    while len(segments) > 1 and segments[0][1] not in priced:  # history starts in a later contract
        segments = [(min(segments[0][0], all_dates[0]), segments[1][1])] + segments[2:]
    starts = [start for start, _code in segments]
    for i in range(1, len(segments)):
        until = segments[i + 1][0] if i + 1 < len(segments) else None
        starts[i] = max(_measurable(closes, segments[i - 1][1], segments[i][1], segments[i][0], all_dates, until),
                        starts[i - 1])
    rows: list[AdjustedRow] = []
    adjustment = ZERO
    for i in range(len(segments) - 1, -1, -1):
        code = segments[i][1]
        end = starts[i + 1] if i + 1 < len(segments) else None
        if i + 1 < len(segments):
            roll_day, new_code = starts[i + 1], segments[i + 1][1]
            adjustment += closes[(new_code, roll_day)] - closes[(code, roll_day)]
        rows += [AdjustedRow(d, code, closes[(code, d)], adjustment) for d in all_dates
                 if d >= starts[i] and (end is None or d < end) and (code, d) in closes]
    return sorted(rows, key=lambda r: r.date)


def segments_for(instrument, start: dt.date, end: dt.date, used: dict[str, dt.date]) -> list[tuple[dt.date, str]]:
    """(first date, contract) from `start` to `end`: the calendar's current contract, switched on
    the roll dates actually used (`used`: old contract -> the date its roll was planned)."""
    result: list[tuple[dt.date, str]] = []
    day = start
    while day <= end:
        current = cal.current(instrument.schedule, day)
        code = current.code
        if not result or result[-1][1] != code:
            previous = result[-1][1] if result else None
            switch = used.get(previous, day) if previous else day
            result.append((switch, code))
        # the current contract stays current until its own roll window opens
        day = max(day + dt.timedelta(days=1), current.roll_start)
    return result


def rebuild(ctx: Context, config, name: str, conn) -> list[AdjustedRow]:  # env: unused, kept for callers
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
        sa.select(event.c.old, event.c.date).where(event.c.instrument == name)).all()}
    dates = sorted(d for (_c, d) in closes)
    try:
        rows = panama(closes, segments_for(instrument, dates[0], dates[-1], used))
    except ValueError as exc:
        raise SeriesError(f"{name}: the back-adjusted series cannot be built: {exc}; import both contracts' "
                          "closes (date,contract,close) for a day around the roll") from None
    conn.execute(adj.delete().where(adj.c.instrument == name))
    if rows:
        conn.execute(adj.insert(), [{"instrument": name, "date": r.date.isoformat(), "price": to_scaled(r.price),
                                     "contract": r.contract, "raw": to_scaled(r.raw),
                                     "adjustment": to_scaled(r.adjustment)} for r in rows])
    return rows


def rebuild_series(ctx: Context, name: str) -> list[AdjustedRow]:
    """`rebuild` in its own transaction, for the command line."""
    from tradeledger.engine.targets.prices import trading_config

    config = trading_config(ctx)
    if name in config.instruments and not config.instruments[name].is_future:
        raise SeriesError(f"{name} is a {config.instruments[name].type}: only a future has a back-adjusted series")
    if name not in config.instruments:
        raise UnknownName("future", name, [n for n, i in config.instruments.items() if i.is_future])
    with ctx.engine.begin() as conn:
        return rebuild(ctx, config, name, conn)


def _ends(conn, names: list[str]) -> dict[str, tuple[dt.date, str]]:
    """name -> (last date, its contract) of each stored series."""
    adj = tables.adjusted_price
    last = sa.select(adj.c.instrument, sa.func.max(adj.c.date).label("day")).where(
        adj.c.instrument.in_(names)).group_by(adj.c.instrument).subquery()
    rows = conn.execute(sa.select(adj.c.instrument, adj.c.date, adj.c.contract).join(
        last, sa.and_(adj.c.instrument == last.c.instrument, adj.c.date == last.c.day))).all()
    return {name: (dt.date.fromisoformat(day), code) for name, day, code in rows}


def _appendable(instrument, end: tuple[dt.date, str] | None, dates: list[dt.date], used: dict[str, dt.date]
                ) -> str | None:
    """The contract the closes of `dates` extend the stored series in (which ends at `end`), or
    None when the series must be rebuilt (pure; the roll into that contract is checked apart)."""
    if end is None:
        return None
    last, code = end
    if any(d <= last for d in dates):
        return None
    if any(cal.current(instrument.schedule, d).code != code or (code in used and used[code] <= d) for d in dates):
        return None
    return code


def refresh(conn, config, changed: dict[str, list[dt.date]]) -> None:
    """Bring the stored series of each future in `changed` (name -> dates of the contract closes
    just stored) up to date, in the caller's transaction: append, or rebuild. A handful of queries
    for all of them, whatever their number."""
    bar, adj, event = tables.contract_bar, tables.adjusted_price, tables.roll_event
    names = sorted(changed)
    if not names:
        return
    ends = _ends(conn, names)
    used: dict[str, dict[str, dt.date]] = {}
    into: dict[str, dict[str, dt.date]] = {}  # instrument -> contract rolled into -> the roll date used
    for name, old, new, day in conn.execute(sa.select(event.c.instrument, event.c.old, event.c.new, event.c.date)
                                            .where(event.c.instrument.in_(names))).all():
        used.setdefault(name, {})[old] = into.setdefault(name, {})[new] = dt.date.fromisoformat(day)
    extend: dict[str, str] = {}
    for name in names:
        code = _appendable(config.instruments[name], ends.get(name), sorted(set(changed[name])), used.get(name, {}))
        if code is not None:
            extend[name] = code
    rolled_into = [(name, code) for name, code in extend.items() if code in into.get(name, {})]
    if rolled_into:  # a roll into the contract recorded since: does the series switch on its date?
        firsts = conn.execute(sa.select(adj.c.instrument, sa.func.min(adj.c.date)).where(sa.or_(*(
            sa.and_(adj.c.instrument == name, adj.c.contract == code) for name, code in rolled_into)))
            .group_by(adj.c.instrument)).all()
        for name, first in firsts:
            if first is not None and dt.date.fromisoformat(first) < into[name][extend[name]]:
                del extend[name]
    for name in names:
        if name not in extend:
            rebuild(None, config, name, conn)
    if not extend:
        return
    by_code = {code: name for name, code in extend.items()}
    wanted = sorted({d.isoformat() for name in extend for d in changed[name]})
    rows = conn.execute(sa.select(bar.c.contract, bar.c.date, bar.c.close).where(
        bar.c.contract.in_(sorted(by_code)), bar.c.date.in_(wanted))).all()
    appended = [{"instrument": by_code[code], "date": day, "price": close, "contract": code, "raw": close,
                 "adjustment": 0} for code, day, close in rows
                if dt.date.fromisoformat(day) in set(changed[by_code[code]])]
    if appended:
        conn.execute(adj.insert(), appended)


def adjusted_histories(conn, names, on: dt.date | None = None) -> dict[str, "pd.Series"]:
    """name -> its back-adjusted series up to `on` as floats (analysis data), for the futures
    among `names` that have one."""
    from tradeledger.engine.targets.prices import as_series

    adj = tables.adjusted_price
    names = sorted(set(names))
    grouped: dict[str, list] = {}
    query = sa.select(adj.c.instrument, adj.c.date, adj.c.price)
    if on is not None:
        query = query.where(adj.c.date <= on.isoformat())
    for i in range(0, len(names), 500):
        for name, d, price in conn.execute(query.where(adj.c.instrument.in_(names[i:i + 500]))
                                           .order_by(adj.c.instrument, adj.c.date)).all():
            grouped.setdefault(name, []).append((d, price))
    return {name: as_series(name, rows) for name, rows in grouped.items()}


def signal_histories(env, conn, config, names, on: dt.date | None = None) -> tuple[dict, set[str]]:
    """The price histories signals read for `names` (see `with_adjusted`), reading the instrument
    closes of a future only when its back-adjusted series does not replace them."""
    from tradeledger.engine.targets.prices import price_histories

    names = set(names)
    futures = sorted(n for n in names if n in config.instruments and config.instruments[n].is_future)
    adjusted = adjusted_histories(conn, futures, on) if futures else {}
    bar = tables.price_bar
    first_close = {}
    if adjusted:
        query = sa.select(bar.c.instrument, sa.func.min(bar.c.date)).where(bar.c.instrument.in_(sorted(adjusted)))
        if on is not None:
            query = query.where(bar.c.date <= on.isoformat())
        first_close = dict(conn.execute(query.group_by(bar.c.instrument)).all())
    used = {n: s for n, s in adjusted.items()
            if len(s) and (first_close.get(n) is None or s.index[0] <= dt.datetime.fromisoformat(first_close[n]))}
    histories = price_histories(env, names - set(used), on, conn)
    return {**histories, **used}, set(used)


def with_adjusted(conn, config, histories: dict, on: dt.date | None = None) -> tuple[dict, set[str]]:
    """`histories` with every future read from its back-adjusted series instead of its instrument
    closes, when that series goes back as far as the instrument closes do (contract closes kept
    only for a recent window -- for carry -- leave the signals on the longer instrument history);
    returns (histories, the names so replaced)."""
    futures = [n for n in histories if n in config.instruments and config.instruments[n].is_future]
    if not futures:
        return histories, set()
    adjusted = {}
    for name, series in adjusted_histories(conn, futures, on).items():
        closes = histories.get(name)
        if len(series) and (closes is None or not len(closes) or series.index[0] <= closes.index[0]):
            adjusted[name] = series
    return {**histories, **adjusted}, set(adjusted)
