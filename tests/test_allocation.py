"""Allocation strategies: weights by rule or file, whole shares, rebalanced only past the band.

Worked by hand (capital 100,000, band min(0.05, 0.25 x weight)):
  SPY weight 0.40 at 500 -> floor(40,000 / 500) = 80 shares
  TLT weight 0.30 at 90  -> floor(30,000 / 90) = 333 shares (29,970; 30 left in cash)
  GLD weight 0.00        -> 0 shares
Held SPY 84 (weight 0.42, drift 0.02 < band 0.05): no trade. Held TLT 250 (0.225, drift -0.075
> band 0.05): trade to 333. Held GLD 10 at 200 (0.02, band 0): sell all.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pandas as pd
import pytest

from tradeledger.engine.setup.config import AllocationSpec
from tradeledger.engine.setup.environment import ConfigError, init_environment
from tradeledger.engine.targets.allocation import (
    AllocationError, import_weights_csv, momentum_weights, size_allocation, validate_weights,
)
from tradeledger.engine.targets.prices import CsvImportError, import_prices_csv, trading_config
from tradeledger.engine.targets.runs import compute_run, show_run

SPEC = AllocationSpec(band_abs=D("0.05"), band_rel=D("0.25"))
ETFS = ("SPY", "TLT", "GLD", "EFA", "IEF")


def test_size_allocation_by_hand():
    lines = size_allocation(
        D(100000), {"SPY": D("0.4"), "TLT": D("0.3"), "GLD": D(0)},
        {"SPY": D(500), "TLT": D(90), "GLD": D(200)}, {"SPY": D(1), "TLT": D(1), "GLD": D(1)},
        {"SPY": D(84), "TLT": D(250), "GLD": D(10)}, SPEC)
    by = {line.ticker: line for line in lines}
    assert (by["SPY"].target, by["SPY"].explain["rebalance"]) == (D(84), False)  # inside its band
    assert by["SPY"].explain["drift"] == "0.02" and by["SPY"].explain["band"] == "0.05"
    assert (by["TLT"].target, by["TLT"].explain["rebalance"]) == (D(333), True)
    assert by["TLT"].explain["cash_left"] == "30"
    assert (by["GLD"].target, by["GLD"].explain["band"]) == (D(0), "0")


def test_relative_band_is_the_tighter_one_for_small_weights():
    # weight 0.08: band = min(0.05, 0.25 x 0.08 = 0.02); held 0.105 -> drift 0.025 > 0.02: trade
    (line,) = size_allocation(D(100000), {"EFA": D("0.08")}, {"EFA": D(100)}, {"EFA": D(1)}, {"EFA": D(105)}, SPEC)
    assert line.explain["band"] == "0.02" and line.target == D(80)


def test_momentum_top_n_with_absolute_filter():
    idx = pd.date_range("2026-01-01", periods=4)
    closes = {"SPY": pd.Series([100, 101, 102, 110.0], idx), "TLT": pd.Series([100, 99, 98, 95.0], idx),
              "GLD": pd.Series([100, 100, 101, 105.0], idx), "EFA": pd.Series([100, 100, 100, 100.0], idx)}
    weights, returns = momentum_weights(closes, AllocationSpec(lookback=3, top_n=3))
    assert returns == {"SPY": "0.1", "TLT": "-0.05", "GLD": "0.05", "EFA": "0"}
    third = D(1) / 3
    assert weights == {"SPY": third, "GLD": third, "TLT": D(0), "EFA": D(0)}  # EFA at 0 is filtered out
    weights, _ = momentum_weights(closes, AllocationSpec(lookback=3, top_n=3, absolute_filter=False))
    assert weights["EFA"] == third and weights["TLT"] == 0


def test_weights_are_validated():
    with pytest.raises(AllocationError, match="not in its instruments"):
        validate_weights("t", {"QQQ": D("0.1")}, {"SPY"})
    with pytest.raises(AllocationError, match="sum to 1.1"):
        validate_weights("t", {"SPY": D("0.6"), "TLT": D("0.5")}, {"SPY", "TLT"})
    with pytest.raises(AllocationError, match="not in \\[0, 1\\]"):
        validate_weights("t", {"SPY": D("-0.1")}, {"SPY"})


CONFIG = "".join(f'\n[instruments.{t}]\ntype = "share"\ncurrency = "USD"\nexchange = "ARCA"\n' for t in ETFS) + """
[portfolio]
capital = 100000

[strategies.tactical]
kind = "allocation"
instruments = { SPY = 1, TLT = 1, GLD = 1, EFA = 1, IEF = 1 }

[strategies.tactical.allocation]
rule = "momentum"
lookback = 20
top_n = 2
band_abs = 0.05
band_rel = 0.25

[strategies.manual]
kind = "allocation"
instruments = { SPY = 1, TLT = 1 }
capital_share = 0.5

[strategies.manual.allocation]
rule = "file"
"""


@pytest.fixture
def env(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    rows = ["date,instrument,close"]
    start = dt.date(2026, 10, 1)
    for day in range(40):
        d = start + dt.timedelta(days=day)
        growth = {"SPY": 1 + 0.004 * day, "TLT": 1 - 0.002 * day, "GLD": 1 + 0.002 * day, "EFA": 1 + 0.001 * day,
                  "IEF": 1 - 0.001 * day}
        base = {"SPY": 500, "TLT": 90, "GLD": 200, "EFA": 80, "IEF": 95}
        rows += [f"{d},{t},{base[t] * growth[t]:.2f}" for t in ETFS]
    (tmp_path / "closes.csv").write_text("\n".join(rows) + "\n")
    import_prices_csv(env, tmp_path / "closes.csv")
    return env


def test_a_run_sizes_allocation_lines_and_explains_them(env, tmp_path):
    (tmp_path / "w.csv").write_text("date,strategy,ticker,weight\n2026-11-01,manual,SPY,0.5\n2026-11-01,manual,TLT,0.5\n")
    assert import_weights_csv(env, tmp_path / "w.csv", trading_config(env)) == 1
    assert import_weights_csv(env, tmp_path / "w.csv", trading_config(env)) == 0  # a replay adds nothing
    run_id = compute_run(env, as_of=dt.date(2026, 11, 9), now=dt.datetime(2026, 11, 9, 12, tzinfo=dt.timezone.utc))
    run = show_run(env, run_id, now=dt.datetime(2026, 11, 9, 13, tzinfo=dt.timezone.utc))
    lines = {(line.strategy, line.instrument): line for line in run.lines}
    # momentum over 20 closes: SPY and GLD rose most; capital 100,000, each 0.5
    spy = lines[("tactical", "SPY")]
    assert spy.explain["target_weight"] == "0.5" and spy.explain["weights_source"]["rule"] == "momentum"
    price = D(spy.explain["price"])
    assert spy.target == (D(50000) / price).to_integral_value(rounding="ROUND_FLOOR")
    assert lines[("tactical", "TLT")].target == 0 and lines[("tactical", "GLD")].target > 0
    # the file strategy: capital 50,000 (share 0.5), 0.5 each
    assert lines[("manual", "SPY")].explain["weights_source"] == {"rule": "file", "weights_date": "2026-11-01"}
    assert lines[("manual", "SPY")].target == (D(25000) / price).to_integral_value(rounding="ROUND_FLOOR")


def test_a_weights_file_with_bad_lines_is_refused_whole(env, tmp_path):
    (tmp_path / "w.csv").write_text("date,strategy,ticker,weight\n"
                                    "2026-11-01,manual,SPY,0.7\n2026-11-01,manual,TLT,0.5\n"
                                    "2026-11-01,manual,QQQ,0.1\n2026-11-02,tactical2,SPY,0.1\n")
    with pytest.raises(CsvImportError) as info:
        import_weights_csv(env, tmp_path / "w.csv", trading_config(env))
    assert [line for line, _ in info.value.problems] == [2, 4, 5]


def test_allocation_of_futures_is_refused_in_config(tmp_path):
    bad = CONFIG + '\n[instruments.ES]\ntype = "future"\ncurrency = "USD"\nmultiplier = 50\n' \
                   '\n[strategies.bad]\nkind = "allocation"\ninstruments = { ES = 1 }\n'
    with pytest.raises(ConfigError, match="config.toml: strategies.bad: .*not futures"):  # as the file is read
        init_environment(tmp_path / "h2", "paper", "sim", None, config_extra=bad)


def _trade_run(env, session, day, now):
    from tradeledger.engine.targets.runs import approve_run
    from tradeledger.engine.trading.cycle import submit_run, wait_for_fills

    run_id = compute_run(env, as_of=day, now=now)
    approve_run(env, run_id, "test", "reviewed", now)
    order_plan = submit_run(session, run_id, now).plan
    wait_for_fills(session, run_id, timeout=10)
    return run_id, {cp.contract.code: cp for cp in order_plan.contracts if cp.side}


def test_a_rebalance_inside_the_band_sends_nothing_and_one_past_it_trades(env, tmp_path):
    """Day 1 buys the momentum weights; day 2, prices barely moved: every line is inside its band
    and no order is planned; day 3, SPY jumped 30%: its weight drifted past the band and only the
    lines past their bands trade."""
    from tradeledger.engine.setup.session import Session
    from tradeledger.engine.trading.orders import holder_positions

    (tmp_path / "w.csv").write_text("date,strategy,ticker,weight\n2026-11-01,manual,SPY,0.5\n2026-11-01,manual,TLT,0.5\n")
    import_weights_csv(env, tmp_path / "w.csv", trading_config(env))
    session = Session(env)
    utc = dt.timezone.utc
    try:
        session.exchange().set_commission(D(0))
        _, orders = _trade_run(env, session, dt.date(2026, 11, 9), dt.datetime(2026, 11, 9, 15, tzinfo=utc))
        assert {"SPY", "TLT", "GLD"} <= set(orders)
        held = {k: v for k, v in holder_positions(env.ledger, env.chart).items() if v}
        assert held[("Manual", "TLT")] > 0 and held[("Tactical", "SPY")] > 0

        (tmp_path / "day2.csv").write_text("date,instrument,close\n" + "".join(
            f"2026-11-10,{t},{p}\n" for t, p in (("SPY", "578.5"), ("TLT", "82.9"), ("GLD", "215.8"), ("EFA", "83.2"),
                                                   ("IEF", "91.2"))))
        import_prices_csv(env, tmp_path / "day2.csv")
        run2, orders2 = _trade_run(env, session, dt.date(2026, 11, 10), dt.datetime(2026, 11, 10, 15, tzinfo=utc))
        assert orders2 == {}, orders2
        lines = show_run(env, run2, now=dt.datetime(2026, 11, 10, 16, tzinfo=utc)).lines
        assert all(not line.explain["rebalance"] for line in lines if line.strategy == "manual")

        (tmp_path / "day3.csv").write_text("date,instrument,close\n" + "".join(
            f"2026-11-11,{t},{p}\n" for t, p in (("SPY", "750"), ("TLT", "82.9"), ("GLD", "215.8"), ("EFA", "83.2"),
                                                   ("IEF", "91.2"))))
        import_prices_csv(env, tmp_path / "day3.csv")
        session.exchange().set_price("SPY", D(750))
        run3, orders3 = _trade_run(env, session, dt.date(2026, 11, 11), dt.datetime(2026, 11, 11, 15, tzinfo=utc))
        lines = {(line.strategy, line.instrument): line
                 for line in show_run(env, run3, now=dt.datetime(2026, 11, 11, 16, tzinfo=utc)).lines}
        spy = lines[("manual", "SPY")]
        assert spy.explain["rebalance"] is True and D(spy.explain["drift"]) > D(spy.explain["band"])
        assert "SPY" in orders3 and orders3["SPY"].side == "SELL"
    finally:
        session.close()


PLUGIN = '''
import datetime as dt


def weights(closes, as_of):
    """Inverse of each ETF's last close, scaled to sum to 0.9 (a rule a user might write)."""
    assert isinstance(as_of, dt.date) and set(closes.columns) == {"TLT", "IEF"}
    inverse = {t: 1 / float(closes[t].iloc[-1]) for t in closes.columns}
    total = sum(inverse.values())
    return {t: round(0.9 * v / total, 4) for t, v in inverse.items()}


def too_much(closes, as_of):
    return {t: 0.8 for t in closes.columns}
'''


def test_a_plug_in_rules_weights_size_the_run_and_bad_ones_are_refused(tmp_path, monkeypatch):
    """A plug-in `module:function` gets the closes and the run's date; its weights are the run's target
    weights (shown in targets show), sized in whole shares from the strategy's capital; weights summing
    past 1 are refused like a bad file."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "tl_test_rule.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    config = CONFIG + '''
[strategies.plug]
kind = "allocation"
instruments = { TLT = 1, IEF = 1 }
capital_share = 0.2

[strategies.plug.allocation]
rule = "tl_test_rule:weights"
'''
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=config)
    rows = ["date,instrument,close"] + [f"2026-11-0{d},{t},{p}" for d in (2, 3) for t, p in
                                        (("SPY", 500), ("TLT", 90), ("GLD", 200), ("EFA", 80), ("IEF", 95))]
    rows += [f"2026-10-{d:02d},{t},{p}" for d in range(1, 31) for t, p in
             (("SPY", 500), ("TLT", 90), ("GLD", 200), ("EFA", 80), ("IEF", 95))]
    (tmp_path / "closes.csv").write_text("\n".join(rows) + "\n")
    import_prices_csv(env, tmp_path / "closes.csv")
    (tmp_path / "w.csv").write_text("date,strategy,ticker,weight\n2026-11-01,manual,SPY,0.5\n")
    import_weights_csv(env, tmp_path / "w.csv", trading_config(env))
    now = dt.datetime(2026, 11, 3, 12, tzinfo=dt.timezone.utc)
    run = show_run(env, compute_run(env, as_of=dt.date(2026, 11, 3), now=now), now=now)
    lines = {line.instrument: line for line in run.lines if line.strategy == "plug"}
    # 1/90 and 1/95 scaled to 0.9: TLT 0.9 x 95 / 185 = 0.4622, IEF 0.9 x 90 / 185 = 0.4378
    assert lines["TLT"].explain["weights_source"] == {"rule": "tl_test_rule:weights"}
    assert D(lines["TLT"].explain["target_weight"]) == D("0.4622")
    assert D(lines["IEF"].explain["target_weight"]) == D("0.4378")
    capital = D(100000) * D("0.2")
    assert lines["TLT"].target == (capital * D("0.4622") / 90).to_integral_value(rounding="ROUND_FLOOR")  # 102
    assert lines["IEF"].target == (capital * D("0.4378") / 95).to_integral_value(rounding="ROUND_FLOOR")  # 92

    spec = AllocationSpec(rule="tl_test_rule:too_much")
    from tradeledger.engine.targets.allocation import target_weights

    strategy = trading_config(env).strategies["plug"]
    import dataclasses

    with pytest.raises(AllocationError, match="sum to 1.6"):
        target_weights(dataclasses.replace(strategy, allocation=spec), {"TLT": pd.Series([90.0]),
                                                                         "IEF": pd.Series([95.0])},
                       dt.date(2026, 11, 3), None)
