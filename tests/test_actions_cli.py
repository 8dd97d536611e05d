"""The corporate-actions commands as a user drives them, on the simulated broker: a dividend the
broker declares, seen by reconciliation, synced from the broker, booked once; interest entered twice
books once; refusals exit non-zero with one line."""

from __future__ import annotations

import json
from decimal import Decimal as D

from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.setup.environment import open_environment
from support import SPY_CORE_CONFIG

CONFIG = SPY_CORE_CONFIG


def run(home, *args, ok=True):
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_dividend_from_the_broker_to_the_books(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    with open(home / "paper" / "config.toml", "a") as f:
        f.write(CONFIG)
    env = open_environment(home, "paper")
    from tradeledger.engine.setup.session import Session
    import datetime as dt

    session = Session(env)
    session.exchange().set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=dt.timezone.utc))
    session.close()
    run(home, "sim", "price", "SPY", "600")
    run(home, "sim", "trade", "SPY", "10", "600")
    run(home, "fills", "sync")
    out = run(home, "sim", "dividend", "SPY", "1.85", "--withholding", "0.15").output
    assert "ex-dividend 1.85 on 0 shares" in out  # bought on the ex-date: no dividend
    session = Session(env)
    session.exchange().set_clock(dt.datetime(2026, 12, 3, 15, tzinfo=dt.timezone.utc))
    session.close()
    out = run(home, "sim", "dividend", "SPY", "1.85", "--withholding", "0.15").output
    assert "ex-dividend 1.85 on 10 shares" in out
    broken = run(home, "reconcile", ok=False)
    assert broken.exit_code == 1 and "unbooked dividend SPY 18.50 USD" in broken.output
    assert json.loads(run(home, "actions", "sync", "--json").output)["added"]
    assert json.loads(run(home, "actions", "sync", "--json").output)["unchanged"]  # once
    clean = run(home, "reconcile")
    assert "booked dividend SPY" in clean.output
    listed = json.loads(run(home, "actions", "list", "--json").output)
    assert [(a["ticker"], a["ex_date"], a["state"], a["source"]) for a in listed] == [
        ("SPY", "2026-12-02", "paid", "sim"), ("SPY", "2026-12-03", "paid", "sim")]
    assert env.ledger.income()[("Income:Dividends:Unattributed", "USD")] == D("-18.50")  # once, for the 10 held
    assert "nothing due" in run(home, "actions", "book", "--date", "2099-01-01").output
    assert run(home, "check").exit_code == 0


def test_interest_entered_twice_books_once_and_bad_input_is_one_line(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    args = ("actions", "interest", "12.34", "usd", "--date", "2026-12-03", "--reason", "USD credit interest Nov")
    first = json.loads(run(home, *args, "--json").output)
    second = json.loads(run(home, *args, "--json").output)
    assert first["booked"] is True and second["booked"] is False and first["entry"] == second["entry"]
    env = open_environment(home, "paper")
    assert env.ledger.income() == {("Income:Interest:Account", "USD"): D("-12.34")}
    bad = run(home, "actions", "fee", "abc", "USD", "--date", "2026-12-03", "--reason", "x", ok=False)
    assert bad.exit_code != 0 and "not a number" in bad.output.lower() and "Traceback" not in bad.output
    bad = run(home, "actions", "import", str(tmp_path / "missing.csv"), ok=False)
    assert bad.exit_code != 0


def test_adopting_shares_defaults_to_their_latest_close(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    with open(home / "paper" / "config.toml", "a") as f:
        f.write(CONFIG)
    (tmp_path / "closes.csv").write_text("date,instrument,close\n2026-11-27,SPY,598.5\n2026-11-30,SPY,610.25\n")
    run(home, "data", "import", str(tmp_path / "closes.csv"))
    run(home, "sim", "price", "SPY", "600")
    run(home, "sim", "trade", "SPY", "5", "600")
    run(home, "fills", "sync")
    out = json.loads(run(home, "adjust", "adopt", "SPY", "3", "--strategy", "core", "--reason", "mine", "--yes",
                         "--json").output)
    assert D(out["price"]) == D("610.25")  # no mark for shares, no --price: the latest close
    env = open_environment(home, "paper")
    assert env.ledger.positions()[(env.chart.holdings("Core"), "SPY")] == D(3)


def test_the_brokers_interest_fees_and_cash_in_lieu_to_a_clean_reconcile(tmp_path):
    """The simulated broker credits interest, charges a fee and splits 1:4 paying cash in lieu; each shows
    as a cash break until the trader books it (`actions interest|fee`, `actions sync`), then reconcile is
    clean. Interest and fees are split by capital (0.75 / 0.25) in whole cents."""
    import datetime as dt

    from tradeledger.engine.setup.session import Session

    home = tmp_path / "home"
    run(home, "init")
    with open(home / "paper" / "config.toml", "a") as f:
        f.write(CONFIG.replace("[strategies.core]\n", "[strategies.core]\ncapital_share = 0.75\n")
                + '\n[strategies.satellite]\ninstruments = { SPY = 1 }\ncapital_share = 0.25\n'
                + '\n[account_cash]\ninterest = "capital"\nfees = "capital"\n')
    env = open_environment(home, "paper")
    session = Session(env)
    session.exchange().set_clock(dt.datetime(2026, 12, 2, 15, tzinfo=dt.timezone.utc))
    session.close()
    run(home, "sim", "price", "SPY", "600")
    run(home, "sim", "trade", "SPY", "10", "600")
    run(home, "fills", "sync")
    run(home, "reconcile")  # clean: the ledger has the trade

    assert "broker interest: 12.34 USD on 2026-12-02" in run(home, "sim", "interest", "12.34", "usd").output
    run(home, "sim", "fee", "-1.50", "USD")
    bad = run(home, "sim", "fee", "1.50", "USD", ok=False)
    assert bad.exit_code != 0 and "negative" in bad.output
    broken = run(home, "reconcile", ok=False)  # cash differs by 10.84 until booked: typed, with the commands
    assert broken.exit_code == 1
    assert "unbooked interest 12.34 USD on 2026-12-02" in broken.output
    assert "unbooked fee -1.50 USD on 2026-12-02" in broken.output
    opened = {e["subject"]: e["detail"] for e in json.loads(run(home, "exceptions", "list", "--json").output)}
    assert "tradeledger actions interest 12.34 USD --date 2026-12-02" in opened["interest USD 2026-12-02"]
    run(home, "actions", "interest", "12.34", "USD", "--date", "2026-12-02", "--reason", "credit interest")
    run(home, "actions", "fee", "-1.50", "USD", "--date", "2026-12-02", "--reason", "market data")
    run(home, "reconcile")
    opened = {e["subject"] for e in json.loads(run(home, "exceptions", "list", "--json").output)}
    assert "interest USD 2026-12-02" not in opened  # resolved once booked
    income = env.ledger.income()
    assert income[("Income:Interest:Core", "USD")] == D("-9.26")
    assert income[("Income:Interest:Satellite", "USD")] == D("-3.08")
    assert income[("Expenses:Fees:Core", "USD")] + income[("Expenses:Fees:Satellite", "USD")] == D("1.50")

    session = Session(env)
    session.exchange().set_clock(dt.datetime(2026, 12, 7, 9, tzinfo=dt.timezone.utc))
    session.close()
    bad = run(home, "sim", "split", "SPY", "1:4", ok=False)
    assert bad.exit_code != 0 and "cash-in-lieu" in bad.output
    assert "now holds 2" in run(home, "sim", "split", "SPY", "1:4", "--cash-in-lieu", "2410.10").output
    broken = run(home, "reconcile", ok=False)  # the ledger does not know the split yet
    assert broken.exit_code == 1 and "unbooked split SPY 1:4 on 2026-12-07" in broken.output
    assert json.loads(run(home, "actions", "sync", "--json").output)["added"] == ["SPY:2026-12-07:split"]
    assert "booked split SPY" in run(home, "reconcile").output
    assert env.ledger.positions()[(env.chart.unattributed, "SPY")] == D(2)
    # 0.5 new share at 2410.10 = 1205.05; its cost 0.5 x 2400 = 1200: 5.05 realised
    assert env.ledger.income()[("Income:Trading:Unattributed", "USD")] == D("-5.05")
    assert run(home, "check").exit_code == 0
