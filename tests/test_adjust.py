"""Maintenance tools on the simulated broker: each books one balanced, linked, reasoned entry.

MBT (multiplier 0.1) at CME; commission 1.00 per contract. After every scenario the ledger
balances, the beancount export checks clean, and where the broker agrees, reconciliation is clean.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.trust import adjust
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trading.fills import list_fills, sync_fills
from tradeledger.engine.accounting.holdings import marks
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.setup.session import Session
from tradeledger.engine.tables import adjustment
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
CONFIG = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1
exchange = "CME"

[strategies.trend]
instruments = { MBT = 1 }

[strategies.carry]
instruments = { MBT = 1 }
"""


@pytest.fixture
def world(tmp_path):
    home = tmp_path / "home"
    env = init_environment(home, "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    contract = to_contract(session.config.instruments["MBT"], "MBTZ26", "202612")
    exchange = session.exchange()
    exchange.set_clock(T0)
    exchange.add_contract(contract)
    exchange.set_price("MBTZ26", D(90000))
    yield home, env, session, contract
    session.close()


def cli(home, *args, input=None, ok=True):
    result = CliRunner().invoke(main, ["--home", str(home), *args], input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def buy_for(session, contract, holder, target, run_id):
    env = session
    lines = [TargetLine(holder, "MBT", contract, D(target), D(90000))]
    order_plan = plan(run_id, lines, holder_positions(env.ledger, env.chart), Limits(), {})
    record_plan(env, order_plan, session.now())
    send_planned(env, session.broker, run_id, session.now())
    sync_fills(env, session.broker)


def settle(session, contract, day, price):
    """The exchange settles (cash moves at the broker) and the ledger marks the same price."""
    env, exchange = session, session.exchange()
    exchange.set_clock(dt.datetime.combine(day, dt.time(21), tzinfo=UTC))
    exchange.set_price(contract.code, price)
    exchange.settle(contract.code, price, day)
    mark_day(env, {contract.code: contract}, day, {contract.code: price},
             dt.datetime.combine(day, dt.time(21), tzinfo=UTC))


def positions(env):
    return {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}


def assert_clean(env, tmp_path):
    path = tmp_path / "check.beancount"
    export_beancount(env.ledger, path)
    result = check(env.ledger, path)
    assert result.ok, result
    assert env.ledger.balances(prefix="Assets:Broker") is not None


def open_keys(env):
    with read_connection(env.engine) as conn:
        return {e["dedupe_key"] for e in list_exceptions(conn, "open")}


def reconcile_clean(session):
    from tradeledger.engine.trust.reconcile import reconcile_session

    result = reconcile_session(session, who="test")
    return result.clean, result.as_json()


def test_attribute_moves_the_fill_and_its_pnl_since_to_the_strategy(world, tmp_path):
    home, env, session, contract = world
    execution = session.exchange().external_trade(contract, D(2), D(90000))
    sync_fills(env, session.broker)
    key = execution.exec_id.rpartition(".")[0]
    assert positions(env) == {(None, "MBTZ26"): D(2)}
    assert f"unattributed_fill:DU1234567:{key}" in open_keys(env)
    settle(session, contract, T0.date(), D(90500))
    assert env.ledger.income()[("Income:Trading:Unattributed", "USD")] == D("-100.0")

    out = json.loads(cli(home, "adjust", "attribute", key, "--strategy", "trend", "--yes", "--json").output)
    assert out["booked"] and out["resolved"] == [f"unattributed_fill:DU1234567:{key}"]
    assert positions(env) == {("Trend", "MBTZ26"): D(2)}
    income = env.ledger.income()
    assert ("Income:Trading:Unattributed", "USD") not in income  # its +100 went back at the fill price
    assert ("Expenses:Commissions:Unattributed", "USD") not in income
    assert income[("Expenses:Commissions:Trend", "USD")] == D("2.00")
    with read_connection(env.engine) as conn:
        assert marks(conn) == {("Trend", "MBTZ26"): D(90000)}
        row = conn.execute(sa.select(adjustment)).one()
        fill_rows = list_fills(conn, env.ledger)
    txn = env.ledger.get(row.txn_id)
    assert (row.kind, row.subject, row.to_holder) == ("attribute", key, "Trend")
    assert dict(txn.meta)["reason"] == "attributed by hand" and f"fill-{key}" in txn.links
    assert (fill_rows[0]["strategy"], fill_rows[0]["attributed_to"]) == ("Trend", "Trend")  # where it went
    assert fill_rows[0]["order"] is None  # the booking's facts are not edited
    # The next settlement gives the strategy everything since the fill: 2 x 1000 x 0.1.
    settle(session, contract, dt.date(2026, 12, 2), D(91000))
    assert env.ledger.income()[("Income:Trading:Trend", "USD")] == D("-200.0")
    again = cli(home, "adjust", "attribute", key, "--strategy", "trend", "--yes", ok=False)
    assert again.exit_code == 1 and "already attributed" in again.output
    assert_clean(env, tmp_path)
    clean, result = reconcile_clean(session)
    assert clean, result


def test_adopt_and_transfer_at_the_current_mark(world, tmp_path):
    home, env, session, contract = world
    session.exchange().external_trade(contract, D(-3), D(90000))
    sync_fills(env, session.broker)
    cli(home, "adjust", "adopt", "MBTZ26", "3", "--strategy", "carry", "--yes")
    assert positions(env) == {("Carry", "MBTZ26"): D(-3)}
    assert "unattributed_position:DU1234567:MBTZ26" not in open_keys(env)
    cli(home, "adjust", "transfer", "MBTZ26", "1", "--from", "carry", "--to", "trend", "--reason", "rebalance",
        "--yes")
    assert positions(env) == {("Carry", "MBTZ26"): D(-2), ("Trend", "MBTZ26"): D(-1)}
    for args, why in [(("transfer", "MBTZ26", "5", "--from", "carry", "--to", "trend"), "insufficient position"),
                      (("transfer", "MBTZ26", "1", "--from", "nobody", "--to", "trend"), "unknown strategy"),
                      (("transfer", "ESZ26", "1", "--from", "carry", "--to", "trend"), "unknown contract"),
                      (("adopt", "MBTZ26", "1", "--strategy", "trend"), "insufficient position")]:
        result = cli(home, "adjust", *args, "--reason", "x", "--yes", ok=False)
        assert result.exit_code == 1 and why in result.output, result.output
    assert env.ledger.balances()[(env.chart.cash, "USD")] == D("-3.00")  # commissions only
    assert_clean(env, tmp_path)
    assert reconcile_clean(session)[0]


def test_position_closed_by_hand_then_manual_close_from_the_execution(world, tmp_path):
    home, env, session, contract = world
    buy_for(session, contract, "Trend", 2, 1)
    assert positions(env) == {("Trend", "MBTZ26"): D(2)}
    closed = session.exchange().external_trade(contract, D(-2), D(90200))  # at the broker's own screen
    result = cli(home, "adjust", "manual-close", "MBTZ26", "--strategy", "trend", "--exec", closed.exec_id, "--yes")
    assert "booked entry" in result.output
    assert positions(env) == {}
    income = env.ledger.income()
    assert income[("Income:Trading:Trend", "USD")] == D("-40.0")  # 2 x 200 x 0.1
    assert income[("Expenses:Commissions:Trend", "USD")] == D("4.00")
    assert not any(k.startswith("unattributed_fill") for k in open_keys(env))
    assert_clean(env, tmp_path)
    clean, detail = reconcile_clean(session)
    assert clean, detail


def test_manual_close_at_a_price_and_dry_run_declined(world, tmp_path):
    home, env, session, contract = world
    buy_for(session, contract, "Trend", 2, 1)
    declined = cli(home, "adjust", "manual-close", "MBTZ26", "--strategy", "trend", "--price", "90300", input="n\n")
    assert "dry run" in declined.output and "not booked" in declined.output
    assert positions(env) == {("Trend", "MBTZ26"): D(2)}
    cli(home, "adjust", "manual-close", "MBTZ26", "--strategy", "trend", "--price", "90300", input="y\n")
    assert positions(env) == {}
    assert env.ledger.income()[("Income:Trading:Trend", "USD")] == D("-60.0")
    both = cli(home, "adjust", "manual-close", "MBTZ26", "--strategy", "trend", "--yes", ok=False)
    assert both.exit_code != 0 and "--price or --exec" in both.output
    assert_clean(env, tmp_path)


def test_cash_and_reverse(world, tmp_path):
    home, env, session, contract = world
    cli(home, "adjust", "cash", "USD", "12.50", "--kind", "interest", "--reason", "November interest", "--yes")
    cli(home, "adjust", "cash", "USD", "-3", "--kind", "fee", "--reason", "data fee", "--yes")
    cli(home, "adjust", "cash", "EUR", "1000", "--kind", "deposit", "--reason", "funding", "--yes")
    balances = env.ledger.balances()
    assert balances[(env.chart.cash, "USD")] == D("9.50")
    assert balances[("Income:Adjustments", "USD")] == D("-12.50")
    assert balances[("Expenses:Adjustments", "USD")] == D("3")
    assert balances[("Equity:Deposits", "EUR")] == D("-1000")
    wrong = cli(home, "adjust", "cash", "USD", "-5", "--kind", "deposit", "--reason", "x", "--yes", ok=False)
    assert "deposits are positive" in wrong.output
    rows = json.loads(cli(home, "adjust", "list", "--json").output)
    interest = rows[0]["entry"]
    cli(home, "adjust", "reverse", str(interest), "--reason", "booked twice", "--yes")
    assert env.ledger.balances()[(env.chart.cash, "USD")] == D("-3")
    twice = cli(home, "adjust", "reverse", str(interest), "--reason", "again", "--yes", ok=False)
    assert "already reversed" in twice.output
    # A transfer is reversible while it is the last entry of its contract; marks come back.
    buy_for(session, contract, "Trend", 2, 1)
    with read_connection(env.engine) as conn:
        before = marks(conn)
    out = json.loads(cli(home, "adjust", "transfer", "MBTZ26", "1", "--from", "trend", "--to", "carry", "--price",
                         "90100", "--reason", "test", "--yes", "--json").output)
    cli(home, "adjust", "reverse", str(out["entry"]), "--reason", "wrong strategy", "--yes")
    assert positions(env) == {("Trend", "MBTZ26"): D(2)}
    with read_connection(env.engine) as conn:
        assert marks(conn) == before
    fill_entry = list_fills(read_connection(env.engine), env.ledger)[0]["entry"]
    refused = cli(home, "adjust", "reverse", str(fill_entry), "--reason", "x", "--yes", ok=False)
    assert "is a fill" in refused.output
    assert_clean(env, tmp_path)


def test_pure_builders_balance_and_refuse():
    from tradeledger.engine.accounting.entries import Holding
    from tradeledger.ledger.accounts import Chart
    from tradeledger.ledger.model import imbalance

    chart = Chart("DU1")
    k = to_contract(__import__("tradeledger.engine.setup.config", fromlist=["x"]).Instrument(
        "MBT", "future", "USD", D("0.1"), "CME", "MBT"), "MBTZ26", "202612")
    holdings = {None: Holding(D(2), D(90500)), "A": Holding(D(1), D(90000))}
    txn, after = adjust.transfer_entry(chart, k, holdings, None, "A", D(2), D(90000), T0, "attribute", "n", "k:1",
                                       (), ())
    assert imbalance(txn.postings) == {} and after["A"] == Holding(D(3), D(90000)) and after[None].position == 0
    with pytest.raises(adjust.AdjustError, match="insufficient"):
        adjust.transfer_entry(chart, k, holdings, None, "A", D(3), D(90000), T0, "adopt", "n", "k:2", (), ())
    with pytest.raises(adjust.AdjustError, match="0 books nothing"):
        adjust.cash_entry(chart, "USD", D(0), "fee", "r", T0, "k:3")


def test_a_commission_arriving_after_the_attribution_goes_to_the_strategy(world, tmp_path):
    home, env, session, contract = world
    exchange = session.exchange()
    exchange.fault_late_commission(n_polls=1)
    execution = exchange.external_trade(contract, D(2), D(90000))
    first = sync_fills(env, session.broker)
    assert first.pending_commissions == [execution.base_exec_id]
    cli(home, "adjust", "attribute", execution.base_exec_id, "--strategy", "trend", "--reason", "mine", "--yes")
    later = sync_fills(env, session.broker)
    assert later.commissions == [execution.base_exec_id]
    income = env.ledger.income()
    assert income[("Expenses:Commissions:Trend", "USD")] == D("2.00")  # 2 contracts x 1.00
    assert ("Expenses:Commissions:Unattributed", "USD") not in income
    assert_clean(env, tmp_path)
