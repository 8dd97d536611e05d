"""The balances and lots the database maintains (migration 0011, SQLite) equal the sums of their
postings; every query gives the same answers on both backends: after booking, reversals, plain-SQL inserts, amounts beyond a 64-bit sum, and an
upgrade of a ledger that had postings before the tables existed; and `verify_balances` names a
maintained row that was changed behind the ledger's back."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from alembic import command

from tradeledger.ledger import db
from tradeledger.ledger.model import Cost
from tradeledger.ledger.store import Ledger, fold_balances
from tradeledger.ledger.maintained import verify_balances

from sample_books import A, B, CASH, DEPOSITS, FEES, INC, UTC, entries, open_books, t

F = 10**9
FAR = dt.datetime(2100, 1, 1, tzinfo=UTC)  # `as_of` far ahead: the same totals, summed over postings


def test_maintained_balances_equal_the_postings(ledger: Ledger):
    books = open_books(ledger)
    booked = books.book_many(entries()[:3])
    for entry in entries()[3:]:
        books.book(entry)
    books.reverse(booked[2].id, t(4), "a mistake")
    books.book(entries()[3])  # a replay changes nothing
    assert verify_balances(books.engine) == []
    assert books.balances() == books.balances(as_of=FAR)
    assert books.balances()[(CASH, "JPY")] == D("10000000000.5")  # beyond 64-bit nano-units, exact
    assert books.balances(prefix="Assets:Broker:DU1234567:Strategy:", commodity="SPY") == {(B, "SPY"): D(11)}
    assert books.positions() == {(A, "MESZ26"): D(2), (B, "SPY"): D(11)}
    assert books.income() == {(INC, "USD"): D(-3), (FEES, "USD"): D("2.860000001")}
    assert books.income() == books.income(since=dt.date(2000, 1, 1))  # the sum over postings
    assert books.lots(B, "SPY") == [(Cost(D("600.25"), "USD", dt.date(2026, 12, 1), "fill-1"), D(6)),
                                    (Cost(D("601.5"), "USD", dt.date(2026, 12, 2), "fill-2"), D(5))]
    assert books.lots(A, "MESZ26") == [(Cost(D(0), "USD"), D(2))]


def test_postings_inserted_with_plain_sql_are_maintained_too(ledger: Ledger):
    books = open_books(ledger)
    books.book(entries()[2])
    with books.engine.begin() as conn:
        cash, deposits = (conn.exec_driver_sql(f"SELECT id FROM account WHERE name = '{n}'").scalar_one()
                          for n in (CASH, DEPOSITS))
        ts = "2026-12-05 10:00:00.000000"
        for account, units in ((cash, 7 * F), (deposits, -7 * F)):
            conn.exec_driver_sql("INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                                 f"VALUES (9000, '{ts}', {account}, 'USD', {units}, {units}, 'USD')")
        conn.exec_driver_sql("INSERT INTO txn (id, ts, kind, narration, links, meta, fingerprint, booked_at) "
                             f"VALUES (9000, '{ts}', 'raw', 'raw', '', '{{}}', 'x', '{ts}')")
    assert books.balances()[(CASH, "USD")] == D(100007)
    assert verify_balances(books.engine) == []


def test_verify_names_a_maintained_row_changed_behind_the_ledgers_back(ledger: Ledger):
    books = open_books(ledger)
    for entry in entries():
        books.book(entry)
    assert verify_balances(books.engine) == []
    with books.engine.begin() as conn:
        fold_balances(conn)  # PostgreSQL: the deltas into the rows changed below (nothing on SQLite)
    with books.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE balance SET whole = whole + 1 WHERE commodity = 'MESZ26'")
        conn.exec_driver_sql("UPDATE lot_balance SET first_ts = '2026-12-09 00:00:00.000000' "
                             "WHERE cost_label = 'fill-2'")
    found = verify_balances(books.engine)
    assert [(d.table, d.account, d.commodity, d.maintained, d.postings) for d in found] == [
        ("balance", A, "MESZ26", D(3), D(2)),
        ("lot_balance", B, "SPY", D(5), D(5)),  # same units, a wrong first time
    ]
    assert "maintained 3, postings 2" in str(found[0])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_upgrade_sums_the_postings_booked_before_the_tables_existed(db_url):
    engine = db.make_engine(db_url)
    config = db._config()
    balances = next(r for r in db._script().walk_revisions() if r.path.endswith("_balances.py"))
    with engine.begin() as conn:  # the schema just before the maintained balances
        config.attributes["connection"] = conn
        command.upgrade(config, balances.down_revision)
    books = open_books(Ledger(engine))
    for entry in entries()[:4]:  # no labelled lot: their check reads the maintained lots
        books.book(entry)
    before = books.balances(as_of=FAR)
    db.upgrade(engine)
    assert db.current_revision(engine) == db.HEAD
    fresh = Ledger(engine)
    assert fresh.balances() == before and fresh.balances()[(A, "MESZ26")] == D(2)
    assert fresh.lots(A, "MESZ26") == [(Cost(D(0), "USD"), D(2))]
    assert verify_balances(engine) == []
    for entry in entries()[4:]:
        fresh.book(entry)
    assert verify_balances(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM lot_balance")).scalar() == 3
    engine.dispose()
