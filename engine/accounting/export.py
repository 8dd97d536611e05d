"""The beancount export for people: the ledger as Fava should show it, written atomically.

`ledger/export.py` writes the entries; this adds what only the engine knows, as `price`
directives, so that Fava's figures are tradeledger's figures:

* shares: the instrument's close of every day from the ledger's first entry on, in the share's
  currency, so Fava's market value and unrealized gains are the CLI's;
* FX: every dated rate of each currency the ledger holds, against the base currency (the
  operating currency), so Fava converts EUR and GBP as `pnl` and NAV do;
* futures: never a price per unit (a future is held at zero cost, and Fava multiplies units by
  price without a multiplier). A future's "price" is what one contract is worth in cash after
  settlement: zero on every settlement date (the daily mark books all of it), and on the latest
  price date its unsettled variation margin per contract, sum of position x (price - mark) x
  multiplier over its holders, divided by the net position. Fava's net worth then equals the
  NAV query (engine/accounting/valuation.py). Should holders with different marks net to zero
  contracts intraday (after an internal cross, before the settlement), the remainder cannot be
  written as a price and the directive says 0.

The deposits are entries like any other (Equity:Deposits against cash), so they are in the file.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.accounting import holdings as holdings_mod
from tradeledger.engine.accounting import valuation
from tradeledger.engine.accounting.restate import restated
from tradeledger.engine.setup.config import TradingConfig, instrument_of_contract
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import export_beancount
from tradeledger.ledger.numbers import from_scaled

ZERO = Decimal(0)
NANO = Decimal("1e-9")


def futures_values(ctx: Context, config: TradingConfig) -> dict[str, Decimal]:
    """Unsettled variation margin per contract held now, per contract of net position."""
    chart = ctx.chart
    contracts = holdings_mod.known_contracts(ctx.ledger)
    with read_connection(ctx.engine) as conn:
        balances = ctx.ledger.positions(prefix=chart.root, conn=conn)
        marks = holdings_mod.marks(conn)
    held: dict = {}
    for (account, code), qty in balances.items():
        contract = contracts.get(code)
        holder = holdings_mod.holder_of(chart, account)
        if contract is None or contract.sec_type != "FUT" or holder is False:
            continue
        held.setdefault(code, []).append((holder, qty))
    prices = valuation.latest_prices(ctx, config, held)
    values = {}
    for code, holders in held.items():
        price, multiplier = prices.get(code), contracts[code].multiplier
        if price is None:
            continue
        margin = sum((qty * (price - marks.get((holder, code), price)) * multiplier for holder, qty in holders), ZERO)
        net = sum((qty for _, qty in holders), ZERO)
        value = (margin / net).quantize(NANO) if net else ZERO
        values[code] = value if value != 0 else ZERO  # never "-0"
    return values


def price_directives(ctx: Context, config: TradingConfig) -> list[tuple[dt.date, str, Decimal, str]]:
    """(date, commodity, number, currency) for shares, FX rates and futures, sorted by date."""
    base = ctx.settings.base_currency
    commodities = ctx.ledger.commodities()
    shares = {c.name for c in commodities if c.kind != "future" and c.kind != "currency"}
    futures = {c.name: c for c in commodities if c.kind == "future"}
    currencies = {c.name for c in commodities if c.kind == "currency"} - {base}
    out: dict = {}
    with read_connection(ctx.engine) as conn:
        first = ctx.ledger.entry_times(conn)[0]
        start = None if first is None else first.date()
        if start is None:
            return []
        since = start.isoformat()
        by_instrument: dict = {}
        for name in shares:
            instrument = instrument_of_contract(config, name)
            if instrument is not None:
                by_instrument.setdefault(instrument.name, []).append((name, instrument.currency))
        if by_instrument:
            pb = tables.price_bar
            for instrument, day, close in conn.execute(
                    sa.select(pb.c.instrument, pb.c.date, pb.c.close).where(
                        pb.c.instrument.in_(list(by_instrument)), pb.c.date >= since)):
                for name, ccy in by_instrument[instrument]:
                    out[(day, name)] = (from_scaled(close), ccy)
            # a booked split values the new units from its date: until that day's close, the close
            # before it restated (accounting/restate.py), as pnl and report nav value them
            for instrument, splits in valuation.booked_splits(conn).items():
                for day, _factor in splits:
                    for name, ccy in by_instrument.get(instrument, []):
                        quoted = [d for d, n in out if n == name and d < day.isoformat()]
                        if day.isoformat() >= since and (day.isoformat(), name) not in out and quoted:
                            close, _ = out[(max(quoted), name)]
                            out[(day.isoformat(), name)] = (restated(close, max(quoted), splits, day), ccy)
        if currencies:
            fx = tables.fx_rate
            for ccy, day, rate in conn.execute(sa.select(fx.c.currency, fx.c.date, fx.c.rate).where(
                    fx.c.currency.in_(sorted(currencies)), fx.c.date >= since)):
                out[(day, ccy)] = (from_scaled(rate), base)
        if futures:
            st = tables.settlement
            for code, day in conn.execute(sa.select(st.c.contract, st.c.date).where(
                    st.c.contract.in_(list(futures)), st.c.date >= since)):
                out[(day, code)] = (ZERO, futures[code].currency)
    latest = valuation_date(ctx)
    for code, value in futures_values(ctx, config).items():
        if latest is not None:
            out[(latest.isoformat(), code)] = (value, futures[code].currency if code in futures else base)
    return [(dt.date.fromisoformat(day), name, number, ccy) for (day, name), (number, ccy) in sorted(out.items())]


def valuation_date(ctx: Context) -> dt.date | None:
    """The newest date of any price, settlement or FX rate (what 'now' is valued at)."""
    with read_connection(ctx.engine) as conn:
        dates = [conn.execute(sa.select(sa.func.max(t.c.date))).scalar()
                 for t in (tables.price_bar, tables.settlement, tables.fx_rate)]
        entry = ctx.ledger.entry_times(conn)[1]
    dates = [d for d in dates if d] + ([entry.date().isoformat()] if entry else [])
    return dt.date.fromisoformat(max(dates)) if dates else None


def export_ledger(ctx: Context, config: TradingConfig | None = None, path: Path | None = None) -> int:
    """Write the environment's beancount file (default: its ledger.beancount) with its prices."""
    from tradeledger.engine.setup.config import parse_trading_config

    config = config or parse_trading_config(ctx.settings.raw)
    settings = ctx.settings
    return export_beancount(ctx.ledger, Path(path) if path else ctx.ledger_path,
                            title=f"tradeledger {settings.env} {settings.account}",
                            operating_currency=settings.base_currency, prices=price_directives(ctx, config),
                            fava=("tradeledger.reports.fava_ext", repr({"home": str(ctx.home.resolve()), "env": settings.env})))
