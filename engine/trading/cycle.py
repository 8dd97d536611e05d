"""The cycle: compute a run and stop for review; execute exactly the run a person reviewed.

Each step is one of the engine's functions; this module strings them together, so a person can
run any step alone from the CLI and get the same result.

**What was reviewed is what trades.** `cycle` computes run N, shows it, and names the command that
executes exactly that run (`tradeledger cycle --approve --run N`). `--approve --run N` approves N
if it is still pending (a run is reviewed once) and executes it. `--approve` alone executes the
newest run only when no older run is still pending review (`choose_run`); it never computes a new
run, so it never supersedes a run under review. `cycle --unattended` is the one mode that computes
and trades without a person: it refuses while any run awaits review, and records on the run that
nobody reviewed it.

**Executing a run** (`submit_run`) holds the environment's trading lease (`lease.py`) throughout:
sync fills; settle the working orders of older runs (`inflight.py`: cancelled and confirmed, or
kept and counted; one the broker no longer reports though it may have traded before the broker's
memory begins is of unknown outcome: counted, its instrument not traded, `unknown.py`); plan the run once (target minus ledger position minus what is in flight),
recording its crosses, orders and per-contract decisions in one transaction; send what the broker
does not already have. Killed at any point and run again, it sends nothing that was already sent:
the plan is recorded once per run, planned orders are looked up at the broker by orderRef before
anything is sent, and a new run counts or cancels what an older one left working.

**Waiting is explicit.** `wait_for_fills` syncs until the run's orders are done or the wait ends;
a cycle that stops waiting lists the orders still working (`CycleResult.still_working`) and the
CLI exits non-zero; the next cycle counts them.
"""

from __future__ import annotations

import datetime as dt
import time as wallclock
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.futures.exposure import instrument_index
from tradeledger.engine.futures.interrupted import check_spreads, interrupted_of_run
from tradeledger.engine.futures.state import instrument_roll, overrides, pinned_states
from tradeledger.engine.setup.config import current_contract
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import (
    APPROVED, PENDING, TargetError, approve_run, compute_run, executable_lines, newest_run_id, pending_runs, show_run,
    superseded_by_run,
)
from tradeledger.engine.trading import killpoint
from tradeledger.engine.trading import lease as trading_lease
from tradeledger.engine.trading.fills import SyncReport, sync_fills
from tradeledger.engine.trading.inflight import SettleReport, in_flight, settle_older_orders, working_orders
from tradeledger.engine.trading.orders import (
    OrderPlan, SpreadPlan, SubmitReport, TargetLine, holder_positions, is_planned, plan, record_plan, record_refusals,
    cancel, recorded_plan, send_planned, traded_today, why_nothing,
)
from tradeledger.engine.trading.unknown import resolve_order as resolve_unknown, unknown_locks
from tradeledger.engine.trust.exceptions import active_locks
from tradeledger.engine.trust.opening import ensure_opening
from tradeledger.ledger.db import read_connection


SPREADS = True  # a forced roll is one calendar spread per instrument (force_outright: two legs)


def trading_settings(session: Session) -> dict:
    """`[trading]`: lease_wait_seconds (5), fill_wait_seconds (30), cancel_wait_seconds (10)."""
    raw = session.settings.raw.get("trading", {})
    out = {}
    for key, default in (("lease_wait_seconds", 5.0), ("fill_wait_seconds", 30.0), ("cancel_wait_seconds", 10.0)):
        value = raw.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config: trading.{key} must be a number of seconds >= 0, not {value!r}")
        out[key] = float(value)
    return out


def order_lines(session: Session, run_id: int, now: dt.datetime) -> list[TargetLine]:
    """The approved run's lines as order targets (refuses an unexecutable run)."""
    return target_lines(session, show_run(session, run_id, now), check=True)


def target_lines(session: Session, run, check: bool) -> list[TargetLine]:
    config = session.config
    lines = []
    for line in (executable_lines(run) if check else run.lines):
        x = line.explain
        instrument = config.instruments[x["execution_instrument"]]
        contract = current_contract(instrument, run.as_of)
        if contract.code != line.contract:
            raise TargetError(f"run {run.id}: {line.contract} is no longer the contract of {instrument.name}")
        lines.append(TargetLine(x["account"], instrument.name, contract, line.target, Decimal(x["price"]),
                                Decimal(x["fx_rate"]),
                                dt.date.fromisoformat(x["price_date"]) if x.get("price_date") else None))
    return lines


def _plan_lines(session: Session, run_id: int, lines: list[TargetLine], now: dt.datetime,
                as_of: dt.date | None = None) -> OrderPlan:
    """Exposure per instrument, routed by each instrument's roll state on the day the orders go out
    (engine/futures/state.py), counting the orders in flight (engine/trading/inflight.py)."""
    config, of = session.config, instrument_index(session.config)
    check_spreads(session, lambda: session.broker, now)  # an interrupted roll is raised first
    with read_connection(session.engine) as conn:
        positions = holder_positions(session.ledger, session.chart, conn)
        killpoint.reach("positions_read")
        working = working_orders(conn)
        flight = in_flight(working)  # the same snapshot as the positions (read_connection)
        today = traded_today(conn, now.date())
        pinned = pinned_states(conn)
        day = as_of or now.date()  # the roll state of the day the orders go out
        locks = active_locks(conn)
        stopped = expired_unbooked(config, positions, of, day, conn)
        for name, why in unknown_locks(working, of).items():  # an order nobody knows the outcome of
            stopped[name] = f"{stopped[name]}; {why}" if name in stopped else why
        for name, why in stopped.items():
            locks[name] = f"{locks[name]}; {why}" if name in locks else why
        rolls = {}
        for line in lines:
            if line.instrument in rolls:
                continue
            held = tuple(sorted({code for (_h, code), units in positions.items() if units and of(code) == line.instrument}))
            rolls[line.instrument] = instrument_roll(config, line.instrument, day, conn, line.price, pinned,
                                                     spreads=SPREADS, held_codes=held, price_date=line.price_date)
    return plan(run_id, lines, positions, config.limits, today, locks, instrument_of=of, rolls=rolls,
                in_flight=flight)


def expired_unbooked(config, positions: dict, of, day: dt.date, conn) -> dict[str, str]:
    """instrument -> why it may not trade on `day`: a contract of it is still held though it has
    expired (past its last trading day, or on it with its final settlement in: `has_expired`), its
    expiry not booked yet (no reconciliation since, or no final settlement price). The exposure
    would count the dead contract as live: the day after MESZ26 expired, a's 24 of it and a target
    of 9 sent SELL 15 MESH27, leaving a short 15 at the broker once the expiry was booked."""
    from tradeledger.engine.futures.expiry import final_settlement, has_expired, last_trading_day  # futures reads trading

    known = overrides(conn)
    why: dict[str, str] = {}
    for code in sorted({code for (_h, code), units in positions.items() if units}):
        last = last_trading_day(config, code, known)
        if last is None or last > day or of(code) is None:
            continue
        if has_expired(last, day, final_settlement(conn, code, last) if last == day else None):
            why[of(code)] = (f"{code} expired on {last} and its expiry is not booked yet (the exposure would count it "
                             f"as live): `tradeledger reconcile` books it (import its final settlement first if it asks)")
    return why


def plan_run(session: Session, run_id: int, now: dt.datetime, as_of: dt.date | None = None) -> OrderPlan:
    """The plan of an approved run from the ledger and the orders in flight now (nothing recorded)."""
    return _plan_lines(session, run_id, order_lines(session, run_id, now), now, as_of)


def preview_run(session: Session, run_id: int, now: dt.datetime) -> OrderPlan:
    """What planning any run (even one not approved yet) would do now: for review (`targets show`)."""
    run = show_run(session, run_id, now)
    return _plan_lines(session, run_id, target_lines(session, run, check=False), now)


def review_run(session: Session, run_id: int) -> tuple[object, dict[str, tuple[str, str]], bool]:
    """A run for review with, per contract, what its execution would do about the limits:
    (run, {contract: (outcome, detail)}, planned). A planned run shows what it decided when planned;
    another shows what planning it now would decide (refused, clipped, order, cross, unchanged)."""
    now = session.now()
    run = show_run(session, run_id, now)
    with read_connection(session.engine) as conn:
        if is_planned(conn, run_id):
            return run, {r["contract"]: (r["outcome"], r["detail"]) for r in recorded_plan(conn, run_id)}, True
    try:
        preview = _plan_lines(session, run_id, target_lines(session, run, check=False), now)
    except ValueError as exc:
        return run, {line.contract: ("refused", str(exc)) for line in run.lines}, False
    return run, {item.code if isinstance(item, SpreadPlan) else item.contract.code: (item.outcome, item.describe())
                 for item in (*preview.spreads, *preview.contracts)}, False


@dataclass
class Execution:
    """What executing a run did (one `submit_run`)."""
    run_id: int
    plan: OrderPlan | None  # None: the run was planned before; `resumed` says what it decided
    submitted: SubmitReport
    synced: SyncReport
    settled: SettleReport
    resumed: list[dict] = field(default_factory=list)  # recorded_plan rows of an already planned run

    @property
    def refusals(self) -> list[tuple[str, str]]:
        if self.plan is not None:
            return self.plan.refusals
        return [(r["contract"], r["detail"]) for r in self.resumed if r["outcome"] == "refused"]

    @property
    def nothing_sent_because(self) -> list[tuple[str, str]]:
        """For a resubmitted run: why each line sends nothing now."""
        return [(r["contract"], why_nothing(r)) for r in self.resumed]


def submit_run(session: Session, run_id: int, now: dt.datetime, what: str = "orders submit") -> Execution:
    """Execute an approved run once: under the trading lease, sync, settle older orders, plan once, send."""
    settings = trading_settings(session)
    with trading_lease.hold(session, f"{what} (run {run_id})",
                            wait=settings["lease_wait_seconds"]) as held:
        executable_lines(show_run(session, run_id, now))  # approved, newest, unexpired: else say why not
        ensure_opening(session, session.broker, "submit", now)  # the account's holdings are in the books first
        syncs = [sync_fills(session, session.broker)]
        killpoint.reach("synced")

        def sync():
            syncs.append(sync_fills(session, session.broker))

        settled = settle_older_orders(session, session.broker, run_id, sync, now,
                                      timeout=settings["cancel_wait_seconds"], guard=held.check)
        killpoint.reach("settled")
        with read_connection(session.engine) as conn:
            planned_before = is_planned(conn, run_id)
        order_plan, resumed = None, []
        if planned_before:
            with read_connection(session.engine) as conn:
                resumed = recorded_plan(conn, run_id)
        else:
            order_plan = plan_run(session, run_id, now)
            killpoint.reach("planned")
            held.check()
            if session.name == "paper" and session.settings.broker == "sim":
                open_sim_market(session, order_plan, now)  # before the plan is recorded: a resumed run finds it open
            record_plan(session, order_plan, now)
            killpoint.reach("recorded")
            record_refusals(session, order_plan, now)
        report = send_planned(session, session.broker, run_id, now, guard=held.check)
    if order_plan is not None:
        report.refusals = order_plan.refusals
        report.clips = order_plan.clips
        report.crosses = sum(len(c.crosses) for c in order_plan.contracts if not c.refused) + sum(
            len(s.old_crosses) + len(s.new_crosses) for s in order_plan.spreads if not s.refused)
    synced = SyncReport()
    for one in syncs:
        synced = synced.then(one)
    execution = Execution(run_id, order_plan, report, synced, settled, resumed)
    if resumed:
        report.refusals = execution.refusals
    return execution


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


def cancel_order(session: Session, order_id: int) -> tuple[str, bool]:
    """Cancel one order under the trading lease; (order_ref, confirmed by the broker)."""
    with trading_lease.hold(session, f"orders cancel {order_id}",
                            wait=trading_settings(session)["lease_wait_seconds"]):
        return cancel(session, session.broker, order_id, session.now())


def resolve_order(session: Session, order_id: int, outcome: str, who: str) -> str:
    """Resolve an order of unknown outcome (`unknown.resolve_order`) under the trading lease, so no
    run plans while its state changes."""
    with trading_lease.hold(session, f"orders resolve {order_id}",
                            wait=trading_settings(session)["lease_wait_seconds"]):
        return resolve_unknown(session, order_id, outcome, who, session.now())


def still_working(session: Session, run_id: int | None = None) -> list[str]:
    """Orders (of a run, or all) not done: each described with what filled so far."""
    with read_connection(session.engine) as conn:
        return [o.describe() for o in working_orders(conn) if run_id is None or o.run_id == run_id]


def open_orders_of(session: Session, run_id: int) -> int:
    o = tables.broker_order
    with read_connection(session.engine) as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(o).where(
            o.c.run_id == run_id, o.c.state.in_(("planned", "sent", "partial")))).scalar()


def wait_for_fills(session: Session, run_id: int, timeout: float = 30.0, poll: float = 0.2) -> SyncReport:
    """Sync fills until every order of the run is done or `timeout` seconds pass."""
    total = SyncReport()
    deadline = wallclock.monotonic() + timeout
    while True:
        total = total.then(sync_fills(session, session.broker))
        if open_orders_of(session, run_id) == 0:
            return total
        check_spreads(session, session.broker, session.now())  # a spread the broker ended half-filled
        if open_orders_of(session, run_id) == 0 or wallclock.monotonic() >= deadline:
            return total
        wallclock.sleep(poll)



# -- which run, and the whole cycle ------------------------------------------------------------------


def choose_run(session: Session, run_id: int | None) -> int:
    """The run `cycle --approve` executes: the named one, else the newest if nothing older awaits review."""
    if run_id is not None:
        return run_id
    newest = newest_run_id(session)
    if newest is None:
        raise TargetError("no target run yet: `tradeledger cycle` computes one for review")
    older = [(rid, created) for rid, created in pending_runs(session) if rid < newest]
    if older:
        listed = ", ".join(f"run {rid} (computed {created:%Y-%m-%d %H:%M} UTC)" for rid, created in older)
        raise TargetError(f"{listed} still pending review: approve or reject it first, or name the run to execute: "
                          f"`tradeledger cycle --approve --run {newest}`")
    return newest


@dataclass
class CycleResult:
    run_id: int
    approved: bool
    execution: Execution | None = None
    fills: SyncReport | None = None
    still_working: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    preview: OrderPlan | None = None  # a computed run's plan as it would be now (limit flags)
    interrupted: list[str] = field(default_factory=list)  # its roll spreads that stopped with unequal legs

    @property
    def plan(self) -> OrderPlan | None:
        return self.execution.plan if self.execution else None

    @property
    def submitted(self) -> SubmitReport | None:
        return self.execution.submitted if self.execution else None

    @property
    def ok(self) -> bool:
        """Nothing refused, rejected, unbooked, left working, or rolled by half (an interrupted spread)."""
        if self.execution is None:
            return True
        x = self.execution
        failed = x.synced.failed + (self.fills.failed if self.fills else [])
        return not (x.refusals or x.submitted.rejected or failed or self.still_working or self.interrupted)


def compute_for_review(session: Session, as_of: dt.date | None = None) -> CycleResult:
    """`cycle`: compute a run, say which runs it supersedes, and name the command that executes it."""
    now = session.now()
    waiting = pending_runs(session)
    run_id = compute_run(session, as_of or now.date(), now)
    notes = [f"run {rid} (computed {created:%Y-%m-%d %H:%M} UTC, pending review) is superseded by run {run_id}"
             for rid, created in waiting]
    before = superseded_by_run(session, run_id)
    if before is not None and before.state == APPROVED:  # a pending one is in `waiting`
        notes.append(f"warning: {before.describe()}: its approval is discarded")
    notes.append(f"run {run_id} computed: review it (`tradeledger targets show {run_id}`)")
    return CycleResult(run_id, False, notes=notes, preview=preview_run(session, run_id, now))


def execute(session: Session, run_id: int | None, who: str, timeout: float | None = None,
            unattended: bool = False, as_of: dt.date | None = None) -> CycleResult:
    """`cycle --approve [--run N]` (or `--unattended`): approve if pending, execute, wait, report;
    all of it under the trading lease, so two cycles never choose, approve or plan at once."""
    now = session.now()
    what = "cycle --unattended" if unattended else "cycle --approve"
    settings = trading_settings(session)
    wait = settings["fill_wait_seconds"] if timeout is None else timeout
    with trading_lease.hold(session, what, wait=settings["lease_wait_seconds"]):
        run_id, notes = _approved_run(session, run_id, who, unattended, as_of, now)
        execution = submit_run(session, run_id, now, what=what)
        fills = wait_for_fills(session, run_id, wait)
        killpoint.reach("waited")
        working = still_working(session)
    return CycleResult(run_id, True, execution, fills, working, notes, interrupted=interrupted_of_run(session, run_id))


def _approved_run(session: Session, run_id: int | None, who: str, unattended: bool, as_of: dt.date | None,
                  now: dt.datetime) -> tuple[int, list[str]]:
    if unattended:
        waiting = pending_runs(session)
        if waiting:
            raise TargetError(f"run {waiting[-1][0]} is pending review: an unattended cycle would supersede it; "
                              f"approve or reject it first")
        run_id = compute_run(session, as_of or now.date(), now, unattended=True)
        approve_run(session, run_id, who, "unattended: no person reviewed this run (cycle --unattended)", now,
                    unattended=True)
        before = superseded_by_run(session, run_id)
        return run_id, [f"run {run_id} computed and approved unattended (recorded: no person reviewed it)"] + (
            [f"warning: {before.describe()}: its approval is discarded (raised as approval_discarded)"]
            if before is not None and before.discards_approval else [])
    run_id = choose_run(session, run_id)
    run = show_run(session, run_id, now)
    if run.state == PENDING:
        approve_run(session, run_id, who, "approved by cycle --approve", now)
        return run_id, [f"run {run_id} approved by {who}"]
    if run.state == APPROVED:
        return run_id, [f"run {run_id} was approved by {run.reviewed_by}; executing it (nothing already sent is "
                        f"sent twice)"]
    return run_id, []
