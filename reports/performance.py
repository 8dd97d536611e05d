"""Performance per strategy and in total: cumulative P&L, NAV, drawdown, return, volatility, Sharpe.

The daily P&L comes from reports/pnl.py (realized plus the change in unrealized, so the days add
up). Each strategy's NAV is its capital plus its cumulative P&L, the capital as the config gives
it (engine/targets/capital.py): its share of the net deposits of each day (compounding: a deposit
raises it that day, and is no return and no drawdown), its share of the fixed `[portfolio]
capital`, or its own fixed amount. The account's NAV is the NAV query of each
day (cash, shares at the close, futures' unsettled margin, at that day's FX rates).

The account's NAV also moves with the base-currency value of the cash it holds in other currencies
(FX translation); that is no strategy's P&L, and the total says how much it was.

Statistics are of daily returns, net P&L over the previous day's NAV, over the days with data:
annualised return = mean x 252, volatility = standard deviation x sqrt(252), Sharpe = their
ratio (no risk-free rate). Drawdown is what the P&L gave back below its running peak: in money,
NAV less the net deposits since the period began, below its peak; in percent, the daily returns
compounded below their peak. Money deposited or withdrawn moves neither (a withdrawal is no loss).
Ratios are floats rounded for display; money stays Decimal.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tradeledger.ledger.numbers import to_decimal
from tradeledger.reports import pnl_rows as pnl_mod
from tradeledger.reports import replay as series_mod

if TYPE_CHECKING:  # the session's module imports SQLAlchemy: a read on the light path needs none
    from tradeledger.engine.setup.session import Session

ZERO = Decimal(0)
YEAR = 252


@dataclass(frozen=True)
class Capitals:
    """What the config says of capital: each strategy's own fixed capital (None: a share) and its
    capital share, in the config's order; `[portfolio]` capital and capital_mode."""

    strategies: dict  # name -> (capital | None, capital_share)
    portfolio: Decimal
    mode: str


def capitals_of(config) -> Capitals:
    """The trading configuration's capitals (engine/setup/config.py)."""
    return Capitals({name: (s.capital, s.capital_share) for name, s in config.strategies.items()}, config.capital,
                    config.capital_mode)


def capitals_from_raw(raw: dict) -> Capitals:
    """`capitals_of` from config.toml as parsed, already checked (engine/setup/quick.py vouches for
    it): the keys and defaults parse_trading_config reads, each number as its `_dec` reads it."""
    def number(value, where: str) -> Decimal:
        return to_decimal(str(value) if isinstance(value, float) else value, where)

    strategies = {name: (number(spec["capital"], f"strategies.{name}.capital") if "capital" in spec else None,
                         number(spec.get("capital_share", 1), f"strategies.{name}.capital_share"))
                  for name, spec in raw.get("strategies", {}).items()}
    portfolio = raw.get("portfolio", {})
    return Capitals(strategies, number(portfolio.get("capital", "1000000"), "portfolio.capital"),
                    portfolio.get("capital_mode", "fixed"))


def _capital_base(capitals: Capitals, name: str, deposits: Decimal) -> tuple[Decimal | None, str, Decimal | None]:
    """The strategy's capital now, where it comes from, and its share of the net deposits when it
    follows them (compounding: its capital on each day is that share of the deposits of the day)."""
    strategy = capitals.strategies.get(name)
    if strategy is None:
        return None, "no capital (positions no strategy owns)", None
    capital, share = strategy
    if capital is not None:
        return capital, f"fixed: strategies.{name}.capital", None
    if capitals.mode == "compounding":
        return deposits * share, f"share {share} of net deposits", share
    return capitals.portfolio * share, f"share {share} of [portfolio] capital", None


def _curve(rows: list[dict], navs: dict | None, base: Decimal | dict | None, start: Decimal | None,
           deposits: dict | None = None, origin: dt.date | None = None) -> list[dict]:
    """Each day's NAV and its drawdown below the running peak (the peak starts at `start`, the NAV
    of the day before the first row). The NAV is `navs`' of the day, else `base` (a capital, or
    one per day) plus the cumulative P&L.

    Money deposited or withdrawn is no gain or loss: with `deposits` (net deposits to date, by day;
    `origin` the day they count from, else the first row's) the drawdown in money is of the NAV less
    the net deposits since then, and in percent of the daily returns compounded (the day's change
    of NAV less its deposits over the NAV it started with), each below its running peak. A strategy's
    NAV (its capital plus its P&L) moves by nothing else, so both are its NAV's below its peak."""
    out, peak = [], start
    index = index_peak = 1.0
    before = (start, start)  # the NAV and the NAV less the deposits since the origin, of the day before
    origin = origin if origin is not None else (rows[0]["day"] if rows else None)
    for row in rows:
        capital = base.get(row["day"]) if isinstance(base, dict) else base
        value = navs.get(row["day"]) if navs is not None else (
            None if capital is None or row["cumulative"] is None else capital + row["cumulative"])  # None: no FX rate
        value = None if value is None else series_mod.cents(value)
        moved = ZERO if deposits is None else series_mod.cents(deposits[row["day"]] - deposits[origin])
        adjusted = None if value is None else value - moved
        if adjusted is not None:
            peak = adjusted if peak is None else max(peak, adjusted)
            if before[0] is not None and before[0] > 0:
                index *= 1 + float(adjusted - before[1]) / float(before[0])
                index_peak = max(index_peak, index)
            before = (value, adjusted)
        drawdown = None if adjusted is None else adjusted - peak
        out.append({"day": row["day"], "net": row["net"], "cumulative": row["cumulative"], "nav": value,
                    "drawdown": drawdown,
                    "drawdown_pct": None if drawdown is None else round((index / index_peak - 1) * 100, 4)})
    return out


def _stats(curve: list[dict], start_nav: Decimal | None) -> dict:
    returns, previous = [], start_nav
    for point in curve:
        if previous and previous > 0 and point["net"] is not None:
            returns.append(float(point["net"] / previous))
        previous = point["nav"]
    n = len(returns)
    mean = sum(returns) / n if n else None
    vol = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1)) if n > 1 else None
    annual_return = None if mean is None else mean * YEAR
    annual_vol = None if vol is None else vol * math.sqrt(YEAR)
    sharpe = annual_return / annual_vol if annual_vol else None
    drawdowns = [p["drawdown"] for p in curve if p["drawdown"] is not None]
    pcts = [p["drawdown_pct"] for p in curve if p["drawdown_pct"] is not None]
    r = lambda x, k=4: None if x is None else round(x, k)  # noqa: E731
    return {"days": len(curve), "pnl": curve[-1]["cumulative"] if curve else ZERO,
            "annual_return_pct": r(annual_return and annual_return * 100), "annual_vol_pct": r(annual_vol and annual_vol * 100),
            "sharpe": r(sharpe, 3), "max_drawdown": min(drawdowns) if drawdowns else ZERO,
            "max_drawdown_pct": min(pcts) if pcts else 0.0}


def performance(ctx: Session, since: dt.date | None = None, until: dt.date | None = None,
                checkpoints: bool | None = None) -> dict:
    """Daily curves and statistics per strategy and for the whole account (`checkpoints` as
    series.build_many's: False replays from the first entry)."""
    from tradeledger.reports import series

    built = series.build_many(ctx, ("strategy", "total"), until, checkpoints)
    return performance_of(built, capitals_of(ctx.config), ctx.settings.base_currency, since, until)


def performance_of(built: dict, capitals: Capitals, base_ccy: str, since: dt.date | None = None,
                   until: dt.date | None = None) -> dict:
    """`performance` from the series by strategy and in total (series.build_many) and the config's
    capitals: pure, so that reports/series_fast.py gives it from a checkpoint without SQLAlchemy."""
    by_strategy, total = built["strategy"], built["total"]
    last_deposits = max(total.deposits.items())[1] if total.deposits else ZERO
    strategies = []
    rounded = pnl_mod.cumulatives_adding_up(by_strategy.groups)  # the strategies' P&L adds up to the total's
    for name in sorted(set(by_strategy.groups) | set(capitals.strategies)):
        days = by_strategy.groups.get(name, {})
        rows = [{"day": d, **r} for d, r in pnl_mod._period_rows(days, since, until, per_day=True, rounded=rounded[name])] \
            if days else []
        capital, source, share = _capital_base(capitals, name, last_deposits)
        if share is not None and rows:  # the capital follows the deposits: a deposit is no return
            per_day = {d: series_mod.cents(total.deposits[d] * share) for d in total.days}
            prior = [d for d in total.days if d < rows[0]["day"]]
            origin = prior[-1] if prior else rows[0]["day"]
            start = per_day[origin]
            curve = _curve(rows, None, per_day, start, per_day, origin)
        else:
            start = capital if capital is None or not rows else \
                None if rows[0]["cumulative"] is None else capital + rows[0]["cumulative"] - rows[0]["net"]
            curve = _curve(rows, None, capital, start)
        strategies.append({"strategy": name, "capital": capital, "capital_source": source, "currency": base_ccy,
                           "curve": curve, "stats": _stats(curve, start)})
    days = total.groups.get(series_mod.TOTAL, {})
    rows = [{"day": d, **r} for d, r in pnl_mod._period_rows(days, since, until, per_day=True)] if days else []
    first = rows[0]["day"] if rows else None
    before = [d for d in total.days if first is not None and d < first]
    start_nav = total.nav.get(before[-1]) if before else None
    curve = _curve(rows, total.nav, None, start_nav, total.deposits, before[-1] if before else None)
    account = {"strategy": "total", "capital": last_deposits, "capital_source": "net deposits",
               "currency": base_ccy, "curve": curve, "stats": _stats(curve, start_nav)}
    if curve and curve[-1]["nav"] is not None and curve[-1]["cumulative"] is not None \
            and (start_nav is not None or not before):
        # NAV also moves with the base value of cash held in other currencies: not a strategy's P&L
        # (a period from the ledger's first day starts from nothing: no NAV, no deposits)
        moved = curve[-1]["nav"] - series_mod.cents(start_nav or ZERO)
        deposited = total.deposits[curve[-1]["day"]] - (total.deposits[before[-1]] if before else ZERO)
        account["stats"]["fx_translation"] = series_mod.cents(moved - deposited - curve[-1]["cumulative"])
    return {"currency": base_ccy, "since": since, "until": until, "strategies": strategies, "total": account}
