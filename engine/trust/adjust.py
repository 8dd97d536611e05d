"""Maintenance: repairing the books when something happened outside tradeledger, as ledger entries.

Every tool books one new, balanced entry with a reason, linked to what it fixes; nothing booked
before is edited (`fill_alloc` stays the fact of how a fill was booked). Each tool is

- a *planner* that reads the state it needs inside the caller's database transaction and hands
  it to a *pure builder* (`transfer_entry`, `close_entry`, `cash_entry`), which returns the
  entry and the holders' positions/marks after it; and
- `book`, which plans again inside one write transaction, refuses if the entry differs from the
  dry run the user confirmed, books it, moves the marks, records an `adjustment` row,
  resolves the exceptions the entry answers and raises those it re-opens — all or nothing.

The tools:
    attribute FILL -> S        an unattributed fill's quantity moves to S at the fill price, with
                               its booked commission (again after a reversal: to S or another)
    adopt CONTRACT QTY -> S    unattributed position moves to S at its current mark
    transfer CONTRACT QTY S->T between strategies at S's current mark
    manual-close CONTRACT S    S's position closed outside tradeledger: from the broker's
                               execution (an attribution of that fill) or at a given price
    reverse ENTRY              the exact opposite of an entry (Ledger.reverse); of an attribution,
                               with the fill's commission following its position back (a late or
                               changed one booked to S meanwhile: trading/commissions.py), and
                               the fill's `unattributed_fill` exception raised anew (it is
                               Unattributed's again; trading/attribution.py); of an adoption
                               (or attribution) that resolved the contract's
                               `unattributed_position`, that one raised anew (trust/adopt.py)
    cash CCY AMOUNT [--date D] interest, fees, deposits: Income/Expenses:Adjustments or
                               Equity:Deposits against cash, dated now or at the start of D
                               (the day it moved at the broker, found later); booked once, by
                               the broker's reference (--ref) or refused when an equal movement
                               is booked that day (cash_moves.py, `plan_cash_move`)

A transfer of futures is a trade between two holders at one price: each side's existing
position is first marked to that price (variation margin), then the units move and both are
marked at the price. Moving a fill's position at the fill price therefore moves all the P&L
made since the fill to its new owner, which is what an attribution means. Shares move through
the same trade postings (lots at cost, FIFO, labelled).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Context
from tradeledger.broker.base import Contract
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import (
    CASH_KINDS, Holding, cash_entry, close_entry, key_tail, link, transfer_entry, whole_contracts,
    with_commission_moved,
)
from tradeledger.engine.accounting.holders import Holder, display, from_column, holder_of, names_unattributed, to_column
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings, lock_contract, save_marks
from tradeledger.engine.futures.interrupted import resolve_rolled
from tradeledger.engine.trading.attribution import KINDS as ATTRIBUTION_KINDS, attribution_reversed, live_attribution
from tradeledger.engine.trading import lease as trading_lease
from tradeledger.engine.trading.commissions import Follow, book_follow, plan_follow
from tradeledger.engine.trust import cash_moves, cutoff
from tradeledger.engine.trust.adopt import position_back
from tradeledger.engine.trust.exceptions import ExceptionKind, Occurrence, dedupe_key, raise_occurrence
from tradeledger.engine.tables import adjustment
from tradeledger.engine.trust import CASH_KINDS
from tradeledger.ledger.accounts import Chart
from tradeledger.errors import AdjustError, UnknownName
from tradeledger.ledger.model import IdempotencyConflict, LedgerError, Transaction, reversal_of
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.store import Booked as StoreBooked, Commodity, fmt_ts

ZERO = Decimal(0)
KINDS = ("attribute", "adopt", "transfer", "manual-close", "reverse", "cash")
POSITION_KINDS = ("attribute", "adopt", "transfer", "manual-close")


@dataclass(frozen=True)
class Adjustment:
    """A planned maintenance entry: everything `book` writes, and what a dry run shows."""

    kind: str
    subject: str
    txn: Transaction
    reason: str
    contract: Contract | None = None
    from_holder: Holder = None
    to_holder: Holder = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    after: dict = field(default_factory=dict)  # holder -> Holding, futures marks to save
    marks_before: dict = field(default_factory=dict)  # holder -> price (str)
    resolves: tuple[str, ...] = ()  # exception dedupe keys this entry answers
    raises: tuple[Occurrence, ...] = ()  # exceptions it re-opens (an attribution's reversal)
    reverses: int | None = None
    names: dict = field(default_factory=dict)  # holder component -> the user's strategy name
    follow: Follow | None = None  # an attribution's reversal: the fill's commission follows back
    ref: str | None = None  # cash: the broker's reference of the movement (cash_moves.py)
    earlier: tuple = ()  # cash: equal movements booked that day (cash_moves.Earlier), for the dry run

    @property
    def entries(self) -> tuple[Transaction, ...]:
        """Every entry `book` writes, in order: this one, then what follows it."""
        return (self.txn,) + (self.follow.entries if self.follow is not None else ())

    def fingerprint(self) -> str:
        """The dry run's fingerprint: of every entry booking it would write."""
        if self.follow is None:
            return self.txn.fingerprint()
        return hashlib.sha256("|".join(t.fingerprint() for t in self.entries).encode()).hexdigest()

    def summary(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "reason": self.reason,
                "contract": self.contract.code if self.contract else None,
                "from": _who(self.from_holder, self.names) if self.kind in POSITION_KINDS else None,
                "to": _who(self.to_holder, self.names) if self.kind in POSITION_KINDS else None,
                "quantity": self.quantity, "price": self.price, "narration": self.txn.narration,
                "postings": [(p.account, p.units, p.commodity) for p in self.txn.postings],
                "also": [{"narration": t.narration, "postings": [(p.account, p.units, p.commodity) for p in t.postings]}
                         for t in self.entries[1:]],
                "resolves": list(self.resolves), "reopens": [o.dedupe_key for o in self.raises],
                "time": self.txn.time} | (self._movement() if self.kind == "cash" else {})

    def _movement(self) -> dict:
        """A cash movement's fields, as a replay of it says them too (commands/trust.py)."""
        return {"cash_kind": dict(self.txn.meta).get("adjust"), "currency": self.subject, "amount": self.quantity,
                "date": self.txn.date, "ref": self.ref, "earlier": [e.as_json() for e in self.earlier]}


@dataclass(frozen=True)
class Booked:
    adjustment_id: int
    txn_id: int
    resolved: tuple[str, ...]
    reopened: tuple[str, ...] = ()


def _who(holder: Holder, names: dict | None = None) -> str:
    """The holder as the user names it: `etf_trend`, not its account component `Etf-trend`."""
    return (names or {}).get(holder) or display(holder)


def user_names(ctx: Context) -> dict:
    """{holder component: the user's strategy name} of the environment's strategies."""
    return {component: name for name, component in ctx.strategies.items()}


def new_key(kind: str, chart: Chart) -> str:
    """A fresh idempotency key for one user request (kept from the dry run to the booking)."""
    return f"adjust:{kind}:{chart.broker_account}:{uuid.uuid4().hex[:16]}"


# -- planners: read the state inside a transaction, build the entry ---------------------------------

def resolve_holder(conn: Connection, ctx: Context, name: str) -> Holder:
    """A strategy's account component from its user name or component; 'unattributed' -> None."""
    if names_unattributed(name):
        return None
    if name in ctx.strategies:
        return ctx.strategies[name]
    if name in ctx.strategies.values():
        return name
    account = ctx.chart.holdings(name)
    if ctx.ledger.has_account(account, conn):
        return name
    raise UnknownName("strategy", name, ctx.strategies)


def _contract(conn: Connection, ledger, code: str) -> Contract:
    row = ledger.commodity(code, conn)
    if row is None or row.kind not in ("future", "share"):
        booked = [c.name for c in ledger.commodities(conn) if c.kind in ("future", "share")]
        raise UnknownName("contract", code, booked, see="tradeledger positions")
    return Contract(code=code, sec_type="FUT" if row.kind == "future" else "STK", symbol=code, exchange="",
                    currency=row.currency or "", multiplier=Decimal(row.multiplier))


def _marks(holdings: dict) -> dict:
    return {to_column(h): str(x.mark) for h, x in holdings.items() if x.mark is not None}


def _current_price(conn: Connection, ledger, contract: Contract, holdings: dict, holder: Holder,
                   price: Decimal | None) -> Decimal:
    if price is not None:
        return price
    holding = holdings.get(holder, Holding())
    if contract.sec_type == "FUT" and holding.mark is not None:
        return holding.mark
    recorded = ledger.latest_price(contract.code, conn)
    if recorded is not None:
        return recorded
    if contract.sec_type != "FUT":  # a share's latest close is its price
        bar = tables.price_bar
        close = conn.execute(sa.select(bar.c.close).where(bar.c.instrument == contract.code)
                             .order_by(bar.c.date.desc()).limit(1)).scalar()
        if close is not None:
            return from_scaled(close)
    raise AdjustError(f"no current mark or close for {contract.code}: give --price")


def _cleared(chart: Chart, after: dict, code: str) -> tuple[str, ...]:
    """Exception keys (as fills/adopt/reconcile raise them) answered once the unattributed bucket
    holds nothing more of the contract."""
    if after.get(None, Holding()).position == 0:
        return (dedupe_key(ExceptionKind.UNATTRIBUTED_POSITION, chart.broker_account, code),)
    return ()


def _positive(qty: Decimal, have: Decimal, contract: Contract, holder: Holder, names: dict) -> Decimal:
    """A user's quantity as a signed move along the holder's position."""
    if have == 0:
        raise AdjustError(f"insufficient position: {_who(holder, names)} holds no {contract.code}")
    if qty < 0 and have > 0:
        raise AdjustError(f"{_who(holder, names)} is long {have} {contract.code}: give a positive quantity")
    signed = abs(qty) if have > 0 else -abs(qty)
    if abs(signed) > abs(have):
        raise AdjustError(f"insufficient position: {_who(holder, names)} holds {have} {contract.code}, "
                          f"asked for {qty}")
    return signed


def plan_attribute(conn: Connection, ctx: Context, exec_key: str, strategy: str, reason: str,
                   time: dt.datetime, key: str, kind: str = "attribute") -> Adjustment:
    taker = resolve_holder(conn, ctx, strategy)  # an unknown strategy is said first, whatever the fill
    names = user_names(ctx)
    if taker is None:
        raise AdjustError("attribute a fill to a strategy, not to unattributed")
    f = tables.fill
    row = conn.execute(sa.select(f).where(f.c.account == ctx.chart.broker_account, f.c.superseded_by.is_(None),
                                          sa.or_(f.c.exec_key == exec_key, f.c.exec_id == exec_key))).first()
    if row is None:
        raise AdjustError(f"unknown fill {exec_key!r}: see `tradeledger fills list`")
    # Read again under the contract's lock, as a fill sync books: on PostgreSQL a late commission,
    # a correction or another attribution committed meanwhile is seen here, not overlooked.
    lock_contract(conn, row.contract)
    row = conn.execute(sa.select(f).where(f.c.account == row.account, f.c.exec_key == row.exec_key,
                                          f.c.superseded_by.is_(None))).one()
    exec_key = row.exec_key
    standing = live_attribution(conn, ctx.ledger, exec_key)  # one reversed since may be given again
    if standing is not None:
        raise AdjustError(f"fill {exec_key} is already attributed to {_who(standing[0], names)} "
                          f"by entry {standing[1]}; reverse that entry first (`adjust reverse {standing[1]}`)")
    unattributed = conn.execute(sa.select(tables.fill_alloc.c.quantity).where(
        tables.fill_alloc.c.fill_id == row.id, tables.fill_alloc.c.holder == to_column(None))).scalar()
    if unattributed is None:
        raise AdjustError(f"fill {exec_key} is not unattributed: it was booked for its order {row.order_ref}")
    qty, price = from_scaled(unattributed), from_scaled(row.price)
    contract = _contract(conn, ctx.ledger, row.contract)
    holdings = load_holdings(conn, ctx.books, contract)
    # The unattributed bucket *received* qty with the fill: it now gives qty to the strategy.
    narration = f"{'Manual close' if kind == 'manual-close' else 'Attribute'} fill {exec_key}: {qty:+} " \
                f"{contract.code} @ {price} to {_who(taker, names)}: {reason}"
    links = (f"fill-{link(exec_key)}", f"adjust-{key_tail(key)}")
    txn, after = transfer_entry(ctx.chart, contract, holdings, None, taker, qty, price, time, kind, narration, key,
                                links, (("reason", reason), ("exec", exec_key), ("adjust", kind)))
    txn = _with_commission(ctx.chart, txn, row, taker)
    return Adjustment(kind, exec_key, txn, reason, contract, None, taker, qty, price, after, _marks(holdings),
                      resolves=(dedupe_key(ExceptionKind.UNATTRIBUTED_FILL, ctx.chart.broker_account, exec_key),)
                      + _cleared(ctx.chart, after, row.contract), names=names)


def _with_commission(chart: Chart, txn: Transaction, fill_row, taker: str) -> Transaction:
    """Move the fill's booked commission (when it is known) from Unattributed to the strategy."""
    if not fill_row.commission:  # pending (a late commission books to the fill's own allocation) or zero
        return txn
    return with_commission_moved(chart, txn, from_scaled(fill_row.commission), fill_row.commission_currency, taker)


def plan_adopt(conn: Connection, ctx: Context, code: str, qty: Decimal, strategy: str, reason: str,
               time: dt.datetime, key: str, price: Decimal | None = None) -> Adjustment:
    taker = resolve_holder(conn, ctx, strategy)
    if taker is None:
        raise AdjustError("adopt into a strategy, not into unattributed")
    return _plan_move(conn, ctx, "adopt", code, qty, None, taker, reason, time, key, price)


def plan_transfer(conn: Connection, ctx: Context, code: str, qty: Decimal, source: str, target: str, reason: str,
                  time: dt.datetime, key: str, price: Decimal | None = None) -> Adjustment:
    giver, taker = resolve_holder(conn, ctx, source), resolve_holder(conn, ctx, target)
    return _plan_move(conn, ctx, "transfer", code, qty, giver, taker, reason, time, key, price)


def _plan_move(conn: Connection, ctx: Context, kind: str, code: str, qty: Decimal, giver: Holder,
               taker: Holder, reason: str, time: dt.datetime, key: str, price: Decimal | None) -> Adjustment:
    """Move a position between holders at a price (adopt: from unattributed into a strategy)."""
    contract = _contract(conn, ctx.ledger, code)
    whole_contracts(contract, qty)
    holdings = load_holdings(conn, ctx.books, contract)
    names = user_names(ctx)
    signed = _positive(qty, holdings.get(giver, Holding()).position, contract, giver, names)
    at = _current_price(conn, ctx.ledger, contract, holdings, giver, price)
    what = "Adopt" if kind == "adopt" else "Transfer"
    narration = f"{what} {signed:+} {contract.code} @ {at} from {_who(giver, names)} " \
                f"{'into' if kind == 'adopt' else 'to'} {_who(taker, names)}: {reason}"
    txn, after = transfer_entry(ctx.chart, contract, holdings, giver, taker, signed, at, time, kind, narration,
                                key, (f"adjust-{key_tail(key)}",), (("reason", reason), ("adjust", kind)))
    resolves = _cleared(ctx.chart, after, code) if giver is None else ()
    return Adjustment(kind, code, txn, reason, contract, giver, taker, signed, at, after, _marks(holdings),
                      resolves=resolves, names=names)


def plan_manual_close(conn: Connection, ctx: Context, code: str, strategy: str, reason: str, time: dt.datetime,
                      key: str, price: Decimal | None = None, exec_key: str | None = None,
                      qty: Decimal | None = None) -> Adjustment:
    """From the broker's execution (already synced, so booked unattributed) or at a given price;
    at a price, `qty` closes only that many units (a partial shortfall), and the holder may be
    Unattributed (the trader's own holdings went elsewhere)."""
    if (price is None) == (exec_key is None):
        raise AdjustError("manual-close needs either --price or --exec")
    if qty is not None and exec_key is not None:
        raise AdjustError("--qty is for --price: an execution closes its own quantity")
    contract = _contract(conn, ctx.ledger, code)
    holder = resolve_holder(conn, ctx, strategy)
    names = user_names(ctx)
    if holder is None and exec_key is not None:
        raise AdjustError("an execution booked to unattributed is already unattributed's: nothing to say")
    holdings = load_holdings(conn, ctx.books, contract)
    have = holdings.get(holder, Holding()).position
    if have == 0:
        raise AdjustError(f"insufficient position: {_who(holder, names)} holds no {code}")
    if exec_key is not None:
        adj = plan_attribute(conn, ctx, exec_key, holder, reason, time, key, kind="manual-close")
        if adj.contract.code != code:
            raise AdjustError(f"execution {exec_key} traded {adj.contract.code}, not {code}")
        if (adj.quantity > 0) == (have > 0) or abs(adj.quantity) > abs(have):
            raise AdjustError(f"execution {exec_key} ({adj.quantity:+}) does not close {_who(holder, names)}'s {have} {code}")
        return adj
    closing = have if qty is None else _positive(qty, have, contract, holder, names)
    narration = f"Manual close of {_who(holder, names)}'s {closing} {code} @ {price} (closed outside tradeledger): {reason}"
    txn, after = close_entry(ctx.chart, contract, holdings, holder, price, time, narration, key,
                             (f"adjust-{key_tail(key)}",), (("reason", reason), ("adjust", "manual-close")),
                             -closing)
    return Adjustment("manual-close", code, txn, reason, contract, holder, None, -closing, price, after,
                      _marks(holdings), resolves=(dedupe_key(ExceptionKind.RECONCILIATION_BREAK, ctx.chart.broker_account, code),),
                      names=names)


def cash_time(now: dt.datetime, day: dt.date | None) -> dt.datetime:
    """When a cash movement is booked: now, or the start of the day it moved at the broker when it
    was found later (a deposit found by Thursday's reconciliation arrived on Tuesday: the NAV of
    Tuesday and Wednesday held it at the broker). A day after today is refused."""
    if day is None or day == now.date():
        return now
    if day > now.date():
        raise AdjustError(f"--date {day.isoformat()} is after today ({now.date().isoformat()}): cash is booked "
                          "when it has moved")
    return dt.datetime.combine(day, dt.time(0), dt.timezone.utc)


def plan_cash(conn: Connection, ctx: Context, currency: str, amount: Decimal, reason: str, time: dt.datetime,
              key: str, cash_kind: str = "adjustment", ref: str | None = None) -> Adjustment:
    """The entry of a cash movement under `key`, as given (`plan_cash_move` decides the key)."""
    currency = currency.upper()
    if len(currency) != 3 or not currency.isalpha():
        raise AdjustError(f"{currency!r} is not a currency code")
    txn = cash_entry(ctx.chart, currency, amount, cash_kind, reason, time, key, ref)
    statement = (dedupe_key(ExceptionKind.CASH_MOVEMENT, ctx.settings.account, f"{cash_moves.FLEX}{ref}"),) if ref else ()
    return Adjustment("cash", currency, txn, reason, quantity=amount, ref=ref,
                      resolves=(dedupe_key(ExceptionKind.RECONCILIATION_BREAK, ctx.chart.broker_account, "cash",
                                          currency),) + statement)


def plan_cash_move(conn: Connection, ctx: Context, currency: str, amount: Decimal, reason: str, time: dt.datetime,
                   key: str, cash_kind: str = "adjustment", ref: str | None = None, again: bool = False,
                   dated: bool = False) -> Adjustment:
    """`adjust cash`: a movement booked once (cash_moves.py). With the broker's `ref` the key is
    R's (`key`, the run's fresh one, is not used) and R already standing for an entry is a
    `Replay` or a refusal; without, an equal movement standing on the day refuses unless `again`.
    `dated`: the day was given (`--date`), so a replay must be of that day."""
    chart = ctx.chart
    if ref is not None:
        claim = cash_moves.claim_ref(conn, ctx.ledger, chart, cash_kind, ref)
        key = claim.key
    adj = plan_cash(conn, ctx, currency, amount, reason, time, key, cash_kind, ref)
    asked = cash_moves.Movement(cash_kind, adj.subject, amount, time.date())
    cutoff.decide_by_hand(cutoff.opening_cut(conn, chart.broker_account), asked.day, ref, asked.said())
    if ref is not None:
        cash_moves.decide_ref(claim.standing, asked, dated, ref)
    else:  # as `actions interest|fee` without a reference: one run at a time finds what stands that day
        cash_moves.lock_day(conn, chart.broker_account, adj.subject, asked.day)
    equal = cash_moves.equal_on_day(conn, ctx.ledger, chart, asked)
    if ref is None:
        cash_moves.decide_plain(equal, asked, again)
    return replace(adj, earlier=tuple(equal))


def plan_reverse(conn: Connection, ctx: Context, entry_id: int, reason: str, time: dt.datetime, key: str) -> Adjustment:
    """Reversal of an entry. Entries that carry engine state (fills, settlements, crosses) are
    refused with the tool to use instead; a position adjustment can be reversed while no later
    entry has touched its contract, and its holders' marks go back to what they were."""
    try:
        original = ctx.ledger.get(entry_id, conn)
    except LedgerError:
        raise AdjustError(f"unknown entry {entry_id}") from None
    if original.kind in ("fill", "commission", "settlement", "cross"):
        raise AdjustError(f"entry {entry_id} is a {original.kind}: it is the record of what happened at the broker; "
                          "repair its effect with `adjust transfer`, `adjust manual-close` or `adjust cash`")
    already = ctx.ledger.reversed_by(entry_id, conn)
    if already is not None:
        raise AdjustError(f"entry {entry_id} is already reversed by entry {already}")
    if original.kind == "reversal":
        raise AdjustError(f"entry {entry_id} is itself a reversal; book a new entry instead")
    row = conn.execute(sa.select(adjustment).where(adjustment.c.txn_id == entry_id)).first()
    codes = {p.commodity for p in original.postings if p.cost is not None}
    after: dict = {}
    contract = None
    if codes:
        if row is None or not row.contract:
            raise AdjustError(f"entry {entry_id} moves positions but was not booked by `adjust`; "
                              "use `adjust transfer` or `adjust manual-close` instead")
        contract = _contract(conn, ctx.ledger, row.contract)
        later = ctx.ledger.postings_after(row.contract, entry_id, conn)
        if later:
            raise AdjustError(f"{row.contract} has entries after entry {entry_id}: reversing it would break the "
                              "mark chain; book a transfer instead")
        before = json.loads(row.marks_before or "{}")
        holdings = load_holdings(conn, ctx.books, contract)
        for holder in set(holdings) | {from_column(h) for h in before}:
            units = holdings.get(holder, Holding()).position - sum(
                (q.units for q in original.postings if q.commodity == row.contract
                 and holder_of(ctx.chart, q.account) == holder), ZERO)
            mark = before.get(to_column(holder))
            after[holder] = Holding(units, Decimal(mark) if mark is not None and units != 0 else None)
    txn = reversal_of(entry_id, original, time, reason, key)  # exactly what Ledger.reverse books
    follow, raises = None, ()
    if row is not None and row.kind in ATTRIBUTION_KINDS and row.to_holder:
        # The fill's position goes back to its own holders: so does the commission booked to the
        # strategy since the attribution (a late or changed one), in this same transaction; and
        # the question the attribution answered is open again, so the trader is told anew.
        follow = plan_follow(conn, ctx.books, row.subject, entry_id, time, reason)
        raises = (attribution_reversed(ctx.chart.broker_account, row.subject, row.contract, from_scaled(row.quantity),
                                       from_scaled(row.price), _who(from_column(row.to_holder), user_names(ctx)),
                                       entry_id, reason),)
    if row is not None and contract is not None:
        raises += _positions_back(conn, ctx, row, after, entry_id, reason)
    return Adjustment("reverse", str(entry_id), txn, reason, contract, after=after, reverses=entry_id,
                      follow=follow, raises=raises)


def _positions_back(conn: Connection, ctx: Context, row, after: dict, entry_id: int, reason: str) -> tuple:
    """The `unattributed_position` exceptions the reversed adjustment resolved, raised anew when
    the reversal leaves Unattributed holding the contract again (adopt.position_back): no later
    reconciliation would raise them, since the ledger and the broker agree."""
    units = after.get(None, Holding()).position
    if not units:
        return ()
    key = dedupe_key(ExceptionKind.UNATTRIBUTED_POSITION, ctx.chart.broker_account, row.contract)
    if key not in json.loads(row.resolved or "[]"):
        return ()
    what = f"the {row.kind} of entry {entry_id} into {_who(from_column(row.to_holder), user_names(ctx))}"
    return (position_back(conn, key, row.contract, units, what, reason),)


# -- booking -------------------------------------------------------------------------------------

def book(ctx: Context, planner, who: str, expect: str | None = None) -> Booked:
    """Plan inside one write transaction and book; `expect` is the dry run's entry fingerprint.

    Under the environment's trading lease (engine/trading/lease.py), as a cycle plans and sends: a
    cycle plans from the positions it reads and then sends that plan, so a position moved by hand
    in between would leave a strategy beyond its run's target. While a trader holds the lease this
    waits `[trading] lease_wait_seconds`, then refuses naming the holder."""
    from tradeledger.engine.trading.cycle import trading_settings

    with trading_lease.hold(ctx, "adjust", wait=trading_settings(ctx)["lease_wait_seconds"]):
        return _book(ctx, planner, who, expect)


def _book(ctx: Context, planner, who: str, expect: str | None) -> Booked:
    with ctx.engine.begin() as conn:
        adj: Adjustment = planner(conn)
        if expect is not None and adj.fingerprint() != expect:
            raise AdjustError("the ledger changed since the dry run: run the command again")
        if adj.contract is not None:
            ensure_contract(conn, ctx.ledger, adj.contract, adj.txn.date)
        for holder in {adj.from_holder, adj.to_holder}:
            if adj.kind in POSITION_KINDS:
                ensure_holder(conn, ctx.books, holder)
        if adj.kind == "cash":
            ctx.ledger.ensure_commodity(Commodity(adj.subject, "currency", None, Decimal(1), dt.date(2000, 1, 1)), conn)
        try:
            if adj.reverses is not None:
                booked = ctx.ledger.reverse(adj.reverses, adj.txn.time, adj.reason, adj.txn.key, conn)
            else:
                booked = ctx.ledger.book(adj.txn, conn)
        except IdempotencyConflict:  # the same key, booked meanwhile with another content
            if adj.ref is None:
                raise
            booked = StoreBooked(ctx.ledger.find_by_key(adj.txn.key, conn), False)
        if not booked.created:  # the unique key index decided: another run booked this key first
            if adj.ref is not None:  # cash by the broker's reference: the same movement is a replay
                cash_moves.replay_or_refuse(conn, ctx.ledger, ctx.chart, booked.id, adj.txn, adj.ref)
            raise AdjustError(f"already booked as entry {booked.id}")
        if adj.follow is not None:
            book_follow(conn, ctx.books, adj.follow)
        if adj.contract is not None and adj.after:
            _restore_marks(conn, adj.contract, adj.after, adj.txn.time)
        resolved = _resolve(conn, adj, who)
        if adj.kind != "cash":  # a position moved by hand (or an entry reversed) may end a half roll
            resolve_rolled(conn, ctx.books, ctx.config, adj.txn.time)
        for occurrence in adj.raises:  # the entry's time, as its resolutions
            raise_occurrence(conn, occurrence, now=adj.txn.time)
        adjustment_id = conn.execute(adjustment.insert().values(
            kind=adj.kind, subject=adj.subject, contract=adj.contract.code if adj.contract else None,
            from_holder=None if adj.kind not in POSITION_KINDS else to_column(adj.from_holder),
            to_holder=None if adj.kind not in POSITION_KINDS else to_column(adj.to_holder),
            quantity=None if adj.quantity is None else to_scaled(adj.quantity, "quantity"),
            price=None if adj.price is None else to_scaled(adj.price, "price"), reason=adj.reason, who=who,
            created_at=fmt_ts(adj.txn.time), txn_id=booked.id, marks_before=json.dumps(adj.marks_before),
            resolved=json.dumps(list(resolved)),
        )).inserted_primary_key[0]
        return Booked(adjustment_id, booked.id, resolved, tuple(o.dedupe_key for o in adj.raises))


def _restore_marks(conn: Connection, contract: Contract, after: dict, time: dt.datetime) -> None:
    save_marks(conn, contract, after, time)
    t = tables.position_mark
    for holder, holding in after.items():  # a position moved away entirely keeps no mark
        if holding.position == 0:
            conn.execute(t.delete().where(t.c.holder == to_column(holder), t.c.contract == contract.code))


def _resolve(conn: Connection, adj: Adjustment, who: str) -> tuple[str, ...]:
    """Resolve the open exceptions this entry answers (when the exceptions module is there)."""
    if not adj.resolves:
        return ()
    try:
        from tradeledger.engine.trust.exceptions import resolve_by_key
    except ImportError:  # pragma: no cover - exceptions arrive with reconciliation
        return ()
    why = f"{adj.kind} entry: {adj.reason}"
    return tuple(k for k in adj.resolves if resolve_by_key(conn, k, who, why, now=adj.txn.time))  # the entry's time


def list_adjustments(conn: Connection, names: dict | None = None, ledger=None, account: str | None = None) -> list[dict]:
    """Every adjustment; `names` ({holder component: user name}, `user_names`) names the strategies
    they moved positions between as the user does; with the `ledger` and its broker `account`, the
    broker's reference a cash movement was booked under (`ref`, None without; a reversal's is the
    reversed entry's)."""
    rows = conn.execute(sa.select(adjustment).order_by(adjustment.c.id)).all()
    refs = {} if ledger is None else cash_moves.refs_of_entries(
        conn, ledger, account, [r.txn_id for r in rows if r.kind in ("cash", "reverse") and r.txn_id is not None])

    def who(column):
        return None if column is None else _who(from_column(column), names)
    return [{"id": r.id, "kind": r.kind, "subject": r.subject, "contract": r.contract,
             "from": who(r.from_holder) if r.kind in POSITION_KINDS else None,
             "to": who(r.to_holder) if r.kind in POSITION_KINDS else None,
             "quantity": None if r.quantity is None else from_scaled(r.quantity),
             "price": None if r.price is None else from_scaled(r.price), "reason": r.reason, "who": r.who,
             "at": r.created_at, "entry": r.txn_id, "ref": refs.get(r.txn_id),
             "resolved": json.loads(r.resolved or "[]")} for r in rows]
