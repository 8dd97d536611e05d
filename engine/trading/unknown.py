"""Orders whose outcome nobody knows: the broker's memory ended before them.

IB remembers a day: reqExecutions answers the executions since the start of the broker's day, and
an order done before it is in neither the open nor the completed orders. So "the broker does not
report this order" proves "it was never sent" only for an order the broker would still report had
it been sent. The broker says how far back its memory reaches (`Broker.memory_since(now)`: IB the
start of its day, the simulated exchange the start of its day when it keeps a day window, else
nothing is forgotten).

**The rule** (`judge_unreported`, pure): an order of ours in a working state (planned, sent,
partial) that the broker does not report, recorded (planned: its `created_at`; sent: its
`sent_at`) before the broker's memory begins plus `CLOCK_MARGIN` (our clock and the broker's may
disagree by that much), may have been sent, filled and forgotten: its outcome is **unknown**.
A younger one is judged as before: a planned order was never sent, a sent one is cancelled.

An order in state `unknown`:

- counts as working with its whole remaining quantity (`inflight.WORKING`), so it is never
  planned again on top of itself;
- stops its instrument (and its contracts): `unknown_locks` refuses every plan line for them,
  naming the order, because neither "it filled" nor "it never did" is safe to trade on;
- is never sent, cancelled or concluded by the engine; one `order_outcome_unknown` exception
  (error) names it and says what to do, and locks its contracts and instrument (so `status` shows
  the stop; resolving the order resolves the exception and releases them);
- is resolved by a person from the broker's statement: `tradeledger import flex FILE` books its
  executions by orderRef (exactly once; a full fill makes it `filled` and clears the exception),
  then `tradeledger orders resolve ID --filled` (what the statement shows is booked; nothing more
  will fill) or `--never-sent` (the statement shows no execution for its orderRef);
- is recorded as sent, and handled as any sent order, if the broker reports it after all.

The decision and the resolution are pure functions; each write is one transaction with its
exception.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.context import Context
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, lock, raise_exception, resolve_by_key
from tradeledger.errors import UserError
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import fmt_ts, parse_ts

UNKNOWN = "unknown"
CLOCK_MARGIN = dt.timedelta(minutes=5)  # how far our clock and the broker's may disagree
ZERO = Decimal(0)


def judge_unreported(state: str, booked: Decimal, recorded_at: dt.datetime,
                     memory_since: dt.datetime | None) -> str:
    """What an order of ours in a working state that the broker does not report is (pure):
    "unknown" (recorded before the broker's memory begins: it may have traded and been forgotten),
    "sent" (a fill of it is booked, or it was recorded sent) or "never_sent" (planned, nothing
    booked, and the broker would report it had it been sent)."""
    if memory_since is not None and recorded_at < memory_since + CLOCK_MARGIN:
        return UNKNOWN
    if state == "planned" and not booked:
        return "never_sent"
    return "sent"


def recorded_at(row) -> dt.datetime:
    """When an order row was last known to stand where it stands: sent_at once sent, else created_at."""
    return parse_ts(((row.sent_at if row.state != "planned" else None) or row.created_at)[:26])


def what_to_do(order_id: int, order_ref: str) -> str:
    return (f"check the broker's statement for orderRef {order_ref}: `tradeledger import flex FILE` books what "
            f"filled, then `tradeledger orders resolve {order_id} --filled`; or, if the statement has no "
            f"execution for it, `tradeledger orders resolve {order_id} --never-sent`")


def hold_unknown(ctx: Context, row, memory_since: dt.datetime, now: dt.datetime) -> str:
    """Put a working order into `unknown` and raise its exception, in one transaction. Returns what
    was said. `row`: a broker_order row (or a record with its columns)."""
    o = tables.broker_order
    qty, filled = from_scaled(row.quantity), from_scaled(row.filled)
    said = (f"order {row.id} ({row.order_ref}, {row.side} {qty} {row.contract}, run {row.run_id}, {row.state} at "
            f"{recorded_at(row):%Y-%m-%d %H:%M} UTC, {filled} filled) is not reported by the broker, whose memory "
            f"begins {memory_since:%Y-%m-%d %H:%M} UTC: it may have filled and been forgotten, so its outcome is "
            f"unknown; nothing more is traded in {row.contract} until it is resolved: "
            + what_to_do(row.id, row.order_ref))
    with ctx.engine.begin() as conn:
        done = conn.execute(o.update().where(o.c.id == row.id, o.c.state.in_(("planned", "sent", "partial"))).values(
            state=UNKNOWN, reason=f"outcome unknown: not reported by the broker, whose memory begins "
                                  f"{fmt_ts(memory_since)[:16]}")).rowcount
        if done:
            exception_id = raise_exception(conn, ExceptionKind.ORDER_OUTCOME_UNKNOWN, row.order_ref, said, "error",
                                           dedupe_key(ExceptionKind.ORDER_OUTCOME_UNKNOWN, row.order_ref), now=now)
            # the exception's locks, so that `status` and `exceptions list` show the stop; the plan's
            # refusal stands on the order's state itself (`unknown_locks`), whatever is unlocked by hand
            for key in lock_keys(row.contract, _instrument_of(ctx)):
                lock(conn, key, f"order {row.id} ({row.order_ref}) has an unknown outcome", exception_id, now=now)
    return said


def _instrument_of(ctx: Context):
    from tradeledger.engine.futures.exposure import instrument_index  # the configured instruments' codes

    try:
        return instrument_index(ctx.config)
    except Exception:  # a config that cannot be read locks the contracts alone; the plan reads it anyway
        return None


def lock_keys(contract: str, instrument_of) -> list[str]:
    """The contracts of an order (a spread OLD/NEW: both legs) and their instruments (pure)."""
    codes = contract.split("/")
    names = sorted({name for name in map(instrument_of, codes) if name}) if instrument_of else []
    return codes + [n for n in names if n not in codes]


def unknown_locks(orders, instrument_of) -> dict[str, str]:
    """{instrument or contract: why} for every order of unknown outcome (pure): nothing is planned
    for them. `orders`: working orders (inflight.WorkingOrder); a spread (OLD/NEW) stops both legs."""
    locks: dict[str, str] = {}
    for order in orders:
        if order.state != UNKNOWN:
            continue
        why = (f"order {order.id} ({order.order_ref} {order.side} {order.quantity} {order.contract}) has an unknown "
               f"outcome (the broker no longer reports it): {what_to_do(order.id, order.order_ref)}")
        for key in lock_keys(order.contract, instrument_of):
            locks[key] = f"{locks[key]}; {why}" if key in locks else why
    return locks


def resolution(state: str, quantity: Decimal, filled: Decimal, outcome: str) -> tuple[str, str]:
    """(new state, reason) of resolving an order of unknown outcome as `outcome` ("filled" or
    "never_sent"), or UserError saying why not (pure)."""
    if state != UNKNOWN:
        raise UserError(f"the order is {state}, not of unknown outcome: nothing to resolve")
    if outcome == "never_sent":
        if filled:
            raise UserError(f"{filled} of it is booked as filled, so it was sent: import the rest of the statement "
                            f"and resolve it --filled")
        return "cancelled", "resolved: never sent (the broker's statement shows no execution for it)"
    if outcome == "filled":
        if not filled:
            raise UserError("no fill of it is booked: book the statement's executions first "
                            "(`tradeledger import flex FILE`), or resolve it --never-sent if the statement has none")
        if filled >= quantity:
            return "filled", "resolved: filled (its executions are booked from the broker's statement)"
        return "cancelled", f"resolved: {filled} of {quantity} filled (from the broker's statement), the rest never will"
    raise ValueError(f"unknown outcome {outcome!r}")


def resolve_order(ctx: Context, order_id: int, outcome: str, who: str, now: dt.datetime) -> str:
    """`tradeledger orders resolve ID --filled|--never-sent`: the order's new state and its exception
    resolved, in one transaction; returns what was done."""
    o = tables.broker_order
    with ctx.engine.begin() as conn:
        row = conn.execute(sa.select(o).where(o.c.id == order_id)).first()
        if row is None:
            raise UserError(f"no order {order_id}")
        try:
            state, reason = resolution(row.state, from_scaled(row.quantity), from_scaled(row.filled), outcome)
        except UserError as exc:
            raise UserError(f"order {order_id} ({row.order_ref}): {exc}") from None
        conn.execute(o.update().where(o.c.id == order_id, o.c.state == UNKNOWN).values(
            state=state, reason=f"{reason} by {who}"))
        resolve_by_key(conn, dedupe_key(ExceptionKind.ORDER_OUTCOME_UNKNOWN, row.order_ref), who,
                       f"order {order_id} {reason}", now=now)
    return f"order {order_id} ({row.order_ref}) {state}: {reason}"


def clear_settled(conn, now: dt.datetime) -> list[str]:
    """Resolve the exception of every order that is no longer of unknown outcome (a statement's
    import filled it); in the caller's transaction. Returns their orderRefs."""
    e, o = tables.tl_exception, tables.broker_order
    kind = ExceptionKind.ORDER_OUTCOME_UNKNOWN.value
    rows = conn.execute(sa.select(e.c.subject).where(e.c.kind == kind, e.c.state != "resolved")).all()
    if not rows:
        return []
    states = dict(conn.execute(sa.select(o.c.order_ref, o.c.state).where(
        o.c.order_ref.in_([r.subject for r in rows]))).all())
    cleared = []
    for r in rows:
        state = states.get(r.subject)
        if state is not None and state != UNKNOWN:
            resolve_by_key(conn, dedupe_key(ExceptionKind.ORDER_OUTCOME_UNKNOWN, r.subject), "tradeledger",
                           f"order {r.subject} is now {state}", now=now)
            cleared.append(r.subject)
    return cleared
