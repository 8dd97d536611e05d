"""The rows of `pnl` from a daily series: pure functions, no database (reports/pnl.py builds the
series through SQLAlchemy, reports/series_fast.py on a raw connection; both print these rows).

Every figure is a sum of days (reports/series.py): realized and commissions of the period, plus
the change of the unrealized P&L from the day before `since` to the last day before `until`, so
that the days of any period add up to its total to the cent. Base-currency figures are rounded
once, on the cumulative figure (`cumulatives_adding_up` rounds the groups together).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from tradeledger.ledger.numbers import cents_adding_up, plain
from tradeledger.reports import replay as series

ZERO = Decimal(0)


def series_rows(built: series.Series, by: str, since: dt.date | None, until: dt.date | None,
                cumulative: bool = False) -> dict:
    """`pnl`'s result from the series of the grouping (`total` for by day)."""
    base = built.currency
    rows, missing = [], set()
    if by == "day":
        days = built.groups.get(series.TOTAL, {})
        for day, row in _period_rows(days, since, until, per_day=True):
            missing |= set(row.pop("missing"))
            if not cumulative:
                row.pop("cumulative")
            rows.append({"day": day, **row, "currency": base})
    else:
        rounded = cumulatives_adding_up(built.groups)
        for key in sorted(built.groups, key=str):
            for _, row in _period_rows(built.groups[key], since, until, per_day=False, rounded=rounded[key]):
                missing |= set(row.pop("missing"))
                row.pop("cumulative")
                rows.append({by: key, **row, "currency": base})
    return {"by": by, "since": since, "until": until, "currency": base, "rows": rows,
            "missing_fx": sorted(missing)}


def _exact_cumulative(days: dict) -> tuple[dict, dict]:
    """day -> the exact cumulative P&L since the first entry at the day's end, and day -> the
    currencies that lacked a rate on some day until then."""
    cum, missing, total, prev_u, gone = {}, {}, ZERO, ZERO, set()
    for day in sorted(days):
        d = days[day]
        total += d.base_realized + d.base_income - d.base_commissions + d.base_unrealized - prev_u
        prev_u = d.base_unrealized
        gone |= d.missing_fx
        cum[day], missing[day] = total, frozenset(gone)
    return cum, missing


def cumulatives_adding_up(groups: dict) -> dict:
    """key -> {day: the group's cumulative P&L at the day's end, to the cent} on every day of any
    group (a group's figure carried from its last day, nothing before its first), rounded together:
    on every day the groups' figures add up to their sum to the cent, which is the account's
    (`numbers.cents_adding_up`), so rows by strategy or by instrument add up to the total of
    `pnl --by day`. A group that lacked a rate stays out (its figure is None, and the total's)."""
    exact = {key: _exact_cumulative(days) for key, days in groups.items()}
    out: dict = {key: {} for key in groups}
    now: dict = {}
    for day in sorted(set().union(*(days.keys() for days in groups.values()))):
        for key, (cum, missing) in exact.items():
            if day in cum:
                now[key] = None if missing[day] else cum[day]
        rounded = cents_adding_up({k: v for k, v in now.items() if v is not None})
        for key in now:
            out[key][day] = rounded.get(key)
    return out


_QUIET = series.Day()  # a group's day without a move of its own: nothing booked, nothing held


def _period_rows(days: dict, since, until, per_day: bool, rounded: dict | None = None) -> list[tuple]:
    """(day, row) for each day of [since, until) (per_day), else one (None, row) for the period.

    `rounded`: the group's cumulatives to the cent on every day of the grouping (cumulatives_adding_up),
    so that the period is cut at the grouping's days, and a row shows where rounding together moved
    the group's figure on a day of its own; else each of the group's own days rounded alone."""
    cum, missing = _exact_cumulative(days)
    if rounded is None:
        timeline, cum = sorted(days), {day: _cents(value) for day, value in cum.items()}
    else:
        first = min(days)
        timeline = [day for day in sorted(rounded) if day >= first]
        gone, carried = frozenset(), {}
        for day in timeline:
            gone = missing.get(day, gone)
            carried[day] = gone
        cum, missing = rounded, carried
    before = [d for d in timeline if since is not None and d < since]
    inside = [d for d in timeline if (since is None or d >= since) and (until is None or d < until)]
    start = before[-1] if before else None
    if per_day:
        rows, prev = [], start
        for day in inside:
            rows.append((day, _row(days, [day] if day in days else [], prev, day, cum, missing, start)))
            prev = day
        return rows
    if not inside:
        return []
    row = _row(days, [d for d in inside if d in days], start, inside[-1], cum, missing, start)
    quiet = rounded is not None and not any(d in days for d in inside) and not row["net"]
    return [] if quiet else [(None, row)]


def _row(days: dict, span: list, prev_day, end_day, cum: dict, missing: dict, start_day) -> dict:
    """One row: realized and commissions over `span` (the group's own days), unrealized from
    prev_day's end to end_day's; `cum` the cumulative P&L to the cent at each day's end."""
    native: dict = defaultdict(lambda: [ZERO, ZERO, ZERO, ZERO])  # ccy -> realized, unrealized, commissions, income
    realized = commissions = income = ZERO
    for day in span:
        d = days[day]
        realized += d.base_realized
        commissions += d.base_commissions
        income += d.base_income
        for ccy, value in d.realized.items():
            native[ccy][0] += value
        for ccy, value in d.commissions.items():
            native[ccy][2] += value
        for ccy, value in d.income.items():
            native[ccy][3] += value
    start_u = days.get(prev_day, _QUIET).unrealized if prev_day is not None else {}
    end_u = days.get(end_day, _QUIET).unrealized
    for ccy in set(start_u) | set(end_u):
        native[ccy][1] += end_u.get(ccy, ZERO) - start_u.get(ccy, ZERO)
    per_ccy = [{"currency": ccy, "realized": plain(r), "unrealized": plain(u), "commissions": plain(c),
                "income": plain(i), "net": plain(r + u + i - c)}
               for ccy, (r, u, c, i) in sorted(native.items()) if r or u or c or i]
    if missing[end_day]:
        return {"realized": None, "unrealized": None, "commissions": None, "income": None, "net": None,
                "cumulative": None, "native": per_ccy, "missing": sorted(missing[end_day])}
    prior = cum[prev_day] if prev_day is not None else ZERO
    origin = cum[start_day] if start_day is not None else ZERO
    net = cum[end_day] - prior
    realized, commissions, income = _cents(realized), _cents(commissions), _cents(income)
    return {"realized": realized, "unrealized": net - realized - income + commissions, "commissions": commissions,
            "income": income, "net": net, "cumulative": cum[end_day] - origin, "native": per_ccy, "missing": []}


def _cents(amount: Decimal) -> Decimal:
    """Base-currency totals are converted figures, shown to the cent; native figures stay exact."""
    return amount.quantize(Decimal("0.01"))
