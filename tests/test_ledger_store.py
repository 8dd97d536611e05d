"""The ledger in its database, on SQLite and on PostgreSQL (the `ledger` fixture runs both).

The rules are checked twice where it matters: through the Ledger API, and through raw SQL
(`conn.exec_driver_sql`), which bypasses every Python check, so that it is the database itself
that refuses an unbalanced entry, a late posting, an orphan posting, a wrong weight, or any
change to history.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.ledger.model import (
    Account, Cost, IdempotencyConflict, LedgerError, Amount, Posting, Transaction,
    UnbalancedError, validate,
)
from tradeledger.ledger.numbers import NumberError, to_decimal, to_scaled, from_scaled
from tradeledger.ledger.store import Commodity, Ledger, fmt_ts

UTC = dt.timezone.utc
OPEN = dt.date(2026, 1, 1)
CASH = "Assets:Broker:DU1234567:Cash"
A = "Assets:Broker:DU1234567:Strategy:A"
B = "Assets:Broker:DU1234567:Strategy:B"
INC_A = "Income:Trading:A"
INC_B = "Income:Trading:B"
COM_A = "Expenses:Commissions:A"
DEPOSITS = "Equity:Deposits"
F = 10**9


def t(day: int, hour: int = 15, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def books(ledger: Ledger) -> Ledger:
    for name, booking in [(CASH, "STRICT"), (A, "FIFO"), (B, "FIFO"), (INC_A, "STRICT"),
                          (INC_B, "STRICT"), (COM_A, "STRICT"), (DEPOSITS, "STRICT")]:
        ledger.open_account(Account(name, OPEN, booking=booking))
    ledger.open_account(Account("Assets:Broker:DU1234567:Strategy:Late", dt.date(2026, 12, 10)))
    ledger.open_account(Account("Assets:Broker:DU1234567:UsdOnly", OPEN, currencies=("USD",)))
    ledger.ensure_commodity(Commodity("USD", "currency", None, D(1), OPEN))
    ledger.ensure_commodity(Commodity("MBTZ26", "future", "USD", D("0.1"), OPEN))
    ledger.ensure_commodity(Commodity("SPY", "share", "USD", D(1), OPEN))
    return ledger


def deposit(amount: str, time: dt.datetime, key: str | None = None, account: str = CASH) -> Transaction:
    return Transaction(time, "deposit", "deposit",
                       (Posting(account, D(amount), "USD"), Posting(DEPOSITS, -D(amount), "USD")), key=key)


def vm(amount: str, time: dt.datetime, strategy: str = "A", key: str | None = None) -> Transaction:
    """Variation margin: income against cash."""
    return Transaction(time, "settlement", f"settle {strategy} {amount}",
                       (Posting(CASH, D(amount), "USD"), Posting(f"Income:Trading:{strategy}", -D(amount), "USD")),
                       key=key)


def future_fill(units: str, time: dt.datetime, key: str | None = None, account: str = A) -> Transaction:
    return Transaction(time, "fill", f"fill {units} MBTZ26",
                       (Posting(account, D(units), "MBTZ26", Cost(D(0), "USD")),
                        Posting(COM_A, D("2.00"), "USD"), Posting(CASH, D("-2.00"), "USD")), key=key)


def counts(ledger: Ledger) -> tuple[int, int]:
    return ledger.count()


def account_id(conn, name: str) -> int:
    return conn.exec_driver_sql(f"SELECT id FROM account WHERE name = '{name}'").scalar_one()


def raw_posting(conn, txn_id: int, ts: str, account: str, commodity: str, units: int, weight: int | None = None,
                weight_currency: str | None = None, cost: int | None = None, cost_currency: str | None = None) -> None:
    """Insert one posting with plain SQL; numbers are nano-units."""
    weight = units if weight is None else weight
    weight_currency = weight_currency or (cost_currency if cost is not None else commodity)
    cost_sql = "NULL" if cost is None else str(cost)
    cost_cur = "NULL" if cost_currency is None else f"'{cost_currency}'"
    conn.exec_driver_sql(
        "INSERT INTO posting (txn_id, ts, account_id, commodity, units, cost, cost_currency, weight, weight_currency) "
        f"VALUES ({txn_id}, '{ts}', {account_id(conn, account)}, '{commodity}', {units}, {cost_sql}, {cost_cur}, "
        f"{weight}, '{weight_currency}')")


def raw_header(conn, txn_id: int, ts: str, narration: str = "raw") -> None:
    conn.exec_driver_sql(
        "INSERT INTO txn (id, ts, kind, narration, links, meta, fingerprint, booked_at) "
        f"VALUES ({txn_id}, '{ts}', 'raw', '{narration}', '', '{{}}', 'x', '{ts}')")


TS = "2026-12-01 10:00:00.000000"


def refused(excinfo) -> str:
    return str(getattr(excinfo.value, "orig", excinfo.value))


# -- booking -----------------------------------------------------------------------------------

def test_balanced_entries_book_and_read_back(books: Ledger):
    entries = [deposit("1000", t(1, 9)), future_fill("2", t(1, 10)), vm("15.50", t(1, 22))]
    booked = [books.book(e) for e in entries]
    assert [b.created for b in booked] == [True, True, True]
    assert len({b.id for b in booked}) == 3
    assert counts(books) == (3, 7)
    for b, e in zip(booked, entries):
        assert books.get(b.id) == e
    assert books.balances() == {
        (CASH, "USD"): D("1013.50"), (DEPOSITS, "USD"): D("-1000"), (A, "MBTZ26"): D(2),
        (COM_A, "USD"): D(2), (INC_A, "USD"): D("-15.50"),
    }


def test_unbalanced_refused_by_the_model(books: Ledger):
    bad = Transaction(t(1), "fill", "bad", (Posting(CASH, D("5.00"), "USD"), Posting(INC_A, D("-4.99"), "USD")))
    with pytest.raises(UnbalancedError, match="does not balance: residual 0.01 USD"):
        validate(bad)
    with pytest.raises(UnbalancedError):
        books.book(bad)
    # balanced in USD but not in EUR
    mixed = Transaction(t(1), "fx", "mixed", (Posting(CASH, D(5), "USD"), Posting(INC_A, D(-5), "USD"),
                                              Posting(CASH, D(1), "EUR")))
    with pytest.raises(UnbalancedError, match="1 EUR"):
        books.book(mixed)
    # a weight at cost that does not net out
    at_cost = Transaction(t(1), "fill", "at cost", (Posting(A, D(10), "SPY", Cost(D(400), "USD")),
                                                    Posting(CASH, D(-3999), "USD")))
    with pytest.raises(UnbalancedError, match="residual 1 USD"):
        books.book(at_cost)
    assert counts(books) == (0, 0)


def test_balanced_raw_sql_entry_is_accepted(books: Ledger, engine):
    """The control for the refusals below: a correct raw insert does commit."""
    with engine.begin() as conn:
        raw_posting(conn, 900, TS, CASH, "USD", 5 * F)
        raw_posting(conn, 900, TS, INC_A, "USD", -5 * F)
        raw_header(conn, 900, TS)
    assert books.balances() == {(CASH, "USD"): D(5), (INC_A, "USD"): D(-5)}


@pytest.mark.parametrize("case", ["off_by_one_nano", "one_currency_off", "no_postings", "mixed_times"])
def test_unbalanced_refused_by_the_database_through_raw_sql(books: Ledger, engine, case):
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:
            if case == "off_by_one_nano":
                raw_posting(conn, 901, TS, CASH, "USD", 5 * F)
                raw_posting(conn, 901, TS, INC_A, "USD", -5 * F + 1)
            elif case == "one_currency_off":
                raw_posting(conn, 901, TS, CASH, "USD", 5 * F)
                raw_posting(conn, 901, TS, INC_A, "USD", -5 * F)
                raw_posting(conn, 901, TS, CASH, "EUR", 1 * F)
            elif case == "mixed_times":
                raw_posting(conn, 901, TS, CASH, "USD", 5 * F)
                raw_posting(conn, 901, "2026-12-01 10:00:01.000000", INC_A, "USD", -5 * F)
            raw_header(conn, 901, TS)
    assert "does not balance" in refused(excinfo)
    assert counts(books) == (0, 0)


def test_postings_cannot_be_added_to_a_booked_transaction(books: Ledger, engine):
    booked = books.book(deposit("100", t(1)))
    with engine.connect() as conn:
        ts = conn.exec_driver_sql(f"SELECT ts FROM txn WHERE id = {booked.id}").scalar_one()
    assert ts == fmt_ts(t(1))
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:  # even a pair that nets to zero
            raw_posting(conn, booked.id, ts, CASH, "USD", 7 * F)
            raw_posting(conn, booked.id, ts, DEPOSITS, "USD", -7 * F)
    assert "cannot be added to a booked transaction" in refused(excinfo)
    assert books.balances() == {(CASH, "USD"): D(100), (DEPOSITS, "USD"): D(-100)}
    assert counts(books) == (1, 2)


@pytest.mark.parametrize("statement", [
    "UPDATE txn SET narration = 'rewritten'",
    "DELETE FROM txn",
    "UPDATE posting SET units = units * 2, weight = weight * 2",
    "DELETE FROM posting",
    "UPDATE txn SET ts = '2020-01-01 00:00:00.000000' WHERE id = {id}",
    "DELETE FROM posting WHERE txn_id = {id}",
])
def test_history_cannot_be_updated_or_deleted_through_raw_sql(books: Ledger, engine, statement):
    booked = books.book(deposit("100", t(1)))
    before = books.get(booked.id)
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement.format(id=booked.id))
    assert "append-only" in refused(excinfo)
    assert books.get(booked.id) == before
    assert counts(books) == (1, 2)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no TRUNCATE
def test_truncate_refused_on_postgresql(books: Ledger, engine):
    books.book(deposit("100", t(1)))
    for table in ("posting", "txn"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {table} CASCADE")
    assert counts(books) == (1, 2)


def test_orphan_postings_cannot_commit(books: Ledger, engine):
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:
            raw_posting(conn, 777, TS, CASH, "USD", 5 * F)  # balanced, but no header ever comes
            raw_posting(conn, 777, TS, INC_A, "USD", -5 * F)
    assert "foreign key" in refused(excinfo).lower()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM posting").scalar_one() == 0


@pytest.mark.parametrize("case", ["units_not_weight", "cost_product_off", "wrong_weight_currency",
                                  "price_product_off"])
def test_weight_check_refuses_a_wrong_weight(books: Ledger, engine, case):
    with pytest.raises(sa.exc.DBAPIError) as excinfo:
        with engine.begin() as conn:
            if case == "units_not_weight":
                raw_posting(conn, 950, TS, CASH, "USD", 5 * F, weight=4 * F)
            elif case == "cost_product_off":  # 10 SPY {400 USD} weighs 4000 USD, not 4001
                raw_posting(conn, 950, TS, A, "SPY", 10 * F, weight=4001 * F, cost=400 * F, cost_currency="USD")
            elif case == "wrong_weight_currency":
                raw_posting(conn, 950, TS, A, "SPY", 10 * F, weight=4000 * F, weight_currency="EUR",
                            cost=400 * F, cost_currency="USD")
            else:
                conn.exec_driver_sql(
                    "INSERT INTO posting (txn_id, ts, account_id, commodity, units, price, price_currency, "
                    f"weight, weight_currency) VALUES (950, '{TS}', {account_id(conn, CASH)}, 'EUR', {2 * F}, "
                    f"{F + F // 10}, 'USD', {2 * F + F // 10}, 'USD')")  # 2 EUR @ 1.1 USD is 2.2 USD
    assert "posting_weight_exact" in refused(excinfo) or "constraint" in refused(excinfo).lower()
    # the correct weights pass the same check (so the refusal above is about the weight alone)
    with engine.begin() as conn:
        raw_posting(conn, 951, TS, A, "SPY", 10 * F, weight=4000 * F, cost=400 * F, cost_currency="USD")
        conn.exec_driver_sql(
            "INSERT INTO posting (txn_id, ts, account_id, commodity, units, price, price_currency, "
            f"weight, weight_currency) VALUES (951, '{TS}', {account_id(conn, CASH)}, 'EUR', {2 * F}, "
            f"{F + F // 10}, 'USD', {2 * F + F // 5}, 'USD')")
        raw_posting(conn, 951, TS, CASH, "USD", -4002 * F - F // 5)
        raw_header(conn, 951, TS)
    assert books.balances()[(A, "SPY")] == D(10)


# -- idempotency -------------------------------------------------------------------------------

def test_same_key_same_content_returns_the_same_entry(books: Ledger):
    first = books.book(deposit("100.00", t(1), key="dep-1"))
    again = books.book(deposit("100", t(1), key="dep-1"))  # 100.00 and 100 are the same amount
    assert first.created and not again.created
    assert again.id == first.id
    assert counts(books) == (1, 2)
    assert books.find_by_key("dep-1") == first.id


def test_same_key_different_content_is_a_conflict(books: Ledger):
    books.book(deposit("100", t(1), key="dep-1"))
    with pytest.raises(IdempotencyConflict, match="dep-1"):
        books.book(deposit("101", t(1), key="dep-1"))
    with pytest.raises(IdempotencyConflict):
        books.book(deposit("100", t(1, 16), key="dep-1"))  # another time is another content
    assert books.balances() == {(CASH, "USD"): D(100), (DEPOSITS, "USD"): D(-100)}


def test_replay_inside_one_batch(books: Ledger):
    e1, e2 = deposit("1", t(1), key="k1"), deposit("2", t(1), key="k2")
    results = books.book_many([e1, e2, e1, deposit("3", t(1))])
    assert [r.created for r in results] == [True, True, True, True]  # the repeat is the same new entry
    assert results[2] == results[0]
    assert len({r.id for r in results}) == 3
    assert counts(books) == (3, 6)
    # a conflicting repeat inside a batch refuses the whole batch
    with pytest.raises(IdempotencyConflict):
        books.book_many([deposit("4", t(2), key="k4"), deposit("5", t(2), key="k4")])
    assert counts(books) == (3, 6)
    assert books.find_by_key("k4") is None
    # replaying a batch that was booked returns the same ids and books nothing
    replay = books.book_many([e1, e2])
    assert [(r.id, r.created) for r in replay] == [(results[0].id, False), (results[1].id, False)]
    assert counts(books) == (3, 6)


def test_book_new_books_in_the_callers_transaction_and_answers_a_booked_key_as_book_does(books: Ledger):
    """`book_new` (the one-by-one fill path, without a savepoint) books a new entry in the caller's
    transaction, which commits or rolls back whole; a key booked after all gets `book`'s answers."""
    with pytest.raises(RuntimeError):
        with books.engine.begin() as conn:
            assert books.book_new(deposit("1", t(1), key="n1"), conn).created
            raise RuntimeError("killed before the commit")
    assert counts(books) == (0, 0)
    with books.engine.begin() as conn:
        first = books.book_new(deposit("1", t(1), key="n1"), conn)
        again = books.book_new(deposit("1.00", t(1), key="n1"), conn)  # booked in this transaction
    assert first.created and (again.id, again.created) == (first.id, False)
    with books.engine.begin() as conn:
        assert books.book_new(deposit("1", t(1), key="n1"), conn) == again
        with pytest.raises(IdempotencyConflict, match="n1"):
            books.book_new(deposit("2", t(1), key="n1"), conn)
    assert counts(books) == (1, 2)


def test_a_failed_batch_books_nothing(books: Ledger):
    good = deposit("1", t(1), key="good")
    unknown = Transaction(t(1), "x", "x", (Posting("Assets:Nowhere", D(1), "USD"), Posting(CASH, D(-1), "USD")))
    with pytest.raises(LedgerError, match="unknown account Assets:Nowhere"):
        books.book_many([good, unknown])
    assert counts(books) == (0, 0)
    assert books.book(good).created


# -- reversals ---------------------------------------------------------------------------------

def test_reversal_nets_to_zero_and_is_linked(books: Ledger):
    books.book(deposit("500", t(1)))
    original = Transaction(t(1, 16), "fill", "fill", (
        Posting(A, D(3), "MBTZ26", Cost(D(0), "USD")), Posting(CASH, D("12.5"), "USD"),
        Posting(INC_A, D("-12.5"), "USD")), links=("fill-E1",), key="fill-E1")
    before = books.balances()
    booked = books.book(original)
    assert books.balances() != before
    rev = books.reverse(booked.id, t(2), "booked to the wrong strategy")
    assert rev.created
    assert books.balances() == before
    reversal = books.get(rev.id)
    assert reversal.reverses == booked.id
    assert reversal.kind == "reversal"
    assert f"entry-{booked.id}" in reversal.links and "fill-E1" in reversal.links
    assert dict(reversal.meta)["reason"] == "booked to the wrong strategy"
    assert sorted((p.account, p.units) for p in reversal.postings) == sorted(
        (p.account, -p.units) for p in original.postings)
    assert books.get(booked.id) == original  # the original stays as it was


def test_an_entry_is_reversed_only_once(books: Ledger):
    booked = books.book(deposit("500", t(1)))
    rev = books.reverse(booked.id, t(2), "mistake")
    with pytest.raises(LedgerError, match=f"entry {booked.id} is already reversed by entry {rev.id}"):
        books.reverse(booked.id, t(3), "again")
    with pytest.raises(LedgerError, match="itself a reversal"):
        books.reverse(rev.id, t(3), "undo the undo")
    # a second reversal under another key is refused by the database (unique reverses_id)
    with pytest.raises(LedgerError):
        books.reverse(booked.id, t(3), "again", key="another-key")
    # the same reversal replayed with its own key is a no-op
    assert books.reverse(booked.id, t(2), "mistake", key="reversal:%d" % booked.id) == type(rev)(rev.id, False)
    assert counts(books) == (2, 4)
    assert books.balances() == {}
    with pytest.raises(LedgerError, match="needs a reason"):
        books.reverse(booked.id, t(3), "  ")
    with pytest.raises(LedgerError, match="no entry 424242"):
        books.reverse(424242, t(3), "missing")


# -- queries -----------------------------------------------------------------------------------

@pytest.mark.parametrize("from_end", [False, True, None])
def test_balances_as_of_a_time_and_a_date(books: Ledger, from_end):
    """Summed from the first entry, or the maintained balances less the entries after (from_end),
    or whichever is nearer: the same, an entry at the bound itself included."""
    books.book(deposit("100", t(1, 10)))
    books.book(deposit("20", t(1, 15)))
    books.book(deposit("3", t(2, 0)))
    books.book(deposit("0.4", t(2, 23, 59)))
    cash = lambda **kw: books.balances(**kw, from_end=from_end).get((CASH, "USD"))  # noqa: E731
    assert cash(as_of=t(1, 9)) is None
    assert cash(as_of=t(1, 10)) == D(100)  # a time includes entries at that time
    assert cash(as_of=t(1, 14, 59)) == D(100)
    assert cash(as_of=t(1, 15)) == D(120)
    assert cash(as_of=dt.date(2026, 12, 1)) is None  # a date means the start of that day
    assert cash(as_of=dt.date(2026, 12, 2)) == D(120)
    assert cash(as_of=dt.date(2026, 12, 3)) == D("123.4")
    assert cash() == D("123.4")
    # a time in another zone is the same instant
    assert cash(as_of=dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))) == D(120)
    assert books.balances(prefix="Equity:") == {(DEPOSITS, "USD"): D("-123.4")}
    assert books.balances(as_of=t(1, 15), prefix="Equity:", from_end=from_end) == {(DEPOSITS, "USD"): D("-120")}
    assert books.balances(as_of=t(1, 15), prefix="Nothing:", from_end=from_end) == {}


def test_income_per_period_and_per_day(books: Ledger):
    books.book(vm("5.00", t(1, 10)))
    books.book(vm("20.00", t(1, 11)))
    books.book(vm("-50.00", t(1, 22), strategy="B"))
    books.book(future_fill("1", t(1, 12)))
    books.book(vm("-60.00", t(2, 10)))
    books.book(vm("60.00", t(2, 22)))
    books.book(vm("50.00", t(2, 22), strategy="B"))
    books.book(deposit("1000", t(2, 9)))  # not income
    assert books.income() == {(INC_A, "USD"): D("-25.00"), (COM_A, "USD"): D("2.00")}  # B nets to zero
    assert books.income(since=dt.date(2026, 12, 1), until=dt.date(2026, 12, 2)) == {
        (INC_A, "USD"): D(-25), (INC_B, "USD"): D(50), (COM_A, "USD"): D(2)}
    assert books.income(since=dt.date(2026, 12, 2)) == {(INC_B, "USD"): D(-50)}  # A's day 2 nets to 0
    assert books.income(since=t(1, 10, 30), until=t(1, 12)) == {(INC_A, "USD"): D(-20)}
    assert books.income(by_day=True) == {
        (INC_A, "USD", dt.date(2026, 12, 1)): D(-25), (INC_B, "USD", dt.date(2026, 12, 1)): D(50),
        (COM_A, "USD", dt.date(2026, 12, 1)): D(2), (INC_B, "USD", dt.date(2026, 12, 2)): D(-50),
    }


def test_positions_exclude_currencies_and_flat_holdings(books: Ledger):
    books.book(deposit("10000", t(1, 9)))
    books.book(future_fill("3", t(1, 10)))
    books.book(future_fill("-1", t(1, 11), account=B))
    books.book(Transaction(t(1, 12), "fill", "buy SPY", (
        Posting(A, D(10), "SPY", Cost(D("400.25"), "USD", dt.date(2026, 12, 1), "F1")),
        Posting(CASH, D("-4002.50"), "USD"))))
    books.book(future_fill("-3", t(1, 13)))  # A flat in MBTZ26 again
    assert books.positions() == {(B, "MBTZ26"): D(-1), (A, "SPY"): D(10)}
    assert books.positions(prefix=B) == {(B, "MBTZ26"): D(-1)}


def test_lots_oldest_first_and_reduced_by_label(books: Ledger):
    books.book(deposit("100000", t(1, 9)))

    def buy(label, units, price, time):
        cost = Cost(D(price), "USD", time.date(), label)
        return books.book(Transaction(time, "fill", f"buy {label}", (
            Posting(A, D(units), "SPY", cost), Posting(CASH, -D(units) * D(price), "USD"))))

    # same day, same price: kept apart by their labels; booked out of time order on purpose
    buy("F3", 5, "401", t(1, 14))
    buy("F1", 10, "400", t(1, 10))
    buy("F2", 7, "400", t(1, 11))
    buy("F4", 2, "399.5", t(2, 10))
    lots = books.lots(A, "SPY")
    assert [(c.label, u) for c, u in lots] == [("F1", D(10)), ("F2", D(7)), ("F3", D(5)), ("F4", D(2))]
    assert lots[0][0] == Cost(D(400), "USD", dt.date(2026, 12, 1), "F1")
    # sell 12: all of F1 and 2 of F2, each reduction naming its lot, realized P&L to income
    f1, f2 = lots[0][0], lots[1][0]
    books.book(Transaction(t(2, 15), "fill", "sell 12", (
        Posting(A, D(-10), "SPY", f1), Posting(A, D(-2), "SPY", f2),
        Posting(CASH, D("4920.00"), "USD"), Posting(INC_A, D("-120.00"), "USD"))))  # 12 x 410 - 12 x 400
    assert [(c.label, u) for c, u in books.lots(A, "SPY")] == [("F2", D(5)), ("F3", D(5)), ("F4", D(2))]
    assert books.positions()[(A, "SPY")] == D(12)
    assert books.income() == {(INC_A, "USD"): D(-120)}


# -- refusals with clear messages --------------------------------------------------------------

@pytest.mark.parametrize("posting, message", [
    (Posting("Assets:Broker:DU1234567:Strategy:Nobody", D(1), "USD"),
     "unknown account Assets:Broker:DU1234567:Strategy:Nobody: open it first"),
    (Posting("Assets:Broker:DU1234567:Strategy:Late", D(1), "USD"),
     "account Assets:Broker:DU1234567:Strategy:Late is not open on 2026-12-01"),
    (Posting("Assets:Broker:DU1234567:UsdOnly", D(1), "EUR"),
     "account Assets:Broker:DU1234567:UsdOnly does not accept EUR"),
])
def test_account_refusals_are_clear(books: Ledger, posting, message):
    txn = Transaction(t(1), "x", "x", (posting, Posting(DEPOSITS, D(-1), posting.commodity)))
    with pytest.raises(LedgerError) as excinfo:
        books.book(txn)
    assert str(excinfo.value) == message
    assert counts(books) == (0, 0)


def test_closed_account_and_bad_names_are_refused(books: Ledger):
    books.open_account(Account("Assets:Old", OPEN, close_date=dt.date(2026, 6, 30)))
    with pytest.raises(LedgerError, match="not open on 2026-12-01"):
        books.book(Transaction(t(1), "x", "x", (Posting("Assets:Old", D(1), "USD"), Posting(DEPOSITS, D(-1), "USD"))))
    with pytest.raises(LedgerError, match="invalid account name"):
        books.open_account(Account("Assets:lower", OPEN))
    with pytest.raises(LedgerError, match="already open with another definition"):
        books.open_account(Account(CASH, dt.date(2025, 1, 1)))
    assert books.open_account(Account(CASH, OPEN)) == books.open_account(Account(CASH, OPEN))
    with pytest.raises(LedgerError, match="invalid commodity"):
        books.book(Transaction(t(1), "x", "x", (Posting(CASH, D(1), "usd"), Posting(DEPOSITS, D(-1), "usd"))))
    with pytest.raises(LedgerError, match="timezone-aware"):
        books.book(Transaction(dt.datetime(2026, 12, 1), "x", "x", (Posting(CASH, D(1), "USD"),
                                                                    Posting(DEPOSITS, D(-1), "USD"))))


# -- exact numbers -----------------------------------------------------------------------------

def test_decimal_round_trip(books: Ledger):
    books.open_account(Account("Assets:Broker:DU1234567:Strategy:X", OPEN))
    X = "Assets:Broker:DU1234567:Strategy:X"
    big = D("123456789.123456789")
    entries = [
        # 0.1 MBT held at zero cost, and a fractional VM amount
        Transaction(t(1, 10), "fill", "tenth", (Posting(X, D("0.1"), "MBTZ26", Cost(D(0), "USD")),
                                                Posting(CASH, D("0.000000001"), "USD"),
                                                Posting(INC_A, D("-0.000000001"), "USD"))),
        # a price with nine decimals and nine integer digits
        Transaction(t(1, 11), "fill", "big price", (Posting(X, D(1), "SPY", Cost(big, "USD", None, "BIG")),
                                                    Posting(CASH, -big, "USD"))),
        # negative values, and a conversion at a price
        Transaction(t(1, 12), "fx", "eur", (Posting(CASH, D("-2"), "EUR", price=Amount(big, "USD")),
                                            Posting(CASH, D("246913578.246913578"), "USD"))),
    ]
    ids = [books.book(e).id for e in entries]
    for txn_id, entry in zip(ids, entries):
        back = books.get(txn_id)
        assert back == entry
        assert [str(p.units) for p in back.postings] == [str(p.units) for p in entry.postings]
    read = books.get(ids[1]).postings[0]
    assert read.cost.number == big and str(read.cost.number) == "123456789.123456789"
    balances = books.balances()
    assert str(balances[(X, "MBTZ26")]) == "0.1"
    assert balances[(CASH, "EUR")] == D("-2")
    assert str(balances[(CASH, "USD")]) == "123456789.12345679"  # 0.000000001 - big + 2 x big
    assert balances[(INC_A, "USD")] == D("-0.000000001")
    assert from_scaled(to_scaled(D("-123456789.123456789"))) == D("-123456789.123456789")


@pytest.mark.parametrize("units, message", [
    ("0.0000000001", "more than 9 decimal places"),
    ("-1.1234567891", "more than 9 decimal places"),
    ("9300000000", "beyond the storable range"),
])
def test_numbers_the_ledger_cannot_store_are_refused(books: Ledger, units, message):
    txn = Transaction(t(1), "x", "x", (Posting(CASH, D(units), "USD"), Posting(DEPOSITS, -D(units), "USD")))
    with pytest.raises(NumberError, match=message):
        books.book(txn)
    assert counts(books) == (0, 0)


def test_weights_beyond_range_are_refused(books: Ledger):
    # each number fits, but units x cost does not
    txn = Transaction(t(1), "x", "x", (Posting(A, D(100), "SPY", Cost(D("123456789.123456789"), "USD")),
                                       Posting(CASH, D("-6172839456.17283945"), "USD"),
                                       Posting(CASH, D("-6172839456.17283945"), "USD")))
    with pytest.raises(NumberError):
        books.book(txn)
    assert counts(books) == (0, 0)


def test_floats_are_refused(books: Ledger):
    with pytest.raises(NumberError, match="float"):
        to_decimal(0.1)
    with pytest.raises(NumberError, match="not a finite"):
        to_decimal("NaN")
    assert to_decimal("0.1") == D("0.1") and to_decimal(3) == D(3)
    with pytest.raises(LedgerError, match="non-zero finite Decimal"):
        books.book(Transaction(t(1), "x", "x", (Posting(CASH, 0.1, "USD"), Posting(DEPOSITS, -0.1, "USD"))))
    with pytest.raises(NumberError):
        to_scaled(0.1)  # type: ignore[arg-type]
    assert counts(books) == (0, 0)


def test_a_lot_cannot_be_reduced_by_more_than_it_holds(books: Ledger):
    """Beancount refuses a ledger whose reduction finds no lot to cover it; so does the ledger."""
    lot = Cost(D("500.00"), "USD", dt.date(2026, 12, 1), "E1")

    def trade(units: str, day: int, key: str) -> Transaction:
        return Transaction(t(day), "fill", f"SPY {units}", (
            Posting(A, D(units), "SPY", lot), Posting(CASH, -D(units) * D("500.00"), "USD")), key=key)

    books.book(trade("2", 1, "buy"))
    books.book(trade("-1", 2, "sell-1"))
    with pytest.raises(LedgerError, match="would reduce lot 'E1' at 500.00 USD, which holds 1"):
        books.book(trade("-2", 3, "sell-2"))
    with pytest.raises(LedgerError, match="would reduce lot"):  # half sold: the purchase cannot be undone
        books.reverse(books.find_by_key("buy"), t(3), "wrong")
    books.book(trade("-1", 3, "sell-the-rest"))
    assert (A, "SPY") not in books.balances()
