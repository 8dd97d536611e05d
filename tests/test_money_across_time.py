"""Money across time, as a trader drives it through the `tradeledger` command over several days.

Worked by hand (test_a_withdrawal_is_no_drawdown): 100,000 USD deposited; strategy a buys 100 SPY at
600 (commission 1.00); SPY closes 601, 602, 603, 604 on four days, so every day earns 100 (the
first 99 after the commission) and the P&L curve never falls. 20,000 USD is withdrawn on the third
day. The NAV falls by 19,900 that day, but no money was lost: the drawdown stays 0 every day.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

from click.testing import CliRunner

from tradeledger.cli import main

CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.a]
capital_share = "0.5"
instruments = { SPY = 1 }

[sim]
commission_per_share = "0.005"
"""


def tl(home: Path, *args, code: int | None = 0):
    result = CliRunner().invoke(main, ["--home", str(home), *map(str, args)], catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def tl_json(home: Path, *args, code: int | None = 0):
    return json.loads(tl(home, *args, "--json", code=code).stdout)


def funded(tmp_path: Path, capital: str = "100000") -> Path:
    home = tmp_path / "home"
    tl(home, "init", "--capital", capital)
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text() + CONFIG)
    return home


def close(home: Path, tmp_path: Path, day: str, price: str) -> None:
    tl(home, "sim", "clock", "set", f"{day}T21:00")
    path = tmp_path / f"closes-{day}.csv"
    path.write_text(f"date,instrument,close\n{day},SPY,{price}\n")
    tl(home, "data", "import", path)


def buy_for_a(home: Path, qty: int, price: str) -> None:
    tl(home, "sim", "price", "SPY", price)
    tl(home, "sim", "trade", "SPY", qty, price)
    [fill] = tl_json(home, "fills", "sync")["booked"]
    tl(home, "adjust", "attribute", fill, "--strategy", "a", "--yes")


def test_the_simulated_broker_pays_a_dividend_when_its_clock_reaches_the_pay_date(tmp_path):
    """Ex-date one day, pay date the next: the broker's cash moves when its clock gets there, so
    the ledger's receivable turned cash that day reconciles (it was a 8.50 cash break for ever, and
    reconcile proposed booking it as a withdrawal)."""
    home = funded(tmp_path)
    tl(home, "sim", "clock", "set", "2026-12-01T15:00")
    buy_for_a(home, 10, "600")
    close(home, tmp_path, "2026-12-01", "600")
    tl(home, "sim", "clock", "set", "2026-12-02T09:00")  # the ex-date, before the open
    tl(home, "sim", "dividend", "SPY", "1", "--withholding", "0.15", "--pay-date", "2026-12-03")
    tl(home, "actions", "sync")
    tl(home, "actions", "book", "--date", "2026-12-02")
    assert tl_json(home, "reconcile")["clean"]  # a receivable: no cash has moved on either side yet
    tl(home, "sim", "clock", "set", "2026-12-03T15:00")  # the pay date
    booked = tl(home, "actions", "book", "--date", "2026-12-03")
    assert "booked dividend SPY paid 2026-12-03" in booked.stdout
    reconciled = tl_json(home, "reconcile", code=None)
    assert reconciled["clean"], reconciled["cash"]
    [usd] = [c for c in reconciled["cash"] if c["currency"] == "USD"]
    assert D(usd["broker"]) == D(100000) - D(6000) - D(1) + D("8.50")  # 10 x 1.00 less 15% withheld
    assert tl_json(home, "pnl")["rows"][0]["income"] == "8.50"
    tl(home, "sim", "clock", "set", "2026-12-04T15:00")
    assert tl_json(home, "reconcile")["clean"]  # paid once


def test_a_withdrawal_is_no_drawdown(tmp_path):
    home = funded(tmp_path)
    days = ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    tl(home, "sim", "clock", "set", f"{days[0]}T15:00")
    buy_for_a(home, 100, "600")
    for n, day in enumerate(days):
        tl(home, "sim", "clock", "set", f"{day}T15:00")
        if n == 2:
            tl(home, "sim", "deposit", "USD", "-20000", "--kind", "withdrawal")
            tl(home, "adjust", "cash", "USD", "-20000", "--kind", "withdrawal", "--reason", "to the bank", "--yes")
        close(home, tmp_path, day, str(601 + n))
    perf = tl_json(home, "report", "performance")
    total = perf["total"]
    assert [p["net"] for p in total["curve"]] == ["99.00", "100.00", "100.00", "100.00"]
    # the NAV is the account's, withdrawal included: each day's `report nav`
    assert [p["nav"] for p in total["curve"]] == ["100099.00", "100199.00", "80299.00", "80399.00"]
    assert [tl_json(home, "report", "nav", "--date", day)["nav"] for day in days] == \
        [p["nav"] for p in total["curve"]]
    # ...but the money taken out is no loss: P&L never fell, so there is no drawdown
    assert [p["drawdown"] for p in total["curve"]] == ["0.00"] * 4
    assert [p["drawdown_pct"] for p in total["curve"]] == [0.0] * 4
    assert total["stats"]["max_drawdown"] == "0.00" and total["stats"]["max_drawdown_pct"] == 0.0
    # returns are the day's P&L over the NAV the day started with (the withdrawal is not one)
    assert total["stats"]["annual_return_pct"] > 0
    assert total["stats"]["fx_translation"] == "0.00"
