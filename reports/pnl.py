"""Positions and P&L, derived from postings; the same figures for the CLI, Fava and reports.

Realized P&L (variation margin for futures, lot gains for shares) is exactly minus the sum of a
holder's `Income:Trading:<holder>` postings in the period, and commissions exactly the sum of its
`Expenses:Commissions:<holder>` postings, so beancount reproduces both. Unrealized P&L is what
the open positions would add if marked now: futures position x (latest price - mark) x
multiplier, shares lots x (latest price - cost). Figures stay in their own currency; the base
currency total uses the dated FX rate and says so when a rate is missing instead of assuming 1.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tradeledger.engine.accounting import holdings as holdings_mod
from tradeledger.engine.accounting import valuation
from tradeledger.engine.accounting.holders import UNATTRIBUTED_NAME
from tradeledger.engine.setup.session import Session
from tradeledger.ledger.db import read_connection
from tradeledger.errors import UnknownName, UserError
from tradeledger.reports import series
# the rows from a series (pure: pnl_rows.py), named here as they always were
from tradeledger.reports.pnl_rows import (  # noqa: F401 - re-exported
    _QUIET, _cents, _exact_cumulative, _period_rows, _row, cumulatives_adding_up, series_rows,
)
from tradeledger.reports.positions import holder_names, position_rows

ZERO = Decimal(0)
UNATTRIBUTED = UNATTRIBUTED_NAME


def latest_prices(ctx: Session, codes) -> dict[str, Decimal]:
    """The newest known price of each contract (engine/accounting/valuation.py)."""
    return valuation.latest_prices(ctx, ctx.config, codes)


def positions(ctx: Session, strategy: str | None = None) -> list[dict]:
    if strategy is not None and strategy != UNATTRIBUTED and strategy not in ctx.config.strategies:
        raise UnknownName("strategy", strategy, [*ctx.config.strategies, UNATTRIBUTED])
    env = ctx
    chart = env.chart
    contracts = holdings_mod.known_contracts(env.ledger)
    with read_connection(env.engine) as conn:
        balances = env.ledger.positions(prefix=chart.root, conn=conn)
        marks = holdings_mod.marks(conn)
        last_prices = latest_prices(ctx, {code for _, code in balances})

        def lots(account: str, code: str):
            return [(cost.number, units) for cost, units in env.ledger.lots(account, code, conn=conn)]

        return position_rows(chart, balances, contracts, marks, last_prices, lots, holder_names(ctx.config),
                             strategy)


# What holding brings besides price moves: dividends net of withholding, the account's interest and
# fees (under the strategy that bears them, or `Account` when unallocated).
CARRY_ACCOUNTS = series.CARRY_ACCOUNTS
PNL_ACCOUNTS = ("Income:Trading:", "Expenses:Commissions:") + CARRY_ACCOUNTS


def pnl(ctx: Session, by: str = "strategy", since: dt.date | None = None,
        until: dt.date | None = None, cumulative: bool = False) -> dict:
    """P&L rows grouped by strategy, instrument or day, per currency and in the base currency.

    Every figure is a sum of days (reports/series.py): realized and commissions of the period,
    plus the change of the unrealized P&L from the day before `since` to the last day before
    `until`, so that the days of any period add up to its total to the cent.
    """
    if by not in ("strategy", "instrument", "day"):
        raise UserError("--by must be strategy, instrument or day")
    if since and until and since >= until:
        raise UserError("--since must be before --until")
    if by in ("strategy", "instrument") and until is None:
        fast = maintained_pnl(ctx, by, since)
        if fast is not None:
            return fast
    return replayed_pnl(ctx, by, since, until, cumulative)


def maintained_pnl(ctx: Session, by: str = "strategy", since: dt.date | None = None) -> dict | None:
    """`pnl` by strategy or by instrument, over all time or from `since` on, from the maintained
    balances, lots and marks (reports/pnl_fast.py; by instrument with the P&L postings summed per
    contract in SQL, reports/pnl_instrument.py; a period as the end less the day before it,
    reports/pnl_period.py), or None where only the replay can vouch for the figures."""
    from tradeledger.engine.setup.config import instrument_of_contract
    from tradeledger.ledger.reading import engine_reader
    from tradeledger.reports.pnl_fast import answer

    def instrument_name(code: str) -> str:
        instrument = instrument_of_contract(ctx.config, code)
        return instrument.name if instrument else code

    with engine_reader(ctx.engine) as reader:
        return answer(reader, ctx.chart.root, ctx.settings.base_currency,
                      lambda component: series._holder_name(ctx, component), instrument_name, by, since)


def maintained_pnl_today(ctx: Session, today: dt.date) -> Decimal | int | None:
    """The sum of the nets of `pnl(ctx, "day", today)` from the maintained tables and today's
    postings (reports/pnl_today.py), or None where only the replay can vouch for it."""
    from tradeledger.engine.setup.config import instrument_of_contract
    from tradeledger.ledger.reading import engine_reader
    from tradeledger.reports.pnl_today import pnl_today

    def instrument_name(code: str) -> str:
        instrument = instrument_of_contract(ctx.config, code)
        return instrument.name if instrument else code

    with engine_reader(ctx.engine) as reader:
        return pnl_today(reader, ctx.chart.root, ctx.settings.base_currency,
                         lambda component: series._holder_name(ctx, component), instrument_name, today)


def replayed_pnl(ctx: Session, by: str = "strategy", since: dt.date | None = None,
                 until: dt.date | None = None, cumulative: bool = False) -> dict:
    """`pnl` from the replay of every posting (reports/series.py): every grouping and period."""
    return series_rows(series.build(ctx, "total" if by == "day" else by, until), by, since, until, cumulative)
