"""Forecasts per (strategy, signal instrument, date): computed from rules, or imported.

A strategy names its rules with weights (`[strategies.S.rules] ewmac_16_64 = 0.6, ...`):

* `ewmac_F_S` is the built-in EWMAC trend rule with fast span F and slow span S
  (engine/signals.py: scaled to an average absolute forecast of 10, capped at +/-20);
* any other name is a plug-in looked up in the config's `[rules]` table as
  `name = "package.module:function"`, a callable taking the price history (pd.Series) and
  returning a forecast series.

The rules' latest forecasts are combined with the weights and the strategy's forecast
diversification multiplier (`signals.combine_forecasts`), then rounded to six decimals: the
number stored is exactly the number sizing uses.

Imported forecasts (`date,strategy,instrument,forecast`, from a signal generator elsewhere) are
stored with source `import` and take precedence over a computed one for the same date: computing
never overwrites an import, an import replaces a computed value. An import is all or nothing and
each row must name a configured strategy and one of its instruments, with a finite forecast in
[-20, 20].

`resolve_forecasts` is what a target run uses: for each pair, the latest forecast on or before
the run's date, where a forecast computed from the prices up to that date competes with the
stored ones (latest date wins; on the same date an import wins).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.setup.config import Strategy, TradingConfig
from tradeledger.engine.targets.prices import (
    CsvImportError, ImportReport, _reader, parse_date, parse_number, price_histories, read_csv_rows,
    trading_config,
)
from tradeledger.engine.futures.panama import signal_histories
from tradeledger.engine.targets.carry import CARRY_NAME, carry_series, curve as carry_curve, explain_carry, scalar_of
from tradeledger.engine.targets.signals import (
    combine_forecasts, ewmac, ewmac_columns, load_rule, run_rule, validate_forecast,
)
from tradeledger.engine.tables import forecast as forecast_table
from tradeledger.ledger.numbers import plain
from tradeledger.errors import UserError

EWMAC_NAME = re.compile(r"^ewmac_(\d+)_(\d+)$")
FORECAST_HEADER = ("date", "strategy", "instrument", "forecast")
PRECISION = 6


class ForecastError(UserError):
    """No usable forecast; the message names the strategy, instrument and reason."""


@dataclass(frozen=True)
class Forecast:
    strategy: str
    instrument: str
    date: dt.date
    value: Decimal
    source: str  # rule | import
    rules: tuple[tuple[str, float], ...] = ()  # each rule's own latest forecast, when computed
    carry: tuple[tuple[str, object], ...] = ()  # the carry rule's figures on that date (carry.explain_carry)

    def as_json(self) -> dict:
        return {"strategy": self.strategy, "instrument": self.instrument, "date": self.date.isoformat(),
                "forecast": self.value, "source": self.source, "rules": dict(self.rules)}


# -- computing (pure) -----------------------------------------------------------------------------


def rule_series(name: str, prices: pd.Series, plugins: dict[str, str], curve: pd.DataFrame | None = None
                ) -> pd.Series:
    """One rule's forecast series over a price history (`curve`: the contract closes carry reads)."""
    match = EWMAC_NAME.match(name)
    if match:
        return ewmac(prices, int(match.group(1)), int(match.group(2)))
    if CARRY_NAME.match(name):
        if curve is None or curve.empty:
            raise ForecastError(f"rule {name}: no contract closes (import date,contract,close for the priced and "
                                "next contracts)")
        return carry_series(curve, prices, scalar_of(name))
    spec = plugins.get(name)
    if spec is None:
        raise ForecastError(f"rule {name!r} is neither ewmac_FAST_SLOW nor listed in the config's [rules] table")
    return run_rule(load_rule(spec), prices)


def round_forecast(value: float) -> Decimal:
    return plain(Decimal(format(round(value, PRECISION), f".{PRECISION}f")))


def combine_latest(strategy: Strategy, instrument: str, prices: pd.Series, plugins: dict[str, str],
                   cache: dict | None = None, curve: pd.DataFrame | None = None) -> Forecast:
    """The strategy's combined forecast on the last date of `prices` (pure, given the plug-ins)."""
    where = f"strategy {strategy.name}, instrument {instrument}"
    prices = prices.dropna()
    if len(prices) < 3:
        raise ForecastError(f"{where}: not enough price history to compute a forecast ({len(prices)} prices)")
    last = prices.index[-1]
    values: dict[str, float] = {}
    for name, _ in strategy.rules:
        key = (instrument, name, last, len(prices))
        try:
            series = cache[key] if cache is not None and key in cache else rule_series(name, prices, plugins, curve)
        except ValueError as exc:
            raise ForecastError(f"{where}: rule {name}: {exc}") from None
        if cache is not None:
            cache[key] = series
        value = series.get(last, math.nan)
        if value is None or not math.isfinite(float(value)):
            raise ForecastError(f"{where}: rule {name} has no forecast on {last.date()} "
                                "(too short or flat a price history)")
        values[name] = float(value)
    weights = {name: float(weight) for name, weight in strategy.rules}
    try:
        combined = combine_forecasts(values, weights, float(strategy.fdm))
    except ValueError as exc:
        raise ForecastError(f"{where}: {exc}") from None
    carry = ()
    used = [name for name, _ in strategy.rules if CARRY_NAME.match(name)]
    if used and curve is not None:
        carry = tuple(sorted(explain_carry(curve, prices, scalar_of(used[0])).items()))
    return Forecast(strategy.name, instrument, last.date(), round_forecast(combined), "rule",
                    tuple(sorted(values.items())), carry)


CURVE_DAYS = 5


def prefill_ewmac(pairs, histories: dict, cache: dict) -> None:
    """Fill `cache` (combine_latest's) with the EWMAC series the pairs' rules need, computed in one
    pass per rule over the instruments whose histories share one index (signals.ewmac_columns:
    the same figures as one instrument at a time, without its per-call cost)."""
    wanted: dict[str, set[str]] = {}
    for strategy, instrument in pairs:
        for name, _ in strategy.rules:
            if EWMAC_NAME.match(name):
                wanted.setdefault(name, set()).add(instrument)
    for name, instruments in sorted(wanted.items()):
        fast, slow = (int(x) for x in EWMAC_NAME.match(name).groups())
        if fast >= slow:
            continue  # ewmac() refuses it, naming the rule
        groups: list[list[tuple[str, pd.Series]]] = []
        for instrument in sorted(instruments):
            series = histories.get(instrument)
            if series is None:
                continue
            series = series.dropna()
            if len(series) < 3 or (instrument, name, series.index[-1], len(series)) in cache:
                continue
            for group in groups:
                if group[0][1].index.equals(series.index):
                    group.append((instrument, series))
                    break
            else:
                groups.append([(instrument, series)])
        for group in groups:
            if len(group) < 2:
                continue
            frame = pd.DataFrame({instrument: series.astype(float) for instrument, series in group})
            index = group[0][1].index
            for instrument, series in ewmac_columns(frame, fast, slow).items():
                cache[(instrument, name, index[-1], len(index))] = series


def carry_curves(ctx: Context, config: TradingConfig, histories: dict, conn) -> dict[str, pd.DataFrame]:
    """instrument -> its carry curve (engine/targets/carry.py) for every future a carry rule reads."""
    wanted = {i for s in config.forecasting_strategies() if any(CARRY_NAME.match(r) for r, _ in s.rules)
              for i, _ in s.instruments}
    result = {}
    with _reader(ctx, conn) as c:
        for name in sorted(wanted):
            instrument = config.instruments[name]
            series = histories.get(name)
            if instrument.is_future and series is not None and len(series):
                # a fixed scalar: only the last days of the curve matter (the forecast is the last day's)
                result[name] = carry_curve(ctx, instrument, [d.date() for d in series.index[-CURVE_DAYS:]], c)
    return result


def pick(computed: Forecast | None, stored: Forecast | None) -> Forecast | None:
    """The later of two forecasts; on the same date an import beats a computation."""
    if computed is None or stored is None:
        return computed or stored
    if stored.date > computed.date or (stored.date == computed.date and stored.source == "import"):
        return stored
    return computed


# -- database edges --------------------------------------------------------------------------------


def stored_forecasts(ctx: Context, as_of: dt.date | None, conn=None) -> dict[tuple[str, str], Forecast]:
    """The latest stored forecast per (strategy, instrument) on or before `as_of` (import wins a tie)."""
    query = sa.select(forecast_table)
    if as_of is not None:
        query = query.where(forecast_table.c.date <= as_of.isoformat())
    best: dict[tuple[str, str], Forecast] = {}
    with _reader(ctx, conn) as c:
        for row in c.execute(query):
            f = Forecast(row.strategy, row.instrument, dt.date.fromisoformat(row.date), Decimal(row.value), row.source)
            best[(f.strategy, f.instrument)] = _later(best.get((f.strategy, f.instrument)), f)
    return best


def _later(current: Forecast | None, new: Forecast) -> Forecast:
    if current is None or new.date > current.date or (new.date == current.date and new.source == "import"):
        return new
    return current


def resolve_forecasts(ctx: Context, config: TradingConfig, as_of: dt.date, conn=None,
                      histories: dict | None = None) -> tuple[dict[tuple[str, str], Forecast], dict[tuple[str, str], str]]:
    """Every (strategy, instrument) forecast a run on `as_of` would use, and the pairs that have none.

    Returns (forecasts, missing) where `missing` maps a pair to the reason it has no forecast.
    """
    pairs = [(s, i) for s in config.forecasting_strategies() for i, _ in s.instruments]
    if histories is None:
        with _reader(ctx, conn) as c:
            histories, _ = signal_histories(ctx, c, config, {i for _, i in pairs}, as_of)
    stored = stored_forecasts(ctx, as_of, conn)
    curves = carry_curves(ctx, config, histories, conn)
    cache: dict = {}
    prefill_ewmac(pairs, histories, cache)
    result, missing = {}, {}
    for strategy, instrument in pairs:
        computed, reason = None, None
        try:
            computed = combine_latest(strategy, instrument, histories.get(instrument, pd.Series(dtype=float)),
                                      config.rules, cache, curves.get(instrument))
        except ForecastError as exc:
            reason = str(exc)
        chosen = pick(computed, stored.get((strategy.name, instrument)))
        if chosen is None:
            missing[(strategy.name, instrument)] = reason or f"strategy {strategy.name}, instrument {instrument}: no forecast"
        else:
            result[(strategy.name, instrument)] = chosen
    return result, missing


def compute_forecasts(ctx: Context, as_of: dt.date | None = None) -> list[Forecast]:
    """Compute every pair's forecast from prices up to `as_of` and store it (source `rule`).

    A pair whose forecast cannot be computed is an error naming it, and nothing is stored. A
    computed value never overwrites an imported one for the same date.
    """
    config = trading_config(ctx)
    with _reader(ctx, None) as conn:  # futures: the Panama series
        histories, _ = signal_histories(ctx, conn, config,
                                        {i for s in config.forecasting_strategies() for i, _ in s.instruments}, as_of)
        curves = carry_curves(ctx, config, histories, conn)
    cache: dict = {}
    prefill_ewmac([(s, i) for s in config.forecasting_strategies() for i, _ in s.instruments], histories, cache)
    computed, errors = [], []
    for strategy in config.forecasting_strategies():
        for instrument, _ in strategy.instruments:
            try:
                computed.append(combine_latest(strategy, instrument, histories[instrument], config.rules, cache,
                                               curves.get(instrument)))
            except ForecastError as exc:
                errors.append(str(exc))
    if errors:
        raise ForecastError("; ".join(errors))
    with ctx.engine.begin() as conn:
        existing = {(r.strategy, r.instrument, r.date): (r.value, r.source) for r in conn.execute(sa.select(forecast_table))}
        result = []
        for f in computed:
            key = (f.strategy, f.instrument, f.date.isoformat())
            old = existing.get(key)
            text = format(f.value, "f")
            if old is None:
                conn.execute(forecast_table.insert().values(strategy=f.strategy, instrument=f.instrument,
                                                            date=key[2], value=text, source="rule"))
            elif old[1] == "import":
                f = Forecast(f.strategy, f.instrument, f.date, Decimal(old[0]), "import", f.rules)
            elif old[0] != text:
                conn.execute(forecast_table.update().where(
                    forecast_table.c.strategy == f.strategy, forecast_table.c.instrument == f.instrument,
                    forecast_table.c.date == key[2]).values(value=text))
            result.append(f)
    return result


def parse_forecasts_csv(text: str, config: TradingConfig, source: str = "<csv>") -> list[tuple[int, Forecast]]:
    """Validate a forecast file; raise CsvImportError listing every bad row."""
    header, raw_rows = read_csv_rows(text, source)
    if header != FORECAST_HEADER:
        raise CsvImportError(source, [(1, f"header {','.join(header)!r} is not {','.join(FORECAST_HEADER)}")])
    problems, rows, seen = [], [], {}
    for line, fields in raw_rows:
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 4 fields, found {len(fields)}")
            date = parse_date(fields[0])
            name, instrument = fields[1].strip(), fields[2].strip()
            strategy = config.strategies.get(name)
            if strategy is None:
                raise ValueError(f"unknown strategy {name!r}")
            if instrument not in dict(strategy.instruments):
                raise ValueError(f"instrument {instrument!r} is not one of strategy {name}'s instruments")
            value = parse_number(fields[3], "forecast")
            validate_forecast(value)
        except ValueError as exc:
            problems.append((line, str(exc)))
            continue
        key = (name, instrument, date)
        if key in seen:
            if seen[key][1].value != value:
                problems.append((line, f"{name} {instrument} {date} already given on line {seen[key][0]}"))
            continue
        seen[key] = (line, Forecast(name, instrument, date, value, "import"))
        rows.append(seen[key])
    if problems:
        raise CsvImportError(source, problems)
    return rows


def import_forecasts_csv(ctx: Context, path: str | Path, replace: bool = False) -> ImportReport:
    """Import forecasts made elsewhere, all or nothing; they replace computed ones for their date."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CsvImportError(str(path), [(1, f"not a UTF-8 text file (byte {exc.object[exc.start]:#04x} at "
                                             f"offset {exc.start}): give a CSV of date,strategy,instrument,forecast")]) \
            from None
    rows = parse_forecasts_csv(text, trading_config(ctx), str(path))
    report = ImportReport(str(path), "forecast", rows=len(rows))
    with ctx.engine.begin() as conn:
        existing = {(r.strategy, r.instrument, r.date): (r.value, r.source) for r in conn.execute(sa.select(forecast_table))}
        for line, f in rows:
            key = (f.strategy, f.instrument, f.date.isoformat())
            text = format(f.value, "f")
            old = existing.get(key)
            if old is None:
                conn.execute(forecast_table.insert().values(strategy=f.strategy, instrument=f.instrument,
                                                            date=key[2], value=text, source="import"))
                report.inserted += 1
            elif old[1] == "import" and Decimal(old[0]) == f.value:
                report.unchanged += 1
            elif old[1] == "import" and not replace:
                report.conflicts.append((line, f"{f.strategy} {f.instrument} {f.date} is stored as {old[0]}, "
                                               f"the file says {f.value} (use --replace)"))
            else:
                conn.execute(forecast_table.update().where(
                    forecast_table.c.strategy == f.strategy, forecast_table.c.instrument == f.instrument,
                    forecast_table.c.date == key[2]).values(value=text, source="import"))
                report.replaced += 1
        if report.conflicts:
            raise CsvImportError(str(path), report.conflicts)
    return report
