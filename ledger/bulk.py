"""Bulk import: many entries in one database transaction, their rules checked once over the set.

`Ledger.book_many` has every row checked as it goes in: on SQLite each posting fires five
triggers (sealed, no replace, foreign keys on, the maintained balance and lot) and each header
re-sums its postings. For a large import that per-row work, not the disk, is the limit.
`import_entries` keeps every rule but checks each once, over everything the import wrote:

1. Each entry is checked and turned into rows in Python exactly as the booking fast path does
   (`rows.prepare`: the same exactness, the same fingerprint), its accounts checked (known, open
   on its date, accepting the commodity). Its key is looked up among the entries booked before
   it (in the ledger or earlier in the import): the same content is a replay (skipped), another
   content a conflict (the import is refused). On SQLite, with the triggers set aside, a chunk
   that names no original by key and touches no labelled lot skips the look-up: it is written
   under a savepoint, the unique index on the key refusing one booked before it, and a chunk the
   database refuses is rolled back to the savepoint and decided again with the look-up (`write`).
   A reversal may name its original by key (`Importing`), since a file cannot know ids.
   Labelled lots are checked against their reductions in import order (`Ledger._check_lots`).
2. The rows go by executemany (COPY on PostgreSQL), chunk by chunk, into `txn` and `posting`
   (on SQLite 64 rows to an INSERT, and NULL bound as an integer the statement turns back: `NULL`).
3. A few statements then check every row the import wrote: each entry balances per currency
   (overflow-free; one pass over the new postings in entry order, the entries that weigh in
   several currencies summed per currency after), its postings carry its time and name it, and
   it has postings. On
   SQLite the maintained balances and lots get one upsert row per account and commodity (and per
   lot) a chunk, summed as the rows were made.

On SQLite steps 2-3 run with the per-row INSERT triggers of `posting` and `txn` dropped and, when
the import is big against the ledger (its entries at least a fifth of the ledger's postings: half
the ledger, for 10-posting entries), the posting indexes too (built again after, sorted: cheaper
than growing them row by row; on a big ledger it is the other way round, so they stay).
Both are re-created from their own stored definitions before the same COMMIT. SQLite's DDL is
transactional: no other connection ever sees the ledger without its triggers (readers see the last
commit; writers wait for the write lock this transaction holds from its BEGIN IMMEDIATE), and a
failure or a kill rolls everything back. The triggers are dropped only when the INSERT triggers
present are exactly those whose rules step 3 (and the foreign keys and unique indexes, which stay)
re-checks (`SQLITE_INSERT_TRIGGERS`); a database with any other keeps all of them, and the rows
go in under them. What replaces each trigger:

| trigger (migration) | its rule, during a bulk import |
| --- | --- |
| `txn_balanced` (0001/0005) | step 3: balance per currency, postings present and at the entry's time |
| `posting_sealed` (0001) | step 3: every new posting names an entry of this import |
| `posting_no_replace`, `txn_no_replace` (0005) | new ids only (MAX(id) under the write lock); the unique indexes on key and reversal stay |
| `posting_foreign_keys_on` (0005) | the connection's `PRAGMA foreign_keys` is checked to be on; the foreign keys stay |
| `txn_reverses_existing` (0005) | the foreign key `reverses_id -> txn.id` (immediate) stays |
| `posting_balance`, `posting_lot_balance` (0011) | step 3: the new postings' sums, one upsert row per account and commodity (and per lot) |

On PostgreSQL the triggers stay (dropping one would lock the table against every reader until the
commit): the rows go in by COPY under them, postings then headers, chunk by chunk.

A big JSON-lines file on SQLite, with a core the machine leaves idle (`idle_cores`), is read by
stagers beside the writer (`ledger/stager.py`): they run step 1 but the key lookups (`bulk_rows`'
`Preparer`, the same code) and send each chunk's rows as an SQLite image; the writer decides its
keys in SQL against the ledger (a replay's rows deleted from the image, a conflict refusing the
import) and copies it in by one INSERT ... SELECT per table (no Python per row). Steps 2-3 are
the same. A chunk that needs the ledger to decide it (a reversal named by key or ref, a labelled
lot) comes back as entries and goes through step 1 here. Ids are given by place (the n-th entry
gets MAX(id) + n), so both ways store the same rows.

The import is all or nothing: a single refused entry refuses it, naming the entry by its place in
the input (1-based) and what is wrong. Replays of entries already booked are skipped, so an
import run twice books once.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
from collections.abc import Iterable
from dataclasses import dataclass

from tradeledger.ledger.bulk_rows import NULL, POSTING_COLUMNS as _POSTING_COLUMNS, TXN_COLUMNS as _TXN_COLUMNS, \
    Importing, Preparer, Rows, insert_sqlite, refuse as _refuse
from tradeledger.ledger.model import IdempotencyConflict, LedgerError, Transaction
from tradeledger.ledger.rows import fmt_ts as _ts
from tradeledger.ledger.stager import Items, Stagers

__all__ = ["NULL", "Importing", "Imported", "SQLITE_INSERT_TRIGGERS", "import_entries"]

F = 1_000_000_000  # nano-units per unit (numbers.py)
CHUNK = 5_000  # entries prepared and written per executemany
# With stagers: smaller, so that the writer waits less for the first chunk and the stagers' work
# overlaps the writer's more evenly (a chunk costs the writer two statements, however small).
STAGED_CHUNK = 2_000
# With stagers the writer makes its share of the chunks itself, in turn with them: copying a
# staged chunk in costs it about a quarter of what the stager spent making it (0.05 s against
# 0.19 s for 2,000 fills, traced), so it would otherwise wait most of the time.
STAGE = "tl_stage"  # the schema a staged chunk is attached as

# The INSERT triggers whose rules this module re-checks (see the table above).
SQLITE_INSERT_TRIGGERS = frozenset({
    "posting_sealed", "posting_no_replace", "posting_foreign_keys_on", "posting_balance", "posting_lot_balance",
    "txn_balanced", "txn_no_replace", "txn_reverses_existing",
})


@dataclass(frozen=True)
class Imported:
    booked: int  # entries written now
    replays: int  # entries already booked with the same key and content (skipped)
    postings: int  # postings written now


def import_entries(ledger, entries: Iterable[Transaction | Importing], expected: int | None = None,
                   chunk: int | None = None, before=None, stage_from: tuple | None = None,
                   stagers: int | None = None) -> Imported:
    """Book every entry, all or nothing, in one transaction (see the module's docstring).
    `expected`: about how many entries come (a stream cannot say), to choose whether the posting
    indexes are built after; without it they are kept. `before(conn)` runs first in the same
    transaction (opening the accounts and commodities the entries need). `stage_from`: the file
    the entries are read from (`EntriesFile.stage_source`), which stagers may read instead of
    `entries` when the import is big (`stagers` of them: by default `idle_cores()`; 0: none)."""
    if expected is None and hasattr(entries, "__len__"):
        expected = len(entries)  # type: ignore[arg-type]
    if stagers is None:
        stagers = idle_cores()
    # The import makes a few tuples per posting and keeps a chunk of them alive: every allocation
    # threshold crossed sets the cyclic collector walking all of them (and whatever the caller
    # holds), a sixth of the import's time, for rows that form no cycle. It runs again after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _import(ledger, entries, expected, chunk, before, stage_from, stagers)
    finally:
        if collecting:
            gc.enable()


def idle_cores() -> int:
    """Stagers worth starting: one per core the machine leaves idle beside the writer's (the
    load average over the last minute), up to two. A stager on a busy core only takes time from
    the writer and the rest of the machine: on a 2-core machine at load 3, an import with two
    stagers took 1.28 times as long as the writer alone (bench/README.md). `TRADELEDGER_STAGERS`
    says how many instead (0: none)."""
    told = os.environ.get("TRADELEDGER_STAGERS", "").strip()
    if told:
        if not told.isdigit():
            raise LedgerError(f"TRADELEDGER_STAGERS is a number of processes (0 for none), not {told!r}")
        return int(told)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 0
    return max(0, min(2, round(cores - 1 - load)))


def _import(ledger, entries, expected: int | None, chunk: int | None, before, stage_from, stagers: int) -> Imported:
    with ledger.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        try:
            with conn.begin():
                if before is not None:
                    before(conn)
                cursor = raw.cursor()
                try:
                    run = _Import(ledger, conn, cursor, expected or 0)
                    # Stagers pay off from a few chunks on (each costs a process start, ~0.1 s);
                    # they need the set-wide checks (SQLite, its triggers set aside).
                    size = chunk or STAGED_CHUNK
                    if stage_from is not None and stagers > 0 and run.checked and (expected or 0) >= 4 * size:
                        run.staged(Stagers(*stage_from, run.accounts, run.booked_at, run.first_txn, size, stagers,
                                           writer_every=stagers + 1))
                    else:
                        for batch in _chunks(entries, chunk or CHUNK):
                            run.write(batch)
                    return run.finish()
                finally:
                    cursor.close()
        finally:
            if conn.dialect.name == "sqlite" and STAGE in {row[1] for row in raw.execute("PRAGMA database_list")}:
                raw.execute(f"DETACH {STAGE}")  # attached in the transaction, detached only after it


def _chunks(entries, size: int):
    batch = []
    for place, item in enumerate(entries, 1):
        batch.append((place, item))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Import:
    def __init__(self, ledger, conn, cursor, expected: int):
        self.ledger, self.conn, self.cursor = ledger, conn, cursor
        self.sqlite = conn.dialect.name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"
        self.booked_at = _ts(dt.datetime.now(dt.timezone.utc))
        self.accounts = self._accounts()
        self.preparer = Preparer(self.accounts, self.sqlite, self.booked_at)
        self.lot_state: tuple[dict, dict] = ({}, {})
        self.refs: dict[str, int] = {}  # ref -> id of the entries that carry one
        self.booked = self.replays = self.postings = 0
        self.indexes: list[str] = []  # what was dropped, as its own stored DDL
        self.triggers: list[str] = []
        if self.sqlite:
            self.first_txn = self._one("SELECT COALESCE(MAX(id), 0) FROM txn")[0] + 1  # under the write lock
            self.first_posting = self._one("SELECT COALESCE(MAX(id), 0) FROM posting")[0] + 1
            self.checked = self._drop(expected)
        else:
            self.checked = False  # PostgreSQL: the triggers check every row

    # -- set up -------------------------------------------------------------------------------

    def _one(self, sql: str, params=()):
        self.cursor.execute(sql, params)
        return self.cursor.fetchone()

    def _accounts(self) -> dict[str, tuple]:
        """name -> (id, open date, close date, currencies) of every account (a few hundred)."""
        self.cursor.execute("SELECT name, id, open_date, close_date, currencies FROM account")
        return {name: (i, dt.date.fromisoformat(opened), closed and dt.date.fromisoformat(closed),
                       frozenset(currencies.split(",")) if currencies else frozenset())
                for name, i, opened, closed, currencies in self.cursor.fetchall()}

    def _drop(self, expected: int) -> bool:
        """Drop the per-row INSERT triggers (and the posting indexes, when the import is big against
        the ledger: see the module's docstring) if they are exactly those this module re-checks; True
        if dropped."""
        if self._one("PRAGMA foreign_keys")[0] != 1:  # what posting_foreign_keys_on refuses
            raise LedgerError("postings need PRAGMA foreign_keys = ON, so that none can exist without "
                              "its transaction")
        self.cursor.execute("SELECT name, sql, type, tbl_name FROM sqlite_master WHERE type IN ('trigger', 'index') "
                            "AND tbl_name IN ('posting', 'txn') AND sql IS NOT NULL")
        objects = self.cursor.fetchall()
        triggers = [(name, sql) for name, sql, kind, _ in objects if kind == "trigger" and _on_insert(sql)]
        if {name for name, _ in triggers} != SQLITE_INSERT_TRIGGERS:
            return False  # a rule this module does not know: every trigger stays
        existing = self._one("SELECT COUNT(*) FROM posting")[0]
        indexes = [(name, sql) for name, sql, kind, table in objects
                   if kind == "index" and table == "posting" and expected * 5 >= existing]
        for name, sql in triggers:
            self.cursor.execute(f"DROP TRIGGER {name}")
            self.triggers.append(sql)
        for name, sql in indexes:
            self.cursor.execute(f"DROP INDEX {name}")
            self.indexes.append(sql)
        return True

    # -- each chunk ---------------------------------------------------------------------------

    def write(self, batch: list) -> None:
        """A chunk of (place, item): checked and made ready, keys and reversals decided in order
        against what is booked (earlier chunks included), then written.

        On SQLite with the triggers set aside (`checked`), a chunk that names no original by key
        and touches no labelled lot is first written without looking its keys up: the unique
        index on `idem_key` refuses a key booked before the chunk (keys repeated inside the
        chunk are decided in Python as always). Should the database refuse anything, the chunk is
        rolled back to its savepoint and decided again with its keys looked up, exactly as a chunk
        that cannot skip the look-up: a replay skipped, a conflict or other refusal raised as ever.
        The look-up was most of the writer's SQL besides the rows (a query per 500 keys)."""
        check = self.preparer.check
        prepared = [check(place, item) for place, item in batch]
        if self.sqlite and self.checked and not any(p.reverses_key is not None or p.ready.labelled
                                                    for p in prepared):
            self.cursor.execute("SAVEPOINT tl_chunk")
            try:
                self._decided(prepared, {})
            except LedgerError:
                self.cursor.execute("ROLLBACK TO tl_chunk")
                self.cursor.execute("RELEASE tl_chunk")
            else:
                self.cursor.execute("RELEASE tl_chunk")
                return
        self._decided(prepared, self._booked_keys({p.txn.key for p in prepared if p.txn.key}
                                                  | {p.reverses_key for p in prepared if p.reverses_key}))

    def _decided(self, prepared: list, booked: dict) -> None:
        """The chunk's keys and reversals decided in order against `booked` (key -> (id,
        fingerprint) of what is booked, filled in as the chunk books), its rows made and written."""
        places = [p.place for p in prepared]
        ids = dict(zip(places, self._new_ids(places)))  # a replay leaves its id unused: a gap
        fresh = []
        replays = 0
        for checked in prepared:
            place, txn, reverses_key, item = checked.place, checked.txn, checked.reverses_key, checked.item
            reverses = txn.reverses
            if reverses_key is not None:  # booked, or met earlier in the import (it is in `booked` then)
                if reverses_key not in booked:
                    raise _refuse(place, f"it reverses {reverses_key!r}, which is neither booked nor earlier "
                                         "in the import")
                reverses = booked[reverses_key][0]
            elif item.reverses_ref is not None:
                if item.reverses_ref not in self.refs:
                    raise _refuse(place, f"it reverses ref {item.reverses_ref!r}, which no earlier entry of the "
                                         "import carries")
                reverses = self.refs[item.reverses_ref]
            txn, digest = (txn, checked.digest) if reverses == txn.reverses else Preparer.named(checked, reverses)
            if txn.key is not None and txn.key in booked:
                txn_id, booked_digest = booked[txn.key]
                if booked_digest != digest:
                    raise _conflict(place, txn.key)
                replays += 1
            else:
                txn_id = ids[place]
                if txn.key is not None:
                    booked[txn.key] = (txn_id, digest)
                fresh.append((place, txn, checked.ready, digest, txn_id, reverses))
            if item.ref is not None:
                self.refs[item.ref] = txn_id
        rows = self.preparer.rows(fresh)
        self._check_lots(rows)
        self._write(rows)
        self.replays += replays

    def staged(self, stagers: Stagers) -> None:
        """Every chunk from the stagers, in order: an image's rows copied in, or entries booked here."""
        try:
            self.cursor.execute(f"ATTACH ':memory:' AS {STAGE}")
            for header, image in stagers.frames():
                if isinstance(header, Items):
                    self.write(header.batch)
                else:
                    self._write_image(header, image)
        finally:
            stagers.stop()

    def _write_image(self, header, image: bytes) -> None:
        """A stager's chunk: its keys decided against the ledger (earlier chunks included) and
        among themselves, in order: a replay's rows are deleted from the image, a conflict refuses
        the import; then the image's rows copied in, headers first, by one statement each."""
        self.conn.connection.dbapi_connection.deserialize(image, name=STAGE)
        sums, lots = header.sums, header.lots
        replays = self._staged_replays()
        if replays:
            marks = ", ".join("?" * len(replays))
            self.cursor.execute(f"DELETE FROM {STAGE}.posting WHERE txn_id IN ({marks})", replays)
            self.cursor.execute(f"DELETE FROM {STAGE}.txn WHERE id IN ({marks})", replays)
            sums, lots = self._staged_sums()
            self.replays += len(replays)
        try:
            self.cursor.execute(f"INSERT INTO txn ({_TXN_COLUMNS}) SELECT {_TXN_COLUMNS} FROM {STAGE}.txn ORDER BY rowid")
            booked = self.cursor.rowcount
            self.cursor.execute(f"INSERT INTO posting ({_POSTING_COLUMNS}) SELECT {_POSTING_COLUMNS} "
                                f"FROM {STAGE}.posting ORDER BY rowid")
            written = self.cursor.rowcount
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise LedgerError(f"the database refused the import: {_reason(exc)}; nothing was imported") from None
        self._maintain(sums, lots)
        self.booked += booked
        self.postings += written

    def _staged_replays(self) -> list[int]:
        """Ids of the image's entries that are replays (a key booked, or met earlier in the image,
        with the same content), in order; a key met with other content refuses the import."""
        self.cursor.execute(f"""
            SELECT s.id, s.idem_key, s.fingerprint, t.fingerprint FROM {STAGE}.txn s
            LEFT JOIN txn t ON t.idem_key = s.idem_key
            WHERE t.id IS NOT NULL OR s.idem_key IN (
                SELECT idem_key FROM {STAGE}.txn WHERE idem_key IS NOT NULL GROUP BY idem_key HAVING COUNT(*) > 1)
            ORDER BY s.id""")
        known: dict[str, str] = {}
        replays = []
        for txn_id, key, digest, booked_digest in self.cursor.fetchall():
            if booked_digest is not None:
                known.setdefault(key, booked_digest)
            if key in known:
                if known[key] != digest:
                    raise _conflict(txn_id - self.first_txn + 1, key)
                replays.append(txn_id)
            else:
                known[key] = digest
        return replays

    def _staged_sums(self) -> tuple[dict, dict]:
        """The maintained sums of the image's rows (after replays were taken out), summed by
        SQLite in two parts that cannot overflow (`sums.py`), as `Preparer.rows` sums them."""
        self.cursor.execute(f"SELECT account_id, commodity, SUM(units / {F}), SUM(units % {F}) "
                            f"FROM {STAGE}.posting GROUP BY account_id, commodity")
        sums = {(account_id, commodity): whole * F + nanos
                for account_id, commodity, whole, nanos in self.cursor.fetchall()}
        self.cursor.execute(f"""SELECT account_id, commodity, cost, cost_currency, COALESCE(cost_date, ''),
            COALESCE(cost_label, ''), SUM(units / {F}), SUM(units % {F}), MIN(ts) FROM {STAGE}.posting
            WHERE cost IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6""")
        lots = {tuple(row[:6]): [row[6] * F + row[7], row[8]] for row in self.cursor.fetchall()}
        return sums, lots

    def _new_ids(self, places: list[int]) -> list[int]:
        """Ids for new entries at these places: on SQLite the entry at place n gets the n-th id from
        MAX(id) + 1, read under the write lock (what a stager gives it too); on PostgreSQL from its
        sequence."""
        if self.sqlite:
            return [self.first_txn + place - 1 for place in places]
        self.cursor.execute("SELECT nextval('txn_id_seq') FROM generate_series(1, %s)", (len(places),))
        return [row[0] for row in self.cursor.fetchall()]

    def _booked_keys(self, keys: set[str]) -> dict[str, tuple[int, str]]:
        """key -> (id, fingerprint) of the entries already booked (earlier chunks included)."""
        found: dict[str, tuple[int, str]] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            self.cursor.execute(f"SELECT idem_key, id, fingerprint FROM txn WHERE idem_key IN "
                                f"({', '.join([self.mark] * len(part))})", part)
            found.update({key: (i, digest) for key, i, digest in self.cursor.fetchall()})
        return found

    def _check_lots(self, rows: Rows) -> None:
        """Labelled lots against their reductions, in import order (`Ledger._check_lots`)."""
        for place, txn_id, txn in rows.labelled:
            try:
                self.ledger._check_lots(self.conn, [(txn_id, txn)], self.lot_state)
            except LedgerError as exc:
                raise _refuse(place, str(exc)) from None

    def _write(self, rows: Rows) -> None:
        if not rows.headers:
            return
        try:
            if self.sqlite and self.checked:  # headers first: each posting finds its entry at once
                self._rows("txn", _TXN_COLUMNS, rows.headers)
                self._rows("posting", _POSTING_COLUMNS, rows.postings)
            else:  # under the triggers: postings, then the headers that seal them
                self._rows("posting", _POSTING_COLUMNS, rows.postings)
                self._rows("txn", _TXN_COLUMNS, rows.headers)
        except self.conn.dialect.loaded_dbapi.Error as exc:
            raise LedgerError(f"the database refused the import: {_reason(exc)}; nothing was imported") from None
        if self.checked:
            self._maintain(rows.sums, rows.lots)
        self.booked += len(rows.headers)
        self.postings += rows.count

    def _rows(self, table: str, columns: str, rows: list) -> None:
        """Rows into a table: on PostgreSQL by COPY; on SQLite by `bulk_rows.insert_sqlite`."""
        if not self.sqlite:
            with self.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        insert_sqlite(self.cursor, table, columns, rows)

    # -- the whole set ------------------------------------------------------------------------

    def finish(self) -> Imported:
        for sql in self.indexes:  # first: the checks read the new postings by entry
            self.cursor.execute(sql)
        if self.checked and self.booked:
            self._check()
        for sql in self.triggers:
            self.cursor.execute(sql)
        if not self.sqlite and self.booked:  # the deltas of this import's postings (migration 0012)
            self.cursor.execute("SELECT tl_fold_balances()")
        return Imported(self.booked, self.replays, self.postings)

    def _check(self) -> None:
        """What the dropped triggers check row by row, once over the rows this import wrote: each
        new entry balances per currency (exactly, no 64-bit overflow) and its postings carry its
        time; it has postings; no new posting joins an entry booked before the import. (A posting
        naming no entry at all is refused at COMMIT by the deferred foreign key.)

        One pass over the new postings in entry order (`ix_posting_txn`, no sort): an entry whose
        postings all weigh in one currency is summed whole; the few whose postings weigh in
        several are listed and summed per currency after. Grouping every entry by currency too
        would sort every new posting: a quarter of the checks' time (bench/README.md)."""
        first_txn, first_posting = self.first_txn, self.first_posting
        self.cursor.execute(f"""SELECT txn_id, MIN(weight_currency) <> MAX(weight_currency) FROM posting
            WHERE txn_id >= ? GROUP BY txn_id
            HAVING MIN(weight_currency) <> MAX(weight_currency)
                OR SUM(weight % {F}) % {F} <> 0 OR SUM(weight / {F}) + SUM(weight % {F}) / {F} <> 0
                OR MIN(ts) <> MAX(ts) OR MIN(ts) <> (SELECT t.ts FROM txn t WHERE t.id = txn_id)""", (first_txn,))
        mixed, bad = [], None
        for txn_id, several in self.cursor.fetchall():
            if not several:
                bad = txn_id  # unbalanced, or a time not its entry's
                break
            mixed.append(txn_id)
        for start in range(0, len(mixed) if bad is None else 0, 500):
            part = mixed[start:start + 500]
            row = self._one(f"""SELECT p.txn_id FROM posting p JOIN txn t ON t.id = p.txn_id
                WHERE p.txn_id IN ({", ".join("?" * len(part))}) GROUP BY p.txn_id, p.weight_currency
                HAVING SUM(p.weight % {F}) % {F} <> 0 OR SUM(p.weight / {F}) + SUM(p.weight % {F}) / {F} <> 0
                    OR MIN(p.ts) <> MAX(p.ts) OR MIN(p.ts) <> MIN(t.ts) LIMIT 1""", part)
            if row is not None:
                bad = row[0]
                break
        if bad is None:  # an entry with no postings: fewer entries named by the new postings than written
            named = self._one("SELECT COUNT(DISTINCT txn_id) FROM posting WHERE txn_id >= ?", (first_txn,))[0]
            if named != self._one("SELECT COUNT(*) FROM txn WHERE id >= ?", (first_txn,))[0]:
                bad = self._one("""SELECT t.id FROM txn t WHERE t.id >= ?
                    AND NOT EXISTS (SELECT 1 FROM posting p WHERE p.txn_id = t.id) LIMIT 1""", (first_txn,))[0]
        if bad is not None:
            raise LedgerError(f"entry {bad} does not balance (or has no postings, or mixed times); nothing "
                              "was imported")
        row = self._one("SELECT txn_id FROM posting WHERE id >= ? AND +txn_id < ? LIMIT 1", (first_posting, first_txn))
        if row is not None:
            raise LedgerError(f"postings cannot be added to a booked transaction ({row[0]}); nothing was imported")

    def _maintain(self, sums: dict, lots: dict) -> None:
        """The maintained balances and lots (migration 0011) of a chunk's postings: what the
        dropped triggers would have added, summed as the rows were made (a row per account and
        commodity, and per lot, however many postings: a zero sum too, as the triggers leave it).
        Kept chunk by chunk, so the next chunk's lot check reads them. A sum is stored split
        (whole units and nanos, each truncated toward zero as SQLite divides); `db verify` holds
        both tables to the postings."""
        if sums:
            self.cursor.executemany(
                """INSERT INTO balance (account_id, commodity, whole, nanos) VALUES (?, ?, ?, ?)
                ON CONFLICT (account_id, commodity) DO UPDATE
                SET whole = balance.whole + excluded.whole, nanos = balance.nanos + excluded.nanos""",
                [(*key, *_split(units)) for key, units in sums.items()])
        if lots:
            self.cursor.executemany(
                """INSERT INTO lot_balance (account_id, commodity, cost, cost_currency, cost_date, cost_label,
                                         whole, nanos, first_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (account_id, commodity, cost, cost_currency, cost_date, cost_label) DO UPDATE
                SET whole = lot_balance.whole + excluded.whole, nanos = lot_balance.nanos + excluded.nanos,
                    first_ts = CASE WHEN excluded.first_ts < lot_balance.first_ts THEN excluded.first_ts
                                    ELSE lot_balance.first_ts END""",
                [(*key, *_split(units), first) for key, (units, first) in lots.items()])


def _conflict(place: int, key: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"entry {place} of the import: an entry with key {key!r} is already booked with "
                               "different content; nothing was imported")


def _split(units: int) -> tuple[int, int]:
    """A sum of nano-units as (whole, nanos), each truncated toward zero (as SQLite's / and %)."""
    whole, nanos = divmod(abs(units), F)
    return (whole, nanos) if units >= 0 else (-whole, -nanos)


def _on_insert(sql: str) -> bool:
    head = " ".join(sql.split()).upper().split(" BEGIN ")[0]
    return " INSERT ON " in head


def _reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0].replace("tradeledger: ", "")
