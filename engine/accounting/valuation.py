"""What the account is worth: prices for valuation and the NAV query.

The ledger holds cash per currency, shares at cost and futures at zero cost with a mark. What
they are worth on a date:

* cash (and money due, such as a dividend receivable): its balance, at the day's FX rate;
* shares: units x price x multiplier (the close of the day, else the newest before it);
* futures: the variation margin not yet booked, position x (price - mark) x multiplier; zero
  right after the daily mark, since the settlement books everything up to the settlement price.

NAV is their sum in the base currency. It is a query, nothing is stored: deposits and
withdrawals (`Equity:Deposits`), P&L and adjustments all arrive as cash or positions. A missing
FX rate leaves the NAV unknown (None) and says which currency, never assuming 1.

The price of a contract on a date is its settlement on that date or before, else its
instrument's close; the newer wins, a settlement wins a tie (it is the exchange's own mark).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.accounting import holdings as holdings_mod
from tradeledger.engine.accounting import restate
from tradeledger.engine.accounting.restate import newest_price
from tradeledger.engine.setup.config import TradingConfig, instrument_of_contract
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled, plain

ZERO = Decimal(0)
CENT = Decimal("0.01")


def _newest(conn, table, key: str, value: str, on: dt.date | None) -> dict[str, tuple[str, int]]:
    """key -> (date, scaled value) of each key's newest row on or before `on`, in one query."""
    newest = sa.select(table.c[key], sa.func.max(table.c.date).label("date"))
    if on is not None:
        newest = newest.where(table.c.date <= on.isoformat())
    newest = newest.group_by(table.c[key]).subquery()
    query = sa.select(table.c[key], table.c.date, table.c[value]).join(
        newest, sa.and_(table.c[key] == newest.c[key], table.c.date == newest.c.date))
    return {k: (d, v) for k, d, v in conn.execute(query)}


def latest_prices(ctx: Context, config: TradingConfig, codes, on: dt.date | None = None) -> dict[str, Decimal]:
    """The newest known price of each contract on or before `on` (default: any date); a close from
    before a booked split in the units held after it (accounting/restate.py)."""
    with read_connection(ctx.engine) as conn:
        settlements = _newest(conn, tables.settlement, "contract", "price", on)
        closes = _newest(conn, tables.price_bar, "instrument", "close", on)
        splits = booked_splits(conn)
    result = {}
    for code in codes:
        instrument = instrument_of_contract(config, code)
        name = instrument.name if instrument is not None else None
        price = newest_price(settlements.get(code), closes.get(name), splits.get(name, []), on)
        if price is not None:
            result[code] = price
    return result


def booked_splits(conn) -> dict[str, list]:
    """ticker -> [(date, old/new)] of the splits booked: the raw read path's query and reading
    (restate.SPLITS_SQL, restate.booked_splits) on a SQLAlchemy connection."""
    return restate.booked_splits(conn.exec_driver_sql(restate.SPLITS_SQL))


def fx_rates(ctx: Context, on: dt.date | None = None) -> dict[str, Decimal]:
    """Base-currency units per unit of each currency with a rate on or before `on` (base: 1)."""
    with read_connection(ctx.engine) as conn:
        rates = {ccy: from_scaled(v) for ccy, (_, v) in _newest(conn, tables.fx_rate, "currency", "rate", on).items()}
    rates[ctx.settings.base_currency] = Decimal(1)
    return rates


@dataclass(frozen=True)
class Nav:
    """The account's worth in the base currency, and what it is made of (native currencies)."""

    currency: str
    on: dt.date | None
    total: Decimal | None  # None when an FX rate is missing
    cash: dict = field(default_factory=dict)  # currency -> balance
    shares: dict = field(default_factory=dict)  # currency -> market value
    futures: dict = field(default_factory=dict)  # currency -> unsettled variation margin
    deposits: dict = field(default_factory=dict)  # currency -> net deposits (Equity:Deposits, sign flipped)
    missing_fx: tuple = ()

    def as_json(self) -> dict:
        return {"currency": self.currency, "on": self.on, "nav": self.total, "cash": self.cash,
                "shares": self.shares, "futures": self.futures, "deposits": self.deposits,
                "missing_fx": list(self.missing_fx)}


def nav(ctx: Context, config: TradingConfig, on: dt.date | None = None, from_end: bool | None = None) -> Nav:
    """NAV now (on=None), or at the end of day `on` (entries before the next day, prices of `on`;
    the balances then from whichever end of the ledger is nearer, `Ledger.balances`' `from_end`)."""
    chart, ledger = ctx.chart, ctx.ledger
    as_of = None if on is None else on + dt.timedelta(days=1)
    contracts = holdings_mod.known_contracts(ledger)
    with read_connection(ctx.engine) as conn:
        balances = ledger.balances(as_of=as_of, conn=conn, from_end=from_end)
        marks = holdings_mod.marks(conn) if on is None else {}
    cash: dict = {}
    deposits: dict = {}
    held: dict = {}
    for (account, commodity), units in balances.items():
        if account == chart.cash or (account.startswith("Assets:") and not account.startswith(chart.root + ":Strategy:")
                                     and account != chart.unattributed and commodity not in contracts):
            cash[commodity] = cash.get(commodity, ZERO) + units  # cash, and money due (dividend receivables)
        elif account == chart.deposits:
            deposits[commodity] = deposits.get(commodity, ZERO) - units
        elif account.startswith(chart.root + ":") and commodity in contracts:
            held[(account, commodity)] = units
    prices = latest_prices(ctx, config, {code for _, code in held}, on)
    shares: dict = {}
    futures: dict = {}
    for (account, code), qty in held.items():
        contract, price = contracts[code], prices.get(code)
        if price is None:
            continue
        if contract.sec_type == "FUT":
            holder = holdings_mod.holder_of(chart, account)
            mark = marks.get((holder, code), price) if on is None else price
            futures[contract.currency] = futures.get(contract.currency, ZERO) + qty * (price - mark) * contract.multiplier
        else:
            shares[contract.currency] = shares.get(contract.currency, ZERO) + qty * price * contract.multiplier
    rates = fx_rates(ctx, on)
    total, missing = ZERO, set()
    for part in (cash, shares, futures):
        for ccy, amount in part.items():
            if ccy not in rates:
                missing.add(ccy)
            else:
                total += amount * rates[ccy]
    tidy = lambda part: {ccy: plain(amount) for ccy, amount in sorted(part.items())}  # noqa: E731
    return Nav(ctx.settings.base_currency, on, None if missing else total.quantize(CENT), tidy(cash), tidy(shares),
               tidy(futures), tidy(deposits), tuple(sorted(missing)))
