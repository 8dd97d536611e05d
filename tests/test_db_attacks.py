"""The database refuses raw-SQL attacks on the books, whoever connects, and sums never overflow.

Each attack of issue 10 is played against a real database on both backends where it applies:
REPLACE of a posting or a header (SQLite's delete-then-insert), a posting inserted on a
connection with foreign keys off (the sqlite3 shell's default), the PostgreSQL race where
session B adds a posting to an entry that session A has inserted but not yet committed, and
balances beyond SQLite's 64-bit SUM (two deposits of 5,000,000,000 JPY).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.numbers import MAX_ABS
from tradeledger.ledger.store import Commodity, Ledger

UTC = dt.timezone.utc
OPEN = dt.date(2026, 1, 1)
CASH = "Assets:Broker:DU1234567:Cash"
A = "Assets:Broker:DU1234567:Strategy:A"
INC = "Income:Trading:A"
DEPOSITS = "Equity:Deposits"
F = 10**9
TS = "2026-12-01 10:00:00.000000"


def t(day: int, hour: int = 15) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, tzinfo=UTC)


@pytest.fixture
def books(ledger: Ledger) -> Ledger:
    for name, booking in [(CASH, "STRICT"), (A, "FIFO"), (INC, "STRICT"), (DEPOSITS, "STRICT")]:
        ledger.open_account(Account(name, OPEN, booking=booking))
    for ccy in ("USD", "JPY"):
        ledger.ensure_commodity(Commodity(ccy, "currency", None, D(1), OPEN))
    return ledger


def deposit(amount, ccy: str = "JPY", time: dt.datetime | None = None, key: str | None = None) -> Transaction:
    return Transaction(time or t(1), "deposit", "deposit",
                       (Posting(CASH, D(amount), ccy), Posting(DEPOSITS, -D(amount), ccy)), key=key)


def refused(excinfo) -> str:
    return str(getattr(excinfo.value, "orig", excinfo.value))


def account_id(conn, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT id FROM account WHERE name = '{name}'").scalar_one()


def sqlite_path(engine) -> str:
    return engine.url.database


def attack(engine, statement: str, shell: bool) -> str:
    """Run one statement and commit; the refusal's message. `shell`: on SQLite, through a plain
    sqlite3 connection as the sqlite3 shell makes it (foreign keys off, no busy timeout)."""
    if shell and engine.dialect.name == "sqlite":
        conn = sqlite3.connect(sqlite_path(engine))
        try:
            with pytest.raises(sqlite3.DatabaseError) as excinfo:
                conn.execute(statement)
                conn.commit()
            return str(excinfo.value)
        finally:
            conn.close()
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    return refused(excinfo)


# -- REPLACE and its PostgreSQL cousin ---------------------------------------------------------

def test_replace_cannot_move_a_posting_out_of_a_booked_entry(books: Ledger, engine):
    booked = books.book(deposit("3.75", "USD"))
    before = books.get(booked.id)
    with engine.connect() as conn:
        leg = conn.exec_driver_sql(f"SELECT MAX(id) FROM posting WHERE txn_id = {booked.id}").scalar_one()
    columns = "txn_id, ts, account_id, commodity, units, cost, cost_currency, cost_date, cost_label, price, " \
              "price_currency, weight, weight_currency"
    moved = columns.replace("txn_id", "9003")
    if engine.dialect.name == "sqlite":
        statement = f"INSERT OR REPLACE INTO posting (id, {columns}) SELECT id, {moved} FROM posting WHERE id = {leg}"
    else:
        statement = (f"INSERT INTO posting (id, {columns}) SELECT id, {moved} FROM posting WHERE id = {leg} "
                     "ON CONFLICT (id) DO UPDATE SET txn_id = EXCLUDED.txn_id")
    assert "append-only" in attack(engine, statement, shell=False)
    assert "tradeledger" in attack(engine, statement, shell=True)  # foreign keys off, or REPLACE
    assert books.get(booked.id) == before
    assert books.balances() == {(CASH, "USD"): D("3.75"), (DEPOSITS, "USD"): D("-3.75")}


@pytest.mark.parametrize("conflict", ["id", "idem_key"])
def test_replace_cannot_rewrite_a_booked_header(books: Ledger, engine, conflict):
    booked = books.book(deposit("100", "USD", key="dep-1"))
    before = books.get(booked.id)
    new_id = booked.id if conflict == "id" else 9999
    columns = "ts, kind, narration, links, meta, idem_key, fingerprint, reverses_id, booked_at"
    select = f"SELECT {new_id}, ts, kind, 'rewritten', links, meta, idem_key, fingerprint, reverses_id, booked_at " \
             f"FROM txn WHERE id = {booked.id}"
    if engine.dialect.name == "sqlite":
        statement = f"INSERT OR REPLACE INTO txn (id, {columns}) {select}"
    else:
        statement = f"INSERT INTO txn (id, {columns}) {select} ON CONFLICT ({conflict}) DO UPDATE SET narration = 'x'"
    for shell in (False, True):
        assert "append-only" in attack(engine, statement, shell)
    assert books.get(booked.id) == before and books.count() == (1, 2)


def test_accounts_and_commodities_cannot_be_renamed_or_replaced(books: Ledger, engine):
    books.book(deposit("100", "USD"))
    with engine.connect() as conn:
        cash = account_id(conn, CASH)
    replace = "INSERT OR REPLACE INTO" if engine.dialect.name == "sqlite" else "INSERT INTO"
    attacks = [f"UPDATE account SET name = 'Assets:Elsewhere' WHERE id = {cash}",
               f"DELETE FROM account WHERE id = {cash}",
               "UPDATE commodity SET multiplier = '50' WHERE name = 'USD'",
               "DELETE FROM commodity WHERE name = 'USD'"]
    if engine.dialect.name == "sqlite":
        attacks += [f"{replace} account (id, name, open_date, currencies, booking) "
                    f"VALUES ({cash}, 'Assets:Elsewhere', '2026-01-01', '', 'STRICT')",
                    f"{replace} commodity (name, kind, multiplier, first_date, meta) "
                    "VALUES ('USD', 'currency', '2', '2026-01-01', '{}')"]
    for statement in attacks:
        for shell in (False, True):
            assert "append-only" in attack(engine, statement, shell), statement
    assert books.balances() == {(CASH, "USD"): D(100), (DEPOSITS, "USD"): D(-100)}
    assert [c.multiplier for c in books.commodities() if c.name == "USD"] == [D(1)]


# -- whoever connects: the sqlite3 shell has foreign keys off ----------------------------------

@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_posting_without_header_is_refused_with_foreign_keys_off(books: Ledger, engine):
    books.book(deposit("100", "USD"))
    shell = sqlite3.connect(sqlite_path(engine))  # like the sqlite3 shell: foreign keys off
    try:
        assert shell.execute("PRAGMA foreign_keys").fetchone() == (0,)
        cash = shell.execute(f"SELECT id FROM account WHERE name = '{CASH}'").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match="foreign_keys = ON"):
            shell.execute("INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                          f"VALUES (424242, '{TS}', {cash}, 'USD', {5 * F}, {5 * F}, 'USD')")
        shell.commit()
        with pytest.raises(sqlite3.IntegrityError, match="existing entry"):  # a reversal of nothing
            shell.execute("INSERT INTO txn (id, ts, kind, narration, fingerprint, reverses_id, booked_at) "
                          f"VALUES (5000, '{TS}', 'reversal', 'x', 'x', 4999, '{TS}')")
    finally:
        shell.close()
    assert books.balances() == {(CASH, "USD"): D(100), (DEPOSITS, "USD"): D(-100)}
    assert books.count() == (1, 2)


# -- the PostgreSQL race -----------------------------------------------------------------------

def _raw_posting(conn, txn_id: int, account: int, units: int) -> None:
    conn.exec_driver_sql("INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                         f"VALUES ({txn_id}, '{TS}', {account}, 'USD', {units}, {units}, 'USD')")


def _raw_header(conn, txn_id: int) -> None:
    conn.exec_driver_sql("INSERT INTO txn (id, ts, kind, narration, links, meta, fingerprint, booked_at) "
                         f"VALUES ({txn_id}, '{TS}', 'raw', 'raw', '', '{{}}', 'x', '{TS}')")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("who_commits_first", ["A", "B"])
def test_postgresql_race_a_posting_joins_an_uncommitted_entry(books: Ledger, engine, who_commits_first):
    """A inserts entry 9300 (postings, header) and has not committed; B inserts one more posting
    for 9300 (it cannot see the header, so the 'sealed' check passes). Only A may commit."""
    with engine.connect() as conn:
        cash, inc = account_id(conn, CASH), account_id(conn, INC)
    a, b = engine.connect(), engine.connect()
    try:
        ta, tb = a.begin(), b.begin()
        _raw_posting(a, 9300, cash, 5 * F)
        _raw_posting(a, 9300, inc, -5 * F)
        _raw_header(a, 9300)
        _raw_posting(b, 9300, cash, 7 * F)  # not refused yet: B cannot see A's header
        if who_commits_first == "A":
            ta.commit()
            with pytest.raises(sa.exc.DBAPIError) as excinfo:
                tb.commit()
            assert "does not balance" in refused(excinfo)
        else:
            with pytest.raises(sa.exc.DBAPIError) as excinfo:
                tb.commit()  # the header is not there for B: no posting without a header
            assert "header" in refused(excinfo) or "foreign key" in refused(excinfo)
            ta.commit()
    finally:
        a.close()
        b.close()
    assert books.balances() == {(CASH, "USD"): D(5), (INC, "USD"): D(-5)}
    assert books.count() == (1, 2)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_concurrent_bookings_still_commit(books: Ledger, engine):
    """The commit-time re-check costs no correct booking: eight threads book at once."""
    errors = []

    def work(n):
        try:
            for i in range(10):
                books.book(deposit(f"{n}.{i + 1}", "USD", key=f"{n}:{i}"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert books.count() == (80, 160)


# -- sums that never overflow ------------------------------------------------------------------

def test_two_deposits_of_five_billion_yen_are_readable(books: Ledger, engine):
    books.book(deposit("5000000000"))
    books.book(deposit("5000000000"))
    assert books.balances() == {(CASH, "JPY"): D(10**10), (DEPOSITS, "JPY"): D(-10**10)}
    assert books.balances(prefix="Assets:") == {(CASH, "JPY"): D(10**10)}
    assert books.balances(as_of=t(2), commodity="JPY")[(CASH, "JPY")] == D(10**10)
    books.reverse(1, t(2), "too much")
    assert books.balances() == {(CASH, "JPY"): D(5 * 10**9), (DEPOSITS, "JPY"): D(-5 * 10**9)}


def test_sums_exact_at_the_edges(books: Ledger, engine):
    """Each posting at the storable maximum with every nano digit, signs mixed, many of them:
    balances, income per day and lots are exact far beyond 64 bits."""
    big = MAX_ABS.quantize(D("0.000000001"), rounding="ROUND_DOWN")  # 9223372036.854775807
    assert big == D("9223372036.854775807")
    entries = []
    for i in range(12):
        amount = big if i % 3 else big - D("0.000000001") * i
        entries.append(Transaction(t(1, 10), "settlement", "vm", (Posting(CASH, amount, "JPY"),
                                                                  Posting(INC, -amount, "JPY"))))
    entries.append(Transaction(t(2, 10), "settlement", "vm", (Posting(CASH, -D("0.000000007"), "JPY"),
                                                              Posting(INC, D("0.000000007"), "JPY"))))
    books.book_many(entries)
    expected = big * 12 - D("0.000000001") * (0 + 3 + 6 + 9) - D("0.000000007")
    assert books.balances()[(CASH, "JPY")] == expected
    assert books.balances()[(INC, "JPY")] == -expected
    by_day = books.income(by_day=True)
    assert by_day[(INC, "JPY", dt.date(2026, 12, 1))] + by_day[(INC, "JPY", dt.date(2026, 12, 2))] == -expected
    assert books.income()[(INC, "JPY")] == -expected
    # one entry whose legs on one side sum past 64 bits: the database's balance check holds
    legs = (Posting(CASH, big, "JPY"), Posting(CASH, big, "JPY"), Posting(INC, -big, "JPY"), Posting(INC, -big, "JPY"))
    books.book(Transaction(t(3), "settlement", "two big legs", legs))
    assert books.balances()[(CASH, "JPY")] == expected + 2 * big


def test_an_unbalanced_entry_of_big_legs_is_still_refused(books: Ledger, engine):
    """The overflow-free balance check still sees one nano-unit out of 18 billion units."""
    top = 9_223_372_036_854_775_807
    with engine.connect() as conn:
        cash, inc = account_id(conn, CASH), account_id(conn, INC)
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:
            for account, units in [(cash, top), (cash, top), (inc, -top), (inc, -top + 1)]:
                _raw_posting(conn, 9400, account, units)
            _raw_header(conn, 9400)
    assert "does not balance" in refused(excinfo)
    assert books.count() == (0, 0)


def test_lots_of_a_huge_holding_read_exactly(books: Ledger, engine):
    books.ensure_commodity(Commodity("SPY", "share", "USD", D(1), OPEN))
    lot = Cost(D("0.000000001"), "USD", dt.date(2026, 12, 1), "fill-1")
    units = D("9000000000")
    entries = [Transaction(t(1), "fill", "buy", (Posting(A, units, "SPY", lot), Posting(CASH, -units * lot.number,
                                                                                          "USD"))) for _ in range(3)]
    books.book_many(entries)
    assert books.lots(A, "SPY") == [(lot, units * 3)]
    assert books.balances()[(A, "SPY")] == units * 3
