"""From an approved target run to broker orders: plan (pure), limits (pure), record, then send.

Each strategy's change is its target minus its ledger position now. Per contract the changes
are netted (`netting.net_changes`): opposite changes cross internally at the reference price
recorded with the run (a zero-sum transfer booked in the ledger, no broker, no commission), and
only the residual goes to the broker as one order whose fills are allocated back pro rata.

Limits apply before anything is sent, and a refusal names the limit. Nothing is sent to an
account that has no opening (engine/trust/opening.py): `send_planned` takes it first, or refuses. Submission is restartable:
orders are recorded (state `planned`) in the same transaction as the crosses, before anything
is sent; each carries an orderRef naming it, so a restart asks the broker for that orderRef
before it sends again, and nothing goes out twice.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.broker.base import BUY, SELL, Broker, BrokerDisconnected, ComboLeg, Contract, OrderRequest, contract_fields
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import cross_entry
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception
from tradeledger.engine.trust.opening import ensure_opening
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.accounting.holders import holder_of
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings, save_marks
from tradeledger.engine.futures.rolls import NO_ROLL, InstrumentRoll, route
from tradeledger.engine.trading.netting import Cross, net_changes
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
    quantity: Decimal
    shares: tuple[tuple[str, Decimal], ...]
    refused: str = ""  # the limit that stops this contract, if any


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


@dataclass(frozen=True)
class OrderPlan:
    run_id: int
    contracts: tuple[ContractPlan, ...]
    spreads: tuple[SpreadPlan, ...] = ()

    @property
    def refusals(self) -> list[tuple[str, str]]:
        return [(c.contract.code, c.refused) for c in self.contracts if c.refused] + \
            [(s.code, s.refused) for s in self.spreads if s.refused]


@dataclass(frozen=True)
class TargetLine:
    holder: str  # strategy account component
    instrument: str
    contract: Contract
    target: Decimal
    price: Decimal
    fx: Decimal = Decimal(1)


def check_limits(limits: Limits, instrument: str, holders_changes: dict, current: dict, targets: dict,
                 quantity: Decimal, price: Decimal, multiplier: Decimal, fx: Decimal, traded_today: Decimal,
                 locks: dict | None = None, contract: str = "") -> str:
    """The first limit (or lock: key -> reason, engine.exceptions) this contract's trading would break, or "" (pure)."""
    for key in (instrument, contract):
        if key and locks and key in locks:
            return f"{key} is locked: {locks[key]}"
    if instrument in limits.halted:
        return f"instrument {instrument} is halted"
    for holder, change in holders_changes.items():
        if holder in limits.halted and change:
            return f"strategy {holder} is halted"
        if (holder in limits.reduce_only or instrument in limits.reduce_only) and change:
            now, target = current.get(holder, ZERO), targets.get(holder, ZERO)
            if abs(target) > abs(now) or (target and now and (target > 0) != (now > 0)) or (target and not now):
                return f"reduce-only: {holder} may not go from {now} to {target} in {instrument}"
    if quantity > limits.max_order_qty:
        return f"order of {quantity} exceeds max_order_qty {limits.max_order_qty}"
    if traded_today + quantity > limits.max_daily_qty:
        return f"{traded_today} already traded today + {quantity} exceeds max_daily_qty {limits.max_daily_qty}"
    total = sum(targets.values(), ZERO)
    if instrument in limits.max_position and abs(total) > limits.max_position[instrument]:
        return f"position {total} exceeds max_position {limits.max_position[instrument]}"
    notional = abs(total) * abs(price) * multiplier * fx
    if instrument in limits.max_notional and notional > limits.max_notional[instrument]:
        return f"notional {notional} exceeds max_notional {limits.max_notional[instrument]}"
    return ""


def plan(run_id: int, lines: list[TargetLine], positions: dict, limits: Limits, traded_today: dict,
         locks: dict | None = None, instrument_of=None, rolls: dict | None = None) -> OrderPlan:
    """Net each contract's changes and apply the limits; positions: (holder, code) -> units (pure).

    With `instrument_of` (code -> instrument name) a holder's current position is its exposure to
    the line's instrument, summed over every contract of it, and the change (target - exposure) is
    routed to contracts by the instrument's roll state (`rolls`: instrument -> InstrumentRoll,
    engine/futures/rolls.py; none: everything trades the line's contract). Without it, a holder's
    position in the line's contract alone is its current position.
    Spread rolls (state force) are planned per instrument: see `plan_spreads`."""
    rolls = rolls or {}
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
        refused = check_limits(limits, instrument, holder_changes, current, targets, netting.quantity,
                               price, contract.multiplier, fx, traded_today.get(code, ZERO), locks, code)
        plans.append(ContractPlan(contract, instrument, price, tuple(sorted(holder_changes.items())),
                                  netting.crosses, netting.side, netting.quantity, netting.residual_shares, refused))
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


def record_plan(engine, ledger: Ledger, chart: Chart, order_plan: OrderPlan, env_name: str, now: dt.datetime) -> int:
    """Book the crosses and record the orders (state planned) in one transaction; once per run."""
    o = tables.broker_order
    with engine.begin() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(o).where(o.c.run_id == order_plan.run_id)).scalar() or \
                conn.execute(sa.select(sa.func.count()).select_from(tables.internal_cross).where(
                    tables.internal_cross.c.run_id == order_plan.run_id)).scalar():
            return 0  # already planned: submission resumes with what was recorded
        created = 0
        for sp in order_plan.spreads:
            if not sp.refused:
                created += _record_spread(conn, ledger, chart, order_plan.run_id, sp, env_name, now)
        for cp in order_plan.contracts:
            if cp.refused:
                continue
            for cross in cp.crosses:
                _book_cross(conn, ledger, chart, order_plan.run_id, cp, cross, now)
            if cp.side is None:
                continue
            order_id = conn.execute(o.insert().values(
                order_ref="", run_id=order_plan.run_id, contract=cp.contract.code, side=cp.side,
                quantity=to_scaled(cp.quantity, "order quantity"), order_type="MKT", state="planned",
                created_at=fmt_ts(now), contract_spec=json.dumps(_contract_json(cp.contract)),
            )).inserted_primary_key[0]
            conn.execute(o.update().where(o.c.id == order_id).values(order_ref=f"tl-{env_name}-{order_id}"))
            for holder, qty in cp.shares:
                conn.execute(tables.order_alloc.insert().values(order_id=order_id, strategy=holder,
                                                                 quantity=to_scaled(qty, "allocation")))
            created += 1
        return created


def _record_spread(conn, ledger: Ledger, chart: Chart, run_id: int, sp: SpreadPlan, env_name: str, now) -> int:
    """A roll by spread: the crosses of both legs booked at their reference prices, then one BAG
    order (state planned) whose legs and allocation are recorded with it. Returns 1 if an order."""
    o = tables.broker_order
    for contract, price, crosses in ((sp.old, sp.old_price, sp.old_crosses), (sp.new, sp.new_price, sp.new_crosses)):
        leg = ContractPlan(contract, sp.instrument, price, (), crosses, None, ZERO, ())
        for cross in crosses:
            _book_cross(conn, ledger, chart, run_id, leg, cross, now, tag="roll")
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
    conn.execute(o.update().where(o.c.id == order_id).values(order_ref=f"tl-{env_name}-{order_id}"))
    for contract, side in legs:
        conn.execute(tables.order_leg.insert().values(order_id=order_id, contract=contract.code, side=side, ratio=1,
                                                      contract_spec=json.dumps(_contract_json(contract))))
    for holder, qty in sp.shares:
        conn.execute(tables.order_alloc.insert().values(order_id=order_id, strategy=holder,
                                                         quantity=to_scaled(qty, "allocation")))
    return 1


def _book_cross(conn, ledger: Ledger, chart: Chart, run_id: int, cp: ContractPlan, cross: Cross, now,
                tag: str = "") -> None:
    contract = cp.contract
    ensure_contract(conn, ledger, contract, now.date())
    for holder in (cross.seller, cross.buyer):
        ensure_holder(conn, ledger, chart, holder)
    holdings = load_holdings(conn, ledger, chart, contract)
    txn, after = cross_entry(chart, contract, holdings, run_id, cross.seller, cross.buyer, cross.quantity,
                             cp.reference_price, now, tag)
    booked = ledger.book(txn, conn)
    save_marks(conn, contract, after, now, before=holdings)
    conn.execute(tables.internal_cross.insert().values(
        run_id=run_id, contract=contract.code, seller=cross.seller, buyer=cross.buyer,
        quantity=to_scaled(cross.quantity, "cross"), price=to_scaled(cp.reference_price, "price"), txn_id=booked.id))


def record_refusals(engine, order_plan: OrderPlan, now: dt.datetime) -> None:
    """A limit or a lock that stopped a contract becomes a limit_hit exception (one per day)."""
    if not order_plan.refusals:
        return
    with engine.begin() as conn:
        for code, why in order_plan.refusals:
            raise_exception(conn, ExceptionKind.LIMIT_HIT, code, f"run {order_plan.run_id}: {code} not traded: {why}",
                            dedupe_key=dedupe_key(ExceptionKind.LIMIT_HIT, code, now.date().isoformat()), now=now)


def send_planned(engine, broker: Broker, run_id: int | None, now: dt.datetime) -> SubmitReport:
    """Send every planned order (of a run, or all), asking the broker first whether it has it."""
    report = SubmitReport()
    o = tables.broker_order
    with read_connection(engine) as conn:
        query = sa.select(o).where(o.c.state == "planned")
        if run_id is not None:
            query = query.where(o.c.run_id == run_id)
        planned = conn.execute(query.order_by(o.c.id)).all()
    if not planned:
        return report
    ensure_opening(engine, broker, "submit", now)  # the gate: nothing is sent to an account never opened
    at_broker = {s.order_ref: s for s in broker.orders()}
    for row in planned:
        status = at_broker.get(row.order_ref)
        found = status is not None
        if found:  # sent before a crash or a lost reply: record it, never send it again
            report.already_at_broker.append(row.order_ref)
        else:
            spec = _contract_from_json(row.contract_spec)
            legs = tuple(ComboLeg(Contract(**_contract_from_json(json.dumps(leg["contract"]))), leg["side"],
                                  int(leg["ratio"])) for leg in spec.pop("legs", ()))
            request = OrderRequest(row.order_ref, Contract(**spec), row.side, from_scaled(row.quantity), legs=legs)
            try:
                status = broker.place_order(request)
            except BrokerDisconnected:
                raise  # the order stays planned; the next submit asks the broker first
        state = "rejected" if status.status in ("Rejected", "Inactive") else "sent"
        with engine.begin() as conn:
            conn.execute(o.update().where(o.c.id == row.id, o.c.state == "planned").values(
                state=state, broker_order_id=status.broker_order_id, perm_id=status.perm_id,
                sent_at=fmt_ts(now), reason=status.reason or None))
            if state == "rejected":
                raise_exception(conn, ExceptionKind.ORDER_REJECTED, row.order_ref,
                                f"{row.side} {from_scaled(row.quantity)} {row.contract} rejected by the broker: "
                                f"{status.reason or status.status}", "error", now=now)
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
    rows = conn.execute(sa.select(o.c.contract, sa.func.sum(o.c.quantity)).where(
        o.c.created_at >= day.isoformat(), o.c.state != "rejected").group_by(o.c.contract))
    return {code: from_scaled(q) for code, q in rows}


def list_orders(conn) -> list[dict]:
    o = tables.broker_order
    rows = conn.execute(sa.select(o).order_by(o.c.id)).all()
    allocs: dict[int, dict] = {}
    for r in conn.execute(sa.select(tables.order_alloc)):
        allocs.setdefault(r.order_id, {})[r.strategy] = from_scaled(r.quantity)
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


def cancel(engine, broker: Broker, order_id: int, now: dt.datetime) -> str:
    o = tables.broker_order
    with read_connection(engine) as conn:
        row = conn.execute(sa.select(o).where(o.c.id == order_id)).first()
    if row is None:
        raise ValueError(f"no order {order_id}")
    if row.state in ("filled", "cancelled", "rejected"):
        raise ValueError(f"order {order_id} is {row.state}; nothing to cancel")
    if row.state != "planned":
        broker.cancel_order(row.order_ref)
    with engine.begin() as conn:
        conn.execute(o.update().where(o.c.id == order_id).values(state="cancelled"))
    return row.order_ref
