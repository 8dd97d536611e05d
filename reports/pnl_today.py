"""`status`'s P&L of today in the base currency, as `pnl --by day --since today` sums it, without
the replay of every posting (reports/series.py) it would take.

The days of `pnl --by day` from `today` on add up (reports/pnl.py's `_row`) to

    cents(cumulative at the last day) - cents(cumulative at the end of the day before today)

and the cumulative figure at the end of a day is realized + income - commissions booked up to
then, plus the unrealized P&L of the positions then, at that day's prices and rates. The first is
`fast_pnl`'s all-time figure (reports/pnl_fast.py). The second is the same less what was booked
from today on: the P&L postings and the lots of today (an index range each, ix_posting_period),
and the futures marks as they were before today's entries, looked up backwards only for the
positions today's entries touched (the rest are `position_mark`'s). When no day from today on
would show a row, the sum is the plain 0 the command adds up from no rows.

Where it cannot vouch for the replay's answer it returns None and the caller replays: whatever
`fast_pnl` leaves to the replay, a rate missing on a day the replay converts, an entry of today
that moves a position but names no contract, a position moved today with neither a P&L posting
nor a price to show it, a mark further back than a few thousand postings, or one a corrected
fill set (whether it kept the mark of before depends on the position before its reversal).
tests/test_pnl_fast.py holds it equal to the replay on random ledgers on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal

from tradeledger.ledger.accounts import UNATTRIBUTED as UNATTRIBUTED_COMPONENT
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.reading import FACTOR, Reader
from tradeledger.reports.pnl_fast import CARRY_ACCOUNTS, CENT, COMMISSIONS, TRADING, ZERO, prices_on, read_books

LOOK_BACK = 5000  # postings read backwards for one mark before the replay is cheaper to trust


def pnl_today(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
              instrument_name: Callable[[str], str], today: dt.date) -> Decimal | int | None:
    """The sum of the nets of `pnl --by day --since today`'s rows, or None: replay."""
    books = read_books(reader, root, base, holder_name, instrument_name)
    if books is None or any(g.missing for g in books.groups.values()):
        return None
    if books.end is None or books.end < today:
        return 0  # no day from today on: no rows
    since = today.isoformat()
    rates, names, end = books.rates, books.names, books.end
    last = sum((r + i - c + u for r, c, i, u in (g.exact(rates, end) for g in books.groups.values())), ZERO)

    # what was booked from today on: P&L postings, lots, the entries that touched futures positions
    booked_today, base_today = False, ZERO  # P&L postings from today on; their base-currency part
    for (aid, currency), units in _sums_since(reader, [i for i, n in names.items()
                                                    if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS))], since):
        booked_today = True
        if currency == base:  # another currency's days are apart (_Group.days), cut by `before`
            base_today += from_scaled(units)  # r + i - c = -(the postings): today's come back off
    held, moved_today = held_before(reader, books, root, since)

    contracts = books.contracts
    before = _day_before(reader, books, names, today)
    unrealized: dict[str, Decimal] = {}
    active = False
    if before is not None:
        valued = valued_before(reader, books, root, held, moved_today, since, before, instrument_name)
        if valued is None:
            return None
        for _name, _code, currency, value, gross in valued:
            active = active or value != 0 or gross != 0
            unrealized[currency] = unrealized.get(currency, ZERO) + value
    start = ZERO
    if before is not None:
        for group in books.groups.values():
            r, c, i, _ = group.exact(rates, end, before=since)
            start += r + i - c
        start += base_today
        start += sum((amount * rates.on(currency, before) for currency, amount in unrealized.items()), ZERO)

    at_end = prices_on(reader, sorted({code for _, code in books.held if code in contracts}), instrument_name, end)
    priced_now = any(code in contracts and (units != 0 or basis != 0) and code in at_end
                     for (_, code), (units, basis) in books.held.items())
    if not (booked_today or active or priced_now):
        if any(code in at_end for _, code in moved_today):
            return None  # moved from today on, priced on some day maybe: only the replay knows
        return 0
    return 0 + (last.quantize(CENT) - start.quantize(CENT))


def held_before(reader: Reader, books, root: str, since: str) -> tuple[dict, set]:
    """The positions at the end of the day before `since`, (holder name, code) -> (units, basis):
    the maintained lots less the cost-bearing postings from `since` on; and the keys they moved."""
    account_id = {name: i for i, name in books.names.items()}
    holding_ids = {account_id[_holding(root, component)]: name for name, component in books.component_of.items()}
    held = dict(books.held)
    moved = set()
    for (aid, code), (units, basis) in _lots_since(reader, list(holding_ids), since).items():
        key = (holding_ids[aid], code)
        units_now, basis_now = held[key]
        held[key] = (units_now - from_scaled(units), basis_now - from_scaled(basis))
        moved.add(key)
    return held, moved


def valued_before(reader: Reader, books, root: str, held: dict, moved: set, since: str, before: dt.date,
                  instrument_name: Callable[[str], str]) -> list[tuple] | None:
    """Each priced position of `held` (`held_before`) at `before`'s prices, as (holder name, code,
    currency, unrealized, units x price x multiplier); a future against its mark as it stood
    before `since` (looked up backwards where an entry from `since` on touched it). None when such
    a mark lies further back than LOOK_BACK postings, or `_touched_today` cannot say: replay."""
    contracts = books.contracts
    prices = prices_on(reader, sorted({code for _, code in held if code in contracts}), instrument_name, before)
    touched = _touched_today(reader, books, since, moved)
    if touched is None:
        return None
    valued = []
    for (name, code), (units, basis) in held.items():
        price = prices.get(code)
        if code not in contracts or units == 0 and basis == 0 or price is None:
            continue
        currency, multiplier, future = contracts[code]
        if future:
            component = books.component_of[name]
            mark = books.marks.get((component, code))
            if (name, code) in touched and units != 0:  # an entry from `since` on may have moved its mark
                mark = _mark_before(reader, root, component, code, since)
                if mark is False:
                    return None
            value = units * (price - (price if mark is None else mark)) * multiplier
        else:
            value = units * price * multiplier - basis
        valued.append((name, code, currency, value, units * price * multiplier))
    return valued


def _holding(root: str, component: str) -> str:
    return f"{root}:{UNATTRIBUTED_COMPONENT}" if component == UNATTRIBUTED_COMPONENT else f"{root}:Strategy:{component}"


def _sums_since(reader: Reader, account_ids: list[int], since: str):
    """((account id, commodity), scaled units) of the postings from `since` on."""
    for aid, commodity, units in reader.sums_since(account_ids, since):
        yield (aid, commodity), units


def _lots_since(reader: Reader, account_ids: list[int], since: str) -> dict:
    """(scaled units, scaled cost basis) per (account id, commodity) of the cost-bearing postings
    from `since` on."""
    moved: dict = {}
    for aid, commodity, cost, units in reader.lots_since(account_ids, since):
        held, basis = moved.get((aid, commodity), (0, 0))
        moved[(aid, commodity)] = (held + units, basis + units * cost // FACTOR)
    return moved


def _day_before(reader: Reader, books, names: dict, today: dt.date) -> dt.date | None:
    """The replay's last day before `today`: a weekday or a day with an entry, not before its first."""
    if books.first is None or books.first >= today:
        return None
    weekday = today - dt.timedelta(days=1)
    while weekday.weekday() >= 5:
        weekday -= dt.timedelta(days=1)
    move_ids = [i for i, n in names.items()
                if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS, "Assets:")) or n == "Equity:Deposits"]
    newest = reader.last_before(move_ids, today.isoformat())
    entry_day = dt.date.fromisoformat(newest[:10]) if newest else None
    candidates = [d for d in (weekday if weekday >= books.first else None, entry_day) if d is not None]
    return max(candidates) if candidates else None


def _touched_today(reader: Reader, books, since: str, moved_today: set) -> set | None:
    """(holder name, code) of the futures whose mark today's entries may have moved: a position
    posting, or a P&L posting of the holder in an entry about the contract; None when an entry
    with a price names no contract (the replay then takes one from its postings)."""
    touched = set(moved_today)
    holder_of = {f"{TRADING}{component}": name for name, component in books.component_of.items()}
    trading_ids = [i for i, n in books.names.items() if n in holder_of]
    for aid, meta in reader.metas_since(trading_ids, since):
        parsed = json.loads(meta or "{}")
        if parsed.get("contract"):
            touched.add((holder_of[books.names[aid]], parsed["contract"]))
        elif parsed.get("price"):
            return None
    return touched


def _mark_before(reader: Reader, root: str, component: str, code: str, since: str) -> Decimal | None | bool:
    """The replay's mark of a holder's future before `since`: the price of the newest entry before
    it that moved the position or booked the holder's P&L about the contract, naming a price (an
    internal cross: its reference price). None: no such entry; False: not decided within
    LOOK_BACK postings. Read newest first along ix_posting_period; ties of time by entry and line."""
    found = []
    for account, own in ((_holding(root, component), True), (f"{TRADING}{component}", False)):
        rows = reader.newest_before(account, since, LOOK_BACK + 1)
        hit = None
        for n, (ts, txn_id, posting_id, commodity, cost, meta) in enumerate(rows):
            if hit is not None and ts != hit[0][0]:
                break  # every line of the newest time with a candidate is read
            if own and (commodity != code or cost is None):
                continue
            parsed = json.loads(meta or "{}")
            price = Decimal(parsed["price"]) if parsed.get("price") else _crossed(reader, txn_id)
            if price is None:
                continue
            if not parsed.get("contract") or parsed.get("corrects"):
                return False  # the replay takes the contract from the entry's postings; a corrected
                # fill keeps the mark of before its reversal or takes its price (series.load_moves)
            if parsed["contract"] == code and (hit is None or (ts, txn_id, posting_id) > hit[0]):
                hit = ((ts, txn_id, posting_id), price)
        else:
            if len(rows) > LOOK_BACK:
                return False
        if hit is not None:
            found.append(hit)
    return max(found)[1] if found else None


def _crossed(reader: Reader, txn_id: int) -> Decimal | None:
    """An internal cross's price (its entry's metadata names none; series.load_moves reads it so)."""
    for (price,) in reader.rows("SELECT price FROM internal_cross WHERE txn_id = ?", (txn_id,)):
        return from_scaled(price)
    return None
