"""IB's Flex statement as the record: a missed trade, a dividend with withholding, interest, a fee
and a deposit, booked (or proposed) exactly once; a replay books nothing; a difference is raised.

The statement (tests/data/flex_december.xml, in IB's documented Flex XML format) is for account
DU1234567: the trader bought 10 SPY at 600 at 10:30 New York time on 2026-12-02 (commission 1.00)
and the daemon never saw it; SPY paid 1.85 per share ex 2026-12-03 (18.50 gross, 2.78 withheld,
15.72 net on 2026-12-10); the account earned 12.34 of interest and paid a 1.50 market data fee;
5,000 USD was deposited on 2026-12-15.
"""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal as D
from pathlib import Path

import pytest

from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trust.flex import FlexError, import_flex
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

DATA = Path(__file__).parent / "data" / "flex_december.xml"
CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.core]
instruments = { SPY = 1 }
capital_share = 0.75

[strategies.satellite]
instruments = { SPY = 1 }
capital_share = 0.25

[account_cash]
interest = "capital"
"""
NOW = dt.datetime(2027, 1, 2, 12, tzinfo=dt.timezone.utc)


@pytest.fixture
def env(tmp_path):
    return init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)


def open_exceptions(env):
    with read_connection(env.engine) as conn:
        return {(e["kind"], e["subject"]): e["detail"] for e in list_exceptions(conn, "open")}


def test_flex_statement_books_once_and_proposes_the_deposit(env, tmp_path):
    report = import_flex(env, DATA, now=NOW)
    assert report.trades_booked == ["0000f1a2.6a000001.01"]
    assert report.dividends == ["SPY:2026-12-03:div"]
    assert sorted(report.account_cash_booked) == ["fee -1.50 USD 2026-12-03", "interest 12.34 USD 2026-12-03"]
    assert report.booked_actions == ["dividend SPY ex 2026-12-03", "dividend SPY paid 2026-12-10"]
    assert report.differences == []
    assert report.proposed == ['tradeledger adjust cash USD 5000 --kind deposit --date 2026-12-15 --ref 9006 --reason "CASH RECEIPTS / '
                               'ELECTRONIC FUND TRANSFERS (2026-12-15, IB flex-9006)"']

    ledger, chart = env.ledger, env.chart
    assert ledger.positions() == {(chart.unattributed, "SPY"): D(10)}
    income = ledger.income()
    assert income[("Income:Dividends:Unattributed", "USD")] == D("-18.50")
    assert income[("Expenses:Taxes:Withholding:Unattributed", "USD")] == D("2.78")
    # interest by capital share 0.75 / 0.25 in whole cents: 9.255 -> 9.26 and 3.085 -> 3.08 (largest remainder)
    assert income[("Income:Interest:Core", "USD")] + income[("Income:Interest:Satellite", "USD")] == D("-12.34")
    assert income[("Income:Interest:Core", "USD")] == D("-9.26")
    assert income[("Expenses:Fees:Account", "USD")] == D("1.50")  # fees: not allocated (the default)
    # cash: -6000 shares - 1 commission + 15.72 dividend + 12.34 interest - 1.50 fee
    assert ledger.balances()[(chart.cash, "USD")] == D("-6000") - 1 + D("15.72") + D("12.34") - D("1.50")
    exceptions = open_exceptions(env)
    assert ("cash_movement", "USD 5000 2026-12-15") in exceptions
    assert ("unattributed_fill", "SPY 0000f1a2.6a000001.01") in exceptions

    before = ledger.count()
    again = import_flex(env, DATA, now=NOW)  # a replay books nothing twice
    assert ledger.count() == before
    assert again.trades_booked == [] and again.trades_known == 1
    assert again.account_cash_booked == [] and again.account_cash_known == 2
    assert again.booked_actions == [] and again.differences == []

    path = tmp_path / "check.beancount"
    export_beancount(ledger, path)
    assert check(ledger, path).ok


def test_a_statement_that_disagrees_raises_a_difference_and_changes_nothing(env, tmp_path):
    import_flex(env, DATA, now=NOW)
    changed = tmp_path / "changed.xml"
    changed.write_text(DATA.read_text().replace('tradePrice="600"', 'tradePrice="601"')
                       .replace("USD 1.85 per Share (Ordinary", "USD 1.95 per Share (Ordinary"))
    before = env.ledger.count()
    report = import_flex(env, changed, now=NOW)
    assert env.ledger.count() == before
    assert len(report.differences) == 2
    kinds = {k for k, _ in open_exceptions(env)}
    assert "statement_difference" in kinds


def test_another_accounts_statement_is_refused(env, tmp_path):
    other = tmp_path / "other.xml"
    other.write_text(DATA.read_text().replace("DU1234567", "DU7654321"))
    with pytest.raises(FlexError, match="DU7654321's statement"):
        import_flex(env, other, now=NOW)
    assert env.ledger.positions() == {} and env.ledger.income() == {}


def test_a_file_that_is_not_a_statement_is_refused(env, tmp_path):
    bad = tmp_path / "bad.xml"
    shutil.copy(Path(__file__), bad)
    with pytest.raises(FlexError, match="not a Flex statement"):
        import_flex(env, bad, now=NOW)


def test_a_dividend_imported_at_a_round_rate_links_with_the_statements_tax(env, tmp_path):
    """A file says 15% withheld; IB's statement says 2.78 of 18.50 (not 0.15 exactly): the same dividend,
    since 18.50 x 0.15 = 2.775 -> 2.78 is IB's account-level figure. Linked, not a difference."""
    from tradeledger.engine.accounting.actions import import_actions_csv, list_actions

    (tmp_path / "a.csv").write_text("kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio\n"
                                    "dividend,SPY,2026-12-03,2026-12-10,1.85,USD,0.15,\n")
    import_actions_csv(env, tmp_path / "a.csv")
    report = import_flex(env, DATA, now=NOW)
    assert report.differences == [] and report.dividends == ["SPY:2026-12-03:div"]
    [action] = list_actions(env)
    assert action["source"] == "import" and action["withholding"] == "0.15" and action["state"] == "paid"
    assert env.ledger.income()[("Expenses:Taxes:Withholding:Unattributed", "USD")] == D("2.78")


def test_a_deposit_of_the_same_amount_last_month_does_not_hide_this_months(env, tmp_path):
    """5,000 a month: November's deposit (booked on its day) is not December's, which the statement
    shows on 2026-12-15: it is proposed. Once booked (on its day, or the day it was found after it)
    a replay proposes nothing."""
    from click.testing import CliRunner

    from tradeledger.cli import main

    def adjust(*args):
        result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "adjust", "cash", "USD", "5000", "--kind",
                                           "deposit", "--reason", "monthly", "--yes", *args])
        assert result.exit_code == 0, result.output

    # the statement's days are fixed (December 2026): the test's world sets the exchange's clock,
    # which `sim clock set` moves only forward from the machine's (it refused 2027-01-02 from that day)
    session = Session(env)
    session.exchange().set_clock(NOW)
    session.close()
    adjust("--date", "2026-11-16")
    report = import_flex(env, DATA, now=NOW)
    assert [p.split(" --reason")[0] for p in report.proposed] == \
        ["tradeledger adjust cash USD 5000 --kind deposit --date 2026-12-15 --ref 9006"]  # was [] : November's hid it
    adjust()  # booked the day it was found (after the statement's date)
    assert import_flex(env, DATA, now=NOW).proposed == []
