"""The cycle: compute targets, stop for review; once approved, plan, submit, wait, book, report.

Each step is one of the engine's functions; this module only strings them together, so a
person can run any step alone from the CLI and get the same result. `submit_run` is safe to run
again after a crash: the plan is recorded once per run, and planned orders are looked up at the
broker by orderRef before anything is sent.
"""

from __future__ import annotations

import datetime as dt
import time as wallclock
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.setup.config import current_contract
from tradeledger.engine.futures.exposure import instrument_index
from tradeledger.engine.futures.interrupted import check_spreads
from tradeledger.engine.futures.state import instrument_roll, pinned_states
from tradeledger.engine.trust.exceptions import active_locks
from tradeledger.engine.trust.opening import ensure_opening
from tradeledger.engine.trading.fills import SyncReport, sync_fills
from tradeledger.engine.trading.orders import (
    OrderPlan, SubmitReport, TargetLine, holder_positions, plan, record_plan, record_refusals, send_planned,
    traded_today,
)
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import TargetError, approve_run, compute_run, executable_lines, show_run
from tradeledger.ledger.db import read_connection


SPREADS = True  # a forced roll is one calendar spread per instrument (force_outright: two legs)


def order_lines(session: Session, run_id: int, now: dt.datetime) -> list[TargetLine]:
    """The approved run's lines as order targets (refuses an unexecutable run)."""
    config = session.config
    run = show_run(session.env, run_id, now)
    lines = []
    for line in executable_lines(run):
        x = line.explain
        instrument = config.instruments[x["execution_instrument"]]
        contract = current_contract(instrument, run.as_of)
        if contract.code != line.contract:
            raise TargetError(f"run {run_id}: {line.contract} is no longer the contract of {instrument.name}")
        lines.append(TargetLine(x["account"], instrument.name, contract, line.target, Decimal(x["price"]),
                                Decimal(x["fx_rate"])))
    return lines


def plan_run(session: Session, run_id: int, now: dt.datetime, as_of: dt.date | None = None) -> OrderPlan:
    """The orders of an approved run: exposure per instrument, routed by each instrument's roll
    state on the day the orders go out (engine/futures/state.py)."""
    lines = order_lines(session, run_id, now)
    config, of = session.config, instrument_index(session.config)
    check_spreads(session.env.engine, lambda: session.broker, now)  # an interrupted roll is raised first
    with read_connection(session.env.engine) as conn:
        positions = holder_positions(session.env.ledger, session.env.chart, conn)
        today = traded_today(conn, now.date())
        locks = active_locks(conn)
        pinned = pinned_states(conn)
        day = as_of or now.date()  # the roll state of the day the orders go out
        rolls = {}
        for line in lines:
            if line.instrument in rolls:
                continue
            held = tuple(sorted({code for (_h, code), units in positions.items() if units and of(code) == line.instrument}))
            rolls[line.instrument] = instrument_roll(config, line.instrument, day, conn, line.price, pinned,
                                                     spreads=SPREADS, held_codes=held)
    return plan(run_id, lines, positions, config.limits, today, locks, instrument_of=of, rolls=rolls)


def submit_run(session: Session, run_id: int, now: dt.datetime) -> tuple[OrderPlan, SubmitReport]:
    env = session.env
    ensure_opening(env.engine, session.broker, "submit", now)  # the account's holdings are in the books first
    order_plan = plan_run(session, run_id, now)
    record_plan(env.engine, env.ledger, env.chart, order_plan, env.settings.env, now)
    record_refusals(env.engine, order_plan, now)
    if env.settings.env == "paper" and env.settings.broker == "sim":
        open_sim_market(session, order_plan, now)
    report = send_planned(env.engine, session.broker, run_id, now)
    report.refusals = order_plan.refusals
    report.crosses = sum(len(c.crosses) for c in order_plan.contracts if not c.refused)
    return order_plan, report


def open_sim_market(session: Session, order_plan: OrderPlan, now: dt.datetime) -> None:
    """The simulated exchange takes its prices from the price table: a contract it has no price
    for opens at the run's reference price (the latest mark), so a market order can fill."""
    exchange = session.exchange()
    for cp in order_plan.contracts:
        if cp.side is None or cp.refused:
            continue
        exchange.add_contract(cp.contract)
        if exchange.price(cp.contract.code) is None:
            exchange.set_price(cp.contract.code, cp.reference_price, now)


def open_orders_of(session: Session, run_id: int) -> int:
    o = tables.broker_order
    with read_connection(session.env.engine) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(o).where(
            o.c.run_id == run_id, o.c.state.in_(("planned", "sent", "partial")))).scalar()


def wait_for_fills(session: Session, run_id: int, timeout: float = 30.0, poll: float = 0.2) -> SyncReport:
    """Sync fills until every order of the run is done or `timeout` seconds pass."""
    env = session.env
    total = SyncReport()
    deadline = wallclock.monotonic() + timeout
    while True:
        total = total.then(sync_fills(env.engine, env.ledger, env.chart, session.broker))
        if open_orders_of(session, run_id) == 0:
            return total
        check_spreads(env.engine, session.broker, session.now())  # a spread the broker ended half-filled
        if open_orders_of(session, run_id) == 0 or wallclock.monotonic() >= deadline:
            return total
        wallclock.sleep(poll)


@dataclass
class CycleResult:
    run_id: int
    approved: bool
    plan: OrderPlan | None = None
    submitted: SubmitReport | None = None
    fills: SyncReport | None = None
    notes: list[str] = field(default_factory=list)


def run_cycle(session: Session, approve: bool, as_of: dt.date | None = None, who: str = "cli",
              timeout: float = 30.0) -> CycleResult:
    now = session.now()
    run_id = compute_run(session.env, as_of or now.date(), now)
    if not approve:
        return CycleResult(run_id, False, notes=[f"run {run_id} computed; review it with `tradeledger targets show "
                                                 f"{run_id}`, then approve it or run `cycle --approve`"])
    approve_run(session.env, run_id, who, "approved by cycle --approve", now)
    order_plan, submitted = submit_run(session, run_id, now)
    fills = wait_for_fills(session, run_id, timeout)
    return CycleResult(run_id, True, order_plan, submitted, fills)
