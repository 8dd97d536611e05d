"""Target runs: every (strategy, instrument) sized by volatility targeting, persisted for review.

A run is computed as of a date from facts already stored (prices, FX, forecasts) and the ledger's
positions, and written in one database transaction as an immutable snapshot:

    target_run   id, created_at, as_of, state, review fields, inputs (JSON: everything used)
    target_line  (run, strategy, instrument) -> execution contract, current, target,
                 explain (JSON: every figure the target came from)

For each strategy and each of its signal instruments (`engine/sizing.py` has the formulas):

* forecast: the latest on or before `as_of` (engine/forecasts.py; an import beats a computation);
* execution instrument: the signal instrument's mapping (`[mappings] BTC = "MBT"`), else itself;
  the contract traded is its current contract on `as_of` (engine/config.py);
* price, multiplier, currency and FX are the *execution* instrument's: its latest close (for a
  future without closes, its current contract's latest settlement), FX to the base currency;
* volatility: the daily standard deviation of price changes, estimated RiskMetrics-style as
  the root of an exponentially weighted mean (span 35) of squared daily differences of the
  execution instrument's closes. If the execution instrument has fewer than MIN_VOL_PRICES
  closes, the signal instrument's percentage returns are used instead, scaled to the execution
  price (vol% x |execution price|): a micro contract moves like its underlying;
* current: the strategy's exposure to the execution instrument: its ledger positions summed over
  every contract of the instrument (`Assets:Broker:<acct>:Strategy:<component>`, commodities =
  contract codes; explain["held"] lists them), so a position left in the old contract at a roll
  counts and is never bought again in the new one;
* capital, buffer fraction from `[portfolio]`; capital share, risk target, instrument weight and
  IDM from the strategy.

Anything missing (a price, a forecast, an FX rate, enough history) is an error naming every
missing piece, and nothing is stored.

Review: a run is `pending` until reviewed once, to `approved` or `rejected`. Derived from the
clock and the newer runs, a run is also `superseded` (a newer run exists: the next one is its
`superseded_by`) or `expired` (older than `portfolio.max_run_age_hours`). Only an approved run that
is neither can be executed (`executable_run`): execution always works from the approved snapshot,
never a recomputation. A run that supersedes one pending review, or approved and not executed, says
so (run_state.supersession); computed unattended (the daemon's targets job, `cycle --unattended`),
one that discards an approval raises `approval_discarded` in the transaction that stores it, and a
person's next review (approve or reject) of a newer run resolves it in the review's transaction.

Also here: the instrument table and `set_mapping`, which edits `[mappings]` in config.toml.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import pandas as pd
import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.setup.config import (
    Instrument, TradingConfig, current_contract, instrument_of_contract, parse_trading_config,
)
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.targets.allocation import AllocationError, size_allocation, target_weights
from tradeledger.engine.futures.exposure import held_by_instrument, instrument_index
from tradeledger.engine.targets.capital import strategy_capital
from tradeledger.engine.futures.panama import signal_histories
from tradeledger.engine.targets.forecasts import Forecast, resolve_forecasts
from tradeledger.engine.targets.prices import (
    PriceError, _reader, fx_rate_on, latest_contract_close, latest_price, latest_settlement, price_histories, split_factor,
    trading_config,
)
from tradeledger.engine.targets.run_state import (
    APPROVED, EXECUTED_RUNS_SQL, EXECUTED_SQL, PENDING, REJECTED, Superseded, run_status, sql_rows, supersession,
)
from tradeledger.engine.targets.sizing import SizingInput, SizingResult, size_position
from tradeledger.engine.tables import target_line, target_run, tl_exception
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception, resolve
from tradeledger.engine.trust.reading import OPEN_STATES
from tradeledger.ledger.numbers import from_scaled, plain, to_scaled
from tradeledger.ledger.store import fmt_ts, parse_ts
from tradeledger.errors import UnknownName, UserError

UTC = dt.timezone.utc
VOL_SPAN = 35
MIN_VOL_PRICES = 10


class TargetError(UserError):
    """A run that cannot be computed, reviewed or executed; the message says why."""


# -- volatility (pure) --------------------------------------------------------------------------


def daily_price_vol(prices: pd.Series, span: int = VOL_SPAN) -> float:
    """sqrt(EWMA(span) of squared daily price differences): zero-mean, as RiskMetrics."""
    diffs = prices.dropna().diff().dropna()
    return math.sqrt(float((diffs ** 2).ewm(span=span).mean().iloc[-1])) if len(diffs) else math.nan


def daily_return_vol(prices: pd.Series, span: int = VOL_SPAN) -> float:
    """The same estimator over percentage returns (a fraction: 0.02 is 2% a day)."""
    prices = prices.dropna()
    if (prices <= 0).any():
        return math.nan
    returns = prices.pct_change().dropna()
    return math.sqrt(float((returns ** 2).ewm(span=span).mean().iloc[-1])) if len(returns) else math.nan


def to_dec(value: float, what: str) -> Decimal:
    if not math.isfinite(value):
        raise TargetError(f"{what} is not a finite number")
    return plain(Decimal(format(value, ".9f")))


def execution_vol(exec_name: str, exec_hist: pd.Series, signal_name: str, signal_hist: pd.Series,
                  price: Decimal) -> tuple[Decimal, str]:
    """The execution instrument's daily price volatility, and where it came from."""
    if len(exec_hist.dropna()) >= MIN_VOL_PRICES:
        return to_dec(daily_price_vol(exec_hist), f"volatility of {exec_name}"), f"{exec_name} closes"
    if signal_name != exec_name and len(signal_hist.dropna()) >= MIN_VOL_PRICES:
        pct = to_dec(daily_return_vol(signal_hist), f"return volatility of {signal_name} (prices must be > 0)")
        return plain(pct * abs(price)), f"{signal_name} returns x {exec_name} price"
    names = exec_name if signal_name == exec_name else f"{exec_name} or {signal_name}"
    raise TargetError(f"not enough price history for the volatility of {names} (need {MIN_VOL_PRICES} closes)")


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunLine:
    """One strategy's target in one instrument, as the run recorded it with its explanation
    (`trading.orders.TargetLine` is what an approved line becomes for order planning)."""

    run_id: int
    strategy: str  # the configured strategy name (its account component is explain["account"])
    instrument: str  # the signal instrument
    contract: str  # the execution contract code
    current: Decimal
    target: Decimal
    explain: dict

    @property
    def change(self) -> Decimal:
        return self.target - self.current

    def as_json(self) -> dict:
        return {"strategy": self.strategy, "instrument": self.instrument, "contract": self.contract,
                "current": self.current, "target": self.target, "change": self.change, "explain": self.explain}


@dataclass(frozen=True)
class TargetRun:
    id: int
    created_at: dt.datetime
    as_of: dt.date
    state: str
    status: str  # state, or superseded / expired as derived
    reviewed_at: dt.datetime | None
    reviewed_by: str | None
    review_note: str | None
    inputs: dict
    lines: tuple[RunLine, ...] = ()
    unattended: bool = False  # approved by `cycle --unattended`: no person reviewed it
    superseded_by: int | None = None  # the next newer run, when there is one
    executed: bool = False  # its plan recorded (crosses booked, orders recorded)

    def superseded_note(self) -> str | None:
        """How a newer run superseded this one before it was executed, in words; None otherwise."""
        if self.superseded_by is None or self.executed or self.state == REJECTED:
            return None
        was = "pending review" if self.state == PENDING else f"approved by {self.reviewed_by or 'unknown'}"
        return f"superseded by run {self.superseded_by} (it was {was}, not executed)"

    def as_json(self, with_lines: bool = True) -> dict:
        """`state` is the run's state as it stands (its `status`: pending, approved, rejected, or
        superseded / expired): one name, the one orders, exceptions and `status` use."""
        data = {"id": self.id, "created_at": self.created_at.isoformat(), "as_of": self.as_of.isoformat(),
                "state": self.status,
                "reviewed_at": self.reviewed_at.isoformat() if self.reviewed_at else None,
                "reviewed_by": self.reviewed_by, "review_note": self.review_note, "unattended": self.unattended,
                "superseded_by": self.superseded_by, "executed": self.executed, "superseded": self.superseded_note()}
        if with_lines:
            data["inputs"] = self.inputs
            data["lines"] = [line.as_json() for line in self.lines]
        return data


# -- computing ------------------------------------------------------------------------------------


def _num(value: Decimal | None) -> str | None:
    if value is None:
        return None
    try:
        value = value.quantize(Decimal("1e-9"))
    except InvalidOperation:
        pass
    return format(plain(value), "f")


def explain_line(result: SizingResult, extra: dict) -> dict:
    """Every figure of one sizing, as exact decimal strings."""
    inp = result.inputs
    figures = {
        "forecast": result.forecast, "price": inp.price, "multiplier": inp.multiplier, "fx_rate": inp.fx_rate,
        "volatility": inp.daily_price_vol, "price_vol_pct": result.price_vol_pct, "capital": inp.capital,
        "capital_share": inp.capital_share, "risk_target": inp.annual_risk_target,
        "instrument_weight": inp.instrument_weight, "idm": inp.idm, "buffer_fraction": inp.buffer_fraction,
        "daily_cash_vol_target": result.daily_cash_vol_target, "value_vol": result.value_vol,
        "vol_scalar": result.vol_scalar, "subsystem_position": result.subsystem_position,
        "average_position": result.average_position, "unrounded_target": result.unrounded_target,
        "buffer_width": result.buffer_width, "buffer_lower": result.buffer_lower,
        "buffer_upper": result.buffer_upper, "current": inp.current, "target": result.target,
        "change": result.change, "contract_notional": result.contract_notional,
        "notional_exposure": result.notional_exposure,
    }
    return {**extra, **{k: _num(v) for k, v in figures.items()}, "within_buffer": result.within_buffer}


def compute_run(ctx: Context, as_of: dt.date | None = None, now: dt.datetime | None = None,
                unattended: bool = False) -> int:
    """Size every (strategy, instrument) and persist the run (pending); return its id. `unattended`
    (nobody is told at the time: the daemon, `cycle --unattended`): a run approved and not executed
    that the new run supersedes is raised as `approval_discarded`, in the same transaction."""
    now = now or ctx.now()
    as_of = as_of or now.date()
    config = trading_config(ctx)
    if not config.strategies:
        raise TargetError("no strategies configured: add [strategies.NAME] tables to config.toml")
    chart, base = ctx.chart, ctx.settings.base_currency
    account_nav, nav_note = _account_nav(ctx, config)
    with ctx.engine.begin() as conn:  # reads and writes in one transaction: a consistent snapshot
        names = {i for s in config.strategies.values() for i, _ in s.instruments}
        names |= {config.execution_instrument(i).name for i in names}
        histories, adjusted = signal_histories(ctx, conn, config, names, as_of)  # futures: the Panama series
        forecasts, missing = resolve_forecasts(ctx, config, as_of, conn, histories)
        positions = ctx.ledger.positions(conn=conn)
        held = held_by_instrument(positions, instrument_index(config))  # exposure is per instrument
        problems = [f"no forecast: {reason}" for reason in missing.values()]
        prices, fxs, rows, seen, vols = {}, {}, [], {}, {}
        capitals = {}
        for strategy in config.strategies.values():
            try:
                capitals[strategy.name] = strategy_capital(config, strategy, account_nav, nav_note)
            except ValueError as exc:
                problems.append(f"{strategy.name}: {exc}")
                continue
            if strategy.is_allocation:
                try:
                    rows += _allocation_rows(ctx, strategy, config, as_of, conn, histories, positions, prices, fxs,
                                             capitals[strategy.name])
                except (AllocationError, PriceError) as exc:
                    problems.append(f"{strategy.name}: {exc}")
                continue
            for signal, weight in strategy.instruments:
                execution = config.execution_instrument(signal)
                contract = current_contract(execution, as_of)
                clash = seen.setdefault((strategy.name, contract.code), signal)
                if clash != signal:
                    problems.append(f"strategy {strategy.name}: {clash} and {signal} both execute in {contract.code}")
                    continue
                forecast = forecasts.get((strategy.name, signal))
                try:
                    if execution.name not in prices:
                        prices[execution.name] = _execution_price(ctx, execution, contract.code, as_of, conn)
                    p_date, price, p_source = prices[execution.name]
                    if execution.currency not in fxs:
                        fxs[execution.currency] = fx_rate_on(ctx, execution.currency, as_of, conn)
                    fx_date, fx = fxs[execution.currency]
                    if (execution.name, signal) not in vols:  # the same for every strategy
                        vols[(execution.name, signal)] = execution_vol(
                            execution.name, histories.get(execution.name, pd.Series(dtype=float)),
                            signal, histories.get(signal, pd.Series(dtype=float)), price)
                    vol, vol_source = vols[(execution.name, signal)]
                    if execution.name in adjusted:
                        vol_source = vol_source.replace(f"{execution.name} closes", f"{execution.name} back-adjusted closes")
                except (PriceError, TargetError) as exc:
                    problems.append(f"{strategy.name}/{signal}: {exc}")
                    continue
                if forecast is None or strategy.name not in capitals:
                    continue
                capital = capitals[strategy.name]
                account = chart.holdings(strategy.account_name)
                in_contracts = held.get((account, execution.name), {})
                current = sum(in_contracts.values(), Decimal(0))
                try:
                    result = size_position(SizingInput(
                        capital=capital.capital, capital_share=capital.share,
                        annual_risk_target=strategy.risk_target, instrument_weight=weight, idm=strategy.idm,
                        forecast=float(forecast.value), price=price, multiplier=execution.multiplier,
                        fx_rate=fx, daily_price_vol=vol, buffer_fraction=config.buffer_fraction,
                        current=current, allow_nonpositive_price=execution.is_future))
                except ValueError as exc:
                    problems.append(f"{strategy.name}/{signal}: {exc}")
                    continue
                explain = explain_line(result, {
                    "strategy": strategy.name, "account": strategy.account_name, "holdings_account": account,
                    "signal_instrument": signal, "execution_instrument": execution.name,
                    "contract": contract.code, "currency": execution.currency, "base_currency": base,
                    "forecast_date": forecast.date.isoformat(), "forecast_source": forecast.source,
                    "rule_forecasts": dict(forecast.rules), "carry": dict(forecast.carry) or None,
                    "price_date": p_date.isoformat(),
                    "price_source": p_source, "fx_date": fx_date.isoformat() if fx_date else None,
                    "volatility_source": vol_source, "capital_source": capital.source,
                    "signal_prices": f"{signal} back-adjusted (Panama)" if signal in adjusted else f"{signal} closes",
                    "held": {code: _num(units) for code, units in in_contracts.items()},
                })
                rows.append({"strategy": strategy.name, "instrument": signal, "contract": contract.code,
                             "current": to_scaled(current), "target": to_scaled(result.target),
                             "explain": json.dumps(explain, sort_keys=True)})
        if problems:
            raise TargetError("cannot compute targets, nothing stored: " + "; ".join(problems))
        inputs = _inputs(config, as_of, base, prices, fxs, forecasts)
        inputs["capital_mode"] = config.capital_mode
        inputs["nav"] = None if account_nav is None else str(account_nav)
        inputs["strategy_capital"] = {n: {"capital": str(c.capital), "share": str(c.share),
                                          "amount": str(c.amount.quantize(Decimal("0.01"))), "source": c.source} for n, c in capitals.items()}
        run_id = conn.execute(target_run.insert().values(
            created_at=fmt_ts(now), as_of=as_of.isoformat(), state=PENDING, inputs=json.dumps(inputs, sort_keys=True),
        )).inserted_primary_key[0]
        if rows:
            conn.execute(target_line.insert(), [{"run_id": run_id, **row} for row in rows])
        before = supersession(sql_rows(conn), run_id, now, config.max_run_age_hours)
        if unattended and before is not None and before.discards_approval:
            raise_exception(conn, ExceptionKind.APPROVAL_DISCARDED, f"run {before.run}",
                            f"{before.describe()}: the approval is discarded and its targets will not trade; "
                            f"review run {run_id} (`tradeledger targets show {run_id}`)", severity="error",
                            dedupe_key=dedupe_key(ExceptionKind.APPROVAL_DISCARDED, before.run), now=now)
    return int(run_id)


def _allocation_rows(ctx: Context, strategy, config: TradingConfig, as_of: dt.date, conn, histories, positions,
                     prices: dict, fxs: dict, capital_used) -> list[dict]:
    """An allocation strategy's lines: weights, then whole shares past the band (engine/targets/allocation.py)."""
    universe = sorted(i for i, _ in strategy.instruments)
    closes = {t: histories.get(t, pd.Series(dtype=float)) for t in universe}
    weights, source = target_weights(strategy, closes, as_of, conn)
    for ticker in universe:
        instrument = config.instruments[ticker]
        if ticker not in prices:
            prices[ticker] = _execution_price(ctx, instrument, ticker, as_of, conn)
        if instrument.currency not in fxs:
            fxs[instrument.currency] = fx_rate_on(ctx, instrument.currency, as_of, conn)
    account = ctx.chart.holdings(strategy.account_name)
    capital = capital_used.amount
    lines = size_allocation(
        capital, weights, {t: prices[t][1] for t in universe},
        {t: fxs[config.instruments[t].currency][1] for t in universe},
        {t: positions.get((account, t), Decimal(0)) for t in universe}, strategy.allocation)
    rows = []
    for line in lines:
        explain = {**line.explain, "strategy": strategy.name, "kind": "allocation", "account": strategy.account_name,
                   "holdings_account": account, "execution_instrument": line.ticker, "contract": line.ticker,
                   "currency": config.instruments[line.ticker].currency, "base_currency": ctx.settings.base_currency,
                   "price_date": prices[line.ticker][0].isoformat(), "price_source": prices[line.ticker][2],
                   "capital_share": str(capital_used.share), "weights_source": source,
                   "capital_source": capital_used.source}
        rows.append({"strategy": strategy.name, "instrument": line.ticker, "contract": line.ticker,
                     "current": to_scaled(line.current), "target": to_scaled(line.target),
                     "explain": json.dumps(explain, sort_keys=True)})
    return rows


def _account_nav(ctx: Context, config) -> tuple[Decimal | None, str]:
    """The account's NAV for compounding capital (read only when some strategy needs it)."""
    if config.capital_mode != "compounding":
        return None, ""
    from tradeledger.engine.accounting.valuation import nav

    value = nav(ctx, config)
    note = f" {value.currency}"
    if value.missing_fx:
        note += f", no FX rate for {', '.join(value.missing_fx)}"
    return value.total, note


def _execution_price(ctx: Context, instrument: Instrument, contract: str, as_of: dt.date, conn) -> tuple[dt.date, Decimal, str]:
    try:
        date, price = latest_price(ctx, instrument.name, as_of, conn)
        factor = Decimal(1) if instrument.is_future else split_factor(ctx, instrument.name, date, as_of, conn)
        if factor != 1:  # the close is from before a split the positions of as_of already reflect
            return date, plain(price * factor), f"{instrument.name} close x {plain(factor)} (split after it)"
        return date, price, f"{instrument.name} close"
    except PriceError:
        if not instrument.is_future:
            raise
    for latest, what in ((latest_contract_close, "close"), (latest_settlement, "settlement")):
        try:  # the contract's own close (`data fetch` stores no instrument close), else its settlement
            date, price = latest(ctx, contract, as_of, conn)
            return date, price, f"{contract} {what}"
        except PriceError:
            continue
    raise PriceError(f"no price for {instrument.name} (no close, no close or settlement of {contract}) "
                     f"on or before {as_of}")


def _inputs(config: TradingConfig, as_of: dt.date, base: str, prices, fxs, forecasts: dict[tuple, Forecast]) -> dict:
    s = str
    return {
        "as_of": as_of.isoformat(), "base_currency": base, "capital": s(config.capital),
        "buffer_fraction": s(config.buffer_fraction), "max_run_age_hours": s(config.max_run_age_hours),
        "mappings": dict(config.mappings), "vol_span": VOL_SPAN, "min_vol_prices": MIN_VOL_PRICES,
        "strategies": {n: {"account": st.account_name, "capital_share": s(st.capital_share),
                           "risk_target": s(st.risk_target), "idm": s(st.idm), "fdm": s(st.fdm),
                           "rules": {r: s(w) for r, w in st.rules}, "instruments": {i: s(w) for i, w in st.instruments}}
                       for n, st in config.strategies.items()},
        "instruments": {n: {"type": i.type, "currency": i.currency, "multiplier": s(i.multiplier)}
                        for n, i in config.instruments.items() if n in prices},
        "prices": {n: [d.isoformat(), s(p), src] for n, (d, p, src) in prices.items()},
        "fx": {c: [d.isoformat() if d else None, s(r)] for c, (d, r) in fxs.items()},
        "forecasts": {f"{k[0]}/{k[1]}": f.as_json() | {"forecast": s(f.value)} for k, f in forecasts.items()},
    }


# -- reading and reviewing --------------------------------------------------------------------------


def _run(row, newest: int, now: dt.datetime, max_age: Decimal, lines=(), superseded_by: int | None = None,
         executed: bool = False) -> TargetRun:
    created = parse_ts(row.created_at)
    return TargetRun(
        id=row.id, created_at=created, as_of=dt.date.fromisoformat(row.as_of), state=row.state,
        status=run_status(row.state, created, row.id < newest, now, max_age),
        reviewed_at=parse_ts(row.reviewed_at) if row.reviewed_at else None, reviewed_by=row.reviewed_by,
        review_note=row.review_note, inputs=json.loads(row.inputs), lines=tuple(lines),
        unattended=bool(row.unattended), superseded_by=superseded_by, executed=executed)


def _line(row) -> RunLine:
    return RunLine(row.run_id, row.strategy, row.instrument, row.contract, from_scaled(row.current),
                      from_scaled(row.target), json.loads(row.explain))


def list_runs(ctx: Context, now: dt.datetime | None = None) -> list[TargetRun]:
    """Every run, newest first, with its derived status (no lines)."""
    now, max_age = now or ctx.now(), trading_config(ctx).max_run_age_hours
    with _reader(ctx, None) as c:
        rows = c.execute(sa.select(target_run).order_by(target_run.c.id.desc())).all()
        executed = {run_id for (run_id,) in sql_rows(c)(EXECUTED_RUNS_SQL)}
    newest = rows[0].id if rows else 0
    return [_run(row, newest, now, max_age, superseded_by=rows[i - 1].id if i else None, executed=row.id in executed)
            for i, row in enumerate(rows)]


def latest_run(ctx: Context, now: dt.datetime | None = None, conn=None) -> TargetRun | None:
    """The newest run (no lines) with its state as it stands, the one `targets show` says; None: no run."""
    now, max_age = now or ctx.now(), trading_config(ctx).max_run_age_hours
    with _reader(ctx, conn) as c:
        row = c.execute(sa.select(target_run).order_by(target_run.c.id.desc()).limit(1)).first()
        executed = row is not None and _executed(c, row.id)
    return None if row is None else _run(row, row.id, now, max_age, executed=executed)


def _executed(conn, run_id: int) -> bool:
    return bool(sql_rows(conn)(EXECUTED_SQL, (run_id, run_id, run_id)))


def show_run(ctx: Context, run_id: int, now: dt.datetime | None = None, conn=None) -> TargetRun:
    """One run with its lines and derived status."""
    now, max_age = now or ctx.now(), trading_config(ctx).max_run_age_hours
    with _reader(ctx, conn) as c:
        row = c.execute(sa.select(target_run).where(target_run.c.id == run_id)).first()
        if row is None:
            raise TargetError(f"no target run {run_id}")
        newest = c.execute(sa.select(sa.func.max(target_run.c.id))).scalar()
        after = c.execute(sa.select(sa.func.min(target_run.c.id)).where(target_run.c.id > run_id)).scalar()
        lines = c.execute(sa.select(target_line).where(target_line.c.run_id == run_id)
                          .order_by(target_line.c.strategy, target_line.c.instrument)).all()
        executed = _executed(c, run_id)
    return _run(row, newest, now, max_age, [_line(r) for r in lines], after, executed)


def superseded_by_run(ctx: Context, run_id: int, conn=None) -> Superseded | None:
    """What run `run_id` did to the run before it (run_state.supersession), read."""
    with _reader(ctx, conn) as c:
        created = c.execute(sa.select(target_run.c.created_at).where(target_run.c.id == run_id)).scalar()
        return supersession(sql_rows(c), run_id, parse_ts(created), trading_config(ctx).max_run_age_hours)


def _review(ctx: Context, run_id: int, state: str, who: str, note: str | None, now: dt.datetime | None,
            unattended: bool = False) -> TargetRun:
    now = now or ctx.now()
    with ctx.engine.begin() as conn:
        run = show_run(ctx, run_id, now, conn)
        if run.state != PENDING:
            raise TargetError(f"run {run_id} was already {run.state} by {run.reviewed_by} at "
                              f"{run.reviewed_at:%Y-%m-%d %H:%M} UTC; a run is reviewed once")
        if state == APPROVED and run.status == "superseded":
            raise TargetError(f"run {run_id} is superseded by run {run.superseded_by} (a newer run; `tradeledger "
                              f"targets list` says why): review run {run.superseded_by} instead")
        if state == APPROVED and run.status != PENDING:
            raise TargetError(f"run {run_id} is {run.status}: compute a new run and review that one")
        conn.execute(target_run.update().where(target_run.c.id == run_id, target_run.c.state == PENDING).values(
            state=state, reviewed_at=fmt_ts(now), reviewed_by=who or "unknown", review_note=note,
            unattended=int(unattended)))
        if not unattended:  # a person has reviewed the targets again: a discarded approval is taken up
            _resolve_discarded(conn, run_id, who or "unknown", state, now)
        return show_run(ctx, run_id, now, conn)


def _resolve_discarded(conn, run_id: int, who: str, state: str, now: dt.datetime) -> None:
    """Resolve every open `approval_discarded` of a run older than `run_id`, which a person has just
    reviewed: the condition it names (an approval gone and no person's review since) is over."""
    t = tl_exception
    for exc_id, key in conn.execute(sa.select(t.c.id, t.c.dedupe_key).where(
            t.c.kind == ExceptionKind.APPROVAL_DISCARDED.value, t.c.state.in_(OPEN_STATES))).all():
        discarded = int(key.rpartition(":")[2])
        if discarded < run_id:
            resolve(conn, exc_id, who, f"run {run_id} {state} by {who}, after run {discarded}'s approval was "
                    f"discarded", now=now)


def approve_run(ctx: Context, run_id: int, who: str, note: str | None = None, now: dt.datetime | None = None,
                unattended: bool = False) -> TargetRun:
    """pending -> approved, for a run that is neither superseded nor expired. `unattended`: no person
    reviewed it (`cycle --unattended`), and the run records that."""
    return _review(ctx, run_id, APPROVED, who, note, now, unattended)


def pending_runs(ctx: Context, conn=None) -> list[tuple[int, dt.datetime]]:
    """(id, created) of every run still waiting for a person's review (state pending), oldest first."""
    with _reader(ctx, conn) as c:
        rows = c.execute(sa.select(target_run.c.id, target_run.c.created_at).where(target_run.c.state == PENDING)
                         .order_by(target_run.c.id)).all()
    return [(r.id, parse_ts(r.created_at)) for r in rows]


def newest_run_id(ctx: Context, conn=None) -> int | None:
    with _reader(ctx, conn) as c:
        return c.execute(sa.select(sa.func.max(target_run.c.id))).scalar()


def reject_run(ctx: Context, run_id: int, who: str, note: str, now: dt.datetime | None = None) -> TargetRun:
    """pending -> rejected; a reason is required."""
    if not note or not note.strip():
        raise TargetError("rejecting a run needs a note saying why")
    return _review(ctx, run_id, REJECTED, who, note, now)


def executable_run(ctx: Context, run_id: int, now: dt.datetime | None = None, conn=None) -> tuple[RunLine, ...]:
    """The lines of an approved, current, unexpired run; otherwise an error saying why not."""
    return executable_lines(show_run(ctx, run_id, now, conn))


def executable_lines(run: TargetRun) -> tuple[RunLine, ...]:
    """A shown run's lines if it may be executed, else the error saying why not (pure)."""
    run_id = run.id
    if run.status != APPROVED:
        why = {PENDING: "is not approved yet (tradeledger targets approve)", REJECTED: "was rejected",
               "superseded": f"is superseded by run {run.superseded_by} (a newer run)", "expired": "is older than "
               "portfolio.max_run_age_hours"}.get(run.status, f"is {run.status}")
        raise TargetError(f"run {run_id} cannot be executed: it {why}")
    return run.lines


# -- instruments and mappings -----------------------------------------------------------------------


def list_instruments(ctx: Context, on: dt.date | None = None) -> list[dict]:
    config = trading_config(ctx)
    on = on or ctx.now().date()
    rows = []
    for name, inst in sorted(config.instruments.items()):
        try:
            price_date, price = latest_price(ctx, name, on)
        except PriceError:
            price_date, price = None, None
        rows.append({"name": name, "type": inst.type, "currency": inst.currency, "multiplier": inst.multiplier,
                     "exchange": inst.exchange, "ib_symbol": inst.ib_symbol, "trading_class": inst.trading_class,
                     "tick_size": inst.tick_size, "contract": current_contract(inst, on).code,
                     "executes_in": config.mappings.get(name, name),
                     "signalled_by": sorted(s for s, e in config.mappings.items() if e == name and s != name),
                     "price": price, "price_date": price_date})
    return rows


@dataclass(frozen=True)
class MappingChange:
    signal: str
    old: str
    new: str
    holders: tuple[tuple[str, str, Decimal], ...]  # (account, contract, qty) still in the old instrument


_TABLE = re.compile(r"^\s*\[")
_MAPPINGS = re.compile(r"^\s*\[\s*mappings\s*\]\s*(#.*)?$")


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def edit_mappings(text: str, signal: str, execution: str | None) -> str:
    """config.toml text with `signal = "execution"` set in [mappings] (None removes it). Pure."""
    lines = text.splitlines(keepends=True)
    key = re.compile(r"^\s*(" + "|".join(re.escape(k) for k in {signal, json.dumps(signal), f"'{signal}'"}) + r")\s*=")
    entry = None if execution is None else f"{_toml_key(signal)} = {json.dumps(execution)}\n"
    start = next((i for i, line in enumerate(lines) if _MAPPINGS.match(line)), None)
    if start is None:
        if entry is None:
            return text
        sep = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{sep}\n[mappings]\n{entry}"
    end = next((i for i in range(start + 1, len(lines)) if _TABLE.match(lines[i])), len(lines))
    found = next((i for i in range(start + 1, end) if key.match(lines[i])), None)
    if found is not None:
        lines[found:found + 1] = [] if entry is None else [entry]
    elif entry is not None:
        last = max((i for i in range(start, end) if lines[i].strip()), default=start)
        if not lines[last].endswith("\n"):
            lines[last] += "\n"
        lines.insert(last + 1, entry)
    return "".join(lines)


def set_mapping(ctx: Context, signal: str, execution: str) -> MappingChange:
    """Make `signal` execute in `execution` (the same name removes the mapping), editing config.toml."""
    path = ctx.config_path
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    config = parse_trading_config(raw)
    for name in (signal, execution):
        if name not in config.instruments:
            raise UnknownName("instrument", name, config.instruments)
    old = config.mappings.get(signal, signal)
    new_text = edit_mappings(text, signal, None if execution == signal else execution)
    new_raw = tomllib.loads(new_text)
    expected = {k: v for k, v in raw.get("mappings", {}).items() if k != signal}
    if execution != signal:
        expected[signal] = execution
    rest = {k: v for k, v in raw.items() if k != "mappings"}
    if new_raw.get("mappings", {}) != expected or {k: v for k, v in new_raw.items() if k != "mappings"} != rest:
        raise ConfigError(f"{path}: could not edit [mappings] safely; edit the file by hand")
    parse_trading_config(new_raw)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(new_text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    ctx.settings.raw["mappings"] = new_raw.get("mappings", {})
    holders = ()
    if old != execution:
        old_inst = config.instruments[old]
        holders = tuple((acct, com, qty) for (acct, com), qty in sorted(ctx.ledger.positions().items())
                        if qty and instrument_of_contract(config, com) == old_inst)
    return MappingChange(signal, old, execution, holders)
