"""From an approved target run to broker orders: plan (pure), limits (pure), record, then send.

Each strategy's change is its target minus its ledger position now. Per contract the changes
are netted (`netting.net_changes`): opposite changes cross internally at the reference price
recorded with the run (a zero-sum transfer booked in the ledger, no broker, no commission), and
only the residual goes to the broker as one order whose fills are allocated back pro rata.

Limits apply before anything is sent (`limits.py`: per instrument, in its own units, refuse or
clip), and a refusal names the limit. Orders in flight count (`inflight.py`): a holder's change is
its target minus its ledger position minus what its working orders will still bring. Nothing is sent to an
account that has no opening (engine/trust/opening.py): `send_planned` takes it first, or refuses. Submission is restartable:
orders are recorded (state `planned`) in the same transaction as the crosses, before anything
is sent; each carries an orderRef naming it (`new_order_ref`: the order's id and a random part, so
that it names no other order even after a restore), so a restart asks the broker for that orderRef
before it sends again, and nothing goes out twice.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books, Context
from tradeledger.broker.base import BUY, SELL, Broker, BrokerDisconnected, ComboLeg, Contract, OrderRequest, contract_fields
from tradeledger.engine import tables
from tradeledger.errors import UserError
from tradeledger.engine.accounting.entries import cross_entry
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception
from tradeledger.engine.trust.opening import ensure_opening
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.accounting.holders import holder_of
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings, save_marks
from tradeledger.engine.futures.interrupted import resolve_rolled
from tradeledger.engine.futures.rolls import NO_ROLL, InstrumentRoll, route
from tradeledger.engine.trading import killpoint
from tradeledger.engine.trading.limits import judge, override_refusal
from tradeledger.engine.trading.netting import Cross, allocate_fill, net_changes
from tradeledger.engine.trading.unknown import UNKNOWN, hold_unknown, judge_unreported, recorded_at, what_to_do
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.store import Ledger, fmt_ts

ZERO = Decimal(0)


@dataclass(frozen=True)
class ContractPlan:
    contract: Contract
    instrument: str
    reference_price: Decimal
    changes: tuple[tuple[str, Decimal], ...]  # (holder, signed change)
    crosses: tuple[Cross, ...]
    side: str | None
    quantity: Decimal  # what goes to the broker (after a clipping limit)
    shares: tuple[tuple[str, Decimal], ...]
    refused: str = ""  # the limit, lock or override that stops this contract, if any
    clipped: str = ""  # the limit that clipped the order, if any
    in_flight: tuple[tuple[str, Decimal], ...] = ()  # (holder, signed remaining of working orders) counted

    @property
    def outcome(self) -> str:
        if self.refused:
            return "refused"
        if self.clipped:
            return "clipped"
        if self.side is not None and self.quantity:
            return "order"
        return "cross" if self.crosses else "unchanged"

    def describe(self) -> str:
        """What this contract's plan does, in words (kept with the run as its plan)."""
        flight = "; counting working orders " + ", ".join(f"{h} {q:+}" for h, q in self.in_flight) \
            if self.in_flight else ""
        crosses = "; ".join(f"{x.seller}->{x.buyer} {x.quantity}" for x in self.crosses)
        if self.refused:
            return f"refused: {self.refused}{flight}"
        parts = ([f"cross {crosses}"] if crosses else []) + (
            [f"{self.side} {self.quantity} at the broker"] if self.side and self.quantity else [])
        if self.clipped:
            parts.append(self.clipped)
        return ("; ".join(parts) or "no change: every holder is at its target") + flight


@dataclass(frozen=True)
class SpreadPlan:
    """A roll of one instrument as a calendar spread: sell `old`, buy `new` (for longs; `old_side`
    says which way the old leg trades), `quantity` spreads, allocated by `shares`."""

    instrument: str
    old: Contract
    new: Contract
    old_price: Decimal
    new_price: Decimal
    moves: tuple[tuple[str, Decimal], ...]  # (holder, units moved from old to new)
    old_crosses: tuple[Cross, ...]
    new_crosses: tuple[Cross, ...]
    quantity: Decimal
    old_side: str | None  # SELL: longs roll; BUY: shorts roll; None: everything crossed
    shares: tuple[tuple[str, Decimal], ...]
    refused: str = ""

    @property
    def code(self) -> str:
        return f"{self.old.code}/{self.new.code}"

    @property
    def outcome(self) -> str:
        return "refused" if self.refused else ("order" if self.old_side else "cross")

    def describe(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        moves = ", ".join(f"{h} {q:+}" for h, q in self.moves)
        return f"roll {self.old.code} -> {self.new.code} ({moves})" + (
            f": spread {self.quantity} at the broker" if self.old_side else ": all crossed")


@dataclass(frozen=True)
class OrderPlan:
    run_id: int
    contracts: tuple[ContractPlan, ...]
    spreads: tuple[SpreadPlan, ...] = ()

    @property
    def refusals(self) -> list[tuple[str, str]]:
        return [(c.contract.code, c.refused) for c in self.contracts if c.refused] + \
            [(s.code, s.refused) for s in self.spreads if s.refused]

    @property
    def clips(self) -> list[tuple[str, str]]:
        return [(c.contract.code, c.clipped) for c in self.contracts if c.clipped]


@dataclass(frozen=True)
class TargetLine:
    holder: str  # strategy account component
    instrument: str
    contract: Contract
    target: Decimal
    price: Decimal
    fx: Decimal = Decimal(1)
    price_date: dt.date | None = None  # the day of `price` (a run's sizing price), when known


def plan(run_id: int, lines: list[TargetLine], positions: dict, limits: Limits, traded_today: dict,
         locks: dict | None = None, instrument_of=None, rolls: dict | None = None,
         in_flight: dict | None = None) -> OrderPlan:
    """Net each contract's changes and apply the limits; positions: (holder, code) -> units (pure).

    With `instrument_of` (code -> instrument name) a holder's current position is its exposure to
    the line's instrument, summed over every contract of it, and the change (target - exposure) is
    routed to contracts by the instrument's roll state (`rolls`: instrument -> InstrumentRoll,
    engine/futures/rolls.py; none: everything trades the line's contract). Without it, a holder's
    position in the line's contract alone is its current position.
    Spread rolls (state force) are planned per instrument: see `plan_spreads`.
    `in_flight`: (holder, code) -> signed remaining quantity of working orders, already on its way:
    it counts as held, so a holder's change is its target minus ledger position minus in flight."""
    rolls = rolls or {}
    in_flight = in_flight or {}
    positions = dict(positions)
    for key, qty in in_flight.items():
        positions[key] = positions.get(key, ZERO) + qty
    changes: dict[str, dict[str, Decimal]] = {}
    info: dict[str, tuple] = {}  # code -> (contract, instrument, price, fx)
    instrument_current: dict[str, dict] = {}
    instrument_target: dict[str, dict] = {}
    roll_moves: dict[str, dict[str, Decimal]] = {}
    for line in lines:
        roll = rolls.get(line.instrument) or InstrumentRoll(line.instrument, NO_ROLL, "calendar", None, line.contract)
        if instrument_of is None:
            held = {line.contract.code: positions.get((line.holder, line.contract.code), ZERO)}
        else:
            held = {code: units for (h, code), units in positions.items()
                    if h == line.holder and units and instrument_of(code) == line.instrument}
        exposure = sum(held.values(), ZERO)
        instrument_current.setdefault(line.instrument, {})[line.holder] = exposure
        instrument_target.setdefault(line.instrument, {})[line.holder] = line.target
        routed = route(roll.state, line.target - exposure, held, roll.old.code if roll.old else None,
                       roll.new.code if instrument_of is not None else line.contract.code)
        known = {c.code: c for c in (roll.old, roll.new, line.contract) if c is not None}
        known.update(roll.contracts)
        for code, qty in routed.outright:
            info.setdefault(code, (known[code], line.instrument, roll.prices.get(code, line.price), line.fx))
            changes.setdefault(code, {})[line.holder] = changes.get(code, {}).get(line.holder, ZERO) + qty
        if routed.roll:
            roll_moves.setdefault(line.instrument, {})[line.holder] = routed.roll
        for code in (line.contract.code,):  # a line whose contract does not trade still shows
            info.setdefault(code, (line.contract, line.instrument, roll.prices.get(code, line.price), line.fx))
            changes.setdefault(code, {}).setdefault(line.holder, ZERO)
    plans = []
    for code in sorted(changes):
        contract, instrument, price, fx = info[code]
        holder_changes = changes[code]
        netting = net_changes({h: c for h, c in holder_changes.items() if c}, price)
        current, targets = instrument_current[instrument], instrument_target[instrument]
        flight = tuple(sorted((h, q) for (h, c), q in in_flight.items() if c == code and q))
        refused = override_refusal(limits.halted, limits.reduce_only, locks, instrument, code, holder_changes,
                                   current, targets)
        side, quantity, shares, clipped = netting.side, netting.quantity, netting.residual_shares, ""
        if not refused:
            is_future = contract.sec_type == "FUT"
            account = sum((q for (h, c), q in positions.items() if c == code), ZERO)  # ledger + in flight
            verdict = judge(limits.for_instrument(instrument, is_future), instrument, is_future, side, quantity,
                            account, price, contract.multiplier, fx, traded_today.get(code, ZERO))
            refused, clipped = verdict.refused, verdict.clipped
            if clipped:
                quantity = verdict.quantity
                shares = tuple(sorted(allocate_fill(dict(shares), quantity).items())) if quantity else ()
        plans.append(ContractPlan(contract, instrument, price, tuple(sorted(holder_changes.items())),
                                  netting.crosses, side, quantity, shares, refused, clipped, flight))
    spreads = tuple(plan_spread(rolls[name], moves, limits, locks) for name, moves in sorted(roll_moves.items()))
    return OrderPlan(run_id, tuple(plans), spreads)


def plan_spread(roll, moves: dict[str, Decimal], limits: Limits, locks: dict | None) -> SpreadPlan:
    """One calendar spread for the account: each holder's old-contract position moves to the new
    contract. Opposite moves cross internally on both legs at the reference prices; the residual
    is one spread order, allocated back by old-contract position (pure)."""
    old, new = roll.old, roll.new
    old_price, new_price = roll.prices[old.code], roll.prices[new.code]
    old_leg = net_changes({h: -q for h, q in moves.items() if q}, old_price)
    new_leg = net_changes({h: q for h, q in moves.items() if q}, new_price)
    refused = ""
    for key in (roll.instrument, old.code, new.code):
        if locks and key in locks:
            refused = f"{key} is locked: {locks[key]}"
            break
    if not refused and roll.instrument in limits.halted:
        refused = f"instrument {roll.instrument} is halted"
    if not refused and old_leg.quantity > limits.max_order_qty:
        refused = f"spread of {old_leg.quantity} exceeds max_order_qty {limits.max_order_qty}"
    return SpreadPlan(roll.instrument, old, new, old_price, new_price, tuple(sorted(moves.items())),
                      old_leg.crosses, new_leg.crosses, old_leg.quantity, old_leg.side, old_leg.residual_shares,
                      refused)


@dataclass
class SubmitReport:
    sent: list[str] = field(default_factory=list)
    already_at_broker: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    crosses: int = 0
    refusals: list[tuple[str, str]] = field(default_factory=list)
    clips: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # planned orders held as of unknown outcome, and why


def record_plan(ctx: Context, order_plan: OrderPlan, now: dt.datetime) -> int:
    """Book the crosses and record the orders (state planned) in one transaction; once per run."""
    engine = ctx.engine
    env_name = ctx.name
    o = tables.broker_order
    with engine.begin() as conn:
        if is_planned(conn, order_plan.run_id):
            return 0  # already planned: submission resumes with what was recorded
        created = 0
        for item in (*order_plan.spreads, *order_plan.contracts):  # each contract's decision, kept with the run
            code = item.code if isinstance(item, SpreadPlan) else item.contract.code
            conn.execute(tables.run_plan.insert().values(run_id=order_plan.run_id, contract=code,
                                                         outcome=item.outcome, detail=item.describe(),
                                                         planned_at=fmt_ts(now)))
        for sp in order_plan.spreads:
            if not sp.refused:
                created += _record_spread(conn, ctx.books, order_plan.run_id, sp, env_name, now)
        for cp in order_plan.contracts:
            if cp.refused:
                continue
            for cross in cp.crosses:
                _book_cross(conn, ctx.books, order_plan.run_id, cp, cross, now)
            if cp.side is None or not cp.quantity:
                continue
            order_id = conn.execute(o.insert().values(
                order_ref="", run_id=order_plan.run_id, contract=cp.contract.code, side=cp.side,
                quantity=to_scaled(cp.quantity, "order quantity"), order_type="MKT", state="planned",
                created_at=fmt_ts(now), contract_spec=json.dumps(_contract_json(cp.contract)),
            )).inserted_primary_key[0]
            conn.execute(o.update().where(o.c.id == order_id).values(order_ref=new_order_ref(env_name, order_id)))
            for holder, qty in cp.shares:
                conn.execute(tables.order_alloc.insert().values(order_id=order_id, holder=holder,
                                                                 quantity=to_scaled(qty, "allocation")))
            created += 1
        # the run's targets are now what its holders are meant to hold: a half roll its crosses (or a
        # target the half-rolled exposure already meets) complete ends here
        resolve_rolled(conn, ctx.books, ctx.config, now)
        return created


def new_order_ref(env_name: str, order_id: int) -> str:
    """The orderRef of a new order: `tl-<env>-<order id>-<6 random hex digits>`, recorded with the
    planned order before it is sent. The random part is why an orderRef names one order of ours for
    good: a database restored from a backup, or a new home on an account that traded today, hands
    out order ids again, while the broker still has the orders sent under them; an orderRef of the
    id alone was then found "already at the broker" and never sent."""
    return f"tl-{env_name}-{order_id}-{secrets.token_hex(3)}"


def is_planned(conn, run_id: int) -> bool:
    """Has this run's plan been recorded (its crosses booked, its orders recorded)? A run is planned once."""
    for table in (tables.run_plan, tables.broker_order, tables.internal_cross):
        if conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.run_id == run_id)).scalar():
            return True
    return False


def recorded_plan(conn, run_id: int) -> list[dict]:
    """What the run decided per contract when it was planned, and where each of its orders stands now."""
    o = tables.broker_order
    rows = {r.contract: {"contract": r.contract, "outcome": r.outcome, "detail": r.detail, "planned_at": r.planned_at,
                         "orders": []}
            for r in conn.execute(sa.select(tables.run_plan).where(tables.run_plan.c.run_id == run_id))}
    for r in conn.execute(sa.select(o).where(o.c.run_id == run_id).order_by(o.c.id)):
        line = rows.setdefault(r.contract, {"contract": r.contract, "outcome": "order", "detail": "", "planned_at":
                                            r.created_at, "orders": []})
        line["orders"].append({"order_ref": r.order_ref, "side": r.side, "quantity": from_scaled(r.quantity),
                               "filled": from_scaled(r.filled), "state": r.state, "why": r.reason or ""})
    return [rows[k] for k in sorted(rows)]


def why_nothing(line: dict) -> str:
    """Why a line of an already planned run sends nothing now (pure)."""
    when = line["planned_at"][:19]
    if line["outcome"] == "refused":
        return f"{line['detail']} (when the run was planned at {when}); a run is planned once: compute a new run " \
               f"to trade it under the limits now in force"
    if not line["orders"]:
        return f"planned at {when}: {line['detail']}; nothing was for the broker"
    states = ", ".join(f"{x['order_ref']} {x['side']} {x['quantity']} {x['state']} ({x['filled']} filled)"
                       for x in line["orders"])
    return f"already sent when the run was planned at {when}: {states}"


def _record_spread(conn: Connection, books: Books, run_id: int, sp: SpreadPlan, env_name: str, now) -> int:
    """A roll by spread: the crosses of both legs booked at their reference prices, then one BAG
    order (state planned) whose legs and allocation are recorded with it. Returns 1 if an order."""
    o, ev = tables.broker_order, tables.roll_event
    if conn.execute(sa.select(ev.c.old).where(ev.c.instrument == sp.instrument, ev.c.old == sp.old.code)).first() is None:
        conn.execute(ev.insert().values(instrument=sp.instrument, old=sp.old.code, new=sp.new.code,
                                        date=now.date().isoformat(), run_id=run_id))  # the roll date used
    for contract, price, crosses in ((sp.old, sp.old_price, sp.old_crosses), (sp.new, sp.new_price, sp.new_crosses)):
        leg = ContractPlan(contract, sp.instrument, price, (), crosses, None, ZERO, ())
        for cross in crosses:
            _book_cross(conn, books, run_id, leg, cross, now, tag="roll")
    if sp.old_side is None:
        return 0
    new_side = BUY if sp.old_side == SELL else SELL
    legs = [(sp.old, sp.old_side), (sp.new, new_side)]
    spec = {**_contract_json(Contract(sp.code, "BAG", sp.old.symbol, sp.old.exchange, sp.old.currency,
                                      sp.old.multiplier, "", sp.old.trading_class)),
            "legs": [{"contract": _contract_json(c), "side": side, "ratio": 1} for c, side in legs]}
    order_id = conn.execute(o.insert().values(
        order_ref="", run_id=run_id, contract=sp.code, side=BUY, quantity=to_scaled(sp.quantity, "spread quantity"),
        order_type="MKT", state="planned", created_at=fmt_ts(now), contract_spec=json.dumps(spec),
    )).inserted_primary_key[0]
    conn.execute(o.update().where(o.c.id == order_id).values(order_ref=new_order_ref(env_name, order_id)))
    for contract, side in legs:
        conn.execute(tables.order_leg.insert().values(order_id=order_id, contract=contract.code, side=side, ratio=1,
                                                      contract_spec=json.dumps(_contract_json(contract))))
    for holder, qty in sp.shares:
        conn.execute(tables.order_alloc.insert().values(order_id=order_id, holder=holder,
                                                         quantity=to_scaled(qty, "allocation")))
    return 1


def _book_cross(conn: Connection, books: Books, run_id: int, cp: ContractPlan, cross: Cross, now,
                tag: str = "") -> None:
    ledger, chart = books.ledger, books.chart
    contract = cp.contract
    ensure_contract(conn, ledger, contract, now.date())
    for holder in (cross.seller, cross.buyer):
        ensure_holder(conn, books, holder)
    holdings = load_holdings(conn, books, contract)
    txn, after = cross_entry(chart, contract, holdings, run_id, cross.seller, cross.buyer, cross.quantity,
                             cp.reference_price, now, tag)
    booked = ledger.book(txn, conn)
    save_marks(conn, contract, after, now, before=holdings)
    conn.execute(tables.internal_cross.insert().values(
        run_id=run_id, contract=contract.code, seller=cross.seller, buyer=cross.buyer,
        quantity=to_scaled(cross.quantity, "cross"), price=to_scaled(cp.reference_price, "price"), txn_id=booked.id))


def record_refusals(ctx: Context, order_plan: OrderPlan, now: dt.datetime) -> None:
    """A limit or a lock that stopped a contract becomes a limit_hit exception (one per day)."""
    engine = ctx.engine
    if not order_plan.refusals:
        return
    with engine.begin() as conn:
        for code, why in order_plan.refusals:
            raise_exception(conn, ExceptionKind.LIMIT_HIT, code, f"run {order_plan.run_id}: {code} not traded: {why}",
                            dedupe_key=dedupe_key(ExceptionKind.LIMIT_HIT, code, now.date().isoformat()), now=now)


def send_planned(ctx: Context, broker: Broker, run_id: int | None, now: dt.datetime, guard=None) -> SubmitReport:
    """Send every planned order (of a run, or all), asking the broker first whether it has it.

    `guard()` is called before each send (the trading lease's check: a process that lost its lease
    stops before sending anything more)."""
    engine = ctx.engine
    report = SubmitReport()
    o = tables.broker_order
    with read_connection(engine) as conn:
        query = sa.select(o).where(o.c.state == "planned")
        if run_id is not None:
            query = query.where(o.c.run_id == run_id)
        planned = conn.execute(query.order_by(o.c.id)).all()
    if not planned:
        return report
    ensure_opening(ctx, broker, "submit", now)  # the gate: nothing is sent to an account never opened
    at_broker = {s.order_ref: s for s in broker.orders()}
    memory = broker.memory_since(now)
    for row in planned:
        status = at_broker.get(row.order_ref)
        found = status is not None
        if found:  # sent before a crash or a lost reply: record it, never send it again
            report.already_at_broker.append(row.order_ref)
        elif judge_unreported(row.state, from_scaled(row.filled), recorded_at(row), memory) == UNKNOWN:
            # planned before the broker's memory begins: it may have been sent and filled, and forgotten
            report.unknown.append(hold_unknown(ctx, row, memory, now))
            continue
        else:
            spec = _contract_from_json(row.contract_spec)
            legs = tuple(ComboLeg(Contract(**_contract_from_json(json.dumps(leg["contract"]))), leg["side"],
                                  int(leg["ratio"])) for leg in spec.pop("legs", ()))
            request = OrderRequest(row.order_ref, Contract(**spec), row.side, from_scaled(row.quantity), legs=legs)
            if guard is not None:
                guard()
            try:
                status = broker.place_order(request)
            except BrokerDisconnected:
                raise  # the order stays planned; the next submit asks the broker first
            killpoint.reach("placed")
        state = "rejected" if status.status in ("Rejected", "Inactive") else "sent"
        with engine.begin() as conn:
            conn.execute(o.update().where(o.c.id == row.id, o.c.state == "planned").values(
                state=state, broker_order_id=status.broker_order_id, perm_id=status.perm_id,
                sent_at=fmt_ts(now), reason=status.reason or None))
            if state == "rejected":
                raise_exception(conn, ExceptionKind.ORDER_REJECTED, row.order_ref,
                                f"{row.side} {from_scaled(row.quantity)} {row.contract} rejected by the broker: "
                                f"{status.reason or status.status}", "error", now=now)
        killpoint.reach("marked")
        if state == "rejected":
            report.rejected.append((row.order_ref, status.reason))
        elif not found:
            report.sent.append(row.order_ref)
    return report


def _contract_json(c: Contract) -> dict:
    return contract_fields(c)


def _contract_from_json(text: str) -> dict:
    data = json.loads(text)
    data["multiplier"] = Decimal(data["multiplier"])
    return data


def holder_positions(ledger: Ledger, chart: Chart, conn=None) -> dict:
    """(holder, contract code) -> units, from the ledger."""
    result = {}
    for (account, code), units in ledger.positions(prefix=chart.root, conn=conn).items():
        holder = holder_of(chart, account)
        if holder is not False:
            result[(holder, code)] = units
    return result


def traded_today(conn, day: dt.date) -> dict[str, Decimal]:
    o = tables.broker_order
    # A cancelled order counts what it filled; every other order (but a rejected one) its quantity.
    counted = sa.case((o.c.state == "cancelled", o.c.filled), else_=o.c.quantity)
    rows = conn.execute(sa.select(o.c.contract, sa.func.sum(counted)).where(
        o.c.created_at >= day.isoformat(), o.c.state != "rejected").group_by(o.c.contract))
    return {code: from_scaled(q) for code, q in rows}


def list_orders(conn) -> list[dict]:
    o = tables.broker_order
    rows = conn.execute(sa.select(o).order_by(o.c.id)).all()
    allocs: dict[int, dict] = {}
    for r in conn.execute(sa.select(tables.order_alloc)):
        allocs.setdefault(r.order_id, {})[r.holder] = from_scaled(r.quantity)
    return [{"id": r.id, "order_ref": r.order_ref, "run": r.run_id, "contract": r.contract, "side": r.side,
             "quantity": from_scaled(r.quantity), "filled": from_scaled(r.filled), "state": r.state,
             "allocation": allocs.get(r.id, {}), "created_at": r.created_at, "sent_at": r.sent_at,
             "why": r.reason or ""} for r in rows]


def add_filled(conn, order_id: int, quantity: Decimal, only_from: tuple[str, ...] | None = None) -> None:
    """Add `quantity` (a correction: a signed difference) to an order's filled quantity; the order
    becomes filled or partial (only from the states `only_from`, when given)."""
    o = tables.broker_order
    order = conn.execute(sa.select(o).where(o.c.id == order_id)).first()
    filled = from_scaled(order.filled) + quantity
    state = order.state
    if only_from is None or state in only_from:
        state = "filled" if filled >= from_scaled(order.quantity) else "partial"
    conn.execute(o.update().where(o.c.id == order_id).values(filled=to_scaled(filled, "filled"), state=state))


def cancel(ctx: Context, broker: Broker, order_id: int, now: dt.datetime) -> tuple[str, bool]:
    """Cancel an order that is not done; what already filled stays booked. (order_ref, confirmed):
    the order is recorded cancelled only once the broker says it is done and its fills are booked."""
    engine = ctx.engine
    from tradeledger.engine.trading.fills import sync_fills

    o = tables.broker_order
    with read_connection(engine) as conn:
        row = conn.execute(sa.select(o).where(o.c.id == order_id)).first()
    if row is None:
        raise UserError(f"no order {order_id}")
    if row.state in ("filled", "cancelled", "rejected"):
        raise UserError(f"order {order_id} is {row.state}; nothing to cancel")
    at_broker = {s.order_ref: s for s in broker.orders()}.get(row.order_ref)
    memory = broker.memory_since(now)
    if at_broker is None and (row.state == UNKNOWN or judge_unreported(
            row.state, from_scaled(row.filled), recorded_at(row), memory) == UNKNOWN):
        if row.state != UNKNOWN:
            hold_unknown(ctx, row, memory, now)
        raise UserError(f"order {order_id} ({row.order_ref}) has an unknown outcome: the broker no longer reports "
                        f"it; {what_to_do(order_id, row.order_ref)}")
    if row.state == "planned" and at_broker is None:
        with engine.begin() as conn:
            conn.execute(o.update().where(o.c.id == order_id, o.c.state == "planned").values(
                state="cancelled", reason="cancelled before it was sent"))
        return row.order_ref, True
    status = broker.cancel_order(row.order_ref)
    sync_fills(ctx, broker, now)
    if not status.is_done:
        return row.order_ref, False
    with engine.begin() as conn:
        booked = conn.execute(sa.select(o.c.filled).where(o.c.id == order_id)).scalar()
        if from_scaled(booked) < status.filled:
            return row.order_ref, False  # fills not reported yet: still counted until they are booked
        conn.execute(o.update().where(o.c.id == order_id, o.c.state.in_(("planned", "sent", "partial", UNKNOWN))).values(
            state="filled" if from_scaled(booked) >= from_scaled(row.quantity) else "cancelled",
            reason="cancelled by `tradeledger orders cancel`"))
    return row.order_ref, True


