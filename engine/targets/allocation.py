"""Allocation strategies: target weights in ETFs, held as whole shares, rebalanced past a band.

A tactical allocation strategy does not size from volatility: it decides what fraction of its
capital each ETF of its universe should hold, and keeps the rest as cash. Where the weights
come from (`[strategies.S.allocation] rule`):

* `momentum` (built in): each ETF's price return over the last `lookback` closes
  (split-adjusted by `price_histories`), the `top_n` best, each weighted 1/top_n; with `absolute_filter`, an ETF
  whose return is not positive is not held (its slot stays cash). Ties break by name.
* `file`: weights imported with `tradeledger weights import FILE`
  (`date,strategy,ticker,weight`); the latest date on or before the run's date is used.
* a plug-in `module:function(closes: DataFrame, as_of: date) -> {ticker: weight}`.

Whatever the source, weights are validated: each in [0, 1], summing to at most 1, only the
strategy's own ETFs.

Sizing is in whole shares, rounded down, so the strategy never spends more than its capital:

    target shares  = floor(capital x weight / (price x fx))
    current weight = current shares x price x fx / capital
    drift          = current weight - target weight

A line trades only when |drift| > min(band_abs, band_rel x target weight): whichever of the
absolute and the relative band is crossed first. A line inside its band keeps its current
position (no order). An ETF held but no longer wanted (weight 0) has a band of 0: it is sold.
Every figure of the decision is explained on the run's line.
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import pandas as pd
import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.setup.config import AllocationSpec, Strategy
from tradeledger.engine.tables import target_weight
from tradeledger.engine.targets.prices import CsvImportError, parse_date, parse_number, read_csv_rows

ZERO, ONE = Decimal(0), Decimal(1)
WEIGHTS_HEADER = ("date", "strategy", "ticker", "weight")


class AllocationError(ValueError):
    """Weights that cannot be used; the message names the strategy and what is wrong."""


# -- weights (pure) ----------------------------------------------------------------------------


def validate_weights(strategy: str, weights: dict[str, Decimal], universe: set[str]) -> dict[str, Decimal]:
    unknown = sorted(set(weights) - universe)
    if unknown:
        raise AllocationError(f"strategy {strategy}: weights for {', '.join(unknown)}, which are not in its "
                              f"instruments ({', '.join(sorted(universe))})")
    for ticker, w in weights.items():
        if not isinstance(w, Decimal) or not w.is_finite() or not ZERO <= w <= ONE:
            raise AllocationError(f"strategy {strategy}: weight of {ticker} is {w}, not in [0, 1]")
    total = sum(weights.values(), ZERO)
    if total > ONE:
        raise AllocationError(f"strategy {strategy}: weights sum to {total}, more than 1")
    return {t: weights.get(t, ZERO) for t in sorted(universe)}


def momentum_weights(closes: dict[str, pd.Series], spec: AllocationSpec) -> tuple[dict[str, Decimal], dict]:
    """Relative momentum with a top-N and an absolute filter; returns (weights, the returns used)."""
    returns = {}
    for ticker, series in closes.items():
        series = series.dropna()
        if len(series) <= spec.lookback:
            raise AllocationError(f"{ticker}: {len(series)} closes, momentum needs {spec.lookback + 1}")
        returns[ticker] = Decimal(repr(float(series.iloc[-1]))) / Decimal(repr(float(series.iloc[-1 - spec.lookback]))) - 1
    ranked = sorted(returns, key=lambda t: (-returns[t], t))
    chosen = [t for t in ranked[:spec.top_n] if returns[t] > 0 or not spec.absolute_filter]
    weight = ONE / spec.top_n
    weights = {t: (weight if t in chosen else ZERO) for t in closes}
    return weights, {t: _s(r) for t, r in returns.items()}


def plugin_weights(spec: str, closes: dict[str, pd.Series], as_of: dt.date) -> dict[str, Decimal]:
    module_name, _, function = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise AllocationError(f"allocation rule {spec!r}: {exc}") from None
    result = fn(pd.DataFrame(closes), as_of)
    if not isinstance(result, dict):
        raise AllocationError(f"allocation rule {spec!r} returned {type(result).__name__}, not a dict of weights")
    try:
        return {str(k): Decimal(str(v)) for k, v in result.items()}
    except ArithmeticError:
        raise AllocationError(f"allocation rule {spec!r} returned a weight that is not a number") from None


# -- sizing (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationLine:
    ticker: str
    weight: Decimal
    price: Decimal  # in the ETF's currency
    fx: Decimal
    current: Decimal
    target: Decimal  # shares after the decision (== current inside the band)
    explain: dict


def size_allocation(capital: Decimal, weights: dict[str, Decimal], prices: dict[str, Decimal],
                    fxs: dict[str, Decimal], current: dict[str, Decimal], spec: AllocationSpec) -> list[AllocationLine]:
    if capital <= 0:
        raise AllocationError(f"capital {capital} must be positive")
    lines = []
    for ticker in sorted(weights):
        weight, price, fx = weights[ticker], prices[ticker], fxs[ticker]
        if price <= 0:
            raise AllocationError(f"{ticker}: price {price} must be positive")
        value_per_share = price * fx
        wanted = (capital * weight / value_per_share).to_integral_value(rounding=ROUND_FLOOR)
        held = current.get(ticker, ZERO)
        current_weight = held * value_per_share / capital
        drift = current_weight - weight
        band = min(spec.band_abs, spec.band_rel * weight)
        rebalance = abs(drift) > band
        target = wanted if rebalance else held
        lines.append(AllocationLine(ticker, weight, price, fx, held, target, {
            "target_weight": _s(weight), "current_weight": _s(current_weight), "drift": _s(drift),
            "band": _s(band), "band_abs": _s(spec.band_abs), "band_rel": _s(spec.band_rel),
            "rebalance": rebalance, "capital": _s(capital), "price": _s(price), "fx_rate": _s(fx),
            "target_value": _s(capital * weight), "shares_for_weight": _s(wanted), "current": _s(held),
            "target": _s(target), "change": _s(target - held),
            "cash_left": _s(capital * weight - wanted * value_per_share),
        }))
    return lines


def _s(x: Decimal) -> str:
    return format(x.quantize(Decimal("1e-9")).normalize(), "f") if x else "0"


# -- imported weights -------------------------------------------------------------------------------


def parse_weights_csv(text: str, strategies: dict[str, Strategy], source: str) -> dict[tuple[str, str], dict]:
    """(strategy, date) -> {ticker: weight}; every line checked, every set validated."""
    header, rows = read_csv_rows(text, source)
    if header != WEIGHTS_HEADER:
        raise CsvImportError(source, [(1, f"header must be {','.join(WEIGHTS_HEADER)}")])
    sets: dict[tuple[str, str], dict] = {}
    first_line: dict[tuple[str, str], int] = {}
    problems = []
    for line, fields in rows:
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 4 fields, found {len(fields)}")
            date, name, ticker, weight = (f.strip() for f in fields)
            strategy = strategies.get(name)
            if strategy is None or not strategy.is_allocation:
                raise ValueError(f"{name!r} is not a configured allocation strategy")
            universe = {i for i, _ in strategy.instruments}
            if ticker not in universe:
                raise ValueError(f"{ticker!r} is not one of {name}'s instruments ({', '.join(sorted(universe))})")
            day = parse_date(date).isoformat()
            key = (name, day)
            if ticker in sets.get(key, {}):
                raise ValueError(f"{ticker} given twice for {name} on {day}")
            sets.setdefault(key, {})[ticker] = parse_number(weight, "weight")
            first_line.setdefault(key, line)
        except ValueError as exc:
            problems.append((line, str(exc)))
    for key, weights in sets.items():
        try:
            validate_weights(key[0], weights, {i for i, _ in strategies[key[0]].instruments})
        except AllocationError as exc:
            problems.append((first_line[key], f"{exc} on {key[1]}"))
    if problems:
        raise CsvImportError(source, sorted(problems))
    return sets


def import_weights_csv(ctx: Context, path, config) -> int:
    """Store a weights file, all or nothing; a set already stored for (strategy, date) is replaced
    only by the same figures (else refused). Returns the number of (strategy, date) sets added."""
    text = open(path, encoding="utf-8").read()
    sets = parse_weights_csv(text, config.strategies, str(path))
    added = 0
    with ctx.engine.begin() as conn:
        for (strategy, day), weights in sorted(sets.items()):
            old = {r.ticker: Decimal(r.weight) for r in conn.execute(sa.select(target_weight).where(
                target_weight.c.strategy == strategy, target_weight.c.date == day))}
            if old:
                if old != weights:
                    raise AllocationError(f"weights of {strategy} on {day} are stored with other figures; "
                                          f"nothing imported")
                continue
            conn.execute(target_weight.insert(), [{"strategy": strategy, "date": day, "ticker": t, "weight": str(w)}
                                                  for t, w in weights.items()])
            added += 1
    return added


def stored_weights(conn, strategy: str, as_of: dt.date) -> tuple[str, dict[str, Decimal]] | None:
    day = conn.execute(sa.select(sa.func.max(target_weight.c.date)).where(
        target_weight.c.strategy == strategy, target_weight.c.date <= as_of.isoformat())).scalar()
    if day is None:
        return None
    return day, {r.ticker: Decimal(r.weight) for r in conn.execute(sa.select(target_weight).where(
        target_weight.c.strategy == strategy, target_weight.c.date == day))}


def target_weights(strategy: Strategy, closes: dict[str, pd.Series], as_of: dt.date, conn) -> tuple[dict, dict]:
    """The strategy's validated weights on `as_of` and how they were found."""
    spec = strategy.allocation
    universe = {i for i, _ in strategy.instruments}
    if spec.rule == "momentum":
        weights, returns = momentum_weights({t: closes[t] for t in universe}, spec)
        source = {"rule": "momentum", "lookback": spec.lookback, "top_n": spec.top_n,
                  "absolute_filter": spec.absolute_filter, "returns": returns}
    elif spec.rule == "file":
        found = stored_weights(conn, strategy.name, as_of)
        if found is None:
            raise AllocationError(f"strategy {strategy.name}: no imported weights on or before {as_of} "
                                  f"(tradeledger weights import FILE)")
        weights, source = found[1], {"rule": "file", "weights_date": found[0]}
    else:
        weights, source = plugin_weights(spec.rule, {t: closes[t] for t in universe}, as_of), {"rule": spec.rule}
    return validate_weights(strategy.name, weights, universe), source
