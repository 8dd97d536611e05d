"""Positions per strategy and contract: one pure function, fed by either of two read paths.

`position_rows` turns what the ledger holds (balances under the broker account, contracts, marks,
newest prices, open lots) into the rows `tradeledger positions` prints. Two paths feed it:

* `reports.pnl.positions(session)`: the opened environment, through SQLAlchemy (`Ledger`);
* `quick_positions(home, env, db_url)`: the same rows read on the raw DB-API connection
  (engine/setup/quick.py, ledger/reading.py, engine/accounting/reading.py), without importing
  SQLAlchemy, pydantic or the engine's tables: what lets `positions` answer before beancount has
  loaded the same ledger. It returns None whenever the full opening must decide (a changed
  config, a password kept apart, another schema revision, an unknown strategy...).

Both read the maintained balances, so the cost is the number of accounts and lots, not postings.
tests/test_reading.py holds the two paths' rows equal over random ledgers on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from tradeledger.engine.accounting.holders import UNATTRIBUTED_NAME, holder_of
from tradeledger.ledger.numbers import plain

ZERO = Decimal(0)


class Held(NamedTuple):
    """A contract as positions need it (the fields `broker.base.Contract` has of the same names)."""

    code: str
    sec_type: str  # FUT or STK
    currency: str
    multiplier: Decimal


def position_rows(chart, balances: dict, contracts: dict, marks: dict, last_prices: dict,
                  lots: Callable[[str, str], Iterable[tuple[Decimal, Decimal]]],
                  holder_name: Callable, strategy: str | None = None) -> list[dict]:
    """One row per holder and contract; `lots(account, code)` gives (cost number, units) per open lot."""
    rows = []
    for (account, code), qty in sorted(balances.items()):
        holder = holder_of(chart, account)
        if holder is False:
            continue
        name = holder_name(holder)
        if strategy is not None and name != strategy:
            continue
        contract = contracts.get(code)
        last = last_prices.get(code)
        mark = marks.get((holder, code))
        unrealized = _unrealized(account, contract, qty, mark, last, lots)
        rows.append({"account": account, "strategy": name, "contract": code, "qty": qty,
                     "mark": mark, "last": last, "unrealized": plain(unrealized),
                     "currency": contract.currency if contract else None})
    return rows


def _unrealized(account, contract, qty, mark, last, lots) -> Decimal:
    if contract is None or last is None:
        return ZERO
    if contract.sec_type == "FUT":
        return ZERO if mark is None else qty * (last - mark) * contract.multiplier
    return sum((units * (last * contract.multiplier - cost) for cost, units in lots(account, contract.code)), ZERO)


def holder_names(config) -> Callable:
    """A holder's name as a person reads it: its strategy's name, or `unattributed`."""
    def name(holder) -> str:
        if holder is None:
            return UNATTRIBUTED_NAME
        strategy = config.strategy_by_account(holder)
        return strategy.name if strategy else holder
    return name


def quick_positions(home: str | Path | None, env: str, db_url: str | None = None,
                    strategy: str | None = None) -> list[dict] | None:
    """`positions` read without SQLAlchemy, or None: take the full path (reports.pnl.positions)."""
    from tradeledger.engine.setup import quick

    opened = quick.open_for_reading(home, env, db_url)
    if opened is None:
        return None
    from tradeledger.engine.accounting import reading
    from tradeledger.engine.setup import names
    from tradeledger.ledger.accounts import Chart

    try:
        # config.toml as checked already (the stamp vouches for it): only what positions uses of it
        instruments, owners = names.from_raw(opened.raw)
        if strategy is not None and strategy != UNATTRIBUTED_NAME and strategy not in opened.raw.get("strategies", {}):
            return None  # the full path names the known strategies

        def holder_name(holder) -> str:
            return UNATTRIBUTED_NAME if holder is None else owners.get(holder, holder)

        reader, chart = opened.reader, Chart(opened.account)
        balances = reader.positions(prefix=chart.root)
        contracts = {name: Held(name, "FUT" if kind == "future" else "STK", currency or "", multiplier)
                     for name, kind, currency, multiplier in reader.commodities() if kind in ("future", "share")}
        marks = reading.marks(reader)
        last_prices = reading.latest_prices(reader, instruments, {code for _, code in balances})

        def lots(account: str, code: str):
            return [(cost, units) for cost, _ccy, _date, _label, units in reader.lots(account, code)]

        return position_rows(chart, balances, contracts, marks, last_prices, lots, holder_name, strategy)
    finally:
        opened.close()
