"""The worked example of shared/EXAMPLES.md, end to end through the engine on the simulated broker.

Two strategies, one contract MBTZ26 (multiplier 0.1), commission 2.00 per contract, two days:
netting with an internal cross, a partial fill, a late commission, a flip through zero.
Expected figures, worked by hand (EXAMPLES.md):

  Day 1: cross B -> A 1 @ 90000; A buys 1 @ 90050 (+5.00 VM on A's crossed 1), 1 @ 90150
         (+20.00 on 2); settle 90500: A +105.00 (3 x 350 x 0.1), B -50.00 (-1 x 500 x 0.1).
  Day 2: A sells 5 @ 90300: -60.00 (3 x -200 x 0.1), closes 3 and opens -2;
         settle 90000: A +60.00 (-2 x -300 x 0.1), B +50.00 (-1 x -500 x 0.1).
  A: VM 5 + 20 + 105 - 60 + 60 = 130.00, commissions 2 + 2 + 10 = 14.00, net 116.00, position -2.
  B: VM -50 + 50 = 0.00, commissions 0, position -1.  Broker: -3 = A + B.
"""

import datetime as dt
from decimal import Decimal as D

from tradeledger.broker.base import Contract
from tradeledger.broker.sim import SimBroker
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.trading.fills import list_fills, sync_fills
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.setup.config import Limits
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check

UTC = dt.timezone.utc
MBT = Contract("MBTZ26", "FUT", "MBT", "CME", "USD", D("0.1"), "202612", "MBT")


def _day(env, exchange, broker, run_id, targets, ref, when):
    lines = [TargetLine(h, "MBT", MBT, D(t), D(ref)) for h, t in targets.items()]
    positions = holder_positions(env.ledger, env.chart)
    order_plan = plan(run_id, lines, positions, Limits(), {})
    record_plan(env, order_plan, when)
    return order_plan


def test_two_strategies_two_days(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None)
    exchange = SimExchange(tmp_path / "sim.db", commission_per_contract=D("2.00"))
    broker = SimBroker(exchange)
    broker.connect()
    chart = env.chart

    # Day 1
    t1 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    exchange.set_clock(t1)
    exchange.set_price("MBTZ26", D(90050))
    order_plan = _day(env, exchange, broker, 1, {"A": 3, "B": -1}, 90000, t1)
    [cp] = order_plan.contracts
    assert [(c.seller, c.buyer, c.quantity) for c in cp.crosses] == [("B", "A", D(1))]
    assert (cp.side, cp.quantity, dict(cp.shares)) == ("BUY", D(2), {"A": D(2)})

    exchange.fault_partial_fill(qty=D(1))
    exchange.fault_late_commission(n_polls=2)  # this order's commissions arrive at the 3rd sync
    sent = send_planned(env, broker, 1, t1)
    assert len(sent.sent) == 1
    report = sync_fills(env, broker)
    assert len(report.booked) == 1  # E1: 1 @ 90050

    exchange.set_clock(t1 + dt.timedelta(minutes=5))
    exchange.set_price("MBTZ26", D(90150))
    exchange.release_order(sent.sent[0])  # the rest fills at 90150: E2
    report = sync_fills(env, broker)
    assert len(report.booked) == 1 and len(report.pending_commissions) == 2
    pending = [f for f in _fills(env) if f["commission"] == "pending"]
    assert [f["price"] for f in pending] == [D(90050), D(90150)]
    assert ("Expenses:Commissions:A", "USD") not in env.ledger.income()  # pending, never zero
    arrived = []
    for _ in range(3):  # the commission reports arrive, each once
        arrived += sync_fills(env, broker).commissions
    assert sorted(arrived) == sorted(f["fill_id"] for f in pending)
    assert all(f["commission"] == D("2.00") for f in _fills(env))

    mark_day(env, {"MBTZ26": MBT}, t1.date(), {"MBTZ26": D(90500)},
             t1.replace(hour=21))
    income = env.ledger.income(until=dt.date(2026, 12, 2))
    assert income[("Income:Trading:A", "USD")] == D("-130.00")
    assert income[("Income:Trading:B", "USD")] == D("50.00")
    assert income[("Expenses:Commissions:A", "USD")] == D("4.00")

    # Day 2: A flips to -2, B unchanged
    t2 = dt.datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    exchange.set_clock(t2)
    exchange.set_price("MBTZ26", D(90300))
    order_plan = _day(env, exchange, broker, 2, {"A": -2, "B": -1}, 90400, t2)
    [cp] = order_plan.contracts
    assert cp.crosses == () and (cp.side, cp.quantity) == ("SELL", D(5))
    send_planned(env, broker, 2, t2)
    sync_fills(env, broker)
    mark_day(env, {"MBTZ26": MBT}, t2.date(), {"MBTZ26": D(90000)},
             t2.replace(hour=21))

    income = env.ledger.income()
    assert income[("Income:Trading:A", "USD")] == D("-130.00")
    assert ("Income:Trading:B", "USD") not in income  # -50 + 50 = 0
    assert income[("Expenses:Commissions:A", "USD")] == D("14.00")
    assert env.ledger.balances()[(chart.cash, "USD")] == D("116.00")
    positions = holder_positions(env.ledger, chart)
    assert positions == {("A", "MBTZ26"): D(-2), ("B", "MBTZ26"): D(-1)}
    [broker_position] = broker.snapshot().positions
    assert broker_position.quantity == D(-3) == sum(positions.values())

    # Replaying every execution books nothing more; marking a day again books nothing.
    again = sync_fills(env, broker)
    assert again.booked == [] and again.commissions == [] and again.replays == 3
    booked = mark_day(env, {"MBTZ26": MBT}, t2.date(), {"MBTZ26": D(90000)}, t2.replace(hour=21)).booked
    assert booked == []

    # Beancount agrees to the cent.
    path = tmp_path / "ledger.beancount"
    from tradeledger.ledger.export import export_beancount
    export_beancount(env.ledger, path)
    result = check(env.ledger, path)
    assert result.ok, result


def _fills(env):
    with read_connection(env.engine) as conn:
        return list_fills(conn, env.ledger)
