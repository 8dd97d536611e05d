"""A dividend the broker paid before the opening is in the opening's cash: never raised, never booked again.

The opening (engine/trust/opening.py) books the broker's cash as its snapshot read it, every dividend
paid until then included. Its cut-off (engine/trust/cutoff.py `holds_paid`) says which: on the
simulated broker exactly (the opening records the dividend lines its cash holds), otherwise a pay
date before the opening's day. Such a dividend is not raised as `unbooked_dividend` by
reconciliation, and once stored (`actions sync`, `import flex`) `book_due` books neither its ex-date
nor its pay-date entry: it says "in the opening's cash (not booked again)" and `actions list` shows
that state. A dividend with its ex-date before the opening and its pay date after it is booked, its
record holders counting the shares the opening brought in. Every test runs on SQLite and
PostgreSQL, through the CLI as the trader types it, reconciliation and booking run twice.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest

from tradeledger.engine.setup.environment import open_environment
from support import SPY_CORE_CONFIG, sim_world, tl

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, tzinfo=UTC)
HELD = "in the opening's cash (not booked again)"


@pytest.fixture
def home(tmp_path, db_url):
    """A sim environment with no opening yet, the exchange's clock at 2026-12-01 15:00 UTC, SPY at 600."""
    home = tmp_path / "home"
    env, session = sim_world(home, SPY_CORE_CONFIG, T0, db_url=db_url)
    session.close()
    env.engine.dispose()
    tl(home, "sim", "price", "SPY", "600")
    return home


def books(home) -> tuple[D, dict]:
    """The ledger's USD cash and its dividend income and withholding."""
    env = open_environment(home, "paper")
    try:
        income = {a: u for (a, c), u in env.ledger.income().items() if "Dividends" in a or "Withholding" in a}
        return env.ledger.balances().get((env.chart.cash, "USD"), D(0)), income
    finally:
        env.engine.dispose()


def broker_cash(home) -> D:
    said = json.loads(tl(home, "reconcile", "--json", code=None).stdout)
    return D(str(next(c for c in said["cash"] if c["currency"] == "USD")["broker"]))


def states(home) -> list[tuple[str, str]]:
    return [(a["ex_date"], a["state"]) for a in json.loads(tl(home, "actions", "list", "--json").stdout)]


def unbooked(home) -> list[str]:
    return [e["subject"] for e in json.loads(tl(home, "exceptions", "list", "--json").stdout)
            if e["kind"] == "corporate_action"]


def test_a_dividend_paid_before_the_opening_is_in_it_and_one_after_is_booked(home):
    """Bought on the 1st; 1.85 paid on the 2nd (a day before the opening), the opening on the 3rd at
    09:00, then 0.40 paid at 12:00 the same day (after it, across no day boundary)."""
    tl(home, "sim", "trade", "SPY", "10", "600")
    tl(home, "sim", "clock", "set", "2026-12-02T15:00")
    assert "on 10 shares" in tl(home, "sim", "dividend", "SPY", "1.85", "--withholding", "0.15").stdout
    tl(home, "sim", "clock", "set", "2026-12-03T09:00")
    first = tl(home, "reconcile")  # takes the opening: the broker's cash holds the 15.72 net
    assert f"{HELD}: dividend SPY 18.50 USD paid 2026-12-02" in first.stdout
    assert "unbooked dividend" not in first.stdout
    assert books(home)[0] == D("-5985.28")  # -6001 for the shares (1.00 commission), +15.72 in the opening
    tl(home, "sim", "clock", "set", "2026-12-03T12:00")
    tl(home, "sim", "dividend", "SPY", "0.40")  # ex and paid today, after the opening: 4.00
    for _ in range(2):
        broken = tl(home, "reconcile", code=1)
        assert "unbooked dividend SPY 4.00 USD paid 2026-12-03" in broken.stdout
        assert "unbooked dividend SPY 18.50" not in broken.stdout
    assert unbooked(home) == ["dividend SPY 2026-12-03"]
    assert json.loads(tl(home, "actions", "sync", "--json").stdout)["added"] == ["SPY:2026-12-02:div", "SPY:2026-12-03:div"]
    said = tl(home, "reconcile").stdout
    assert f"{HELD}: dividend SPY ex 2026-12-02 paid 2026-12-02: before the opening" in said
    assert "booked dividend SPY paid 2026-12-03" in said and "paid 2026-12-02\n" not in said
    for _ in range(2):  # run again: nothing booked, nothing said again, clean
        again = tl(home, "reconcile").stdout
        assert "booked dividend" not in again and HELD not in again.replace("paid 2026-12-02", "")
        assert json.loads(tl(home, "reconcile", "--json").stdout)["clean"] is True
        assert "nothing due" in tl(home, "actions", "book", "--date", "2099-01-01").stdout
    assert states(home) == [("2026-12-02", "in the opening's cash"), ("2026-12-03", "paid")]
    cash, income = books(home)
    assert cash == D("-5981.28") == broker_cash(home)
    assert income == {"Income:Dividends:Unattributed": D("-4.00")}  # the one after the opening, once
    assert unbooked(home) == []
    assert tl(home, "check").exit_code == 0


def test_a_dividend_paid_on_the_opening_day_before_it_is_in_it(home):
    """Paid at 08:00 on the 2nd, the opening at 09:00: the same day, before it (the simulated broker
    says so exactly); `actions book` run twice books nothing."""
    tl(home, "sim", "trade", "SPY", "10", "600")
    tl(home, "sim", "clock", "set", "2026-12-02T08:00")
    tl(home, "sim", "dividend", "SPY", "1.85", "--withholding", "0.15")
    tl(home, "sim", "clock", "set", "2026-12-02T09:00")
    tl(home, "reconcile")
    tl(home, "actions", "sync")
    first = tl(home, "actions", "book", "--date", "2026-12-02").stdout
    assert f"{HELD}: dividend SPY ex 2026-12-02 paid 2026-12-02" in first and "booked" not in first.replace(
        "not booked", "")
    assert "nothing due" in tl(home, "actions", "book", "--date", "2026-12-02").stdout
    for _ in range(2):
        assert json.loads(tl(home, "reconcile", "--json").stdout)["clean"] is True
    assert books(home) == (D("-5985.28"), {})
    assert states(home) == [("2026-12-02", "in the opening's cash")]


def test_a_dividend_ex_before_the_opening_and_paid_after_it_is_booked_to_the_shares_it_brought(home):
    """10 SPY arrived without an execution (held before tradeledger): ex on the 3rd, the opening on the
    3rd at 15:00, paid on the 5th. Its holders are the opening's shares, so the receivable and the
    cash are booked once; not booked, the pay date would leave the ledger 15.72 short for ever."""
    tl(home, "sim", "transfer-in", "SPY", "10", "--cost", "600")
    tl(home, "sim", "clock", "set", "2026-12-03T15:00")
    tl(home, "sim", "dividend", "SPY", "1.85", "--withholding", "0.15", "--pay-date", "2026-12-05")
    tl(home, "reconcile")  # the opening: 10 SPY, no cash
    tl(home, "actions", "sync")
    for _ in range(2):
        said = tl(home, "reconcile").stdout
    assert states(home) == [("2026-12-03", "receivable")]
    tl(home, "sim", "clock", "set", "2026-12-05T15:00")  # the broker pays 15.72
    said = tl(home, "reconcile").stdout
    assert "booked dividend SPY paid 2026-12-05" in said and HELD not in said
    for _ in range(2):
        assert json.loads(tl(home, "reconcile", "--json").stdout)["clean"] is True
    cash, income = books(home)
    assert cash == D("15.72") == broker_cash(home)
    assert income == {"Income:Dividends:Unattributed": D("-18.50"),
                      "Expenses:Taxes:Withholding:Unattributed": D("2.78")}
    assert states(home) == [("2026-12-03", "paid")]


def flex_statement(path) -> str:
    """IB's Flex statement of DU1234567: SPY paid 1.85 ex 2026-12-02 on 2026-12-04 (before the opening
    on the 5th) and 0.50 ex 2026-12-04 on 2026-12-08 (after it), each with 15% withheld."""
    rows = [("18.5", "Dividends", "9101", "20261204;202000", "555101", "20261202", "1.85 per Share (Ordinary Dividend)"),
            ("-2.78", "Withholding Tax", "9102", "20261204;202000", "555101", "", "1.85 per Share - US Tax"),
            ("5", "Dividends", "9103", "20261208;202000", "555102", "20261204", "0.50 per Share (Ordinary Dividend)"),
            ("-0.75", "Withholding Tax", "9104", "20261208;202000", "555102", "", "0.50 per Share - US Tax")]
    lines = "\n".join(
        f'<CashTransaction accountId="DU1234567" currency="USD" assetCategory="STK" symbol="SPY" '
        f'description="SPY(US78462F1030) Cash Dividend USD {text}" dateTime="{when}" amount="{amount}" type="{kind}" '
        f'transactionID="{tid}" actionID="{action}" ' + (f'exDate="{ex}" ' if ex else "") + f'reportDate="{when[:8]}" />'
        for amount, kind, tid, when, action, ex, text in rows)
    path.write_text(
        '<FlexQueryResponse queryName="tradeledger" type="AF">\n<FlexStatements count="1">\n'
        '<FlexStatement accountId="DU1234567" fromDate="20261201" toDate="20261208" period="LastMonth" '
        'whenGenerated="20261208;235959">\n<Trades>\n</Trades>\n<CashTransactions>\n'
        f'{lines}\n</CashTransactions>\n</FlexStatement>\n</FlexStatements>\n</FlexQueryResponse>\n')
    return str(path)


def test_a_flex_dividend_paid_before_the_opening_is_stored_not_booked(home, tmp_path):
    tl(home, "sim", "transfer-in", "SPY", "10", "--cost", "600")  # held since before tradeledger
    tl(home, "sim", "clock", "set", "2026-12-05T15:00")
    tl(home, "reconcile")  # the opening on the 5th: 10 SPY, no cash
    tl(home, "sim", "clock", "set", "2026-12-09T09:00")
    path = flex_statement(tmp_path / "s.xml")
    for i in range(2):  # imported twice: nothing booked twice, the one before said each time
        out = tl(home, "import", "flex", path).stdout
        assert f"{HELD}: dividend SPY ex 2026-12-02 paid 2026-12-04: before the opening" in out
        assert ("booked dividend SPY paid 2026-12-08" in out) == (i == 0)
        assert "dividend SPY ex 2026-12-02\n" not in out.replace(HELD, "")
    cash, income = books(home)
    assert cash == D("4.25")  # 5.00 - 0.75, the dividend after the opening, once
    assert income == {"Income:Dividends:Unattributed": D("-5.00"), "Expenses:Taxes:Withholding:Unattributed": D("0.75")}
    assert states(home) == [("2026-12-02", "in the opening's cash"), ("2026-12-04", "paid")]
    assert [e for e in json.loads(tl(home, "exceptions", "list", "--json").stdout)
            if e["kind"] == "statement_difference"] == []


def test_a_receivable_booked_before_the_opening_is_paid_into_its_equity(tmp_path, db_url):
    """The ex-date entry booked before the account had an opening (`actions book`), the broker paying
    before the opening is taken (by an order, not by reconciliation, which would book the pay first):
    the opening's cash holds the payment, so the receivable is paid against Equity:Opening-Balances,
    once, and the cash is the broker's."""
    from tradeledger.engine.setup.session import Session
    from tradeledger.engine.trust.opening import take_opening

    home = tmp_path / "home"
    env, session = sim_world(home, SPY_CORE_CONFIG, T0, db_url=db_url)
    session.close()
    env.engine.dispose()
    tl(home, "sim", "price", "SPY", "600")
    tl(home, "sim", "trade", "SPY", "10", "600")
    tl(home, "fills", "sync")  # the ledger holds the 10 before any opening
    tl(home, "sim", "clock", "set", "2026-12-02T15:00")
    tl(home, "sim", "dividend", "SPY", "1.85", "--withholding", "0.15", "--pay-date", "2026-12-03")
    tl(home, "actions", "sync")
    assert "booked dividend SPY ex 2026-12-02" in tl(home, "actions", "book", "--date", "2026-12-02").stdout
    tl(home, "sim", "clock", "set", "2026-12-03T15:00")  # the broker pays 15.72
    env = open_environment(home, "paper")
    session = Session(env)
    try:
        take_opening(env, session.broker, "submit")
    finally:
        session.close()
        env.engine.dispose()
    first = tl(home, "actions", "book", "--date", "2026-12-03").stdout
    assert f"{HELD}: dividend SPY ex 2026-12-02 paid 2026-12-03" in first
    assert "its receivable 15.72 USD paid into the opening's equity" in first
    assert "nothing due" in tl(home, "actions", "book", "--date", "2026-12-03").stdout
    assert json.loads(tl(home, "reconcile", "--json").stdout)["clean"] is True
    cash, income = books(home)
    assert cash == D("-5985.28") == broker_cash(home)
    assert income == {"Income:Dividends:Unattributed": D("-18.50"), "Expenses:Taxes:Withholding:Unattributed": D("2.78")}
    env = open_environment(home, "paper")
    try:
        assert env.ledger.balances().get((env.chart.dividends_receivable, "USD"), D(0)) == 0
    finally:
        env.engine.dispose()
