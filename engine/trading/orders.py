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

from tradeledger.broker.base import Broker, BrokerDisconnected, Contract, OrderRequest
from tradeledger.engine import tables
from tradeledger.engine.accounting.booking import Holding, after_trade, trade_postings
from tradeledger.engine.trust.exceptions import raise_exception
from tradeledger.engine.trust.opening import ensure_opening
from tradeledger.engine.setup.config import Limits, TradingConfig, current_contract
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, holder_of, load_holdings, save_marks
from tradeledger.engine.trading.netting import Cross, net_changes
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.model import Transaction
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
class OrderPlan:
    run_id: int
    contracts: tuple[ContractPlan, ...]

    @property
    def refusals(self) -> list[tuple[str, str]]:
        return [(c.contract.code, c.refused) for c in self.contracts if c.refused]


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
         locks: dict | None = None) -> OrderPlan:
    """Net each contract's changes and apply the limits; positions: (holder, code) -> units (pure)."""
    by_contract: dict[str, list[TargetLine]] = {}
    for line in lines:
        by_contract.setdefault(line.contract.code, []).append(line)
    plans = []
    for code in sorted(by_contract):
        group = by_contract[code]
        contract, price = group[0].contract, group[0].price
        targets = {line.holder: line.target for line in group}
        current = {h: positions.get((h, code), ZERO) for h in targets}
        changes = {h: targets[h] - current[h] for h in targets}
        netting = net_changes({h: c for h, c in changes.items() if c}, price)
        refused = check_limits(limits, group[0].instrument, changes, current, targets, netting.quantity,
                               price, contract.multiplier, group[0].fx, traded_today.get(code, ZERO),
                               locks, code)
        plans.append(ContractPlan(contract, group[0].instrument, price, tuple(sorted(changes.items())),
                                  netting.crosses, netting.side, netting.quantity, netting.residual_shares, refused))
    return OrderPlan(run_id, tuple(plans))


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


def _book_cross(conn, ledger: Ledger, chart: Chart, run_id: int, cp: ContractPlan, cross: Cross, now) -> None:
    contract = cp.contract
    ensure_contract(conn, ledger, contract, now.date())
    holdings = load_holdings(conn, ledger, chart, contract)
    postings, after = [], dict(holdings)
    label = f"cross-{run_id}-{contract.code}-{cross.seller}-{cross.buyer}"
    for holder, qty in ((cross.seller, -cross.quantity), (cross.buyer, cross.quantity)):
        ensure_holder(conn, ledger, chart, holder)
        holding = after.get(holder, Holding())
        legs = trade_postings(chart, holder, contract, holding, qty, cp.reference_price, now.date(), label)
        postings += legs
        after[holder] = after_trade(contract, holding, legs, qty, cp.reference_price)
    txn = Transaction(time=now, kind="cross", narration=f"Cross {contract.code} {cross.seller} -> {cross.buyer} "
                      f"{cross.quantity} @ {cp.reference_price}", postings=tuple(postings),
                      links=(f"cross-{run_id}-{contract.code}",), meta=(("contract", contract.code), ("run", str(run_id))),
                      key=f"cross:{chart.broker_account}:{run_id}:{contract.code}:{cross.seller}:{cross.buyer}")
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
            raise_exception(conn, "limit_hit", code, f"run {order_plan.run_id}: {code} not traded: {why}",
                            dedupe_key=f"limit_hit:{code}:{now.date().isoformat()}", now=now)


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
            request = OrderRequest(row.order_ref, Contract(**_contract_from_json(row.contract_spec)), row.side,
                                   from_scaled(row.quantity))
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
                raise_exception(conn, "order_rejected", row.order_ref,
                                f"{row.side} {from_scaled(row.quantity)} {row.contract} rejected by the broker: "
                                f"{status.reason or status.status}", "error", now=now)
        if state == "rejected":
            report.rejected.append((row.order_ref, status.reason))
        elif not found:
            report.sent.append(row.order_ref)
    return report


def _contract_json(c: Contract) -> dict:
    return {"code": c.code, "sec_type": c.sec_type, "symbol": c.symbol, "exchange": c.exchange,
            "currency": c.currency, "multiplier": str(c.multiplier), "expiry": c.expiry,
            "trading_class": c.trading_class, "con_id": c.con_id}


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


def contract_for(config: TradingConfig, instrument: str, on: dt.date) -> Contract:
    return current_contract(config.instruments[instrument], on)

