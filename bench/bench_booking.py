"""Booking against its ceiling, in one run: prints figures and ratios; not a test.

    python bench/bench_booking.py [--entries 20000] [--durable 2000] [--bulk N] [--out DIR] [--pg URL]

The ceiling is raw sqlite3 (or raw psycopg) writing the same rows into the same schema (the
migrations' tables, indexes and triggers): posting rows by executemany, then the header rows,
with rows computed before the clock starts. The ledger's side is `Ledger.book` / `book_many`
from `Transaction` records, so its figure includes validation, scaling, fingerprints, ids and the
idempotency key. The two run interleaved chunk by chunk (ours, then the ceiling, on the same
chunk of entries), so that load from other processes falls on both alike.

- durable: one entry per commit, synchronous=FULL (issue 15 target: ratio >= 0.8);
- batch: `book_many`, 1,000 entries per commit (target: ratio >= 0.8);
- bulk: `Ledger.import_entries` into an empty ledger (target: >= 15,000 entries/s), from
  `Transaction`s and from the JSON lines `import entries` reads, beside the same rows written by
  raw executemany into the same schema (its triggers fire per row, as they would for any raw
  writer), by raw sqlite3 as a bulk loader (triggers and posting indexes set aside, indexes built
  after, 64 rows to an INSERT and NULL bound as an integer the statement turns back, as the import
  binds them: the ceiling for a bulk import, which also checks every rule and keeps the balances),
  and, as a floor nobody can beat, into the same tables with no trigger and no index, bound the
  loader's way; each line with the load average (`/proc/loadavg`) before and after; for the
  ~10-posting fills and for 3-posting entries (a transfer with a fee: the entries behind the
  figures in shared/FACTS.md). On PostgreSQL beside raw psycopg executemany and raw COPY into
  the same schema.

Entries are the futures fills of bench_ledger.py (about 10 postings each) unless said.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_ledger import Generator, setup  # noqa: E402
from tradeledger.ledger import db  # noqa: E402
from tradeledger.ledger.bulk import NULL  # noqa: E402
from tradeledger.ledger.store import Ledger, _posting_row, fmt_ts  # noqa: E402

POSTING_SQL = ("INSERT INTO posting (txn_id, ts, account_id, commodity, units, cost, cost_currency, cost_date, "
               "cost_label, price, price_currency, weight, weight_currency) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
TXN_SQL = ("INSERT INTO txn (id, ts, kind, narration, links, meta, idem_key, fingerprint, reverses_id, booked_at) "
           "VALUES (?,?,?,?,?,?,?,?,?,?)")


def fresh(path: Path, url: str | None = None) -> Ledger:
    if url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    engine = db.make_engine(url, synchronous="FULL")
    db.upgrade(engine)
    ledger = Ledger(engine)
    setup(ledger)
    return ledger


def raw_rows(ledger: Ledger, entries, first_id: int = 1):
    """The rows the ceiling writes: exactly what the ledger stores for these entries."""
    with ledger.engine.connect() as c:
        ids = dict(c.exec_driver_sql("SELECT name, id FROM account").all())
    booked_at = fmt_ts(dt.datetime.now(dt.timezone.utc))
    out = []
    for n, txn in enumerate(entries, first_id):
        ts = fmt_ts(txn.time)
        postings = [tuple(_posting_row(n, ts, ids[p.account], p).values()) for p in txn.postings]
        header = (n, ts, txn.kind, txn.narration, ",".join(txn.links), json.dumps(dict(txn.meta), sort_keys=True),
                  txn.key, txn.fingerprint(), None, booked_at)
        out.append((postings, header))
    return out


class RawSqlite:
    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = WAL", "foreign_keys = ON", "synchronous = FULL", "cache_size = -65536",
                       "busy_timeout = 30000", "trusted_schema = ON"):
            self.conn.execute(f"PRAGMA {pragma}")

    def write(self, chunk) -> None:
        """Postings then headers (what the triggers require), a row to a statement."""
        cursor = self.conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(POSTING_SQL, [row for postings, _ in chunk for row in postings])
        cursor.executemany(TXN_SQL, [header for _, header in chunk])
        cursor.execute("COMMIT")

    def bare(self, chunk) -> None:
        """The loader's statements (`loader_rows`) into tables with no trigger and no index:
        headers first (each posting finds its entry at once: the deferred foreign key never waits)."""
        cursor = self.conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        many_rows(cursor, chunk)
        cursor.execute("COMMIT")

    def load(self, chunk) -> None:
        """The same rows as a bulk loader writes them (`loader_rows`), in one transaction: the
        INSERT triggers and the posting indexes dropped, headers then postings, indexes and
        triggers created again from their own SQL before COMMIT. No rule is checked and no balance
        kept: raw sqlite3's best."""
        cursor = self.conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        dropped = cursor.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
                                 "((type = 'trigger' AND tbl_name IN ('posting', 'txn') AND sql LIKE '%INSERT ON%')"
                                 " OR (type = 'index' AND tbl_name = 'posting'))").fetchall()
        for kind, name, _ in dropped:
            cursor.execute(f"DROP {kind.upper()} {name}")
        many_rows(cursor, chunk)
        for _, _, sql in dropped:
            cursor.execute(sql)
        cursor.execute("COMMIT")


def bound(sql: str, rows: list[tuple], per: int = 64) -> list[tuple[str, list]]:
    """The statements and parameters of `rows` as the bulk import binds them (ledger/bulk.py):
    `per` rows to an INSERT, and in the columns that hold a NULL, bulk.NULL turned back by NULLIF
    (Python's sqlite3 binds None through its adapter lookup, several times the cost of an
    integer). Made before the clock starts: what is timed is sqlite3 alone."""
    head, _ = sql.split(" VALUES ")
    nullable = {i for row in rows for i, value in enumerate(row) if value is None}
    width = len(rows[0]) if rows else 0
    one = "(" + ", ".join(f"NULLIF(?, {NULL})" if i in nullable else "?" for i in range(width)) + ")"
    rows = [tuple(NULL if value is None else value for value in row) for row in rows]
    full = len(rows) - len(rows) % per
    flat = itertools.chain.from_iterable
    return [(f"{head} VALUES {', '.join([one] * per)}", [tuple(flat(rows[start:start + per]))
                                                       for start in range(0, full, per)]),
            (f"{head} VALUES {one}", rows[full:])]


def loader_rows(chunk) -> list[tuple[str, list]]:
    """The loader's statements for a chunk: headers, then postings."""
    return bound(TXN_SQL, [header for _, header in chunk]) + bound(POSTING_SQL, [row for p, _ in chunk for row in p])


def many_rows(cursor, statements: list[tuple[str, list]]) -> None:
    for sql, params in statements:
        if params:
            cursor.executemany(sql, params)


class RawPostgres:
    def __init__(self, url: str):
        import psycopg
        import sqlalchemy as sa

        self.conn = psycopg.connect(sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False))

    def write(self, chunk) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(POSTING_SQL.replace("?", "%s"), [row for postings, _ in chunk for row in postings])
            cursor.executemany(TXN_SQL.replace("?", "%s"), [header for _, header in chunk])
        self.conn.commit()

    def copy(self, chunk) -> None:
        """The same rows by COPY, postings then headers (the triggers fire as for any writer)."""
        with self.conn.cursor() as cursor:
            with cursor.copy(f"COPY posting ({POSTING_SQL.split('(')[1].split(')')[0]}) FROM STDIN") as copy:
                for postings, _ in chunk:
                    for row in postings:
                        copy.write_row(row)
            with cursor.copy(f"COPY txn ({TXN_SQL.split('(')[1].split(')')[0]}) FROM STDIN") as copy:
                for _, header in chunk:
                    copy.write_row(header)
        self.conn.commit()


def interleaved(entries, per_commit: int, ours, ceiling, rows) -> tuple[float, float]:
    """Seconds for ours and for the ceiling over the same chunks, alternating."""
    ours_s = ceiling_s = 0.0
    for start in range(0, len(entries), per_commit):
        t0 = time.perf_counter()
        ours(entries[start:start + per_commit])
        t1 = time.perf_counter()
        ceiling(rows[start:start + per_commit])
        t2 = time.perf_counter()
        ours_s, ceiling_s = ours_s + t1 - t0, ceiling_s + t2 - t1
    return ours_s, ceiling_s


def report(name: str, n: int, ours_s: float, ceiling_s: float, target: float | None = None) -> None:
    ratio = ceiling_s / ours_s
    verdict = "" if target is None else ("  met" if ratio >= target else f"  MISSED (target {target})")
    print(f"  {name:<34} ours {n / ours_s:9,.0f}/s   ceiling {n / ceiling_s:9,.0f}/s   ratio {ratio:4.2f}{verdict}")


def run_sqlite(out: Path, n_batch: int, n_durable: int, n_bulk: int | None = None) -> None:
    gen = Generator()
    entries = list(gen.entries(n_batch))
    print(f"SQLite in {out} ({len(entries):,} batch entries, {gen.postings / len(entries):.1f} postings each)")

    # batch: 1,000 per commit, both ledgers growing side by side
    ours, theirs = fresh(out / "ours.db"), fresh(out / "ceiling.db")
    rows = raw_rows(theirs, entries)
    raw = RawSqlite(out / "ceiling.db")
    ours_s, ceiling_s = interleaved(entries, 1000, ours.book_many, raw.write, rows)
    report("batch, book_many 1,000/commit", len(entries), ours_s, ceiling_s, 0.8)

    # durable: one per commit, FULL, onto those ledgers
    more = list(gen.entries(n_durable))
    rows = raw_rows(theirs, more, first_id=len(entries) + 1)
    ours_s, ceiling_s = interleaved(more, 1, lambda chunk: ours.book(chunk[0]), raw.write, rows)
    report("durable, book 1/commit (FULL)", len(more), ours_s, ceiling_s, 0.8)
    raw.conn.close()
    ours.engine.dispose(), theirs.engine.dispose()

    bulk = entries if n_bulk is None else list(Generator().entries(n_bulk))
    for shape, bulk_entries in (("fills", bulk), ("3-posting", three_posting(len(bulk) * 3))):
        run_bulk_sqlite(out, shape, bulk_entries)


def three_posting(n: int) -> list:
    """n entries of three postings: cash against income, less a fee."""
    from decimal import Decimal as D

    from bench_ledger import CASH, STRATEGIES
    from tradeledger.ledger.model import Posting, Transaction

    start = dt.datetime(2025, 1, 2, 14, 30, tzinfo=dt.timezone.utc)
    return [Transaction(start + dt.timedelta(seconds=i), "transfer", f"transfer {i}", (
        Posting(CASH, D(i % 997) + D("0.25") - D("1.24"), "USD"),
        Posting(f"Expenses:Commissions:{STRATEGIES[i % 4]}", D("1.24"), "USD"),
        Posting(f"Income:Trading:{STRATEGIES[i % 4]}", -(D(i % 997) + D("0.25")), "USD")),
        meta=(("n", str(i)),), key=f"transfer:{i}") for i in range(n)]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_bulk_sqlite(out: Path, shape: str, entries: list) -> None:
    """The bulk import into an empty ledger, from `Transaction`s and from the JSON lines `import
    entries` reads; beside raw sqlite3 writing the same rows into the same schema three ways: as
    any writer does (its triggers fire per row), as a bulk loader does (triggers and indexes set
    aside in its transaction, indexes built after, all put back before COMMIT: the ceiling of a
    bulk import), and into the same tables with no trigger and no index (a floor nobody can beat)."""
    from tradeledger.ledger import jsonl

    names = ("bulk", "json", "file", "ceiling", "loader", "bare")
    dbs = {name: fresh(out / f"{name}-{shape}.db") for name in names}
    rows = raw_rows(dbs["ceiling"], entries)
    lines = [jsonl.entry_line(txn) for txn in entries]
    statements = loader_rows(rows)
    raw = {name: RawSqlite(out / f"{name}-{shape}.db") for name in ("ceiling", "loader", "bare")}
    for name, kind in raw["bare"].conn.execute("SELECT name, type FROM sqlite_master WHERE tbl_name IN "
                                               "('posting', 'txn') AND type IN ('trigger', 'index') "
                                               "AND sql IS NOT NULL").fetchall():
        raw["bare"].conn.execute(f"DROP {kind.upper()} {name}")
    n = len(entries)
    seconds = {}
    load = _load()
    t0 = time.perf_counter()
    result = dbs["bulk"].import_entries(entries)
    seconds["bulk"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from_json = dbs["json"].import_entries(jsonl.EntriesFile(lines).entries(), expected=len(lines))
    seconds["json"] = time.perf_counter() - t0
    source_file = out / f"entries-{shape}.jsonl"
    source_file.write_text("".join(line + "\n" for line in lines))
    with open(source_file, encoding="utf-8") as handle:  # `import entries FILE` with one stager beside it
        t0 = time.perf_counter()
        source = jsonl.EntriesFile(handle, name=source_file.name)
        from_file = dbs["file"].import_entries(source.entries(), expected=len(lines),
                                               stage_from=source.stage_source(), stagers=1)
        seconds["file"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw["ceiling"].write(rows)
    seconds["ceiling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw["loader"].load(statements)
    seconds["loader"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw["bare"].bare(statements)
    seconds["bare"] = time.perf_counter() - t0
    assert result.booked == from_json.booked == from_file.booked == n
    postings = sum(len(p) for p, _ in rows) / n
    rate = {name: n / s for name, s in seconds.items()}
    print(f"  bulk {shape} ({n:,} entries, {postings:.1f} postings each), entries/s (load {load} -> {_load()}):")
    print(f"    import_entries {rate['bulk']:9,.0f}   from JSON lines {rate['json']:9,.0f}   "
          f"(target 15,000/s: {'met' if rate['bulk'] >= 15000 else 'MISSED'}; from JSON "
          f"{'met' if rate['json'] >= 15000 else 'MISSED'})")
    print(f"    from a JSON-lines file, one stager beside the writer {rate['file']:9,.0f} "
          f"(target 15,000/s: {'met' if rate['file'] >= 15000 else 'MISSED'}; ratio to the bulk loader "
          f"{seconds['loader'] / seconds['file']:4.2f}; {os.cpu_count()} cores)")
    print(f"    raw sqlite3, same schema: per row {rate['ceiling']:9,.0f} (ratio {seconds['ceiling'] / seconds['bulk']:4.2f});"
          f"  as a bulk loader {rate['loader']:9,.0f} (ratio {seconds['loader'] / seconds['bulk']:4.2f}, "
          f"from JSON {seconds['loader'] / seconds['json']:4.2f});  bare tables {rate['bare']:9,.0f} "
          f"(ratio {seconds['bare'] / seconds['bulk']:4.2f})")
    for conn in raw.values():
        conn.conn.close()
    for ledger in dbs.values():
        ledger.engine.dispose()


def run_postgres(url: str, n_batch: int, n_durable: int) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(url)
    schemas = ["tl_bench_ours", "tl_bench_ceiling"]
    with admin.begin() as c:
        for schema in schemas:
            c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            c.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def schema_url(schema):
        base = sa.engine.make_url(url)
        return base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)

    try:
        gen = Generator()
        entries = list(gen.entries(n_batch))
        print(f"PostgreSQL ({len(entries):,} batch entries)")
        ours, theirs = fresh(None, schema_url(schemas[0])), fresh(None, schema_url(schemas[1]))
        rows = raw_rows(theirs, entries)
        raw = RawPostgres(schema_url(schemas[1]))
        ours_s, ceiling_s = interleaved(entries, 1000, ours.book_many, raw.write, rows)
        report("batch, book_many 1,000/commit", len(entries), ours_s, ceiling_s, 0.8)
        more = list(gen.entries(n_durable))
        rows = raw_rows(theirs, more, first_id=len(entries) + 1)
        ours_s, ceiling_s = interleaved(more, 1, lambda chunk: ours.book(chunk[0]), raw.write, rows)
        report("durable, book 1/commit", len(more), ours_s, ceiling_s, 0.8)
        raw.conn.close()
        ours.engine.dispose(), theirs.engine.dispose()
        with admin.begin() as c:
            for schema in schemas:
                c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                c.exec_driver_sql(f"CREATE SCHEMA {schema}")
        ours, theirs = fresh(None, schema_url(schemas[0])), fresh(None, schema_url(schemas[1]))
        rows = raw_rows(theirs, entries)
        raw = RawPostgres(schema_url(schemas[1]))
        t0 = time.perf_counter()
        ours.import_entries(entries)
        t1 = time.perf_counter()
        raw.write(rows)
        t2 = time.perf_counter()
        report("bulk, import_entries (empty ledger)", len(entries), t1 - t0, t2 - t1)
        with admin.begin() as c:
            c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schemas[1]} CASCADE")
            c.exec_driver_sql(f"CREATE SCHEMA {schemas[1]}")
        theirs = fresh(None, schema_url(schemas[1]))
        raw = RawPostgres(schema_url(schemas[1]))
        t2 = time.perf_counter()
        raw.copy(rows)
        t3 = time.perf_counter()
        print(f"  {'':34} raw psycopg COPY into the same schema: {len(entries) / (t3 - t2):,.0f}/s "
              f"(ratio {(t3 - t2) / (t1 - t0):4.2f})")
        raw.conn.close()
        ours.engine.dispose(), theirs.engine.dispose()
    finally:
        with admin.begin() as c:
            for schema in schemas:
                c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=20_000, help="fills booked in batches")
    parser.add_argument("--durable", type=int, default=2_000, help="fills booked one per commit")
    parser.add_argument("--bulk", type=int, default=None, help="fills in the bulk import (default: --entries)")
    parser.add_argument("--out", type=Path, default=None, help="directory for the SQLite files")
    parser.add_argument("--pg", default=None, help="also on PostgreSQL at this SQLAlchemy URL")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-booking-"))
    out.mkdir(parents=True, exist_ok=True)
    run_sqlite(out, args.entries, args.durable, args.bulk)
    if args.pg:
        run_postgres(args.pg, args.entries, args.durable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
