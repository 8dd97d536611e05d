"""Orders in flight count: what is already on its way to the broker is part of the position.

A run's change for a holder is its target minus its *expected* position: the ledger's position
plus the remaining quantity of every working order (state planned, sent, partial or unknown) allocated to
it (`in_flight`, pure over `working_orders`). So a run never sends an order whose effect is
already on its way.

**The rule for working orders of an older run** (`settle_older_orders`, run under the trading
lease, after a fill sync, before the new run is planned): a new run replaces the old run's
targets, so the old run's orders are *cancelled, and the cancel confirmed*, before planning:

1. A `planned` order of an older run (recorded, never confirmed sent: its process died) is first
   looked for at the broker by its orderRef. Found (or already filled): it was sent; recorded as
   sent and handled like any sent order. Not found: it never left, and it never will: `cancelled`
   ("never sent"), *provided the broker would still report it had it been sent*: one planned
   before the broker's memory begins (`Broker.memory_since`: IB forgets at the start of its day)
   may have been sent, filled and forgotten, so its outcome is `unknown` (engine/trading/unknown.py):
   counted, its instrument stopped, an exception raised, resolved only by a person. The same holds
   for a sent order the broker no longer reports.
2. A `sent`/`partial` order of an older run is cancelled at the broker. The cancel is confirmed
   when the broker reports the order done (Cancelled, Filled, Inactive, Rejected) and every fill it
   reports for it is booked; then the order is `cancelled` (what filled stays booked).
3. An order whose cancel is not confirmed within the wait is **kept and counted**: it stays
   working and its remaining quantity counts in the new plan (the plan may then send less than the
   target needs, never more), and the cycle says so.

Orders of the run being executed are its own: they are never cancelled, they count, and
`send_planned` sends only those of its planned orders the broker does not already have, and of
those only the ones the broker would report had they been sent (the rest: `unknown`).
"""

from __future__ import annotations

import datetime as dt
import time as wallclock
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.broker.base import BUY, Broker, BrokerError
from tradeledger.engine import tables
from tradeledger.engine.trading.unknown import UNKNOWN, clear_settled, hold_unknown, judge_unreported, recorded_at
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import fmt_ts

ZERO = Decimal(0)
WORKING = ("planned", "sent", "partial", UNKNOWN)


@dataclass(frozen=True)
class WorkingOrder:
    id: int
    order_ref: str
    run_id: int | None
    contract: str
    side: str
    quantity: Decimal
    filled: Decimal
    state: str
    remaining_by_holder: tuple[tuple[str, Decimal], ...]  # (holder, unsigned remaining share)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    def describe(self) -> str:
        return f"{self.order_ref} {self.side} {self.quantity} {self.contract} ({self.filled} filled, {self.state}, " \
               f"run {self.run_id})"


def working_orders(conn) -> list[WorkingOrder]:
    """Every order not done yet, with each holder's share still to fill."""
    o, a, f, fa = tables.broker_order, tables.order_alloc, tables.fill, tables.fill_alloc
    rows = conn.execute(sa.select(o).where(o.c.state.in_(WORKING)).order_by(o.c.id)).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    shares: dict[int, dict[str, Decimal]] = {}
    for r in conn.execute(sa.select(a).where(a.c.order_id.in_(ids))):
        shares.setdefault(r.order_id, {})[r.holder] = from_scaled(r.quantity)
    for order_id, holder, qty in conn.execute(
            sa.select(f.c.order_id, fa.c.holder, sa.func.sum(fa.c.quantity)).join(fa, fa.c.fill_id == f.c.id)
            .where(f.c.order_id.in_(ids), f.c.superseded_by.is_(None)).group_by(f.c.order_id, fa.c.holder)):
        if holder in shares.get(order_id, {}):
            shares[order_id][holder] -= abs(from_scaled(qty))
    return [WorkingOrder(r.id, r.order_ref, r.run_id, r.contract, r.side, from_scaled(r.quantity),
                         from_scaled(r.filled), r.state,
                         tuple(sorted((h, q) for h, q in shares.get(r.id, {}).items() if q > 0)))
            for r in rows]


def in_flight(orders: list[WorkingOrder]) -> dict[tuple[str, str], Decimal]:
    """(holder, contract) -> signed quantity still on its way (pure)."""
    total: dict[tuple[str, str], Decimal] = {}
    for order in orders:
        sign = 1 if order.side == BUY else -1
        for holder, qty in order.remaining_by_holder:
            key = (holder, order.contract)
            total[key] = total.get(key, ZERO) + sign * qty
    return {k: v for k, v in total.items() if v}


@dataclass
class SettleReport:
    found_sent: list[str] = field(default_factory=list)  # planned orders the broker had: recorded as sent
    dropped: list[str] = field(default_factory=list)  # planned orders of older runs never sent: cancelled
    cancelled: list[str] = field(default_factory=list)  # older runs' working orders, cancel confirmed
    kept: list[str] = field(default_factory=list)  # working orders still counted, and why
    unknown: list[str] = field(default_factory=list)  # orders of unknown outcome: counted, their contracts stopped

    @property
    def lines(self) -> list[str]:
        return ([f"{x}: planned, found at the broker: recorded as sent" for x in self.found_sent]
                + [f"{x}: planned by an older run and never sent: cancelled" for x in self.dropped]
                + [f"{x}: cancelled at the broker (confirmed) before planning" for x in self.cancelled]
                + [f"{x}: still working, counted in the plan" for x in self.kept]
                + [f"{x}: OUTCOME UNKNOWN, counted, its instrument not traded" for x in self.unknown])


def _update(engine, order_id: int, **values) -> None:
    o = tables.broker_order
    with engine.begin() as conn:
        conn.execute(o.update().where(o.c.id == order_id, o.c.state.in_(WORKING)).values(**values))


def hold_forgotten(ctx: Context, broker: Broker, orders: list[WorkingOrder], at_broker: dict, now: dt.datetime,
                   report: SettleReport) -> list[WorkingOrder]:
    """Every working order the broker does not report though it may have traded before the broker's
    memory begins goes to `unknown` (engine/trading/unknown.py); the orders left to settle."""
    memory = broker.memory_since(now)
    unknown = [o for o in orders if o.state == UNKNOWN and o.order_ref not in at_broker]
    report.unknown.extend(o.describe() for o in unknown)
    rest = [o for o in orders if not (o.state == UNKNOWN and o.order_ref not in at_broker)]
    if memory is None:
        return rest
    rows = {}
    with read_connection(ctx.engine) as conn:
        ids = [o.id for o in rest if o.order_ref not in at_broker]
        if ids:
            rows = {r.id: r for r in conn.execute(sa.select(tables.broker_order).where(
                tables.broker_order.c.id.in_(ids)))}
    left = []
    for order in rest:
        row = rows.get(order.id)
        if row is not None and judge_unreported(order.state, order.filled, recorded_at(row), memory) == UNKNOWN:
            hold_unknown(ctx, row, memory, now)
            report.unknown.append(order.describe().replace(f", {order.state},", ", unknown,"))
        else:
            left.append(order)
    return left


def settle_older_orders(ctx: Context, broker: Broker, run_id: int, sync, now: dt.datetime, timeout: float = 10.0,
                        poll: float = 0.2, guard=None) -> SettleReport:
    """Apply the rule above to every working order not of `run_id`; `sync()` books the broker's fills."""
    engine = ctx.engine
    report = SettleReport()
    with engine.begin() as conn:
        clear_settled(conn, now)  # an order a statement's import filled is no longer unknown
    with read_connection(engine) as conn:
        orders = working_orders(conn)
    if not orders:
        return report
    at_broker = {s.order_ref: s for s in broker.orders() if s.order_ref}
    orders = hold_forgotten(ctx, broker, orders, at_broker, now, report)
    to_cancel: list[WorkingOrder] = []
    for order in orders:
        status = at_broker.get(order.order_ref)
        if order.state in ("planned", UNKNOWN):
            if status is not None or order.filled:
                values = {"state": "sent", "sent_at": fmt_ts(now)}
                if status is not None:
                    values |= {"broker_order_id": status.broker_order_id, "perm_id": status.perm_id}
                _update(engine, order.id, **values)
                report.found_sent.append(order.order_ref)
            elif order.run_id != run_id:
                _update(engine, order.id, state="cancelled", reason=f"never sent: run {run_id} replaced run "
                                                                   f"{order.run_id}")
                report.dropped.append(order.describe())
                continue
            else:
                continue  # this run's own order: send_planned sends it
        if order.run_id == run_id:
            continue
        to_cancel.append(order)
    for order in to_cancel:
        status = at_broker.get(order.order_ref)
        if status is not None and status.is_done:
            continue
        if guard is not None:
            guard()
        try:
            broker.cancel_order(order.order_ref)
        except BrokerError as exc:
            report.kept.append(f"{order.describe()}: cancel not accepted by the broker ({exc})")
    deadline = wallclock.monotonic() + timeout
    pending = {o.order_ref: o for o in to_cancel}
    while pending:
        statuses = {s.order_ref: s for s in broker.orders() if s.order_ref in pending}
        sync()
        with read_connection(engine) as conn:
            booked = {r.order_ref: from_scaled(r.filled) for r in conn.execute(
                sa.select(tables.broker_order.c.order_ref, tables.broker_order.c.filled).where(
                    tables.broker_order.c.order_ref.in_(list(pending))))}
        for ref, order in list(pending.items()):
            status = statuses.get(ref)
            if status is not None and status.is_done and booked.get(ref, ZERO) >= status.filled:
                _update(engine, order.id, state="filled" if booked[ref] >= order.quantity else "cancelled",
                        reason=f"cancelled before run {run_id} was planned ({booked[ref]} of {order.quantity} "
                               f"filled)")
                report.cancelled.append(order.describe())
                del pending[ref]
        if not pending or wallclock.monotonic() >= deadline:
            break
        wallclock.sleep(poll)
    for order in pending.values():
        if not any(line.startswith(order.describe()) for line in report.kept):
            report.kept.append(f"{order.describe()}: the broker has not confirmed its cancel")
    return report
