"""Trading rules and forecasts: the first link of the chain, signals -> target positions.

A *forecast* is a dimensionless number saying how strongly, and in which direction, a rule wants
to hold an instrument. Following Carver ("Systematic Trading"), forecasts live on one common
scale whatever the rule:

* the long-run average of the absolute forecast is 10 ("an average bet");
* forecasts are capped at +/-20 (at most twice an average bet), so one rule or one wild day can
  never ask for an unbounded position;
* sizing (engine/sizing.py) multiplies the position for an average bet by ``forecast / 10``.

Forecasts are plain floats. They are not money and not quantities: they are turned into whole
contracts, as ``Decimal``, only by sizing.

EWMAC (exponentially weighted moving average crossover) is the built-in trend rule::

    raw_t      = (EWMA(price, span=fast)_t - EWMA(price, span=slow)_t) / sigma_t
    sigma_t    = EW standard deviation (span=vol_span) of daily price *differences*
    forecast_t = clip(scalar * raw_t, -20, +20)

Dividing by the volatility of price changes (in price units, not percent) makes the raw value
comparable across instruments and through time: a crossover of one daily standard deviation
means the same thing for a micro bitcoin contract and for an ETF.

The forecast scalar is a fixed number per rule variation, estimated from the history as
``10 / mean(|raw|)`` unless one is given. Note what this means: estimated from the *whole*
history, it uses information from the end of the series to scale its beginning, which is fine
for producing today's forecast (the last value) but is look-ahead in a backtest. Pass a fixed
``scalar`` (e.g. one estimated once over a long pooled history and recorded with the run) when
that matters; the scalar actually used is part of what a reviewer should see.

Plug-in rules: any callable ``rule(prices: pd.Series) -> pd.Series`` named by a
``"package.module:function"`` spec can be loaded with `load_rule`, and its output checked with
`run_rule`. Every single forecast that leaves this module should pass `validate_forecast`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from numbers import Real

import numpy as np
import pandas as pd

from tradeledger.errors import UserError

AVERAGE_ABS_FORECAST = 10.0
FORECAST_CAP = 20.0

Rule = Callable[[pd.Series], pd.Series]


# ---------------------------------------------------------------------------------------------
# Single forecasts


def validate_forecast(x: object) -> float:
    """Return `x` as a float if it is a usable forecast, else raise UserError saying why.

    A usable forecast is a finite real number within [-20, 20]. Booleans are refused (``True``
    is an int in Python, but never a forecast); Decimal is accepted and converted.
    """
    if isinstance(x, bool) or not isinstance(x, (Real, Decimal)):
        raise UserError(f"forecast must be a real number, got {type(x).__name__} {x!r}")
    value = float(x)
    if math.isnan(value):
        raise UserError("forecast is NaN (no signal); refuse to size on it")
    if math.isinf(value):
        raise UserError(f"forecast is infinite ({value}); refuse to size on it")
    if not -FORECAST_CAP <= value <= FORECAST_CAP:
        raise UserError(
            f"forecast {value} is outside [-{FORECAST_CAP:g}, {FORECAST_CAP:g}]; cap it first"
        )
    return value


def cap_forecast(x: float, cap: float = FORECAST_CAP) -> float:
    """Clip a finite forecast to [-cap, cap]. NaN and inf are errors, never silently capped."""
    value = float(x)
    if not math.isfinite(value):
        raise UserError(f"cannot cap a non-finite forecast ({value})")
    return max(-cap, min(cap, value))


def combine_forecasts(
    forecasts: Mapping[str, float], weights: Mapping[str, float], fdm: float = 1.0
) -> float:
    """Combine several rules' forecasts for one instrument into one forecast.

    ``combined = clip(fdm * sum(weight[r] * forecast[r]), -20, 20)``

    The weights must name exactly the rules in `forecasts`, be non-negative and sum to 1: a
    rule with a weight but no forecast (or the reverse) is a configuration error that must be
    seen, not papered over by renormalising. The forecast diversification multiplier `fdm`
    restores the average absolute forecast to 10, which averaging imperfectly correlated
    forecasts lowers; it is therefore normally >= 1 (Carver caps it at 2.5). Re-capping is
    needed because the multiplier can push the combination past 20.
    """
    if not forecasts:
        raise UserError("no forecasts to combine")
    missing = sorted(set(forecasts) - set(weights))
    extra = sorted(set(weights) - set(forecasts))
    if missing or extra:
        raise UserError(
            f"forecast weights do not match the forecasts: no weight for {missing}, "
            f"weight without forecast for {extra}"
        )
    fdm_value = _finite_float(fdm, "forecast diversification multiplier")
    if fdm_value <= 0:
        raise UserError(f"forecast diversification multiplier must be > 0, got {fdm_value}")
    total_weight = 0.0
    combined = 0.0
    for name in sorted(forecasts):
        weight = _finite_float(weights[name], f"weight of rule {name!r}")
        if weight < 0:
            raise UserError(f"weight of rule {name!r} is negative ({weight})")
        try:
            forecast = validate_forecast(forecasts[name])
        except ValueError as exc:
            raise UserError(f"rule {name!r}: {exc}") from None
        total_weight += weight
        combined += weight * forecast
    if not math.isclose(total_weight, 1.0, rel_tol=0.0, abs_tol=1e-9):
        raise UserError(f"forecast weights must sum to 1, they sum to {total_weight!r}")
    return cap_forecast(combined * fdm_value)


# ---------------------------------------------------------------------------------------------
# EWMAC


def ewmac_raw(prices: pd.Series, fast: int, slow: int, vol_span: int = 35) -> pd.Series:
    """The unscaled EWMAC value: EWMA crossover divided by the daily price-difference volatility.

    Values are NaN while the volatility is still undefined (fewer than two differences) or zero
    (a flat price): no volatility means no measurable signal, and NaN says so honestly instead
    of an infinite forecast.
    """
    series = _price_series(prices)
    for name, span in (("fast", fast), ("slow", slow), ("vol_span", vol_span)):
        if isinstance(span, bool) or not isinstance(span, int) or span < 1:
            raise UserError(f"EWMAC {name} span must be a positive integer, got {span!r}")
    if fast >= slow:
        raise UserError(f"EWMAC fast span ({fast}) must be shorter than slow span ({slow})")
    # adjust=True (pandas' default) weights the early observations correctly instead of
    # pretending an infinite history of the first price.
    crossover = series.ewm(span=fast).mean() - series.ewm(span=slow).mean()
    vol = series.diff().ewm(span=vol_span).std()
    raw = crossover / vol.where(vol > 0)
    return raw.replace([np.inf, -np.inf], np.nan).rename(f"ewmac_{fast}_{slow}")


def forecast_scalar(raw: pd.Series) -> float:
    """The fixed scalar that makes the average absolute forecast 10: ``10 / mean(|raw|)``.

    NaN values (warm-up) are ignored. A series with no usable values, or whose values are all
    zero, has no scale and is refused.
    """
    values = pd.to_numeric(pd.Series(raw), errors="coerce").replace([np.inf, -np.inf], np.nan)
    mean_abs = values.abs().mean()
    if not math.isfinite(mean_abs) or mean_abs <= 0:
        raise UserError("cannot estimate a forecast scalar: no non-zero raw forecast values")
    return AVERAGE_ABS_FORECAST / float(mean_abs)


def scale_and_cap(raw: pd.Series, scalar: float | None = None) -> pd.Series:
    """Scale raw values by `scalar` (estimated with `forecast_scalar` if None) and cap at +/-20."""
    used = forecast_scalar(raw) if scalar is None else _finite_float(scalar, "forecast scalar")
    if used <= 0:
        raise UserError(f"forecast scalar must be > 0, got {used}")
    # np.clip keeps NaN (warm-up) as pandas' clip does, without its per-call overhead
    return pd.Series(np.clip(raw.to_numpy(dtype=float) * used, -FORECAST_CAP, FORECAST_CAP), index=raw.index,
                     name=raw.name)


def ewmac(
    prices: pd.Series, fast: int, slow: int, vol_span: int = 35, scalar: float | None = None
) -> pd.Series:
    """The EWMAC(fast, slow) forecast series: raw values scaled to average |10|, capped at 20.

    `scalar` fixes the forecast scalar; by default it is estimated from this history (see the
    module docstring on look-ahead). Warm-up values are NaN; the last value is today's forecast.
    """
    return scale_and_cap(ewmac_raw(prices, fast, slow, vol_span), scalar)


def ewmac_columns(frame: pd.DataFrame, fast: int, slow: int, vol_span: int = 35) -> dict[str, pd.Series]:
    """`ewmac(frame[c], fast, slow, vol_span)` for every column c of a frame of price series that
    share one index, in one pass (pandas computes ewm column by column, exactly as for a Series).
    A column whose forecast scalar cannot be estimated is left out: `ewmac` on it says why."""
    crossover = frame.ewm(span=fast).mean() - frame.ewm(span=slow).mean()
    vol = frame.diff().ewm(span=vol_span).std()
    raw = (crossover / vol.where(vol > 0)).replace([np.inf, -np.inf], np.nan)
    mean_abs = raw.abs().mean()  # per column, as forecast_scalar takes it of one series
    result = {}
    for column in raw.columns:
        mean = float(mean_abs[column])
        if not math.isfinite(mean) or mean <= 0:
            continue
        values = np.clip(raw[column].to_numpy(dtype=float) * (AVERAGE_ABS_FORECAST / mean), -FORECAST_CAP, FORECAST_CAP)
        result[column] = pd.Series(values, index=raw.index, name=f"ewmac_{fast}_{slow}")
    return result


# ---------------------------------------------------------------------------------------------
# Plug-in rules


def load_rule(spec: str) -> Rule:
    """Load the rule named by ``"package.module:function"`` (the part after ':' may be dotted).

    Every failure is a UserError (a ValueError) that names the spec, so a bad configuration line is found
    from its message alone.
    """
    if not isinstance(spec, str):
        raise UserError(f"rule spec must be a string 'module:function', got {spec!r}")
    module_name, sep, attr_path = spec.strip().partition(":")
    if not sep or not module_name or not attr_path or ":" in attr_path:
        raise UserError(f"rule spec {spec!r} is not of the form 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"rule spec {spec!r}: module {exc.name!r} not found") from exc
    except Exception as exc:  # a plug-in that fails on import is still a bad spec to the user
        raise UserError(
            f"rule spec {spec!r}: importing {module_name!r} failed: {exc!r}"
        ) from exc
    target: object = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UserError(
                f"rule spec {spec!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(target):
        raise UserError(
            f"rule spec {spec!r}: {attr_path!r} is a {type(target).__name__}, not callable"
        )
    return target  # type: ignore[return-value]


def run_rule(rule: Rule, prices: pd.Series) -> pd.Series:
    """Call a plug-in rule and check its output is a forecast series.

    The result must be a pd.Series; NaN is allowed (warm-up, no signal) but every other value
    must be a valid forecast. Scaling and capping are the rule's job: a plug-in that returns
    values outside +/-20 is refused rather than silently clipped, because it is almost always an
    unscaled rule.
    """
    result = rule(_price_series(prices))
    if not isinstance(result, pd.Series):
        raise UserError(f"rule {rule!r} returned {type(result).__name__}, not a pandas Series")
    values = pd.to_numeric(result, errors="coerce")
    bad = values[values.isna() & result.notna()]
    if len(bad):
        raise UserError(f"rule {rule!r} returned non-numeric values at {list(bad.index[:3])}")
    for idx, value in values.dropna().items():
        try:
            validate_forecast(float(value))
        except ValueError as exc:
            raise UserError(f"rule {rule!r} at {idx!r}: {exc}") from None
    return values.astype(float)


# ---------------------------------------------------------------------------------------------
# Helpers


def _finite_float(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (Real, Decimal)):
        raise UserError(f"{what} must be a real number, got {x!r}")
    value = float(x)
    if not math.isfinite(value):
        raise UserError(f"{what} must be finite, got {value}")
    return value


def _price_series(prices: pd.Series) -> pd.Series:
    """Prices as a float Series. Price history is analysis data here, not booked money."""
    if not isinstance(prices, pd.Series):
        raise UserError(f"prices must be a pandas Series, got {type(prices).__name__}")
    try:
        series = prices.astype(float)
    except (TypeError, ValueError) as exc:
        raise UserError(f"prices are not numeric: {exc}") from None
    if np.isinf(series.to_numpy()).any():
        raise UserError("prices contain infinite values")
    return series
