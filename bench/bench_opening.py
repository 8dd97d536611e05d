"""Opening benchmark: prints figures; not a test.

    python bench/bench_opening.py [--futures 50] [--shares 150] [--db-url URL]

An account that already holds F futures and S shares (in USD, EUR and GBP) and cash in three
currencies, on the embedded simulated broker. Times, in one run: the opening (snapshot, the
broker's executions, ONE entry for every position and currency, the marks), the reconciliation
right after it (clean), and a second opening (a replay: it finds the recorded opening). The
figures that matter are ratios: the opening against the reconciliation of the same account.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

from tradeledger.broker.base import Contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trust.opening import open_session_account
from tradeledger.engine.trust.reconcile import reconcile_session

CURRENCIES = ("USD", "EUR", "GBP")
MONTHS = "FGHJKMNQUVXZ"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--futures", type=int, default=50)
    parser.add_argument("--shares", type=int, default=150)
    parser.add_argument("--db-url", default=None)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="bench-opening-"))
    url, drop = _own_schema(args.db_url)
    try:
        return _run(args, home, url)
    finally:
        drop()


def _own_schema(url: str | None):
    """On PostgreSQL, a schema of the benchmark's own (dropped afterwards): a shared server's
    public schema is nobody's to fill."""
    if not url or not url.startswith("postgresql"):
        return url, lambda: None
    import uuid

    import sqlalchemy as sa

    schema = f"bench_opening_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop():
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    own = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return own.render_as_string(hide_password=False), drop


def _run(args, home: Path, url: str | None) -> int:
    env = init_environment(home, "paper", "sim", None, db_url=url)
    session = Session(env)
    exchange = session.exchange()
    for i in range(args.futures):
        ccy = CURRENCIES[i % 3]
        k = Contract(f"F{i:03d}{MONTHS[i % 12]}27", "FUT", f"F{i:03d}", "X", ccy, D(10), f"2027{i % 12 + 1:02d}")
        exchange.transfer_in(k, D(i % 7 + 1) * (1 if i % 2 else -1), D(1000) + i)
    for i in range(args.shares):
        k = Contract(f"S{i:03d}", "STK", f"S{i:03d}", "X", CURRENCIES[i % 3])
        exchange.transfer_in(k, D(10 + i), D(100) + i, cost=D("95.25") + i)
    for ccy in CURRENCIES:
        exchange.deposit(ccy, D(1_000_000))
    figures = {}
    t = time.perf_counter()
    opening = open_session_account(session, "bench")
    figures["opening"] = time.perf_counter() - t
    postings = len(env.ledger.get(opening.txn_id).postings)
    assert opening.created and postings >= args.futures + args.shares
    t = time.perf_counter()
    result = reconcile_session(session)
    figures["reconcile after it"] = time.perf_counter() - t
    assert result.clean, result.as_json()
    t = time.perf_counter()
    again = open_session_account(session, "bench")
    figures["opening replayed"] = time.perf_counter() - t
    assert not again.created
    session.close()
    base = figures["reconcile after it"]
    print(f"opening of {args.futures} futures + {args.shares} shares in 3 currencies "
          f"({env.engine.url.get_backend_name()}), one entry of {postings} postings:")
    for name, seconds in figures.items():
        print(f"  {name:<20} {seconds * 1000:8.1f} ms   {seconds / base:5.2f} x reconcile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
