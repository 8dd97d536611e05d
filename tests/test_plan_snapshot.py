"""A run is planned from one moment of the books: positions and orders in flight read together.

The planner's change for a holder is its target minus its ledger position minus what its working
orders will still bring (engine/trading/inflight.py). The two are read on one `read_connection`.
On SQLite that is one snapshot. On PostgreSQL it was not: each statement saw the latest commit
(READ COMMITTED), so a fill of a working order booked meanwhile (the daemon's fill sync; a cycle
keeps an older order whose cancel is not confirmed) could be missing from the positions yet
already gone from the order's remaining quantity, and the plan sent it again: Trend held 3 of its
target 3 and the plan bought 2 more. A read connection is now one snapshot on both backends
(REPEATABLE READ on PostgreSQL, as SQLite's deferred read transaction).

The fill is booked between the two reads: the planner runs in a thread and waits at the kill
point `positions_read` while the test releases the order at the exchange and syncs.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.trading import killpoint
from tradeledger.engine.trading.cycle import _plan_lines
from tradeledger.engine.trading.orders import TargetLine
from tradeledger.ledger.db import read_connection
from test_attributed_corrections import w  # noqa: F401 (w: the fixture: MBT, strategy trend)


def test_a_fill_booked_while_the_run_is_planned_is_counted_once(w, tmp_path, monkeypatch):
    w.exchange.fault_partial_fill(qty=D(1))
    w.buy({"Trend": 3})  # an older run's order: BUY 3, 1 fills, 2 rest at the exchange
    w.sync()
    with read_connection(w.env.engine) as conn:
        [ref] = conn.execute(sa.select(tables.broker_order.c.order_ref)).scalars().all()
    assert w.positions() == {("Trend", "MBTZ26"): D(1)}

    go = tmp_path / "go"
    monkeypatch.setenv("TRADELEDGER_PAUSE_AT", f"positions_read:@{go}")
    reached = killpoint._counts.get("positions_read", 0)
    planned = {}
    line = TargetLine("Trend", "MBT", w.contract, D(3), D(90000))
    planner = threading.Thread(target=lambda: planned.update(
        plan=_plan_lines(w.session, 2, [line], w.session.now())))
    planner.start()
    deadline = time.monotonic() + 60
    while killpoint._counts.get("positions_read", 0) == reached:  # the planner has read the positions
        assert time.monotonic() < deadline and planner.is_alive(), "the planner never read the positions"
        time.sleep(0.01)
    w.exchange.release_order(ref)  # the rest fills at the exchange
    assert len(w.sync().booked) == 1  # and is booked (committed) while the run is being planned
    go.touch()
    planner.join(timeout=60)
    assert w.positions() == {("Trend", "MBTZ26"): D(3)}
    [contract] = planned["plan"].contracts
    assert not contract.quantity, contract  # Trend holds its target: nothing to send
