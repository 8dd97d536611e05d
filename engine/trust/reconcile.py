"""Reconciliation: the broker's snapshot against the ledger, every difference an exception.

The comparison (`compare`) is a pure function over two immutable views:

* `LedgerView`, read from postings *as of the snapshot's time* (so a snapshot older than a fill
  already booked cannot raise a false break): per contract the sum over every strategy account
  plus Unattributed; cash per currency; the fills booked, with their keys and times; the
  commissions still pending;
* the broker's `AccountSnapshot` and the executions it reports right after it.

It finds, per (broker account, contract), the ledger's quantity against the broker's
(`kind` "position"); cash per currency, ledger against broker cash plus the broker's unsettled
futures P&L (the ledger books variation margin at fills and settlements, the broker moves it into
cash only at its daily settlement), within `[reconcile] cash_tolerance` (a difference explained by
commissions the broker has charged but not yet reported is "pending", not a break); executions the
broker reports that the ledger could not book ("unbooked_execution"); and fills the ledger booked
that the broker does not know ("unknown_fill"), looked for only inside the broker's execution
window (from the oldest execution it reported), because brokers report recent executions only.

`reconcile` is the edge around it, in this order: snapshot (a failed one is recorded, raises
`broker_disconnected`, and compares nothing: a broker that cannot be read is never "flat"); book
every execution the broker reports (`fills.sync_fills`, 200 per transaction); the account's
opening, if it has none yet (`opening.py`); adopt every surplus the broker holds beyond the
ledger into Unattributed (`adopt.py`: a surplus is reviewed, a shortfall is a break); compare;
then, in one transaction, store the result, raise one `reconciliation_break` exception per cause
and lock the contract's instrument, and resolve (unlocking) every earlier break of this account
that is no longer there. A cash break is never booked: its line carries the `adjust cash`
command that would book it (`CashLine.proposal`), for a person to run.

`diff` is always ledger minus broker.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.broker.base import AccountSnapshot, Broker, Execution
from tradeledger.engine import tables
from tradeledger.engine.context import Books, Context
from tradeledger.engine.trust import cash_moves, cutoff
from tradeledger.engine.trust.adopt import adopt_surplus, resolve_cleared_unattributed, surplus, surpluses
from tradeledger.engine.trust.opening import book_opening, get_opening, moved_cash
from tradeledger.engine.trust.exceptions import (
    ExceptionKind, dedupe_key, key_prefix, list_exceptions, lock, raise_exception, resolve,
)
from tradeledger.engine.trading.fills import SyncReport, latest_versions, sync_fills
from tradeledger.engine.accounting.holders import holder_of
from tradeledger.engine.accounting.holdings import marks as holder_marks
from tradeledger.engine.trust.snapshots import SnapshotResult, disconnect_key, record_failed, session_now, take_snapshot
from tradeledger.engine.tables import reconciliation
from tradeledger.ledger import dbclock
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled, jsonable, money_text, to_decimal
from tradeledger.ledger.store import fmt_ts
from tradeledger.engine.setup.environment import ConfigError

if TYPE_CHECKING:
    from tradeledger.engine.setup.session import Session

UTC = dt.timezone.utc
ZERO = Decimal(0)
DEFAULT_CASH_TOLERANCE = Decimal("0.01")
BREAK_KINDS = ("position", "unknown_fill", "unbooked_execution", "broker_unreachable")


# -- records ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BookedFill:
    exec_key: str
    contract: str
    qty: Decimal  # signed
    time: dt.datetime


@dataclass(frozen=True)
class LedgerView:
    """What the ledger says, as of one moment."""

    account: str
    as_of: dt.datetime
    positions: dict  # contract -> units (strategies + unattributed), non-zero only
    unattributed: dict  # contract -> units held by Unattributed, non-zero only
    ever_held: frozenset  # contracts any holdings account has ever had a posting in
    cash: dict  # currency -> balance of the broker cash account
    pending_commissions: dict  # currency -> number of fills whose commission is pending
    fills: tuple  # BookedFill: the fills booked inside the broker's execution window (latest version)
    # futures contract -> (currency, multiplier, sum over holders of position x the holder's mark)
    marked: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Break:
    account: str
    contract: str | None
    ledger_qty: Decimal | None
    broker_qty: Decimal | None
    diff: Decimal | None
    kind: str
    detail: str = ""

    @property
    def dedupe_key(self) -> str:
        subject = self.contract if self.kind == "position" else f"{self.kind}:{self.detail}"
        return dedupe_key(ExceptionKind.RECONCILIATION_BREAK, self.account, subject)

    def as_json(self) -> dict:
        return {"account": self.account, "contract": self.contract, "ledger_qty": self.ledger_qty,
                "broker_qty": self.broker_qty, "diff": self.diff, "kind": self.kind}


@dataclass(frozen=True)
class CashLine:
    account: str
    currency: str
    ledger: Decimal
    broker: Decimal
    unsettled: Decimal
    diff: Decimal  # ledger - (broker + unsettled + marks)
    tolerance: Decimal
    status: str  # ok | pending | break
    marks: Decimal = ZERO  # what the ledger's marks add over the broker's (see mark_difference)
    behind: tuple[str, ...] = ()  # contracts in this currency with a position break: theirs come first
    moves: tuple[Move, ...] = ()  # the broker's deposits/withdrawals with their ids that no entry stands for

    @property
    def explained(self) -> str:
        """Why a break is not proposed as cash moved without a trade ("" when it is)."""
        if not self.behind:
            return ""
        return (f"the position breaks in {', '.join(self.behind)} come first: their variation margin is part of "
                f"this difference; resolve them and reconcile again")

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(ExceptionKind.RECONCILIATION_BREAK, self.account, "cash", self.currency)

    @property
    def proposals(self) -> tuple[str, ...]:
        """The `adjust cash` commands that book this break's cash: one per movement with `--ref ID`
        when the broker named each (the simulator's `sim deposit --ref`) and they add up to the
        difference, so each is booked once by its id; else the one `proposal`."""
        if self.status != "break" or self.behind:
            return ()
        if self.moves and sum((m.amount for m in self.moves), ZERO) == -self.diff:
            return tuple(m.command(self.currency) for m in self.moves)
        return (self._one(),)

    @property
    def by_ref(self) -> bool:
        return len(self.proposals) > 0 and self.proposals[0] != self._one()

    @property
    def proposal(self) -> str | None:
        """`proposals` as one line (None unless it is a break)."""
        return "; ".join(self.proposals) or None

    def _one(self) -> str:
        """The `adjust cash` command that books this break's cash (None unless it is a break):
        cash moved at the broker without a trade (a deposit, a withdrawal, a transfer between
        accounts) is proposed with the amount filled in, never booked silently. Not while a
        position in its currency breaks: a future the broker dropped (an expiry awaiting its final
        settlement price) took its variation margin into the broker's cash, and booking that as a
        deposit would count it twice once the position is resolved."""
        amount = -self.diff
        kind = "deposit" if amount > 0 else "withdrawal"
        return (f"adjust cash {self.currency} {_number(amount)} --kind {kind} --reason "
                f"\"{kind} found by reconciliation at the broker\"")

    def as_json(self) -> dict:
        return {"account": self.account, "currency": self.currency, "ledger": self.ledger,
                "broker": self.broker, "unsettled": self.unsettled, "marks": self.marks,
                "expected": self.broker + self.unsettled + self.marks,
                "diff": self.diff, "tolerance": self.tolerance, "status": self.status, "proposal": self.proposal,
                "proposals": list(self.proposals), "behind": list(self.behind)}


@dataclass(frozen=True)
class Move:
    """A deposit or withdrawal the broker made after the opening, with its id, that the ledger lacks."""

    amount: Decimal  # signed as it moved the broker's cash
    day: dt.date
    ref: str

    def command(self, currency: str) -> str:
        kind = "deposit" if self.amount > 0 else "withdrawal"
        return (f"adjust cash {currency} {_number(self.amount)} --kind {kind} --date {self.day.isoformat()} "
                f"--ref {self.ref} --reason \"{kind} found by reconciliation at the broker (ref {self.ref})\"")


def unbooked_moves(events, cut, standing: Callable[[str], bool]) -> dict[str, tuple[Move, ...]]:
    """Per currency, the broker's deposits, withdrawals and transfers with an id, after the opening's
    cut-off (its cash holds the others), that no entry stands for (`standing(ref)`) (pure but for it)."""
    out: dict[str, list[Move]] = {}
    for e in events:
        if e.kind in ("deposit", "withdrawal", "transfer") and e.ref and not cutoff.holds_event(cut, e) \
                and cash_moves.REF.fullmatch(e.ref) and not standing(e.ref):
            out.setdefault(e.currency, []).append(Move(e.amount, e.time.date(), e.ref))
    return {ccy: tuple(moves) for ccy, moves in out.items()}


def _number(x: Decimal) -> str:
    """A decimal as a user types it: no exponent, no trailing zeros."""
    text = format(x, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Comparison:
    breaks: tuple[Break, ...]
    cash: tuple[CashLine, ...]

    @property
    def clean(self) -> bool:
        return not self.breaks and all(c.status != "break" for c in self.cash)


@dataclass
class ReconcileResult:
    clean: bool
    breaks: list[Break]
    cash: list[CashLine]
    unattributed: list[dict]
    snapshot: SnapshotResult | None = None
    reconciliation_id: int | None = None
    sync: SyncReport | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"clean": self.clean, "breaks": [b.as_json() for b in self.breaks],
                "cash": [c.as_json() for c in self.cash], "unattributed": self.unattributed}


# -- the pure comparison ------------------------------------------------------------------------

def compare(view: LedgerView, snap: AccountSnapshot, broker_executions: list[Execution],
            tolerance: Decimal = DEFAULT_CASH_TOLERANCE) -> Comparison:
    """Every difference between the ledger (as of the snapshot) and the broker (pure)."""
    account = snap.account
    broker_qty = {p.contract.code: p.quantity for p in snap.positions if p.quantity != 0}
    breaks = []
    for code in sorted(set(broker_qty) | set(view.positions)):
        ledger_q, broker_q = view.positions.get(code, ZERO), broker_qty.get(code, ZERO)
        if ledger_q != broker_q:
            breaks.append(Break(account, code, ledger_q, broker_q, ledger_q - broker_q, "position",
                                f"ledger {ledger_q}, broker {broker_q} at {fmt_ts(snap.taken_at)}"))
    breaks += execution_breaks(account, view.fills, broker_executions)
    currency = {code: marked[0] for code, marked in view.marked.items()}
    currency |= {p.contract.code: p.contract.currency for p in snap.positions}
    behind: dict[str, list[str]] = {}
    for b in breaks:
        if b.kind == "position" and currency.get(b.contract):
            behind.setdefault(currency[b.contract], []).append(b.contract)
    cash = tuple(replace(line, behind=tuple(behind.get(line.currency, ()))) if line.status == "break" else line
                 for line in cash_lines(view, snap, tolerance))
    return Comparison(tuple(breaks), cash)


def execution_breaks(account: str, fills, broker_executions: list[Execution]) -> list[Break]:
    """Executions the ledger has not booked, and booked fills the broker does not know (pure)."""
    latest = latest_versions(broker_executions)
    booked = {f.exec_key: f for f in fills}
    out = []
    for e in latest:
        if e.base_exec_id not in booked:
            out.append(Break(account, e.contract.code, ZERO, e.signed_quantity, -e.signed_quantity,
                             "unbooked_execution", e.base_exec_id))
    if latest:  # the broker's window starts at the oldest execution it reported
        window = min(e.time for e in latest)
        known = {e.base_exec_id for e in latest}
        for f in fills:
            if f.time >= window and f.exec_key not in known:
                out.append(Break(account, f.contract, f.qty, ZERO, f.qty, "unknown_fill", f.exec_key))
    return out


def mark_difference(view: LedgerView, snap: AccountSnapshot) -> dict[str, Decimal]:
    """Per currency, the variation margin the ledger has booked beyond the broker's unsettled P&L
    because its holders are marked at other prices than the broker's position (pure).

    The broker marks one position per contract; the ledger marks each holder's, and an internal
    cross marks both strategies at the run's reference price with no broker trade at all. Over
    any sequence of trades the ledger's cash minus the broker's (cash + unsettled P&L) is exactly
    sum over holders of position x (holder's mark - broker's mark) x multiplier. Where the holders'
    positions add up to nothing (the broker is flat: it reports no position, so no mark) the
    broker's mark multiplies nothing and the sum is theirs alone: trend +1 marked 90,000 and
    Unattributed -1 sold at 90,001 is 0.10 (MBT) the broker realized and the ledger holds in marks.
    Any other contract whose broker mark is unknown adds nothing (and its difference shows)."""
    broker = {p.contract.code: p for p in snap.positions}
    result: dict[str, Decimal] = {}
    for code, (currency, multiplier, marked) in view.marked.items():
        position, net = broker.get(code), view.positions.get(code, ZERO)
        if net == 0:
            amount = marked * multiplier
        elif position is None or position.mark is None:
            continue
        else:
            amount = (marked - net * position.mark) * multiplier
        result[currency] = result.get(currency, ZERO) + amount
    return result


def cash_lines(view: LedgerView, snap: AccountSnapshot, tolerance: Decimal) -> tuple[CashLine, ...]:
    cash, unsettled = dict(snap.cash), dict(snap.unsettled_pnl)
    marks = mark_difference(view, snap)
    lines = []
    for ccy in sorted(set(cash) | set(unsettled) | set(view.cash)):
        ledger, broker, open_pnl = view.cash.get(ccy, ZERO), cash.get(ccy, ZERO), unsettled.get(ccy, ZERO)
        diff = ledger - (broker + open_pnl + marks.get(ccy, ZERO))
        if abs(diff) <= tolerance:
            status = "ok"
        elif diff > 0 and view.pending_commissions.get(ccy):
            status = "pending"  # the broker charged commissions it has not reported yet
        else:
            status = "break"
        lines.append(CashLine(snap.account, ccy, ledger, broker, open_pnl, diff, tolerance, status,
                              marks.get(ccy, ZERO)))
    return tuple(lines)


def cash_tolerance(raw_config: dict) -> Decimal:
    value = raw_config.get("reconcile", {}).get("cash_tolerance", str(DEFAULT_CASH_TOLERANCE))
    tolerance = to_decimal(str(value), "reconcile.cash_tolerance")
    if tolerance < 0:
        raise ConfigError("config: reconcile.cash_tolerance must not be negative")
    return tolerance


# -- reading the ledger -------------------------------------------------------------------------

def ledger_view(conn: Connection, books: Books, as_of: dt.datetime,
                fills_since: dt.datetime | None = None) -> LedgerView:
    """The ledger's side of a reconciliation, as of `as_of`, in a few aggregate queries.

    Fills are read one by one only from `fills_since` (the oldest execution the broker reports);
    without it, none are: there is nothing of the broker's to compare them with."""
    ledger, chart = books.ledger, books.chart
    currencies = ledger.commodity_names("currency", conn)
    positions: dict[str, Decimal] = {}
    unattributed: dict[str, Decimal] = {}
    cash: dict[str, Decimal] = {}
    held: dict[tuple, Decimal] = {}  # (holder, contract) -> units
    for (account, commodity), units in ledger.balances(as_of=as_of, prefix=chart.root, conn=conn).items():
        if account == chart.cash:
            cash[commodity] = units
            continue
        holder = holder_of(chart, account)
        if holder is False or commodity in currencies:
            continue
        held[(holder, commodity)] = units
        positions[commodity] = positions.get(commodity, ZERO) + units
        if holder is None:
            unattributed[commodity] = unattributed.get(commodity, ZERO) + units
    ever = ledger.commodities_ever_in(f"{chart.root}:Strategy:", (chart.unattributed,), conn)
    f = tables.fill
    mine = (f.c.account == chart.broker_account) & f.c.superseded_by.is_(None)
    pending = {ccy or "": int(n) for ccy, n in conn.execute(
        sa.select(f.c.commission_currency, sa.func.count()).where(
            mine, f.c.commission.is_(None), f.c.time <= fmt_ts(as_of)).group_by(f.c.commission_currency))}
    fills = []
    if fills_since is not None:  # only the broker's execution window is compared fill by fill
        for r in conn.execute(sa.select(f.c.exec_key, f.c.contract, f.c.side, f.c.quantity, f.c.time).where(
                mine, f.c.time >= fmt_ts(fills_since))):
            qty = from_scaled(r.quantity)
            fills.append(BookedFill(r.exec_key, r.contract, qty if r.side == "BUY" else -qty, _parse(r.time)))
    return LedgerView(chart.broker_account, as_of, {k: v for k, v in positions.items() if v != 0},
                      {k: v for k, v in unattributed.items() if v != 0}, frozenset(ever - currencies),
                      cash, pending, tuple(fills), _marked(conn, ledger, held))


def _marked(conn: Connection, ledger, held: dict) -> dict:
    """futures contract -> (currency, multiplier, sum of holder position x holder mark)."""
    futures = {c.name: (c.currency, c.multiplier) for c in ledger.commodities(conn) if c.kind == "future"}
    marks = holder_marks(conn)
    result: dict = {}
    for (holder, code), units in held.items():
        if code not in futures or units == 0 or (holder, code) not in marks:
            continue
        currency, multiplier = futures[code]
        total = result.get(code, (currency, multiplier, ZERO))[2] + units * marks[(holder, code)]
        result[code] = (currency, multiplier, total)
    return result


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)  # the ledger's fixed format, UTC


# -- the edge: snapshot, book, adopt, compare, record -------------------------------------------

def reconcile(ctx: Context, broker: Broker, now: dt.datetime | None = None, who: str = "reconcile",
              expire: Callable[[set[str]], list[str]] | None = None) -> ReconcileResult:
    """Snapshot the broker, book what it reports, adopt, compare, and record breaks and locks.

    `expire(codes the broker holds)` books the final settlement of expired contracts the broker
    no longer shows (engine/futures/expiry.py) before the ledger is compared; it returns notes.

    A break locks its instrument (the contract itself when tradeledger does not trade it);
    adoptions of contracts the config does not name are only informational; cash is compared
    within the config's `[reconcile] cash_tolerance`.
    """
    engine, chart = ctx.engine, ctx.chart
    lock_key, configured, tolerance = _lock_key(ctx), _configured(ctx), cash_tolerance(ctx.settings.raw)
    now = now or ctx.now()
    account = chart.broker_account
    snap_result = take_snapshot(ctx, broker, now)
    if not snap_result.ok:
        return _unreachable(engine, account, snap_result, None, f"snapshot failed: {snap_result.error}", now)
    snap = snap_result.snapshot
    try:
        executions = broker.executions()
    except Exception as exc:  # the ledger may miss executions: compare nothing rather than lie
        with engine.begin() as conn:
            record_failed(conn, account, now, f"executions: {type(exc).__name__}: {exc}")
        return _unreachable(engine, account, snap_result, None, f"executions failed: {exc}", now)
    sync = sync_fills(ctx, _Fetched(executions), now)  # book what it reported, once
    expiry_notes = expire({p.contract.code for p in snap.positions if p.quantity}) if expire else []
    window = min((e.time for e in executions), default=None)
    adopted, failed, notes = [], set(), list(expiry_notes)
    with read_connection(engine) as conn:
        opened = get_opening(conn, account)
    if opened is None:  # the first time tradeledger reads this broker: the ledger opens where it is
        try:
            opened = book_opening(ctx, snap_result.id, snap, "reconcile", now, moved_cash(broker))
            adopted += [p["contract"] for p in opened.held.get("positions", []) if p["booked"] != "0"]
            failed |= {s["contract"] for s in opened.held.get("skipped", [])}
            notes.append(f"opening: {opened.summary()}")
        except sa.exc.DBAPIError:
            raise  # the database failed, not the opening: the caller (the daemon) retries
        except Exception as exc:  # never stops the comparison: what is not booked shows as breaks
            notes.append(f"could not book the opening: {type(exc).__name__}: {exc}")
    with read_connection(engine) as conn:
        view = ledger_view(conn, ctx.books, snap.taken_at, window)
    unbooked = {b.contract for b in execution_breaks(account, view.fills, executions) if b.kind == "unbooked_execution"}
    for position, _extra in surpluses(snap, view.positions, unbooked | failed):
        try:
            with engine.begin() as conn:
                entry = adopt_surplus(conn, ctx.books, position, snap_result.id, snap.taken_at,
                                      configured(position.contract.code), now)
            if entry is not None:
                adopted.append(position.contract.code)
        except sa.exc.DBAPIError:
            raise  # the database failed, not this contract
        except Exception as exc:  # one odd instrument never stops the others
            failed.add(position.contract.code)
            notes.append(f"could not adopt {position.contract.code}: {exc}")
            with engine.begin() as conn:
                raise_exception(conn, ExceptionKind.UNATTRIBUTED_POSITION, position.contract.code,
                                f"position {position.quantity} at the broker could not be adopted: {exc}",
                                severity="error",
                                dedupe_key=dedupe_key(ExceptionKind.UNATTRIBUTED_POSITION, account, position.contract.code),
                                now=now)
    if adopted:
        with read_connection(engine) as conn:
            view = ledger_view(conn, ctx.books, snap.taken_at, window)
    comparison = _with_moves(ctx, broker, compare(view, snap, executions, tolerance))
    unattributed = [{"account": account, "contract": code, "qty": qty, "adopted": code in adopted}
                    for code, qty in sorted(view.unattributed.items())]
    result = ReconcileResult(comparison.clean, list(comparison.breaks), list(comparison.cash), unattributed,
                             snap_result, sync=sync, notes=notes)
    with engine.begin() as conn:
        result.reconciliation_id = _record(conn, result, snap_result.id, now)
        _raise_and_lock(conn, account, comparison, lock_key, now, _expiring(ctx, now) if comparison.breaks else None)
        _resolve_cleared(conn, account, comparison, who, now)
        resolve_cleared_unattributed(conn, account, set(view.unattributed) | failed, who, now)
    return result


def _with_moves(ctx: Context, broker: Broker, comparison: Comparison) -> Comparison:
    """The cash breaks with the broker's deposits and withdrawals by id (`unbooked_moves`), when the
    broker reports them (the simulator), so that each is proposed with its `--ref`."""
    if all(c.status != "break" for c in comparison.cash) or getattr(broker, "cash_events", None) is None:
        return comparison
    events = moved_cash(broker)
    with read_connection(ctx.engine) as conn:
        cut = cutoff.opening_cut(conn, ctx.chart.broker_account)
        moves = unbooked_moves(events, cut, lambda ref: cash_moves.booked_by_ref(
            conn, ctx.ledger, ctx.chart, ref)[0] is not None)
    return replace(comparison, cash=tuple(replace(c, moves=moves.get(c.currency, ())) if c.status == "break" else c
                                          for c in comparison.cash))


class _Fetched:
    """The executions already fetched right after the snapshot, served to engine.fills as a broker."""

    def __init__(self, executions: list[Execution]):
        self._executions = executions

    def executions(self, since=None) -> list[Execution]:
        return list(self._executions)


def _unreachable(engine, account: str, snap_result: SnapshotResult, sync, why: str, now) -> ReconcileResult:
    """A broker that cannot be read: not clean, no position compared, earlier breaks left as they are."""
    brk = Break(account, None, None, None, None, "broker_unreachable", why)
    result = ReconcileResult(False, [brk], [], [], snap_result, sync=sync, notes=[why])
    with engine.begin() as conn:
        result.reconciliation_id = _record(conn, result, snap_result.id, now)
    return result


def _record(conn: Connection, result: ReconcileResult, snapshot_id: int | None, now: dt.datetime) -> int:
    """`run_at`: the environment's clock (`now`, the exchange's on sim), the time it is about;
    `written_at`: the database's clock, what any process on any host measures its age by."""
    return conn.execute(reconciliation.insert().values(
        snapshot_id=snapshot_id, run_at=fmt_ts(now), clean=1 if result.clean else 0, breaks=len(result.breaks),
        result=json.dumps(jsonable(result.as_json()), sort_keys=True),
        written_at=dbclock.now(conn.dialect.name))).inserted_primary_key[0]


def _raise_and_lock(conn: Connection, account: str, comparison: Comparison, lock_key, now,
                    expiring: dict | None = None) -> None:
    """`expiring`: contract -> last trading day of the futures held at or past it (`_expiring`)."""
    expiring = expiring or {}
    for b in comparison.breaks:
        if b.kind == "position":
            subject, detail = b.contract, (f"{b.contract}: ledger {b.ledger_qty}, broker {b.broker_qty} "
                                           f"(diff {b.diff}); {b.detail}; {_why_break(b, expiring.get(b.contract))}")
        elif b.kind == "unknown_fill":
            subject, detail = b.contract, f"fill {b.detail} ({b.contract} {b.diff}) is booked but the broker does not report it"
        else:
            subject, detail = b.contract, f"execution {b.detail} ({b.contract} {b.broker_qty}) is not booked"
        exception_id = raise_exception(conn, ExceptionKind.RECONCILIATION_BREAK, subject, detail, severity="error",
                                       dedupe_key=b.dedupe_key, now=now)
        lock(conn, lock_key(b.contract), f"reconciliation break (exception {exception_id}): {detail}",
             exception_id, now=now)
    for c in comparison.cash:
        if c.status == "break":
            raise_exception(conn, ExceptionKind.RECONCILIATION_BREAK, f"cash {c.currency}",
                            f"cash {c.currency}: ledger {_money(c.ledger, c)}, broker {_money(c.broker, c)} "
                            f"+ unsettled {_money(c.unsettled, c)} + marks {_money(c.marks, c)} (diff "
                            f"{_money(c.diff, c)}, tolerance {c.tolerance}); " + (
                                c.explained or (
                                    "cash moved without a trade? book it with "
                                    + "; ".join(f"`tradeledger {p}`" for p in c.proposals)
                                    + (" (keyed by the broker's id: booked once)" if c.by_ref else
                                       ", adding --ref ID when the broker names the movement (IB: its transactionID "
                                       "on the Flex statement), so that `import flex` finds it booked and books it "
                                       "once"))),
                            severity="warning",
                            dedupe_key=c.dedupe_key, now=now)


def _money(amount: Decimal, line: CashLine) -> str:
    return money_text(amount, line.currency)  # the exact figures are in the reconciliation's JSON


def _why_break(b: Break, last: dt.date | None = None) -> str:
    if last is not None and not b.broker_qty:  # gone at its last trading day: an expiry, not a close
        return (f"its last trading day is {last} and the broker no longer holds it: it has expired; import its final "
                f"settlement (`date,contract,settle`, the row `{last.isoformat()},{b.contract},PRICE`) and the next "
                f"reconciliation books the expiry")
    if surplus(b.broker_qty, b.ledger_qty):
        return "a surplus at the broker that could not be adopted (an execution not booked, or a contract the ledger cannot hold)"
    return (f"the broker holds less than the ledger's holders: say whose it was with `tradeledger adjust "
            f"manual-close {b.contract} --strategy NAME --price P` (or --exec ID)")


def _resolve_cleared(conn: Connection, account: str, comparison: Comparison, who: str, now) -> None:
    """Resolve (and so unlock) every break of this account that this reconciliation no longer finds."""
    current = {b.dedupe_key for b in comparison.breaks}
    current |= {c.dedupe_key for c in comparison.cash if c.status != "ok"}
    prefix = key_prefix(ExceptionKind.RECONCILIATION_BREAK, account)
    for e in list_exceptions(conn, "open"):
        if e["kind"] == ExceptionKind.RECONCILIATION_BREAK and e["dedupe_key"].startswith(prefix) \
                and e["dedupe_key"] not in current:
            resolve(conn, e["id"], who, f"reconciliation at {fmt_ts(now)} no longer finds it", now=now)


def last_reconciliation(conn: Connection) -> dict | None:
    t = reconciliation
    row = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return {"id": row.id, "run_at": row.run_at, "clean": bool(row.clean), "breaks": row.breaks,
            "snapshot": row.snapshot_id}


def _expiring(ctx: Context, now: dt.datetime) -> dict:
    """contract -> last trading day of every future held at or past its last trading day."""
    from tradeledger.engine.futures.expiry import expired_held  # futures reads the trust room's exceptions

    return dict(expired_held(ctx, now.date()))


def _lock_key(ctx: Context) -> Callable[[str], str]:
    """What a break in a contract locks: its configured instrument, else the contract (else the account)."""
    from tradeledger.engine.setup.config import instrument_of_contract

    def lock_key(code: str) -> str:
        instrument = instrument_of_contract(ctx.config, code) if code else None
        return instrument.name if instrument else (code or ctx.settings.account)
    return lock_key


def _configured(ctx: Context) -> Callable[[str], bool]:
    from tradeledger.engine.setup.config import instrument_of_contract

    return lambda code: instrument_of_contract(ctx.config, code) is not None


def reconcile_session(session: Session, who: str = "reconcile") -> ReconcileResult:
    """Reconcile a Session against its own broker: a broker that cannot be reached is recorded as
    a failed snapshot; corporate actions are checked and expired contracts settled first."""
    try:
        broker = session.broker
    except Exception as exc:  # cannot even connect: recorded as a failed snapshot
        now = session_now(session)
        with session.engine.begin() as conn:
            sid = record_failed(conn, session.settings.account, now, f"{type(exc).__name__}: {exc}")
        return _unreachable(session.engine, session.settings.account, SnapshotResult(sid, None, str(exc)), None,
                            f"broker unreachable: {exc}", now)
    from tradeledger.engine.trust.actions_check import check_corporate_actions

    now = session_now(session)
    action_notes = check_corporate_actions(session, broker, now.date(), now)

    def expire(at_broker: set[str]) -> list[str]:
        from tradeledger.engine.futures.expiry import settle_expired

        done = settle_expired(session, at_broker, now.date(), now)
        return [f"expired {code}: final settlement {price} booked" for code, price in done.booked] + \
            [f"expired {code}: no final settlement price (exception raised)" for code in done.missing_price]

    result = reconcile(session, broker, now, who, expire=expire)
    result.notes[:0] = action_notes
    return result


__all__ = ["compare", "execution_breaks", "cash_lines", "ledger_view", "reconcile", "reconcile_session",
           "LedgerView", "Break", "CashLine", "Comparison", "ReconcileResult", "BookedFill", "disconnect_key"]
