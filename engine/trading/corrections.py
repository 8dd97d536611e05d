"""Execution corrections: a newer version of a booked fill replaces the old one by reversal.

IB corrects an execution by reporting it again under the same id with a higher suffix
(`...01.01` -> `...01.02`), with a new price and/or quantity (and a new commission). The
ledger is append-only, so a correction is booked as two entries in one database transaction:

1. the reversal of the original fill entry (`Ledger.reverse`), and of its late-commission
   entry if there is one;
2. the corrected entry, linked to the original, keyed by the new execution id.

The fill row of the old version points to the new one (`fill.superseded_by`), so the booking
key (account, execution id without suffix) still has exactly one live row.

Futures. Between the fill and its correction the holder's position may have been marked again
(later fills, settlements), each mark booking the fill's units from the old price on. Those
entries stay. The corrected entry instead books, for each holder h with old part q_old at p_old
and new part q_new at p_new, its mark M now and the multiplier k:

    position change          q_new                (split at zero if it crosses)
    cash / Income:Trading:h  VM_pre + [q_new x (M - p_new) - q_old x (M - p_old)] x k

where VM_pre is what the original entry booked for the position h held before the fill (the
reversal took it away; it did not depend on the fill). The mark stays M. If h is flat now
there is no mark: M = p_new, and any residual position (q_new - q_old) is marked at p_new.
Summed with the marks already booked, h's P&L is exactly what it would have been had the fill
been reported right the first time.

Shares. The original entry opened a lot at the old price, labelled with the fill id. While
that lot is whole (nothing sold out of it) the correction reverses it and opens the corrected
lot (same date and label, new cost). Otherwise the correction is refused with a clear reason.

Only one holder's quantity may change: a quantity correction of a fill split between strategies
would re-open the allocation, so it is refused; a price-only correction of a split fill is
booked per holder. A refused correction (`CorrectionUnsupported`) writes nothing and is reported
by `sync_fills` on every sync until someone deals with it.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books
from tradeledger.broker.base import BUY, Execution
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import HolderCorrection, OriginalFill, correction_entry
from tradeledger.engine.accounting.holders import Holder, from_column
from tradeledger.engine.accounting.holdings import load_holdings, save_marks
from tradeledger.engine.trading.orders import add_filled
from tradeledger.errors import CorrectionUnsupported
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import parse_ts

__all__ = ["CorrectionUnsupported", "book_correction", "is_correction_row"]


def _allocations(conn: Connection, fill_id: int) -> list[tuple[Holder, Decimal]]:
    fa = tables.fill_alloc
    return [(from_column(r.holder), from_scaled(r.quantity))
            for r in conn.execute(sa.select(fa).where(fa.c.fill_id == fill_id).order_by(fa.c.holder))]


def book_correction(conn: Connection, books: Books, row, e: Execution) -> int:
    """Replace the booked fill `row` by its corrected version `e`; returns the new fill id.

    Everything is checked before anything is written: a CorrectionUnsupported leaves the
    caller's transaction untouched."""
    ledger, chart = books.ledger, books.chart
    contract = e.contract
    if contract.code != row.contract or e.side != row.side:
        raise CorrectionUnsupported(f"correction {e.exec_id} changes the contract or side of "
                                    f"{row.exec_id}; reverse and rebook it by hand")
    sign = Decimal(1) if e.side == BUY else Decimal(-1)
    q_old_total, p_old = from_scaled(row.quantity), from_scaled(row.price)
    allocations = _allocations(conn, row.id)
    if e.quantity != q_old_total and len(allocations) != 1:
        raise CorrectionUnsupported(f"correction {e.exec_id} changes the quantity of a fill split "
                                    f"between {len(allocations)} holders; allocate it by hand")
    if len(allocations) == 1:
        parts = [HolderCorrection(allocations[0][0], allocations[0][1], sign * e.quantity)]
    else:
        parts = [HolderCorrection(hld, q, q) for hld, q in allocations]
    holdings = load_holdings(conn, books, contract)
    currency = e.commission_currency or row.commission_currency or contract.currency
    original = OriginalFill(row.exec_key, row.exec_id, row.txn_id, ledger.get(row.txn_id, conn), q_old_total, p_old,
                            parse_ts(row.time).date())
    # Dated after everything already booked in this contract, so that the reversal never sits
    # before an entry that depended on the original in the exported ledger's date order.
    latest = ledger.last_posting_time(contract.code, conn)
    when = max(t for t in (e.time, parse_ts(row.time), latest) if t is not None)
    txn, after = correction_entry(chart, contract, original, e, parts, holdings, currency, when)

    reason = f"execution {row.exec_id} corrected by {e.exec_id}"
    ledger.reverse(row.txn_id, when, reason, conn=conn)
    if row.commission_txn_id is not None:
        ledger.reverse(row.commission_txn_id, when, reason, conn=conn)
    booked = ledger.book(txn, conn)
    save_marks(conn, contract, after, when)

    from tradeledger.engine.trading.fills import record_fill

    new_id = record_fill(conn, e, [(part.holder, part.q_new) for part in parts], booked.id, row.order_id,
                         row.order_ref, currency)
    f = tables.fill
    conn.execute(f.update().where(f.c.id == row.id).values(superseded_by=new_id))
    if row.order_id is not None and e.quantity != q_old_total:
        add_filled(conn, row.order_id, e.quantity - q_old_total, only_from=("sent", "partial", "filled"))
    return new_id


def is_correction_row(conn: Connection, fill_id: int) -> bool:
    """Does this fill row replace an earlier version?"""
    f = tables.fill
    return conn.execute(sa.select(f.c.id).where(f.c.superseded_by == fill_id)).first() is not None
