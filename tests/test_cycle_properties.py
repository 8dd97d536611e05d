"""Property: any random sequence of cycles keeps the books true.

Strategies get random targets in a future (multiplier 0.1) and a share, at random prices, with
random partial fills (the rest cancelled), duplicate execution reports and late commissions.
After every day, whatever happened: the ledger's holders add up to the broker's position, fully
filled orders leave every strategy exactly at its target, replaying the broker's executions
books nothing, and beancount loads the export with zero errors and the same balances.
"""

import datetime as dt
import tempfile
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from tradeledger.broker.base import Contract
from tradeledger.broker.sim import SimBroker
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, cancel, holder_positions, plan, record_plan, send_planned
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
MBT = Contract("MBTZ26", "FUT", "MBT", "CME", "USD", D("0.1"), "202612", "MBT")
SPY = Contract("SPY", "STK", "SPY", "ARCA", "USD", D(1))
STRATEGIES = ("A", "B", "C")

day_plan = st.fixed_dictionaries({
    "targets": st.fixed_dictionaries({(s, c): st.integers(-4, 4) for s in STRATEGIES for c in ("MBTZ26", "SPY")}),
    "mbt": st.integers(85_000, 95_000).map(lambda p: D(p - p % 5)),
    "spy": st.integers(50_000, 70_000).map(lambda cents: D(cents) / 100),
    "settle": st.integers(-500, 500),
    "partial": st.booleans(),
    "duplicates": st.booleans(),
    "late": st.booleans(),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days=st.lists(day_plan, min_size=1, max_size=3))
def test_random_cycles_keep_the_books_true(days):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = init_environment(tmp / "home", "paper", "sim", None)
        exchange = SimExchange(tmp / "sim.db", commission_per_contract=D("1.25"))
        exchange.add_contract(MBT)
        exchange.add_contract(SPY)
        broker = SimBroker(exchange)
        broker.connect()
        chart = env.chart
        for number, day in enumerate(days, start=1):
            when = dt.datetime(2026, 12, number, 15, tzinfo=UTC)
            exchange.set_clock(when)
            exchange.set_price("MBTZ26", day["mbt"])
            exchange.set_price("SPY", day["spy"])
            lines = [TargetLine(s, "MBT" if c == "MBTZ26" else "SPY", MBT if c == "MBTZ26" else SPY, D(t),
                                day["mbt"] if c == "MBTZ26" else day["spy"])
                     for (s, c), t in day["targets"].items()]
            order_plan = plan(number, lines, holder_positions(env.ledger, chart), Limits(), {})
            record_plan(env, order_plan, when)
            if day["partial"]:
                exchange.fault_partial_fill(qty=D(1))
            if day["late"]:
                exchange.fault_late_commission(n_polls=1)
            send_planned(env, broker, number, when)
            if day["duplicates"]:
                exchange.fault_duplicate_executions(2)
            for _ in range(3):
                sync_fills(env, broker)
            partial = set()
            for order in _open_orders(env):
                cancel(env, broker, order, when)
                partial.add(order)

            positions = holder_positions(env.ledger, chart)
            at_broker = {p.contract.code: p.quantity for p in broker.snapshot().positions}
            for code in ("MBTZ26", "SPY"):
                held = sum((q for (h, c), q in positions.items() if c == code), D(0))
                assert held == at_broker.get(code, D(0))
            if not partial:
                for (s, c), t in day["targets"].items():
                    assert positions.get((s, c), D(0)) == D(t)

            settle = day["mbt"] + day["settle"] * 5
            exchange.settle("MBTZ26", settle, when.date())
            mark_day(env, known_contracts(env.ledger), when.date(), {"MBTZ26": settle},
                     when.replace(hour=21))

        replay = sync_fills(env, broker)
        assert replay.booked == [] and replay.commissions == []
        path = tmp / "ledger.beancount"
        export_beancount(env.ledger, path)
        result = check(env.ledger, path)
        assert result.ok, result
        env.engine.dispose()
        exchange.close()


def _open_orders(env):
    import sqlalchemy as sa

    from tradeledger.engine import tables
    from tradeledger.ledger.db import read_connection

    o = tables.broker_order
    with read_connection(env.engine) as conn:
        return [r.id for r in conn.execute(sa.select(o.c.id).where(o.c.state.in_(("sent", "partial"))))]


def test_a_lot_with_a_multiplier_realizes_per_unit_cost():
    """An option (multiplier 100) bought at 2.50 is a lot at 250 per contract; selling it at 3.10
    realizes (3.10 x 100 - 250) x 1 = 60.00, and the entry balances."""
    from tradeledger.engine.accounting.entries import Holding, after_trade, trade_postings
    from tradeledger.ledger.accounts import Chart
    from tradeledger.ledger.model import imbalance

    chart = Chart("DU1234567")
    option = Contract("SPYOPT", "OPT", "SPY", "SMART", "USD", D(100))
    day = dt.date(2026, 12, 1)
    bought = trade_postings(chart, None, option, Holding(), D(1), D("2.50"), day, "E1")
    assert not imbalance(bought) and bought[0].units == D("-250.00")
    holding = after_trade(option, Holding(), bought, D(1), D("2.50"))
    sold = trade_postings(chart, None, option, holding, D(-1), D("3.10"), day, "E2")
    assert not imbalance(sold)
    [income] = [p for p in sold if p.account.startswith("Income:")]
    assert income.units == D("-60.00")
