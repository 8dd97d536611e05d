"""Reconciliation benchmark: prints figures; not a test.

    python bench/bench_reconcile.py [--positions 10000] [--executions 1000] [--breaks 50] [--db-url URL]

(on PostgreSQL it works in a schema of its own and drops it afterwards)

Builds a ledger (SQLite file by default) holding N futures contracts, each split between two of
four strategies (two zero-cost postings per contract plus a variation-margin cash leg), with a
fill row per contract; then a broker snapshot of the same N positions, `--breaks` of them off by
one, and a broker execution list of the last `--executions` fills. It reports:

- queries: `ledger_view` as of the snapshot's time (positions, cash, ever-held, fills), median;
- comparison: the pure `compare` over the view, the snapshot and the executions, median;
- storing the snapshot (`record_snapshot`, one transaction);
- a whole `reconcile` against a broker that returns that snapshot: snapshot stored, executions
  replayed through engine.fills (all already booked), view, compare, breaks raised and locked.

Target (issue 4): queries + comparison <= 200 ms for 10,000 broker positions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

from tradeledger.engine.context import Books, Context
from tradeledger.engine.setup.environment import Settings
from tradeledger.broker.base import AccountSnapshot, BrokerPosition, Contract, Execution
from tradeledger.engine import tables
from tradeledger.engine.trust.reconcile import compare, ledger_view, reconcile
from tradeledger.engine.trust.snapshots import record_snapshot
from tradeledger.ledger import db
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.numbers import to_scaled
from tradeledger.ledger.store import Commodity, Ledger, fmt_ts

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
ACCOUNT = "DU1234567"
STRATEGIES = ("A", "B", "C", "D")
EPOCH = dt.date(2000, 1, 1)


def contract(i: int) -> Contract:
    return Contract(f"X{i:05d}Z26", "FUT", f"X{i:05d}", "CME", "USD", D(5), "202612")


def build(engine, n: int) -> tuple[Ledger, Chart, list[tuple[Contract, D, str, dt.datetime]]]:
    ledger, chart = Ledger(engine), Chart(ACCOUNT)
    fills = []
    with engine.begin() as conn:
        for name in [chart.cash, chart.unattributed, chart.opening_balances] + \
                [chart.holdings(s) for s in STRATEGIES] + [chart.trading(s) for s in STRATEGIES]:
            ledger.open_account(Account(name, EPOCH), conn)
        ledger.ensure_commodity(Commodity("USD", "currency", None, D(1), EPOCH), conn)
        conn.execute(sa_insert_commodities(), [dict(name=contract(i).code, kind="future", currency="USD",
                                                    multiplier="5", first_date=EPOCH.isoformat()) for i in range(n)])
    txns = []
    for i in range(n):
        k, when = contract(i), T0 + dt.timedelta(seconds=i)
        a, b = STRATEGIES[i % 4], STRATEGIES[(i + 1) % 4]
        qty_a, qty_b = D(1 + i % 3), D(-(i % 2))
        postings = [Posting(chart.holdings(a), qty_a, k.code, Cost(D(0), "USD"))]
        if qty_b:
            postings.append(Posting(chart.holdings(b), qty_b, k.code, Cost(D(0), "USD")))
        postings += [Posting(chart.cash, D("12.50"), "USD"), Posting(chart.trading(a), D("-12.50"), "USD")]
        txns.append(Transaction(when, "fill", f"fill {i}", tuple(postings), key=f"fill:{ACCOUNT}:E{i:08d}"))
        fills.append((k, qty_a + qty_b, f"E{i:08d}", when))
    for start in range(0, n, 1000):
        booked = ledger.book_many(txns[start:start + 1000])
        with engine.begin() as conn:
            conn.execute(tables.fill.insert(), [dict(
                account=ACCOUNT, exec_key=key, exec_id=key + ".01", order_id=None, order_ref="", contract=k.code,
                side="BUY" if q >= 0 else "SELL", quantity=to_scaled(abs(q) or D(1)), price=to_scaled(D(100)),
                time=fmt_ts(when), commission=0, commission_currency="USD", txn_id=bk.id)
                for (k, q, key, when), bk in zip(fills[start:start + 1000], booked)])
    return ledger, chart, fills


def sa_insert_commodities():
    from tradeledger.ledger import schema

    return schema.commodity.insert()


def snapshot_of(fills, breaks: int, taken_at: dt.datetime) -> AccountSnapshot:
    positions = []
    for i, (k, qty, _, _) in enumerate(fills):
        broker_qty = qty + (1 if i < breaks else 0)
        if broker_qty:
            positions.append(BrokerPosition(ACCOUNT, k, broker_qty, D(500)))
    return AccountSnapshot(ACCOUNT, taken_at, tuple(positions), (("USD", D(0)),),
                           unsettled_pnl=(("USD", D("12.50") * len(fills)),))


def executions_of(fills, m: int) -> list[Execution]:
    out = []
    for k, qty, key, when in fills[-m:]:
        out.append(Execution(key + ".01", ACCOUNT, k, "BUY" if qty >= 0 else "SELL", abs(qty) or D(1), D(100), when,
                             commission=D(0), commission_currency="USD"))
    return out


class FixedBroker:
    account = ACCOUNT

    def __init__(self, snap, executions):
        self.snap, self.execs = snap, executions

    def snapshot(self):
        return self.snap

    def executions(self, since=None):
        return list(self.execs)


def median_ms(fn, runs: int = 7) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=10_000)
    parser.add_argument("--executions", type=int, default=1_000)
    parser.add_argument("--breaks", type=int, default=50)
    parser.add_argument("--db-url", default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    url = args.db_url or f"sqlite:///{tmp / 'ledger.db'}"
    schema = None
    if url.startswith("postgresql"):  # a schema of its own, dropped afterwards: never the database's own tables
        import uuid

        import sqlalchemy as sa

        schema, admin = f"bench_{uuid.uuid4().hex[:10]}", sa.create_engine(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False)
    engine = db.make_engine(url)
    db.upgrade(engine)
    t = time.perf_counter()
    ledger, chart, fills = build(engine, args.positions)
    print(f"setup: {args.positions:,} contracts, {ledger.count()[1]:,} postings, {len(fills):,} fills "
          f"in {time.perf_counter() - t:.1f} s ({engine.dialect.name})")
    taken_at = T0 + dt.timedelta(days=1)
    snap = snapshot_of(fills, args.breaks, taken_at)
    execs = executions_of(fills, args.executions)

    window = min(e.time for e in execs)

    def queries():
        with read_connection(engine) as conn:
            return ledger_view(conn, Books(ledger, chart), taken_at, window)

    q_ms, view = median_ms(queries)
    c_ms, comparison = median_ms(lambda: compare(view, snap, execs))
    assert len([b for b in comparison.breaks if b.kind == "position"]) == args.breaks, comparison.breaks[:3]
    print(f"queries (ledger_view as of the snapshot): {q_ms:8.1f} ms")
    print(f"comparison (pure compare):                {c_ms:8.1f} ms")
    print(f"queries + comparison:                     {q_ms + c_ms:8.1f} ms  (target <= 200 ms) "
          f"{'OK' if q_ms + c_ms <= 200 else 'OVER'}")
    t = time.perf_counter()
    with engine.begin() as conn:
        record_snapshot(conn, snap, taken_at)
    print(f"store the snapshot (one transaction):     {(time.perf_counter() - t) * 1000:8.1f} ms")
    ctx = Context(tmp, Settings("paper", "sim", ACCOUNT), engine, ledger)
    t = time.perf_counter()
    result = reconcile(ctx, FixedBroker(snap, execs), now=taken_at)
    first = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    result = reconcile(ctx, FixedBroker(snap, execs), now=taken_at)
    second = (time.perf_counter() - t) * 1000
    print(f"whole reconcile, first ({len(result.breaks)} breaks raised + locked): {first:8.1f} ms")
    print(f"whole reconcile, again (breaks deduplicated):        {second:8.1f} ms")
    engine.dispose()
    if schema:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


if __name__ == "__main__":
    main()
