"""The back-adjusted (Panama) series, by hand and from a demo's contract closes and roll dates."""

import datetime as dt
import json
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.futures.panama import panama


def test_panama_by_hand():
    d = [dt.date(2026, 12, day) for day in (14, 15, 16, 17)]
    closes = {("MESZ26", d[0]): D(6000), ("MESZ26", d[1]): D(6010), ("MESZ26", d[2]): D(6020),
              ("MESH27", d[1]): D(6060), ("MESH27", d[2]): D(6075), ("MESH27", d[3]): D(6080)}
    # rolled on the 15th: the gap there is 6060 - 6010 = 50, added to every earlier price
    rows = panama(closes, [(d[0], "MESZ26"), (d[1], "MESH27")])
    assert [(r.date, r.contract, r.raw, r.adjustment, r.price) for r in rows] == [
        (d[0], "MESZ26", D(6000), D(50), D(6050)),
        (d[1], "MESH27", D(6060), D(0), D(6060)),
        (d[2], "MESH27", D(6075), D(0), D(6075)),
        (d[3], "MESH27", D(6080), D(0), D(6080)),
    ]
    # the adjusted series moves exactly as the contracts did, day by day, with no jump at the roll
    assert rows[1].price - rows[0].price == D(6060) - D(6050)
    # planned for the 17th, when MESZ26 has no close: measured on the last day both had one (16th)
    late = panama(closes, [(d[0], "MESZ26"), (d[3], "MESH27")])
    assert [(r.date, r.contract, r.price) for r in late] == [
        (d[0], "MESZ26", D(6055)), (d[1], "MESZ26", D(6065)), (d[2], "MESH27", D(6075)), (d[3], "MESH27", D(6080))]


def test_the_demo_series_is_stored_and_explained(tmp_path):
    home = tmp_path / "home"
    assert CliRunner().invoke(main, ["--home", str(home), "demo", "--days", "14"]).exit_code == 0
    out = CliRunner().invoke(main, ["--home", str(home), "data", "adjusted", "MES", "--last", "200", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    contracts = [r["contract"] for r in rows]
    assert "MESZ26" in contracts and "MESH27" in contracts
    for r in rows:
        assert D(str(r["adjusted"])) == D(str(r["raw"])) + D(str(r["adjustment"]))
    assert D(str(rows[-1]["adjustment"])) == 0  # the latest part is the current contract's own closes


def test_panama_measures_a_weekend_roll_on_the_next_day_with_both_closes():
    fri, mon, tue = dt.date(2026, 12, 11), dt.date(2026, 12, 14), dt.date(2026, 12, 15)
    closes = {("MESZ26", fri): D(6000), ("MESZ26", mon): D(6010), ("MESH27", mon): D(6060),
              ("MESH27", tue): D(6070)}
    rows = panama(closes, [(fri, "MESZ26"), (dt.date(2026, 12, 12), "MESH27")])  # the switch is a Saturday
    assert [(r.date, r.contract, r.price) for r in rows] == [
        (fri, "MESZ26", D(6050)), (mon, "MESH27", D(6060)), (tue, "MESH27", D(6070))]
    with pytest.raises(ValueError, match="need both closes"):  # two contracts never priced on one day
        panama({("MESZ26", fri): D(6000), ("MESH27", tue): D(6070)}, [(fri, "MESZ26"), (mon, "MESH27")])


CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"
ib_symbol = "MES"
trading_class = "MES"
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8
force_days = 2

[strategies.trend]
rules = { ewmac_8_32 = "1" }
instruments = { MES = 1 }
"""


def test_a_roll_gap_is_not_a_trend_signals_read_the_back_adjusted_series(tmp_path):
    """MESH27 trades 300 points over MESZ26 (deep contango). Spliced at the roll, the priced
    contract's closes jump by 300: a trend rule reading them sees a rally. The back-adjusted series
    is the same walk throughout, so the forecast is the walk's own, to the digit; the series kept
    current day by day (appended, rebuilt at the roll, rebuilt for the roll date used) equals a
    rebuild from scratch."""
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from tradeledger.engine import tables
    from tradeledger.engine.futures.panama import rebuild
    from tradeledger.engine.setup.environment import init_environment
    from tradeledger.engine.targets import prices
    from tradeledger.engine.targets.forecasts import compute_forecasts
    from tradeledger.engine.targets.signals import ewmac

    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    config = prices.trading_config(env)
    days = [d for d in (dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(130)) if d.weekday() < 5]
    walk = 6000 + np.cumsum(np.random.default_rng(3).normal(0, 20, len(days)))
    walk = [D(repr(round(float(x) * 4) / 4)) for x in walk]
    switch = dt.date(2026, 12, 10)  # MESZ26's roll window opens: MESH27 is priced from here
    spliced = []
    for day, level in zip(days, walk):
        rows = [f"{day},MESZ26,{level}"] if day <= dt.date(2026, 12, 18) else []
        rows.append(f"{day},MESH27,{level + 300}")
        spliced.append(float(level + 300) if day >= switch else float(level))
        text = "date,contract,close\n" + "\n".join(rows) + "\n"
        prices.store_rows(env, prices.parse_prices_csv(text, config, "USD", "t"), "t")
        if day == dt.date(2026, 12, 14):  # the roll the account traded, recorded as a plan records it
            with env.engine.begin() as conn:
                conn.execute(tables.roll_event.insert().values(instrument="MES", old="MESZ26", new="MESH27",
                                                               date=day.isoformat()))
    # instrument closes as a naive import would splice them: the priced contract's close
    text = "date,instrument,close\n" + "".join(f"{d},MES,{v}\n" for d, v in zip(days, spliced))
    prices.store_rows(env, prices.parse_prices_csv(text, config, "USD", "t"), "t")

    as_of = dt.date(2026, 12, 22)
    upto = [d for d in days if d <= as_of]
    index = pd.DatetimeIndex([pd.Timestamp(d) for d in upto])
    own = ewmac(pd.Series([float(w) for w in walk[:len(upto)]], index=index), 8, 32).iloc[-1]
    naive = ewmac(pd.Series(spliced[:len(upto)], index=index), 8, 32).iloc[-1]
    [forecast] = compute_forecasts(env, as_of)
    assert float(forecast.value) == pytest.approx(own, abs=1e-5)
    assert abs(naive - own) > 5  # what reading the spliced closes would have said

    adj = tables.adjusted_price
    with env.engine.begin() as conn:
        kept = conn.execute(sa.select(adj.c.date, adj.c.contract, adj.c.raw, adj.c.adjustment)
                            .order_by(adj.c.date)).all()
        rebuilt = [(r.date.isoformat(), r.contract, prices.to_scaled(r.raw), prices.to_scaled(r.adjustment))
                   for r in rebuild(env, config, "MES", conn)]
    assert [tuple(r) for r in kept] == rebuilt
    by_day = {r[0]: r for r in kept}
    assert by_day["2026-12-11"][1] == "MESZ26" and by_day["2026-12-14"][1] == "MESH27"  # the roll date used
    assert by_day["2026-12-11"][3] == 300 * 10**9
