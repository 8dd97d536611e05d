"""IB's Flex statement: corporate-action records and option/futures expiries, booked once, linked to
what is booked, every difference an exception.

tests/data/flex_actions.xml (IB's documented Flex XML) for account DU1234567: TLT reverse-splits 1:10
on 2026-12-07 (84 old shares out as TLT.OLD, 8 new in, 364.00 cash in lieu for the account's 0.4 of a
share: 910 per new share); SPY's dividend of 1.85 (ex 2026-12-03, paid 2026-12-10) appears in the cash
transactions and again as a `CD` corporate action; SPY splits 2:1 on 2026-12-17 (10 shares added); a
spin-off on SPY (not booked: an exception); a SPY call expires worthless (tradeledger holds no
options: an exception). The simulated broker does the same, so reconciliation ends clean.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D
from pathlib import Path

import pytest

from tradeledger.engine.accounting.actions import import_actions_csv, list_actions
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trust.flex import import_flex
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

DATA = Path(__file__).parent / "data" / "flex_actions.xml"
UTC = dt.timezone.utc
NOW = dt.datetime(2027, 1, 2, 12, tzinfo=UTC)
CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[instruments.TLT]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.a]
instruments = { SPY = 1, TLT = 1 }

[strategies.b]
instruments = { TLT = 1 }
"""


@pytest.fixture
def world(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    exchange = session.exchange()
    exchange.set_clock(dt.datetime(2026, 12, 1, 15, tzinfo=UTC))
    contracts = {t: to_contract(session.config.instruments[t], t, "") for t in ("SPY", "TLT")}
    for contract in contracts.values():
        exchange.add_contract(contract)
    exchange.set_commission(D(0))
    yield env, session, contracts
    session.close()


def buy(session, contract, holder, qty, run_id, price):
    env = session
    session.exchange().set_price(contract.code, price)
    positions = holder_positions(env.ledger, env.chart)
    lines = [TargetLine(holder, contract.code, contract, positions.get((holder, contract.code), D(0)) + D(qty), price)]
    record_plan(env, plan(run_id, lines, positions, Limits(), {}), session.now())
    send_planned(env, session.broker, run_id, session.now())
    sync_fills(env, session.broker)


def the_month_at_the_broker(session, contracts):
    """What the statement reports, done by the simulated broker (and the trades before it)."""
    env, exchange = session, session.exchange()
    buy(session, contracts["TLT"], "A", 15, 1, D(90))
    exchange.set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=UTC))
    buy(session, contracts["TLT"], "A", 27, 2, D(91))
    buy(session, contracts["TLT"], "B", 34, 3, D(92))
    exchange.external_trade("TLT", D(8), D(90))
    buy(session, contracts["SPY"], "A", 10, 4, D(600))
    sync_fills(env, session.broker)
    exchange.set_clock(dt.datetime(2026, 12, 3, 9, tzinfo=UTC))
    exchange.declare_dividend("SPY", D("1.85"), D("0.15"), dt.date(2026, 12, 10))
    exchange.set_clock(dt.datetime(2026, 12, 7, 9, tzinfo=UTC))
    assert exchange.split("TLT", D(1), D(10), D(910)) == D(8)
    exchange.set_clock(dt.datetime(2026, 12, 10, 15, tzinfo=UTC))
    exchange.pay_due_dividends()
    exchange.set_clock(dt.datetime(2026, 12, 17, 9, tzinfo=UTC))
    exchange.split("SPY", D(2), D(1))


def open_exceptions(env):
    with read_connection(env.engine) as conn:
        return {(e["kind"], e["subject"]): e for e in list_exceptions(conn, "open")}


def test_splits_cash_in_lieu_and_a_cash_dividend_record_book_once_and_reconcile_clean(world, tmp_path):
    env, session, contracts = world
    the_month_at_the_broker(session, contracts)
    # SPY's split was imported from a file already: the statement links to it.
    (tmp_path / "a.csv").write_text("kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio\n"
                                    "split,SPY,2026-12-17,,,,,2:1\n")
    import_actions_csv(env, tmp_path / "a.csv")

    report = import_flex(env, DATA, now=NOW)
    assert report.differences == []
    assert report.corporate_actions == ["TLT:2026-12-07:split", "SPY:2026-12-03:div", "SPY:2026-12-17:split"]
    assert report.booked_actions == ["dividend SPY ex 2026-12-03", "dividend SPY paid 2026-12-10",
                                     "split TLT 1:10 on 2026-12-07", "split SPY 2:1 on 2026-12-17"]
    stored = {a["key"]: a for a in list_actions(env)}
    assert stored["TLT:2026-12-07:split"]["amount"] == "910" and stored["TLT:2026-12-07:split"]["source"] == "flex"
    assert stored["SPY:2026-12-17:split"]["source"] == "import"  # stored once, whatever the source
    # the spin-off and the option are not booked: each an exception that says what to do
    assert len(report.to_do) == 2
    exceptions = open_exceptions(env)
    assert "does not book it" in exceptions[("corporate_action", "spin-off SPY 2026-12-21")]["detail"]
    assert "does not hold options" in exceptions[("statement_difference",
                                                  "Expiration SPY   261218C00700000 2026-12-18")]["detail"]

    ledger, chart = env.ledger, env.chart
    held = {k: v for k, v in holder_positions(ledger, chart).items() if v}
    assert held == {("A", "TLT"): D(4), ("B", "TLT"): D(3), (None, "TLT"): D(1), ("A", "SPY"): D(20)}
    # A sold 0.2 new TLT of its oldest lot (cost 900) at 910, B 0.4 (cost 920); U bought 0.2 at 910
    income = ledger.income()
    assert income[("Income:Trading:A", "USD")] == D("-2.00")
    assert income[("Income:Trading:B", "USD")] == D("4.00")
    path = tmp_path / "check.beancount"
    export_beancount(ledger, path)
    assert check(ledger, path).ok
    result = reconcile_session(session, who="test")
    assert result.clean, result.as_json()

    before, count = ledger.count(), len(open_exceptions(env))
    again = import_flex(env, DATA, now=NOW)  # a replay books nothing and raises nothing new
    assert ledger.count() == before and len(open_exceptions(env)) == count
    assert again.booked_actions == [] and again.differences == []
    assert again.corporate_actions == report.corporate_actions


def test_a_statement_whose_split_differs_from_the_ledger_changes_nothing(world, tmp_path):
    env, session, contracts = world
    the_month_at_the_broker(session, contracts)
    changed = tmp_path / "changed.xml"
    changed.write_text(DATA.read_text().replace('symbol="TLT.OLD" description="TLT(US4642874329) SPLIT 1 FOR 10 '
                                                '(TLT.OLD, ISHARES 20+ YEAR TREASURY BO, US4642874329)" '
                                                'dateTime="20261206;202500" reportDate="20261207" quantity="-84"',
                                                'symbol="TLT.OLD" description="TLT(US4642874329) SPLIT 1 FOR 10 '
                                                '(TLT.OLD, ISHARES 20+ YEAR TREASURY BO, US4642874329)" '
                                                'dateTime="20261206;202500" reportDate="20261207" quantity="-90"')
                       .replace("SPLIT 2 FOR 1", "SPLIT 3 FOR 1")
                       .replace("CASH DIVIDEND USD 1.85 PER SHARE", "CASH DIVIDEND USD 1.95 PER SHARE"))
    report = import_flex(env, changed, now=NOW)
    assert len(report.differences) == 3, report.differences
    assert "took 90 old shares; the ledger's holders held 84" in report.differences[0]
    assert "1.95 USD per share" in report.differences[1]
    assert "leaves 20 shares; the ledger's 10 make 30" in report.differences[2]
    keys = {a["key"] for a in list_actions(env)}
    assert "TLT:2026-12-07:split" not in keys and "SPY:2026-12-17:split" not in keys
    held = {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}
    assert held[("A", "TLT")] == D(42)  # nothing split


def test_a_reverse_split_leaving_a_fraction_without_cash_in_lieu_waits_for_its_price(world, tmp_path):
    env, session, contracts = world
    the_month_at_the_broker(session, contracts)
    unpaid = tmp_path / "unpaid.xml"
    unpaid.write_text(DATA.read_text().replace('proceeds="364"', 'proceeds="0"'))
    report = import_flex(env, unpaid, now=NOW)
    assert any("shows no cash in lieu" in line and "split,TLT,2026-12-07,,PRICE,USD,,1:10" in line
               for line in report.to_do)
    assert not any("TLT" in line for line in report.booked_actions)
    # the trader adds the price: the split is completed (not refused as different), then booked once
    (tmp_path / "a.csv").write_text("kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio\n"
                                    "split,TLT,2026-12-07,,910,USD,,1:10\n")
    import_actions_csv(env, tmp_path / "a.csv")
    again = import_flex(env, unpaid, now=NOW)
    assert "split TLT 1:10 on 2026-12-07" in again.booked_actions
    assert reconcile_session(session, who="test").clean


EXPIRY = Path(__file__).parent / "data" / "flex_expiry.xml"
FUTURES = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8
force_days = 2

[strategies.a]
instruments = { MES = 1 }

[strategies.b]
instruments = { MES = 1 }

[sim]
commission_per_contract = "0"
"""
LAST = dt.date(2026, 12, 18)  # MESZ26's last trading day


@pytest.fixture
def futures(tmp_path):
    """A long 3 and B short 1 MESZ26 (the account: 2), settled at 6,010 the day before expiry; the broker
    then expires it at 6,020 (the position disappears, no execution)."""
    from tradeledger.engine.accounting.holdings import known_contracts
    from tradeledger.engine.setup.config import contract_of_code
    from tradeledger.engine.trading.marking import mark_day

    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=FUTURES)
    session = Session(env)
    exchange = session.exchange()
    z = contract_of_code(session.config.instruments["MES"], "MESZ26")
    t0 = dt.datetime(2026, 12, 1, 15, tzinfo=UTC)
    exchange.set_clock(t0)
    exchange.add_contract(z)
    exchange.set_price(z.code, D(6000))
    lines = [TargetLine("A", "MES", z, D(3), D(6000)), TargetLine("B", "MES", z, D(-1), D(6000))]
    record_plan(env, plan(1, lines, holder_positions(env.ledger, env.chart), Limits(),
                                                        {}), t0)
    send_planned(env, session.broker, 1, t0)
    sync_fills(env, session.broker)
    day = LAST - dt.timedelta(days=1)
    close = dt.datetime.combine(day, dt.time(21), tzinfo=UTC)
    exchange.set_clock(close)
    exchange.settle(z.code, D(6010), day)
    mark_day(env, known_contracts(env.ledger), day, {z.code: D(6010)}, close)
    exchange.set_clock(dt.datetime(2026, 12, 19, 1, tzinfo=UTC))
    exchange.expire(z.code, D(6020), LAST)
    yield env, session, z
    session.close()


def test_a_futures_expiry_not_yet_booked_is_booked_at_the_statements_price_once(futures, tmp_path):
    env, session, z = futures
    report = import_flex(env, EXPIRY, now=NOW)
    assert report.expiries_booked == ["MESZ26 at 6020"] and report.differences == [] and report.to_do == []
    income = env.ledger.income()
    assert income[("Income:Trading:A", "USD")] == D("-300.00")  # 3 x (6020 - 6000) x 5
    assert income[("Income:Trading:B", "USD")] == D("100.00")
    assert not any(code == z.code for (_, code), units in holder_positions(env.ledger, env.chart).items() if units)
    assert reconcile_session(session, who="test").clean  # the expiry path finds nothing left to book
    before = env.ledger.count()
    again = import_flex(env, EXPIRY, now=NOW)
    assert env.ledger.count() == before and again.expiries_booked == [] and again.expiries_known == 1
    path = tmp_path / "check.beancount"
    export_beancount(env.ledger, path)
    assert check(env.ledger, path).ok


def test_a_futures_expiry_booked_by_the_expiry_path_is_matched_not_booked_twice(futures, tmp_path):
    from tradeledger.engine.targets import prices

    env, session, z = futures
    parsed = prices.parse_prices_csv(f"date,contract,settle\n{LAST.isoformat()},{z.code},6020\n", session.config,
                                     "USD", "test")
    prices.store_rows(env, parsed, "test")
    assert reconcile_session(session, who="test").clean  # the expiry path books the final settlement
    before = env.ledger.count()
    report = import_flex(env, EXPIRY, now=NOW)
    assert env.ledger.count() == before
    assert report.expiries_known == 1 and report.expiries_booked == [] and report.differences == []
    # a statement with another final price is a difference, never a change
    other = tmp_path / "other.xml"
    other.write_text(EXPIRY.read_text().replace('tradePrice="6020"', 'tradePrice="6030"'))
    report = import_flex(env, other, now=NOW)
    assert env.ledger.count() == before
    assert report.differences == ["IB's statement: MESZ26 expired at 6030; the ledger booked its final settlement "
                                  "at 6020"]


def test_a_futures_expiry_without_a_price_is_an_exception_naming_the_row_to_import(futures, tmp_path):
    env, session, z = futures
    unpriced = tmp_path / "unpriced.xml"
    unpriced.write_text(EXPIRY.read_text().replace('tradePrice="6020" markPrice="6020"', 'tradePrice="0"'))
    before = env.ledger.count()
    report = import_flex(env, unpriced, now=NOW)
    assert env.ledger.count() == before and report.expiries_booked == []
    [todo] = report.to_do
    assert "2026-12-18,MESZ26,PRICE" in todo
    assert ("missing_final_settlement", "MESZ26") in open_exceptions(env)
    # the next statement has the price: booked once, the exception resolved
    report = import_flex(env, EXPIRY, now=NOW)
    assert report.expiries_booked == ["MESZ26 at 6020"]
    assert ("missing_final_settlement", "MESZ26") not in open_exceptions(env)


def test_import_flex_on_the_command_line_books_and_says_what_is_left(futures, tmp_path):
    import json

    from click.testing import CliRunner

    from tradeledger.cli import main

    env, _, _ = futures
    unpriced = tmp_path / "unpriced.xml"
    unpriced.write_text(EXPIRY.read_text().replace('tradePrice="6020" markPrice="6020"', 'tradePrice="0"'))
    result = CliRunner().invoke(main, ["--home", str(env.home), "import", "flex", str(unpriced)])
    assert result.exit_code == 1 and "not booked: IB's statement shows MESZ26 expired" in result.output
    result = CliRunner().invoke(main, ["--home", str(env.home), "import", "flex", str(EXPIRY), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["expiries_booked"] == ["MESZ26 at 6020"]
    result = CliRunner().invoke(main, ["--home", str(env.home), "import", "flex", str(EXPIRY)])
    assert result.exit_code == 0 and "futures expiries: 0 booked, 1 already booked" in result.output
