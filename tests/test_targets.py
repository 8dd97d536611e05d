"""Target runs: hand-checked sizing, mappings (BTC signal, MBT execution), missing data, review lifecycle."""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.engine.setup.config import parse_trading_config
from tradeledger.engine.setup.environment import ConfigError, init_environment, open_environment
from tradeledger.errors import UnknownName
from tradeledger.engine.targets.forecasts import import_forecasts_csv
from tradeledger.engine.targets.prices import import_prices_csv
from tradeledger.engine.tables import target_line, target_run
from tradeledger.engine.targets.runs import (
    TargetError, approve_run, compute_run, edit_mappings, executable_run, list_instruments, list_runs,
    reject_run, set_mapping, show_run,
)
from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.store import Commodity

UTC = dt.timezone.utc
AS_OF = dt.date(2026, 1, 21)
NOW = dt.datetime(2026, 1, 21, 18, 0, tzinfo=UTC)

CONFIG = """
[portfolio]
capital = 1000000
buffer_fraction = 0.1
max_run_age_hours = 24

[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"

[instruments.FESX]
type = "future"
currency = "EUR"
multiplier = 10
expiry_months = "HMUZ"

[instruments.BTC]
type = "future"
currency = "USD"
multiplier = 5

[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1   # micro bitcoin: a tenth of a coin

[mappings]
BTC = "MBT"

[strategies.trend]
capital_share = 0.5
risk_target = 0.2
instruments = { MES = 0.5, FESX = 0.5 }
rules = { ewmac_4_16 = 1 }

[strategies.crypto]
capital_share = 0.5
risk_target = 0.2
instruments = { BTC = 1 }
rules = { ewmac_4_16 = 1 }
"""


def series(name: str, start: D, step: D, n: int = 20, first=dt.date(2026, 1, 2)) -> list[str]:
    """n daily closes moving by a constant `step`: the daily price-change volatility is |step|."""
    return [f"{first + dt.timedelta(days=i)},{name},{start + step * i}" for i in range(n)]


def geometric(name: str, start: D, rate: D, n: int = 20, first=dt.date(2026, 1, 2)) -> list[str]:
    """n closes rising by `rate` a day: the daily return volatility is `rate`."""
    return [f"{first + dt.timedelta(days=i)},{name},{(start * (1 + rate) ** i).quantize(D('0.000001'))}"
            for i in range(n)]


def make_env(tmp_path, config=CONFIG, mbt_history=True, fx=True):
    init_environment(tmp_path, "paper", "sim", None, config_extra=config)
    env = open_environment(tmp_path, "paper")
    rows = ["date,instrument,close"]
    rows += series("MES", D(5000), D(10))      # last 5190, vol 10
    rows += series("FESX", D(5000), D(-20))    # last 4620, vol 20
    rows += geometric("BTC", D(90000), D("0.01"))
    rows += series("MBT", D(90000), D(500)) if mbt_history else ["2026-01-21,MBT,100000"]
    (tmp_path / "prices.csv").write_text("\n".join(rows) + "\n")
    import_prices_csv(env, tmp_path / "prices.csv")
    if fx:
        (tmp_path / "fx.csv").write_text("date,currency,rate\n2026-01-20,EUR,1.1\n")
        import_prices_csv(env, tmp_path / "fx.csv")
    (tmp_path / "f.csv").write_text("date,strategy,instrument,forecast\n"
                                    f"{AS_OF},trend,MES,10\n{AS_OF},trend,FESX,-5\n{AS_OF},crypto,BTC,10\n")
    import_forecasts_csv(env, tmp_path / "f.csv")
    return env


def hold(env, strategy_component: str, contract: str, qty: D):
    account = env.chart.holdings(strategy_component)
    env.ledger.open_account(Account(account, dt.date(2026, 1, 1)))
    env.ledger.ensure_commodity(Commodity(contract, "future", "USD", D(5), dt.date(2026, 1, 1)))
    env.ledger.book(Transaction(NOW - dt.timedelta(hours=1), "fill", "test position",
                                (Posting(account, qty, contract, Cost(D(0), "USD")),)))


def lines_by_instrument(env, run_id):
    return {line.instrument: line for line in show_run(env, run_id, NOW).lines}


def test_hand_checked_run(tmp_path):
    env = make_env(tmp_path)
    run_id = compute_run(env, AS_OF, NOW)
    lines = lines_by_instrument(env, run_id)

    # MES, forecast 10, price 5190, multiplier 5, USD, daily price vol 10 (closes step by 10):
    #   daily cash vol target = 1,000,000 * 0.5 * 0.2 / 16 = 6250
    #   value vol = 10 * 5 * 1 = 50;  vol scalar = 6250 / 50 = 125
    #   unrounded = 125 * 10/10 * weight 0.5 * idm 1 = 62.5
    #   buffer = 62.5 +/- 0.1 * (125 * 0.5) = [56.25, 68.75]; from 0 trade up to ceil(56.25) = 57
    mes = lines["MES"]
    assert (mes.contract, mes.current, mes.target, mes.change) == ("MESH26", 0, 57, 57)
    e = mes.explain
    assert (e["price"], e["multiplier"], e["fx_rate"], e["volatility"]) == ("5190", "5", "1", "10")
    assert (e["daily_cash_vol_target"], e["vol_scalar"], e["unrounded_target"]) == ("6250", "125", "62.5")
    assert (e["buffer_lower"], e["buffer_upper"], e["forecast"], e["capital"]) == ("56.25", "68.75", "10", "1000000")
    assert e["forecast_source"] == "import"  # the import beats the EWMAC computed for the same date

    # FESX, forecast -5, price 4620 EUR, multiplier 10, EUR->USD 1.1, vol 20:
    #   value vol = 20 * 10 * 1.1 = 220;  vol scalar = 6250 / 220 = 28.409090909...
    #   unrounded = 28.40909 * -0.5 * 0.5 = -7.102272727...
    #   buffer width = 0.1 * 28.40909 * 0.5 = 1.420454545... -> [-8.52272727, -5.68181818]
    #   from 0 trade down to floor(-5.68) = -6
    fesx = lines["FESX"]
    assert (fesx.contract, fesx.target) == ("FESXH26", -6)
    assert fesx.explain["fx_rate"] == "1.1" and fesx.explain["fx_date"] == "2026-01-20"
    assert fesx.explain["unrounded_target"] == "-7.102272727"

    run = show_run(env, run_id, NOW)
    assert run.status == "pending" and run.inputs["fx"]["EUR"] == ["2026-01-20", "1.1"]
    assert run.inputs["mappings"] == {"BTC": "MBT"}


def test_btc_signal_executes_in_mbt_with_its_multiplier(tmp_path):
    env = make_env(tmp_path)
    btc = lines_by_instrument(env, compute_run(env, AS_OF, NOW))["BTC"]
    # MBT: price 99500, vol 500 (its own closes), multiplier 0.1 (BTC's 5 would give 3 contracts):
    #   value vol = 500 * 0.1 = 50; vol scalar = 6250 / 50 = 125; unrounded = 125 * 1 * 1 = 125
    #   buffer [112.5, 137.5] -> 113
    assert btc.contract == "MBTG26"  # monthly; January has rolled by the 21st
    e = btc.explain
    assert (e["execution_instrument"], e["multiplier"], e["price"], e["volatility"]) == ("MBT", "0.1", "99500", "500")
    assert e["volatility_source"] == "MBT closes"
    assert btc.target == 113


def test_mbt_without_history_uses_btc_returns(tmp_path):
    env = make_env(tmp_path, mbt_history=False)
    btc = lines_by_instrument(env, compute_run(env, AS_OF, NOW))["BTC"]
    # BTC returns are 1% a day; MBT's price 100000 -> daily price vol 1000
    #   value vol = 1000 * 0.1 = 100; vol scalar 62.5; unrounded 62.5; buffer [56.25, 68.75] -> 57
    assert btc.explain["volatility"] == "1000"
    assert btc.explain["volatility_source"] == "BTC returns x MBT price"
    assert btc.target == 57


def test_current_position_inside_buffer_does_not_trade(tmp_path):
    env = make_env(tmp_path)
    hold(env, "Trend", "MESH26", D(60))  # inside [56.25, 68.75]
    mes = lines_by_instrument(env, compute_run(env, AS_OF, NOW))["MES"]
    assert (mes.current, mes.target, mes.change) == (60, 60, 0)
    assert mes.explain["within_buffer"] is True


def count(env, table):
    with env.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_missing_fx_is_an_error_and_nothing_is_stored(tmp_path):
    env = make_env(tmp_path, fx=False)
    with pytest.raises(TargetError, match="no FX rate for EUR to USD on or before 2026-01-21"):
        compute_run(env, AS_OF, NOW)
    assert count(env, target_run) == 0 and count(env, target_line) == 0


def test_missing_price_and_forecast_named(tmp_path):
    extra = CONFIG + '\n[instruments.SPY]\ntype = "share"\ncurrency = "USD"\n\n[strategies.etf]\ninstruments = { SPY = 1 }\n'
    env = make_env(tmp_path, config=extra)
    with pytest.raises(TargetError) as err:
        compute_run(env, AS_OF, NOW)
    assert "no forecast: strategy etf, instrument SPY" in str(err.value)
    assert "no price for instrument SPY" in str(err.value)
    assert count(env, target_run) == 0


def test_lifecycle(tmp_path):
    env = make_env(tmp_path)
    first = compute_run(env, AS_OF, NOW)
    with pytest.raises(TargetError, match="not approved yet"):
        executable_run(env, first, NOW)
    approved = approve_run(env, first, "alice", "looks right", NOW)
    assert (approved.state, approved.reviewed_by, approved.review_note) == ("approved", "alice", "looks right")
    assert len(executable_run(env, first, NOW)) == 3
    with pytest.raises(TargetError, match="already approved"):
        reject_run(env, first, "bob", "too late", NOW)
    # expiry: 24 hours after creation nothing executes
    with pytest.raises(TargetError, match="older than portfolio.max_run_age_hours"):
        executable_run(env, first, NOW + dt.timedelta(hours=25))

    second = compute_run(env, AS_OF, NOW + dt.timedelta(minutes=5))
    assert show_run(env, first, NOW).status == "superseded"
    with pytest.raises(TargetError, match="superseded"):
        executable_run(env, first, NOW)
    with pytest.raises(TargetError, match="needs a note"):
        reject_run(env, second, "bob", "  ", NOW)
    rejected = reject_run(env, second, "bob", "FESX price stale", NOW)
    assert rejected.status == "rejected"
    with pytest.raises(TargetError, match="already rejected"):
        approve_run(env, second, "alice", None, NOW)
    with pytest.raises(TargetError, match="was rejected"):
        executable_run(env, second, NOW)

    third = compute_run(env, AS_OF, NOW)
    with pytest.raises(TargetError, match="expired"):
        approve_run(env, third, "alice", None, NOW + dt.timedelta(days=2))
    assert [r.id for r in list_runs(env, NOW)] == [third, second, first]
    assert [r.status for r in list_runs(env, NOW)] == ["pending", "rejected", "superseded"]
    with pytest.raises(TargetError, match="no target run 99"):
        show_run(env, 99)
    # lines are immutable snapshots: a new price changes nothing in a stored run
    (tmp_path / "new.csv").write_text("date,instrument,close\n2026-01-21,MES,9000\n")
    import_prices_csv(env, tmp_path / "new.csv", replace=True)
    assert lines_by_instrument(env, first)["MES"].explain["price"] == "5190"


def test_set_mapping_edits_config(tmp_path):
    env = make_env(tmp_path)
    hold(env, "Crypto", "MBTG26", D(3))
    before = env.config_path.read_text()
    change = set_mapping(env, "BTC", "BTC")  # map to itself: the mapping is removed
    assert (change.old, change.new) == ("MBT", "BTC")
    assert change.holders == ((env.chart.holdings("Crypto"), "MBTG26", D(3)),)
    raw = tomllib.loads(env.config_path.read_text())
    assert raw.get("mappings") == {}
    assert parse_trading_config(env.settings.raw).execution_instrument("BTC").name == "BTC"
    set_mapping(env, "BTC", "MBT")
    after = env.config_path.read_text()
    assert tomllib.loads(after) == tomllib.loads(before)
    assert "multiplier = 0.1   # micro bitcoin" in after  # the rest of the file is intact
    with pytest.raises(UnknownName, match="unknown instrument 'ETH'"):
        set_mapping(env, "ETH", "MBT")
    rows = {r["name"]: r for r in list_instruments(env, AS_OF)}
    assert rows["BTC"]["executes_in"] == "MBT" and rows["MBT"]["signalled_by"] == ["BTC"]


def test_edit_mappings_pure():
    assert edit_mappings('[a]\nx = 1\n', "BTC", "MBT") == '[a]\nx = 1\n\n[mappings]\nBTC = "MBT"\n'
    text = '[mappings]\nBTC = "MBT"  # micro\nES = "MES"\n\n[b]\ny = 2\n'
    assert edit_mappings(text, "ES", None) == '[mappings]\nBTC = "MBT"  # micro\n\n[b]\ny = 2\n'
    assert edit_mappings(text, "NQ", "MNQ") == '[mappings]\nBTC = "MBT"  # micro\nES = "MES"\nNQ = "MNQ"\n\n[b]\ny = 2\n'
    assert tomllib.loads(edit_mappings(text, "BTC", "BTC2"))["mappings"]["BTC"] == "BTC2"


def test_cli_flow(tmp_path):
    import json

    from click.testing import CliRunner

    from tradeledger.cli import main

    make_env(tmp_path)
    run = CliRunner().invoke
    home = ["--home", str(tmp_path)]
    (tmp_path / "bad.csv").write_text("date,instrument,close\n2026-01-22,MES,nan\n2026-01-22,SPY,1\n")
    result = run(main, home + ["data", "import", str(tmp_path / "bad.csv")])
    assert result.exit_code == 1 and "line 2:" in result.output and "line 3: unknown instrument 'SPY'" in result.output
    result = run(main, home + ["targets", "compute", "--as-of", "2026-01-21", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert {line["instrument"]: line["target"] for line in shown["lines"]} == {"BTC": "113", "FESX": "-6", "MES": "57"}
    assert run(main, home + ["targets", "reject", str(shown["id"])]).exit_code == 2  # --note is required
    assert run(main, home + ["targets", "reject", str(shown["id"]), "--note", "no"]).exit_code == 0
    result = run(main, home + ["targets", "approve", str(shown["id"])])
    assert result.exit_code == 1 and "already rejected" in result.output
    result = run(main, home + ["instruments", "list", "--json"])
    assert {r["name"]: r["executes_in"] for r in json.loads(result.output)}["BTC"] == "MBT"
