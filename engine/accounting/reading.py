"""Marks and the newest prices, read on a raw DB-API connection (ledger/reading.py's `Reader`).

The same answers as `holdings.marks` and `valuation.latest_prices`, for the read commands that
run without SQLAlchemy (engine/setup/quick.py); tests/test_reading.py compares them. Each query
reads a row per holder and contract, or per contract and day of prices for the contracts asked
about only: nothing here reads postings.
"""

from __future__ import annotations

from decimal import Decimal

from tradeledger.engine.accounting.holders import Holder, from_column
from tradeledger.engine.accounting.restate import SPLITS_SQL, booked_splits, newest_price
from tradeledger.engine.setup.names import instrument_of_contract
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.reading import Reader


def marks(reader: Reader) -> dict[tuple[Holder, str], Decimal]:
    return {(from_column(holder), contract): from_scaled(price)
            for holder, contract, price in reader.rows("SELECT holder, contract, price FROM position_mark")}


def _newest(reader: Reader, table: str, key: str, value: str, keys: list[str]) -> dict[str, tuple[str, int]]:
    """key -> (date, scaled value) of each key's newest row (valuation._newest without a date)."""
    if not keys:
        return {}
    marks_ = ", ".join("?" * len(keys))
    sql = (f"SELECT t.{key}, t.date, t.{value} FROM {table} t JOIN (SELECT {key}, MAX(date) AS date FROM {table} "
           f"WHERE {key} IN ({marks_}) GROUP BY {key}) n ON t.{key} = n.{key} AND t.date = n.date")
    return {k: (d, v) for k, d, v in reader.rows(sql, tuple(keys))}


def latest_prices(reader: Reader, instruments: list[tuple[str, bool]], codes) -> dict[str, Decimal]:
    """The newest known price of each contract: its settlement, else its configured instrument's
    close (`instruments`: (name, is_future) in configured order); the newer wins, a settlement
    wins a tie; a close from before a booked split restated (valuation.latest_prices)."""
    codes = sorted(codes)
    names = {code: instrument_of_contract(instruments, code) for code in codes}
    settlements = _newest(reader, "settlement", "contract", "price", codes)
    closes = _newest(reader, "price_bar", "instrument", "close", sorted({n for n in names.values() if n is not None}))
    splits = booked_splits(reader.rows(SPLITS_SQL)) if closes else {}
    result = {}
    for code in codes:
        price = newest_price(settlements.get(code), closes.get(names[code]), splits.get(names[code], []))
        if price is not None:
            result[code] = price
    return result
