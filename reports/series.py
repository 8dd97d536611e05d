"""Daily P&L that adds up: realized plus the change in unrealized, day by day, from postings.

One pass over the postings that matter (holdings, `Income:Trading`, `Expenses:Commissions`,
cash and deposits), in booking-time order, replays each holder's positions, share cost basis
and futures marks; at the end of every day each open position is valued with that day's price
(its settlement, else its instrument's close, else the newest before) and that day's FX rate:

    unrealized(day)   shares: units x price x multiplier - cost basis
                      futures: units x (price - mark) x multiplier (zero right after the daily mark)
    net(day)          realized(day) + income(day) - commissions(day) + unrealized(day) - unrealized(day before)

(income: dividends less withholding, interest less fees, what holding brought.)

A close quoted before a booked split values the units held after it restated (old/new: a
2:1 split on the morning of its date is no gain until the day's close; engine/accounting/restate.py).

All figures are exact Decimals in their own currency; the base-currency figure of a day converts
that day's native figures at that day's rate. A period's total is the sum of its days, and the
base-currency totals are rounded once, on the cumulative figure: each day's net is the change
of the rounded cumulative, so the days of any period sum to the period's total to the cent.

A futures holder's mark is the price of the latest entry that touched its position or variation
margin in that contract (fills, settlements, adoptions, transfers and closes name their price in
the entry's metadata, an internal cross in `internal_cross`); a reversal (which names none) leaves
it where it was, and so does a corrected fill when the holder held a position before the
original's reversal (trading/corrections.py: the corrected entry books against the mark M of
then, which stays M; only a holder flat before is marked at the corrected price).

`build` reads the database; `compute` is the pure part (records in, series out).
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.accounting.restate import restated
from tradeledger.engine.accounting.valuation import booked_splits
from tradeledger.engine.setup.config import instrument_of_contract
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled

ZERO = Decimal(0)
CENT = Decimal("0.01")
UNATTRIBUTED = "unattributed"
TOTAL = "total"
# What holding brings besides price moves: dividends net of withholding, the account's interest and
# fees (under the strategy that bears them, or `Account` when unallocated).
CARRY_ACCOUNTS = ("Income:Dividends:", "Expenses:Taxes:Withholding:", "Income:Interest:", "Expenses:Interest:",
                  "Expenses:Fees:")


@dataclass(frozen=True)
class Move:
    """One posting that moves P&L, cash or a position."""

    day: dt.date
    kind: str  # position | realized | commission | income | cash | deposit
    holder: str | None  # user name of the strategy, 'unattributed'; None for cash/deposits
    commodity: str  # contract code, or currency
    units: Decimal  # units of the commodity (for realized/commissions: money, P&L sign)
    basis: Decimal = ZERO  # position postings of shares: cost basis moved (weight)
    contract: str | None = None  # the entry's contract (for realized/commissions)
    price: Decimal | None = None  # the entry's price (the futures mark after it)
    entry: int = 0


@dataclass(frozen=True)
class ContractInfo:
    code: str
    currency: str
    multiplier: Decimal
    future: bool
    instrument: str


@dataclass
class Day:
    """One group's figures of one day, native (per currency) and in the base currency."""

    realized: dict = field(default_factory=dict)  # ccy -> amount
    commissions: dict = field(default_factory=dict)
    income: dict = field(default_factory=dict)  # dividends less withholding, interest less fees
    unrealized: dict = field(default_factory=dict)  # ccy -> end-of-day unrealized
    exposure: dict = field(default_factory=dict)  # ccy -> end-of-day notional (signed)
    base_realized: Decimal = ZERO
    base_commissions: Decimal = ZERO
    base_income: Decimal = ZERO
    base_unrealized: Decimal = ZERO
    missing_fx: frozenset = frozenset()


@dataclass(frozen=True)
class Series:
    days: tuple[dt.date, ...]
    groups: dict  # group key -> {day: Day}
    nav: dict  # day -> NAV in base (None when an FX rate is missing)
    deposits: dict  # day -> net deposits to date in base (at each deposit day's rate)
    currency: str


def _add(slot: dict, key, value) -> None:
    if value:
        slot[key] = slot.get(key, ZERO) + value


class _Prices:
    """Prices and FX rates by date, carried forward to any later date."""

    def __init__(self, settlements: dict, closes: dict, fx: dict, splits: dict | None = None):
        self._s = {k: (sorted(v), v) for k, v in settlements.items()}
        self._c = {k: (sorted(v), v) for k, v in closes.items()}
        self._fx = {k: (sorted(v), v) for k, v in fx.items()}
        self._splits = splits or {}  # instrument -> [(date, old/new)] of its booked splits

    @staticmethod
    def _on(table: dict, key, day: dt.date):
        found = table.get(key)
        if not found:
            return None
        dates, values = found
        i = bisect.bisect_right(dates, day)
        return None if i == 0 else (dates[i - 1], values[dates[i - 1]])

    def price(self, contract: ContractInfo, day: dt.date) -> Decimal | None:
        s = self._on(self._s, contract.code, day)
        c = self._on(self._c, contract.instrument, day)
        if c is not None and contract.instrument in self._splits:  # quoted before a split: in today's units
            c = (c[0], restated(c[1], c[0], self._splits[contract.instrument], day))
        candidates = ([(s[0], 1, s[1])] if s else []) + ([(c[0], 0, c[1])] if c else [])
        return max(candidates)[2] if candidates else None

    def fx(self, ccy: str, base: str, day: dt.date) -> Decimal | None:
        if ccy == base:
            return Decimal(1)
        found = self._on(self._fx, ccy, day)
        return None if found is None else found[1]


def compute(moves: list[Move], contracts: dict[str, ContractInfo], prices: _Prices, base: str,
            days: list[dt.date], by: str) -> Series:
    """Replay the moves day by day; `by` is strategy, instrument or total."""
    qty: dict = defaultdict(lambda: ZERO)  # (holder, code) -> units
    basis: dict = defaultdict(lambda: ZERO)  # (holder, code) -> cost basis (shares)
    mark: dict = {}  # (holder, code) -> futures mark
    cash: dict = defaultdict(lambda: ZERO)
    deposits_base = ZERO
    groups: dict = defaultdict(dict)
    navs, deposits = {}, {}
    i = 0  # moves come in booking order (load_moves sorts them by time)

    def group(holder: str | None, code: str | None) -> str:
        if by == "strategy":
            return holder or UNATTRIBUTED
        if by == "instrument":
            info = contracts.get(code or "")
            return info.instrument if info else (code or "other")
        return TOTAL

    active: set = set()
    for day in days:
        today: dict = {key: Day() for key in active}  # a group with positions yesterday has a today
        today = defaultdict(Day, today)
        missing = set()
        while i < len(moves) and moves[i].day <= day:
            m = moves[i]
            i += 1
            if m.kind == "position":
                key = (m.holder, m.commodity)
                qty[key] += m.units
                basis[key] += m.basis
                if m.price is not None:
                    mark[key] = m.price
            elif m.kind in ("realized", "commission", "income"):
                d = today[group(m.holder, m.contract)]
                if m.kind == "income":
                    _add(d.income, m.commodity, m.units)
                elif m.kind == "realized":
                    _add(d.realized, m.commodity, m.units)
                    if m.contract is not None and m.price is not None and m.contract in contracts \
                            and contracts[m.contract].future:
                        mark[(m.holder, m.contract)] = m.price
                else:
                    _add(d.commissions, m.commodity, m.units)
            elif m.kind == "cash":
                cash[m.commodity] += m.units
            elif m.kind == "deposit":
                rate = prices.fx(m.commodity, base, m.day)
                deposits_base += m.units * (rate if rate is not None else ZERO)
        nav_total = ZERO
        for (holder, code), units in qty.items():
            info = contracts.get(code)
            if info is None or units == 0 and basis[(holder, code)] == 0:
                continue
            price = prices.price(info, day)
            if price is None:
                continue
            d = today[group(holder, code)]
            if info.future:
                value = units * (price - mark.get((holder, code), price)) * info.multiplier
                _add(d.unrealized, info.currency, value)
                nav_part = value
            else:
                market = units * price * info.multiplier
                _add(d.unrealized, info.currency, market - basis[(holder, code)])
                nav_part = market
            _add(d.exposure, info.currency, units * price * info.multiplier)
            rate = prices.fx(info.currency, base, day)
            if rate is None:
                missing.add(info.currency)
            else:
                nav_total += nav_part * rate
        for ccy, amount in cash.items():
            rate = prices.fx(ccy, base, day)
            if rate is None:
                missing.add(ccy) if amount else None
            else:
                nav_total += amount * rate
        for key, d in today.items():
            gone = set()
            for part, attr in ((d.realized, "base_realized"), (d.commissions, "base_commissions"),
                               (d.income, "base_income"), (d.unrealized, "base_unrealized")):
                total = ZERO
                for ccy, amount in part.items():
                    rate = prices.fx(ccy, base, day)
                    if rate is None:
                        gone.add(ccy)
                    else:
                        total += amount * rate
                setattr(d, attr, total)
            d.missing_fx = frozenset(gone)
            groups[key][day] = d
        active = {key for key, d in today.items() if d.unrealized or d.exposure}
        navs[day] = None if missing else nav_total
        deposits[day] = deposits_base
    return Series(tuple(days), dict(groups), navs, deposits, base)


# -- reading the database -------------------------------------------------------------------------

def contract_infos(ctx: Context) -> dict[str, ContractInfo]:
    result = {}
    for code, c in known_contracts(ctx.ledger).items():
        instrument = instrument_of_contract(ctx.config, code)
        result[code] = ContractInfo(code, c.currency, c.multiplier, c.sec_type == "FUT",
                                    instrument.name if instrument else code)
    return result


def load_prices(ctx: Context) -> _Prices:
    settlements, closes, fx = defaultdict(dict), defaultdict(dict), defaultdict(dict)
    with read_connection(ctx.engine) as conn:
        for code, d, v in conn.execute(sa.select(tables.settlement.c.contract, tables.settlement.c.date,
                                                 tables.settlement.c.price)):
            settlements[code][dt.date.fromisoformat(d)] = from_scaled(v)
        for name, d, v in conn.execute(sa.select(tables.price_bar.c.instrument, tables.price_bar.c.date,
                                                 tables.price_bar.c.close)):
            closes[name][dt.date.fromisoformat(d)] = from_scaled(v)
        for ccy, d, v in conn.execute(sa.select(tables.fx_rate.c.currency, tables.fx_rate.c.date,
                                                tables.fx_rate.c.rate)):
            fx[ccy][dt.date.fromisoformat(d)] = from_scaled(v)
        splits = booked_splits(conn)
    return _Prices(settlements, closes, fx, splits)


def _holder_name(ctx: Context, component: str) -> str:
    if component == "Unattributed":
        return UNATTRIBUTED
    strategy = ctx.config.strategy_by_account(component)
    return strategy.name if strategy else component


def load_moves(ctx: Context) -> list[Move]:
    """Every posting that moves P&L, cash, deposits or a position, with its entry's contract and price."""
    env, chart = ctx, ctx.chart
    holdings = chart.root + ":Strategy:"
    prefixes = ("Income:Trading:", "Expenses:Commissions:", *CARRY_ACCOUNTS, holdings, "Assets:")
    moves, metas, names = [], {}, {}

    def holder_of(account: str, component: str) -> str:
        if account not in names:
            names[account] = _holder_name(ctx, component)
        return names[account]

    rows = env.ledger.moves(prefixes, (chart.deposits,))
    # An internal cross names no price in its entry's metadata: its price is the run's reference
    # price, kept beside it (the engine marks both holders there, position_mark).
    with read_connection(ctx.engine) as conn:
        crossed = {txn_id: from_scaled(price) for txn_id, price in conn.execute(
            sa.select(tables.internal_cross.c.txn_id, tables.internal_cross.c.price)
            .where(tables.internal_cross.c.txn_id.is_not(None)))}
    entry_contract: dict[int, str] = {}  # an entry's contract when its metadata names none (reversals)
    # A corrected fill (trading/corrections.py) leaves a futures holder's mark where it was, unless
    # the holder was flat before the original's reversal; so the mark needs, per (holder, contract),
    # the position before the entry that moved it last (the reversal, booked just before).
    held: dict = defaultdict(lambda: ZERO)  # (account, code) -> units so far
    last_entry: dict = {}  # (account, code) -> (id of the newest entry that moved it, units before it)
    for ts, txn_id, account, commodity, units, weight, cost, meta in rows:
        if cost is not None and (account.startswith(holdings) or account == chart.unattributed):
            entry_contract.setdefault(txn_id, commodity)
    keeps_mark: set = set()  # (entry id, holder account) of corrections that leave the mark where it was

    def corrected(txn_id: int, account: str, code: str | None) -> None:
        entry, before = last_entry.get((account, code), (None, ZERO))
        if entry == txn_id:
            return  # decided at the entry's first line of this position
        if before != 0:  # the units before the reversal just before: the holder was not flat
            keeps_mark.add((txn_id, account))
        last_entry[(account, code)] = (txn_id, held[(account, code)])

    for ts, txn_id, account, commodity, units, weight, cost, meta in rows:
        if txn_id not in metas:
            parsed = json.loads(meta or "{}")
            price = parsed.get("price")
            metas[txn_id] = (parsed.get("contract") or entry_contract.get(txn_id),
                             Decimal(price) if price else crossed.get(txn_id), bool(parsed.get("corrects")))
        contract, price, correction = metas[txn_id]
        if correction and price is not None and account.startswith(("Income:Trading:", holdings, chart.unattributed)):
            component = account.rsplit(":", 1)[1] if account.startswith("Income:Trading:") else \
                "Unattributed" if account == chart.unattributed else account[len(holdings):]
            holding = chart.unattributed if component == "Unattributed" else holdings + component
            corrected(txn_id, holding, contract)
            if (txn_id, holding) in keeps_mark:
                price = None
        if cost is not None and (account.startswith(holdings) or account == chart.unattributed):
            key = (account, commodity)
            if last_entry.get(key, (None,))[0] != txn_id:
                last_entry[key] = (txn_id, held[key])
            held[key] += units
        day = dt.date.fromisoformat(ts[:10])
        amount = from_scaled(units)
        if account == chart.cash or (account.startswith("Assets:") and cost is None and not account.startswith(holdings)
                                     and account != chart.unattributed):  # cash, and money due (receivables)
            moves.append(Move(day, "cash", None, commodity, amount, entry=txn_id))
        elif account == chart.deposits:
            moves.append(Move(day, "deposit", None, commodity, -amount, entry=txn_id))
        elif account.startswith("Income:Trading:"):
            holder = holder_of(account, account.rsplit(":", 1)[1])
            moves.append(Move(day, "realized", holder, commodity, -amount, contract=contract, price=price, entry=txn_id))
        elif account.startswith("Expenses:Commissions:"):
            holder = holder_of(account, account.rsplit(":", 1)[1])
            moves.append(Move(day, "commission", holder, commodity, amount, contract=contract, entry=txn_id))
        elif account.startswith(CARRY_ACCOUNTS):  # what holding brought: income up, expenses down
            holder = holder_of(account, account.rsplit(":", 1)[1])
            moves.append(Move(day, "income", holder, commodity, -amount, contract=contract, entry=txn_id))
        elif cost is not None:  # a position (futures at zero cost, shares at their lot's cost)
            component = "Unattributed" if account == chart.unattributed else account[len(holdings):]
            holder = holder_of(account, component)
            moves.append(Move(day, "position", holder, commodity, amount, basis=from_scaled(weight),
                              price=price if contract == commodity else None, entry=txn_id))
    return moves


def day_range(moves: list[Move], prices_last: dt.date | None, until: dt.date | None) -> list[dt.date]:
    """Weekdays and days with an entry, from the first entry to the last entry or price date
    (before `until`)."""
    if not moves:
        return []
    last = max([moves[-1].day] + ([prices_last] if prices_last else []))
    if until is not None:
        last = min(last, until - dt.timedelta(days=1))
    entry_days = {m.day for m in moves}
    days, day = [], moves[0].day
    while day <= last:
        if day.weekday() < 5 or day in entry_days:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def last_price_date(ctx: Context) -> dt.date | None:
    with read_connection(ctx.engine) as conn:
        found = [conn.execute(sa.select(sa.func.max(table.c.date))).scalar()
                 for table in (tables.price_bar, tables.settlement)]
    found = [dt.date.fromisoformat(d) for d in found if d]
    return max(found) if found else None


def build(ctx: Context, by: str = "total", until: dt.date | None = None) -> Series:
    """The daily series of a session's ledger (every day from the first entry, so that a period
    starting later still knows the unrealized P&L it starts from)."""
    return build_many(ctx, (by,), until)[by]


def build_many(ctx: Context, bys, until: dt.date | None = None) -> dict[str, Series]:
    """Several groupings from one read of the postings and prices."""
    moves = load_moves(ctx)
    end_days = day_range(moves, last_price_date(ctx), until)
    contracts, prices = contract_infos(ctx), load_prices(ctx)
    base = ctx.settings.base_currency
    return {by: compute(moves, contracts, prices, base, end_days, by) for by in bys}


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT)
