"""A close quoted before a booked split, restated in the units the ledger holds after it.

A split is booked at the start of its date (accounting/actions.py): from then on the holders hold
units x new/old. The day's close comes in the evening; until it does, the newest close of the
instrument is the day before's, quoted in the old units. Valuing the new units at it would show a
2:1 split as a gain of the whole position (and a 1:10 reverse split as a loss of 90%) in `pnl`,
`positions`, `report nav` and the curves, until the close arrives. So a close dated before a
booked split that has taken effect on the day valued is multiplied by old/new of each such split
(as targets/prices.split_factor does for sizing). The stored closes stay as quoted; a split stored
but not booked leaves the units, and the close, as they are.

Pure, and without SQLAlchemy: the raw read path (ledger/reading.py) reads `SPLITS_SQL` itself.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tradeledger.ledger.numbers import from_scaled, plain

# The booked splits (a split booked while nobody held the shares has ex_txn_id 0): ticker, date, new, old.
SPLITS_SQL = ("SELECT ticker, ex_date, ratio_new, ratio_old FROM corporate_action "
              "WHERE kind = 'split' AND ex_txn_id IS NOT NULL ORDER BY ticker, ex_date")


def booked_splits(rows) -> dict[str, list[tuple[dt.date, Decimal]]]:
    """ticker -> [(split date, old/new)] from SPLITS_SQL's rows (ratios scaled)."""
    found: dict[str, list[tuple[dt.date, Decimal]]] = {}
    for ticker, day, new, old in rows:
        found.setdefault(ticker, []).append((_date(day), from_scaled(old) / from_scaled(new)))
    return found


def restated(close: Decimal, quoted: dt.date | str, splits: list[tuple[dt.date, Decimal]],
             on: dt.date | str | None = None) -> Decimal:
    """`close`, quoted on `quoted`, in the units held on `on` (None: now): times old/new of every
    split after `quoted` and on or before `on`."""
    quoted, on = _date(quoted), None if on is None else _date(on)
    factor = Decimal(1)
    for day, ratio in splits:
        if quoted < day and (on is None or day <= on):
            factor *= ratio
    return close if factor == 1 else plain(close * factor)


def newest_price(settled: tuple | None, closed: tuple | None, splits: list[tuple[dt.date, Decimal]],
                 on: dt.date | str | None = None) -> Decimal | None:
    """The price a contract is valued at: the newer of its newest settlement and its instrument's
    newest close (each (date, scaled price) or None), a settlement winning a tie; the close in the
    units held on `on` (`restated`); None without either. Every reader of prices takes it here
    (valuation, accounting/reading, reports/pnl_fast), so they cannot disagree."""
    candidates = []
    if settled is not None:
        candidates.append((settled[0], 1, from_scaled(settled[1])))
    if closed is not None:
        candidates.append((closed[0], 0, restated(from_scaled(closed[1]), closed[0], splits, on)))
    return max(candidates)[2] if candidates else None


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
