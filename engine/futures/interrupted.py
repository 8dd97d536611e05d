"""An interrupted roll: a spread order whose legs did not all fill.

The broker may fill one leg of a calendar spread and cancel the rest. The leg that filled is booked
like any execution, so each strategy holds less of the old contract (or more of the new) than it
did: its exposure changed. `check_spreads` finds such orders once the broker says they are done,
marks them cancelled (nothing more will fill) and raises an `interrupted_roll` exception naming the
legs. The next cycle completes the roll by exposure alone: the target is compared with what each
strategy holds over every contract of the instrument, so the missing leg is traded once, never
the whole spread again; so does a `roll execute` (its targets are each holder's exposure before the
half roll, `intended_exposures`, not the half-rolled one).

**When it ends.** The exception names one condition: a strategy the spread was allocated to holds,
over all contracts of the instrument, an exposure other than what it is meant to hold, because one
leg filled without the other. What it is meant to hold is its target in the newest run *executed*
(planned: crosses booked, orders recorded) since the spread's own run, that run included: the
spread's run until a later `cycle` or `roll execute` is executed, then that one. The exception stays
open while any of the spread's holders is off that target (a later run not executed yet, its order
still working, cancelled or refused, changes nothing), and `resolve_rolled` resolves it in the very
transaction that brings the last of them to it: the fills booked, the plan recorded (its crosses, or
a target the half-rolled exposure already meets), an adjustment or an expiry booked.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

import json
from decimal import Decimal

from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books, Context
from tradeledger.engine import tables
from tradeledger.engine.accounting.holders import display, from_column, holder_of
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, key_prefix, raise_exception, resolve
from tradeledger.engine.trust.reading import OPEN_STATES
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled

ZERO = Decimal(0)


def check_spreads(ctx: Context, broker, now: dt.datetime) -> list[str]:
    """Close out spread orders the broker finished with unequal legs; returns each in words (the
    exception's detail). `broker` may be a callable returning it (asked only when a spread is open).
    Every fill sync runs it (`fills sync`, the daemon's fill_sync job, a cycle's waits and plans), so
    a spread stopped by half while nobody waited for it (a cycle killed after sending it) is raised
    at the next sync, not only at the next plan."""
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
                detail = _describe(row, filled, status.reason or status.status)
                raise_exception(conn, ExceptionKind.INTERRUPTED_ROLL, row.contract, detail, severity="error",
                                dedupe_key=dedupe_key(ExceptionKind.INTERRUPTED_ROLL, row.order_ref), now=now)
                interrupted.append(detail)
    return interrupted


def _describe(row, filled: dict, why: str) -> str:
    detail = ", ".join(f"{code} {qty} of {from_scaled(row.quantity)}" for code, qty in sorted(filled.items()))
    return (f"spread {row.order_ref} ({row.contract}) stopped with unequal legs: {detail} ({why}); the next "
            f"cycle (or roll execute) completes the roll by exposure, and this resolves itself once its holders are "
            f"back at their targets")


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


# -- when the half roll is over ------------------------------------------------------------------


def _open_interrupted(conn: Connection) -> list:
    t = tables.tl_exception
    return conn.execute(sa.select(t.c.id, t.c.dedupe_key).where(
        t.c.kind == ExceptionKind.INTERRUPTED_ROLL.value, t.c.state.in_(OPEN_STATES)).order_by(t.c.id)).all()


def _spread(conn: Connection, key: str, of):
    """(order row, instrument, holders allocated) of the spread an exception's key names, or None."""
    prefix = key_prefix(ExceptionKind.INTERRUPTED_ROLL)
    if not key.startswith(prefix):
        return None
    o, legs_t, oa = tables.broker_order, tables.order_leg, tables.order_alloc
    row = conn.execute(sa.select(o).where(o.c.order_ref == key[len(prefix):])).first()
    if row is None:
        return None
    codes = [c for (c,) in conn.execute(sa.select(legs_t.c.contract).where(legs_t.c.order_id == row.id))]
    names = {of(code) for code in codes} - {None}
    if len(names) != 1:
        return None
    holders = sorted(from_column(h) or "" for (h,) in conn.execute(
        sa.select(oa.c.holder).where(oa.c.order_id == row.id)))
    return row, names.pop(), holders


def _target_since(conn: Connection, holder: str, instrument: str, since_run: int) -> tuple[int, Decimal] | None:
    """(run, target) of `holder` in `instrument` in the newest run executed (planned) from run
    `since_run` on; None when no such run has a line for it."""
    tl, rp = tables.target_line, tables.run_plan
    planned = sa.select(rp.c.run_id).where(rp.c.run_id >= since_run)
    rows = conn.execute(sa.select(tl.c.run_id, tl.c.instrument, tl.c.target, tl.c.explain).where(
        tl.c.run_id >= since_run, tl.c.run_id.in_(planned)).order_by(tl.c.run_id.desc())).all()
    found: dict[int, Decimal] = {}
    for run_id, name, target, explain in rows:
        x = json.loads(explain)
        if x.get("account") == holder and x.get("execution_instrument", name) == instrument:
            found[run_id] = found.get(run_id, ZERO) + from_scaled(target)
    if not found:
        return None
    newest = max(found)
    return newest, found[newest]


def _exposures(conn: Connection, books: Books, of) -> dict[tuple[str, str], Decimal]:
    """(holder, instrument) -> its exposure (the sum over the instrument's contracts), from the ledger."""
    result: dict[tuple[str, str], Decimal] = {}
    for (account, code), units in books.ledger.positions(prefix=books.chart.root, conn=conn).items():
        holder, name = holder_of(books.chart, account), of(code)
        if holder is not False and holder is not None and name is not None and units:
            result[(holder, name)] = result.get((holder, name), ZERO) + units
    return result


def intended_exposures(conn: Connection, of) -> dict[tuple[str, str], tuple[Decimal, str]]:
    """(holder, instrument) -> (what it is meant to hold, the spread's order ref) for every holder of
    an open interrupted roll: its target in the newest run executed since the spread's run. A
    `roll execute` takes these as its targets, so that it completes a half roll."""
    result = {}
    for exc in _open_interrupted(conn):
        spread = _spread(conn, exc.dedupe_key, of)
        if spread is None:
            continue
        row, instrument, holders = spread
        for holder in holders:
            target = _target_since(conn, holder, instrument, row.run_id)
            if target is not None:
                result[(holder, instrument)] = (target[1], row.order_ref)
    return result


def resolve_rolled(conn: Connection, books: Books, config, now: dt.datetime) -> list[int]:
    """Resolve, inside the caller's transaction, every open `interrupted_roll` whose holders are all
    back at what they are meant to hold (see the module's docstring); returns the resolved ids.
    One indexed read when none is open (the common case: it runs with every booking)."""
    open_ones = _open_interrupted(conn)
    if not open_ones:
        return []
    from tradeledger.engine.futures.exposure import instrument_index

    of = instrument_index(config)
    names = {s.account_name: s.name for s in config.strategies.values()}  # what a person calls a holder
    held = _exposures(conn, books, of)
    resolved = []
    for exc in open_ones:
        spread = _spread(conn, exc.dedupe_key, of)
        if spread is None:
            continue
        row, instrument, holders = spread
        at = []
        for holder in holders:
            target = _target_since(conn, holder, instrument, row.run_id)
            units = held.get((holder, instrument), ZERO)
            if target is None or units != target[1]:
                break
            at.append(f"{names.get(holder, display(holder))} holds {units} {instrument}, its target in run {target[0]}")
        else:
            resolve(conn, exc.id, "tradeledger", f"roll completed: {'; '.join(at)}", now=now)
            resolved.append(exc.id)
    return resolved
