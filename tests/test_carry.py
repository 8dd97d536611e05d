"""The carry rule, worked by hand, and through forecasts with EWMAC by weights and an FDM."""

import math

import pandas as pd
import pytest

from tradeledger.engine.targets.carry import carry_forecast, carry_series, months_between, raw_carry
from tradeledger.engine.targets.signals import combine_forecasts


def test_a_carry_forecast_by_hand():
    # MES: the priced contract MESH27 closes at 6,060, the next, MESM27, at 6,030: backwardation,
    # a long rolls up 30 points a quarter. Three months apart: 30 / 0.25 = 120 points a year.
    # The daily price volatility is 50 points: 50 x 16 = 800 a year. raw = 120 / 800 = 0.15;
    # forecast = 30 x 0.15 = 4.5.
    months = months_between("202703", "202706")
    assert months == 3
    raw = raw_carry(6060.0, 6030.0, months, 50.0)
    assert raw == pytest.approx(0.15)
    assert carry_forecast(raw) == pytest.approx(4.5)
    # contango pays: the same spread the other way is -4.5; a steep one is capped at -20
    assert carry_forecast(raw_carry(6030.0, 6060.0, 3, 50.0)) == pytest.approx(-4.5)
    assert carry_forecast(raw_carry(6000.0, 6400.0, 3, 50.0)) == -20.0
    # no volatility, no carry (never a division by zero)
    assert math.isnan(raw_carry(6060.0, 6030.0, 3, 0.0))


def test_carry_series_matches_the_hand_formula_on_its_last_day():
    dates = pd.bdate_range("2026-09-01", periods=60)
    prices = pd.Series([6000.0 + (25.0 if i % 2 else -25.0) for i in range(60)], index=dates)
    curve = pd.DataFrame({"priced": prices, "next": prices - 30.0, "months": 3}, index=dates)
    series = carry_series(curve, prices)
    vol = prices.diff().ewm(span=35).std().iloc[-1]
    assert series.iloc[-1] == pytest.approx(carry_forecast(raw_carry(prices.iloc[-1], prices.iloc[-1] - 30, 3, vol)))


def test_carry_combines_with_ewmac_by_weights_and_fdm():
    # carry 4.5 and trend 12 at weights 0.4 / 0.6 with FDM 1.2: 1.2 x (1.8 + 7.2) = 10.8
    assert combine_forecasts({"carry": 4.5, "ewmac_16_64": 12.0}, {"carry": 0.4, "ewmac_16_64": 0.6}, 1.2) == \
        pytest.approx(10.8)


def test_targets_show_explains_carry_from_imported_contract_closes(tmp_path):
    import datetime as dt
    import json

    from click.testing import CliRunner

    from tradeledger.cli import main
    from tradeledger.engine.setup.environment import init_environment

    config = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8

[strategies.carry_trend]
rules = { carry = "0.5", ewmac_8_32 = "0.5" }
fdm = "1.2"
instruments = { MES = 1 }
"""
    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None, config_extra=config)
    days = [d.date() for d in pd.bdate_range(end="2026-12-31", periods=80)]
    closes = ["date,instrument,close"] + [f"{d},MES,{6000 + (i % 7) * 10 + i}" for i, d in enumerate(days)]
    curve = ["date,contract,close"] + [f"{d},MESH27,{6100 + i}" for i, d in enumerate(days[-5:])] + \
        [f"{d},MESM27,{6130 + i}" for i, d in enumerate(days[-5:])]
    for name, rows in (("closes.csv", closes), ("curve.csv", curve)):
        (tmp_path / name).write_text("\n".join(rows) + "\n")
        result = CliRunner().invoke(main, ["--home", str(home), "data", "import", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["--home", str(home), "targets", "compute", "--as-of", "2026-12-31", "--json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    run_id = run["id"] if isinstance(run, dict) else run
    show = json.loads(CliRunner().invoke(main, ["--home", str(home), "targets", "show", str(run_id), "--json"]).output)
    [line] = show["lines"]
    carry = line["explain"]["carry"]
    assert (carry["priced_contract"], carry["next_contract"], carry["months_between"]) == ("MESH27", "MESM27", 3)
    # contango of 30 points a quarter: -120 a year over the annual volatility, times 30
    prices = pd.Series([6000.0 + (i % 7) * 10 + i for i in range(80)])
    vol = prices.diff().ewm(span=35).std().iloc[-1]
    assert float(carry["forecast"]) == pytest.approx(carry_forecast(raw_carry(6104.0, 6134.0, 3, vol)))
    assert line["explain"]["rule_forecasts"]["carry"] == pytest.approx(float(carry["forecast"]))
    assert float(carry["forecast"]) < 0  # contango: a long pays to roll
