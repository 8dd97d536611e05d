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

An unattributed fill that `adjust attribute` (or a manual close by execution) gave to a strategy
S is corrected as if the corrected fill had been attributed: in the same transaction the
attribution's transfer is reversed (first: its units go back to Unattributed), then the fill's
entry and its late commission's, and the corrected entry books the fill to S, the holder of its
units, its P&L since the fill and its commission. The arithmetic above holds with h = S and
VM_pre generalised: every holder's variation margin in the reversed entries (Unattributed's
and S's other positions marked to the fill price at the fill and at the attribution) is booked
again exactly as it was, since none of it depended on the fill's price; only S's bracket is new.
The new version's `fill_alloc` names S (how it was booked); the `adjustment` row still says the
fill was attributed to S. An attribution reversed by hand (`adjust reverse`) no longer counts.
Shares attributed to a strategy are refused (their lots moved FIFO at the attribution). A bust
(quantity 0) is booked the same way; its commission, if any, stays with the fill's holders.

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
from tradeledger.engine.trading import killpoint
from tradeledger.engine.trading.attribution import live_attribution
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
    # An unattributed fill that `adjust attribute` gave to a strategy: its units, their P&L since
    # the fill and its commission are the strategy's. The correction reverses the attribution with
    # the fill and books the corrected fill to the strategy, as if it had been attributed.
    attribution = live_attribution(conn, ledger, row.exec_key) if [h for h, _ in allocations] == [None] else None
    if attribution is not None:
        allocations = [(attribution[0], allocations[0][1])]
    if len(allocations) == 1:
        parts = [HolderCorrection(allocations[0][0], allocations[0][1], sign * e.quantity)]
    else:
        parts = [HolderCorrection(hld, q, q) for hld, q in allocations]
    holdings = load_holdings(conn, books, contract)
    currency = e.commission_currency or row.commission_currency or contract.currency
    original = OriginalFill(row.exec_key, row.exec_id, row.txn_id, ledger.get(row.txn_id, conn), q_old_total, p_old,
                            parse_ts(row.time).date(),
                            ledger.get(attribution[1], conn) if attribution is not None else None)
    # Dated after everything already booked in this contract, so that the reversal never sits
    # before an entry that depended on the original in the exported ledger's date order.
    latest = ledger.last_posting_time(contract.code, conn)
    when = max(t for t in (e.time, parse_ts(row.time), latest) if t is not None)
    txn, after = correction_entry(chart, contract, original, e, parts, holdings, currency, when)

    reason = f"execution {row.exec_id} corrected by {e.exec_id}"
    if attribution is not None:  # first: the units go back to Unattributed before its fill is reversed
        ledger.reverse(attribution[1], when, f"{reason}; the corrected entry books the fill to "
                       f"{attribution[0]}, as attributed", conn=conn)
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
    killpoint.reach("correction")  # every entry and row written, not committed: the crash tests kill here
    return new_id


def is_correction_row(conn: Connection, fill_id: int) -> bool:
    """Does this fill row replace an earlier version?"""
    f = tables.fill
    return conn.execute(sa.select(f.c.id).where(f.c.superseded_by == fill_id)).first() is not None
