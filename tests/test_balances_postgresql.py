"""Maintained balances on PostgreSQL (migration 0012): per-transaction deltas folded into
`balance`/`lot_balance`. Two processes booking at once into the same accounts, in opposite
orders, neither wait for each other's rows nor deadlock, and lose nothing; a rolled-back booking
leaves no delta; an upgrade sums the postings booked before; `verify_balances` and `db verify`
check the maintained sums (the delta rows included)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from alembic import command

from tradeledger.ledger import db
from tradeledger.ledger.maintained import verify_balances
from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.store import Commodity, Ledger, fold_balances
from tradeledger.ledger.verify import verify

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

UTC = dt.timezone.utc
OPEN = dt.date(2026, 1, 1)
CASH = "Assets:Broker:DU1234567:Cash"
INC = "Income:Trading:A"
FEES = "Expenses:Commissions:A"
SHARES = "Assets:Broker:DU1234567:Strategy:A"

BOOKER = textwrap.dedent("""
    import datetime as dt, pathlib, sys, time
    from decimal import Decimal as D
    from tradeledger.ledger import db
    from tradeledger.ledger.model import Posting, Transaction
    from tradeledger.ledger.store import Ledger

    url, who, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
    ledger = Ledger(db.make_engine(url))
    ledger.accounts()  # connected before the start
    while not start.exists():
        time.sleep(0.005)
    cash, inc, fees = "Assets:Broker:DU1234567:Cash", "Income:Trading:A", "Expenses:Commissions:A"
    base = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    for i in range(n):
        legs = [(cash, D(i + 1), "USD"), (inc, -D(i + 1), "USD"), (cash, D(2), "EUR"), (fees, D(-2), "EUR")]
        if who == "b":  # the same rows in the opposite order: row locks taken as they come would deadlock
            legs.reverse()
        batch = [Transaction(base + dt.timedelta(seconds=i, microseconds=k), "adj", f"{who} {i} {k}",
                             tuple(Posting(*leg) for leg in legs), key=f"{who}:{i}:{k}") for k in range(3)]
        ledger.book_many(batch)  # one transaction, three entries
    print("booked", n * 3, flush=True)
""")


def open_books(ledger: Ledger) -> Ledger:
    for name in (CASH, INC, FEES, SHARES):
        ledger.open_account(Account(name, OPEN, booking="FIFO" if name == SHARES else "STRICT"))
    for ccy in ("USD", "EUR"):
        ledger.ensure_commodity(Commodity(ccy, "currency", None, D(1), OPEN))
    ledger.ensure_commodity(Commodity("SPY", "share", "USD", D(1), OPEN))
    return ledger


def test_two_processes_booking_at_once_neither_wait_nor_deadlock_nor_lose(ledger: Ledger, db_url, tmp_path):
    open_books(ledger)
    start, n = tmp_path / "start", 60
    procs = [subprocess.Popen([sys.executable, "-c", BOOKER, db_url, who, str(n), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for who in ("a", "b")]
    time.sleep(0.5)
    start.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0 and f"booked {n * 3}" in out, err[-2000:]
    per_process = sum(D(i + 1) for i in range(n)) * 3
    assert ledger.balances() == {(CASH, "USD"): 2 * per_process, (INC, "USD"): -2 * per_process,
                                 (CASH, "EUR"): D(2 * 2 * 3 * n), (FEES, "EUR"): D(-2 * 2 * 3 * n)}
    assert ledger.count() == (2 * 3 * n, 2 * 3 * n * 4)
    assert verify_balances(ledger.engine) == [] and verify(ledger).ok
    with ledger.engine.connect() as c:  # folded as the bookings went: what is left is the last few entries'
        assert c.exec_driver_sql("SELECT COUNT(*) FROM balance_delta").scalar() <= 4 * 16


def test_a_booking_that_waits_for_nothing_while_another_is_open(ledger: Ledger):
    """Transaction 1 books into cash and stays open; transaction 2 books into the same cash
    account and commits at once (a row lock on the balance would make it wait for 1)."""
    open_books(ledger)
    entry = lambda k, amount: Transaction(dt.datetime(2026, 12, 2, k, tzinfo=UTC), "adj", f"e{k}",  # noqa: E731
                                          (Posting(CASH, amount, "USD"), Posting(INC, -amount, "USD")), key=f"w{k}")
    with ledger.engine.connect() as first:
        tx = first.begin()
        ledger.book(entry(1, D(5)), first)
        other = Ledger(ledger.engine)
        started = time.monotonic()
        other.book(entry(2, D(7)))  # its own transaction, committed
        assert time.monotonic() - started < 1.5
        assert other.balances()[(CASH, "USD")] == D(7)  # 1 is not committed: not seen
        assert ledger.balances(conn=first)[(CASH, "USD")] == D(12)  # 1 sees its own deltas
        tx.rollback()  # its deltas go with it
    assert ledger.balances() == {(CASH, "USD"): D(7), (INC, "USD"): D(-7)}
    ledger.book(entry(3, D(1)))
    assert ledger.balances()[(CASH, "USD")] == D(8)
    assert verify_balances(ledger.engine) == []


def test_lots_are_maintained_too(ledger: Ledger):
    open_books(ledger)
    lot = Cost(D("600.25"), "USD", dt.date(2026, 12, 1), "fill-1")
    buy = Transaction(dt.datetime(2026, 12, 1, 15, tzinfo=UTC), "fill", "buy",
                      (Posting(SHARES, D(10), "SPY", lot), Posting(CASH, D("-6002.5"), "USD")), key="b")
    sell = Transaction(dt.datetime(2026, 12, 2, 15, tzinfo=UTC), "fill", "sell",
                       (Posting(SHARES, D(-4), "SPY", lot), Posting(CASH, D("2401"), "USD")), key="s")
    ledger.book(buy)
    assert ledger.lots(SHARES, "SPY") == [(lot, D(10))]  # read with its delta, before any fold
    ledger.book(sell)
    assert ledger.lots(SHARES, "SPY") == [(lot, D(6))]
    with ledger.engine.begin() as c:  # folded (by the booking of every 16th entry): the same answer
        fold_balances(c)
    with ledger.engine.connect() as c:
        assert c.exec_driver_sql("SELECT whole FROM lot_balance").scalar() == 6
    assert ledger.lots(SHARES, "SPY") == [(lot, D(6))]
    too_much = Transaction(dt.datetime(2026, 12, 3, tzinfo=UTC), "fill", "sell", (
        Posting(SHARES, D(-7), "SPY", lot), Posting(CASH, D("4201.75"), "USD")), key="x")
    with pytest.raises(Exception, match="would reduce lot"):
        ledger.book(too_much)
    assert verify_balances(ledger.engine) == []


def test_an_upgrade_sums_the_postings_booked_before(db_url):
    engine = db.make_engine(db_url)
    config = db._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0011")
    ts = "2026-12-01 10:00:00.000000"
    with engine.begin() as conn:  # as the ledger booked before 0012: plain rows
        conn.exec_driver_sql("INSERT INTO account (id, name, open_date) VALUES (1, 'Assets:Cash', '2026-01-01'), "
                             "(2, 'Income:X', '2026-01-01')")
        conn.exec_driver_sql("INSERT INTO commodity (name, kind, first_date) VALUES ('USD', 'currency', '2026-01-01')")
        conn.exec_driver_sql(f"INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                             f"VALUES (1, '{ts}', 1, 'USD', 2500000000, 2500000000, 'USD'), "
                             f"(1, '{ts}', 2, 'USD', -2500000000, -2500000000, 'USD')")
        conn.exec_driver_sql(f"INSERT INTO txn (id, ts, kind, narration, fingerprint, booked_at) "
                             f"VALUES (1, '{ts}', 'x', 'x', 'f', '{ts}')")
    db.upgrade(engine)
    ledger = Ledger(engine)
    assert ledger.balances() == {("Assets:Cash", "USD"): D("2.5"), ("Income:X", "USD"): D("-2.5")}
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT whole, nanos FROM balance WHERE account_id = 1").one() == (2, 500000000)
    assert verify_balances(engine) == []
    engine.dispose()


def test_verify_sees_a_delta_row_changed_behind_the_ledgers_back(ledger: Ledger):
    open_books(ledger)
    ledger.book(Transaction(dt.datetime(2026, 12, 1, tzinfo=UTC), "adj", "x",
                            (Posting(CASH, D(3), "USD"), Posting(INC, D(-3), "USD")), key="k"))
    with ledger.engine.begin() as c:  # its delta is not folded yet: no booking followed
        assert c.exec_driver_sql("UPDATE balance_delta SET whole = whole + 1 WHERE whole = 3").rowcount == 1
    assert [str(d) for d in verify_balances(ledger.engine)] == [f"balance: {CASH} USD: maintained 4, postings 3"]
    found = verify(ledger)
    assert not found.ok and any("the ledger answers 4" in f.detail for f in found.findings)
    with ledger.engine.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM balance")).scalar() == 0
