"""The replay of reports/series.py by itself: pure functions over small records, no database.

`series.py` reads the ledger (through SQLAlchemy) and hands these its rows; reports/series_fast.py
hands them the same rows read on a raw connection (ledger/reading.py), so that a curve resumed
from a checkpoint (reports/series_checkpoint.py) is computed by this one code on either path and
a command that only reads it imports neither SQLAlchemy nor pandas. The model is series.py's:

- `moves_of(reader, ...)`: every posting that moves P&L, cash, deposits or a position, with its
  entry's contract and price, in booking order (`_EntryMoves`, each account's `role`);
- `fold`: each day's moves folded into one per what `compute` tells apart;
- `compute`: the days valued one by one, carrying a `Fold` (what a checkpoint keeps);
- `day_range`, `day_range_after`: the days a series has (weekdays and days with an entry).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from tradeledger.engine.accounting.restate import restated
from tradeledger.ledger.accounts import UNATTRIBUTED as UNATTRIBUTED_COMPONENT
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

    def last_on(self, day: dt.date) -> dict:
        """{settlement|close|fx: {key: (date, value)}}: the newest of each on or before `day`."""
        out: dict = {}
        for name, table in (("settlement", self._s), ("close", self._c), ("fx", self._fx)):
            out[name] = {key: found for key in table if (found := self._on(table, key, day)) is not None}
        return out

    def splits_through(self, day: dt.date) -> dict:
        """ticker -> [(date, old/new)] of the booked splits dated on or before `day`."""
        return {ticker: kept for ticker, found in self._splits.items() if (kept := [s for s in found if s[0] <= day])}

    def fx(self, ccy: str, base: str, day: dt.date) -> Decimal | None:
        if ccy == base:
            return Decimal(1)
        found = self._on(self._fx, ccy, day)
        return None if found is None else found[1]


@dataclass
class Fold:
    """`compute`'s state at the end of a day: what it needs to go on from there (each holder's
    units, cost basis and futures mark per contract, cash per currency, net deposits in base, the
    groups with something held) and the series so far (groups, NAV and deposits of each day).
    `codes`: every contract the moves named so far (reports/series_checkpoint.py checks that none of
    them became known to the config or the ledger since)."""

    qty: dict = field(default_factory=lambda: defaultdict(lambda: ZERO))  # (holder, code) -> units
    basis: dict = field(default_factory=lambda: defaultdict(lambda: ZERO))  # (holder, code) -> cost basis (shares)
    mark: dict = field(default_factory=dict)  # (holder, code) -> futures mark
    cash: dict = field(default_factory=lambda: defaultdict(lambda: ZERO))
    deposits_base: Decimal = ZERO
    active: set = field(default_factory=set)
    groups: dict = field(default_factory=lambda: defaultdict(dict))
    navs: dict = field(default_factory=dict)
    deposits: dict = field(default_factory=dict)
    codes: set = field(default_factory=set)


def compute(moves: list[Move], contracts: dict[str, ContractInfo], prices: _Prices, base: str,
            days: list[dt.date], by: str, start: Fold | None = None, cut: dt.date | None = None,
            on_cut=None) -> Series:
    """Replay the moves day by day; `by` is strategy, instrument or total. `start`: the state at the
    end of the day before `days` (a checkpoint's; else nothing held, nothing yet), which this
    carries on; `on_cut(state)` is called once the day `cut` is done (a checkpoint to be)."""
    state = start if start is not None else Fold()
    qty, basis, mark, cash, codes = state.qty, state.basis, state.mark, state.cash, state.codes
    groups, navs, deposits = state.groups, state.navs, state.deposits
    i = 0  # moves come in booking order (load_moves sorts them by time)

    def group(holder: str | None, code: str | None) -> str:
        if by == "strategy":
            return holder or UNATTRIBUTED
        if by == "instrument":
            info = contracts.get(code or "")
            return info.instrument if info else (code or "other")
        return TOTAL

    for day in days:
        today: dict = {key: Day() for key in state.active}  # a group with positions yesterday has a today
        today = defaultdict(Day, today)
        missing = set()
        while i < len(moves) and moves[i].day <= day:
            m = moves[i]
            i += 1
            if m.kind == "position":
                key = (m.holder, m.commodity)
                codes.add(m.commodity)
                qty[key] += m.units
                basis[key] += m.basis
                if m.price is not None:
                    mark[key] = m.price
            elif m.kind in ("realized", "commission", "income"):
                codes.add(m.contract)
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
                state.deposits_base += m.units * (rate if rate is not None else ZERO)
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
            for part in (d.realized, d.commissions, d.income):  # a currency whose day nets to nothing
                for ccy in [ccy for ccy, amount in part.items() if not amount]:  # needs no rate
                    del part[ccy]
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
        state.active = {key for key, d in today.items() if d.unrealized or d.exposure}
        navs[day] = None if missing else nav_total
        deposits[day] = state.deposits_base
        if day == cut and on_cut is not None:
            on_cut(state)
    return series_of(state, base)


def series_of(state: Fold, base: str, until: dt.date | None = None) -> Series:
    """The series a state holds (its days before `until`): a group with no day left is none."""
    days = tuple(day for day in state.navs if until is None or day < until)
    if until is None:
        groups = dict(state.groups)
    else:
        groups = {key: kept for key, per_day in state.groups.items()
                  if (kept := {day: d for day, d in per_day.items() if day < until})}
    return Series(days, groups, {day: state.navs[day] for day in days},
                  {day: state.deposits[day] for day in days}, base)



# A posting's move as `moves_of` yields it, before folding: (day as text, kind, holder,
# commodity, units, basis, contract, price, entry id), units and basis in nano-units (P&L sign).
RawMove = tuple
DEPOSITS = "Equity:Deposits"  # Chart.deposits


def replay_accounts(names: dict[int, str], root: str) -> dict[int, str]:
    """id -> name of the accounts whose postings the replay reads (`names`: every account's)."""
    prefixes = ("Income:Trading:", "Expenses:Commissions:", *CARRY_ACCOUNTS, root + ":Strategy:", "Assets:")
    return {i: name for i, name in names.items() if name.startswith(prefixes) or name == DEPOSITS}


CROSSED_SQL = "SELECT txn_id, price FROM internal_cross WHERE txn_id IS NOT NULL"


def crossed_prices(rows) -> dict:
    """entry id -> the run's reference price of an internal cross (CROSSED_SQL's rows): its entry
    names no price in its metadata, and the engine marks both holders there (position_mark)."""
    return {txn_id: from_scaled(price) for txn_id, price in rows}


def moves_of(reader, accounts: dict[int, str], roles: dict[int, tuple], crossed: dict,
             since: dt.date | None = None, entries: tuple | None = None, cut: dt.date | None = None,
             at_cut: dict | None = None) -> Iterator[RawMove]:
    """Every posting of `accounts` that moves P&L, cash, deposits or a position, with its entry's
    contract and price, in booking order, streamed from the reader's one read transaction (never
    all in memory). `roles`: account id -> `role`.

    `since`: only the entries from that day on, `entries` the replay's state before them
    (`_EntryMoves.state`, a checkpoint's). `cut`: `at_cut["entries"]` is set to that state at the
    end of the day `cut` (once an entry of a later day comes, or at the end)."""
    replay = _EntryMoves(roles, crossed, entries)
    if accounts:
        start = None if since is None else since.isoformat()
        end = None if cut is None else cut.isoformat()
        # The postings in booking order, and beside them, in the same order, every entry's
        # metadata: read once an entry, not once a posting (a merge: the postings name a subset
        # of the entries, in the order of all).
        metas = reader.metas_in_order(start)
        for txn_id, rows in itertools.groupby(reader.postings_in_order(list(accounts), start),
                                              key=lambda row: row[1]):
            meta_of, meta = next(metas)
            while meta_of != txn_id:
                meta_of, meta = next(metas)
            rows = list(rows)
            if end is not None and at_cut is not None and "entries" not in at_cut and rows[0][0][:10] > end:
                at_cut["entries"] = replay.state()
            yield from replay.moves(rows, meta)
    if at_cut is not None and "entries" not in at_cut:
        at_cut["entries"] = replay.state()


class _EntryMoves:
    """The moves of each entry in turn, with what a futures holder's mark needs from the entries
    before it (the position before the entry that moved it last)."""

    def __init__(self, roles: dict[int, tuple], crossed: dict, state: tuple | None = None):
        self.crossed = crossed
        self.roles = roles  # account id -> `role` of the account
        # A corrected fill (trading/corrections.py) leaves a futures holder's mark where it was,
        # unless the holder was flat before the original's reversal; so the mark needs, per
        # (holder, contract), the position before the entry that moved it last (the reversal,
        # booked just before).
        self.held: dict = defaultdict(int)  # (account, code) -> units so far (nano)
        self.last_entry: dict = {}  # (account, code) -> (id of the newest entry that moved it, units before it)
        if state is not None:
            held, last_entry = state
            self.held.update(held)
            self.last_entry.update(last_entry)

    def state(self) -> tuple[dict, dict]:
        """What the next entries need from these (a copy): units held and the last entry per
        (account, contract)."""
        return dict(self.held), dict(self.last_entry)

    def moves(self, rows: list, meta: str | None) -> Iterator[RawMove]:
        """The moves of one entry's rows (ts, id, account id, commodity, units, weight, cost)."""
        roles, held, last_entry = self.roles, self.held, self.last_entry
        txn_id = rows[0][1]
        # The entry's contract when its metadata names none (reversals): its first position line's.
        first = next((commodity for _, _, account_id, commodity, _, _, cost in rows
                      if cost is not None and roles[account_id][3]), None)
        parsed = json.loads(meta or "{}")
        stated = parsed.get("price")
        contract = parsed.get("contract") or first
        entry_price = Decimal(stated) if stated else self.crossed.get(txn_id)
        correction = bool(parsed.get("corrects"))
        keeps_mark: set = set()  # holder accounts whose mark this correction leaves where it was
        day = rows[0][0][:10]
        for _, _, account_id, commodity, units, weight, cost in rows:
            kind, holder, holding, held_here = roles[account_id]
            price = entry_price
            if correction and price is not None and holding is not None:
                entry, before = last_entry.get((holding, contract), (None, 0))
                if entry != txn_id:  # decided at the entry's first line of this position
                    if before != 0:  # the units before the reversal just before: the holder was not flat
                        keeps_mark.add(holding)
                    last_entry[(holding, contract)] = (txn_id, held[(holding, contract)])
                if holding in keeps_mark:
                    price = None
            if cost is not None and held_here:
                key = (holding, commodity)
                if last_entry.get(key, (None,))[0] != txn_id:
                    last_entry[key] = (txn_id, held[key])
                held[key] += units
            if kind == "cash" or kind == "asset" and cost is None:  # cash, and money due (receivables)
                yield (day, "cash", None, commodity, units, 0, None, None, txn_id)
            elif kind == "deposit":
                yield (day, "deposit", None, commodity, -units, 0, None, None, txn_id)
            elif kind == "realized":
                yield (day, "realized", holder, commodity, -units, 0, contract, price, txn_id)
            elif kind == "commission":
                yield (day, "commission", holder, commodity, units, 0, contract, None, txn_id)
            elif kind == "income":  # what holding brought: income up, expenses down
                yield (day, "income", holder, commodity, -units, 0, contract, None, txn_id)
            elif cost is not None:  # a position (futures at zero cost, shares at their lot's cost)
                yield (day, "position", holder, commodity, units, weight, None,
                       price if contract == commodity else None, txn_id)



def role(root: str, holder_name: Callable[[str], str], account: str) -> tuple[str, str | None, str | None, bool]:
    """What an account's postings are to the replay: (kind, holder, the holding account a
    correction's mark is kept for, whether it holds positions). kind: cash (the broker's cash
    account), asset (another asset: cash due without a cost, a position with one), holding (a
    position with a cost), deposit, realized, commission, income. `root`: the broker account's
    (Chart.root); `holder_name(component)`: the strategy an account component is (series._holder_name)."""
    holdings = root + ":Strategy:"
    unattributed = f"{root}:{UNATTRIBUTED_COMPONENT}"
    component = account.rsplit(":", 1)[1]
    if account == root + ":Cash":
        kind = "cash"
    elif account.startswith(holdings) or account == unattributed:
        kind, component = "holding", "Unattributed" if account == unattributed else account[len(holdings):]
    elif account.startswith("Assets:"):
        kind, component = "asset", account[len(holdings):]  # a position there is named as the replay always did
    elif account == DEPOSITS:
        kind = "deposit"
    elif account.startswith("Income:Trading:"):
        kind = "realized"
    elif account.startswith("Expenses:Commissions:"):
        kind = "commission"
    elif account.startswith(CARRY_ACCOUNTS):
        kind = "income"
    else:
        kind = "holding"  # a position line (with a cost) is all the replay reads there
    holding = None
    if account.startswith(("Income:Trading:", holdings, unattributed)):
        part = account.rsplit(":", 1)[1] if account.startswith("Income:Trading:") else \
            "Unattributed" if account == unattributed else account[len(holdings):]
        holding = unattributed if part == "Unattributed" else holdings + part
    return kind, holder_name(component), holding, account.startswith(holdings) or account == unattributed



def unfolded(raw: Iterable[RawMove]) -> list[Move]:
    """A Move per posting, as they come: what `fold` must be equal to under `compute` (the tests)."""
    return [Move(dt.date.fromisoformat(day), kind, holder, commodity, from_scaled(units), basis=from_scaled(basis),
                 contract=contract, price=price, entry=entry)
            for day, kind, holder, commodity, units, basis, contract, price, entry in raw]


@dataclass
class Folded:
    """How many postings' moves `fold` has folded in this process: what the tests count to see
    that a read folds each posting once (reports/series_fast.py hands a read over before folding)."""

    moves: int = 0


FOLDED = Folded()


def fold(raw: Iterable[RawMove], contracts: dict[str, ContractInfo]) -> list[Move]:
    """The moves of each day folded into one per what `compute` tells apart: cash and deposits per
    currency; realized, commissions and income per holder, currency and contract; positions per
    holder and contract (units and cost basis summed in nano-units, exactly), each carrying the
    mark the day's last mark-setting move left (a position line's price, or a futures contract's
    realized P&L at its entry's price, as `compute` sets them). `compute` values the day only after
    all of its moves, so it gives the same series for these as for every posting's own move."""
    out: list[Move] = []
    day, sums, positions, marks = None, {}, {}, {}
    n = 0
    try:
        for n, (d, kind, holder, commodity, units, basis, contract, price, _) in enumerate(raw, 1):
            if d != day:
                if day is not None:
                    out.extend(_day_moves(day, sums, positions, marks))
                day, sums, positions, marks = d, {}, {}, {}
            if kind == "position":
                key = (holder, commodity)
                held = positions.get(key)
                if held is None:
                    positions[key] = [units, basis]
                else:
                    held[0] += units
                    held[1] += basis
                if price is not None:
                    marks[key] = price
            else:
                key = (kind, holder, commodity, contract)
                sums[key] = sums.get(key, 0) + units
                if kind == "realized" and contract is not None and price is not None and contract in contracts \
                        and contracts[contract].future:
                    marks[(holder, contract)] = price
    finally:  # counted also when the stream is stopped midway
        FOLDED.moves += n
    if day is not None:
        out.extend(_day_moves(day, sums, positions, marks))
    return out


def _day_moves(day: str, sums: dict, positions: dict, marks: dict) -> list[Move]:
    date = dt.date.fromisoformat(day)
    moves = [Move(date, kind, holder, commodity, from_scaled(units), contract=contract)
             for (kind, holder, commodity, contract), units in sums.items()]
    for key in list(positions) + [key for key in marks if key not in positions]:
        units, basis = positions.get(key, (0, 0))
        moves.append(Move(date, "position", key[0], key[1], from_scaled(units), basis=from_scaled(basis),
                          price=marks.get(key)))
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



def day_range_after(start: dt.date, moves: list[Move], prices_last: dt.date | None,
                    until: dt.date | None) -> list[dt.date]:
    """`day_range`'s days after `start` (a checkpoint's day), `moves` those after it: the same
    days the whole range has there."""
    return days_after(start, {m.day for m in moves}, prices_last, until)


def days_after(start: dt.date, entry_days: set, prices_last: dt.date | None, until: dt.date | None) -> list[dt.date]:
    """`day_range_after` from the days the moves after `start` fall on. Given only some of those
    days, it gives some of the days (a day more can only add days)."""
    last = max([start, *entry_days] + ([prices_last] if prices_last else []))
    if until is not None:
        last = min(last, until - dt.timedelta(days=1))
    days, day = [], start + dt.timedelta(days=1)
    while day <= last:
        if day.weekday() < 5 or day in entry_days:
            days.append(day)
        day += dt.timedelta(days=1)
    return days



def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT)


def prices_from(settlements: Iterable, closes: Iterable, fx: Iterable, splits: dict,
                carried: dict | None = None) -> _Prices:
    """The prices of the rows (key, date as text, scaled value) of `settlement`, `price_bar` and
    `fx_rate`, and the booked splits; `carried` (`_Prices.last_on(day)`, a checkpoint's) the
    newest of each on or before the day the rows start after."""
    tables: dict = {"settlement": defaultdict(dict), "close": defaultdict(dict), "fx": defaultdict(dict)}
    for name, target in tables.items():
        for key, (day, value) in (carried or {}).get(name, {}).items():
            target[key][day] = value
    for rows, target in ((settlements, tables["settlement"]), (closes, tables["close"]), (fx, tables["fx"])):
        for code, d, v in rows:
            target[code][dt.date.fromisoformat(d)] = from_scaled(v)
    return _Prices(tables["settlement"], tables["close"], tables["fx"], splits)
