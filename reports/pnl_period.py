"""`pnl --since D` by strategy or by instrument without the replay of every posting: each row is
the cumulative P&L at the end less the cumulative P&L at the end of the day before D.

The replay's row of a group over the days from D on (reports/pnl.py, `_period_rows` and `_row`):

    realized, commissions, income   their sums over the group's days from D on, in the base
                                    currency (each day at its rate), to the cent
    net                             R(end) - R(P), R the cumulatives of every group rounded
                                    together to the cent (numbers.cents_adding_up), so that
                                    the rows add up to the account's net
    unrealized                      net - realized - income + commissions
    native, per currency            the period's realized, commissions and income, and
                                    unrealized(end) - unrealized(P)

where cum(day) is realized + income - commissions up to that day plus the unrealized P&L at it,
and P the group's last day before D. P may be earlier than the replay's last day before D (the
day `_day_before` finds), but only when the group had no row that day, which means it was flat
of priced positions then and on every day between: its cum and unrealized are the same at both.

cum(end) and unrealized(end) are the all-time figures (reports/pnl_fast.py `read_books`, by
instrument reports/pnl_instrument.py). cum(P) is cum(end) less what was booked from D on and
with the unrealized P&L at P instead of at the end, as status's P&L of today works it out
(reports/pnl_today.py): the P&L postings from D on (an index range per account along
ix_posting_period; by instrument, the GROUP BY by contract over that range), the maintained lots
less the position lines from D on, P's prices and rates, and each future against its mark before
D (position_mark, or looked up backwards for a position an entry from D on touched). By strategy
the cost is that of the postings from D on, not of the ledger; by instrument the all-time sums
by contract are a GROUP BY over every P&L posting (pnl_instrument.py says why).

A group has a row when it booked P&L from D on or holds a position priced at the last day, or
when rounding together moved its figure. Where
it cannot vouch for the replay's answer it returns None and the caller replays: whatever
`read_books` (or the grouping by instrument) leaves to the replay, pnl_today's reasons for the
marks before D, and a position moved from D on by a group that shows neither (whether a price met
it on a day of the period decides the row). tests/test_pnl_fast.py holds it equal to the replay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from tradeledger.ledger.numbers import cents_adding_up, from_scaled, plain
from tradeledger.ledger.reading import Reader
from tradeledger.reports.pnl_fast import CARRY_ACCOUNTS, CENT, COMMISSIONS, TRADING, ZERO, read_books, rows_adding_up
from tradeledger.reports.pnl_instrument import OTHER, contract_sums, instrument_groups, rename
from tradeledger.reports.pnl_today import _day_before, held_before, valued_before


def period_pnl(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
               instrument_name: Callable[[str], str], since: dt.date, by: str) -> dict | None:
    """`pnl(by, since)` (by strategy or instrument, to the end), or None: replay."""
    books = read_books(reader, root, base, holder_name, instrument_name)
    if books is None:
        return None
    groups = books.groups if by == "strategy" else instrument_groups(reader, books, root, base, instrument_name)
    if groups is None:
        return None
    result = {"by": by, "since": since, "until": None, "currency": base, "rows": [], "missing_fx": []}
    if books.end is None or since > books.end:
        return result  # no day of the period: no rows
    rates, end, contracts = books.rates, books.end, books.contracts
    if since <= books.first:  # every day is in the period: the all-time rows
        rows = [rename(row, by) for row in rows_adding_up(groups, base, rates, end)]
        return result | {"rows": rows, "missing_fx": sorted(set().union(*(g.missing for g in groups.values())))}

    def group_of(name: str, code: str | None) -> str:
        if by == "strategy":
            return name
        return instrument_name(code) if code in contracts else (code or OTHER)

    # the P&L booked from D on: native per group and currency, and its base-currency part (the
    # other currencies' days are apart in each group, cut by `exact(before=...)`)
    start = since.isoformat()
    booked: dict[str, dict[str, list[Decimal]]] = {}  # group -> currency -> [realized, commissions, income]
    if by == "strategy":
        names = books.names
        pnl_ids = [i for i, n in names.items() if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS))]
        for account_id, currency, units in reader.sums_since(pnl_ids, start):
            account = names[account_id]
            part = 0 if account.startswith(TRADING) else 1 if account.startswith(COMMISSIONS) else 2
            figures = booked.setdefault(holder_name(account.rsplit(":", 1)[1]), {})
            figures.setdefault(currency, [ZERO, ZERO, ZERO])[part] += (1 if part == 1 else -1) * from_scaled(units)
    else:
        for part, sign, _, currency, contract, _, units in contract_sums(reader, books.names, root, base, start):
            figures = booked.setdefault(group_of("", contract), {})
            figures.setdefault(currency, [ZERO, ZERO, ZERO])[part] += sign * from_scaled(units)

    # the positions at the end of the day before: the maintained lots less the lines from D on
    held, moved = held_before(reader, books, root, start)
    shown = set(booked) | {group_of(name, code) for (name, code), (units, basis) in books.held.items()
                           if code in books.prices and (units != 0 or basis != 0)}
    if any(group_of(name, code) not in shown and code in books.prices for name, code in moved):
        return None  # moved in the period, priced on some day of it maybe: only the replay knows

    before = _day_before(reader, books, books.names, since)
    valued = valued_before(reader, books, root, held, moved, start, before, instrument_name)
    if valued is None:
        return None
    at_start: dict[str, dict[str, Decimal]] = {}  # group -> currency -> unrealized at `before`
    for name, code, currency, value, _gross in valued:
        unrealized = at_start.setdefault(group_of(name, code), {})
        unrealized[currency] = unrealized.get(currency, ZERO) + value

    # each group's exact figures at the end and at the end of the day before: the nets are the
    # differences of the cumulatives rounded together at both days, as the replay rounds them
    # (reports/pnl.py, cumulatives_adding_up); a group quiet in the period is in both at its figure
    exact, cumulative = {}, {}
    for key, group in groups.items():
        if group.missing:
            continue
        realized, commissions, income, unrealized = group.exact(rates, end)
        if key in shown:
            figures = booked.get(key, {})
            r0, c0, i0, _ = group.exact(rates, end, before=start)  # the base currency's postings: all of them
            r0, c0, i0 = (value - figures.get(base, (ZERO, ZERO, ZERO))[k] for k, value in enumerate((r0, c0, i0)))
            u0 = sum((amount * rates.on(currency, before) for currency, amount in at_start.get(key, {}).items()), ZERO)
        else:
            r0, c0, i0, u0 = realized, commissions, income, unrealized
        exact[key] = (realized, commissions, income, r0, c0, i0)
        cumulative[key] = (realized + income - commissions + unrealized, r0 + i0 - c0 + u0)
    at_end = cents_adding_up({key: figures[0] for key, figures in cumulative.items()})
    at_before = cents_adding_up({key: figures[1] for key, figures in cumulative.items()})
    moved = {key for key in cumulative if key not in shown and at_end[key] != at_before[key]}

    rows, missing = [], set()
    for key in sorted(shown | moved):
        group, figures = groups[key], booked.get(key, {})
        native = []
        end_u, start_u = group.unrealized, at_start.get(key, {})
        for currency in sorted(set(figures) | set(end_u) | set(start_u)):
            r, c, i = figures.get(currency, (ZERO, ZERO, ZERO))
            u = end_u.get(currency, ZERO) - start_u.get(currency, ZERO)
            if r or u or c or i:
                native.append({"currency": currency, "realized": plain(r), "unrealized": plain(u),
                               "commissions": plain(c), "income": plain(i), "net": plain(r + u + i - c)})
        if group.missing:
            missing |= group.missing
            rows.append({by: key, "realized": None, "unrealized": None, "commissions": None, "income": None,
                         "net": None, "native": native, "currency": base})
            continue
        realized, commissions, income, r0, c0, i0 = exact[key]
        net = at_end[key] - at_before[key]
        r, c, i = (realized - r0).quantize(CENT), (commissions - c0).quantize(CENT), (income - i0).quantize(CENT)
        rows.append({by: key, "realized": r, "unrealized": net - r - i + c, "commissions": c, "income": i,
                     "net": net, "native": native, "currency": base})
    return result | {"rows": rows, "missing_fx": sorted(missing)}
