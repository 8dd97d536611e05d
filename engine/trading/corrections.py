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

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.broker.base import BUY, Contract, Execution
from tradeledger.engine import tables
from tradeledger.engine.accounting.booking import Holding, _link, commission_postings, shares_trade
from tradeledger.engine.accounting.holdings import load_holdings, save_marks
from tradeledger.engine.trading.netting import allocate_commission
from tradeledger.ledger import schema
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Cost, Posting, Transaction
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.store import Ledger, fmt_ts, parse_ts

ZERO = Decimal(0)


class CorrectionUnsupported(ValueError):
    """This correction cannot be booked automatically; the message says why."""


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


@dataclass(frozen=True)
class HolderCorrection:
    holder: str | None
    q_old: Decimal  # signed
    q_new: Decimal  # signed


def position_postings(account: str, code: str, currency: str, before: Decimal,
                      change: Decimal) -> list[Posting]:
    """A futures position change at zero cost, split into close + open if it crosses zero."""
    zero = Cost(ZERO, currency)
    after = before + change
    if change == 0:
        return []
    if before != 0 and after != 0 and _sign(before) != _sign(after):
        return [Posting(account, -before, code, zero), Posting(account, after, code, zero)]
    return [Posting(account, change, code, zero)]


def futures_correction(chart: Chart, contract: Contract, h: HolderCorrection, holding: Holding,
                       vm_pre: Decimal, p_old: Decimal, p_new: Decimal
                       ) -> tuple[list[Posting], Holding]:
    """One holder's part of a corrected futures entry and its holding after (pure).

    `holding` is the holder's position *before* the reversal (it includes q_old)."""
    x = holding.position
    y = x - h.q_old  # after the reversal
    if x != 0 and y != 0 and _sign(x) != _sign(y):
        raise CorrectionUnsupported(
            f"{contract.code}: the position of {h.holder or 'unattributed'} has changed sign since "
            "the fill; reverse and rebook it by hand")
    if x != 0 and holding.mark is None:
        raise CorrectionUnsupported(f"{contract.code}: {h.holder or 'unattributed'} has no mark")
    mark = holding.mark if x != 0 else p_new
    k = contract.multiplier
    cash = vm_pre + (h.q_new * (mark - p_new) - h.q_old * (mark - p_old)) * k
    postings: list[Posting] = []
    if cash != 0:
        postings += [Posting(chart.cash, cash, contract.currency),
                     Posting(chart.trading(h.holder), -cash, contract.currency)]
    postings += position_postings(chart.holdings(h.holder), contract.code, contract.currency, y,
                                  h.q_new)
    final = y + h.q_new
    return postings, Holding(final, mark if final != 0 else None)


def shares_correction(chart: Chart, contract: Contract, h: HolderCorrection, lots, original,
                      label: str, date: dt.date, p_new: Decimal) -> list[Posting]:
    """One holder's corrected shares entry (pure): only while the fill's own lot is whole."""
    account = chart.holdings(h.holder)
    mine = [p for p in original.postings if p.account == account and p.commodity == contract.code]
    if any(p.cost is None or p.cost.label != label for p in mine) or not mine:
        raise CorrectionUnsupported(f"{contract.code}: the fill closed earlier lots; a corrected "
                                    "reduction must be reversed and rebooked by hand")
    opened = sum((p.units for p in mine), ZERO)
    open_now = sum((u for cost, u in lots if cost.label == label), ZERO)
    if open_now != opened:
        raise CorrectionUnsupported(f"{contract.code}: lot {label} of {h.holder or 'unattributed'} "
                                    f"is no longer whole ({open_now} of {opened} left); reverse and "
                                    "rebook it by hand")
    others = tuple((cost, u) for cost, u in lots if cost.label != label)
    position = sum((u for _, u in others), ZERO)
    return shares_trade(chart, h.holder, contract, Holding(position, None, others), h.q_new, p_new,
                        date, label)


def _allocations(conn: Connection, fill_id: int) -> list[tuple[str | None, Decimal]]:
    fa = tables.fill_alloc
    return [(r.holder or None, from_scaled(r.quantity))
            for r in conn.execute(sa.select(fa).where(fa.c.fill_id == fill_id).order_by(fa.c.holder))]


def _latest_ts(conn: Connection, code: str) -> dt.datetime | None:
    p = schema.posting
    ts = conn.execute(sa.select(sa.func.max(p.c.ts)).where(p.c.commodity == code)).scalar()
    return parse_ts(ts) if ts else None


def book_correction(conn: Connection, ledger: Ledger, chart: Chart, row, e: Execution) -> int:
    """Replace the booked fill `row` by its corrected version `e`; returns the new fill id.

    Everything is checked before anything is written: a CorrectionUnsupported leaves the
    caller's transaction untouched."""
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
    original = ledger.get(row.txn_id, conn)
    holdings = load_holdings(conn, ledger, chart, contract)
    commission = _commission_split(parts, e.commission)
    currency = e.commission_currency or row.commission_currency or contract.currency

    postings: list[Posting] = []
    after: dict = {}
    for part in parts:
        holding = holdings.get(part.holder, Holding())
        if contract.sec_type == "FUT":
            vm_pre = -sum((p.units for p in original.postings
                           if p.account == chart.trading(part.holder)
                           and p.commodity == contract.currency), ZERO)
            legs, after[part.holder] = futures_correction(chart, contract, part, holding, vm_pre,
                                                          p_old, e.price)
        else:
            legs = shares_correction(chart, contract, part, holding.lots, original, row.exec_key,
                                     parse_ts(row.time).date(), e.price)
        postings += legs
        if commission:
            postings += commission_postings(chart, part.holder, commission.get(part.holder, ZERO),
                                            currency)

    # Dated after everything already booked in this contract, so that the reversal never sits
    # before an entry that depended on the original in the exported ledger's date order.
    latest = _latest_ts(conn, contract.code)
    when = max(t for t in (e.time, parse_ts(row.time), latest) if t is not None)
    reason = f"execution {row.exec_id} corrected by {e.exec_id}"
    ledger.reverse(row.txn_id, when, reason, conn=conn)
    if row.commission_txn_id is not None:
        ledger.reverse(row.commission_txn_id, when, reason, conn=conn)
    who = ", ".join(part.holder or "unattributed" for part in parts)
    meta = (("exec", row.exec_key), ("exec-id", e.exec_id), ("corrects", row.exec_id),
            ("price", str(e.price)), ("contract", contract.code),
            ("commission", "pending" if e.commission is None else "booked"),
            ("order-ref", e.order_ref or "none"))
    txn = Transaction(time=when, kind="fill", postings=tuple(postings), meta=meta,
                      narration=f"Correction: {e.side} {e.quantity} {contract.code} @ {e.price} "
                                f"for {who} (was {q_old_total} @ {p_old})",
                      links=(f"fill-{_link(row.exec_key)}", f"entry-{row.txn_id}"),
                      key=f"fill:{chart.broker_account}:{e.exec_id}")
    booked = ledger.book(txn, conn)
    save_marks(conn, contract, after, when)

    f = tables.fill
    new_id = conn.execute(f.insert().values(
        account=row.account, exec_key=row.exec_key, exec_id=e.exec_id, order_id=row.order_id,
        order_ref=row.order_ref, contract=row.contract, side=row.side,
        quantity=to_scaled(e.quantity, "fill quantity"), price=to_scaled(e.price, "fill price"),
        time=fmt_ts(e.time), commission=None if e.commission is None
        else to_scaled(e.commission, "commission"),
        commission_currency=currency, txn_id=booked.id)).inserted_primary_key[0]
    conn.execute(f.update().where(f.c.id == row.id).values(superseded_by=new_id))
    for part in parts:
        conn.execute(tables.fill_alloc.insert().values(
            fill_id=new_id, holder=part.holder or "", quantity=to_scaled(part.q_new, "allocation")))
    if row.order_id is not None and e.quantity != q_old_total:
        _refill_order(conn, row.order_id, e.quantity - q_old_total)
    return new_id


def _commission_split(parts: list[HolderCorrection], commission: Decimal | None) -> dict:
    if commission is None:
        return {}
    if commission.as_tuple().exponent > -2:
        commission = commission.quantize(Decimal("0.01"))
    weights = {part.holder or "": abs(part.q_new) for part in parts}
    return {(k or None): v for k, v in allocate_commission(commission, weights).items()}


def _refill_order(conn: Connection, order_id: int, delta: Decimal) -> None:
    o = tables.broker_order
    order = conn.execute(sa.select(o).where(o.c.id == order_id)).first()
    filled = from_scaled(order.filled) + delta
    total = from_scaled(order.quantity)
    state = order.state
    if state in ("sent", "partial", "filled"):
        state = "filled" if filled >= total else "partial"
    conn.execute(o.update().where(o.c.id == order_id).values(
        filled=to_scaled(filled, "filled"), state=state))


def is_correction_row(conn: Connection, fill_id: int) -> bool:
    """Does this fill row replace an earlier version?"""
    f = tables.fill
    return conn.execute(sa.select(f.c.id).where(f.c.superseded_by == fill_id)).first() is not None
