"""A checkpoint of the trader's curves as stored and read back, and whether it is still valid:
pure functions over its row and small records, no database (reports/series_checkpoint.py says
what is kept, when, and why each rule; it and reports/series_fast.py both decide by these).

`encode` and `decode_fold` keep a `replay.Fold` exactly (Decimals as their own text, dicts as
lists in their order); `usable` is the one decision whether stored checkpoints can be resumed
from (their counts of entries and price changes on or before their day unchanged, the same
splits, roles, contracts, base currency and `FORMAT`); `cut_day` the day a read keeps a new one at.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradeledger.reports import replay as S

FORMAT = 1
ZERO = Decimal(0)


@dataclass(frozen=True)
class Checkpoint:
    by: str
    day: dt.date
    fold: S.Fold
    entries: tuple  # _EntryMoves.state()
    prices: dict  # _Prices.last_on(day)


@dataclass(frozen=True)
class Counts:
    """What a checkpoint at the end of `day` depends on, counted before the data was read."""

    day: dt.date
    entries: int
    price_changes: int  # the sum of `price_change.n` on or before `day`
    folded: int = 0  # the price changes folded into fewer rows so far (PRUNED_SQL), when it writes


# -- encoding (exact: Decimals as their text, dicts as lists in their order) ------------------------

def _d(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _D(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _pairs(mapping: dict) -> list:
    return [[key, str(value)] for key, value in mapping.items()]


def _unpairs(pairs: list) -> dict:
    return {key: Decimal(value) for key, value in pairs}


def _day(d: S.Day) -> list:
    return [_pairs(d.realized), _pairs(d.commissions), _pairs(d.income), _pairs(d.unrealized), _pairs(d.exposure),
            str(d.base_realized), str(d.base_commissions), str(d.base_income), str(d.base_unrealized),
            sorted(d.missing_fx)]


def _undo_day(row: list) -> S.Day:
    return S.Day(_unpairs(row[0]), _unpairs(row[1]), _unpairs(row[2]), _unpairs(row[3]), _unpairs(row[4]),
                 Decimal(row[5]), Decimal(row[6]), Decimal(row[7]), Decimal(row[8]), frozenset(row[9]))


def encode_fold(state: S.Fold) -> dict:
    return {
        "qty": [[h, c, str(v)] for (h, c), v in state.qty.items()],
        "basis": [[h, c, str(v)] for (h, c), v in state.basis.items()],
        "mark": [[h, c, str(v)] for (h, c), v in state.mark.items()],
        "cash": _pairs(state.cash),
        "deposits_base": str(state.deposits_base),
        "active": sorted(state.active),
        "codes": sorted(code for code in state.codes if code is not None) + ([None] if None in state.codes else []),
        "groups": [[key, [[day.isoformat(), _day(d)] for day, d in days.items()]] for key, days in state.groups.items()],
        "navs": [[day.isoformat(), _d(v)] for day, v in state.navs.items()],
        "deposits": [[day.isoformat(), str(v)] for day, v in state.deposits.items()],
    }


def decode_fold(data: dict) -> S.Fold:
    state = S.Fold()
    for target, name in ((state.qty, "qty"), (state.basis, "basis"), (state.mark, "mark")):
        for holder, code, value in data[name]:
            target[(holder, code)] = Decimal(value)
    state.cash.update(_unpairs(data["cash"]))
    state.deposits_base = Decimal(data["deposits_base"])
    state.active = set(data["active"])
    state.codes = set(data["codes"])
    for key, days in data["groups"]:
        state.groups[key] = {dt.date.fromisoformat(day): _undo_day(d) for day, d in days}
    state.navs.update({dt.date.fromisoformat(day): _D(v) for day, v in data["navs"]})
    state.deposits.update({dt.date.fromisoformat(day): Decimal(v) for day, v in data["deposits"]})
    return state


def _prices_out(last: dict) -> dict:
    return {name: [[key, day.isoformat(), str(value)] for key, (day, value) in found.items()]
            for name, found in last.items()}


def _prices_in(data: dict) -> dict:
    return {name: {key: (dt.date.fromisoformat(day), Decimal(value)) for key, day, value in rows}
            for name, rows in data.items()}


def _splits_out(splits: dict) -> dict:
    return {ticker: [[day.isoformat(), str(ratio)] for day, ratio in found] for ticker, found in sorted(splits.items())}


def _contracts_out(contracts: dict) -> dict:
    return {code: [c.currency, str(c.multiplier), c.future, c.instrument] for code, c in sorted(contracts.items())}


def encode(by: str, state: S.Fold, entries: tuple, prices: S._Prices, day: dt.date, base: str,
           roles: dict, max_account: int, contracts: dict) -> str:
    held, last_entry = entries
    return json.dumps({
        "by": by, "base": base, "roles": {name: list(role) for name, role in roles.items()},
        "max_account": max_account, "contracts": _contracts_out(contracts),
        "splits": _splits_out(prices.splits_through(day)), "prices": _prices_out(prices.last_on(day)),
        "entries": {"held": [[a, c, v] for (a, c), v in held.items()],
                    "last_entry": [[a, c, e, b] for (a, c), (e, b) in last_entry.items()]},
        "fold": encode_fold(state),
    }, separators=(",", ":"))



# -- validity -------------------------------------------------------------------------------------

def _still_valid(payload: dict, base: str, roles: dict, accounts: dict, contracts: dict, splits_now: dict,
                 day: dt.date) -> bool:
    """The config, chart, contracts and splits as the checkpoint's state was computed with them."""
    if payload["base"] != base:
        return False
    stored_roles = payload["roles"]
    for account_id, name in accounts.items():
        if name in stored_roles:
            if list(roles[name]) != stored_roles[name]:
                return False
        elif account_id <= payload["max_account"]:  # an account the replay did not read then
            return False
    if any(name not in roles for name in stored_roles):
        return False
    stored = payload["contracts"]
    now = _contracts_out(contracts)
    if any(now.get(code) != info for code, info in stored.items()):
        return False
    seen = set(payload["fold"]["codes"])
    if any(code in seen for code in now if code not in stored):  # a contract it valued without knowing it
        return False
    return _splits_out({t: [s for s in found if s[0] <= day] for t, found in splits_now.items()
                        if any(s[0] <= day for s in found)}) == payload["splits"]




def usable(rows: dict, bys: tuple, count_at: Callable[[dt.date], Counts], splits_now: Callable[[], dict],
           base: str, roles: dict, accounts: dict, contracts: dict, fmt: int = FORMAT) -> list[Checkpoint] | None:
    """The stored checkpoints of every grouping in `bys`, all at one day and all valid, or None.
    `rows`: grouping -> (day, format, entries, price changes, payload) as stored; `count_at(day)`
    the ledger's counts now; `splits_now()` the booked splits now; `roles` and `accounts` the
    replay's accounts (name -> `replay.role`, id -> name), `contracts` its ContractInfos."""
    if set(rows) != set(bys) or len({row[0] for row in rows.values()}) != 1 \
            or any(row[1] != fmt for row in rows.values()):
        return None
    day = dt.date.fromisoformat(next(iter(rows.values()))[0])
    now = count_at(day)
    if any((row[2], row[3]) != (now.entries, now.price_changes) for row in rows.values()):
        return None
    splits = splits_now()
    found = []
    for by in bys:
        payload = json.loads(rows[by][4])
        if payload["by"] != by or not _still_valid(payload, base, roles, accounts, contracts, splits, day):
            return None
        entries = payload["entries"]
        found.append(Checkpoint(by, day, decode_fold(payload["fold"]),
                                ({(a, c): v for a, c, v in entries["held"]},
                                 {(a, c): (e, b) for a, c, e, b in entries["last_entry"]}),
                                _prices_in(payload["prices"])))
    return found


def cut_day(last_entry_time: str | None, prices_last: dt.date | None, until: dt.date | None,
            found: list[Checkpoint] | None) -> dt.date | None:
    """The day a read keeps the state of (the day before the ledger's last: its newest entry or
    price), or None: nothing newer to keep (cut short by `until`, or the checkpoint is at it)."""
    ends = [d for d in ([dt.date.fromisoformat(last_entry_time[:10])] if last_entry_time else []) + [prices_last] if d]
    cut = max(ends) - dt.timedelta(days=1) if ends else None
    if cut is not None and (until is not None and until <= cut or found and found[0].day >= cut):
        return None
    return cut


def kept_day(days: list[dt.date], cut: dt.date | None) -> dt.date | None:
    """The day of the series whose end state a read keeps as the checkpoint of `cut` (the
    series' last day on or before it: no move between), or None: none kept (no cut, no day of
    the series on or before it, or the series ends before the cut, whose days up to it are not
    all known yet)."""
    if cut is None or not days or days[-1] < cut:
        return None
    return max((d for d in days if d <= cut), default=None)


def keeps_newer(start: dt.date, cut: dt.date | None, until: dt.date | None, prices_last: dt.date | None,
                move_days: set) -> bool:
    """Whether a read resumed from the checkpoint of `start` surely keeps a newer one (`kept_day`
    of its days is not None), knowing only some of the days the moves after `start` fall on
    (`move_days`): those days are some of the series' days (`replay.days_after`), and a day more
    only adds days, so once true it stays true whatever else the moves bring. reports/series_fast.py
    hands such a read to the full path before folding the moves, not after (which folded them twice)."""
    return cut is not None and kept_day(S.days_after(start, move_days, prices_last, until), cut) is not None


CHECKPOINTS_SQL = ("SELECT series_by, day, format, entries, price_changes, payload FROM series_checkpoint "
                   "WHERE series_by IN ({})")
# The price changes on or before a day: a row stands for `n` of them (the rows a prune folded into
# one, migration 0017), read from the index on (day, n).
PRICE_CHANGES_SQL = "SELECT COALESCE(SUM(n), 0) FROM price_change WHERE day <= ?"
# How many rows the prunes have folded away so far: it grows with each prune, and with nothing else
# (a new row adds one to the sum and one to the count).
PRUNED_SQL = "SELECT COALESCE(SUM(n), 0) - COUNT(*) FROM price_change"

