"""How a tradeledger `Contract` looks on the TWS wire, and how a wire contract is matched back.

IB identifies a contract by its conId; everything else (symbol, local symbol, expiry) is
description. Futures local symbols carry a *one-digit* year (MBT December 2026 is `MBTZ6`),
so they repeat every ten years and are never a key: the gateway keys its catalogue by conId
and only falls back to the descriptive fields when a client asks without one (which is what
qualification is for).

A contract the catalogue does not hold gets a conId derived from its code, stable across
runs, so that a gateway restarted over the same persistent exchange reports the same ids.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from decimal import Decimal

from tradeledger.broker.base import Contract
from tradeledger.broker.ibsim.wire import FieldReader, format_decimal

MONTH_CODES = "FGHJKMNQUVXZ"


def stable_con_id(code: str) -> int:
    # crc32 keeps ids positive, below 2**31 (IB conIds are Java ints) and stable across runs.
    return 100_000_000 + zlib.crc32(code.encode()) % 900_000_000


def with_con_id(contract: Contract) -> Contract:
    return contract if contract.con_id else replace(contract, con_id=stable_con_id(contract.code))


def local_symbol(contract: Contract) -> str:
    """IB's local symbol: root + month code + one-digit year for futures, the ticker otherwise."""
    if contract.sec_type != "FUT" or len(contract.expiry) < 6:
        return contract.symbol
    root = contract.trading_class or contract.symbol
    month = int(contract.expiry[4:6])
    return f"{root}{MONTH_CODES[month - 1]}{contract.expiry[3]}"


def multiplier_text(contract: Contract) -> str:
    # IB leaves the multiplier empty for shares.
    return "" if contract.sec_type == "STK" else format_decimal(contract.multiplier)


def contract_fields(contract: Contract) -> list[object]:
    """The 11-field contract block of position, execDetails, openOrder and completedOrder:
    conId, symbol, secType, lastTradeDateOrContractMonth, strike, right, multiplier,
    exchange, currency, localSymbol, tradingClass."""
    return [
        contract.con_id,
        contract.symbol,
        contract.sec_type,
        contract.expiry,
        "0",  # strike: futures and shares have none
        "",  # right
        multiplier_text(contract),
        contract.exchange,
        contract.currency,
        local_symbol(contract),
        contract.trading_class or contract.symbol,
    ]


class WireContract:
    """The 12-field contract a client sends in a request (with primaryExchange)."""

    __slots__ = (
        "con_id",
        "symbol",
        "sec_type",
        "expiry",
        "multiplier",
        "exchange",
        "primary_exchange",
        "currency",
        "local_symbol",
        "trading_class",
    )

    def __init__(self, reader: FieldReader) -> None:
        self.con_id = reader.int()
        self.symbol = reader.str()
        self.sec_type = reader.str()
        self.expiry = reader.str()
        reader.skip(2)  # strike, right
        self.multiplier = reader.str()
        self.exchange = reader.str()
        self.primary_exchange = reader.str()
        self.currency = reader.str()
        self.local_symbol = reader.str()
        self.trading_class = reader.str()

    def describe(self) -> str:
        parts = [self.sec_type, self.symbol, self.local_symbol, self.expiry, self.exchange]
        text = " ".join(p for p in parts if p)
        return f"conId {self.con_id} {text}".strip() if self.con_id else text or "empty contract"

    def matches(self, contract: Contract) -> bool:
        """Does this (partial) description select `contract`? Empty fields match anything."""
        if self.con_id:
            return self.con_id == contract.con_id
        checks = (
            (self.symbol, contract.symbol),
            (self.sec_type, contract.sec_type),
            (self.currency, contract.currency),
            (self.trading_class, contract.trading_class or contract.symbol),
            (self.local_symbol, local_symbol(contract)),
        )
        if any(want and want.upper() != have.upper() for want, have in checks):
            return False
        # SMART routes anywhere; otherwise the exchange must agree.
        if self.exchange and self.exchange not in ("SMART", contract.exchange):
            return False
        if self.expiry and not contract.expiry.startswith(self.expiry[:6]):
            return False
        if self.expiry and len(self.expiry) >= 6 and len(contract.expiry) < 6:
            return False
        if self.multiplier:
            try:
                if Decimal(self.multiplier) != contract.multiplier:
                    return False
            except ArithmeticError:
                return False
        return bool(self.con_id or self.symbol or self.local_symbol)
