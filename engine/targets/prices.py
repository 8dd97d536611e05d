"""Prices: daily closes per instrument, settlement prices per contract, FX rates to the base currency.

Three kinds of fact, each one row per key, stored as exact nano-units (`ledger/numbers.py`):

    price_bar   (instrument, date) -> close    the instrument's daily close, for signals and sizing
    settlement  (contract, date)   -> price    a futures contract's daily settlement, for marks
    fx_rate     (currency, date)   -> rate     base-currency units per one unit of `currency`

They come in as CSV files whose header says which kind they are:

    date,instrument,close      e.g. 2026-11-27,SPY,601.25
    date,contract,settle       e.g. 2026-11-27,MBTZ26,97012.5
    date,currency,rate         e.g. 2026-11-27,EUR,1.0571
    date,contract,close        e.g. 2026-11-27,MESH27,6061.25   (a contract's own daily close: carry)

An import is all or nothing. Parsing (`parse_prices_csv`) is a pure function of the text and the
trading configuration: every row is checked (ISO date, a configured instrument or a contract of a
configured future, a finite number with at most nine decimals, a positive price for shares, a
positive FX rate) and every bad row is reported with its line number. Only a file without a
single bad row reaches the database, in one transaction. Re-importing the same rows is a no-op;
a row that would change a stored value is a conflict, unless `replace=True`.

Futures may have zero or negative prices (spreads; WTI crude in April 2020), shares may not.

Queries read as of a date (`on`, inclusive; default: everything). A missing FX rate is an error
naming the currency, never an assumed 1. Histories (`price_histories`, for signals and volatility)
are split-adjusted: closes before a stored split are restated in post-split units; the stored
closes themselves stay as they were quoted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from typing import TYPE_CHECKING

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.setup.config import TradingConfig, instrument_of_contract, parse_trading_config
from tradeledger.engine.tables import contract_bar, fx_rate as fx_table, price_bar, settlement
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import NumberError, from_scaled, to_decimal, to_scaled
from tradeledger.errors import UserError

if TYPE_CHECKING:
    import pandas as pd  # imported by the two functions that build series: reading a price needs none

KINDS = {
    ("date", "instrument", "close"): "price",
    ("date", "contract", "settle"): "settlement",
    ("date", "currency", "rate"): "fx",
    ("date", "contract", "close"): "contract_close",
}
_TABLES = {"price": (price_bar, "instrument", "close"), "settlement": (settlement, "contract", "price"),
           "fx": (fx_table, "currency", "rate"), "contract_close": (contract_bar, "contract", "close")}


class PriceError(UserError):
    """Missing or unusable price data; the message names what is missing."""


class CsvImportError(UserError):
    """A file with bad rows: nothing of it was stored. `problems` lists (line, message)."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source, self.problems = source, problems
        shown = "; ".join(f"line {line}: {msg}" for line, msg in problems[:20])
        more = f"; ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {len(problems)} bad row(s), nothing stored: {shown}{more}")


@dataclass(frozen=True)
class PriceRow:
    line: int
    date: dt.date
    key: str  # instrument, contract or currency
    value: Decimal


@dataclass(frozen=True)
class ParsedImport:
    kind: str  # price | settlement | fx
    rows: tuple[PriceRow, ...]


@dataclass
class ImportReport:
    """What an import did. `conflicts` is non-empty only in a report for a refused import."""

    source: str
    kind: str
    rows: int = 0
    inserted: int = 0
    unchanged: int = 0
    replaced: int = 0
    conflicts: list[tuple[int, str]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"source": self.source, "kind": self.kind, "rows": self.rows, "inserted": self.inserted,
                "unchanged": self.unchanged, "replaced": self.replaced}


# -- parsing (pure) -----------------------------------------------------------------------------


def parse_date(text: str) -> dt.date:
    text = (text or "").strip()
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"date {text!r} is not YYYY-MM-DD") from None


def parse_number(text: str, what: str) -> Decimal:
    """A finite decimal storable exactly; NaN, inf and over-precise numbers are refused."""
    try:
        number = to_decimal((text or "").strip(), what)
        to_scaled(number, what)
    except NumberError as exc:
        raise ValueError(str(exc)) from None
    return number


def read_csv_rows(text: str, source: str) -> tuple[tuple[str, ...], list[tuple[int, list[str]]]]:
    """The lower-cased header and the non-blank data rows with their line numbers."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header: tuple[str, ...] | None = None
    rows: list[tuple[int, list[str]]] = []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = tuple(f.strip().lower() for f in fields)
            continue
        rows.append((reader.line_num, fields))
    if header is None:
        raise CsvImportError(source, [(1, "empty file: expected a header line")])
    return header, rows


def parse_prices_csv(text: str, config: TradingConfig, base_currency: str,
                     source: str = "<csv>") -> ParsedImport:
    """Validate a whole price file against the configuration; raise CsvImportError listing bad rows."""
    header, raw_rows = read_csv_rows(text, source)
    kind = KINDS.get(header)
    if kind is None:
        expected = " or ".join(",".join(h) for h in KINDS)
        raise CsvImportError(source, [(1, f"header {','.join(header)!r} is not one of: {expected}")])
    problems: list[tuple[int, str]] = []
    rows: list[PriceRow] = []
    seen: dict[tuple[str, dt.date], PriceRow] = {}
    for line, fields in raw_rows:
        try:
            if len(fields) != 3:
                raise ValueError(f"expected 3 fields, found {len(fields)}")
            date = parse_date(fields[0])
            key = fields[1].strip()
            value = _check_value(kind, key, fields[2], config, base_currency)
        except ValueError as exc:
            problems.append((line, str(exc)))
            continue
        row = PriceRow(line, date, key, value)
        earlier = seen.get((key, date))
        if earlier is not None:
            if earlier.value != value:
                problems.append((line, f"{key} {date} already given as {earlier.value} on line {earlier.line}"))
            continue
        seen[(key, date)] = row
        rows.append(row)
    if problems:
        raise CsvImportError(source, problems)
    return ParsedImport(kind, tuple(rows))


def _check_value(kind: str, key: str, text: str, config: TradingConfig, base: str) -> Decimal:
    if kind == "price":
        instrument = config.instruments.get(key)
        if instrument is None:
            raise ValueError(f"unknown instrument {key!r}")
        value = parse_number(text, f"{key} close")
        if value <= 0 and not instrument.is_future:
            raise ValueError(f"{key} close {value}: a share price must be positive")
        return value
    if kind in ("settlement", "contract_close"):
        instrument = instrument_of_contract(config, key)
        if instrument is None or not instrument.is_future:
            raise ValueError(f"{key!r} is not a contract of a configured future")
        if key[-3] not in instrument.expiry_months:
            raise ValueError(f"{key}: {instrument.name} has no contract in month {key[-3]} "
                             f"(its months: {instrument.expiry_months})")
        return parse_number(text, f"{key} settle")  # futures may settle at or below zero
    currency = key.upper()
    if len(currency) != 3 or not currency.isalpha() or currency != key:
        raise ValueError(f"currency {key!r} is not a 3-letter upper-case code")
    if currency == base:
        raise ValueError(f"{currency} is the base currency: its rate is always 1")
    value = parse_number(text, f"{currency} rate")
    if value <= 0:
        raise ValueError(f"{currency} rate {value}: an FX rate must be positive")
    return value


# -- storing --------------------------------------------------------------------------------------


def trading_config(ctx: Context) -> TradingConfig:
    return parse_trading_config(ctx.settings.raw)


def import_prices_csv(ctx: Context, path: str | Path, replace: bool = False) -> ImportReport:
    """Import one price/settlement/FX file, all or nothing (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CsvImportError(str(path), [(1, "not a UTF-8 text file")]) from None
    parsed = parse_prices_csv(text, trading_config(ctx), ctx.settings.base_currency, str(path))
    return store_rows(ctx, parsed, str(path), replace)


def store_rows(ctx: Context, parsed: ParsedImport, source: str, replace: bool = False) -> ImportReport:
    """Store parsed rows in one transaction (see the module docstring)."""
    table, key_col, value_col = _TABLES[parsed.kind]
    report = ImportReport(source, parsed.kind, rows=len(parsed.rows))
    dates = [r.date.isoformat() for r in parsed.rows]
    with ctx.engine.begin() as conn:
        existing = _existing(conn, table, key_col, value_col, {r.key for r in parsed.rows},
                             (min(dates), max(dates)) if dates else None)
        inserts, updates = [], []
        for row in parsed.rows:
            scaled = to_scaled(row.value)
            old = existing.get((row.key, row.date.isoformat()))
            if old is None:
                inserts.append({key_col: row.key, "date": row.date.isoformat(), value_col: scaled})
            elif old == scaled:
                report.unchanged += 1
            elif replace:
                updates.append((row, scaled))
            else:
                report.conflicts.append((row.line, f"{row.key} {row.date} is stored as {from_scaled(old)}, "
                                                   f"the file says {row.value} (use --replace)"))
        if report.conflicts:
            raise CsvImportError(source, report.conflicts)  # rolls the transaction back
        if inserts:
            conn.execute(table.insert(), inserts)
        for row, scaled in updates:
            conn.execute(table.update().where(table.c[key_col] == row.key,
                                              table.c.date == row.date.isoformat()).values({value_col: scaled}))
        report.inserted, report.replaced = len(inserts), len(updates)
        if parsed.kind == "contract_close" and (inserts or updates):
            _refresh_adjusted(ctx, conn, [(r["contract"], r["date"]) for r in inserts]
                              + [(row.key, row.date.isoformat()) for row, _ in updates])
    return report


def _refresh_adjusted(ctx: Context, conn, changed: list[tuple[str, str]]) -> None:
    """The back-adjusted series of the futures whose contract closes changed, in this transaction."""
    from tradeledger.engine.futures.panama import refresh

    config = ctx.config
    by_instrument: dict[str, list[dt.date]] = {}
    for code, date in changed:
        instrument = instrument_of_contract(config, code)
        if instrument is not None and instrument.is_future:
            by_instrument.setdefault(instrument.name, []).append(dt.date.fromisoformat(date))
    refresh(conn, config, by_instrument)


def store_settlement(ctx: Context, contract: str, day: dt.date, price: Decimal, source: str,
                     replace: bool = True) -> ImportReport:
    """Record one contract's settlement price for a day, checked as a settlement file's row is."""
    try:
        value = _check_value("settlement", contract, str(price), ctx.config, ctx.settings.base_currency)
    except ValueError as exc:
        raise PriceError(f"{source}: {exc}") from None
    return store_rows(ctx, ParsedImport("settlement", (PriceRow(1, day, contract, value),)), source, replace)


def _existing(conn, table, key_col, value_col, keys: set[str], between: tuple[str, str] | None = None
              ) -> dict[tuple[str, str], int]:
    result = {}
    keys_list = sorted(keys)
    for i in range(0, len(keys_list), 500):
        chunk = keys_list[i:i + 500]
        query = sa.select(table.c[key_col], table.c.date, table.c[value_col]).where(table.c[key_col].in_(chunk))
        if between is not None:  # only the import's dates can clash
            query = query.where(table.c.date >= between[0], table.c.date <= between[1])
        result.update({(k, d): v for k, d, v in conn.execute(query)})
    return result


# -- queries ----------------------------------------------------------------------------------------


class _reader:
    """The caller's connection, or a read-only one of our own."""

    def __init__(self, env, conn):
        self.env, self.conn, self.own = env, conn, None

    def __enter__(self):
        if self.conn is not None:
            return self.conn
        self.own = read_connection(self.env.engine)
        return self.own.__enter__()

    def __exit__(self, *exc):
        if self.own is not None:
            return self.own.__exit__(*exc)
        return False


def price_history(ctx: Context, instrument: str, on: dt.date | None = None, conn=None) -> pd.Series:
    """Daily closes up to `on` as floats (analysis data for signals), indexed by date; may be empty."""
    query = sa.select(price_bar.c.date, price_bar.c.close).where(price_bar.c.instrument == instrument)
    if on is not None:
        query = query.where(price_bar.c.date <= on.isoformat())
    with _reader(ctx, conn) as c:
        rows = c.execute(query.order_by(price_bar.c.date)).all()
    import pandas as pd

    index = pd.DatetimeIndex([pd.Timestamp(d) for d, _ in rows], name="date")
    return pd.Series([v / 1e9 for _, v in rows], index=index, name=instrument, dtype=float)


def price_histories(ctx: Context, instruments, on: dt.date | None = None, conn=None) -> dict[str, pd.Series]:
    """`price_history` for many instruments in one query."""
    names = sorted(set(instruments))
    query = sa.select(price_bar.c.instrument, price_bar.c.date, price_bar.c.close)
    if on is not None:
        query = query.where(price_bar.c.date <= on.isoformat())
    grouped: dict[str, list] = {n: [] for n in names}
    if not names:
        return {}
    with _reader(ctx, conn) as c:
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            for name, d, v in c.execute(query.where(price_bar.c.instrument.in_(chunk))
                                        .order_by(price_bar.c.instrument, price_bar.c.date)).all():
                grouped[name].append((d, v))
        splits = _splits(c, names)
    import pandas as pd

    series = {n: as_series(n, rows) for n, rows in grouped.items()}
    for name, date, factor in splits:  # closes before a split, in post-split units: returns never see it
        before = series[name].index < pd.Timestamp(date)
        series[name][before] = series[name][before] * factor
    return series


def as_series(name: str, rows: list[tuple[str, int]]) -> pd.Series:
    """(ISO date, nano-units) rows as a float Series indexed by date (analysis data)."""
    import numpy as np
    import pandas as pd

    index = pd.DatetimeIndex(pd.to_datetime([d for d, _ in rows], format="%Y-%m-%d"), name="date")
    return pd.Series(np.array([v for _, v in rows], dtype=float) / 1e9, index=index, name=name, dtype=float)


def _splits(conn, names: list[str]) -> list[tuple[str, str, float]]:
    """(ticker, effective date, old/new) of the stored splits of these instruments."""
    from tradeledger.engine.tables import corporate_action as ca

    rows = conn.execute(sa.select(ca.c.ticker, ca.c.ex_date, ca.c.ratio_new, ca.c.ratio_old).where(
        ca.c.kind == "split", ca.c.ticker.in_(names))).all()
    return [(t, d, float(from_scaled(old) / from_scaled(new))) for t, d, new, old in rows]


def split_factor(ctx: Context, instrument: str, since: dt.date, upto: dt.date, conn=None) -> Decimal:
    """What a close of `since` is multiplied by to be in the units of `upto`: the product of old/new
    of the instrument's stored splits effective after `since` and on or before `upto` (1: none).
    A close quoted before a split prices the shares held after it only restated (GLD 350.86 on the
    eve of a 2:1 split is 175.43 a share of the day's position)."""
    from tradeledger.engine.tables import corporate_action as ca

    with _reader(ctx, conn) as c:
        rows = c.execute(sa.select(ca.c.ratio_new, ca.c.ratio_old).where(
            ca.c.kind == "split", ca.c.ticker == instrument, ca.c.ex_date > since.isoformat(),
            ca.c.ex_date <= upto.isoformat())).all()
    factor = Decimal(1)
    for new, old in rows:
        factor = factor * from_scaled(old) / from_scaled(new)
    return factor


def _latest(ctx: Context, table, key_col, value_col, key: str, on: dt.date | None, conn) -> tuple[dt.date, Decimal] | None:
    query = sa.select(table.c.date, table.c[value_col]).where(table.c[key_col] == key)
    if on is not None:
        query = query.where(table.c.date <= on.isoformat())
    with _reader(ctx, conn) as c:
        row = c.execute(query.order_by(table.c.date.desc()).limit(1)).first()
    return None if row is None else (dt.date.fromisoformat(row[0]), from_scaled(row[1]))


def _when(on: dt.date | None) -> str:
    return f" on or before {on.isoformat()}" if on else ""


def latest_price(ctx: Context, instrument: str, on: dt.date | None = None, conn=None) -> tuple[dt.date, Decimal]:
    """The latest close of an instrument (exact) on or before `on`."""
    found = _latest(ctx, price_bar, "instrument", "close", instrument, on, conn)
    if found is None:
        raise PriceError(f"no price for instrument {instrument}{_when(on)}: import one with `tradeledger data import`")
    return found


def latest_settlement(ctx: Context, contract: str, on: dt.date | None = None, conn=None) -> tuple[dt.date, Decimal]:
    """The latest settlement price of a futures contract on or before `on`."""
    found = _latest(ctx, settlement, "contract", "price", contract, on, conn)
    if found is None:
        raise PriceError(f"no settlement price for contract {contract}{_when(on)}")
    return found


def latest_contract_close(ctx: Context, contract: str, on: dt.date | None = None, conn=None) -> tuple[dt.date, Decimal]:
    """The latest close of a futures contract (`date,contract,close`, `data fetch`) on or before `on`."""
    found = _latest(ctx, contract_bar, "contract", "close", contract, on, conn)
    if found is None:
        raise PriceError(f"no close for contract {contract}{_when(on)}")
    return found


def fx_rate_on(ctx: Context, currency: str, on: dt.date | None = None, conn=None) -> tuple[dt.date | None, Decimal]:
    """(date of the rate, base-currency units per one `currency`); (None, 1) for the base currency."""
    currency = currency.upper()
    if currency == ctx.settings.base_currency:
        return None, Decimal(1)
    found = _latest(ctx, fx_table, "currency", "rate", currency, on, conn)
    if found is None:
        raise PriceError(f"no FX rate for {currency} to {ctx.settings.base_currency}{_when(on)}: "
                         f"import one (CSV header date,currency,rate)")
    return found


def fx_rate(ctx: Context, currency: str, on: dt.date | None = None, conn=None) -> Decimal:
    """Base-currency units per one unit of `currency`; 1 for the base currency; never assumed."""
    return fx_rate_on(ctx, currency, on, conn)[1]
