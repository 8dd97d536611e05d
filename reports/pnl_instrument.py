"""`pnl --by instrument` over all time without the replay of every posting (reports/series.py).

By instrument the replay files each P&L posting (`Income:Trading`, `Expenses:Commissions`, the
carry accounts) under the instrument of its entry's contract (the entry's metadata, else the
contract of the entry's first position line, as series.load_moves reads it; no contract: the
group `other`), and each position's unrealized P&L under the instrument of the position's
contract. Over all time a row is therefore

    realized, commissions, income   the P&L postings of the instrument's entries, summed
    net                             those + the unrealized P&L of its positions at the last day

The unrealized part is `read_books`' (reports/pnl_fast.py: maintained lots, marks and the last
day's prices), valued position by position and summed per instrument instead of per holder.

The P&L sums are not maintained per contract: the balances are per account, and a strategy's
`Income:Trading` holds every instrument it trades. They are summed here in SQL, one GROUP BY over
the P&L accounts' postings joined to their entries (along ix_posting_period and the entry's key):
a row per (account, currency, contract), and per day for a currency other than the base (each
day converts at its own rate). That is O(P&L postings) in the database, not O(1), but it never
builds a Python object per posting, which is what the replay's ~7-10 us a posting is.

Where it cannot vouch for the replay's answer it returns None and the caller replays: whatever
`read_books` leaves to the replay, and an instrument whose positions no P&L posting names and no
price meets at the last day, while some price exists (whether a price met them on a day now past
decides whether the replay shows the row). tests/test_pnl_fast.py holds it equal to the replay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.reading import Reader
from tradeledger.ledger.accounts import UNATTRIBUTED as UNATTRIBUTED_COMPONENT
from tradeledger.reports.pnl_fast import CARRY_ACCOUNTS, COMMISSIONS, TRADING, ZERO, _Group, read_books, rows_adding_up

OTHER = "other"  # series.compute's group of a P&L posting whose entry names no contract


def instrument_pnl(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
                   instrument_name: Callable[[str], str]) -> dict | None:
    """`pnl(by="instrument")` over all time, or None: replay. The namers are `fast_pnl`'s."""
    books = read_books(reader, root, base, holder_name, instrument_name)
    groups = None if books is None else instrument_groups(reader, books, root, base, instrument_name)
    if groups is None:
        return None
    rows = [rename(row, "instrument") for row in rows_adding_up(groups, base, books.rates, books.end)]
    missing = set().union(*(g.missing for g in groups.values()))
    return {"by": "instrument", "since": None, "until": None, "currency": base, "rows": rows,
            "missing_fx": sorted(missing)}


def rename(row: dict, by: str) -> dict:
    """A `_Group.row` keyed by `by` instead of strategy, the key first (the replay's order)."""
    return {by: row.pop("strategy"), **row}


def instrument_groups(reader: Reader, books, root: str, base: str,
                      instrument_name: Callable[[str], str]) -> dict[str, _Group] | None:
    """Each instrument's figures over all time (`_Group`s, as `read_books` keeps them per holder),
    or None where only the replay can vouch for which instruments it shows."""
    contracts = books.contracts
    groups: dict[str, _Group] = {}
    if books.end is None:
        return groups

    def group_of(code: str | None) -> str:
        return instrument_name(code) if code in contracts else (code or OTHER)

    for part, sign, account_id, currency, contract, day, units in contract_sums(reader, books.names, root, base):
        group = groups.setdefault(group_of(contract), _Group())
        amount = sign * from_scaled(units)
        group.native(currency)[part] += amount
        if day is None:
            group.in_base[part] += amount
            continue
        if books.rates.on(currency, dt.date.fromisoformat(day)) is None:
            group.missing.add(currency)
        else:
            group.days.setdefault((day, currency), [ZERO, ZERO, ZERO])[part] += amount

    # a position priced at the last day: the replay has its instrument's row that day
    for (name, code), (units, basis) in books.held.items():
        if code not in books.prices or (units == 0 and basis == 0):
            continue
        group = groups.setdefault(group_of(code), _Group())
        currency = contracts[code][0]
        value = books.value(name, code, units, basis, books.prices[code])
        group.unrealized[currency] = group.unrealized.get(currency, ZERO) + value
    for _, code in books.held:
        if code in contracts and group_of(code) not in groups and code in books.prices:
            return None  # held once, priced some day maybe, named by no P&L posting: only the replay knows
    return groups


def contract_sums(reader: Reader, names: dict[int, str], root: str, base: str, since: str | None = None):
    """(part, sign, account id, currency, entry's contract or None, day or None, scaled units) of
    the P&L postings (from `since` on, else all), summed per account, currency and the contract
    of their entry, and per day where the currency is not `base` (Reader.contract_sums). part:
    0 realized, 1 commissions, 2 income; sign: the replay's (income up, expenses down)."""
    pnl_ids = [i for i, n in names.items() if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS))]
    holding_ids = [i for i, n in names.items()
                   if n.startswith(root + ":Strategy:") or n == f"{root}:{UNATTRIBUTED_COMPONENT}"]
    for account_id, currency, contract, on, units in reader.contract_sums(pnl_ids, holding_ids, base, since):
        account = names[account_id]
        part = 0 if account.startswith(TRADING) else 1 if account.startswith(COMMISSIONS) else 2
        yield part, (1 if part == 1 else -1), account_id, currency, contract, on, units
