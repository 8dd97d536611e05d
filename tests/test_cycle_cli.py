"""The trade cycle through the `tradeledger` command, on the embedded default (SQLite + sim)."""

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.setup.environment import open_environment


def run(home, *args, ok=True):
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def data(home, *args):
    return json.loads(run(home, *args, "--json").output)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo") / "home"
    result = run(home, "demo", "--days", "3")
    assert "check: clean" in result.output
    assert "reconcile: clean" in result.output
    return home


def test_demo_ends_with_positions_pnl_and_clean_check(demo_home):
    positions = data(demo_home, "positions")
    assert {"account", "strategy", "contract", "qty"} <= set(positions[0])
    strategies = {row["strategy"] for row in positions}
    assert {"trend_fast", "trend_slow", "etf_trend", "unattributed"} <= strategies
    # BTC is signalled but executed in the micro: the position is in MBT, never in BTC's contract.
    codes = {row["contract"] for row in positions}
    assert any(code.startswith("MBT") for code in codes)
    assert not any(code.startswith("BTC") for code in codes)
    assert data(demo_home, "check")["ok"] is True


def test_realized_and_commissions_are_exactly_the_postings(demo_home):
    env = open_environment(demo_home, "paper")
    income = env.ledger.income()
    result = data(demo_home, "pnl")
    assert result["rows"], "the demo trades"
    for row in result["rows"]:
        component = {"trend_fast": "Trend-fast", "trend_slow": "Trend-slow", "etf_trend": "Etf-trend",
                     "tactical": "Tactical", "unattributed": "Unattributed"}[row["strategy"]]
        for native in row["native"]:
            ccy = native["currency"]
            trading = income.get((f"Income:Trading:{component}", ccy), Decimal(0))
            commissions = income.get((f"Expenses:Commissions:{component}", ccy), Decimal(0))
            carry = -income.get((f"Income:Dividends:{component}", ccy), Decimal(0)) \
                - income.get((f"Expenses:Taxes:Withholding:{component}", ccy), Decimal(0))
            assert Decimal(native["realized"]) == -trading
            assert Decimal(native["commissions"]) == commissions
            assert Decimal(native["income"]) == carry  # the demo's SPY dividend (etf_trend is short: it pays)
            assert Decimal(native["net"]) == Decimal(native["realized"]) + Decimal(native["unrealized"]) \
                + Decimal(native["income"]) - commissions
        assert {"strategy", "realized", "unrealized", "commissions", "net", "currency"} <= set(row)


def test_pnl_by_instrument_and_day_add_up_to_by_strategy(demo_home):
    def realized_native(rows):
        total = {}
        for row in rows:
            for native in row["native"]:
                total[native["currency"]] = total.get(native["currency"], 0) + Decimal(native["realized"])
        return total

    by_strategy = realized_native(data(demo_home, "pnl")["rows"])
    by_instrument = realized_native(data(demo_home, "pnl", "--by", "instrument")["rows"])
    by_day = data(demo_home, "pnl", "--by", "day")["rows"]
    assert by_strategy == by_instrument
    assert by_strategy == realized_native(by_day)
    assert [row["day"] for row in by_day] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    one_day = data(demo_home, "pnl", "--by", "day", "--since", "2026-12-02", "--until", "2026-12-03")["rows"]
    assert [row["day"] for row in one_day] == ["2026-12-02"]


def test_blotter_shows_the_trade_made_outside(demo_home):
    fills = data(demo_home, "fills", "list")
    outside = [f for f in fills if f["order"] is None]
    assert len(outside) == 1
    assert (outside[0]["contract"], outside[0]["quantity"], outside[0]["strategy"]) == ("SPY", "25", "unattributed")
    assert all(f["commission"] != "pending" for f in fills)
    orders = data(demo_home, "orders", "list")
    assert orders and all(o["state"] == "filled" for o in orders)
    assert all(re.fullmatch(rf"tl-paper-{o['id']}-[0-9a-f]{{6}}", o["order_ref"]) for o in orders)


def test_sync_and_mark_again_book_nothing(demo_home):
    before = data(demo_home, "status")["transactions"]
    synced = data(demo_home, "fills", "sync")
    assert synced["booked"] == [] and synced["replays"] > 0
    marked = data(demo_home, "mark", "--date", "2026-12-03")
    assert marked["booked"] == []
    assert data(demo_home, "status")["transactions"] == before


def test_demo_refuses_an_existing_home(demo_home):
    result = run(demo_home, "demo", ok=False)
    assert result.exit_code != 0 and "already holds an environment" in result.output


def test_review_then_trade_step_by_step(tmp_path):
    home = tmp_path / "home"
    run(home, "init", "--demo")
    # as of the demo's last close: `init --demo` seeds the history up to yesterday by the wall clock
    # (it was 2026-11-30 written in, a run whose contracts the exchange no longer lists once expired)
    last_close = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    while last_close.weekday() >= 5:
        last_close -= dt.timedelta(days=1)
    # the sim market needs prices: the demo's market opens at the last close
    computed = data(home, "cycle", "--as-of", last_close.isoformat())
    run_id = computed["run"]
    assert computed["approved"] is False
    refused = run(home, "orders", "submit", str(run_id), ok=False)
    assert refused.exit_code == 1 and refused.output.startswith("error:") and "not approved" in refused.output
    run(home, "targets", "approve", str(run_id))
    plan = data(home, "orders", "plan", str(run_id))
    assert plan["run"] == run_id and plan["contracts"]
    for contract in plan["contracts"]:
        run(home, "sim", "price", contract["contract"], str(contract["reference_price"]))
    submitted = data(home, "orders", "submit", str(run_id))
    assert submitted["sent"] and not submitted["rejected"]
    again = data(home, "orders", "submit", str(run_id))
    assert again["sent"] == [] and again["fills_booked"] == []
    positions = {(p["strategy"], p["contract"]): Decimal(p["qty"]) for p in data(home, "positions")}
    # Limits are in each instrument's units: the demo's max_order_qty of 500 contracts does not
    # stop TLT's 1,432 shares (shares have their own default), so every line reaches its target.
    assert not any(c["refused"] for c in plan["contracts"])
    targets = data(home, "targets", "show", str(run_id))
    for line in targets["lines"]:
        held = positions.get((line["strategy"], line["contract"]), Decimal(0))
        assert held == Decimal(line["target"]), line
    assert data(home, "check")["ok"] is True


@pytest.mark.parametrize("args, message", [
    (("sim", "trade", "NOPE", "1", "10"), "unknown contract"),
    (("sim", "trade", "SPY", "1.5x", "10"), "not a number"),
    (("pnl", "--since", "2026-13-01"), "not a date"),
    (("orders", "plan", "99"), "run 99"),
    (("orders", "cancel", "42"), "no order 42"),
])
def test_user_mistakes_are_one_line(tmp_path, args, message):
    home = tmp_path / "home"
    run(home, "init", "--demo")
    result = run(home, *args, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_new_users_first_cycle_trades_and_reconciles(tmp_path):
    """init --demo, `cycle` (computes run 1 and names the command that executes it), then that
    command: the simulated market opens at the price table's prices, so orders fill; the books
    check and reconcile clean."""
    home = tmp_path / "home"
    run(home, "init", "--demo")
    computed = data(home, "cycle")
    assert computed["command"] == f"tradeledger cycle --approve --run {computed['run']}"
    result = data(home, "cycle", "--approve", "--run", str(computed["run"]))
    assert result["approved"] and result["sent"] and not result["rejected"]
    assert len(result["fills_booked"]) == len(result["sent"])
    assert data(home, "check")["ok"] is True
    assert data(home, "reconcile")["clean"] is True


def test_the_demo_allocates_over_five_etfs_through_a_dividend_and_a_split(demo_home):
    """The allocation strategy over five ETFs held shares through SPY's dividend (paid) and GLD's 2:1 split
    (booked), and check and reconcile ended clean (the fixture)."""
    actions = {(a["kind"], a["ticker"]): a["state"] for a in data(demo_home, "actions", "list")}
    assert actions == {("dividend", "SPY"): "paid", ("split", "GLD"): "booked"}
    config = (demo_home / "paper" / "config.toml").read_text()
    assert 'kind = "allocation"' in config and "SPY = 1, TLT = 1, GLD = 1, EFA = 1, IEF = 1" in config
    tactical = [row for row in data(demo_home, "positions") if row["strategy"] == "tactical"]
    assert tactical, "the allocation strategy holds ETFs at the end"
    pnl = data(demo_home, "pnl")
    assert any(row.get("strategy") == "tactical" for row in pnl["rows"])
