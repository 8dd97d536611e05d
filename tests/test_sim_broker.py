"""SimBroker: the Broker interface over a SimExchange file, connection faults included."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from tradeledger.broker.base import (
    BUY, LIMIT, SELL, AccountSnapshot, Broker, BrokerDisconnected, BrokerError, Contract,
    OrderRequest,
)
from tradeledger.broker.sim import SimBroker
from tradeledger.broker.simexchange import SimExchange

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
MBT = Contract("MBTZ26", "FUT", "MBT", "CME", "USD", D("0.1"), "202612")
SPY = Contract("SPY", "STK", "SPY", "SMART", "USD")


@pytest.fixture
def ex(tmp_path):
    x = SimExchange(tmp_path / "sim.db", commission_per_contract=D("1.25"))
    x.set_clock(T0)
    x.set_price("MBTZ26", D(90050))
    x.set_price("SPY", D(500))
    yield x
    x.close()


@pytest.fixture
def broker(ex):
    b = SimBroker(ex, "DU1234567")
    b.connect()
    yield b
    b.close()


def test_satisfies_the_protocol(broker):
    b: Broker = broker
    assert b.account == "DU1234567"


def test_orders_executions_and_snapshot(broker, ex):
    ex.deposit("USD", D(100000))
    st = broker.place_order(OrderRequest("t1-MBT-1", MBT, BUY, D(1)))
    assert st.status == "Filled"
    ex.set_price("MBTZ26", D(90150))
    broker.place_order(OrderRequest("t1-MBT-2", MBT, BUY, D(1)))
    broker.place_order(OrderRequest("t1-SPY-1", SPY, BUY, D(10), LIMIT, D(490)))
    assert [o.order_ref for o in broker.orders()] == ["t1-MBT-1", "t1-MBT-2", "t1-SPY-1"]

    snap = broker.snapshot()
    assert isinstance(snap, AccountSnapshot) and snap.taken_at == T0
    assert [(p.contract.code, p.quantity) for p in snap.positions] == [("MBTZ26", D(2))]
    assert snap.cash == (("USD", D(100000) - D("2.50")),)
    assert [o.order_ref for o in snap.open_orders] == ["t1-SPY-1"]
    assert snap.unsettled_pnl == (("USD", D(10)),)  # 1 x (90150 - 90050) x 0.1

    assert broker.cancel_order("t1-SPY-1").status == "Cancelled"
    assert broker.snapshot().open_orders == ()
    ex.settle("MBTZ26", D(90500), dt.date(2026, 3, 2))
    snap = broker.snapshot()
    assert snap.cash == (("USD", D(100000) - D("2.50") + D(80)),)
    assert snap.unsettled_pnl == (("USD", D(0)),)


def test_duplicate_order_ref_refused(broker):
    broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))
    with pytest.raises(BrokerError, match="duplicate"):
        broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))


def test_executions_with_pending_then_known_commission(broker, ex):
    ex.fault_late_commission(1)
    broker.place_order(OrderRequest("r1", MBT, SELL, D(2)))
    assert [e.commission for e in broker.executions()] == [None]
    [e] = broker.executions(since=T0)
    assert (e.commission, e.commission_currency, e.order_ref) == (D("2.50"), "USD", "r1")


def test_external_trade_appears_without_order_ref(broker, ex):
    ex.external_trade(SPY, D(-5))
    [e] = broker.executions()
    assert (e.order_ref, e.side, e.quantity) == ("", SELL, D(5))
    assert broker.orders() == []
    assert [(p.contract.code, p.quantity) for p in broker.snapshot().positions] == [
        ("SPY", D(-5))]


def test_disconnect_fault(broker, ex):
    ex.fault_disconnect(n_calls=2)
    with pytest.raises(BrokerDisconnected):
        broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))
    with pytest.raises(BrokerDisconnected, match="not connected"):
        broker.orders()
    with pytest.raises(BrokerDisconnected):
        broker.connect()  # the fault is still active
    broker.connect()
    assert broker.orders() == []  # the order never reached the exchange
    broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))
    assert [o.order_ref for o in broker.orders()] == ["r1"]


def test_lost_reply_fault_order_reached_the_exchange(broker, ex):
    ex.fault_lost_reply()
    with pytest.raises(BrokerDisconnected):
        broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))
    broker.connect()
    # A restart finds the order by its orderRef instead of sending it again.
    assert [(o.order_ref, o.status) for o in broker.orders()] == [("r1", "Filled")]
    with pytest.raises(BrokerError, match="duplicate"):
        broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))


def test_new_broker_over_the_same_file_after_restart(broker, ex):
    broker.place_order(OrderRequest("r1", MBT, BUY, D(1)))
    ex.fault_disconnect()
    path = ex.path
    broker.close()
    ex.close()
    again = SimBroker(path)
    with pytest.raises(BrokerDisconnected):
        again.connect()  # the fault survived the restart
    again.connect()
    assert [e.order_ref for e in again.executions()] == ["r1"]
    assert again.snapshot().positions[0].quantity == D(1)
    again.exchange.close()


def test_account_mismatch_refused(ex):
    with pytest.raises(ValueError):
        SimBroker(ex, "DU0000000")
