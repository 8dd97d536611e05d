"""Price, settlement, FX and forecast imports: validation by line, all or nothing, idempotent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.engine.setup.environment import init_environment, open_environment
from tradeledger.engine.targets.forecasts import compute_forecasts, import_forecasts_csv, stored_forecasts
from tradeledger.engine.targets.prices import (
    CsvImportError, PriceError, fx_rate, import_prices_csv, latest_price, latest_settlement, price_history,
)
from tradeledger.engine.tables import forecast, price_bar, settlement

CONFIG = """
[portfolio]
capital = 1000000

[instruments.SPY]
type = "share"
currency = "USD"

[instruments.CL]
type = "future"
currency = "USD"
multiplier = 1000
expiry_months = "FGHJKMNQUVXZ"

[instruments.FESX]
type = "future"
currency = "EUR"
multiplier = 10
expiry_months = "HMUZ"

[strategies.trend]
instruments = { SPY = 0.5, CL = 0.5 }
rules = { ewmac_4_16 = 1 }
"""


@pytest.fixture
def env(tmp_path):
    init_environment(tmp_path, "paper", "sim", None, config_extra=CONFIG)
    return open_environment(tmp_path, "paper")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def count(env, table):
    with env.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_import_closes_and_query(env, tmp_path):
    path = write(tmp_path, "p.csv", "date,instrument,close\n2026-01-02,SPY,600.25\n2026-01-05,SPY,601.5\n"
                                    "2026-01-02,CL,70.1\n")
    report = import_prices_csv(env, path)
    assert (report.kind, report.inserted, report.unchanged) == ("price", 3, 0)
    assert latest_price(env, "SPY") == (dt.date(2026, 1, 5), D("601.5"))
    assert latest_price(env, "SPY", on=dt.date(2026, 1, 4)) == (dt.date(2026, 1, 2), D("600.25"))
    history = price_history(env, "SPY")
    assert list(history) == [600.25, 601.5]
    # re-import: a no-op
    again = import_prices_csv(env, path)
    assert (again.inserted, again.unchanged) == (0, 3)
    assert count(env, price_bar) == 3


def test_conflict_needs_replace(env, tmp_path):
    import_prices_csv(env, write(tmp_path, "a.csv", "date,instrument,close\n2026-01-02,SPY,600\n"))
    changed = write(tmp_path, "b.csv", "date,instrument,close\n2026-01-05,SPY,610\n2026-01-02,SPY,601\n")
    with pytest.raises(CsvImportError, match=r"line 3: SPY 2026-01-02 is stored as 600"):
        import_prices_csv(env, changed)
    assert count(env, price_bar) == 1  # the good new row was not stored either
    report = import_prices_csv(env, changed, replace=True)
    assert (report.inserted, report.replaced) == (1, 1)
    assert latest_price(env, "SPY", dt.date(2026, 1, 2))[1] == D("601")


def test_bad_rows_reported_by_line_nothing_stored(env, tmp_path):
    text = ("date,instrument,close\n"
            "2026-01-02,SPY,600\n"       # 2 good
            "2026/01/05,SPY,601\n"       # 3 bad date
            "2026-01-06,SPY,NaN\n"       # 4 NaN
            "2026-01-07,SPY,inf\n"       # 5 inf
            "2026-01-08,SPY,-1\n"        # 6 negative share price
            "2026-01-09,XYZ,10\n"        # 7 unknown instrument
            "2026-01-12,SPY,0\n"         # 8 zero share price
            "2026-01-13,SPY\n"           # 9 missing field
            "2026-01-14,SPY,abc\n")      # 10 not a number
    with pytest.raises(CsvImportError) as err:
        import_prices_csv(env, write(tmp_path, "bad.csv", text))
    lines = [line for line, _ in err.value.problems]
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10]
    message = str(err.value)
    assert "line 3: date '2026/01/05' is not YYYY-MM-DD" in message
    assert "line 7: unknown instrument 'XYZ'" in message
    assert "share price must be positive" in message
    assert count(env, price_bar) == 0


def test_negative_futures_price_accepted(env, tmp_path):
    import_prices_csv(env, write(tmp_path, "cl.csv", "date,instrument,close\n2020-04-20,CL,-37.63\n"))
    assert latest_price(env, "CL") == (dt.date(2020, 4, 20), D("-37.63"))
    import_prices_csv(env, write(tmp_path, "s.csv", "date,contract,settle\n2020-04-20,CLK20,-37.63\n"))
    assert latest_settlement(env, "CLK20") == (dt.date(2020, 4, 20), D("-37.63"))


def test_settlement_validation(env, tmp_path):
    text = "date,contract,settle\n2026-01-02,CLH26,70\n2026-01-02,SPY,600\n2026-01-02,FESXF26,5000\n"
    with pytest.raises(CsvImportError) as err:
        import_prices_csv(env, write(tmp_path, "s.csv", text))
    assert [line for line, _ in err.value.problems] == [3, 4]  # a share; a month FESX does not trade
    assert count(env, settlement) == 0
    with pytest.raises(PriceError, match="no settlement price for contract CLH26"):
        latest_settlement(env, "CLH26")


def test_fx_rates(env, tmp_path):
    assert fx_rate(env, "USD") == 1
    with pytest.raises(PriceError, match="no FX rate for EUR"):
        fx_rate(env, "EUR")
    bad = "date,currency,rate\n2026-01-02,EUR,0\n2026-01-02,USD,1\n2026-01-02,eur,1.1\n"
    with pytest.raises(CsvImportError) as err:
        import_prices_csv(env, write(tmp_path, "bad.csv", bad))
    assert [line for line, _ in err.value.problems] == [2, 3, 4]
    import_prices_csv(env, write(tmp_path, "fx.csv", "date,currency,rate\n2026-01-02,EUR,1.0571\n"))
    assert fx_rate(env, "EUR") == D("1.0571")
    with pytest.raises(PriceError, match="no FX rate for EUR to USD on or before 2026-01-01"):
        fx_rate(env, "EUR", on=dt.date(2026, 1, 1))


def test_unknown_header_and_duplicates(env, tmp_path):
    with pytest.raises(CsvImportError, match="line 1: header"):
        import_prices_csv(env, write(tmp_path, "h.csv", "day,instrument,price\n2026-01-02,SPY,1\n"))
    with pytest.raises(CsvImportError, match="line 3: SPY 2026-01-02 already given as 1 on line 2"):
        import_prices_csv(env, write(tmp_path, "d.csv", "date,instrument,close\n2026-01-02,SPY,1\n2026-01-02,SPY,2\n"))


# -- forecasts ------------------------------------------------------------------------------------


def test_forecast_import_validation(env, tmp_path):
    text = ("date,strategy,instrument,forecast\n"
            "2026-01-02,trend,SPY,12.5\n"     # 2 good
            "2026-01-02,trend,CL,20.5\n"      # 3 out of range
            "2026-01-02,trend,CL,NaN\n"       # 4 NaN
            "2026-01-02,nope,CL,1\n"          # 5 unknown strategy
            "2026-01-02,trend,FESX,1\n"       # 6 not the strategy's instrument
            "2026-01-02,trend,CL,-inf\n")     # 7 infinite
    with pytest.raises(CsvImportError) as err:
        import_forecasts_csv(env, write(tmp_path, "f.csv", text))
    assert [line for line, _ in err.value.problems] == [3, 4, 5, 6, 7]
    assert "outside [-20, 20]" in str(err.value)
    assert count(env, forecast) == 0
    report = import_forecasts_csv(env, write(tmp_path, "g.csv", "date,strategy,instrument,forecast\n"
                                                                "2026-01-02,trend,SPY,-20\n"))
    assert report.inserted == 1
    assert stored_forecasts(env, None)[("trend", "SPY")].value == D(-20)


def test_imported_forecast_beats_computed(env, tmp_path):
    rows = ["date,instrument,close"]
    day = dt.date(2026, 1, 1)
    for i in range(60):
        day += dt.timedelta(days=1)
        rows.append(f"{day},SPY,{500 + i + (i % 3)}")
        rows.append(f"{day},CL,{70 + (i % 5)}")
    import_prices_csv(env, write(tmp_path, "p.csv", "\n".join(rows) + "\n"))
    computed = {(f.strategy, f.instrument): f for f in compute_forecasts(env)}
    assert computed[("trend", "SPY")].source == "rule" and computed[("trend", "SPY")].value > 0
    assert all(-20 <= f.value <= 20 for f in computed.values())
    import_forecasts_csv(env, write(tmp_path, "f.csv", f"date,strategy,instrument,forecast\n{day},trend,SPY,-3\n"))
    stored = stored_forecasts(env, None)
    assert (stored[("trend", "SPY")].value, stored[("trend", "SPY")].source) == (D(-3), "import")
    again = {(f.strategy, f.instrument): f for f in compute_forecasts(env)}
    assert again[("trend", "SPY")].value == D(-3)  # computing never overwrites an import
    assert stored_forecasts(env, None)[("trend", "SPY")].source == "import"


def test_plugin_rule_from_config(tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text("def always_five(prices):\n    return prices * 0 + 5.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = CONFIG.replace("rules = { ewmac_4_16 = 1 }", "rules = { constant = 0.5, ewmac_4_16 = 0.5 }\nfdm = 1.2") \
        + '\n[rules]\nconstant = "my_rules:always_five"\n'
    init_environment(tmp_path, "paper", "sim", None, config_extra=config)
    env = open_environment(tmp_path, "paper")
    rows = ["date,instrument,close"] + [f"{dt.date(2026, 1, 1) + dt.timedelta(days=i)},{n},{p + i + i % 3}"
                                       for i in range(40) for n, p in (("SPY", 500), ("CL", 70))]
    import_prices_csv(env, write(tmp_path, "p.csv", "\n".join(rows) + "\n"))
    spy = {f.instrument: f for f in compute_forecasts(env)}["SPY"]
    rules = dict(spy.rules)
    assert rules["constant"] == 5.0
    # combined = fdm * (0.5 * 5 + 0.5 * ewmac), capped at 20, rounded to 6 decimals
    expected = min(20.0, 1.2 * (0.5 * 5.0 + 0.5 * rules["ewmac_4_16"]))
    assert spy.value == D(format(round(expected, 6), ".6f"))
