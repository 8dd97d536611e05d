"""Naming IB's contracts the way tradeledger does: from the broker's description to our code.

IB describes a contract by its own symbol (BRR for CME bitcoin), trading class (BTC), expiry
(lastTradeDateOrContractMonth, 20261218) and a local symbol with a one-digit year (BTCZ6).
tradeledger names it after the configured *instrument*: root + month code + two-digit year
(BTCZ26), the ticker for shares. The instrument is found by its `ib_symbol`, `trading_class`
and currency in the environment's config:

    [instruments.BTC]                        IB: symbol BRR, tradingClass BTC, 202612
    type = "future"                          ->  Contract(code="BTCZ26", symbol="BRR", ...)
    ib_symbol = "BRR"
    trading_class = "BTC"

`ib_contract_namer(config)` returns a pure function that `broker.ib.IBBroker` applies to every
contract it builds from IB's fields (executions, positions, orders of earlier sessions) before
it remembers it by conId. A contract that matches no instrument keeps the broker's own name
(IB symbol + month + two-digit year), so an external trade in something unconfigured is still
booked, to Unattributed, under a stable name; reconciliation then shows it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from tradeledger.broker.base import Contract
from tradeledger.engine.setup.config import MONTH_CODES, Instrument, TradingConfig, to_contract
from tradeledger.ledger.accounts import contract_code
from tradeledger.engine.setup.environment import ConfigError


def _candidates(config: TradingConfig, c: Contract) -> list[Instrument]:
    kind = "future" if c.sec_type == "FUT" else "share" if c.sec_type == "STK" else None
    found = [i for i in config.instruments.values()
             if i.type == kind and i.ib_symbol.upper() == c.symbol.upper()
             and (not c.currency or i.currency == c.currency.upper())
             and (not i.trading_class or not c.trading_class
                  or i.trading_class.upper() == c.trading_class.upper())]
    exact = [i for i in found if i.trading_class and c.trading_class
             and i.trading_class.upper() == c.trading_class.upper()]
    return exact or found


def instrument_for(config: TradingConfig, c: Contract) -> Instrument | None:
    """The configured instrument an IB contract belongs to, or None; refuses an ambiguity."""
    found = _candidates(config, c)
    if len(found) > 1:
        names = ", ".join(sorted(i.name for i in found))
        raise ConfigError(f"IB contract {c.symbol} {c.trading_class} {c.expiry} matches several "
                         f"instruments ({names}): give each a distinct trading_class")
    return found[0] if found else None


def name_contract(config: TradingConfig, c: Contract) -> Contract:
    """`c` (built from IB's fields) under tradeledger's code, its conId kept (pure)."""
    instrument = instrument_for(config, c)
    if instrument is None:
        return c
    if c.sec_type == "FUT":
        if len(c.expiry) < 6:
            raise ConfigError(f"IB contract {c.symbol} {c.trading_class} has no expiry: "
                             "cannot name it")
        year, month = int(c.expiry[:4]), int(c.expiry[4:6])
        code = contract_code(instrument.name, MONTH_CODES[month - 1], year)
        ours = to_contract(instrument, code, c.expiry[:6])
    else:
        ours = to_contract(instrument, instrument.name, "")
    if c.multiplier and c.sec_type == "FUT" and c.multiplier != ours.multiplier:
        raise ConfigError(f"IB reports multiplier {c.multiplier} for {code}, the config says "
                         f"{ours.multiplier}: fix [instruments.{instrument.name}]")
    return replace(ours, exchange=c.exchange or ours.exchange, con_id=c.con_id)


def ib_contract_namer(config: TradingConfig) -> Callable[[Contract], Contract]:
    return lambda c: name_contract(config, c)
