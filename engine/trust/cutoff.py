"""The opening's cut-off: which cash movements the opening's cash already holds.

The opening (opening.py) books the broker's cash as its snapshot read it, against
`Equity:Opening-Balances`: every deposit, interest payment or fee the broker moved up to then is in
that figure. Booking such a movement again (as interest, as a deposit) counts it twice, and the
next reconciliation finds the ledger richer than the broker by exactly that much. The cut-off says
which movements those are (`Cut`, read from the opening's row), decided one way for every path:

* **the simulated broker** says it exactly: its snapshot names the last line of its cash journal
  its cash holds (`AccountSnapshot.cash_journal`), and each cash event its line (`CashEvent.seq`).
  A movement at the very instant of the opening (a clock that stands still) is held only if its
  line came first. The opening also records the broker's references of the movements it holds
  (`refs`), so a hand booking can be refused by the reference alone;
* **any other broker** (IB: its Flex statement) by time: a movement at or before the opening's
  snapshot time is held (`holds`);
* **by hand** (`actions interest|fee`, `adjust cash`), where only a day is given: refused when the
  broker's reference is one the opening holds, or when the day is before the opening's day (UTC),
  since the broker's cash at the opening held it (`decide_by_hand`). A movement on the opening's
  day itself may be either side: it is booked, and reconciliation shows a difference if it was
  before. Refused rather than booked and flagged: the ledger knows before booking, and an entry
  booked twice would stand in the NAV and the cash until someone reversed it.

Corporate actions (`holds_paid`): a dividend the broker paid, or the cash in lieu of a split it
made, before the opening is in the opening's cash (and the split in its positions). The simulated
broker's opening records which (`paid`: "TICKER DAY", from its dividend, withholding and cash-in-lieu
lines); otherwise, as for hand bookings, only a day before the opening's day (UTC) is held: one on the
opening's day is booked, and reconciliation shows a difference if it was before.

Before the account has an opening nothing is held: the opening, when it is taken, books the broker's
cash minus the ledger's, so whatever was booked first is not booked again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.broker.base import AccountSnapshot, CashEvent
from tradeledger.engine import tables
from tradeledger.errors import AdjustError

UTC = dt.timezone.utc
MOVES = ("deposit", "withdrawal", "transfer", "interest", "fee")  # cash a person may book by hand
PAID = ("dividend", "withholding", "cash_in_lieu")  # corporate-action cash: the ref is the ticker


@dataclass(frozen=True)
class Cut:
    """The opening of an account as a cut-off in its cash."""

    entry: int | None  # the opening's entry (None: it booked nothing)
    at: dt.datetime  # the opening snapshot's time (UTC)
    journal: int | None = None  # the last line of the broker's cash journal its cash holds, when the broker says
    refs: frozenset[str] = frozenset()  # the broker's references of the movements it holds
    paid: frozenset[str] = frozenset()  # "TICKER DAY" of the corporate-action cash it holds, when the broker says

    @property
    def said(self) -> str:
        return (f"the opening (taken {self.at.isoformat()}"
                + (f", entry {self.entry}" if self.entry else "") + ")")


def holds(cut: Cut | None, at: dt.datetime, seq: int | None = None) -> bool:
    """Whether the opening's cash holds a movement the broker made at `at` (journal line `seq`) (pure)."""
    if cut is None:
        return False
    if seq is not None and cut.journal is not None:
        return seq <= cut.journal
    return at <= cut.at


def holds_event(cut: Cut | None, event: CashEvent) -> bool:
    return holds(cut, event.time, event.seq)


def held_json(snap: AccountSnapshot, events: list[CashEvent]) -> dict:
    """What the opening's row keeps of its cut-off (pure): the broker's journal line, and the
    references of the movements of `events` (read right after the snapshot) its cash holds."""
    if snap.cash_journal is None:
        return {}
    cut = Cut(None, snap.taken_at, snap.cash_journal)
    refs = sorted({e.ref for e in events if e.kind in MOVES and e.ref and holds_event(cut, e)})
    paid = sorted({paid_key(e.ref, e.time.date()) for e in events if e.kind in PAID and holds_event(cut, e)})
    return {"cash_journal": snap.cash_journal, "cash_refs": refs, "cash_paid": paid}


def paid_key(ticker: str, day: dt.date) -> str:
    return f"{ticker} {day.isoformat()}"


def holds_paid(cut: Cut | None, ticker: str, day: dt.date) -> bool:
    """Whether the opening's cash holds what the broker paid on `ticker` on `day` (a dividend, a
    split's cash in lieu) (pure): recorded by the opening, or on a day before the opening's (UTC). One
    on the opening's day that the opening did not record is after it (the simulator records every
    one) or unknown (booked: reconciliation shows a difference if it was before, as for hand bookings)."""
    if cut is None:
        return False
    return paid_key(ticker, day) in cut.paid or day < cut.at.date()


def opening_cut(conn: Connection, account: str) -> Cut | None:
    """The account's cut-off, None before it has an opening."""
    t = tables.opening
    row = conn.execute(sa.select(t.c.taken_at, t.c.txn_id, t.c.held).where(t.c.account == account)
                       .order_by(t.c.id).limit(1)).first()
    if row is None:
        return None
    held = json.loads(row.held)
    at = dt.datetime.fromisoformat(row.taken_at)
    return Cut(row.txn_id, at if at.tzinfo else at.replace(tzinfo=UTC), held.get("cash_journal"),
               frozenset(held.get("cash_refs", ())), frozenset(held.get("cash_paid", ())))


def decide_by_hand(cut: Cut | None, day: dt.date, ref: str | None, what: str) -> None:
    """Refuse a cash movement booked by hand that the opening's cash holds (pure): its reference is
    one the opening held, or its day is before the opening's. `what` says the movement."""
    if cut is None:
        return
    if ref is not None and ref in cut.refs:
        raise AdjustError(f"{what}: the broker's {ref} moved before {cut.said}, whose cash holds it already; "
                          "booking it would count it twice: nothing booked")
    if day < cut.at.date():
        raise AdjustError(f"{what}: {day.isoformat()} is before {cut.said}, whose cash holds what the broker "
                          "moved until then; booking it would count it twice: nothing booked (if it moved after "
                          f"the opening, book it with --date {cut.at.date().isoformat()})")
