"""Dividends and splits on shares held by two strategies and by the trader (unattributed).

Worked by hand: SPY at 600. Strategy A buys 10, strategy B buys 4, and the trader buys 6 at the
broker's own screen (unattributed). A dividend of 1.85 per share with 15% withheld, ex 2026-12-03,
paid 2026-12-10:

    A  10 x 1.85 = 18.50 gross, tax 2.78 (18.50 x 0.15 = 2.775 -> 2.78 half even), net 15.72
    B   4 x 1.85 =  7.40 gross, tax 1.11, net 6.29
    U   6 x 1.85 = 11.10 gross, tax 1.66 (1.665 -> 1.66), net 9.44
    cash at the pay date: 31.45

The broker withholds on the account as a whole (37.00 x 0.15 = 5.55), one cent more than the
per-holder rounding (5.55 vs 2.78 + 1.11 + 1.66 = 5.55): here they agree to the cent.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from tradeledger.engine.accounting.actions import book_due, import_actions_csv, list_actions
from tradeledger.engine.accounting.corporate import CorporateActionError, Split
from tradeledger.engine.accounting.entries import split_entry
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.export import check, export_beancount
from tradeledger.ledger.model import Cost

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.a]
instruments = { SPY = 1 }

[strategies.b]
instruments = { SPY = 1 }
"""


@pytest.fixture
def world(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    contract = to_contract(session.config.instruments["SPY"], "SPY", "")
    exchange = session.exchange()
    exchange.set_clock(T0)
    exchange.add_contract(contract)
    exchange.set_price("SPY", D(600))
    exchange.set_commission(D(0))
    yield env, session, contract
    session.close()


def buy(session, contract, holder, qty, run_id, price):
    env = session
    session.exchange().set_price(contract.code, price)
    lines = [TargetLine(holder, "SPY", contract, D(qty), price)]
    positions = holder_positions(env.ledger, env.chart)
    lines = [TargetLine(holder, "SPY", contract, positions.get((holder, "SPY"), D(0)) + D(qty), price)]
    order_plan = plan(run_id, lines, positions, Limits(), {})
    record_plan(env, order_plan, session.now())
    send_planned(env, session.broker, run_id, session.now())
    sync_fills(env, session.broker)


def holdings(env):
    return {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}


def assert_beancount_agrees(env, tmp_path):
    path = tmp_path / "check.beancount"
    export_beancount(env.ledger, path)
    result = check(env.ledger, path)
    assert result.ok, (result.errors, result.differences)


def reconcile_clean(session):
    from tradeledger.engine.trust.reconcile import reconcile_session

    result = reconcile_session(session, who="test")
    return result.clean, result.as_json()


def write(tmp_path, text):
    path = tmp_path / "actions.csv"
    path.write_text("kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio\n" + text)
    return path


def test_dividend_to_two_strategies_and_unattributed_with_withholding(world, tmp_path):
    env, session, spy = world
    buy(session, spy, "A", 10, 1, D(600))
    buy(session, spy, "B", 4, 2, D(600))
    session.exchange().external_trade("SPY", D(6), D(600))
    sync_fills(env, session.broker)
    assert holdings(env) == {("A", "SPY"): D(10), ("B", "SPY"): D(4), (None, "SPY"): D(6)}

    session.exchange().set_clock(dt.datetime(2026, 12, 3, 9, tzinfo=UTC))  # the ex-date, before trading
    assert session.exchange().declare_dividend("SPY", D("1.85"), D("0.15"), dt.date(2026, 12, 10)) == D(20)
    path = write(tmp_path, "dividend,SPY,2026-12-03,2026-12-10,1.85,USD,0.15,\n")
    assert import_actions_csv(env, path).added == ["SPY:2026-12-03:div"]
    assert import_actions_csv(env, path).unchanged == ["SPY:2026-12-03:div"]  # a replay stores nothing

    # Before the ex-date nothing is due.
    assert book_due(env, dt.date(2026, 12, 2)).booked == []
    report = book_due(env, dt.date(2026, 12, 5))
    assert report.booked == ["dividend SPY ex 2026-12-03"]
    income = env.ledger.income()
    assert income[("Income:Dividends:A", "USD")] == D("-18.50")
    assert income[("Income:Dividends:B", "USD")] == D("-7.40")
    assert income[("Income:Dividends:Unattributed", "USD")] == D("-11.10")
    assert income[("Expenses:Taxes:Withholding:A", "USD")] == D("2.78")
    assert income[("Expenses:Taxes:Withholding:B", "USD")] == D("1.11")
    assert income[("Expenses:Taxes:Withholding:Unattributed", "USD")] == D("1.66")
    chart = env.chart
    assert env.ledger.balances()[(chart.dividends_receivable, "USD")] == D("31.45")
    cash_before = env.ledger.balances()[(chart.cash, "USD")]

    # The broker pays at the pay date; the ledger turns the receivable into cash then, once.
    broker_cash = session.exchange().cash()["USD"]
    session.exchange().set_clock(dt.datetime(2026, 12, 10, 15, tzinfo=UTC))  # the broker pays as its clock gets there
    assert session.exchange().cash()["USD"] - broker_cash == D("31.45")
    assert session.exchange().pay_due_dividends() == 0  # once
    assert book_due(env, dt.date(2026, 12, 10)).booked == ["dividend SPY paid 2026-12-10"]
    assert book_due(env, dt.date(2026, 12, 31)).booked == []  # nothing twice
    balances = env.ledger.balances()
    assert balances[(chart.cash, "USD")] - cash_before == D("31.45")
    assert (chart.dividends_receivable, "USD") not in balances
    assert [a["state"] for a in list_actions(env)] == ["paid"]
    assert_beancount_agrees(env, tmp_path)
    clean, result = reconcile_clean(session)
    assert clean, result


def test_shares_bought_on_the_ex_date_get_no_dividend(world, tmp_path):
    env, session, spy = world
    session.exchange().set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=UTC))
    buy(session, spy, "A", 10, 1, D(600))
    session.exchange().set_clock(dt.datetime(2026, 12, 3, 15, tzinfo=UTC))
    buy(session, spy, "B", 5, 2, D(600))  # bought on the ex-date: not a record holder
    import_actions_csv(env, write(tmp_path, "dividend,SPY,2026-12-03,2026-12-04,1,USD,,\n"))
    book_due(env, dt.date(2026, 12, 4))
    income = env.ledger.income()
    assert income[("Income:Dividends:A", "USD")] == D("-10")
    assert ("Income:Dividends:B", "USD") not in income
    assert_beancount_agrees(env, tmp_path)


def test_a_changed_action_is_refused_not_replaced(world, tmp_path):
    env, _, _ = world
    import_actions_csv(env, write(tmp_path, "dividend,SPY,2026-12-03,2026-12-10,1.85,USD,0.15,\n"))
    with pytest.raises(CorporateActionError, match="other figures"):
        import_actions_csv(env, write(tmp_path, "dividend,SPY,2026-12-03,2026-12-10,1.95,USD,0.15,\n"))


def test_a_bad_file_names_every_bad_line(world, tmp_path):
    from tradeledger.engine.targets.prices import CsvImportError

    env, _, _ = world
    path = write(tmp_path, "dividend,QQQ,2026-12-03,2026-12-10,1,USD,,\n"
                           "dividend,SPY,2026-12-03,2026-12-01,1,USD,,\n"
                           "split,SPY,2026-12-03,,,,,2:2\n"
                           "dividend,SPY,2026-12-03,2026-12-10,1,USD,1.5,\n")
    with pytest.raises(CsvImportError) as info:
        import_actions_csv(env, path)
    lines = [line for line, _ in info.value.problems]
    assert lines == [2, 3, 4, 5]
    assert list_actions(env) == []


def test_split_2_for_1_and_reverse_1_for_10_on_lots_of_different_costs(world, tmp_path):
    env, session, spy = world
    session.exchange().set_clock(dt.datetime(2026, 12, 1, 15, tzinfo=UTC))
    buy(session, spy, "A", 10, 1, D("600.10"))
    session.exchange().set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=UTC))
    buy(session, spy, "A", 30, 2, D("590.30"))
    buy(session, spy, "B", 20, 3, D("595"))
    cost_before = sum(c.number * u for c, u in env.ledger.lots(env.chart.holdings("A"), "SPY"))

    import_actions_csv(env, write(tmp_path, "split,SPY,2026-12-03,,,,,2:1\n"))
    session.exchange().set_clock(dt.datetime(2026, 12, 3, 9, tzinfo=UTC))
    session.exchange().split("SPY", D(2), D(1))
    assert book_due(env, dt.date(2026, 12, 3)).booked == ["split SPY 2:1 on 2026-12-03"]
    lots = env.ledger.lots(env.chart.holdings("A"), "SPY")
    assert [(c.number, u) for c, u in lots] == [(D("300.05"), D(20)), (D("295.15"), D(60))]
    assert sum(c.number * u for c, u in lots) == cost_before  # the same total cost
    assert holdings(env) == {("A", "SPY"): D(80), ("B", "SPY"): D(40)}
    assert_beancount_agrees(env, tmp_path)
    clean, result = reconcile_clean(session)
    assert clean, result

    # Then a 1:10 reverse split: 80 -> 8 and 40 -> 4; the costs x10.
    import_actions_csv(env, write(tmp_path, "split,SPY,2026-12-07,,,,,1:10\n"))
    session.exchange().set_clock(dt.datetime(2026, 12, 7, 9, tzinfo=UTC))
    session.exchange().split("SPY", D(1), D(10))
    book_due(env, dt.date(2026, 12, 7))
    lots = env.ledger.lots(env.chart.holdings("A"), "SPY")
    assert [(c.number, u) for c, u in lots] == [(D("3000.5"), D(2)), (D("2951.5"), D(6))]
    assert holdings(env) == {("A", "SPY"): D(8), ("B", "SPY"): D(4)}
    assert_beancount_agrees(env, tmp_path)
    clean, result = reconcile_clean(session)
    assert clean, result

    # Selling after the split realizes against the split-adjusted cost, FIFO.
    session.exchange().set_clock(dt.datetime(2026, 12, 8, 15, tzinfo=UTC))
    buy(session, spy, "A", -3, 4, D(3100))
    assert env.ledger.income()[("Income:Trading:A", "USD")] == -(D(2) * (3100 - D("3000.5")) + (3100 - D("2951.5")))
    assert_beancount_agrees(env, tmp_path)


def test_split_refused_when_the_ticker_traded_after_its_date(world, tmp_path):
    env, session, spy = world
    session.exchange().set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=UTC))
    buy(session, spy, "A", 10, 1, D(600))  # the opening, on the 2nd: a split after it is the ledger's to book
    session.exchange().set_clock(dt.datetime(2026, 12, 4, 15, tzinfo=UTC))
    buy(session, spy, "A", 10, 2, D(600))
    import_actions_csv(env, write(tmp_path, "split,SPY,2026-12-03,,,,,2:1\n"))
    report = book_due(env, dt.date(2026, 12, 5))
    assert report.booked == [] and "traded at or after the split date" in report.refused[0]


def test_split_leaving_a_fraction_is_refused():
    chart = Chart("DU1234567")
    lots = {"A": [(Cost(D(600), "USD", dt.date(2026, 12, 1), "x"), D(15))]}
    with pytest.raises(CorporateActionError, match="a fraction"):
        split_entry(chart, Split("SPY", dt.date(2026, 12, 3), D(1), D(10)), lots,
                    dt.datetime(2026, 12, 3, tzinfo=UTC))


def test_a_dividend_the_broker_paid_but_nobody_imported_is_a_typed_break_until_imported(world, tmp_path):
    from tradeledger.engine.trust.exceptions import list_exceptions
    from tradeledger.ledger.db import read_connection

    env, session, spy = world
    buy(session, spy, "A", 10, 1, D(600))
    session.exchange().set_clock(dt.datetime(2026, 12, 3, 9, tzinfo=UTC))
    session.exchange().declare_dividend("SPY", D("1.85"), D("0.15"), dt.date(2026, 12, 10))
    session.exchange().set_clock(dt.datetime(2026, 12, 10, 15, tzinfo=UTC))
    session.exchange().pay_due_dividends()
    from tradeledger.engine.trust.reconcile import reconcile_session

    result = reconcile_session(session, who="test")
    assert not result.clean  # cash differs by the 15.72 the ledger has not booked
    assert "unbooked dividend SPY 18.50 USD paid 2026-12-10" in result.notes
    with read_connection(env.engine) as conn:
        open_ = {e["dedupe_key"]: e["detail"] for e in list_exceptions(conn, "open")}
    assert "import it" in open_["unbooked_dividend:DU1234567:SPY:2026-12-10"]

    import_actions_csv(env, write(tmp_path, "dividend,SPY,2026-12-03,2026-12-10,1.85,USD,0.15,\n"))
    clean, result = reconcile_clean(session)  # reconciliation books what is due, then compares
    assert clean, result
    assert env.ledger.income()[("Income:Dividends:A", "USD")] == D("-18.50")
    assert_beancount_agrees(env, tmp_path)


def test_withholding_adds_up_to_the_brokers_account_level_figure(world, tmp_path):
    """A and B hold 10 SPY each; 0.33 per share, 15% withheld. Each holder's tax alone is 3.30 x 0.15
    = 0.495 -> 0.50 (half even), 1.00 in all; the broker withholds on the account: 6.60 x 0.15 = 0.99.
    The ledger splits the 0.99 by largest remainder (a tie: A first), so cash agrees to the cent."""
    env, session, spy = world
    buy(session, spy, "A", 10, 1, D(600))
    buy(session, spy, "B", 10, 2, D(600))
    session.exchange().set_clock(dt.datetime(2026, 12, 3, 9, tzinfo=UTC))
    session.exchange().declare_dividend("SPY", D("0.33"), D("0.15"), dt.date(2026, 12, 3))
    import_actions_csv(env, write(tmp_path, "dividend,SPY,2026-12-03,2026-12-03,0.33,USD,0.15,\n"))
    book_due(env, dt.date(2026, 12, 3))
    income = env.ledger.income()
    assert income[("Expenses:Taxes:Withholding:A", "USD")] == D("0.50")
    assert income[("Expenses:Taxes:Withholding:B", "USD")] == D("0.49")
    assert_beancount_agrees(env, tmp_path)
    clean, result = reconcile_clean(session)
    assert clean, result


def test_reverse_split_with_cash_in_lieu_on_lots_of_different_costs(world, tmp_path):
    """A holds 15 SPY at 600.10 and 27 at 590.30, B 34 at 595, the trader 8 at 600 (unattributed). A
    1:10 reverse split, cash in lieu 6100 per new share:

        A  1.5 + 2.7 = 4.2 new shares   keeps 4, sells 0.2 of its oldest lot (cost 6001): +1220, P&L 19.80
        B  3.4                          keeps 3, sells 0.4 (cost 5950): +2440, P&L 60
        U  0.8                          keeps 1: the largest fraction gets the share the fractions make,
                                        buying 0.2 from the others at 6100: -1220
        account 84 -> 8.4: the broker keeps 8 and pays 0.4 x 6100 = 2440 = 1220 + 2440 - 1220.
    """
    from tradeledger.engine.accounting.actions import sync_from_broker

    env, session, spy = world
    exchange = session.exchange()
    exchange.set_clock(dt.datetime(2026, 12, 1, 15, tzinfo=UTC))
    buy(session, spy, "A", 15, 1, D("600.10"))
    exchange.set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=UTC))
    buy(session, spy, "A", 27, 2, D("590.30"))
    buy(session, spy, "B", 34, 3, D("595"))
    exchange.external_trade("SPY", D(8), D(600))
    sync_fills(env, session.broker)
    cash_before = env.ledger.balances()[(env.chart.cash, "USD")]

    exchange.set_clock(dt.datetime(2026, 12, 7, 9, tzinfo=UTC))
    assert exchange.split("SPY", D(1), D(10), D(6100)) == D(8)
    assert sync_from_broker(env, session.broker).added == ["SPY:2026-12-07:split"]
    # The same split from a file, with the same price: stored once whatever the source; another price refused.
    assert import_actions_csv(env, write(tmp_path, "split,SPY,2026-12-07,,6100,USD,,1:10\n")).unchanged == [
        "SPY:2026-12-07:split"]
    with pytest.raises(CorporateActionError, match="other figures"):
        import_actions_csv(env, write(tmp_path, "split,SPY,2026-12-07,,6000,USD,,1:10\n"))
    assert book_due(env, dt.date(2026, 12, 7)).booked == ["split SPY 1:10 on 2026-12-07"]
    assert book_due(env, dt.date(2026, 12, 8)).booked == []  # once

    ledger, chart = env.ledger, env.chart
    assert holdings(env) == {("A", "SPY"): D(4), ("B", "SPY"): D(3), (None, "SPY"): D(1)}
    lots = {h: [(c.number, u) for c, u in ledger.lots(chart.holdings(h), "SPY")] for h in ("A", "B", None)}
    assert lots["A"] == [(D("6001"), D("1.3")), (D("5903"), D("2.7"))]
    assert lots["B"] == [(D("5950"), D("3"))]
    assert sorted(lots[None]) == [(D("6000"), D("0.8")), (D("6100"), D("0.2"))]
    income = ledger.income()
    assert income[("Income:Trading:A", "USD")] == D("-19.80")
    assert income[("Income:Trading:B", "USD")] == D("-60")
    assert ("Income:Trading:Unattributed", "USD") not in income
    assert ledger.balances()[(chart.cash, "USD")] - cash_before == D(2440)
    assert_beancount_agrees(env, tmp_path)
    clean, result = reconcile_clean(session)
    assert clean, result


def test_cash_in_lieu_parts_add_up_to_the_brokers_cents():
    """1:10 on A 13, B 24, U 7 (1.3, 2.4, 0.7 new): the account's 4.4 keeps 4; U rounds up. Cash in lieu
    33.333: A +9.9999, B +13.3332, U -9.9999, the broker pays 0.4 x 33.333 = 13.3332 -> 13.33; the parts in
    cents by largest remainder: A 10.00, B 13.33, U -10.00; the sub-cent rest is trading income."""
    from tradeledger.engine.accounting.entries import split_postings

    chart = Chart("DU1234567")
    day = dt.date(2026, 12, 1)
    lots = {h: [(Cost(D(100), "USD", day, h or "u"), D(n))] for h, n in (("A", 13), ("B", 24), (None, 7))}
    postings = split_postings(chart, "SPY", D(1), D(10), lots, dt.date(2026, 12, 7), D("33.333"), "USD")
    cash = {p.account: p.units for p in postings if p.account == chart.cash}
    assert sum(p.units for p in postings if p.account == chart.cash) == D("13.33")
    assert [p.units for p in postings if p.account == chart.cash] == [D("-10.00"), D("10.00"), D("13.33")]
    assert cash and sum(p.units * (p.cost.number if p.cost else 1) for p in postings) == 0  # balanced
    units = {}
    for p in postings:
        if p.commodity == "SPY":
            units[p.account] = units.get(p.account, D(0)) + p.units
    assert units == {chart.holdings("A"): D(1) - 13, chart.holdings("B"): D(2) - 24, chart.holdings(None): D(1) - 7}


def test_a_split_leaving_whole_shares_across_holders_moves_the_fraction_inside():
    """A and B hold 15 each; 1:10 leaves 1.5 each, 3 for the account (no cash at the broker): A (a tie,
    holder order) keeps 2, buying B's half share at the cash-in-lieu price; without a price it is refused."""
    from tradeledger.engine.accounting.entries import split_postings

    chart = Chart("DU1234567")
    day = dt.date(2026, 12, 1)
    lots = {h: [(Cost(D(100), "USD", day, h), D(15))] for h in ("A", "B")}
    with pytest.raises(CorporateActionError, match="cash-in-lieu price"):
        split_postings(chart, "SPY", D(1), D(10), lots, dt.date(2026, 12, 7))
    postings = split_postings(chart, "SPY", D(1), D(10), lots, dt.date(2026, 12, 7), D(1010), "USD")
    assert sum(p.units for p in postings if p.account == chart.cash) == 0
    held = {h: sum(p.units for p in postings if p.account == chart.holdings(h)) + 15 for h in ("A", "B")}
    assert held == {"A": D(2), "B": D(1)}
