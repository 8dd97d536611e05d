"""Unit and property tests for engine/signals.py (EWMAC, scaling, combining, plug-in rules)."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeledger.engine.targets.signals import (
    cap_forecast,
    combine_forecasts,
    ewmac,
    ewmac_raw,
    forecast_scalar,
    load_rule,
    run_rule,
    scale_and_cap,
    validate_forecast,
)


# --- EWMAC ------------------------------------------------------------------------------------


def test_ewmac_raw_hand_worked():
    # prices 1, 2, 4; fast span 2 (alpha 2/3), slow span 4 (alpha 0.4), vol span 3 (alpha 0.5).
    # EWMA fast at t2, weights (1/9, 1/3, 1): (1/9 + 2/3 + 4) / (13/9) = 43/13
    # EWMA slow at t2, weights (0.36, 0.6, 1): (0.36 + 1.2 + 4) / 1.96 = 5.56/1.96
    # price differences 1, 2 with weights (0.5, 1): mean 5/3, biased var 2/9,
    # bias correction 1.5^2 / (1.5^2 - 1.25) = 2.25 -> var 0.5, std sqrt(0.5)
    raw = ewmac_raw(pd.Series([1.0, 2.0, 4.0]), fast=2, slow=4, vol_span=3)
    expected = (43 / 13 - 5.56 / 1.96) / math.sqrt(0.5)
    assert math.isnan(raw.iloc[0]) and math.isnan(raw.iloc[1])  # vol needs two differences
    assert raw.iloc[2] == pytest.approx(expected, rel=1e-12)
    assert raw.iloc[2] == pytest.approx(0.666035, abs=1e-6)  # 0.470958 / 0.707107


def test_ewmac_sign_follows_trend_and_is_scaled_and_capped():
    rng = np.random.default_rng(7)
    steps = rng.normal(0.0, 1.0, 600)
    up = pd.Series(1000 + np.cumsum(steps + 0.3))
    down = pd.Series(1000 + np.cumsum(steps - 0.3))
    f_up, f_down = ewmac(up, 16, 64), ewmac(down, 16, 64)
    assert f_up.iloc[-1] > 0 > f_down.iloc[-1]
    for f in (f_up, f_down):
        values = f.dropna()
        assert values.abs().max() <= 20
        assert values.abs().mean() <= 10 + 1e-9  # exactly 10 before capping, capping only lowers


def test_ewmac_flat_price_has_no_signal_rather_than_infinite():
    raw = ewmac_raw(pd.Series([100.0] * 50), 8, 32)
    assert raw.isna().all()
    with pytest.raises(ValueError, match="forecast scalar"):
        ewmac(pd.Series([100.0] * 50), 8, 32)


@pytest.mark.parametrize(
    "fast, slow, vol_span, message",
    [(64, 16, 35, "shorter"), (0, 16, 35, "positive integer"), (2, 8, 1.5, "vol_span"),
     (True, 8, 35, "fast")],
)
def test_ewmac_bad_spans(fast, slow, vol_span, message):
    with pytest.raises(ValueError, match=message):
        ewmac_raw(pd.Series([1.0, 2.0, 3.0]), fast, slow, vol_span)


def test_ewmac_bad_prices():
    with pytest.raises(ValueError, match="pandas Series"):
        ewmac([1.0, 2.0], 2, 8)
    with pytest.raises(ValueError, match="not numeric"):
        ewmac(pd.Series(["a", "b"]), 2, 8)
    with pytest.raises(ValueError, match="infinite"):
        ewmac(pd.Series([1.0, np.inf, 2.0]), 2, 8)


def test_forecast_scalar_and_scaling_hand_worked():
    raw = pd.Series([1.0, -2.0, 3.0, np.nan])
    assert forecast_scalar(raw) == 5.0  # 10 / mean(1, 2, 3)
    scaled = scale_and_cap(pd.Series([1.0, -2.0, 5.0]), scalar=5.0)
    assert scaled.tolist() == [5.0, -10.0, 20.0]  # 25 capped at 20
    with pytest.raises(ValueError, match="> 0"):
        scale_and_cap(raw, scalar=-1.0)
    with pytest.raises(ValueError, match="finite"):
        scale_and_cap(raw, scalar=float("nan"))


def test_fixed_scalar_is_used_as_given():
    prices = pd.Series(np.linspace(100, 200, 300) + np.sin(np.arange(300)))
    raw = ewmac_raw(prices, 8, 32)
    assert ewmac(prices, 8, 32, scalar=0.5).equals(scale_and_cap(raw, 0.5))


# --- single forecasts -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 10, -20, 20, 12.5, np.float64(-3.0)])
def test_validate_forecast_accepts(value):
    assert validate_forecast(value) == float(value)


@pytest.mark.parametrize(
    "value, message",
    [(float("nan"), "NaN"), (float("inf"), "infinite"), (-float("inf"), "infinite"),
     (20.0001, "outside"), (-25, "outside"), ("10", "real number"), (None, "real number"),
     (True, "real number")],
)
def test_validate_forecast_refuses(value, message):
    with pytest.raises(ValueError, match=message):
        validate_forecast(value)


def test_cap_forecast():
    assert cap_forecast(35.0) == 20.0 and cap_forecast(-35.0) == -20.0 and cap_forecast(7) == 7
    with pytest.raises(ValueError, match="non-finite"):
        cap_forecast(float("nan"))


# --- combining --------------------------------------------------------------------------------


def test_combine_forecasts_hand_worked():
    # (0.6 * 10 + 0.4 * -5) * 1.2 = 4 * 1.2 = 4.8
    assert combine_forecasts({"a": 10, "b": -5}, {"a": 0.6, "b": 0.4}, fdm=1.2) == pytest.approx(4.8)
    # (0.5 * 20 + 0.5 * 20) * 1.5 = 30 -> capped at 20
    assert combine_forecasts({"a": 20, "b": 20}, {"a": 0.5, "b": 0.5}, fdm=1.5) == 20.0


@pytest.mark.parametrize(
    "forecasts, weights, fdm, message",
    [({}, {}, 1.0, "no forecasts"),
     ({"a": 1.0}, {"b": 1.0}, 1.0, "do not match"),
     ({"a": 1.0, "b": 2.0}, {"a": 1.0}, 1.0, "no weight for \\['b'\\]"),
     ({"a": 1.0}, {"a": 0.5}, 1.0, "sum to 1"),
     ({"a": 1.0, "b": 1.0}, {"a": 1.5, "b": -0.5}, 1.0, "negative"),
     ({"a": float("nan")}, {"a": 1.0}, 1.0, "rule 'a'.*NaN"),
     ({"a": 30.0}, {"a": 1.0}, 1.0, "outside"),
     ({"a": 1.0}, {"a": 1.0}, 0.0, "> 0"),
     ({"a": 1.0}, {"a": 1.0}, float("inf"), "finite")],
)
def test_combine_forecasts_refuses(forecasts, weights, fdm, message):
    with pytest.raises(ValueError, match=message):
        combine_forecasts(forecasts, weights, fdm)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-20, 20), min_size=1, max_size=6),
    st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6),
    st.floats(1.0, 2.5),
)
def test_combined_forecast_is_capped_and_between_bounds(values, raw_weights, fdm):
    names = [f"r{i}" for i in range(len(values))]
    total = sum(raw_weights[: len(values)])
    weights = {n: w / total for n, w in zip(names, raw_weights)}
    # weights normalised by float division may miss 1 by an ulp or two; the tolerance allows it
    combined = combine_forecasts(dict(zip(names, values)), weights, fdm)
    assert -20 <= combined <= 20
    plain = sum(weights[n] * v for n, v in zip(names, values))
    assert combined == pytest.approx(max(-20, min(20, plain * fdm)), abs=1e-9)


# --- plug-in rules ----------------------------------------------------------------------------


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "tl_test_rules.py").write_text(textwrap.dedent("""
        import pandas as pd
        THRESHOLD = 3
        def constant(prices):
            return pd.Series(5.0, index=prices.index)
        def unscaled(prices):
            return prices * 100
        def not_series(prices):
            return [1, 2]
        class Rules:
            @staticmethod
            def warmup(prices):
                s = pd.Series(-7.0, index=prices.index)
                s.iloc[0] = float("nan")
                return s
    """))
    (tmp_path / "tl_broken_rules.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tl_test_rules"
    for name in ("tl_test_rules", "tl_broken_rules"):
        sys.modules.pop(name, None)


def test_load_rule_and_run(plugin_module):
    prices = pd.Series([1.0, 2.0, 3.0])
    rule = load_rule(f"{plugin_module}:constant")
    assert run_rule(rule, prices).tolist() == [5.0, 5.0, 5.0]
    warm = run_rule(load_rule(f"{plugin_module}:Rules.warmup"), prices)
    assert math.isnan(warm.iloc[0]) and warm.iloc[1:].tolist() == [-7.0, -7.0]
    assert load_rule("tradeledger.engine.targets.signals:ewmac") is ewmac


@pytest.mark.parametrize(
    "spec, message",
    [("no_colon", "form 'module:function'"), (":f", "form"), ("mod:", "form"),
     ("a:b:c", "form"), (42, "must be a string"),
     ("tl_no_such_module_xyz:f", "module 'tl_no_such_module_xyz' not found"),
     ("tl_test_rules:missing", "no attribute 'missing'"),
     ("tl_test_rules:THRESHOLD", "not callable"),
     ("tl_broken_rules:f", "importing 'tl_broken_rules' failed.*boom")],
)
def test_load_rule_errors(plugin_module, spec, message):
    with pytest.raises(ValueError, match=message):
        load_rule(spec)


def test_run_rule_refuses_bad_output(plugin_module):
    prices = pd.Series([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="not a pandas Series"):
        run_rule(load_rule(f"{plugin_module}:not_series"), prices)
    with pytest.raises(ValueError, match="outside"):
        run_rule(load_rule(f"{plugin_module}:unscaled"), prices)
