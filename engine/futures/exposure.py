"""Exposure is per instrument, holdings per contract (DESIGN.md, second round).

A target is a number of contracts of an *instrument*; a strategy's exposure to it is the sum of
its positions over every dated contract of that instrument (MESZ26 + MESH27 during a roll). A
target run compares the target with this sum, never with the current contract alone: when the
calendar moves to the next contract, the position still held in the old one counts, so nothing
is bought twice. Which contract an order trades is the roll state's decision
(`engine/futures/rolls.py`).

Pure functions over `(holder, contract code) -> units` mappings and a code -> instrument index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal

from tradeledger.engine.setup.config import TradingConfig, instrument_of_contract

ZERO = Decimal(0)


def instrument_index(config: TradingConfig) -> Callable[[str], str | None]:
    """code -> the configured instrument's name (None for an unknown code), memoised."""
    cache: dict[str, str | None] = {}

    def of(code: str) -> str | None:
        if code not in cache:
            inst = instrument_of_contract(config, code)
            cache[code] = inst.name if inst else None
        return cache[code]

    return of


def held_by_instrument(positions: Mapping[tuple, Decimal], instrument_of: Callable[[str], str | None]
                       ) -> dict[tuple, dict[str, Decimal]]:
    """(holder, instrument) -> {contract: units} for every non-zero position."""
    result: dict[tuple, dict[str, Decimal]] = {}
    for (holder, code), units in sorted(positions.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        name = instrument_of(code)
        if units and name is not None:
            result.setdefault((holder, name), {})[code] = units
    return result


def exposures(positions: Mapping[tuple, Decimal], instrument_of: Callable[[str], str | None]
              ) -> dict[tuple, Decimal]:
    """(holder, instrument) -> the sum of its positions over the instrument's contracts."""
    return {key: sum(held.values(), ZERO) for key, held in held_by_instrument(positions, instrument_of).items()}
