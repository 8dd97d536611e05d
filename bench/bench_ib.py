"""Benchmark: the IB path end to end, IBBroker (ib_async) <-> IBSimServer over a real socket.

    python bench/bench_ib.py [--instruments 100] [--executions 10000]

1. A trading cycle for N instruments: connect (ib_async's full startup sync), snapshot
   (positions, cash), qualify + place N market orders each with its orderRef, wait until every
   fill is booked with its commission, then a final sync (all replays).
2. An execution sync of M executions: the gateway's exchange holds M executions of the day
   (written straight into its file, attributed to recorded orders); a fresh IBBroker connects
   (reqExecutions at connect), `executions()` returns them joined with their commission reports,
   `sync_fills` books each exactly once, and a second sync finds nothing new.

Prints one line per phase. SQLite files in a temporary directory; nothing is mocked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

import sqlalchemy as sa

from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange, make_exec_id
from tradeledger.engine.setup.config import Limits, current_contract
from tradeledger.engine.trading.cycle import wait_for_fills
from tradeledger.engine.setup.environment import init_environment, open_environment
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import TargetLine, plan, record_plan, send_planned
from tradeledger.engine.setup.session import Session
from tradeledger.engine import tables
from tradeledger.ledger.db import read_connection

UTC = dt.timezone.utc
ACCOUNT = "DU1234567"


def config(n: int) -> str:
    lines = []
    for i in range(n):
        lines += [f"[instruments.I{i:03d}]", 'type = "future"', 'currency = "USD"', "multiplier = 5",
                  'exchange = "CME"', f'ib_symbol = "S{i:03d}"', f'trading_class = "T{i:03d}"', ""]
    lines += ["[strategies.bench]", "instruments = { I000 = 1 }", ""]
    return "\n".join(lines)


def setup(root: Path, n: int):
    root.mkdir(parents=True, exist_ok=True)
    exchange = SimExchange(root / "ibsim.db", ACCOUNT)
    server = IBSimServer(exchange, poll_interval=0.02).start()
    init_environment(root / "home", "paper", "ib", ACCOUNT, ib_port=server.port, config_extra=config(n))
    session = Session(open_environment(root / "home", "paper"))
    today = dt.datetime.now(UTC).date()
    contracts = [current_contract(session.config.instruments[f"I{i:03d}"], today) for i in range(n)]
    for i, c in enumerate(contracts):
        exchange.add_contract(c)
        exchange.set_price(c.code, D(1000 + i))
    return exchange, server, session, contracts


def record(session, run_id: int, contracts, target) -> None:
    env = session
    lines = [TargetLine("Bench", c.code[:4], c, D(target), D(1000 + i)) for i, c in enumerate(contracts)]
    order_plan = plan(run_id, lines, {}, Limits(max_order_qty=D(10**6), max_daily_qty=D(10**8)), {})
    record_plan(env, order_plan, dt.datetime.now(UTC))


def timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    print(f"  {label:<44} {results[label] * 1000:9.1f} ms", flush=True)
    return value


def bench_cycle(root: Path, n: int) -> dict:
    print(f"cycle round trip, {n} instruments, IBBroker <-> IBSimServer")
    exchange, server, session, contracts = setup(root, n)
    record(session, 1, contracts, 2)
    r: dict = {}
    try:
        broker = timed("connect + ib_async startup sync", lambda: session.broker, r)
        snap = timed("snapshot (positions, cash)", broker.snapshot, r)
        assert snap.positions == ()
        sent = timed(f"qualify + place {n} orders (orderRef each)",
                     lambda: send_planned(session, broker, 1, dt.datetime.now(UTC)), r)
        assert len(sent.sent) == n
        def book_all():
            report = wait_for_fills(session, 1, timeout=60, poll=0.02)
            while report.pending_commissions:  # the last commission reports may trail the fills
                time.sleep(0.02)
                report = sync_fills(session, broker)
            return report

        timed("fills + commissions booked (wait_for_fills)", book_all, r)
        with read_connection(session.engine) as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables.fill).where(
                tables.fill.c.commission.is_not(None))).scalar() == n
        again = timed("final sync (all replays)", lambda: sync_fills(
            session, broker), r)
        assert again.replays == n
        positions = timed("snapshot after", broker.snapshot, r)
        assert len(positions.positions) == n
        print(f"  {'total':<44} {sum(r.values()) * 1000:9.1f} ms")
    finally:
        session.close()
        server.stop()
        exchange.close()
    return r


def write_executions(exchange_path: Path, refs_codes: list[tuple[str, str]], m: int) -> None:
    """m executions of the day straight into the exchange file, round-robin over the orders."""
    db = sqlite3.connect(exchange_path)
    prefix = db.execute("SELECT value FROM meta WHERE key = 'exec_prefix'").fetchone()[0]
    first = int(db.execute("SELECT value FROM meta WHERE key = 'next_exec'").fetchone()[0])
    now = dt.datetime.now(UTC)
    rows = []
    for k in range(m):
        ref, code = refs_codes[k % len(refs_codes)]
        exec_id = make_exec_id(prefix, first + k)
        at = (now - dt.timedelta(seconds=m - k)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        rows.append((exec_id, exec_id.rpartition(".")[0], 0, 900_000_000 + k % len(refs_codes), ref, code,
                     "BUY", "1", str(1000 + k % 7), at, "1.00", 0))
    with db:
        db.executemany("INSERT INTO executions (exec_id, base_id, order_id, perm_id, order_ref, code, side,"
                       " quantity, price, at, commission, polls_left) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_exec'", (str(first + m),))
    db.close()


def bench_sync(root: Path, m: int, n: int = 100) -> dict:
    print(f"execution sync, {m} executions over {n} contracts")
    exchange, server, session, contracts = setup(root, n)
    record(session, 1, contracts, m)  # one recorded order per contract, big enough for every fill
    with read_connection(session.engine) as conn:  # each contract's recorded order, by its orderRef
        o = tables.broker_order
        refs_codes = [tuple(r) for r in conn.execute(sa.select(o.c.order_ref, o.c.contract).order_by(o.c.id))]
    write_executions(exchange.path, refs_codes, m)
    server.stop()  # a gateway started now counts the executions as already published
    server = IBSimServer(exchange, poll_interval=0.05).start()
    from tradeledger.broker.ib import IBBroker
    from tradeledger.engine.setup.contracts_ib import ib_contract_namer

    broker = IBBroker(port=server.port, client_id=3, account=ACCOUNT, timeout=60, request_timeout=120,
                      contract_namer=ib_contract_namer(session.config))
    r: dict = {}
    try:
        timed("connect (reqExecutions of the day at connect)", broker.connect, r)
        executions = timed("executions() joined with commissions", broker.executions, r)
        assert len(executions) == m and all(e.commission is not None for e in executions)
        env = session
        report = timed(f"sync_fills: book {m} fills", lambda: sync_fills(env,
                                                                         broker), r)
        assert len(report.booked) == m, (len(report.booked), report.failed[:3] if hasattr(report, "failed") else "")
        again = timed("second sync (all replays)", lambda: sync_fills(env, broker), r)
        assert again.replays == m and not again.booked
        print(f"  fills booked per second: {m / r[f'sync_fills: book {m} fills']:.0f}")
    finally:
        broker.close()
        session.close()
        server.stop()
        exchange.close()
    return r


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--executions", type=int, default=10000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ib-") as tmp:
        bench_cycle(Path(tmp) / "cycle", args.instruments)
        bench_sync(Path(tmp) / "sync", args.executions)


if __name__ == "__main__":
    sys.exit(main())
