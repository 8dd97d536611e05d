"""Unit and property tests for engine/sizing.py (volatility targeting with a position buffer)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tradeledger.engine.targets.sizing import SizingInput, size_position


def base(**overrides) -> SizingInput:
    # Hand-worked case, micro bitcoin (multiplier 0.1, USD base):
    #   block value      = 80,000 * 0.1 * 0.01          = 80 USD per 1% move
    #   price vol        = 1,600 / 80,000 * 100          = 2 %
    #   instr. ccy vol   = 80 * 2 = 1,600 * 0.1          = 160 USD a day per contract
    #   daily cash target= 1,024,000 * 0.5 * 0.20 / 16   = 6,400 USD
    #   vol scalar       = 6,400 / 160                   = 40 contracts at forecast 10
    #   average position = 40 * 0.5 * 1.5                = 30, buffer width 0.10 * 30 = 3
    fields = dict(
        capital=D("1024000"), capital_share=D("0.5"), annual_risk_target=D("0.20"),
        instrument_weight=D("0.5"), idm=D("1.5"), forecast=10.0, price=D("80000"),
        multiplier=D("0.1"), fx_rate=D("1"), daily_price_vol=D("1600"),
        buffer_fraction=D("0.10"), current=D("0"),
    )
    fields.update(overrides)
    return SizingInput(**fields)


def test_hand_worked_intermediates():
    r = size_position(base())
    assert r.block_value == D("80")
    assert r.price_vol_pct == D("2")
    assert r.instrument_currency_vol == D("160")
    assert r.value_vol == D("160")
    assert r.daily_cash_vol_target == D("6400")
    assert r.vol_scalar == D("40")
    assert r.subsystem_position == D("40")
    assert r.average_position == D("30")
    assert r.unrounded_target == D("30")
    assert r.buffer_width == D("3")
    assert (r.buffer_lower, r.buffer_upper) == (D("27"), D("33"))
    # from flat, trade only to the lower edge of the buffer
    assert r.target == D("27") and r.change == D("27")
    assert r.contract_notional == D("8000")
    assert r.notional_exposure == D("216000")


def test_hand_worked_forecast_12_3_and_the_buffer():
    # subsystem 40 * 12.3 / 10 = 49.2; unrounded 49.2 * 0.75 = 36.9; width still 3 (average
    # position, independent of the forecast): buffer [33.9, 39.9]
    r = size_position(base(forecast=12.3))
    assert r.forecast == D("12.3")  # Decimal(str(12.3)), not the binary float
    assert r.unrounded_target == D("36.9")
    assert (r.buffer_lower, r.buffer_upper) == (D("33.9"), D("39.9"))
    assert r.target == D("34")  # from 0 up to 33.9, rounded up toward 36.9
    high = size_position(base(forecast=12.3, current=D("45")))
    assert high.target == D("39") and high.change == D("-6")  # down to 39.9, rounded down
    inside = size_position(base(forecast=12.3, current=D("36")))
    assert inside.target == D("36") and inside.change == D("0") and inside.within_buffer


def test_negative_forecast_goes_short():
    r = size_position(base(forecast=-5.0, current=D("2")))
    # unrounded -15, buffer [-18, -12]; from +2 down to the upper edge -12
    assert r.unrounded_target == D("-15") and r.target == D("-12") and r.change == D("-14")


def test_fx_converts_volatility_to_base():
    # a EUR contract with a USD base at 1.25: value vol 160 * 1.25 = 200, vol scalar 32
    r = size_position(base(fx_rate=D("1.25"), buffer_fraction=D("0")))
    assert r.value_vol == D("200") and r.vol_scalar == D("32")
    assert r.unrounded_target == D("24") and r.target == D("24")


def test_zero_buffer_rounds_to_nearest_whole_contract():
    # unrounded 30 * 0.93 = 27.9 with no buffer: the edge 27.9 rounded "toward the optimum"
    # would be 28 anyway; and 27.4 rounds to 27, not up to 28 past the optimum.
    assert size_position(base(forecast=9.3, buffer_fraction=D("0"))).target == D("28")
    r = size_position(base(forecast=9.1333, buffer_fraction=D("0")))
    assert r.unrounded_target == D("27.39990") and r.target == D("27")


def test_narrow_buffer_without_a_whole_number_inside():
    # unrounded 27.39990, width 0.01 * 30 = 0.3 -> [27.0999, 27.6999]: 27 is below, 28 above;
    # rounding the lower edge up would give 28, past the optimum and outside the buffer.
    r = size_position(base(forecast=9.1333, buffer_fraction=D("0.01"), current=D("20")))
    assert r.target == D("27")


def test_futures_with_negative_price_size_on_the_absolute_price():
    futures = base(price=D("-40"), multiplier=D("1000"), daily_price_vol=D("2"))
    with pytest.raises(ValueError, match="allow_nonpositive_price"):
        size_position(futures)
    r = size_position(futures, allow_nonpositive_price=True)
    # icv = 2 * 1000 = 2000; vol scalar 6400 / 2000 = 3.2; unrounded 3.2 * 0.75 = 2.4
    assert r.block_value == D("400") and r.instrument_currency_vol == D("2000")
    assert r.unrounded_target == D("2.4") and r.contract_notional == D("40000")
    assert size_position(replace(futures, allow_nonpositive_price=True)).target == r.target
    zero = size_position(replace(futures, price=D("0"), allow_nonpositive_price=True))
    assert zero.price_vol_pct is None and zero.unrounded_target == D("2.4")


def test_ints_are_accepted_as_exact_decimals():
    r = size_position(base(capital=1024000, current=5))
    assert r.inputs.capital == D("1024000") and isinstance(r.inputs.current, D)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(daily_price_vol=D("0")), "daily_price_vol must be > 0"),
        (dict(daily_price_vol=D("-1")), "daily_price_vol must be > 0"),
        (dict(multiplier=D("0")), "multiplier must be > 0"),
        (dict(price=D("0")), "price must be > 0"),
        (dict(price=D("-5")), "price must be > 0"),
        (dict(price=D("NaN")), "price must be finite"),
        (dict(capital=D("Infinity")), "capital must be finite"),
        (dict(fx_rate=D("sNaN")), "fx_rate must be finite"),
        (dict(fx_rate=D("0")), "fx_rate must be > 0"),
        (dict(capital=1024000.0), "capital must be a Decimal, got float"),
        (dict(forecast=float("nan")), "NaN"),
        (dict(forecast=float("inf")), "infinite"),
        (dict(forecast=21.0), "outside"),
        (dict(current=D("1.5")), "whole contracts"),
        (dict(capital_share=D("1.5")), "capital_share"),
        (dict(capital=D("-1")), "capital must be >= 0"),
        (dict(annual_risk_target=D("0")), "annual_risk_target"),
        (dict(idm=D("0")), "idm"),
        (dict(instrument_weight=D("-0.1")), "instrument_weight"),
        (dict(buffer_fraction=D("-0.1")), "buffer_fraction"),
    ],
)
def test_bad_inputs_raise_with_a_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        size_position(base(**overrides))


def test_inputs_are_keyword_only_and_current_is_required():
    with pytest.raises(TypeError):
        SizingInput(D(1), D(1), D("0.2"), D(1), D(1), 10.0, D(1), D(1), D(1), D(1))  # type: ignore[misc]
    fields = {f: v for f, v in base().__dict__.items() if f != "current"}
    with pytest.raises(TypeError):
        SizingInput(**fields)


# --- properties -------------------------------------------------------------------------------

decimals = lambda lo, hi, places: st.decimals(lo, hi, places=places, allow_nan=False, allow_infinity=False)  # noqa: E731
forecasts = st.floats(-20, 20, allow_nan=False).map(lambda f: round(f, 4))


@st.composite
def sizing_inputs(draw):
    return base(
        capital=draw(decimals("1000", "10000000", 2)),
        capital_share=draw(decimals("0.01", "1", 2)),
        annual_risk_target=draw(decimals("0.05", "0.5", 2)),
        instrument_weight=draw(decimals("0.01", "1", 2)),
        idm=draw(decimals("1", "2.5", 2)),
        forecast=draw(forecasts),
        price=draw(decimals("1", "100000", 2)),
        multiplier=draw(st.sampled_from([D("0.1"), D("1"), D("5"), D("50")])),
        fx_rate=draw(decimals("0.5", "2", 4)),
        daily_price_vol=draw(decimals("0.01", "5000", 2)),
        buffer_fraction=draw(decimals("0", "0.5", 2)),
        current=D(draw(st.integers(-200, 200))),
    )


@settings(max_examples=200, deadline=None)
@given(sizing_inputs(), forecasts, forecasts)
def test_target_is_monotone_in_forecast(inp, f1, f2):
    lo, hi = sorted((f1, f2))
    r_lo, r_hi = size_position(replace(inp, forecast=lo)), size_position(replace(inp, forecast=hi))
    assert r_lo.unrounded_target <= r_hi.unrounded_target
    assert r_lo.target <= r_hi.target


@settings(max_examples=200, deadline=None)
@given(sizing_inputs())
def test_buffer_never_trades_from_inside_and_targets_are_whole(inp):
    r = size_position(inp)
    assert r.target == r.target.to_integral_value()
    assert r.change == r.target - inp.current
    if r.buffer_lower <= inp.current <= r.buffer_upper:
        assert r.change == 0
    else:
        assert r.change != 0 or abs(r.unrounded_target - inp.current) <= D("0.5")
        # trades toward the optimum, never past it by a whole contract or more
        if inp.current < r.buffer_lower:
            assert inp.current <= r.target < r.unrounded_target + 1
        else:
            assert r.unrounded_target - 1 < r.target <= inp.current


@settings(max_examples=200, deadline=None)
@given(sizing_inputs())
def test_target_lands_inside_the_buffer_when_a_whole_number_fits(inp):
    r = size_position(inp)
    lower_whole = r.buffer_lower.to_integral_value(rounding="ROUND_CEILING")
    if lower_whole <= r.buffer_upper:
        assert r.buffer_lower <= r.target <= r.buffer_upper


@settings(max_examples=200, deadline=None)
@given(sizing_inputs())
def test_sizing_is_sign_symmetric(inp):
    assume(inp.forecast != 0)
    r = size_position(inp)
    mirror = size_position(replace(inp, forecast=-inp.forecast, current=-inp.current))
    assert mirror.unrounded_target == -r.unrounded_target
    # half-to-even rounding is symmetric too, so the whole decision mirrors
    assert mirror.target == -r.target
