"""Reports: performance, exposure, costs and the daily HTML file, each as table, JSON and CSV,
and all of them the same figures as `pnl`, `positions` and `fills list`."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from tradeledger.cli import main


def run(home, *args):
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def data(home, *args):
    return json.loads(run(home, *args, "--json"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("reports") / "home"
    assert "check: clean" in run(home, "demo", "--days", "3")
    return home


def test_performance_totals_are_the_pnl_and_drawdowns_are_below_peaks(home):
    perf = data(home, "report", "performance")
    by_day = data(home, "pnl", "--by", "day", "--cumulative")["rows"]
    total = perf["total"]
    assert [p["day"] for p in total["curve"]] == [r["day"] for r in by_day]
    assert [p["net"] for p in total["curve"]] == [r["net"] for r in by_day]
    assert total["stats"]["pnl"] == by_day[-1]["cumulative"]
    nav = data(home, "report", "nav")
    assert total["curve"][-1]["nav"] == nav["nav"]
    by_strategy = {r["strategy"]: r["net"] for r in data(home, "pnl")["rows"]}
    for entry in perf["strategies"]:
        assert entry["stats"]["pnl"] == by_strategy[entry["strategy"]]
        assert all(D(p["drawdown"]) <= 0 for p in entry["curve"] if p["drawdown"] is not None)
    assert D(total["stats"]["max_drawdown"]) <= 0 and total["stats"]["sharpe"] is not None
    rows = list(csv.DictReader(io.StringIO(run(home, "report", "performance", "--csv"))))
    assert {r["strategy"] for r in rows} == {"etf_trend", "tactical", "trend_fast", "trend_slow", "unattributed", "total"}
    assert "sharpe" in run(home, "report", "performance")


def test_exposure_is_positions_times_price_multiplier_and_fx(home):
    exposure = data(home, "report", "exposure")
    positions = data(home, "positions")
    from tradeledger.engine.setup.environment import open_environment

    multipliers = {c.name: c.multiplier for c in open_environment(home, "paper").ledger.commodities()}
    import sqlite3

    db = sqlite3.connect(home / "paper" / "tradeledger.db")
    fx = {ccy: D(rate) / D(10**9) for ccy, rate in db.execute(
        "SELECT currency, rate FROM fx_rate f WHERE date = (SELECT max(date) FROM fx_rate g WHERE g.currency = f.currency)")}
    fx["USD"] = D(1)
    expected = {}
    for p in positions:
        key = (p["strategy"], p["contract"])
        expected[key] = (D(p["qty"]) * D(p["last"]) * multipliers[p["contract"]] * fx[p["currency"]]).quantize(D("0.01"))
    for row in exposure["rows"]:
        (contract,) = row["contracts"]
        assert D(row["notional"]) == expected[(row["strategy"], contract)], row
        if row["strategy"] not in ("unattributed", "tactical"):  # an allocation sizes by weight, not by volatility
            assert D(row["annual_risk"]) > 0 and row["pct_capital"] is not None
    assert len(exposure["rows"]) == len(positions)


def test_slippage_is_against_the_runs_reference_price(home):
    from tradeledger.engine.setup.environment import open_environment

    multipliers = {c.name: c.multiplier for c in open_environment(home, "paper").ledger.commodities()}
    fills = data(home, "report", "costs", "--fills")
    run1 = data(home, "targets", "show", "1")
    reference = {line["contract"]: D(line["explain"]["price"]) for line in run1["lines"]}
    checked = 0
    for fill in fills:
        if fill["run"] != 1:
            continue
        sign = 1 if fill["side"] == "BUY" else -1
        mult = multipliers[fill["contract"]]
        assert D(fill["reference"]) == reference[fill["contract"]]
        assert D(fill["slippage"]) == sign * (D(fill["price"]) - reference[fill["contract"]]) * D(fill["quantity"]) * D(mult)
        checked += 1
    assert checked >= 5
    costs = data(home, "report", "costs")
    commissions = {r["strategy"]: D(r["commissions"]) for r in data(home, "pnl")["rows"]}
    for row in costs["rows"]:
        assert D(row["commissions"]) == commissions[row["strategy"]]
    outside = [f for f in fills if f["order"] is None]
    assert outside and outside[0]["slippage"] is None  # a trade made outside has no reference


def test_daily_report_is_one_self_contained_html_file(home):
    out = data(home, "report", "daily", "--date", "2026-12-02")
    path = home / "paper" / "reports" / "daily-2026-12-02.html"
    assert out["path"] == str(path) and path.exists()
    page = path.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    day = data(home, "pnl", "--by", "day", "--since", "2026-12-02", "--until", "2026-12-03")["rows"][0]
    assert out["day_pnl"] == day["net"]
    fills = [f for f in data(home, "fills", "list") if f["time"].startswith("2026-12-02")]
    assert len(out["fills"]) == len(fills) > 0
    for fill in fills:
        assert fill["fill_id"] in page or fill["contract"] in page
    for section in ("Equity curve", "Daily P&amp;L", "Exposure by instrument", "Positions at the end of 2026-12-02",
                    "Fills on 2026-12-02", "Reconciliation", "Open exceptions"):
        assert section in page, section
    assert "unattributed_fill" in page  # the trade made at the broker's screen is still open
    rows = list(csv.DictReader(io.StringIO(run(home, "report", "daily", "--date", "2026-12-02", "--csv"))))
    assert {r["strategy"] for r in rows} >= {"total"} and all(r["day"] == "2026-12-02" for r in rows)
