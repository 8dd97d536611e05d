"""Booking the broker's executions: each exactly once, attributed, with its commission when known.

`sync_fills` pulls every execution the broker reports (live fills and the execution list are
the same stream here) and books those not booked yet in chunks of `BATCH` (500), one database
transaction per chunk: each execution's ledger entry, `fill` row, allocation, its order's filled
quantity and the holders' new marks commit together or not at all. A chunk of new executions is
booked as one (`fill_chunk.py`: each read once per chunk, each table written once); a chunk with
a correction, a late commission or a spread's leg is booked one execution after another. If one execution of a chunk
cannot be booked the chunk rolls back and each of its executions is booked in a transaction of
its own, so the others land and the one that fails is reported (`SyncReport.failed`) and raised
as an exception. The booking key is (broker account, execution id without its correction
suffix), so a replay, a duplicate report or a restart books nothing twice.

Attribution: an execution's orderRef names our order; the order's allocation splits the fill
among its strategies (largest remainder, `netting.allocate_fill`). An execution without an
orderRef of ours (a trade made at the broker's own screen) goes to the unattributed bucket.

A commission not yet reported is *pending*: the fill is booked without it, and a separate entry
linked to the fill books it when it arrives; a commission the broker changes is booked by
difference. Both book to whoever holds the fill's position then (`commissions.py`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books, Context
from tradeledger.broker.base import BUY, Broker, Execution
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import FillShare, commission_split, fill_entry
from tradeledger.engine.futures.interrupted import resolve_rolled
from tradeledger.engine.trust.exceptions import UNBOOKED_EXECUTION, ExceptionKind, dedupe_key, raise_exception
from tradeledger.engine.accounting.holders import Holder, display, from_column, to_column
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings, lock_contract, save_marks
from tradeledger.engine.trading.attribution import attributions
from tradeledger.engine.trading.commissions import book_late_commission, rebook_commission
from tradeledger.engine.trading.fill_chunk import book_new_fills, report_unattributed
from tradeledger.engine.trading.netting import Overfill, allocate_fill
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.model import LedgerError
from tradeledger.ledger.store import fmt_ts


class CommissionChange(NamedTuple):
    """The broker changed a booked commission; the difference is booked."""

    exec_id: str
    booked: Decimal  # what the ledger had booked
    reported: Decimal  # what the broker reports now
    currency: str


@dataclass
class SyncReport:
    """What one sync did. Two reports combine in two ways: `merge` adds the parts of one sync
    (its chunks), `then` puts a later sync after an earlier one (a cycle's polls)."""

    booked: list[str] = field(default_factory=list)  # exec keys booked now
    commissions: list[str] = field(default_factory=list)  # pending commissions booked now
    replays: int = 0
    unattributed: list[str] = field(default_factory=list)
    pending_commissions: list[str] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)  # seen, not booked (see reasons)
    correction_reasons: dict[str, str] = field(default_factory=dict)  # exec id -> why not
    corrected: list[str] = field(default_factory=list)  # corrections booked now (new exec ids)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (exec id, why): could not be booked
    commission_changes: list[CommissionChange] = field(default_factory=list)

    EVENTS = ("booked", "commissions", "unattributed", "corrected", "commission_changes")  # adds up

    def merge(self, other: "SyncReport") -> None:
        """Add another part of the same sync (disjoint executions) to this one."""
        for name in self.EVENTS + ("pending_commissions", "corrections", "failed"):
            getattr(self, name).extend(getattr(other, name))
        self.replays += other.replays
        self.correction_reasons.update(other.correction_reasons)

    def then(self, later: "SyncReport") -> "SyncReport":
        """This sync followed by a later one: what each booked adds up; an execution or a
        correction that could not be booked is reported once however many syncs met it; the
        commissions pending are those the later sync found pending."""
        total = SyncReport(replays=self.replays + later.replays,
                           pending_commissions=list(later.pending_commissions),
                           correction_reasons={**self.correction_reasons, **later.correction_reasons})
        for name in self.EVENTS:
            getattr(total, name).extend(getattr(self, name) + getattr(later, name))
        total.corrections = list(dict.fromkeys(self.corrections + later.corrections))
        reasons = dict(self.failed)
        reasons.update(later.failed)
        total.failed = list(reasons.items())
        return total


BATCH = 500  # executions booked per database transaction on a sync (one commit, not 500)


def _version(exec_id: str) -> int:
    tail = exec_id.rpartition(".")[2]
    try:
        return int(tail, 16)  # IB-style revision suffix: 01, 02, ... (hex past 09)
    except ValueError:
        return 0


def latest_versions(executions: list[Execution]) -> list[Execution]:
    """One execution per booking key, its latest correction, in time order (pure)."""
    latest: dict[str, Execution] = {}
    for e in executions:
        known = latest.get(e.base_exec_id)
        if known is None or _version(e.exec_id) > _version(known.exec_id) or \
                (e.exec_id == known.exec_id and known.commission is None and e.commission is not None):
            latest[e.base_exec_id] = e
    return sorted(latest.values(), key=lambda e: (e.time, e.exec_id))


def _is_replay(booked: tuple[str, Decimal | None] | None, e: Execution) -> bool:
    """Nothing to do: this version is booked, and its commission is booked as reported or still
    unknown (pure). A commission reported for a pending one is booked late; a commission other
    than the one booked for the same version is a change the broker made, booked by difference."""
    if booked is None:
        return False
    exec_id, commission = booked
    if _version(e.exec_id) > _version(exec_id):
        return False  # a correction
    if e.commission is None:
        return True
    if commission is None:
        return False  # the late commission
    return _version(e.exec_id) < _version(exec_id) or not commission_changed(commission, e.commission)


def commission_changed(booked: Decimal | None, reported: Decimal | None) -> bool:
    """The broker reports, for a version whose commission is booked, a different amount (pure);
    2.0 and 2.00 are the same commission."""
    return booked is not None and reported is not None and booked != reported


def _booked_versions(engine, account: str, keys: list[str]) -> dict[str, tuple[str, Decimal | None]]:
    """exec key -> (booked exec id, its booked commission, None while pending) for the keys already booked."""
    f = tables.fill
    found: dict[str, tuple[str, bool]] = {}
    with read_connection(engine) as conn:
        for start in range(0, len(keys), 500):
            rows = conn.execute(sa.select(f.c.exec_key, f.c.exec_id, f.c.commission).where(
                f.c.account == account, f.c.exec_key.in_(keys[start:start + 500]), f.c.superseded_by.is_(None)))
            found.update({key: (exec_id, None if commission is None else from_scaled(commission))
                          for key, exec_id, commission in rows})
    return found


def sync_fills(ctx: Context, broker: Broker, now: dt.datetime | None = None) -> SyncReport:
    """Book what the broker reports and is not booked yet; `now` (default: the environment's clock)
    dates the exceptions raised on the way."""
    engine, chart = ctx.engine, ctx.chart
    now = now or ctx.now()
    report = SyncReport()
    executions = latest_versions(broker.executions())
    # Most of what a broker reports on a sync is already booked: one read finds those. The rest
    # are booked in chunks, one transaction each, which re-check under the contracts' locks.
    booked = _booked_versions(engine, chart.broker_account, [e.base_exec_id for e in executions])
    todo: list[Execution] = []
    executions = [e for e in executions if e.contract.sec_type != "BAG"]  # a combo's own report books nothing
    for execution in executions:
        if execution.account != chart.broker_account:
            raise ValueError(f"execution {execution.exec_id} is for account {execution.account}, "
                             f"not {chart.broker_account}")
        if _is_replay(booked.get(execution.base_exec_id), execution):
            report.replays += 1
            if booked[execution.base_exec_id][1] is None:
                report.pending_commissions.append(execution.base_exec_id)
            continue
        todo.append(execution)
    for start in range(0, len(todo), BATCH):
        chunk, trial = todo[start:start + BATCH], SyncReport()
        try:
            with engine.begin() as conn:
                for code in sorted({e.contract.code for e in chunk}):  # one order: no lock cycle
                    lock_contract(conn, code)
                if not book_new_fills(conn, ctx.books, chunk, trial, now=now):  # a chunk done as a chunk
                    for execution in chunk:
                        book_execution(conn, ctx.books, execution, trial, now=now)
                resolve_rolled(conn, ctx.books, ctx.config, now)  # a half roll these fills complete
        except (LedgerError, ValueError, ArithmeticError):
            # One of them cannot be booked: the chunk rolled back whole; book each on its own so
            # that the others land and the one that fails is raised as an exception.
            for execution in chunk:
                _book_alone(ctx, execution, report, now)
        else:
            report.merge(trial)
    return report


def _book_alone(ctx: Context, execution: Execution, report: SyncReport, now: dt.datetime) -> None:
    engine, books = ctx.engine, ctx.books
    trial = SyncReport()
    try:
        with engine.begin() as conn:
            book_execution(conn, books, execution, trial, now=now)
            resolve_rolled(conn, books, ctx.config, now)
        report.merge(trial)
    except (LedgerError, ValueError, ArithmeticError) as exc:
        report.failed.append((execution.exec_id, str(exc)))
        kind = ExceptionKind.OVERFILL if isinstance(exc, Overfill) else ExceptionKind.UNATTRIBUTED_FILL
        with engine.begin() as conn:
            raise_exception(conn, kind, f"{execution.contract.code} {execution.base_exec_id}",
                            f"execution {execution.exec_id} could not be booked: {exc}", severity="error",
                            dedupe_key=dedupe_key(UNBOOKED_EXECUTION, execution.account, execution.base_exec_id), now=now)


def book_execution(conn: Connection, books: Books, e: Execution, report: SyncReport, *, now: dt.datetime) -> None:
    lock_contract(conn, e.contract.code)  # before "is it booked?": two syncing processes never both book it
    f = tables.fill
    existing = conn.execute(sa.select(f).where(
        f.c.account == e.account, f.c.exec_key == e.base_exec_id, f.c.superseded_by.is_(None))).first()
    if existing is not None:
        if _version(e.exec_id) > _version(existing.exec_id):
            # A correction replaces the booked version by reversal (engine/corrections.py);
            # one it cannot book writes nothing and is reported on every sync. Never silent.
            from tradeledger.engine.trading.corrections import CorrectionUnsupported, book_correction

            try:
                book_correction(conn, books, existing, e)
                report.corrected.append(e.exec_id)
                if e.commission is None:
                    report.pending_commissions.append(e.base_exec_id)
            except CorrectionUnsupported as exc:
                report.corrections.append(e.exec_id)
                report.correction_reasons[e.exec_id] = str(exc)
                # Nothing is booked; the trader sees it as an open exception (one per execution,
                # bumped on every sync) until the correction is dealt with by hand.
                raise_exception(conn, ExceptionKind.UNATTRIBUTED_FILL, f"{e.contract.code} {e.base_exec_id}",
                                f"execution correction {e.exec_id} is not booked: {exc}", severity="error",
                                dedupe_key=dedupe_key(UNBOOKED_EXECUTION, e.account, e.base_exec_id), now=now)
        elif existing.commission is None and e.commission is not None:
            book_late_commission(conn, books, existing, e)
            report.commissions.append(e.base_exec_id)
        elif _version(e.exec_id) == _version(existing.exec_id) and commission_changed(
                from_scaled(existing.commission) if existing.commission is not None else None, e.commission):
            was = rebook_commission(conn, books, existing, e, now)
            report.commission_changes.append(CommissionChange(e.exec_id, was, e.commission,
                                                              existing.commission_currency))
        else:
            report.replays += 1
            if existing.commission is None:
                report.pending_commissions.append(e.base_exec_id)
        return
    shares, order = _attribute(conn, e)
    _book_new_fill(conn, books, e, shares, order)
    if order is None:
        report_unattributed(conn, e, report, now=now)
    report.booked.append(e.base_exec_id)
    if e.commission is None:
        report.pending_commissions.append(e.base_exec_id)


def _attribute(conn: Connection, e: Execution) -> tuple[list[tuple[Holder, Decimal]], object]:
    """(holder, signed qty) parts of an execution, and our order row (None: unattributed)."""
    sign = 1 if e.side == BUY else -1
    o = tables.broker_order
    order = conn.execute(sa.select(o).where(o.c.order_ref == e.order_ref)).first() if e.order_ref else None
    if order is None:
        return [(None, sign * e.quantity)], None
    weights = {r.holder: from_scaled(r.quantity) for r in conn.execute(
        sa.select(tables.order_alloc).where(tables.order_alloc.c.order_id == order.id))}
    fa, fl = tables.fill_alloc, tables.fill
    already: dict[str, Decimal] = {}
    same_order = (fl.c.order_id == order.id) & fl.c.superseded_by.is_(None)
    if _legs(conn, order.id):  # a spread: each leg is allocated on its own, by the same shares
        same_order = same_order & (fl.c.contract == e.contract.code)
    rows = conn.execute(sa.select(fa.c.holder, sa.func.sum(fa.c.quantity)).join(fl, fl.c.id == fa.c.fill_id)
                        .where(same_order).group_by(fa.c.holder))
    for holder, qty in rows:
        already[holder] = abs(from_scaled(qty))
    split = allocate_fill(weights, e.quantity, already)
    return [(holder, sign * qty) for holder, qty in split.items()], order


def _book_new_fill(conn: Connection, books: Books, e: Execution, shares, order) -> int:
    ledger, chart = books.ledger, books.chart
    contract = e.contract
    ensure_contract(conn, ledger, contract, e.time.date())
    for holder, _ in shares:
        ensure_holder(conn, books, holder)
    parts = commission_split(e.commission, shares)
    fill_shares = [FillShare(h, q, parts.get(h, Decimal(0)) if e.commission is not None else None)
                   for h, q in shares]
    holdings = load_holdings(conn, books, contract)
    who = ", ".join(display(h) for h, _ in shares)
    narration = f"{e.side} {e.quantity} {contract.code} @ {e.price} for {who}"
    txn, after = fill_entry(chart, contract, e.base_exec_id, e.price, e.time, fill_shares, holdings,
                            e.commission_currency or contract.currency, e.order_ref, narration)
    booked = ledger.book_new(txn, conn)  # no fill row under the contract's lock: new (see book_new)
    save_marks(conn, contract, after, e.time, before=holdings)
    fill_id = record_fill(conn, e, shares, booked.id, order.id if order else None, e.order_ref or "",
                          e.commission_currency or contract.currency)
    if order is not None:
        _advance_order(conn, order, e.quantity, contract.code)
    return fill_id


def _legs(conn: Connection, order_id: int) -> list:
    return conn.execute(sa.select(tables.order_leg).where(tables.order_leg.c.order_id == order_id)).all()


def _advance_order(conn: Connection, order, qty: Decimal, code: str = "") -> None:
    o = tables.broker_order
    legs = _legs(conn, order.id)
    if legs:  # a spread is filled when every leg is; one leg alone leaves it partial (interrupted)
        leg = next((r for r in legs if r.contract == code), None)
        if leg is None:
            raise ValueError(f"execution in {code} for spread order {order.order_ref}, which has no such leg")
        t = tables.order_leg
        done = from_scaled(leg.filled) + qty
        conn.execute(t.update().where(t.c.order_id == order.id, t.c.contract == code).values(
            filled=to_scaled(done, "filled")))
        fills = [done if r.contract == code else from_scaled(r.filled) for r in legs]
        total = from_scaled(order.quantity)
        state = "filled" if min(fills) >= total else ("unknown" if order.state == "unknown" else "partial")
        conn.execute(o.update().where(o.c.id == order.id).values(filled=to_scaled(min(fills), "filled"), state=state))
        return
    filled = from_scaled(order.filled) + qty
    total = from_scaled(order.quantity)
    # A cancelled order stays cancelled with what it filled (a fill reported after the cancel); one of
    # unknown outcome stays unknown until it is filled in full or a person resolves it (trading/unknown.py).
    state = "filled" if filled >= total else (order.state if order.state in ("cancelled", "unknown") else "partial")
    conn.execute(o.update().where(o.c.id == order.id).values(filled=to_scaled(filled, "filled"), state=state))


def record_fill(conn: Connection, e: Execution, shares, txn_id: int, order_id: int | None, order_ref: str,
                commission_currency: str) -> int:
    """The `fill` row of one booked execution version and its allocation rows; returns its id."""
    fill_id = conn.execute(tables.fill.insert().values(
        account=e.account, exec_key=e.base_exec_id, exec_id=e.exec_id, order_id=order_id,
        order_ref=order_ref, contract=e.contract.code, side=e.side,
        quantity=to_scaled(e.quantity, "fill quantity"), price=to_scaled(e.price, "fill price"),
        time=fmt_ts(e.time), commission=None if e.commission is None else to_scaled(e.commission, "commission"),
        commission_currency=commission_currency, txn_id=txn_id,
    )).inserted_primary_key[0]
    for holder, qty in shares:
        conn.execute(tables.fill_alloc.insert().values(fill_id=fill_id, holder=to_column(holder),
                                                        quantity=to_scaled(qty, "allocation")))
    return fill_id


def list_fills(conn: Connection, ledger, limit: int | None = None) -> list[dict]:
    """The blotter, oldest first. Holders are named by their account components (`Carry`;
    "unattributed"): the caller names them as the user does. A fill's Unattributed part is the
    strategy's that holds it now while the attribution stands (`attribution.live_attribution`'s
    rule), and `attributed_to` names that strategy (None: not attributed), so the name stays a
    name and a person's label ("carry (attributed)") is the command's to write."""
    f, fa = tables.fill, tables.fill_alloc
    query = sa.select(f).where(f.c.superseded_by.is_(None)).order_by(f.c.time, f.c.id)
    rows = conn.execute(query).all()
    allocs: dict[int, list] = {}
    for r in conn.execute(sa.select(fa)):
        allocs.setdefault(r.fill_id, []).append((from_column(r.holder), from_scaled(r.quantity)))
    attributed = {key: a.strategy for key, a in attributions(conn, ledger).items() if a.live}
    result = []
    for r in rows[-limit:] if limit else rows:
        to = attributed.get(r.exec_key)
        allocation: dict[str, Decimal] = {}
        for holder, qty in allocs.get(r.id, []):
            name = display(to if holder is None and to is not None else holder)
            allocation[name] = allocation.get(name, Decimal(0)) + qty
        result.append({
            "fill_id": r.exec_key, "exec_id": r.exec_id, "order": r.order_ref or None,
            "strategy": ", ".join(allocation), "allocation": allocation, "attributed_to": to,
            "contract": r.contract, "side": r.side, "quantity": from_scaled(r.quantity),
            "price": from_scaled(r.price), "time": r.time,
            "commission": "pending" if r.commission is None else from_scaled(r.commission),
            "currency": r.commission_currency, "entry": r.txn_id,
        })
    return result
