"""The bulk import (`Ledger.import_entries`, `tradeledger import entries`): every rule of the
ledger still holds, checked over the set; all or nothing; a replay books nothing; the maintained
balances and lots are right afterwards (`db verify` passes); the triggers and indexes it drops
come back; on both backends. And `export entries` then `import entries` moves a ledger exactly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import sqlite3
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tradeledger.ledger.bulk import SQLITE_INSERT_TRIGGERS, Importing
from tradeledger.ledger.maintained import verify_balances
from tradeledger.ledger.model import Amount, Cost, IdempotencyConflict, LedgerError, Posting, Transaction
from tradeledger.ledger.store import Ledger
from tradeledger.ledger.verify import verify


from sample_books import A, B, CASH, DEPOSITS, FEES, INC, UTC, entries, open_books, t


def _schema(ledger: Ledger) -> list[tuple]:
    if ledger.engine.dialect.name != "sqlite":
        with ledger.engine.connect() as c:
            return sorted(c.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE tgrelid IN ('posting'::regclass, 'txn'::regclass)").all())
    with ledger.engine.connect() as c:
        return sorted(c.exec_driver_sql("SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN "
                                        "('posting', 'txn')").all())


def _state(ledger: Ledger):
    return ledger.balances(), {(a, c): ledger.lots(a, c) for a in (A, B) for c in ("SPY", "MESZ26")}, ledger.count()


def test_import_books_what_book_many_books(ledger: Ledger):
    open_books(ledger)
    schema = _schema(ledger)
    result = ledger.import_entries(entries())
    assert (result.booked, result.replays, result.postings) == (7, 0, 19)
    assert _schema(ledger) == schema  # triggers and indexes are back, as they were
    booked = [ledger.get(i) for i in range(1, 8)]
    assert [b.key for b in booked] == [e.key for e in entries()]
    assert [b.fingerprint() for b in booked] == [e.fingerprint() for e in entries()]
    assert ledger.balances()[(CASH, "JPY")] == D("10000000000.5")
    assert ledger.lots(B, "SPY") == [(entries()[4].postings[0].cost, D(6)),
                                     (entries()[5].postings[0].cost, D(5))]
    assert verify(ledger).ok and verify_balances(ledger.engine) == []
    # A replay books nothing; booking the same entries one by one is a replay too.
    assert ledger.import_entries(entries()).replays == 7
    assert all(not ledger.book(e).created for e in entries())
    assert ledger.count() == (7, 19)


def _stored(ledger: Ledger, first: int, last: int) -> list[tuple]:
    """Entries first..last as stored, each value beside its SQL type, without what differs between
    two bookings of the same entries (ids, key, booking time)."""
    typed = "typeof({0}), {0}" if ledger.engine.dialect.name == "sqlite" else "pg_typeof({0})::text, {0}"
    columns = ", ".join(typed.format(c) for c in ("p.ts", "p.account_id", "p.commodity", "p.units", "p.cost",
                        "p.cost_currency", "p.cost_date", "p.cost_label", "p.price", "p.price_currency",
                        "p.weight", "p.weight_currency", "t.kind", "t.narration", "t.links", "t.meta",
                        "t.fingerprint", "t.idem_key IS NULL", "t.reverses_id IS NULL"))
    with ledger.engine.connect() as c:
        return [tuple(r) for r in c.exec_driver_sql(
            f"SELECT {columns} FROM posting p JOIN txn t ON t.id = p.txn_id WHERE t.id BETWEEN {first} AND {last} "
            "ORDER BY t.id, p.id").all()]


def test_import_stores_the_rows_book_many_stores(ledger: Ledger):
    """Value for value and type for type (a NULL stays NULL: on SQLite the import binds an integer
    in its place and the statement turns it back), for postings at cost, with a dated and labelled
    lot, at a price, plain; an entry without a key; a reversal."""
    open_books(ledger)
    priced = Transaction(t(4), "fx", "JPY at a price", (Posting(CASH, D(-150000), "JPY", price=Amount(D("0.0065"), "USD")),
                                                        Posting(CASH, D(975), "USD")))
    made = entries() + [priced, Transaction(t(5), "adj", "no key", (Posting(CASH, D(2), "USD"),
                                                                     Posting(INC, D(-2), "USD")))]
    ledger.import_entries([e if e.key is None else dataclasses.replace(e, key=f"i-{e.key}") for e in made])
    ledger.book_many(made)
    n = len(made)
    imported, booked = _stored(ledger, 1, n), _stored(ledger, n + 1, 2 * n)
    assert imported == booked and len(imported) == 23
    assert {r[9] for r in imported} > {None} and {r[17] for r in imported} > {None}  # cost, price: NULL and not
    reversal = Importing(_unnamed_reversal(ledger.get(n), "r-i"), reverses_key=None)
    ledger.import_entries([Importing(dataclasses.replace(reversal.txn, reverses=n))])
    ledger.book(dataclasses.replace(_unnamed_reversal(ledger.get(2 * n), "r-b"), reverses=2 * n))
    imported, booked = _stored(ledger, 2 * n + 1, 2 * n + 1), _stored(ledger, 2 * n + 2, 2 * n + 2)
    # the fingerprints differ: each names its own original
    assert [r[:33] + r[34:] for r in imported] == [r[:33] + r[34:] for r in booked] and len(imported) == 2
    assert verify(ledger).ok and verify_balances(ledger.engine) == []


def test_import_onto_a_ledger_with_history_keeps_its_indexes_and_sums(ledger: Ledger):
    open_books(ledger)
    first, rest = entries()[:5], entries()[5:]
    ledger.book_many(first)
    before = _schema(ledger)
    ledger.import_entries(rest, expected=1)  # much smaller than the ledger: indexes kept
    assert _schema(ledger) == before
    assert verify(ledger).ok and verify_balances(ledger.engine) == []
    assert ledger.lots(B, "SPY")[0][1] == D(6)


def test_a_bad_entry_refuses_the_whole_import(ledger: Ledger):
    open_books(ledger)
    schema = _schema(ledger)
    bad = Transaction(t(5), "fill", "unbalanced", (Posting(CASH, D(1), "USD"), Posting(INC, D(-2), "USD")), key="bad")
    with pytest.raises(LedgerError, match=r"entry 8 of the import: .*nothing was imported"):
        ledger.import_entries(entries() + [bad])
    assert ledger.count() == (0, 0) and ledger.balances() == {}
    assert _schema(ledger) == schema
    unknown = Transaction(t(5), "fill", "x", (Posting("Assets:Nowhere", D(1), "USD"), Posting(INC, D(-1), "USD")))
    with pytest.raises(LedgerError, match="entry 2 of the import: unknown account Assets:Nowhere"):
        ledger.import_entries([entries()[0], unknown])
    early = Transaction(dt.datetime(2025, 1, 1, tzinfo=UTC), "fill", "x",
                        (Posting(CASH, D(1), "USD"), Posting(INC, D(-1), "USD")))
    with pytest.raises(LedgerError, match="is not open on 2025-01-01"):
        ledger.import_entries([early])
    assert ledger.count() == (0, 0)
    # Weights in two currencies that sum to zero only together: each currency must balance.
    across = Transaction(t(5), "fx", "x", (Posting(CASH, D(1), "USD"), Posting(CASH, D(-1), "JPY"),
                                            Posting(INC, D(-1), "USD"), Posting(INC, D(1), "USD")))
    with pytest.raises(LedgerError, match="entry 1 of the import: .*does not balance"):
        ledger.import_entries([across])
    assert ledger.count() == (0, 0)


def test_keys_replays_and_conflicts(ledger: Ledger):
    open_books(ledger)
    one = entries()[2]
    other = Transaction(one.time, one.kind, "another narration", one.postings, key=one.key)
    result = ledger.import_entries([one, one, entries()[0]])
    assert (result.booked, result.replays) == (2, 1)
    with pytest.raises(IdempotencyConflict, match="entry 2 of the import: an entry with key 'd3'"):
        ledger.import_entries([entries()[1], other])
    assert ledger.count() == (2, 4)
    with pytest.raises(IdempotencyConflict, match="entry 3 of the import"):
        ledger.import_entries([entries()[5], entries()[6], Transaction(t(9), "x", "y", one.postings, key="f3")])


@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_keys_met_in_an_earlier_chunk_or_the_ledger(ledger: Ledger, chunk: int):
    """A key booked by an earlier chunk of the same import, or before it, is a replay (same
    content) or a conflict (other content), however the import is cut into chunks: on SQLite a
    chunk goes in first without its keys looked up, and the unique index refusing one sends it
    back to be decided with them (`bulk._Import.write`)."""
    from tradeledger.ledger import bulk

    open_books(ledger)
    first, second = entries()[0], entries()[1]
    result = bulk.import_entries(ledger, [first, second, first, entries()[2], second], chunk=chunk)
    assert (result.booked, result.replays, result.postings) == (3, 2, ledger.count()[1])
    again = Transaction(first.time, first.kind, "another narration", first.postings, key=first.key)
    with pytest.raises(IdempotencyConflict, match="entry 3 of the import: an entry with key 'd1'"):
        bulk.import_entries(ledger, [entries()[3], first, again], chunk=chunk)
    late = Transaction(t(9), "x", "y", entries()[3].postings, key=entries()[3].key)
    with pytest.raises(IdempotencyConflict, match="entry 3 of the import"):
        bulk.import_entries(ledger, [entries()[3], second, late], chunk=chunk)
    assert ledger.count()[0] == 3
    result = bulk.import_entries(ledger, [second, entries()[3], first], chunk=chunk)
    assert (result.booked, result.replays) == (1, 2)
    assert all(ledger.find_by_key(e.key) is not None for e in entries()[:4]) and ledger.count()[0] == 4
    assert verify(ledger).ok and verify_balances(ledger.engine) == []


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_the_sums_kept_in_python_are_the_triggers_sums(ledger: Ledger, chunk: int):
    """On SQLite the import sums each chunk's balances and lots as it makes the rows (one upsert
    per account and commodity, and per lot) where the dropped triggers added every posting: the
    same whole and nanos, lots' first times and zero sums as booking one by one leaves, however
    the import is cut into chunks, onto a ledger that already holds some of them."""
    from tradeledger.ledger import bulk

    open_books(ledger)
    ledger.book_many(entries()[:2])
    back = [Transaction(t(4), "adj", "back", (Posting(CASH, D(-100000), "USD"), Posting(DEPOSITS, D(100000), "USD")),
                        key="z1"),  # USD cash back to zero: a zero sum is kept as a row
            Transaction(t(1, 8), "fill", "earlier lot", (Posting(B, D(1), "SPY", entries()[4].postings[0].cost),
                                                         Posting(CASH, D("-600.25"), "USD")), key="z2")]
    bulk.import_entries(ledger, entries()[2:] + back, chunk=chunk)
    assert verify_balances(ledger.engine) == [] and verify(ledger).ok
    assert ledger.lots(B, "SPY")[0][1] == D(7)  # the earlier purchase joined the lot
    if ledger.engine.dialect.name == "sqlite":
        with ledger.engine.connect() as c:
            first = c.exec_driver_sql("SELECT first_ts FROM lot_balance WHERE commodity = 'SPY' "
                                      "AND cost_label = 'fill-1'").scalar()
            zero = c.exec_driver_sql("SELECT whole, nanos FROM balance WHERE commodity = 'USD' AND account_id = "
                                     f"(SELECT id FROM account WHERE name = '{DEPOSITS}')").one()
        assert first == "2026-12-01 08:00:00.000000" and tuple(zero) == (0, 0)


def test_a_labelled_lot_cannot_be_over_reduced_across_chunks(ledger: Ledger):
    open_books(ledger)
    lot = Cost(D("600.25"), "USD", dt.date(2026, 12, 1), "fill-1")
    buy = Transaction(t(1), "fill", "buy", (Posting(B, D(10), "SPY", lot), Posting(CASH, D("-6002.5"), "USD")), key="b")
    sells = [Transaction(t(2, h), "fill", "sell", (Posting(B, D(-4), "SPY", lot), Posting(CASH, D("2401"), "USD")),
                         key=f"s{h}") for h in (10, 11, 12)]
    from tradeledger.ledger import bulk

    with pytest.raises(LedgerError, match=r"entry 4 of the import: .*would reduce lot 'fill-1'"):
        bulk.import_entries(ledger, [buy] + sells, chunk=2)  # the third sale is in the second chunk
    assert ledger.count() == (0, 0)
    assert bulk.import_entries(ledger, [buy] + sells[:2], chunk=1).booked == 3
    assert ledger.lots(B, "SPY") == [(lot, D(2))]


def test_reversals_named_by_key_or_ref(ledger: Ledger):
    open_books(ledger)
    ledger.import_entries(entries()[:3])
    original = ledger.get(3)
    by_key = Importing(_unnamed_reversal(original, "r-d3"), reverses_key="d3")
    unkeyed = Transaction(t(4, 9), "cash-adjust", "no key", (Posting(CASH, D(5), "USD"), Posting(INC, D(-5), "USD")))
    result = ledger.import_entries([by_key, Importing(unkeyed, ref="u"),
                                    Importing(_unnamed_reversal(unkeyed, None), reverses_ref="u")])
    assert result.booked == 3
    assert ledger.get(4).reverses == 3 and ledger.get(6).reverses == 5
    assert ledger.balances().get((CASH, "USD")) is None  # deposit and adjustment both undone
    # The reversal's content names its original's id, as `book` stores it: booking it again is a replay.
    assert not ledger.book(ledger.get(4)).created
    assert ledger.import_entries([by_key]).replays == 1
    with pytest.raises(LedgerError, match="entry 1 of the import: .*reverses 'nope'"):
        ledger.import_entries([Importing(_unnamed_reversal(original, "r2"), reverses_key="nope")])
    with pytest.raises(LedgerError, match="already reversed|UNIQUE|unique"):
        ledger.import_entries([Importing(_unnamed_reversal(original, "r3"), reverses_key="d3")])
    assert verify(ledger).ok


def _unnamed_reversal(original: Transaction, key: str | None) -> Transaction:
    postings = tuple(p._replace(units=-p.units) for p in original.postings)
    return Transaction(original.time + dt.timedelta(hours=1), "reversal", f"reverses {original.narration}",
                       postings, meta=(("reason", "test"),), key=key)


def test_an_unknown_insert_trigger_keeps_every_trigger(tmp_path):
    """A rule this import does not know: it inserts under the triggers (and they still refuse)."""
    from tradeledger.ledger import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    db.upgrade(engine)
    ledger = open_books(Ledger(engine))
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TRIGGER posting_audit AFTER INSERT ON posting WHEN NEW.units = 7000000000 "
                          "BEGIN SELECT RAISE(ABORT, 'seven'); END")
    assert ledger.import_entries(entries()).booked == 7
    assert verify_balances(engine) == []  # kept by the triggers themselves
    seven = Transaction(t(9), "x", "seven", (Posting(CASH, D(7), "USD"), Posting(INC, D(-7), "USD")), key="7")
    with pytest.raises(LedgerError, match="seven"):
        ledger.import_entries([seven])
    with engine.connect() as c:
        names = {r[0] for r in c.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert SQLITE_INSERT_TRIGGERS | {"posting_audit"} <= names


def test_a_failure_after_the_triggers_were_dropped_leaves_them_in_place(tmp_path, monkeypatch):
    from tradeledger.ledger import bulk, db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    db.upgrade(engine)
    ledger = open_books(Ledger(engine))
    schema = _schema(ledger)

    def boom(self):
        raise RuntimeError("killed mid-import")

    monkeypatch.setattr(bulk._Import, "_check", boom)
    with pytest.raises(RuntimeError):
        ledger.import_entries(entries())
    assert _schema(ledger) == schema and ledger.count() == (0, 0)
    # Another connection (the sqlite3 shell) never saw the ledger without its rules.
    raw = sqlite3.connect(tmp_path / "l.db")
    raw.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.DatabaseError, match="does not balance"):
        with raw:
            raw.execute("INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                        "VALUES (99, '2026-12-01 00:00:00.000000', 1, 'USD', 1, 1, 'USD')")
            raw.execute("INSERT INTO txn (id, ts, kind, narration, fingerprint, booked_at) "
                        "VALUES (99, '2026-12-01 00:00:00.000000', 'x', 'x', 'f', 'now')")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), split=st.integers(0, 30))
def test_import_equals_booking_one_by_one(ledger: Ledger, seed: int, split: int):
    """Property: whatever the entries and however the import is cut into calls, the ledger it
    leaves answers every query as booking the same entries one by one would."""
    if not ledger.accounts():
        open_books(ledger)
    rng = random.Random(seed)
    base = t(1) + dt.timedelta(days=seed % 1000)
    made = []
    for k in range(rng.randint(1, 30)):
        amount = D(rng.randint(-10**6, 10**6)) / D(100) or D(1)
        made.append(Transaction(base + dt.timedelta(seconds=k), "adj", f"{seed}-{k}",
                                (Posting(CASH, amount, "USD"), Posting(FEES, -amount, "USD")), key=f"p{seed}-{k}"))
    made = [e for e in made if ledger.find_by_key(e.key) is None]  # hypothesis may draw a seed again
    balances = ledger.balances()
    cut = min(split, len(made))
    ledger.import_entries(made[:cut])
    ledger.import_entries(made)  # the first part again: replays
    expected = dict(balances)
    for e in made:
        for p in e.postings:
            expected[(p.account, p.commodity)] = expected.get((p.account, p.commodity), D(0)) + p.units
    assert ledger.balances() == {k: v for k, v in expected.items() if v}
    assert verify_balances(ledger.engine) == []


def test_export_then_import_moves_a_ledger_exactly(ledger: Ledger, tmp_path):
    """The ledger file round trip through the engine functions the CLI calls."""
    from tradeledger.engine.ops.entries_file import export_entries, import_entries
    from tradeledger.ledger import db

    open_books(ledger)
    ledger.book_many(entries())
    ledger.reverse(6, t(5), "booked twice")
    unkeyed = ledger.book(Transaction(t(6), "adj", "no key", (Posting(CASH, D(2), "USD"), Posting(INC, D(-2), "USD"))))
    ledger.reverse(unkeyed.id, t(7), "wrong")

    class Env:  # what the two functions use of an environment
        def __init__(self, ledger):
            self.ledger, self.engine = ledger, ledger.engine

    path = tmp_path / "ledger.jsonl"
    assert export_entries(Env(ledger), path) == (6, 10)
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    target_engine = db.make_engine(f"sqlite:///{tmp_path / 'target.db'}")
    db.upgrade(target_engine)
    target = Ledger(target_engine)
    result = import_entries(Env(target), path)
    assert (result.booked, result.replays) == (10, 0)
    assert target.balances() == ledger.balances()
    assert [target.get(i).fingerprint() for i in range(1, 11)] == [ledger.get(i).fingerprint() for i in range(1, 11)]
    assert verify(target).ok and verify_balances(target_engine) == []
    # Entries without a key have nothing to be recognised by: importing the file again would book
    # them again, and the database refuses a second reversal of entry 6, so nothing is imported.
    with pytest.raises(LedgerError, match="nothing was imported"):
        import_entries(Env(target), path)
    assert target.count() == ledger.count()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + '{"time": "2026-12-01T00:00:00", "kind": "x"}\n')
    with pytest.raises(LedgerError, match="bad.jsonl, line 2: not an entry"):
        import_entries(Env(target), bad)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_ledger_moves_from_sqlite_to_postgresql_through_the_commands(tmp_path, db_url):
    """`export entries` on a SQLite environment, `import entries` into a PostgreSQL one: the same
    balances, `db verify` and `check` clean; importing again books nothing new."""
    from click.testing import CliRunner

    from tradeledger.cli import main
    from tradeledger.engine.setup.environment import open_environment

    def run(*args):
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    run("--home", source, "init")
    env = open_environment(source, "paper")
    open_books(env.ledger)
    env.ledger.book_many(entries())
    from tradeledger.engine import tables

    with env.engine.begin() as conn:  # A's futures position is marked, as the engine's fills leave it
        conn.execute(tables.position_mark.insert().values(holder="A", contract="MESZ26", price=6000 * 10**9,
                                                          time="2026-12-01 15:00:00.000000"))
    assert "verified" in run("--home", source, "db", "verify")
    out = tmp_path / "ledger.jsonl"
    assert "7 entries" in run("--home", source, "export", "entries", "--out", str(out))
    run("--home", target, "--db-url", db_url, "init")
    assert "7 entries booked (19 postings), 0 already booked" in run("--home", target, "import", "entries", str(out))
    moved = open_environment(target, "paper")
    assert moved.engine.dialect.name == "postgresql"
    assert moved.ledger.balances() == env.ledger.balances()
    assert "verified: 7 entries" in run("--home", target, "db", "verify")  # the mark came along
    run("--home", target, "check")
    assert json.loads(run("--home", target, "import", "entries", str(out), "--json")) == {
        "booked": 0, "replays": 7, "postings": 0}


# -- the set-wide checks refuse rows the dropped triggers would have refused ---------------------

def _mixed() -> Transaction:
    """An entry whose postings weigh in two currencies, each balanced (as a conversion's would)."""
    return Transaction(t(4), "transfer", "both", (Posting(CASH, D(100), "USD"), Posting(DEPOSITS, D(-100), "USD"),
                                                 Posting(CASH, D(5), "JPY"), Posting(DEPOSITS, D(-5), "JPY")),
                       key="mixed")


WIDTH = 13  # a posting row's values (bulk_rows.POSTING_COLUMNS): txn_id, ts, ..., units at 4, weight at 11


def _nudge(values: list, row: int, by: int) -> None:
    """Units and weight of a plain posting moved together (its own CHECK still holds)."""
    values[row * WIDTH + 4] += by
    values[row * WIDTH + 11] += by


def _retime(values: list, row: int) -> None:
    values[row * WIDTH + 1] = "2026-12-31 00:00:00.000000"


CORRUPT = {
    # entry 3 (d3) is rows 4-5; the mixed entry, last, is rows 19-22 (USD, USD, JPY, JPY)
    "unbalanced": lambda rows: _nudge(rows.postings, 4, 1),
    "balanced in all, not per currency": lambda rows: (_nudge(rows.postings, 19, 1), _nudge(rows.postings, 21, -1)),
    "a posting's time not its entry's": lambda rows: _retime(rows.postings, 5),
    "every posting's time not its entry's": lambda rows: (_retime(rows.postings, 4), _retime(rows.postings, 5)),
    "a time apart in a mixed entry": lambda rows: _retime(rows.postings, 21),
    "an entry without postings": lambda rows: rows.postings.__delitem__(slice(4 * WIDTH, 6 * WIDTH)),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPT))
def test_the_set_wide_checks_refuse_what_the_triggers_refuse(tmp_path, monkeypatch, corruption):
    """Rows made wrong between the entries' check in Python and the database (as a bug in
    bulk_rows would make them) are refused by the checks that stand in for the dropped triggers."""
    from tradeledger.ledger import bulk, bulk_rows, db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    db.upgrade(engine)
    ledger = open_books(Ledger(engine))
    made = bulk_rows.Preparer.rows

    def corrupted(self, fresh):
        rows = made(self, fresh)
        CORRUPT[corruption](rows)
        return rows

    monkeypatch.setattr(bulk_rows.Preparer, "rows", corrupted)
    with pytest.raises(LedgerError, match="does not balance"):
        ledger.import_entries([*entries(), _mixed()])
    assert ledger.count() == (0, 0)
    monkeypatch.setattr(bulk_rows.Preparer, "rows", made)
    assert bulk.SQLITE_INSERT_TRIGGERS  # the checks above ran in place of these (dropped, then restored)
    assert ledger.import_entries([*entries(), _mixed()]).booked == 8
    assert ledger.balances()[(CASH, "JPY")] == D("10000000005.5")
