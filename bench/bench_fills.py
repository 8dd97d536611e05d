"""Fill sync through IBBroker (ib_async) and the simulated gateway, at small and large history,
each beside its ceiling in the same run: prints figures and ratios; not a test.

    python bench/bench_fills.py [--executions 10000] [--history 100000] [--contracts 100]

1. Small history: the gateway's exchange holds M executions of the day (written straight into
   its file, attributed round-robin to recorded orders); a fresh IBBroker connects and
   `sync_fills` books them (chunks of 500 as chunks: `engine/trading/fill_chunk.py`).
2. The ledger is given a long history: H entries (four postings each) on the same holdings,
   income and cash accounts and the same contracts, by the bulk import (`Ledger.import_entries`).
3. Large history: M more executions, synced the same way.

The ceiling of each sync is raw sqlite3 writing the same rows into the same schema: a copy of the
database taken just before the sync (SQLite's backup API) receives, by executemany, exactly the
rows the sync wrote (entries, postings with their balance triggers, fill rows, allocations, the
orders' new filled quantities and the marks), read back from the ledger after it. The ratio is
ceiling time / sync time; the cost of a fill at large history over its cost at small history says
whether it grows with the ledger, beside the same growth for the raw writer (a bigger database's
indexes cost the database itself more per row). The WAL is checkpointed after the history import,
as a ledger that grew over months has long been.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import sqlite3
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_ib import ACCOUNT, record, setup, write_executions  # noqa: E402
from tradeledger.broker.ibsim import IBSimServer  # noqa: E402
from tradeledger.engine.trading.fills import sync_fills  # noqa: E402
from tradeledger.ledger.db import read_connection  # noqa: E402
from tradeledger.ledger.model import Cost, Posting, Transaction  # noqa: E402
from tradeledger.ledger.verify import verify  # noqa: E402

def sync_once(exchange, session, m: int, refs_codes) -> tuple[float, int]:
    from tradeledger.broker.ib import IBBroker
    from tradeledger.engine.setup.contracts_ib import ib_contract_namer

    write_executions(exchange.path, refs_codes, m)
    server = IBSimServer(exchange, poll_interval=0.05).start()  # a gateway started now publishes them
    broker = IBBroker(port=server.port, client_id=3, account=ACCOUNT, timeout=60, request_timeout=120,
                      contract_namer=ib_contract_namer(session.config))
    try:
        broker.connect()
        env = session
        start = time.perf_counter()
        report = sync_fills(env, broker)
        seconds = time.perf_counter() - start
        assert len(report.booked) == m, (len(report.booked), report.failed[:3])
    finally:
        broker.close()
        server.stop()
    return seconds, m


def load() -> str:
    """The machine's load averages (1, 5, 15 min): the ratios are what to read, but only beside them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def orders_of(session, contracts, run: int, m: int) -> list[tuple[str, str]]:
    """A run of new orders, one per contract, big enough for every fill: (orderRef, contract).
    Each phase fills orders of its own, as a ledger's history is made of orders long filled: the
    cost of a fill then measures the ledger's size, not how many fills its order already had (a
    chunk reads what its orders already allocated: the sum over their fills so far)."""
    record(session, run, contracts, 2 * m)
    with read_connection(session.engine) as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT order_ref, contract FROM broker_order WHERE run_id = ? ORDER BY id", (run,))]


def marks_of(path: Path) -> tuple[int, int, int]:
    db = sqlite3.connect(path)
    try:
        return tuple(db.execute(f"SELECT COALESCE(MAX({c}), 0) FROM {t}").fetchone()[0]
                     for t, c in (("txn", "id"), ("posting", "id"), ("fill", "id")))
    finally:
        db.close()


def ceiling(ledger_path: Path, snapshot: Path, before: tuple[int, int, int]) -> float:
    """Seconds for raw sqlite3 to write, into the snapshot taken before the sync, the rows the sync wrote."""
    src = sqlite3.connect(ledger_path)
    txn_id, posting_id, fill_id = before
    rows = {
        "posting": src.execute("SELECT * FROM posting WHERE id > ? ORDER BY id", (posting_id,)).fetchall(),
        "txn": src.execute("SELECT * FROM txn WHERE id > ? ORDER BY id", (txn_id,)).fetchall(),
        "fill": src.execute("SELECT * FROM fill WHERE id > ? ORDER BY id", (fill_id,)).fetchall(),
        "fill_alloc": src.execute("SELECT * FROM fill_alloc WHERE fill_id > ?", (fill_id,)).fetchall(),
        "broker_order": src.execute("SELECT filled, state, id FROM broker_order WHERE id IN "  # those filled now
                                    "(SELECT order_id FROM fill WHERE id > ?)", (fill_id,)).fetchall(),
        "position_mark": src.execute("SELECT * FROM position_mark").fetchall(),
    }
    src.close()
    dst = sqlite3.connect(snapshot, isolation_level=None)
    for pragma in ("journal_mode = WAL", "foreign_keys = ON", "synchronous = FULL", "cache_size = -65536",
                   "trusted_schema = ON"):
        dst.execute(f"PRAGMA {pragma}")
    # Accounts and commodities the sync opened on its first fills: there before the clock starts.
    src = sqlite3.connect(ledger_path)
    have = {r[0] for r in dst.execute("SELECT id FROM account")}
    new_accounts = [r for r in src.execute("SELECT * FROM account") if r[0] not in have]
    have = {r[0] for r in dst.execute("SELECT name FROM commodity")}
    new_commodities = [r for r in src.execute("SELECT * FROM commodity") if r[0] not in have]
    src.close()
    with dst:
        dst.execute("BEGIN")
        if new_accounts:
            dst.executemany(f"INSERT INTO account VALUES ({', '.join('?' * len(new_accounts[0]))})", new_accounts)
        if new_commodities:
            dst.executemany(f"INSERT INTO commodity VALUES ({', '.join('?' * len(new_commodities[0]))})",
                            new_commodities)
    n = {t: len(r[0]) if r else 0 for t, r in rows.items()}
    by_txn: dict[int, list] = {}
    for r in rows["posting"]:
        by_txn.setdefault(r[1], []).append(r)
    fills_by_txn = {r[13]: r for r in rows["fill"]}
    allocs: dict[int, list] = {}
    for r in rows["fill_alloc"]:
        allocs.setdefault(r[0], []).append(r)
    batches = []  # as the sync commits: one transaction per 500 entries, rows computed before the clock
    for chunk in range(0, len(rows["txn"]), 500):
        headers = rows["txn"][chunk:chunk + 500]
        fills = [fills_by_txn[h[0]] for h in headers if h[0] in fills_by_txn]
        batches.append(([p for h in headers for p in by_txn[h[0]]], headers, fills,
                         [a for f in fills for a in allocs[f[0]]]))
    start = time.perf_counter()
    for postings, headers, fills, fill_allocs in batches:
        dst.execute("BEGIN IMMEDIATE")
        dst.executemany(f"INSERT INTO posting VALUES ({', '.join('?' * n['posting'])})", postings)
        dst.executemany(f"INSERT INTO txn VALUES ({', '.join('?' * n['txn'])})", headers)
        dst.executemany(f"INSERT INTO fill VALUES ({', '.join('?' * n['fill'])})", fills)
        dst.executemany("INSERT INTO fill_alloc VALUES (?, ?, ?)", fill_allocs)
        dst.executemany("UPDATE broker_order SET filled = ?, state = ? WHERE id = ?", rows["broker_order"])
        dst.executemany("INSERT OR REPLACE INTO position_mark VALUES (?, ?, ?, ?)", rows["position_mark"])
        dst.execute("COMMIT")
    seconds = time.perf_counter() - start
    dst.close()
    return seconds


def snapshot_of(path: Path, to: Path) -> None:
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    src.backup(dst)
    src.close(), dst.close()


def history(session, contracts, h: int) -> float:
    """h entries on the holdings, income and cash accounts the fills use, netting to nothing."""
    chart, ledger = session.chart, session.ledger
    holdings, income, cash = chart.holdings("Bench"), chart.trading("Bench"), f"{chart.root}:Cash"
    zero = Cost(D(0), "USD")
    start = dt.datetime(2020, 1, 2, 14, 30, tzinfo=dt.timezone.utc)

    def entries():
        for k in range(h):
            code = contracts[k % len(contracts)].code
            amount = D(k % 97 + 1) / 4
            yield Transaction(start + dt.timedelta(seconds=k), "history", f"history {k}", (
                Posting(holdings, D(1), code, zero), Posting(holdings, D(-1), code, zero),
                Posting(cash, amount, "USD"), Posting(income, -amount, "USD")), key=f"history:{k}")

    t0 = time.perf_counter()
    result = ledger.import_entries(entries(), expected=h)
    assert result.booked == h
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--contracts", type=int, default=100)
    args = parser.parse_args(argv)
    m, n = args.executions, args.contracts
    with tempfile.TemporaryDirectory(prefix="bench-fills-") as tmp:
        root = Path(tmp)
        exchange, server, session, contracts = setup(root, n)
        server.stop()
        try:
            path = Path(str(session.engine.url.database))
            figures = {}
            for run, phase in enumerate(("small history", "large history"), start=1):
                refs = orders_of(session, contracts, run, m)
                if phase == "large history":
                    took = history(session, contracts, args.history)
                    gc.collect()  # the import's garbage is this benchmark's, not the sync's: a daemon never made it
                    db = sqlite3.connect(path)  # as a ledger with a long history has long been checkpointed
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    db.close()
                    postings = session.ledger.count()[1]
                    print(f"history: {args.history:,} entries bulk-imported in {took:.1f} s "
                          f"({args.history / took:,.0f}/s); ledger now {postings:,} postings")
                snapshot = root / f"snapshot-{len(figures)}.db"
                snapshot_of(path, snapshot)
                before = marks_of(path)
                ours, _ = sync_once(exchange, session, m, refs)
                theirs = ceiling(path, snapshot, before)
                figures[phase] = (ours, theirs)
                print(f"{phase:<14} sync of {m:,} fills: {m / ours:7,.0f} fills/s   ceiling (raw sqlite3, same rows) "
                      f"{m / theirs:7,.0f}/s   ratio {theirs / ours:4.2f}   load {load()}")
            (small, small_ceiling), (large, large_ceiling) = figures["small history"], figures["large history"]
            print(f"cost per fill at large history / at small history: {large / small:4.2f} "
                  f"({large / m * 1e3:.3f} ms vs {small / m * 1e3:.3f} ms); the same for raw sqlite3 writing "
                  f"the same rows: {large_ceiling / small_ceiling:4.2f}")
            assert verify(session.ledger).ok
        finally:
            session.close()
            exchange.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
