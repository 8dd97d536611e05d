"""The IB adapter and the simulated gateway together: real sockets on 127.0.0.1, the real
ib_async client, a real SimExchange file. No mocks.

Most tests drive `IBBroker` (the adapter); a few talk to the gateway with a bare
`ib_async.IB` to check the wire behaviour the adapter relies on (orderRef on execDetails,
completed orders by permId, 326, reqExecutions after a reconnect).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from ib_async import IB, Contract as IBContract, MarketOrder

from tradeledger.broker.base import (
    LIMIT, BrokerDisconnected, BrokerError, Contract, OrderRequest,
)
from tradeledger.broker.ib import IBBroker
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange

ACCOUNT = "DU1234567"
MBT = Contract("MBTZ26", "FUT", "MBT", "CME", "USD", Decimal("0.1"), "202612", "MBT")
SPY = Contract("SPY", "STK", "SPY", "ARCA", "USD")


def wait_for(predicate, timeout: float = 2.0, step: float = 0.01, sleep=time.sleep):
    """Poll predicate; a bare IB client needs sleep=ib.sleep so that its loop runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture
def exchange(tmp_path):
    ex = SimExchange(tmp_path / "exchange.sqlite", ACCOUNT)
    for c in (MBT, SPY):
        ex.add_contract(c)
    ex.set_price("MBTZ26", Decimal("95000"))
    ex.set_price("SPY", Decimal("500.25"))
    ex.deposit("USD", Decimal("100000"))
    yield ex
    ex.close()


@pytest.fixture
def server(exchange):
    srv = IBSimServer(exchange, poll_interval=0.02).start()
    yield srv
    srv.stop()


@pytest.fixture
def broker(server):
    b = IBBroker(port=server.port, client_id=7, account=ACCOUNT, timeout=2, request_timeout=3,
                 reconnect_wait=3)
    b.connect()
    yield b
    b.close()


@pytest.fixture
def ib(server):
    client = IB()
    client.connect("127.0.0.1", server.port, clientId=21, timeout=2)
    yield client
    client.disconnect()


def buy(ref: str, qty: int = 2, contract: Contract = MBT) -> OrderRequest:
    return OrderRequest(ref, contract, "BUY", Decimal(qty))


# --- bare ib_async against the gateway ------------------------------------------------------


def test_connect_managed_accounts_and_positions(exchange, server):
    exchange.external_trade("MBTZ26", Decimal(-3), Decimal("94000"))
    client = IB()
    started = time.perf_counter()
    client.connect("127.0.0.1", server.port, clientId=1, timeout=2)
    elapsed = time.perf_counter() - started
    try:
        assert elapsed < 1.0  # every startup request got its End message: no timeout waited
        assert client.managedAccounts() == [ACCOUNT]
        (pos,) = client.positions()
        assert (pos.account, pos.position, pos.avgCost) == (ACCOUNT, -3, 9400)
        assert pos.contract.localSymbol == "MBTZ6" and pos.contract.multiplier == "0.1"
        values = {(v.tag, v.currency): v.value for v in client.accountValues()}
        assert values[("CashBalance", "USD")] == "99997"  # deposit minus 3 x 1.00 commission
        assert values[("FuturesPNL", "USD")] == "0"
        server_time = client.reqCurrentTime()
        assert abs((server_time - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 5
    finally:
        client.disconnect()


def test_market_order_fill_carries_order_ref_and_commission(ib):
    (mbt,) = ib.qualifyContracts(IBContract(secType="FUT", localSymbol="MBTZ6", exchange="CME"))
    trade = ib.placeOrder(mbt, MarketOrder("BUY", 2, orderRef="tl-ord-1"))
    wait_for(lambda: trade.fills and trade.fills[0].commissionReport.execId, sleep=ib.sleep)
    fill = trade.fills[0]
    assert trade.orderStatus.status == "Filled" and trade.orderStatus.filled == 2
    assert fill.execution.orderRef == "tl-ord-1" and fill.execution.side == "BOT"
    assert fill.execution.price == 95000 and fill.execution.shares == 2
    assert fill.commissionReport.commission == 2.0 and fill.commissionReport.currency == "USD"
    assert fill.execution.execId.endswith(".01")
    wait_for(lambda: ib.positions(), sleep=ib.sleep)
    assert ib.positions()[0].position == 2  # the positions subscription is pushed


def test_reqexecutions_and_completed_orders_after_reconnect(server):
    client = IB()
    client.connect("127.0.0.1", server.port, clientId=5, timeout=2)
    (spy,) = client.qualifyContracts(IBContract(secType="STK", symbol="SPY", exchange="SMART",
                                                currency="USD"))
    trade = client.placeOrder(spy, MarketOrder("SELL", 10, orderRef="tl-ord-2"))
    wait_for(lambda: trade.isDone() and trade.fills, sleep=client.sleep)
    exec_id, perm_id = trade.fills[0].execution.execId, trade.order.permId
    client.disconnect()
    assert client.fills() == []  # ib_async forgets everything on disconnect

    client.connect("127.0.0.1", server.port, clientId=5, timeout=2)
    try:
        fills = client.fills()  # synchronised by connect's reqExecutions
        assert [f.execution.execId for f in fills] == [exec_id]
        assert fills[0].execution.orderRef == "tl-ord-2"
        assert fills[0].commissionReport.execId == exec_id  # replayed commission report
        completed = client.reqCompletedOrders(apiOnly=False)
        (done,) = [t for t in completed if t.order.permId == perm_id]
        assert done.order.orderId == 0 and done.order.orderRef == "tl-ord-2"
        assert done.orderStatus.status == "Filled" and done.order.filledQuantity == 10
        again = client.reqExecutions()
        assert [f.execution.execId for f in again] == [exec_id]
    finally:
        client.disconnect()


def test_duplicate_client_id_is_refused_with_326(server, ib):
    errors = []
    other = IB()
    other.errorEvent += lambda req_id, code, text, contract: errors.append(code)
    with pytest.raises((TimeoutError, ConnectionError)):
        other.connect("127.0.0.1", server.port, clientId=21, timeout=0.5)
    assert 326 in errors
    assert ib.isConnected() and server.connected_clients() == [21]


def test_market_data_snapshot_and_historical_bars(exchange, ib):
    exchange.set_price("MBTZ26", Decimal("95100"))
    (mbt,) = ib.qualifyContracts(IBContract(conId=0, symbol="MBT", secType="FUT",
                                            lastTradeDateOrContractMonth="202612",
                                            exchange="CME"))
    (ticker,) = ib.reqTickers(mbt)
    assert (ticker.bid, ticker.ask, ticker.last) == (95100, 95100, 95100)
    bars = ib.reqHistoricalData(mbt, "", "30 D", "1 day", "TRADES", False)
    assert bars and bars[-1].close == 95100 and bars[-1].high == 95100
    assert ib.qualifyContracts(IBContract(secType="FUT", localSymbol="NOPE6")) == [None]


# --- the adapter ----------------------------------------------------------------------------


def test_adapter_places_order_and_joins_commission(broker, server):
    st = broker.place_order(buy("tl-a-1"))
    assert st.order_ref == "tl-a-1" and st.contract_code == "MBTZ26" and st.perm_id
    (ex,) = wait_for(lambda: [e for e in broker.executions() if e.commission is not None])
    assert ex.order_ref == "tl-a-1" and ex.quantity == Decimal(2) and ex.price == Decimal(95000)
    assert ex.commission == Decimal(2) and ex.commission_currency == "USD"
    assert ex.contract == broker.qualify(MBT) and ex.account == ACCOUNT
    assert ex.time.tzinfo is not None and ex.base_exec_id == ex.exec_id.rsplit(".", 1)[0]
    assert [o.status for o in broker.orders() if o.order_ref == "tl-a-1"] == ["Filled"]
    with pytest.raises(BrokerError, match="already at the broker"):
        broker.place_order(buy("tl-a-1"))


def test_adapter_delayed_commission_is_none_then_known(broker, server):
    server.hold_commissions()
    broker.place_order(buy("tl-a-2", 1))
    (ex,) = wait_for(broker.executions)
    assert ex.commission is None  # pending, never zero
    server.release_commissions()
    (ex,) = wait_for(lambda: [e for e in broker.executions() if e.commission is not None])
    assert ex.commission == Decimal(1)


def test_adapter_executions_survive_reconnect(broker, server):
    broker.place_order(buy("tl-a-3", 1))
    wait_for(lambda: [e for e in broker.executions() if e.commission is not None])
    server.drop_connections()
    wait_for(lambda: broker.reconnects == 1 and broker.is_connected)
    refreshed = broker.executions(refresh=True)
    assert [(e.order_ref, e.commission) for e in refreshed] == [("tl-a-3", Decimal(1))]
    (order,) = [o for o in broker.orders() if o.order_ref == "tl-a-3"]
    assert order.status == "Filled" and order.filled == 1 and order.broker_order_id == 0


def test_adapter_call_during_drop_waits_for_reconnect(broker, server):
    server.drop_connections()
    snap = broker.snapshot()  # blocks until the reconnect, then answers
    assert snap.account == ACCOUNT and dict(snap.cash)["USD"] == Decimal(100000)
    assert broker.reconnects == 1


def test_adapter_snapshot_positions_cash_and_open_orders(broker, exchange):
    exchange.external_trade("SPY", Decimal(10), Decimal("500"))
    broker.place_order(OrderRequest("tl-a-4", MBT, "SELL", Decimal(1), LIMIT, Decimal(99000)))
    snap = broker.snapshot()
    (pos,) = snap.positions
    assert pos.contract.code == "SPY" and pos.quantity == 10 and pos.avg_cost == 500
    assert dict(snap.cash)["USD"] == Decimal(100000) - 5000 - 1  # 10 shares: the 1.00 minimum (IB fixed)
    assert [o.order_ref for o in snap.open_orders] == ["tl-a-4"]
    assert dict(snap.unsettled_pnl)["USD"] == 0
    external = [e for e in broker.executions(refresh=True) if e.order_ref == ""]
    assert len(external) == 1 and external[0].contract.code == "SPY"


def test_adapter_snapshot_lists_a_position_once_when_its_push_crosses_the_answer(exchange):
    # No publisher tick (an hour apart): the external trade is first pushed when the snapshot's
    # reqPositions arrives, so the push reaches the subscribed adapter inside the answer, as a
    # fill landing while we ask does at TWS. Under load this happened by chance in CI.
    srv = IBSimServer(exchange, poll_interval=3600).start()
    b = IBBroker(port=srv.port, client_id=7, account=ACCOUNT, timeout=2, request_timeout=3)
    try:
        b.connect()
        exchange.external_trade("SPY", Decimal(10), Decimal("500"))
        snap = b.snapshot()
        assert [(p.contract.code, p.quantity) for p in snap.positions] == [("SPY", 10)]
        exchange.external_trade("SPY", Decimal(-10), Decimal("501"))  # closed: pushed as 0
        assert b.snapshot().positions == ()
    finally:
        b.close()
        srv.stop()


def test_adapter_snapshot_cash_is_what_the_latest_answer_listed(broker, exchange, server):
    """ib_async keeps every account-summary row it ever received in one table for the connection
    (keyed by account, tag, currency; cleared only at a disconnect), so a currency an earlier answer
    listed stays there after IB stops listing it. The snapshot reads only the rows of its own answer."""
    exchange.deposit("EUR", Decimal("500"))
    assert dict(broker.snapshot().cash) == {"USD": Decimal(100000), "EUR": Decimal(500)}
    exchange.deposit("EUR", Decimal("-500"))  # converted away ...
    server.leave_out_currencies("EUR")  # ... and no longer reported at all
    exchange.deposit("USD", Decimal("250"))
    snap = broker.snapshot()
    assert dict(snap.cash) == {"USD": Decimal(100250)}
    assert dict(snap.unsettled_pnl) == {"USD": Decimal(0)}
    # the stale row is still in ib_async's table: what the snapshot no longer reads
    assert any(v.currency == "EUR" for v in broker._ib.wrapper.acctSummary.values())
    server.leave_out_currencies()  # reported again, as 0
    assert dict(broker.snapshot().cash) == {"USD": Decimal(100250), "EUR": Decimal(0)}


def test_adapter_cancel_and_errors(broker, exchange):
    broker.place_order(OrderRequest("tl-a-5", MBT, "BUY", Decimal(1), LIMIT, Decimal(90000)))
    st = broker.cancel_order("tl-a-5")
    assert st.status == "Cancelled" and st.filled == 0
    assert exchange.orders()[-1].status == "Cancelled"
    unknown = Contract("MBTH27", "FUT", "MBT", "CME", "USD", Decimal("0.1"), "202703", "MBT")
    with pytest.raises(BrokerError, match="no security definition"):
        broker.place_order(buy("tl-a-6", contract=unknown))
    exchange.add_contract(unknown)  # known now, but it has no price: rejected, not raised
    st = broker.place_order(buy("tl-a-7", contract=unknown))
    assert st.status == "Rejected" and "no market price" in st.reason
    with pytest.raises(BrokerError, match="no order with order_ref"):
        broker.cancel_order("nope")


def test_adapter_correction_is_an_extra_execution(broker, server):
    broker.place_order(buy("tl-a-8", 1))
    (first,) = wait_for(broker.executions)
    server.correct_execution(first.exec_id, new_price=Decimal(95010))
    both = wait_for(lambda: len(broker.executions()) == 2 and broker.executions())
    assert [e.exec_id[-3:] for e in both] == [".01", ".02"]
    assert {e.base_exec_id for e in both} == {first.base_exec_id}
    assert both[1].price == Decimal(95010)


def test_adapter_usable_from_other_threads(broker):
    results, errors = [], []

    def work(i: int) -> None:
        try:
            results.append(broker.place_order(buy(f"tl-t-{i}", 1)).status)
        except Exception as exc:  # "There is no current event loop" would land here
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
    assert len(wait_for(lambda: len(broker.executions()) == 4 and broker.executions())) == 4


def test_adapter_refuses_duplicate_client_id_and_wrong_account(server, broker):
    twin = IBBroker(port=server.port, client_id=7, account=ACCOUNT, timeout=2)
    started = time.perf_counter()
    with pytest.raises(BrokerError, match="client id 7 is already in use"):
        twin.connect()
    assert time.perf_counter() - started < 1.0  # 326 fails at once, no timeout waited
    twin.close()
    wrong = IBBroker(port=server.port, client_id=8, account="U7654321", timeout=2)
    with pytest.raises(BrokerError, match="not the configured account U7654321"):
        wrong.connect()
    wrong.close()
    deadline = time.monotonic() + 5  # the gateway notices the closed socket on its next read
    while server.connected_clients() != [7] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connected_clients() == [7]


def test_adapter_unreachable_gateway(server):
    port = server.port
    server.stop()
    lonely = IBBroker(port=port, client_id=9, account=ACCOUNT, timeout=0.5)
    with pytest.raises(BrokerDisconnected):
        lonely.connect()
    lonely.close()
    with pytest.raises(BrokerDisconnected):
        lonely.executions()
