"""The streaming export writes exactly the bytes the record-by-record export wrote, in memory
that does not grow with the ledger, on SQLite and PostgreSQL; beancount still loads it cleanly.

`reference_render` below is the export as it was before it streamed raw rows (a frozen copy,
reading `Ledger.accounts/commodities/prices/entries` and formatting records): the random
ledgers (test_ledger_properties.py's model, plus reversals, prices on postings, metadata and
quotes in narrations) must come out byte for byte the same.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import tracemalloc
from decimal import Decimal as D
from pathlib import Path

from hypothesis import given, strategies as st

from tradeledger.ledger.export import _num, _quote, check, export_beancount, format_transaction, render, scaled_text
from tradeledger.ledger.model import Account, Amount, Posting, Transaction
from tradeledger.ledger.numbers import from_scaled
from tradeledger.ledger.store import Commodity, Ledger


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_export_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_model = _sibling("test_ledger_properties")  # its random ledgers, written apart from the engine
PROPERTY, events, book_all, build, setup_example = (_model.PROPERTY, _model.events, _model.book_all, _model.build,
                                                    _model.setup_example)
UTC = dt.timezone.utc


def reference_render(ledger: Ledger, title: str, operating_currency: str, prices=None, fava=None):
    """The export before it streamed rows (frozen copy): the bytes to reproduce."""
    yield f'option "title" {_quote(title)}\noption "operating_currency" "{operating_currency}"\n'
    yield 'option "booking_method" "STRICT"\n\n'
    accounts = ledger.accounts()
    if fava is not None:
        first = min((a.open_date for a in accounts), default=None)
        day = first.isoformat() if first else "2000-01-01"
        yield f'{day} custom "fava-extension" {_quote(fava[0])} {_quote(fava[1])}\n'
        yield f'{day} custom "fava-option" "default-page" "balance_sheet/?conversion={operating_currency}"\n\n'
    for account in accounts:
        line = f"{account.open_date.isoformat()} open {account.name}"
        if account.currencies:
            line += " " + ",".join(account.currencies)
        if account.booking != "STRICT":
            line += f' "{account.booking}"'
        yield line + "\n"
        if account.close_date is not None:
            yield f"{account.close_date.isoformat()} close {account.name}\n"
    yield "\n"
    futures = set()
    for c in ledger.commodities():
        if c.kind == "future":
            futures.add(c.name)
        yield (f"{c.first_date.isoformat()} commodity {c.name}\n  kind: {_quote(c.kind)}\n"
               f"  multiplier: {_quote(_num(c.multiplier))}\n")
    yield "\n"
    for date, commodity, number, currency in ledger.prices():
        if commodity not in futures:
            yield f"{date.isoformat()} price {commodity} {_num(number)} {currency}\n"
    for date, commodity, number, currency in prices or ():
        yield f"{date.isoformat()} price {commodity} {_num(number)} {currency}\n"
    yield "\n"
    for txn_id, txn in ledger.entries():
        yield format_transaction(txn_id, txn) + "\n"


def _extras(ledger: Ledger, names, n: int) -> None:
    """What the model does not make: a price on a posting, quotes and backslashes, reversals,
    closed accounts with currencies, ledger prices."""
    when = dt.datetime(2026, 4, 1, 12, tzinfo=UTC) + dt.timedelta(minutes=n)
    eur = f"Assets:Broker:{names.ns}:Eur"
    ledger.open_account(Account(eur, dt.date(2026, 1, 1), currencies=("EUR", "USD"), close_date=dt.date(2027, 1, 1)))
    ledger.ensure_commodity(Commodity("EUR", "currency", None, D(1), dt.date(2026, 1, 1)))
    booked = ledger.book(Transaction(when, "fx", 'buy "EUR" \\ at 1.0842', (
        Posting(eur, D("1000.5"), "EUR", price=Amount(D("1.0842"), "USD")),
        Posting(names.cash, D("-1084.7421"), "USD")), links=(f"fx-{names.ns}",),
        meta=(("note", 'a "quoted" note'), ("source", "test")), key=f"{names.ns}-fx"))
    ledger.reverse(booked.id, when + dt.timedelta(hours=1), "a mistake", key=f"{names.ns}-fx-rev")
    ledger.set_price("SPY", dt.date(2026, 4, 1), D("601.125"), "USD")


@PROPERTY
@given(ops=events, extras=st.booleans())
def test_the_stream_writes_the_bytes_the_records_wrote(ledger: Ledger, ops, extras):
    names = setup_example(ledger)
    book_all(ledger, build(names, ops), batch=True)
    if extras:
        _extras(ledger, names, len(ops))
    prices = [(dt.date(2026, 4, 2), "MBTZ26", D("-12.5"), "USD"), (dt.date(2026, 4, 2), "EUR", D("1.08"), "USD")]
    for args in (("t", "USD"), ('tradeledger "paper"', "EUR", prices, ("tradeledger.reports.fava_ext", "{'home': 'x'}"))):
        assert "".join(render(ledger, *args)) == "".join(reference_render(ledger, *args))


@given(st.integers(-(2**63) + 1, 2**63 - 1))
def test_scaled_text_is_the_decimal_text(value):
    assert scaled_text(value) == _num(from_scaled(value))


def test_the_exports_memory_does_not_grow_with_the_ledger(ledger: Ledger, tmp_path):
    """Python's peak while exporting 8,000 entries is that of 2,000 (each past the batches the
    rows are fetched and written in): no list of the ledger."""
    names = setup_example(ledger)
    ops = [(("fill", i % 3, "MESZ26", 1 + i % 4, i % 50, 62), 1) for i in range(8000)]
    entries = build(names, ops)
    peaks = []
    for part, upto in ((entries[:2000], 2000), (entries[2000:], 8000)):
        book_all(ledger, part, batch=True)
        tracemalloc.start()
        size = export_beancount(ledger, tmp_path / f"{upto}.beancount")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert size == (tmp_path / f"{upto}.beancount").stat().st_size
    assert ledger.count()[0] == 8000
    assert peaks[1] < 1.25 * peaks[0], peaks


def test_beancount_loads_the_streamed_export_and_agrees(ledger: Ledger, tmp_path):
    names = setup_example(ledger)
    ops = [(("fill", 0, "MESZ26", 2, 4, 62), 5), (("buy", 1, 10, 60000), 5), (("settle", "MESZ26", -3), 5),
           (("sell", 0, 4, 61000), 5), (("fill", 0, "MESZ26", -5, 9, 62), 5), (("deposit", 10**6), 5)]
    book_all(ledger, build(names, ops), batch=False)
    _extras(ledger, names, 0)
    path = tmp_path / "ledger.beancount"
    export_beancount(ledger, path)
    result = check(ledger, path)
    assert result.ok, (result.errors, result.differences)
    assert result.entries == ledger.count()[0]
