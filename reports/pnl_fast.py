"""`pnl` by strategy over all time, read from what the database maintains instead of replayed
(`answer` also sends `pnl --by instrument` to reports/pnl_instrument.py and `--since` to
reports/pnl_period.py, which build on `read_books`).

The replay (reports/series.py) walks every posting, about 7 us each: `pnl` grew with the ledger.
Its all-time figures by strategy need no walk when every figure is in the base currency (each
day's rate is then 1, and nothing can lack a rate):

* realized, commissions and income over all time are the balances of each holder's
  `Income:Trading`, `Expenses:Commissions` and carry accounts (the replay sums the same postings,
  signs as it gives them);
* the net is the replay's cumulative figure at the group's last day: realized + income -
  commissions + the unrealized P&L at the series' last day, where each position is valued as the
  replay values it: the units and cost basis from the maintained lots (a lot's weights sum to its
  units x cost), the price of that day (settlement, else its instrument's close, the newer wins),
  a future against its holder's mark (`position_mark`, written with every entry that moves it).

It reads a row per account, lot, contract and mark and a lookup per account, never a posting.
Where it cannot vouch for the replay's answer it returns None and the caller replays: another
currency than the base anywhere in P&L or positions, a cost-bearing account the replay would
misname, two holders sharing a name, or a holder that held positions but has no P&L posting at
all (the replay shows it only if a price met one of its positions on some day now past).
tests/test_pnl_fast.py holds it equal to the replay on random ledgers on SQLite and PostgreSQL.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tradeledger.engine.accounting.restate import SPLITS_SQL, booked_splits, newest_price
from tradeledger.ledger.accounts import UNATTRIBUTED as UNATTRIBUTED_COMPONENT
from tradeledger.ledger.numbers import cents_adding_up, from_scaled, plain
from tradeledger.ledger.reading import Reader

ZERO = Decimal(0)
CENT = Decimal("0.01")
TRADING, COMMISSIONS = "Income:Trading:", "Expenses:Commissions:"
# reports/series.py's CARRY_ACCOUNTS (not imported: series imports SQLAlchemy); a test holds them equal
CARRY_ACCOUNTS = ("Income:Dividends:", "Expenses:Taxes:Withholding:", "Income:Interest:", "Expenses:Interest:",
                  "Expenses:Fees:")


def fast_pnl(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
             instrument_name: Callable[[str], str]) -> dict | None:
    """`pnl(by="strategy")` over all time, or None: replay. `holder_name(component)` is the
    replay's name of an account component (series._holder_name); `instrument_name(code)` the
    instrument whose closes price a contract (its configured instrument, else the code)."""
    books = read_books(reader, root, base, holder_name, instrument_name)
    if books is None:
        return None
    groups = books.groups
    rows = rows_adding_up(groups, base, books.rates, books.end)
    return _result(base, rows, set().union(*(g.missing for g in groups.values())))


def rows_adding_up(groups: dict, base: str, rates: "_Rates", end: dt.date) -> list[dict]:
    """Each group's all-time row, the nets rounded together to add up to the account's net to the
    cent (numbers.cents_adding_up, as the replay rounds its groups: reports/pnl.py)."""
    nets = cents_adding_up({name: group.net(rates, end) for name, group in groups.items() if not group.missing})
    return [groups[name].row(name, base, rates, end, nets.get(name)) for name in sorted(groups)]


@dataclass(frozen=True)
class Books:
    """What the maintained tables say the replay would hold at its last day (`end`)."""

    names: dict  # account id -> name
    component_of: dict  # holder name -> account component
    groups: dict  # holder name -> _Group
    held: dict  # (holder name, code) -> (units, cost basis), all time
    contracts: dict  # code -> (currency, multiplier, is future)
    marks: dict  # (component, code) -> the mark now
    rates: "_Rates"
    first: dt.date | None  # the replay's first and last day (None: no posting it reads)
    end: dt.date | None
    prices: dict = field(default_factory=dict)  # code -> its price at `end` (held contracts only)

    def value(self, name: str, code: str, units: Decimal, basis: Decimal, price: Decimal) -> Decimal:
        """The unrealized P&L of a holder's position at `price`, in the contract's currency, as the
        replay values it: a future against the holder's mark, shares against their cost basis."""
        _currency, multiplier, future = self.contracts[code]
        if future:
            return units * (price - self.marks.get((self.component_of[name], code), price)) * multiplier
        return units * price * multiplier - basis


def read_books(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
               instrument_name: Callable[[str], str]) -> Books | None:
    """The maintained figures `fast_pnl` turns into rows, or None where only the replay can vouch."""
    names = reader.account_names()
    holdings = root + ":Strategy:"
    unattributed = f"{root}:{UNATTRIBUTED_COMPONENT}"
    named: dict[str, str] = {}  # holder name -> the component it came from (one each, or replay)

    def name_of(component: str) -> str | None:
        name = holder_name(component)
        return name if named.setdefault(name, component) == component else None

    move_ids = [i for i, n in names.items()
                if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS, "Assets:")) or n == "Equity:Deposits"]
    span = reader.first_and_last_day(move_ids)
    rates = _Rates(reader, base)
    if span is None:
        return Books(names, {}, {}, {}, {}, {}, rates, None, None)
    first, end = dt.date.fromisoformat(span[0]), last_day(reader, span[1])

    # realized, commissions, income per holder name and currency (a key: the replay has a P&L move)
    pnl_ids = [i for i, n in names.items() if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS))]
    groups: dict[str, _Group] = {}
    for (account_id, currency), units in reader.kept_balances(pnl_ids).items():
        account = names[account_id]
        name = name_of(account.rsplit(":", 1)[1])
        if name is None:
            return None
        group = groups.setdefault(name, _Group())
        part = 0 if account.startswith(TRADING) else 1 if account.startswith(COMMISSIONS) else 2
        sign = 1 if part == 1 else -1  # realized and what holding brought: income up, expenses down
        group.native(currency)[part] += sign * from_scaled(units)
        if currency == base:
            group.in_base[part] += sign * from_scaled(units)
            continue
        for day, amount in reader.day_sums(account_id, currency):  # each day at its own rate
            rate = rates.on(currency, dt.date.fromisoformat(day))
            if rate is None:
                group.missing.add(currency)
            else:
                group.days.setdefault((day, currency), [ZERO, ZERO, ZERO])[part] += sign * from_scaled(amount)

    contracts = {code: (currency, multiplier, kind == "future")
                 for code, kind, currency, multiplier in reader.commodities() if kind in ("future", "share")}
    held: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}  # (holder name, code) -> (units, basis)
    component_of: dict[str, str] = {}
    for (account_id, code), (units, basis) in reader.lot_sums().items():
        account = names[account_id]
        if account == unattributed or account.startswith(holdings):
            component = UNATTRIBUTED_COMPONENT if account == unattributed else account[len(holdings):]
        elif account.startswith("Assets:"):
            return None  # the replay reads it as a position under a name cut from the wrong prefix
        else:
            continue  # not a position the replay keeps
        name = name_of(component)
        if name is None:
            return None
        component_of[name] = component
        was = held.get((name, code), (ZERO, ZERO))
        held[(name, code)] = (was[0] + from_scaled(units), was[1] + from_scaled(basis))

    prices = prices_on(reader, sorted({code for _, code in held if code in contracts}), instrument_name, end)
    if any(not rates.always(contracts[code][0], first) for _, code in held if code in prices):
        return None  # a day without a rate may have met a priced position: only the replay knows
    marks = {(holder or UNATTRIBUTED_COMPONENT, code): from_scaled(price) for holder, code, price in
             reader.rows("SELECT holder, contract, price FROM position_mark")}
    priced = {(name, code) for (name, code), (units, basis) in held.items()
              if code in contracts and (units != 0 or basis != 0) and code in prices}
    for name in {name for name, _ in held} - set(groups):  # positions, and no P&L posting at all
        if any(key[0] == name for key in priced):
            groups[name] = _Group()  # priced at the last day: the replay has it that day
        elif any(key[0] == name and key[1] in prices for key in held):
            return None  # whether a price met its positions on some day past: only the replay knows
    books = Books(names, component_of, groups, held, contracts, marks, rates, first, end, prices)
    for (name, code) in priced:
        currency = contracts[code][0]
        unrealized = groups[name].unrealized
        unrealized[currency] = unrealized.get(currency, ZERO) + books.value(name, code, *held[(name, code)],
                                                                            prices[code])
    return books


class _Group:
    """One strategy's figures: native per currency, and in the base currency as the replay sums them."""

    def __init__(self):
        self.natives: dict[str, list[Decimal]] = {}  # currency -> [realized, commissions, income]
        self.in_base = [ZERO, ZERO, ZERO]  # the base currency's own postings
        self.days: dict[tuple[str, str], list[Decimal]] = {}  # (day, currency) -> the day's figures, another currency
        self.unrealized: dict[str, Decimal] = {}  # currency -> at the last day
        self.missing: set[str] = set()

    def native(self, currency: str) -> list[Decimal]:
        return self.natives.setdefault(currency, [ZERO, ZERO, ZERO])

    def net(self, rates: "_Rates", end: dt.date) -> Decimal:
        """The exact all-time net in the base currency."""
        realized, commissions, income, unrealized = self.exact(rates, end)
        return realized + income - commissions + unrealized

    def row(self, name: str, base: str, rates: "_Rates", end: dt.date, net: Decimal | None = None) -> dict:
        """The row reports/pnl.py's `_row` gives for a period from the first entry; `net` to the
        cent as rounded with the other groups (rows_adding_up), else rounded alone."""
        currencies = sorted(set(self.natives) | set(self.unrealized))
        native = []
        for currency in currencies:
            r, c, i = self.natives.get(currency, (ZERO, ZERO, ZERO))
            u = self.unrealized.get(currency, ZERO)
            if r or u or c or i:
                native.append({"currency": currency, "realized": plain(r), "unrealized": plain(u),
                               "commissions": plain(c), "income": plain(i), "net": plain(r + u + i - c)})
        if self.missing:
            return {"strategy": name, "realized": None, "unrealized": None, "commissions": None, "income": None,
                    "net": None, "native": native, "currency": base}
        realized, commissions, income, unrealized = self.exact(rates, end)
        net = (realized + income - commissions + unrealized).quantize(CENT) if net is None else net
        r, c, i = realized.quantize(CENT), commissions.quantize(CENT), income.quantize(CENT)
        return {"strategy": name, "realized": r, "unrealized": net - r - i + c, "commissions": c, "income": i,
                "net": net, "native": native, "currency": base}


    def exact(self, rates: "_Rates", end: dt.date, before: str | None = None) -> tuple[Decimal, ...]:
        """Realized, commissions, income (of the days before `before`, else all) and the
        unrealized P&L at `end`, in the base currency, unrounded; the base currency's own
        postings are in `in_base` already (of the days asked for)."""
        realized, commissions, income = self.in_base
        for (day, currency), (r, c, i) in sorted(self.days.items()):
            if before is not None and day >= before:
                continue
            rate = rates.on(currency, dt.date.fromisoformat(day))
            realized, commissions, income = realized + r * rate, commissions + c * rate, income + i * rate
        unrealized = sum((amount * rates.on(currency, end) for currency, amount in self.unrealized.items()), ZERO)
        return realized, commissions, income, unrealized


class _Rates:
    """FX rates by date, carried forward (series._Prices.fx): one row per currency and day of rates."""

    def __init__(self, reader: Reader, base: str):
        self.base = base
        # dates as their ISO text (which sorts as the dates do) and rates scaled: only a rate looked
        # up becomes a Decimal, so that years of rates cost a command little more than their rows
        self.table: dict[str, tuple[list[str], list[int]]] = {}
        for currency, day, rate in reader.rows("SELECT currency, date, rate FROM fx_rate ORDER BY currency, date"):
            dates, values = self.table.setdefault(currency, ([], []))
            dates.append(day)
            values.append(rate)

    def on(self, currency: str, day: dt.date) -> Decimal | None:
        if currency == self.base:
            return Decimal(1)
        dates, values = self.table.get(currency, ((), ()))
        i = bisect.bisect_right(dates, day.isoformat())
        return from_scaled(values[i - 1]) if i else None

    def always(self, currency: str, first: dt.date) -> bool:
        """Whether every day from `first` on has a rate."""
        return self.on(currency, first) is not None


def _result(base: str, rows: list[dict], missing: set) -> dict:
    return {"by": "strategy", "since": None, "until": None, "currency": base, "rows": rows,
            "missing_fx": sorted(missing)}


def last_day(reader: Reader, newest_entry: str) -> dt.date:
    """The replay's last day: the newest of its postings' days and the price dates, stepped back
    over a weekend it has no entry on (its days are the weekdays and the days with entries)."""
    dates = reader.rows("SELECT (SELECT MAX(date) FROM price_bar), (SELECT MAX(date) FROM settlement)").fetchone()
    day = dt.date.fromisoformat(max([newest_entry, *(d for d in dates if d)]))
    entry_day = dt.date.fromisoformat(newest_entry)
    while day > entry_day and day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def prices_on(reader: Reader, codes: list[str], instrument_name: Callable[[str], str],
              day: dt.date) -> dict[str, Decimal]:
    """Each contract's price on `day` as the replay takes it (series._Prices.price): its newest
    settlement or its instrument's newest close on or before the day, the newer wins, a
    settlement wins a tie; a close from before a booked split restated (engine/accounting/restate.py)."""
    instruments = {code: instrument_name(code) for code in codes}
    settlements = _newest(reader, "settlement", "contract", "price", codes, day)
    closes = _newest(reader, "price_bar", "instrument", "close", sorted(set(instruments.values())), day)
    splits = booked_splits(reader.rows(SPLITS_SQL)) if closes else {}
    result = {}
    for code in codes:
        price = newest_price(settlements.get(code), closes.get(instruments[code]), splits.get(instruments[code], []),
                             day)
        if price is not None:
            result[code] = price
    return result


def _newest(reader: Reader, table: str, key: str, value: str, keys: list[str], day: dt.date) -> dict:
    if not keys:
        return {}
    marks = ", ".join("?" * len(keys))
    sql = (f"SELECT t.{key}, t.date, t.{value} FROM {table} t JOIN (SELECT {key}, MAX(date) AS date FROM {table} "
           f"WHERE {key} IN ({marks}) AND date <= ? GROUP BY {key}) n ON t.{key} = n.{key} AND t.date = n.date")
    return {k: (d, v) for k, d, v in reader.rows(sql, (*keys, day.isoformat()))}


def answer(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
           instrument_name: Callable[[str], str], by: str = "strategy", since: dt.date | None = None) -> dict | None:
    """`pnl(by, since)` (by strategy or instrument, to the end) from the maintained state, or None:
    replay. All time by strategy here; by instrument reports/pnl_instrument.py; from a day on
    reports/pnl_period.py."""
    if since is not None:
        from tradeledger.reports.pnl_period import period_pnl

        return period_pnl(reader, root, base, holder_name, instrument_name, since, by)
    if by == "instrument":
        from tradeledger.reports.pnl_instrument import instrument_pnl

        return instrument_pnl(reader, root, base, holder_name, instrument_name)
    return fast_pnl(reader, root, base, holder_name, instrument_name)


def quick_pnl(home: str | Path | None, env: str, db_url: str | None = None, by: str = "strategy",
              since: dt.date | None = None) -> dict | None:
    """`pnl` (by strategy or by instrument, all time or from `since` on) without SQLAlchemy, or
    None: take the full path."""
    from tradeledger.engine.setup import quick

    opened = quick.open_for_reading(home, env, db_url)
    if opened is None:
        return None
    try:
        holder_name, instrument_name = _namers(opened.raw)
        return answer(opened.reader, f"Assets:Broker:{opened.account}", opened.base_currency, holder_name,
                      instrument_name, by, since)
    finally:
        opened.close()


def quick_pnl_today(opened, today: dt.date) -> Decimal | int | None:
    """`status`'s P&L of today in the base currency (reports/pnl_today.py) on an environment opened
    for reading (engine/setup/quick.py), or None: replay."""
    from tradeledger.reports.pnl_today import pnl_today

    holder_name, instrument_name = _namers(opened.raw)
    return pnl_today(opened.reader, f"Assets:Broker:{opened.account}", opened.base_currency, holder_name,
                     instrument_name, today)


def _namers(raw: dict) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """A holder's name (series._holder_name) and a contract's pricing instrument, on the checked config."""
    from tradeledger.engine.setup import names

    instruments, owners = names.from_raw(raw)

    def holder_name(component: str) -> str:
        return "unattributed" if component == UNATTRIBUTED_COMPONENT else owners.get(component, component)

    def instrument_name(code: str) -> str:
        return names.instrument_of_contract(instruments, code) or code

    return holder_name, instrument_name
