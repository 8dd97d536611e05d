"""Carry: what a futures position earns if prices stay where they are (Carver, "Systematic Trading").

A future converges to the nearer contracts' prices as it ages. When the next contract is cheaper
than the priced one (backwardation) a long position rolls up the curve and earns; when dearer
(contango) it pays. Per day, from the closes of the priced contract and the next one listed
(`carry_offset` contracts later, default 1) on that date:

    price_differential = close(priced) - close(next)                  price units
    years_between      = (expiry month of next - expiry month of priced) / 12
    annual_carry       = price_differential / years_between            price units a year
    annual_vol         = daily price volatility (EW, span 35, of the priced series' daily
                         differences, as sizing uses) x 16            price units a year
    raw_carry          = annual_carry / annual_vol                     a Sharpe-like ratio
    forecast           = clip(CARRY_SCALAR x raw_carry, -20, +20)

The scalar is fixed (30, Carver's value for carry; `carry_30` names another: `carry_S`), so a
forecast depends on nothing but the figures shown. `explain_carry` returns each figure of the
last day for `targets show`. Closes per contract come from `contract_bar` (imports of
`date,contract,close`), and a day without both closes has no carry (NaN): no guessing.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.futures import calendar as cal
from tradeledger.ledger.numbers import from_scaled

CARRY_SCALAR = 30.0
CARRY_NAME = re.compile(r"^carry(?:_(\d+(?:\.\d+)?))?$")
VOL_SPAN = 35
FORECAST_CAP = 20.0


def months_between(priced: str, nxt: str) -> int:
    """Months from one contract month (YYYYMM) to another."""
    return (int(nxt[:4]) - int(priced[:4])) * 12 + int(nxt[4:6]) - int(priced[4:6])


def raw_carry(priced_close: float, next_close: float, months: int, daily_vol: float) -> float:
    """Annualised price differential over annualised price volatility (pure)."""
    if months <= 0 or not daily_vol or not math.isfinite(daily_vol):
        return math.nan
    return (priced_close - next_close) / (months / 12) / (daily_vol * 16)


def carry_forecast(raw: float, scalar: float = CARRY_SCALAR) -> float:
    return max(-FORECAST_CAP, min(FORECAST_CAP, raw * scalar)) if math.isfinite(raw) else math.nan


def daily_vol(prices: pd.Series) -> pd.Series:
    """The instrument's daily price volatility (EW std of daily differences, span 35)."""
    return prices.dropna().astype(float).diff().ewm(span=VOL_SPAN).std()


def carry_series(curve: pd.DataFrame, prices: pd.Series, scalar: float = CARRY_SCALAR) -> pd.Series:
    """Carry forecasts from a daily curve (columns priced, next: closes; months: int) and the
    instrument's price series for its volatility (pure)."""
    vol = daily_vol(prices).reindex(curve.index).to_numpy(dtype=float)
    vol = np.where(vol > 0, vol, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = ((curve["priced"].to_numpy(dtype=float) - curve["next"].to_numpy(dtype=float))
               / (curve["months"].to_numpy(dtype=float) / 12) / (vol * 16))
        values = np.clip(raw * scalar, -FORECAST_CAP, FORECAST_CAP)
    values[~np.isfinite(values)] = np.nan
    return pd.Series(values, index=curve.index, name="carry")


def scalar_of(name: str) -> float:
    match = CARRY_NAME.match(name)
    return float(match.group(1)) if match and match.group(1) else CARRY_SCALAR


def curve(ctx: Context, instrument, dates, conn) -> pd.DataFrame:
    """Per date: the priced contract's close and the next listed contract's close, and the months
    between them, from contract_bar."""
    t = tables.contract_bar
    schedule = instrument.schedule
    rows = []
    wanted: dict[dt.date, tuple] = {}
    for day in dates:
        priced = cal.current(schedule, day)
        later = cal.chain(schedule, priced.last_trade + dt.timedelta(days=1), instrument.carry_offset)[-1]
        wanted[day] = (priced, later)
    codes = sorted({c.code for pair in wanted.values() for c in pair})
    closes: dict[tuple[str, str], float] = {}
    for start in range(0, len(codes), 200):
        for code, date, close in conn.execute(sa.select(t.c.contract, t.c.date, t.c.close).where(
                t.c.contract.in_(codes[start:start + 200]))):
            closes[(code, date)] = float(from_scaled(close))
    for day, (priced, later) in wanted.items():
        key = day.isoformat()
        rows.append({"date": pd.Timestamp(day), "priced_contract": priced.code, "next_contract": later.code,
                     "priced": closes.get((priced.code, key), math.nan), "next": closes.get((later.code, key), math.nan),
                     "months": months_between(priced.expiry, later.expiry)})
    return pd.DataFrame(rows).set_index("date") if rows else pd.DataFrame(
        columns=["priced_contract", "next_contract", "priced", "next", "months"])


def explain_carry(frame: pd.DataFrame, prices: pd.Series, scalar: float = CARRY_SCALAR) -> dict:
    """Every figure of the last day's carry forecast, as text, for a reviewer to redo it."""
    if frame.empty:
        return {}
    last = frame.iloc[-1]
    vol = daily_vol(prices).reindex(frame.index).iloc[-1]
    raw = raw_carry(float(last["priced"]), float(last["next"]), int(last["months"]), float(vol))
    return {"priced_contract": last["priced_contract"], "next_contract": last["next_contract"],
            "priced_close": repr(float(last["priced"])), "next_close": repr(float(last["next"])),
            "months_between": int(last["months"]),
            "annualised_differential": repr((float(last["priced"]) - float(last["next"])) / (int(last["months"]) / 12)),
            "daily_vol": repr(float(vol)), "annual_vol": repr(float(vol) * 16), "raw": repr(raw), "scalar": scalar,
            "forecast": repr(carry_forecast(raw, scalar))}
