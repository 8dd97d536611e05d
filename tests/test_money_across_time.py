"""Money across time, as a trader drives it through the `tradeledger` command over several days.

Worked by hand (test_a_withdrawal_is_no_drawdown): 100,000 USD deposited; strategy a buys 100 SPY at
600 (commission 1.00); SPY closes 601, 602, 603, 604 on four days, so every day earns 100 (the
first 99 after the commission) and the P&L curve never falls. 20,000 USD is withdrawn on the third
day. The NAV falls by 19,900 that day, but no money was lost: the drawdown stays 0 every day.
"""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

from support import tl, tl_json

CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[instruments.EXSA]
type = "share"
currency = "EUR"
exchange = "IBIS"

[strategies.a]
capital_share = "0.5"
instruments = { SPY = 1, EXSA = 1 }

[strategies.b]
capital_share = "0.5"
instruments = { EXSA = 1 }

[sim]
commission_per_share = "0.005"
"""




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


def buy(home: Path, qty: int, price: str, code: str = "SPY", strategy: str | None = "a") -> None:
    tl(home, "sim", "price", code, price)
    tl(home, "sim", "trade", code, qty, price)
    [fill] = tl_json(home, "fills", "sync")["booked"]
    if strategy is not None:
        tl(home, "adjust", "attribute", fill, "--strategy", strategy, "--yes")


def buy_for_a(home: Path, qty: int, price: str) -> None:
    buy(home, qty, price)


def test_the_simulated_broker_pays_a_dividend_when_its_clock_reaches_the_pay_date(tmp_path):
    """Ex-date one day, pay date the next: the broker's cash moves when its clock gets there, so
    the ledger's receivable turned cash that day reconciles (it was a 8.50 cash break for ever, and
    reconcile proposed booking it as a withdrawal)."""
    home = funded(tmp_path)
    tl(home, "sim", "clock", "set", "2031-03-04T15:00")
    buy_for_a(home, 10, "600")
    close(home, tmp_path, "2031-03-04", "600")
    tl(home, "sim", "clock", "set", "2031-03-05T09:00")  # the ex-date, before the open
    tl(home, "sim", "dividend", "SPY", "1", "--withholding", "0.15", "--pay-date", "2031-03-06")
    tl(home, "actions", "sync")
    tl(home, "actions", "book", "--date", "2031-03-05")
    assert tl_json(home, "reconcile")["clean"]  # a receivable: no cash has moved on either side yet
    tl(home, "sim", "clock", "set", "2031-03-06T15:00")  # the pay date
    booked = tl(home, "actions", "book", "--date", "2031-03-06")
    assert "booked dividend SPY paid 2031-03-06" in booked.stdout
    reconciled = tl_json(home, "reconcile", code=None)
    assert reconciled["clean"], reconciled["cash"]
    [usd] = [c for c in reconciled["cash"] if c["currency"] == "USD"]
    assert D(usd["broker"]) == D(100000) - D(6000) - D(1) + D("8.50")  # 10 x 1.00 less 15% withheld
    assert tl_json(home, "pnl")["rows"][0]["income"] == "8.50"
    tl(home, "sim", "clock", "set", "2031-03-07T15:00")
    assert tl_json(home, "reconcile")["clean"]  # paid once


def test_a_withdrawal_is_no_drawdown(tmp_path):
    home = funded(tmp_path)
    days = ["2031-03-04", "2031-03-05", "2031-03-06", "2031-03-07"]
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


def test_a_compounding_strategys_capital_follows_the_deposits_day_by_day(tmp_path):
    """capital_mode = "compounding": a's capital is half the net deposits of each day. It earns
    100 a day on 100 SPY; 100,000 more arrives on the third day. Its NAV is 50,000 + P&L until then
    and 100,000 + P&L after (it was 100,000 + P&L from the first day: the deposit made the first
    days' returns half what they were), and the deposit is no drawdown."""
    home = funded(tmp_path)
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text() + '\n[portfolio]\ncapital = "100000"\ncapital_mode = "compounding"\n')
    days = ["2031-03-04", "2031-03-05", "2031-03-06", "2031-03-07"]
    tl(home, "sim", "clock", "set", f"{days[0]}T15:00")
    buy_for_a(home, 100, "600")
    for n, day in enumerate(days):
        tl(home, "sim", "clock", "set", f"{day}T15:00")
        if n == 2:
            tl(home, "sim", "deposit", "USD", "100000")
            tl(home, "adjust", "cash", "USD", "100000", "--kind", "deposit", "--reason", "more", "--yes")
        close(home, tmp_path, day, str(601 + n))
    [a] = [s for s in tl_json(home, "report", "performance")["strategies"] if s["strategy"] == "a"]
    assert D(a["capital"]) == 100000  # now: half of 200,000
    assert [p["nav"] for p in a["curve"]] == ["50099.00", "50199.00", "100299.00", "100399.00"]
    assert [p["drawdown"] for p in a["curve"]] == ["0.00"] * 4
    # the mean daily return: 99 / 50,000, 100 / 50,099, 100 / 50,199 (the deposit is not one), 100 / 100,299
    mean = (99 / 50000 + 100 / 50099 + 100 / 50199 + 100 / 100299) / 4
    assert a["stats"]["annual_return_pct"] == round(mean * 252 * 100, 4)


def test_the_rows_by_strategy_and_by_instrument_add_up_to_the_days(tmp_path):
    """Strategies a and b and the trader each buy 2 EXSA at 50 EUR for a commission of 1.00 EUR, at
    1.0035 USD: each pays 1.0035 USD, which is 1.00 to the cent, but together they paid 3.0105, which
    is 3.01. The rows by strategy said 3 x -1.00 = -3.00 while the days said -3.01; rounded together,
    one of them is -1.01 (the first in name order: all three remainders are equal)."""
    home = funded(tmp_path)
    rates = tmp_path / "rates.csv"
    rates.write_text("date,currency,rate\n2031-03-03,EUR,1.0035\n")
    tl(home, "data", "import", rates)
    tl(home, "sim", "clock", "set", "2031-03-04T15:00")
    for holder in ("a", "b", None):
        buy(home, 2, "50", "EXSA", holder)
    tl(home, "sim", "clock", "set", "2031-03-04T21:00")
    closes = tmp_path / "closes.csv"
    closes.write_text("date,instrument,close\n2031-03-04,EXSA,50\n")
    tl(home, "data", "import", closes)
    days = tl_json(home, "pnl", "--by", "day")["rows"]
    assert [(r["day"], r["net"]) for r in days] == [("2031-03-04", "-3.01")]
    expected = {"a": "-1.01", "b": "-1.00", "unattributed": "-1.00"}
    for span in ((), ("--until", "2031-03-05"), ("--since", "2031-03-04")):  # maintained, replayed, a period
        by_strategy = tl_json(home, "pnl", *span)["rows"]
        assert {r["strategy"]: r["net"] for r in by_strategy} == expected, span
        assert [r["commissions"] for r in by_strategy] == ["1.00"] * 3  # each commission to the cent, as booked
        [by_instrument] = tl_json(home, "pnl", "--by", "instrument", *span)["rows"]
        assert by_instrument["net"] == "-3.01"
    perf = tl_json(home, "report", "performance")
    assert {s["strategy"]: s["stats"]["pnl"] for s in perf["strategies"]} == expected
    assert perf["total"]["stats"]["pnl"] == "-3.01"


def test_a_split_on_the_morning_of_its_date_is_no_gain_before_the_close(tmp_path):
    """a holds 10 SPY and b 6, bought at 600 (1.00 commission each), SPY closed 600. The next
    morning SPY splits 2:1 and the split is booked: a holds 20 and b 12. Until that day's close,
    the newest close is 600 in the old units: valued as it was quoted, the 32 shares showed a gain
    of 9,600 (NAV 109,598 for 99,998). Restated (300 a new share) nothing has happened; the close
    of 303 then earns a 60 and b 36."""
    home = funded(tmp_path)
    tl(home, "sim", "clock", "set", "2031-03-04T15:00")
    buy(home, 10, "600", "SPY", "a")
    buy(home, 6, "600", "SPY", "b")
    close(home, tmp_path, "2031-03-04", "600")
    tl(home, "sim", "clock", "set", "2031-03-05T09:00")
    tl(home, "sim", "split", "SPY", "2:1")
    tl(home, "actions", "sync")
    tl(home, "actions", "book")
    assert {(p["strategy"], p["qty"], p["last"], p["unrealized"]) for p in tl_json(home, "positions")} == \
        {("a", "20", "300", "0"), ("b", "12", "300", "0")}
    assert tl_json(home, "report", "nav")["nav"] == "99998.00"
    assert tl_json(home, "report", "nav", "--date", "2031-03-04")["nav"] == "99998.00"  # 16 x 600 that day
    for span in ((), ("--until", "2031-03-06")):  # maintained, replayed
        nets = {r["strategy"]: r["net"] for r in tl_json(home, "pnl", *span)["rows"]}
        assert nets | {"unattributed": "0.00"} == {"a": "-1.00", "b": "-1.00", "unattributed": "0.00"}  # gave both fills
    assert [(r["day"], r["net"]) for r in tl_json(home, "pnl", "--by", "day")["rows"]] == \
        [("2031-03-04", "-2.00"), ("2031-03-05", "0.00")]
    assert tl_json(home, "report", "performance")["total"]["stats"]["pnl"] == "-2.00"
    assert tl_json(home, "check")["ok"]  # the export prices SPY at 300 from the split's date (Fava agrees)
    assert "2031-03-05 price SPY 300 USD" in (home / "paper" / "ledger.beancount").read_text()
    assert tl_json(home, "reconcile")["clean"]
    close(home, tmp_path, "2031-03-05", "303")
    nets = {r["strategy"]: r["net"] for r in tl_json(home, "pnl")["rows"]}
    assert nets | {"unattributed": "0.00"} == {"a": "59.00", "b": "35.00", "unattributed": "0.00"}
    assert tl_json(home, "report", "nav")["nav"] == "100094.00"


def test_a_deposit_found_later_is_booked_on_the_day_it_arrived(tmp_path):
    """20,000 arrives at the broker on Tuesday; the trader sees the break on Thursday and books it
    with the day it arrived (`adjust cash --date`, as IB's statement proposes it): Tuesday's and
    Wednesday's NAV carry it as the broker's cash did (booked on Thursday, the NAV of those days
    said 20,000 less than the account held), and the P&L does not move."""
    home = funded(tmp_path)
    tl(home, "sim", "clock", "set", "2031-03-04T15:00")
    buy_for_a(home, 100, "600")
    tl(home, "sim", "clock", "set", "2031-03-04T15:30")
    tl(home, "sim", "deposit", "USD", "20000")
    close(home, tmp_path, "2031-03-04", "601")
    close(home, tmp_path, "2031-03-05", "602")
    tl(home, "sim", "clock", "set", "2031-03-06T10:00")
    assert not tl_json(home, "reconcile", code=1)["clean"]
    future = tl(home, "adjust", "cash", "USD", "20000", "--kind", "deposit", "--reason", "wire", "--date", "2031-03-07",
                "--yes", code=1)
    assert future.stderr.count("\n") == 1 and "2031-03-07" in future.stderr and "after today" in future.stderr
    booked = tl_json(home, "adjust", "cash", "USD", "20000", "--kind", "deposit", "--reason", "wire",
                     "--date", "2031-03-04", "--yes")
    assert booked["booked"] and booked["time"].startswith("2031-03-04")
    assert tl_json(home, "reconcile")["clean"] and tl_json(home, "check")["ok"]
    navs = [tl_json(home, "report", "nav", "--date", day)["nav"] for day in ("2031-03-04", "2031-03-05")]
    assert navs == ["120099.00", "120199.00"]
    assert [(r["day"], r["net"]) for r in tl_json(home, "pnl", "--by", "day")["rows"]] == \
        [("2031-03-04", "99.00"), ("2031-03-05", "100.00")]
