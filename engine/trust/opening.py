"""The opening: the first time an environment reaches its broker, the ledger opens where the broker is.

A real account is rarely empty when tradeledger first connects: the trader's own shares, a
future bought by hand, and the cash. The opening takes a snapshot (stored like every snapshot),
books the broker's executions it reports (as any fill sync does, so nothing is counted twice),
then books in ONE entry what the broker holds minus what the ledger already holds
(`engine.accounting.arrivals.opening_entry`), and records an `opening` row: when, from which
snapshot, the entry, and what was held and booked. That row is the gate of the order path: no
order is sent for an account without one (`require_opening`, called by `send_planned`).

When it is taken: at `init` when the broker is reachable; otherwise by the first reconciliation,
or right before the first order is sent (`ensure_opening`). A second init, a restart, or two
processes racing all find the row (one per account, unique in the database) and book nothing;
the entry's ledger key is per account, so even a lost row could not book it twice. The row also
keeps the opening's cut-off in its cash (cutoff.py): the movements the broker made before it are in
the opening's cash, never proposed or booked again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books, Context
from tradeledger.broker.base import AccountSnapshot, Broker, CashEvent
from tradeledger.engine import tables
from tradeledger.engine.accounting.arrivals import OpeningPlan
from tradeledger.engine.accounting.entries import opening_entry
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings, save_marks
from tradeledger.engine.trust.cutoff import held_json
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception
from tradeledger.engine.trust.reading import NO_OPENING, opening_summary
from tradeledger.engine.trust.snapshots import take_snapshot
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.store import Commodity, fmt_ts

UTC = dt.timezone.utc


class NoOpening(ValueError):
    """The account has no opening and none could be taken: nothing may be sent to the broker."""


@dataclass(frozen=True)
class Opening:
    """The recorded opening of an account."""

    id: int
    account: str
    taken_at: str
    snapshot_id: int
    txn_id: int | None
    source: str
    held: dict
    created: bool = False  # taken by this call (False: it was already there)

    def as_json(self) -> dict:
        return {"id": self.id, "account": self.account, "taken_at": self.taken_at, "snapshot": self.snapshot_id,
                "entry": self.txn_id, "source": self.source, **self.held}

    def summary(self) -> str:
        """One line for `status` and `init`: when, and what it held."""
        return opening_summary(self.taken_at, self.source, self.held, self.txn_id)


def get_opening(conn: Connection, account: str | None = None) -> Opening | None:
    t = tables.opening
    query = sa.select(t).order_by(t.c.id).limit(1)
    if account is not None:
        query = query.where(t.c.account == account)
    row = conn.execute(query).first()
    if row is None:
        return None
    return Opening(row.id, row.account, row.taken_at, row.snapshot_id, row.txn_id, row.source, json.loads(row.held))


def require_opening(conn: Connection, account: str | None = None) -> Opening:
    """The gate of the order path: the account's opening, or NoOpening."""
    found = get_opening(conn, account)
    if found is None:
        raise NoOpening(f"account {account or ''} has no opening: tradeledger has not yet seen what the broker "
                        "holds, so it sends nothing (run `tradeledger reconcile` once the broker is reachable)")
    return found


def book_opening(ctx: Context, snapshot_id: int, snap: AccountSnapshot, source: str,
                 now: dt.datetime | None = None, events: list[CashEvent] | None = None) -> Opening:
    """Book the opening from a stored snapshot, in one transaction; an existing opening wins.
    `events`: the broker's cash events read right after the snapshot (`moved_cash`), whose references
    the row keeps with the snapshot's cash journal line: its cut-off (cutoff.py)."""
    engine, chart = ctx.engine, ctx.chart
    now = now or ctx.now()
    account = chart.broker_account
    try:
        with engine.begin() as conn:
            existing = get_opening(conn, account)
            if existing is not None:
                return existing
            plan = _plan(conn, ctx.books, snapshot_id, snap)
            txn_id = _book(conn, ctx.books, plan, snap)
            held = plan.as_json() | held_json(snap, events or [])
            opening_id = conn.execute(tables.opening.insert().values(
                account=account, taken_at=fmt_ts(snap.taken_at), recorded_at=fmt_ts(now), snapshot_id=snapshot_id,
                txn_id=txn_id, source=source, held=json.dumps(held, sort_keys=True),
            )).inserted_primary_key[0]
            for position, why in plan.skipped:
                raise_exception(conn, ExceptionKind.UNATTRIBUTED_POSITION, position.contract.code,
                                f"{position.quantity} {position.contract.code} at the broker could not be booked at "
                                f"the opening: {why}", severity="error",
                                dedupe_key=dedupe_key(ExceptionKind.UNATTRIBUTED_POSITION, account, position.contract.code),
                                now=now)
            return Opening(opening_id, account, fmt_ts(snap.taken_at), snapshot_id, txn_id, source,
                           json.loads(json.dumps(held)), created=True)
    except sa.exc.IntegrityError:  # another process opened the account first: its opening stands
        with read_connection(engine) as conn:
            existing = get_opening(conn, account)
        if existing is None:
            raise
        return existing


def _plan(conn: Connection, books: Books, snapshot_id: int, snap: AccountSnapshot) -> OpeningPlan:
    ledger, chart = books.ledger, books.chart
    holdings = {}
    for position in snap.positions:
        if position.quantity:
            try:
                holdings[position.contract.code] = load_holdings(conn, books, position.contract)
            except Exception:  # a contract the ledger cannot hold: the plan skips it
                holdings[position.contract.code] = {}
    cash = {ccy: units for (account, ccy), units in ledger.balances(prefix=chart.cash, conn=conn).items()
            if account == chart.cash}
    return opening_entry(chart, snap, snapshot_id, holdings, cash)


def _book(conn: Connection, books: Books, plan: OpeningPlan, snap: AccountSnapshot) -> int | None:
    ledger = books.ledger
    if plan.txn is None:
        return None
    ensure_holder(conn, books, None)
    for opened in plan.positions:
        ensure_contract(conn, ledger, opened.contract, snap.taken_at.date())
    for line in plan.cash:
        ledger.ensure_commodity(Commodity(line.currency, "currency", None, Decimal(1), dt.date(2000, 1, 1)), conn)
    booked = ledger.book(plan.txn, conn)
    by_code = {p.contract.code: p.contract for p in plan.positions}
    for code, after in plan.after.items():
        save_marks(conn, by_code[code], after, snap.taken_at)
    return booked.id


def take_opening(ctx: Context, broker: Broker, source: str,
                 now: dt.datetime | None = None) -> Opening:
    """The account's opening, taken now if there is none: snapshot, book the executions the broker
    reports, then the opening entry. Raises NoOpening when the broker cannot be read."""
    engine, chart = ctx.engine, ctx.chart
    from tradeledger.engine.trading.fills import sync_fills  # fills -> orders -> this module

    with read_connection(engine) as conn:
        existing = get_opening(conn, chart.broker_account)
    if existing is not None:
        return existing
    now = now or ctx.now()
    result = take_snapshot(ctx, broker, now)
    if not result.ok:
        raise NoOpening(f"no opening for account {chart.broker_account}: the broker could not be read "
                        f"({result.error}); nothing is sent until it can")
    try:
        executions = broker.executions()
    except Exception as exc:
        raise NoOpening(f"no opening for account {chart.broker_account}: the broker's executions could not be "
                        f"read ({type(exc).__name__}: {exc})") from None
    sync_fills(ctx, _Fetched(executions), now)
    return book_opening(ctx, result.id, result.snapshot, source, now, moved_cash(broker))


def moved_cash(broker) -> list[CashEvent]:
    """The broker's cash events, when it reports them (the simulator), else none: what the opening
    keeps the references of. One that cannot be read now leaves them out (the journal line stands)."""
    events = getattr(broker, "cash_events", None)
    if events is None:
        return []
    try:
        return list(events())
    except Exception:  # the opening's cut-off is then the journal line alone
        return []


def ensure_opening(ctx: Context, broker: Broker, source: str, now: dt.datetime | None = None) -> Opening:
    """The opening of the database's account, taken with `broker` if it is missing."""
    engine = ctx.engine
    with read_connection(engine) as conn:
        existing = get_opening(conn)
    if existing is not None:
        return existing
    return take_opening(ctx, broker, source, now)


def open_session_account(session, source: str) -> Opening:
    """The opening of a Session's environment (connecting to its broker if needed)."""
    try:
        broker = session.broker
    except Exception as exc:
        raise NoOpening(f"no opening for account {session.settings.account}: the broker is unreachable "
                        f"({type(exc).__name__}: {exc}); it is taken before anything is sent") from None
    try:
        now = session.now()
    except Exception:
        now = dt.datetime.now(UTC)
    return take_opening(session, broker, source, now)


class _Fetched:
    def __init__(self, executions):
        self._executions = executions

    def executions(self, since=None):
        return list(self._executions)


def open_at_init(ctx: Context) -> tuple[Opening | None, str]:
    """`init`'s attempt at the opening: (the opening, "") when the broker is reachable, else
    (None, why) — it is then taken by the first reconciliation or before the first order."""
    from tradeledger.engine.setup.session import Session

    session = Session(ctx)
    try:
        return open_session_account(session, "init"), ""
    except NoOpening as exc:
        return None, str(exc)
    finally:
        session.close()


def opening_status(conn: Connection, account: str) -> dict | str:
    """What `status` shows: when the opening was taken and what it held, or why there is none."""
    found = get_opening(conn, account)
    return NO_OPENING if found is None else found.summary()
