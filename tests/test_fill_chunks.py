"""Fill sync in chunks done as chunks (`engine/trading/fill_chunk.py`).

- The same executions (futures and shares, orders split between two strategies, partial fills,
  trades made outside tradeledger, commissions reported late) booked by the chunk path and by
  the one-execution-at-a-time path leave the same ledger entries, fill rows, allocations, orders,
  marks, balances and lots, on SQLite and PostgreSQL.
- A process killed inside a chunk (after its writes, before its commit) loses that chunk whole;
  a rerun books every execution exactly once.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading import fills
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan
from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.maintained import verify_balances
from tradeledger.ledger.verify import verify

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
CONFIG = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1
exchange = "CME"

[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"

[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.trend]
instruments = { MBT = 1, MES = 1, SPY = 1 }

[strategies.carry]
instruments = { MBT = 1, SPY = 1 }
"""
CONTRACTS = {"MBT": ("MBTZ26", "202612", D(90000)), "MES": ("MESZ26", "202612", D(6000)), "SPY": ("SPY", "", D(600))}
TARGETS = [("Trend", "MBT", 30), ("Carry", "MBT", 20), ("Trend", "MES", -10), ("Trend", "SPY", 100),
           ("Carry", "SPY", 50)]


def make_env(home, db_url=None, refs: dict | None = None):
    """An environment with run 1's orders recorded; `refs` (another make_env's): record them under
    the same orderRefs (each carries a random part), so that two environments book alike."""
    env = init_environment(home, "paper", "sim", None, db_url=db_url, config_extra=CONFIG)
    session = Session(env)
    exchange = session.exchange()
    exchange.set_clock(T0)
    contracts = {}
    for name, (code, expiry, price) in CONTRACTS.items():
        contracts[name] = to_contract(session.config.instruments[name], code, expiry)
        exchange.add_contract(contracts[name])
        exchange.set_price(code, price)
    lines = [TargetLine(holder, name, contracts[name], D(target), CONTRACTS[name][2]) for holder, name, target in TARGETS]
    record_plan(env, plan(1, lines, {}, Limits(), {}), T0)
    for code, (ref, _side, _qty) in (refs or {}).items():
        with env.engine.begin() as conn:
            conn.execute(tables.broker_order.update().where(tables.broker_order.c.contract == code)
                         .values(order_ref=ref))
    with read_connection(env.engine) as conn:
        refs = {r.contract: (r.order_ref, r.side, D(r.quantity) / 10**9)
                for r in conn.execute(sa.select(tables.broker_order))}
    return env, session, exchange, refs


def executions(refs: dict, seed: int) -> list[tuple]:
    """Rows for the exchange's executions table: each order filled in random parts at random
    prices, trades from the broker's own screen between them, some commissions reported late."""
    rng = random.Random(seed)
    rows, k = [], 0
    for code, (ref, side, quantity) in sorted(refs.items()):
        left = int(quantity)
        while left:
            part = min(left, rng.randint(1, 9))
            left -= part
            k += 1
            rows.append((ref, code, side, part))
            if rng.random() < 0.15:
                k += 1
                rows.append(("", code, rng.choice(["BUY", "SELL"]), rng.randint(1, 3)))
    rng.shuffle(rows)
    out = []
    for n, (ref, code, side, qty) in enumerate(rows):
        exec_id = f"0000e859.{n:08x}.01"
        base = CONTRACTS[{"MBTZ26": "MBT", "MESZ26": "MES", "SPY": "SPY"}[code]][2]
        at = (T0 + dt.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        out.append((exec_id, exec_id.rpartition(".")[0], 0, 1000 + n, ref, code, side, str(qty),
                    str(base + rng.randint(-20, 20)), at, f"{rng.randint(50, 400) / 100:.2f}",
                    1 if rng.random() < 0.2 else 0))
    return out


def publish(exchange, rows) -> None:
    db = sqlite3.connect(exchange.path)
    with db:
        db.executemany("INSERT INTO executions (exec_id, base_id, order_id, perm_id, order_ref, code, side, quantity,"
                       " price, at, commission, polls_left) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.close()


def state(env) -> dict:
    """Everything a sync writes, in comparable form."""
    with read_connection(env.engine) as conn:
        f, fa, o, m = tables.fill, tables.fill_alloc, tables.broker_order, tables.position_mark
        keys = dict(conn.execute(sa.select(schema.txn.c.id, schema.txn.c.idem_key)).all())  # ids may have gaps
        return {
            "entries": [(r.kind, r.idem_key, r.fingerprint) for r in
                        conn.execute(sa.select(schema.txn).order_by(schema.txn.c.id))],
            "fills": [(*tuple(r)[1:13], keys[r.txn_id], keys.get(r.commission_txn_id), r.superseded_by)
                      for r in conn.execute(sa.select(f).order_by(f.c.exec_key))],
            "allocations": sorted(tuple(r) for r in conn.execute(
                sa.select(f.c.exec_key, fa.c.holder, fa.c.quantity).join(f, f.c.id == fa.c.fill_id))),
            "orders": [(r.order_ref, r.filled, r.state) for r in conn.execute(sa.select(o).order_by(o.c.order_ref))],
            "marks": sorted(tuple(r) for r in conn.execute(sa.select(m))),
            "balances": env.ledger.balances(),
            "lots": {h: env.ledger.lots(env.chart.holdings(h), "SPY") for h in ("Trend", "Carry", None)},
            "exceptions": sorted((r.kind, r.dedupe_key) for r in conn.execute(sa.select(tables.tl_exception))),
        }


@pytest.mark.parametrize("seed", [1, 2])
def test_a_chunk_books_what_one_by_one_books(tmp_path, db_url, monkeypatch, seed):
    chunked, _s1, ex1, refs1 = make_env(tmp_path / "chunked", db_url if db_url.startswith("postgresql") else None)
    rows = executions(refs1, seed)
    publish(ex1, rows)
    monkeypatch.setattr(fills, "BATCH", 17)  # many chunks, each with several contracts
    first = sync_fills(chunked, _s1.broker)
    second = sync_fills(chunked, _s1.broker)  # the late commissions

    # The reference: the same executions one at a time (on SQLite: the books are the same on both).
    monkeypatch.setattr(fills, "book_new_fills", lambda *a, **k: False)
    one, _s2, ex2, refs2 = make_env(tmp_path / "reference", refs=refs1)
    assert refs2 == refs1
    publish(ex2, rows)
    first_ref = sync_fills(one, _s2.broker)
    second_ref = sync_fills(one, _s2.broker)

    assert len(first.booked) == len(rows) == len(first_ref.booked)
    assert sorted(first.unattributed) == sorted(first_ref.unattributed) and first.unattributed
    assert sorted(first.pending_commissions) == sorted(first_ref.pending_commissions)
    assert sorted(second.commissions) == sorted(second_ref.commissions) and second.commissions
    mine, theirs = state(chunked), state(one)
    for part in mine:
        assert mine[part] == theirs[part], part
    assert verify(chunked.ledger).ok and verify_balances(chunked.engine) == []
    assert holder_positions(chunked.ledger, chunked.chart)[("Trend", "MBTZ26")] == D(30)


CRASH = textwrap.dedent("""
    import sys
    from tradeledger.engine.setup.environment import open_environment
    from tradeledger.engine.setup.session import Session
    from tradeledger.engine.trading import fills
    from tradeledger.engine.trading.fills import sync_fills

    fills.BATCH = int(sys.argv[2])
    env = open_environment(sys.argv[1], "paper")
    session = Session(env)
    sync_fills(env, session.broker)
    print("NOT KILLED", flush=True)
""")


def test_killed_inside_a_chunk_then_rerun_books_each_fill_once(tmp_path):
    home = tmp_path / "home"
    env, session, exchange, refs = make_env(home)
    rows = executions(refs, 7)
    publish(exchange, rows)
    script = tmp_path / "sync.py"
    script.write_text(CRASH)
    batch = 40
    done = subprocess.run([sys.executable, str(script), str(home), str(batch)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TRADELEDGER_KILL_AT": "fill_chunk:2"})
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    with read_connection(env.engine) as conn:  # the first chunk committed; the second died whole
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.fill)).scalar() == batch
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.txn)).scalar() == batch
    report = sync_fills(env, session.broker)
    # The 40 committed before the kill are replays, or (reported late) get their commission now.
    assert len(report.booked) == len(rows) - batch and report.replays + len(report.commissions) == batch
    again = sync_fills(env, session.broker)
    assert again.booked == [] and again.replays == len(rows)
    with read_connection(env.engine) as conn:
        keys = conn.execute(sa.select(tables.fill.c.exec_key)).scalars().all()
        assert len(keys) == len(set(keys)) == len(rows)
        orders = {r.order_ref: (r.filled, r.state) for r in conn.execute(sa.select(tables.broker_order))}
    assert all(state == "filled" for _, state in orders.values()), orders
    assert holder_positions(env.ledger, env.chart)[("Carry", "SPY")] == D(50)
    assert verify(env.ledger).ok and verify_balances(env.engine) == []


def test_a_link_keeps_letters_digits_and_the_link_signs_and_nothing_else():
    """`link` (one regex pass): the rule, character by character, over the basic multilingual plane."""
    from tradeledger.engine.accounting.entries import link

    text = "".join(map(chr, range(0x10000)))
    assert link(text) == "".join(ch if ch.isalnum() or ch in "_./-" else "-" for ch in text)
    assert link("0000e0d5.6550a2bf.01:x y") == "0000e0d5.6550a2bf.01-x-y"
