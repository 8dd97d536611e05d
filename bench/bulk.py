"""A big SQLite ledger made fast, for the benchmarks that need one (10M postings); not a test.

    python bench/bulk.py PATH --postings 10000000 [--verify]

`Ledger.book_many` books about 3,000 entries a second here (the database checks every row); a
10M-posting ledger that way takes an hour. This writes the same rows the booking fast path
writes (`ledger/rows.prepare`, bench_ledger.py's futures fills and settlements, about 10 postings
an entry), but with the posting and header triggers and indexes set aside while it writes: raw
executemany, then the indexes and triggers created again from their own SQL, then the maintained
balances and lots summed once from the postings (migration 0011's own backfill). The result is
checked by `db verify`'s own code (`ledger.verify.verify`: integrity, every entry re-summed,
balances re-derived, links) and `maintained.verify_balances` with --verify (minutes at 10M).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_ledger import ACCT, CONTRACTS, STRATEGIES, Generator, holdings, setup  # noqa: E402
from tradeledger.ledger.model import Account  # noqa: E402
from tradeledger.ledger import db  # noqa: E402
from tradeledger.ledger.rows import fingerprint, prepare  # noqa: E402
from tradeledger.ledger.store import Commodity, Ledger, fmt_ts  # noqa: E402

UTC = dt.timezone.utc
POSTING = ("INSERT INTO posting (txn_id, ts, account_id, commodity, units, cost, cost_currency, cost_date, "
           "cost_label, price, price_currency, weight, weight_currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
HEADER = ("INSERT INTO txn (id, ts, kind, narration, links, meta, idem_key, fingerprint, reverses_id, booked_at) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def make(path: Path, postings: int | None = None, entries: int | None = None, batch: int = 20000,
         progress=print, home: Path | None = None) -> tuple[int, int]:
    """A ledger at `path` (made anew) of about `postings` postings, or exactly `entries` entries;
    returns (entries, postings). With `home`, it is made as the database of a paper environment
    there (`init_environment` first: its identity, config and base accounts)."""
    postings = postings if postings is not None else 10**15
    entries = entries if entries is not None else 10**15
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    if home is not None:
        from tradeledger.engine.setup.environment import init_environment

        init_environment(home, "paper", "sim", ACCT, db_url=f"sqlite:///{path}").engine.dispose()
    engine = db.make_engine(f"sqlite:///{path}", synchronous="OFF")
    db.upgrade(engine)
    ledger = Ledger(engine)
    known = {account.name for account in ledger.accounts()}
    if not known:
        setup(ledger)
    else:  # an environment's base accounts (its cash, USD) are open already: the strategies' only
        with engine.begin() as conn:
            for s in STRATEGIES:
                for name, booking in ((holdings(s), "FIFO"), (f"Income:Trading:{s}", "STRICT"),
                                      (f"Expenses:Commissions:{s}", "STRICT")):
                    ledger.open_account(Account(name, dt.date(2025, 1, 1), booking=booking), conn)
            for contract, (multiplier, _, _) in CONTRACTS.items():
                ledger.ensure_commodity(Commodity(contract, "future", "USD", multiplier, dt.date(2025, 1, 1)), conn)
    engine.dispose()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("PRAGMA synchronous = OFF")
    raw.execute("PRAGMA cache_size = -262144")
    # Foreign keys off while writing: with the posting index on txn_id set aside, each header's
    # deferred key check would scan every posting. `db verify` looks for orphans afterwards.
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute("PRAGMA trusted_schema = ON")
    accounts = dict((name, i) for i, name in raw.execute("SELECT id, name FROM account"))
    aside = raw.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN ('posting', 'txn') "
                        "AND type IN ('index', 'trigger') AND sql IS NOT NULL").fetchall()
    raw.execute("BEGIN")
    for kind, name, _ in aside:
        raw.execute(f"DROP {kind.upper()} {name}")
    raw.execute("COMMIT")
    started, written, txn_id = time.perf_counter(), 0, 0
    booked_at = fmt_ts(dt.datetime.now(UTC))
    stream = Generator().entries(10**12)
    while written < postings and txn_id < entries:
        rows, headers = [], []
        for txn in stream:
            ready = prepare(txn)
            txn_id += 1
            ts = fmt_ts(txn.time)
            rows += [(txn_id, ts, accounts[r[0]], *r[1:]) for r in ready.postings]
            headers.append((txn_id, ts, txn.kind, txn.narration, ",".join(txn.links),
                            json.dumps(dict(txn.meta), sort_keys=True) if txn.meta else "{}", txn.key,
                            fingerprint(txn, ready), txn.reverses, booked_at))
            if len(headers) >= batch or written + len(rows) >= postings or txn_id >= entries:
                break
        raw.execute("BEGIN")
        raw.executemany(POSTING, rows)
        raw.executemany(HEADER, headers)
        raw.execute("COMMIT")
        written += len(rows)
        progress(f"  {written:,} postings, {txn_id:,} entries ({time.perf_counter() - started:.0f} s)")
    progress("  indexes and triggers again, balances and lots summed once")
    raw.execute("BEGIN")
    for kind, _, sql in sorted(aside, key=lambda a: a[0] != "index"):
        raw.execute(sql)
    backfill = importlib.import_module("tradeledger.ledger.migrations.versions.0011_balances").BACKFILL
    raw.execute("DELETE FROM balance")
    raw.execute("DELETE FROM lot_balance")
    for statement in backfill:
        raw.execute(statement)
    raw.execute("COMMIT")
    raw.execute("ANALYZE")
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    progress(f"  made in {time.perf_counter() - started:.0f} s")
    return txn_id, written


def check(path: Path) -> tuple[bool, str]:
    """`db verify`'s checks and the maintained balances' own, on the made ledger."""
    from tradeledger.ledger.maintained import verify_balances
    from tradeledger.ledger.verify import verify

    engine = db.make_engine(f"sqlite:///{path}")
    try:
        result = verify(Ledger(engine))
        differences = verify_balances(engine)
    finally:
        engine.dispose()
    ok = result.ok and not differences
    return ok, (f"db verify: {'ok' if result.ok else 'FAILED'} ({result.entries:,} entries, {result.postings:,} "
                f"postings{', ' + str(result.findings[:3]) if result.findings else ''}); maintained balances: "
                f"{'exact' if not differences else f'{len(differences)} differences'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--postings", type=int, default=None)
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args(argv)
    make(args.path, args.postings, args.entries)
    if args.verify:
        ok, text = check(args.path)
        print(text)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
