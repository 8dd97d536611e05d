"""Never trade twice across the broker's day window.

IB remembers a day: after midnight in the gateway's time zone, reqExecutions and the completed
orders no longer hold an order that filled the day before. A process killed after the broker took
an order and before it recorded `sent`, rerun after that midnight, used to find no trace of the
order and send it again. These tests kill a real process there, move the simulated exchange (which
then forgets like IB: `set_day_window`) past midnight, and rerun: nothing is sent, the order is of
unknown outcome, its instrument is not traded, and the broker's statement (a Flex import) or
`orders resolve` settles it, booking its fill exactly once. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from support import sim_world, tl
from tradeledger.broker.base import BUY, OrderRequest, day_start
from tradeledger.engine import tables
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.ledger.db import read_connection

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 10:00 in New York
NY = "America/New_York"
NEXT_MORNING = dt.datetime(2026, 12, 2, 6, 0, tzinfo=UTC)  # 01:00 in New York: a new broker day
CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
multiplier = "1"
exchange = "ARCA"
ib_symbol = "SPY"

[instruments.TLT]
type = "share"
currency = "USD"
multiplier = "1"
exchange = "ARCA"
ib_symbol = "TLT"

[strategies.trend]
instruments = { SPY = 1, TLT = 1 }
"""


def shares(code: str, price):
    return lambda config: [(to_contract(config.instruments[code], code, ""), D(price))]


def make_world(tmp_path, db_url):
    home = tmp_path / "home"
    env, session = sim_world(home, CONFIG, T0, shares("SPY", 600), shares("TLT", 90),
                             db_url=None if db_url.startswith("sqlite") else db_url)
    session.exchange().set_day_window(NY)
    session.exchange().deposit("USD", D(1_000_000))
    return home, env, session


# The order path of one run, killed after the broker took (and filled) its first order, before the
# order row says `sent` and before any fill is booked (killpoint `placed`).
CRASHER = """
import sys
from decimal import Decimal as D
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.setup.session import Session

env = open_environment(sys.argv[1], "paper")
session = Session(env)
now = session.now()
lines = [TargetLine("Trend", "SPY", to_contract(session.config.instruments["SPY"], "SPY", ""), D(10), D(600)),
         TargetLine("Trend", "TLT", to_contract(session.config.instruments["TLT"], "TLT", ""), D(20), D(90))]
record_plan(env, plan(1, lines, holder_positions(env.ledger, env.chart), Limits(), {}), now)
send_planned(env, session.broker, 1, now)
print("NOT KILLED", flush=True)
"""


def killed_after_first_send(home, tmp_path):
    script = tmp_path / "crasher.py"
    script.write_text(textwrap.dedent(CRASHER))
    done = subprocess.run([sys.executable, str(script), str(home)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "TRADELEDGER_KILL_AT": "placed:1"})
    assert done.returncode == -signal.SIGKILL, (done.stdout, done.stderr)


def broker_orders_ever(exchange) -> list:
    """Every order the exchange ever took (its memory switched off for the look)."""
    zone = exchange.day_window()
    exchange.set_day_window(None)
    try:
        return exchange.orders()
    finally:
        exchange.set_day_window(zone)


def orders_by_ref(env) -> dict:
    with read_connection(env.engine) as conn:
        return {r.contract: r for r in conn.execute(sa.select(tables.broker_order))}


def flex_statement(path, exchange, account: str) -> None:
    """The broker's statement of every execution it ever made (as IB's Flex report has them)."""
    zone = exchange.day_window()
    exchange.set_day_window(None)
    try:
        executions = exchange.executions()
    finally:
        exchange.set_day_window(zone)
    rows = []
    for n, e in enumerate(executions):
        ny = e.time.astimezone(dt.timezone(dt.timedelta(hours=-5)))
        signed = e.quantity if e.side == BUY else -e.quantity
        rows.append(
            f'<Trade accountId="{account}" currency="USD" assetCategory="STK" symbol="{e.contract.symbol}" '
            f'multiplier="1" tradeDate="{ny:%Y%m%d}" dateTime="{ny:%Y%m%d;%H%M%S}" quantity="{signed}" '
            f'tradePrice="{e.price}" ibCommission="-{e.commission}" ibCommissionCurrency="USD" buySell="{e.side}" '
            f'ibExecID="{e.exec_id}" orderReference="{e.order_ref}" transactionID="{9000 + n}" exchange="ARCA" />')
    path.write_text('<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="1">'
                    f'<FlexStatement accountId="{account}" fromDate="20261201" toDate="20261201" period="LastBusinessDay" '
                    'whenGenerated="20261202;010000"><Trades>' + "".join(rows)
                    + '</Trades></FlexStatement></FlexStatements></FlexQueryResponse>')


# -- the broker's memory ----------------------------------------------------------------------------


def test_the_day_starts_at_midnight_in_the_brokers_zone_summer_and_winter():
    assert day_start(dt.datetime(2026, 12, 2, 6, 0, tzinfo=UTC), NY) == dt.datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    assert day_start(dt.datetime(2026, 12, 2, 4, 59, tzinfo=UTC), NY) == dt.datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert day_start(dt.datetime(2026, 7, 2, 4, 30, tzinfo=UTC), NY) == dt.datetime(2026, 7, 2, 4, 0, tzinfo=UTC)
    assert day_start(dt.datetime(2026, 7, 2, 4, 30, tzinfo=UTC), "UTC") == dt.datetime(2026, 7, 2, 0, 0, tzinfo=UTC)


def test_the_simulated_exchange_forgets_like_ib(tmp_path, db_url):
    """Past midnight (its zone), the exchange reports neither yesterday's filled order nor its
    execution; a resting order is reported whatever its age, with its fill of today."""
    _home, _env, session = make_world(tmp_path, db_url)
    exchange = session.exchange()
    spy, tlt = exchange.contract("SPY"), exchange.contract("TLT")
    exchange.place_order(OrderRequest("filled-yesterday", spy, BUY, D(5)))
    exchange.place_order(OrderRequest("resting", tlt, BUY, D(7), "LMT", D(80)))
    assert exchange.memory_since() == dt.datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert {o.order_ref for o in exchange.orders()} == {"filled-yesterday", "resting"}
    exchange.set_clock(NEXT_MORNING)
    assert exchange.memory_since() == dt.datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    assert [o.order_ref for o in exchange.orders()] == ["resting"]
    assert exchange.executions() == []
    exchange.set_price("TLT", D(79))  # the resting limit fills today
    assert [e.order_ref for e in exchange.executions()] == ["resting"]
    assert {o.order_ref for o in broker_orders_ever(exchange)} == {"filled-yesterday", "resting"}  # kept, not told
    assert session.broker.memory_since(NEXT_MORNING) == dt.datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


# -- the defect, and its fix ------------------------------------------------------------------------


def test_killed_after_sending_then_rerun_after_midnight_sends_nothing_twice(tmp_path, db_url):
    """SPY was sent and filled, then the process died; the rerun comes after the broker's midnight.
    The broker reports neither the order nor its fill, yet nothing is sent again: both planned
    orders (SPY, which traded, and TLT, which never left) are of unknown outcome, counted, their
    instruments not planned, and an exception names each with what to do."""
    home, env, session = make_world(tmp_path, db_url)
    killed_after_first_send(home, tmp_path)
    exchange = session.exchange()
    assert [(o.contract_code, o.filled) for o in exchange.orders()] == [("SPY", D(10))]  # sent and filled
    exchange.set_clock(NEXT_MORNING)
    assert exchange.orders() == [] and exchange.executions() == []  # the broker forgot it

    report = send_planned(env, session.broker, 1, exchange.now())
    assert report.sent == [] and report.already_at_broker == []
    assert len(broker_orders_ever(exchange)) == 1  # SPY was not bought twice; TLT not sent either
    assert {p.contract.code: p.quantity for p in exchange.positions()} == {"SPY": D(10)}
    orders = orders_by_ref(env)
    assert {code: r.state for code, r in orders.items()} == {"SPY": "unknown", "TLT": "unknown"}
    assert len(report.unknown) == 2 and all("orders resolve" in why for why in report.unknown)
    with read_connection(env.engine) as conn:
        found = conn.execute(sa.select(tables.tl_exception.c.subject, tables.tl_exception.c.severity).where(
            tables.tl_exception.c.kind == "order_outcome_unknown")).all()
    assert sorted(found) == sorted((r.order_ref, "error") for r in orders.values())

    # A new plan counts the unknown orders as in flight and trades neither instrument.
    from tradeledger.engine.futures.exposure import instrument_index
    from tradeledger.engine.trading.inflight import in_flight, working_orders
    from tradeledger.engine.trading.unknown import unknown_locks

    with read_connection(env.engine) as conn:
        working = working_orders(conn)
    lines = [TargetLine("Trend", "SPY", exchange.contract("SPY"), D(25), D(600))]
    again = plan(2, lines, holder_positions(env.ledger, env.chart), Limits(), {},
                 locks=unknown_locks(working, instrument_index(session.config)), in_flight=in_flight(working))
    [spy] = again.contracts
    assert spy.outcome == "refused" and orders["SPY"].order_ref in spy.refused and "orders resolve" in spy.refused
    assert dict(spy.in_flight) == {"Trend": D(10)}


def test_the_statement_books_the_forgotten_fill_once_and_resolves_the_order(tmp_path, db_url):
    """The Flex statement has yesterday's SPY execution: imported, it is booked once (by its
    orderRef, to the order), the order is filled and its exception resolved; a second import
    books nothing. TLT, which the statement shows no execution for, is resolved --never-sent;
    then the instruments trade again, and the broker and the ledger agree."""
    home, env, session = make_world(tmp_path, db_url)
    killed_after_first_send(home, tmp_path)
    exchange = session.exchange()
    exchange.set_clock(NEXT_MORNING)
    send_planned(env, session.broker, 1, exchange.now())
    orders = orders_by_ref(env)
    statement = tmp_path / "flex.xml"
    flex_statement(statement, exchange, env.settings.account)

    refused = tl(home, "orders", "resolve", orders["SPY"].id, "--filled", code=1)
    assert "no fill of it is booked" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    refused = tl(home, "orders", "resolve", orders["SPY"].id, code=2)  # neither flag: a usage error

    from tradeledger.engine.trust.flex import import_flex

    first = import_flex(env, statement, now=exchange.now())
    assert len(first.trades_booked) == 1
    assert import_flex(env, statement, now=exchange.now()).trades_booked == []
    assert holder_positions(env.ledger, env.chart) == {("Trend", "SPY"): D(10)}
    after = orders_by_ref(env)
    assert (after["SPY"].state, after["SPY"].filled) == ("filled", orders["SPY"].quantity)
    assert after["TLT"].state == "unknown"
    with read_connection(env.engine) as conn:
        open_subjects = {r.subject for r in conn.execute(sa.select(tables.tl_exception.c.subject).where(
            tables.tl_exception.c.kind == "order_outcome_unknown", tables.tl_exception.c.state != "resolved"))}
    assert open_subjects == {after["TLT"].order_ref}
    from tradeledger.engine.trust.exceptions import active_locks

    with read_connection(env.engine) as conn:  # what `status` shows: the stop, then its release
        assert set(active_locks(conn)) == {"TLT"} and "unknown outcome" in active_locks(conn)["TLT"]

    tl(home, "orders", "resolve", after["TLT"].id, "--never-sent")
    done = orders_by_ref(env)
    assert done["TLT"].state == "cancelled" and "never sent" in done["TLT"].reason
    with read_connection(env.engine) as conn:
        assert not conn.execute(sa.select(tables.tl_exception.c.id).where(
            tables.tl_exception.c.kind == "order_outcome_unknown", tables.tl_exception.c.state != "resolved")).all()
        assert active_locks(conn) == {}
    again = tl(home, "orders", "resolve", done["TLT"].id, "--never-sent", code=1)
    assert "not of unknown outcome" in again.stderr

    # Resolved, the contracts trade again: a new plan to 25 SPY and 20 TLT sends 15 and 20.
    now = exchange.now()
    lines = [TargetLine("Trend", "SPY", exchange.contract("SPY"), D(25), D(600)),
             TargetLine("Trend", "TLT", exchange.contract("TLT"), D(20), D(90))]
    record_plan(env, plan(2, lines, holder_positions(env.ledger, env.chart), Limits(), {}), now)
    sent = send_planned(env, session.broker, 2, now)
    assert len(sent.sent) == 2 and sent.unknown == []
    sync_fills(env, session.broker)
    assert holder_positions(env.ledger, env.chart) == {("Trend", "SPY"): D(25), ("Trend", "TLT"): D(20)}
    assert {p.contract.code: p.quantity for p in exchange.positions()} == {"SPY": D(25), "TLT": D(20)}


def test_the_same_day_rerun_still_finds_the_order_and_sends_the_rest(tmp_path, db_url):
    """Before midnight nothing changes: the order the broker has is recorded as sent, the one it
    never got is sent now; nothing is of unknown outcome."""
    home, env, session = make_world(tmp_path, db_url)
    killed_after_first_send(home, tmp_path)
    exchange = session.exchange()
    exchange.advance_clock(dt.timedelta(hours=8))  # 23:00 in New York: the same broker day
    report = send_planned(env, session.broker, 1, exchange.now())
    assert len(report.already_at_broker) == 1 and len(report.sent) == 1 and report.unknown == []
    sync_fills(env, session.broker)
    assert holder_positions(env.ledger, env.chart) == {("Trend", "SPY"): D(10), ("Trend", "TLT"): D(20)}
    assert len(broker_orders_ever(exchange)) == 2


@pytest.mark.parametrize("outcome", ["never_sent", "filled"])
def test_resolution_is_a_pure_rule(outcome):
    from tradeledger.engine.trading.unknown import judge_unreported, resolution
    from tradeledger.errors import UserError

    start = dt.datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    assert judge_unreported("planned", D(0), start - dt.timedelta(hours=1), start) == "unknown"
    assert judge_unreported("planned", D(0), start + dt.timedelta(minutes=4), start) == "unknown"  # clock margin
    assert judge_unreported("planned", D(0), start + dt.timedelta(minutes=6), start) == "never_sent"
    assert judge_unreported("planned", D(0), start - dt.timedelta(days=3), None) == "never_sent"
    assert judge_unreported("sent", D(0), start - dt.timedelta(hours=1), start) == "unknown"
    assert judge_unreported("sent", D(0), start + dt.timedelta(hours=1), start) == "sent"
    if outcome == "never_sent":
        assert resolution("unknown", D(5), D(0), outcome)[0] == "cancelled"
        with pytest.raises(UserError):
            resolution("unknown", D(5), D(2), outcome)  # something filled: it was sent
    else:
        assert resolution("unknown", D(5), D(5), outcome)[0] == "filled"
        assert resolution("unknown", D(5), D(2), outcome)[0] == "cancelled"  # 2 filled, the rest never will
        with pytest.raises(UserError):
            resolution("unknown", D(5), D(0), outcome)
    with pytest.raises(UserError):
        resolution("sent", D(5), D(0), outcome)


# -- the whole cycle, as a trader runs it --------------------------------------------------------------

CLI = [sys.executable, "-m", "tradeledger.cli"]


def run_cli(home, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "--home", str(home), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **(env or {})})


def test_the_cycle_killed_after_a_send_refuses_the_next_broker_day_and_says_what_to_do(tmp_path, db_url):
    """The demo's `cycle --approve` SIGKILLed right after the broker took its first order; the
    exchange's clock then passes midnight New York. The rerun of the same run sends nothing and
    exits non-zero naming each order of unknown outcome; a new run refuses their instruments and
    names the order and the command; `orders resolve` of one that never left lets its instrument
    trade again."""
    home = tmp_path / "home"
    init = ["init", "--demo", *([] if db_url.startswith("sqlite") else ["--db-url", db_url])]
    assert run_cli(home, *init).returncode == 0
    assert run_cli(home, "sim", "day-window", NY).returncode == 0
    assert run_cli(home, "cycle").returncode == 0
    killed = run_cli(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_KILL_AT": "placed:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    clock = dt.datetime.fromisoformat(run_cli(home, "sim", "clock", "show").stdout.strip())
    morning = day_start(clock + dt.timedelta(days=1), NY) + dt.timedelta(hours=1)
    assert run_cli(home, "sim", "clock", "set", morning.isoformat()).returncode == 0

    from tradeledger.engine.setup.environment import open_environment

    env = open_environment(home, "paper")
    try:
        exchange = env.exchange()
        before = len(broker_orders_ever(exchange))
        assert before == 1
        rerun = run_cli(home, "cycle", "--approve", "--run", 1)
        assert rerun.returncode == 1, rerun.stdout
        assert len(broker_orders_ever(exchange)) == before  # nothing sent twice, nothing sent at all
        unknown = [line for line in rerun.stderr.splitlines() if "outcome unknown" in line]
        with read_connection(env.engine) as conn:
            orders = conn.execute(sa.select(tables.broker_order).order_by(tables.broker_order.c.id)).all()
        assert {r.state for r in orders} == {"unknown"} and len(unknown) == len(orders) > 1
        locks = json.loads(run_cli(home, "status", "--json").stdout)["locks"]
        assert {r.contract for r in orders} <= set(locks)  # status shows the stop

        computed = json.loads(run_cli(home, "cycle", "--json").stdout)
        refused = {c["contract"]: c["refused"] for c in computed["preview"]["contracts"] if c["outcome"] == "refused"}
        assert set(refused) == {r.contract for r in orders}
        first, second = orders[0], orders[1]
        assert f"orders resolve {second.id} --never-sent" in refused[second.contract]

        resolved = run_cli(home, "orders", "resolve", second.id, "--never-sent")
        assert resolved.returncode == 0, resolved.stderr
        refused_first = run_cli(home, "orders", "resolve", first.id, "--filled")
        assert refused_first.returncode == 1 and len(refused_first.stderr.strip().splitlines()) == 1
        assert f"order {first.id} ({first.order_ref})" in refused_first.stderr
        executed = json.loads(run_cli(home, "cycle", "--approve", "--run", computed["run"], "--json").stdout)
        traded = {c["contract"] for c in executed["contracts"] if c["outcome"] == "order"}
        assert second.contract in traded and first.contract not in traded
        assert len(broker_orders_ever(exchange)) == before + len(executed["sent"])
    finally:
        env.engine.dispose()
