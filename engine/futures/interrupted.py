"""An interrupted roll: a spread order whose legs did not all fill.

The broker may fill one leg of a calendar spread and cancel the rest. The leg that filled is booked
like any execution, so each strategy holds less of the old contract (or more of the new) than it
did: its exposure changed. `check_spreads` finds such orders once the broker says they are done,
marks them cancelled (nothing more will fill) and raises an `interrupted_roll` exception naming the
legs. The next cycle completes the roll by exposure alone: the target is compared with what each
strategy holds over every contract of the instrument, so the missing leg is traded once, never
the whole spread again.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled


def check_spreads(ctx: Context, broker, now: dt.datetime) -> list[str]:
    """Close out spread orders the broker finished with unequal legs; returns their order refs.
    `broker` may be a callable returning it (asked only when a spread is open)."""
    engine = ctx.engine
    o, legs_t = tables.broker_order, tables.order_leg
    with read_connection(engine) as conn:
        open_spreads = conn.execute(sa.select(o).where(o.c.state.in_(("sent", "partial")), o.c.id.in_(
            sa.select(legs_t.c.order_id)))).all()
    if not open_spreads:
        return []
    broker = broker() if callable(broker) and not hasattr(broker, "orders") else broker
    at_broker = {s.order_ref: s for s in broker.orders()}
    interrupted = []
    for row in open_spreads:
        status = at_broker.get(row.order_ref)
        if status is None or not status.is_done or status.status == "Filled":
            continue
        with engine.begin() as conn:
            legs = conn.execute(sa.select(legs_t).where(legs_t.c.order_id == row.id)).all()
            filled = {leg.contract: from_scaled(leg.filled) for leg in legs}
            conn.execute(o.update().where(o.c.id == row.id).values(state="cancelled", reason=status.reason or None))
            if len(set(filled.values())) > 1:
                raise_exception(conn, ExceptionKind.INTERRUPTED_ROLL, row.contract,
                                _describe(row, filled, status.reason or status.status),
                                severity="error", dedupe_key=dedupe_key(ExceptionKind.INTERRUPTED_ROLL, row.order_ref), now=now)
                interrupted.append(row.order_ref)
    return interrupted


def _describe(row, filled: dict, why: str) -> str:
    detail = ", ".join(f"{code} {qty} of {from_scaled(row.quantity)}" for code, qty in sorted(filled.items()))
    return (f"spread {row.order_ref} ({row.contract}) stopped with unequal legs: {detail} ({why}); the next "
            f"cycle completes the roll by exposure")


def interrupted_of_run(ctx: Context, run_id: int) -> list[str]:
    """The spreads of run `run_id` that ended with unequal legs (closed out by `check_spreads`), in
    words: what the run's execution says and exits non-zero for (the exception stays for a person)."""
    o, legs_t = tables.broker_order, tables.order_leg
    found = []
    with read_connection(ctx.engine) as conn:
        for row in conn.execute(sa.select(o).where(o.c.run_id == run_id, o.c.state == "cancelled", o.c.id.in_(
                sa.select(legs_t.c.order_id))).order_by(o.c.id)).all():
            filled = {leg.contract: from_scaled(leg.filled)
                      for leg in conn.execute(sa.select(legs_t).where(legs_t.c.order_id == row.id))}
            if len(set(filled.values())) > 1:
                found.append(_describe(row, filled, row.reason or "cancelled"))
    return found
