"""A fill's commission is booked to whoever holds the fill's position: when it arrives late, when
the broker changes it, and when an attribution that gave the position to a strategy is reversed.

Who holds a fill: its allocation (`fill_alloc`, how it was booked), with Unattributed's part given
to the strategy of a standing attribution (`attribution.live_attribution`). The commission is split
over them pro rata to their quantities, to the cent (`entries.commission_split`).

At any time at most three entries stand for a fill's commission, and every reader (`report costs`,
a correction, the next change) reads exactly these:

    the fill's entry             the commission when it was known at the fill
    the attribution's entry      moves that commission from Unattributed to the strategy (trust/adjust.py)
    fill.commission_txn_id       the one commission entry standing: a late commission's, a changed
                                 commission's, or the one that followed the position back

Whatever changes who pays what, or how much, reverses the standing commission entry (if any) and
books one entry that takes back, holder by holder, what the fill's and the attribution's entries
booked (read back from their postings, never split again) and books the commission over the
holders now:

    late commission       nothing of it booked yet: the parts (entries.commission_entry)
    changed commission    the broker's new amount over the holders now (commission_change_entry)
    attribution reversed  the same amount over the holders without the attribution
                          (commission_follow_entry), in the database transaction of the reversal,
                          whose own entry stays the exact opposite of the attribution (db verify)

A commission entry and its reversal cancel out, and so do an attribution and its reversal, so per
holder the Expenses:Commissions postings of all the entries linked to the fill always equal the
commission split over whoever holds the position now; a new attribution after a reversal moves it
again. Each entry is keyed (the fill's version, the entry it follows, the attribution it undoes),
so a rerun books nothing twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.broker.base import Execution
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import (
    booked_commissions, commission_change_entry, commission_entry, commission_follow_entry, commission_split,
)
from tradeledger.engine.accounting.holders import Holder, from_column
from tradeledger.engine.context import Books
from tradeledger.engine.trading.attribution import live_attribution
from tradeledger.ledger.model import Transaction, reversal_of
from tradeledger.ledger.numbers import from_scaled, money_exact, to_scaled

COMMISSIONS = "Expenses:Commissions:"


def commission_holders(conn: Connection, row, attribution) -> list[tuple[Holder, Decimal]]:
    """(holder, quantity) of a booked fill, as its commission is split: the fill's allocation, with
    Unattributed's part given to the strategy a standing attribution (`live_attribution`) gave the
    position to: the commission goes where the position went."""
    shares = [(from_column(r.holder), from_scaled(r.quantity)) for r in conn.execute(
        sa.select(tables.fill_alloc).where(tables.fill_alloc.c.fill_id == row.id))]
    if attribution is None:
        return shares
    return [(attribution[0] if holder is None else holder, qty) for holder, qty in shares]


def _parts(commission: Decimal, shares: list[tuple[Holder, Decimal]]) -> dict:
    """The commission over the holders (pure); a bust's (all quantities 0) stays with its holders."""
    if all(qty == 0 for _, qty in shares):
        shares = [(holder, Decimal(1)) for holder, _ in shares]
    return commission_split(commission, shares)


def _booked(books: Books, txn_ids, currency: str, conn: Connection) -> dict:
    """holder -> the commission these entries booked for it, read back from their postings."""
    return booked_commissions(books.chart, books.ledger.entry_sums(txn_ids, COMMISSIONS, conn), currency)


def book_late_commission(conn: Connection, books: Books, row, e: Execution) -> None:
    """The commission of a fill booked while it was pending: to the holders now."""
    ledger, chart = books.ledger, books.chart
    parts = commission_split(e.commission, commission_holders(conn, row, live_attribution(conn, ledger, row.exec_key)))
    commission_txn = None
    if any(v != 0 for v in parts.values()):
        from tradeledger.engine.trading.corrections import is_correction_row

        # A corrected fill's commission is keyed by its own version (the original may have one).
        key = e.exec_id if is_correction_row(conn, row.id) else e.base_exec_id
        txn = commission_entry(chart, key, e.time, parts, e.commission_currency or row.commission_currency,
                               row.contract)
        commission_txn = ledger.book(txn, conn).id
    f = tables.fill
    conn.execute(f.update().where(f.c.id == row.id).values(
        commission=to_scaled(e.commission, "commission"), commission_txn_id=commission_txn))


def rebook_commission(conn: Connection, books: Books, row, e: Execution, now: dt.datetime) -> Decimal:
    """The broker changed the commission of a booked execution (same execId): book the difference.
    The commission entry standing is reversed; one entry takes back what the fill's entry (and the
    attribution that moved it) booked per holder and books the new commission over the holders
    now. The fill row then says the new commission and names that entry as its commission's, so a
    rerun is a replay and a correction of the fill reverses it with the rest. Returns the old."""
    ledger, chart = books.ledger, books.chart
    currency, was = row.commission_currency, from_scaled(row.commission)
    if e.commission_currency and e.commission_currency != currency:
        raise ValueError(f"execution {e.exec_id}: commission reported in {e.commission_currency}, "
                         f"booked in {currency}; book the difference by hand")
    attribution = live_attribution(conn, ledger, row.exec_key)
    booked = _booked(books, [row.txn_id] + ([attribution[1]] if attribution is not None else []), currency, conn)
    parts = _parts(e.commission, commission_holders(conn, row, attribution))
    when = max(now, e.time)
    replaces = row.commission_txn_id or _after_undone(books, e.exec_id, row.txn_id, conn)
    if row.commission_txn_id is not None:
        ledger.reverse(row.commission_txn_id, when, f"commission of {e.exec_id} changed by the broker: "
                       f"{money_exact(was, currency)} -> {money_exact(e.commission, currency)} {currency}", conn=conn)
    txn = commission_change_entry(chart, e.exec_id, row.exec_key, when, booked, parts, currency, row.contract,
                                  was, e.commission, replaces)
    f = tables.fill
    conn.execute(f.update().where(f.c.id == row.id).values(
        commission=to_scaled(e.commission, "commission"),
        commission_txn_id=ledger.book(txn, conn).id if txn is not None else None))
    from tradeledger.engine.trading import killpoint

    killpoint.reach("correction")  # written, not committed: the crash tests kill here
    return was


def _after_undone(books: Books, exec_id: str, fill_txn: int, conn: Connection) -> int:
    """The entry a change follows when no commission entry stands: the fill's, or, where changes
    were booked after it and reversed since (a change to nothing reverses the standing entry and
    books none), the newest of those reversals. Keyed after it, a change back to an amount booked
    before (0.01 -> 0 -> 0.01) is a new entry, not a replay of the reversed one."""
    ledger, after = books.ledger, fill_txn
    while True:
        taken = ledger.find_by_key(f"commission:{books.chart.broker_account}:{exec_id}:after-{after}", conn)
        undone = ledger.reversed_by(taken, conn) if taken is not None else None
        if undone is None:
            return after
        after = undone


@dataclass(frozen=True)
class Follow:
    """What the reversal of an attribution books besides itself, so that the fill's commission
    follows its position back: the standing commission entry's reversal and the entry that books
    the commission over the holders without the attribution (either may be None)."""

    fill_id: int
    reversal: Transaction | None
    entry: Transaction | None

    @property
    def entries(self) -> tuple[Transaction, ...]:
        return tuple(t for t in (self.reversal, self.entry) if t is not None)


def plan_follow(conn: Connection, books: Books, exec_key: str, attribution: int, when: dt.datetime,
                reason: str) -> Follow | None:
    """Planned inside the reversal's transaction, before it is booked: the attribution (entry
    `attribution`) of fill `exec_key` is about to be reversed, which gives its part back to the
    fill's own holders. None when the entries standing after that reversal already book the
    commission over them (a pending one, or one only the fill and the attribution moved)."""
    ledger, chart = books.ledger, books.chart
    f = tables.fill
    row = conn.execute(sa.select(f).where(f.c.account == chart.broker_account, f.c.exec_key == exec_key,
                                          f.c.superseded_by.is_(None))).first()
    if row is None or row.commission is None:
        return None  # pending: the late commission books to whoever holds the fill when it comes
    currency, commission = row.commission_currency, from_scaled(row.commission)
    parts = {h: v for h, v in _parts(commission, commission_holders(conn, row, None)).items() if v != 0}
    # The attribution and its reversal cancel: what stands after it is the fill's and the commission's.
    if _booked(books, [row.txn_id, row.commission_txn_id], currency, conn) == parts:
        return None
    why = f"commission of {exec_key} follows its position: attribution entry {attribution} reversed: {reason}"
    standing = row.commission_txn_id
    return Follow(row.id, None if standing is None else reversal_of(standing, ledger.get(standing, conn), when, why),
                  commission_follow_entry(chart, exec_key, when, _booked(books, [row.txn_id], currency, conn), parts,
                                          currency, row.contract, commission, attribution, reason))


def book_follow(conn: Connection, books: Books, follow: Follow) -> None:
    """Book a planned `Follow` in the caller's transaction (the attribution's reversal's)."""
    if follow.reversal is not None:
        books.ledger.book(follow.reversal, conn)
    entry = books.ledger.book(follow.entry, conn).id if follow.entry is not None else None
    f = tables.fill
    conn.execute(f.update().where(f.c.id == follow.fill_id).values(commission_txn_id=entry))
