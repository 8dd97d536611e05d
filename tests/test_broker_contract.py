"""One broker contract: the behaviours the engine relies on, checked against every broker.

Each test runs twice over the same kind of `SimExchange` file:

* `sim` -- the embedded `SimBroker`, calling the exchange in-process;
* `ib`  -- `IBBroker` (the real ib_async client on its own loop thread) connected over a real
  TCP socket to `IBSimServer`, the TWS-wire-compatible gateway in front of the exchange.

A `Face` hides only what differs in *driving* the two (how a connection is cut, how a process
restart looks, that IB reports asynchronously); the assertions are the same.
"""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from tradeledger.broker.base import LIMIT, BrokerDisconnected, BrokerError, Contract, OrderRequest
from tradeledger.broker.ib import IBBroker
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.sim import SimBroker
from tradeledger.broker.simexchange import SimExchange

ACCOUNT = "DU1234567"
MBT = Contract("MBTZ26", "FUT", "MBT", "CME", "USD", D("0.1"), "202612", "MBT")
SPY = Contract("SPY", "STK", "SPY", "ARCA", "USD")


def eventually(read, accept=bool, timeout: float = 3.0):
    """read() until accept(value): IB reports fills and commissions asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if accept(value) or time.monotonic() > deadline:
            assert accept(value), f"not reached in {timeout}s: {value!r}"
            return value
        time.sleep(0.01)


class SimFace:
    name = "sim"

    def __init__(self, exchange: SimExchange):
        self.exchange = exchange
        self.broker = SimBroker(exchange)
        self.broker.connect()

    def cut(self) -> None:
        """The connection drops; the broker notices on its next call and reconnects."""
        self.exchange.fault_disconnect()
        with pytest.raises(BrokerDisconnected):
            self.broker.orders()
        self.broker.connect()

    def restart(self) -> None:
        self.broker.close()
        self.broker = SimBroker(self.exchange)
        self.broker.connect()

    def close(self) -> None:
        self.broker.close()


class IBFace:
    name = "ib"

    def __init__(self, exchange: SimExchange):
        self.exchange = exchange
        self.server = IBSimServer(exchange, poll_interval=0.02).start()
        self.broker = self._new()

    def _new(self) -> IBBroker:
        broker = IBBroker(port=self.server.port, client_id=7, account=ACCOUNT, timeout=2,
                          request_timeout=3, reconnect_wait=3, refresh_every=0.2)
        broker.connect()
        return broker

    def cut(self) -> None:
        before = self.broker.reconnects
        self.server.drop_connections()
        eventually(lambda: self.broker.reconnects > before and self.broker.is_connected)

    def restart(self) -> None:
        self.broker.close()
        eventually(lambda: 7 not in self.server.connected_clients())
        self.broker = self._new()

    def close(self) -> None:
        self.broker.close()
        self.server.stop()


@pytest.fixture(params=["sim", "ib"])
def face(request, tmp_path):
    exchange = SimExchange(tmp_path / "exchange.sqlite", ACCOUNT)
    for contract, price in ((MBT, "95000"), (SPY, "500")):
        exchange.add_contract(contract)
        exchange.set_price(contract.code, D(price))
    exchange.deposit("USD", D(100000))
    f = SimFace(exchange) if request.param == "sim" else IBFace(exchange)
    yield f
    f.close()
    exchange.close()


def order(ref: str, qty: int = 2, contract: Contract = MBT, side: str = "BUY", limit=None):
    if limit is None:
        return OrderRequest(ref, contract, side, D(qty))
    return OrderRequest(ref, contract, side, D(qty), LIMIT, D(limit))


def with_commission(face, ref: str):
    return eventually(face.broker.executions,
                      lambda xs: any(e.order_ref == ref and e.commission is not None for e in xs))


def test_market_order_fills_with_order_ref_and_commission(face):
    status = face.broker.place_order(order("c-1", 2))
    assert status.order_ref == "c-1" and status.contract_code == "MBTZ26" and status.quantity == 2
    (ex,) = [e for e in with_commission(face, "c-1") if e.order_ref == "c-1"]
    assert (ex.side, ex.quantity, ex.price, ex.account) == ("BUY", D(2), D(95000), ACCOUNT)
    assert ex.contract.code == "MBTZ26" and ex.contract.multiplier == D("0.1")
    assert ex.commission == D(2) and ex.commission_currency == "USD"
    assert ex.time.tzinfo is not None and ex.exec_id.startswith(ex.base_exec_id + ".")
    (st,) = eventually(lambda: [o for o in face.broker.orders() if o.order_ref == "c-1"],
                       lambda os: os and os[0].status == "Filled")
    assert st.filled == 2 and st.is_done


def test_duplicate_order_ref_is_refused(face):
    face.broker.place_order(order("c-2", 1))
    with pytest.raises(BrokerError):
        face.broker.place_order(order("c-2", 1))
    eventually(face.broker.executions, lambda xs: len(xs) == 1)
    assert len(face.exchange.orders()) == 1  # the second never reached the exchange


def test_cancel_a_resting_limit_order(face):
    st = face.broker.place_order(order("c-3", 1, limit="90000"))
    assert st.status == "Submitted" and st.filled == 0
    st = face.broker.cancel_order("c-3")
    assert st.status == "Cancelled" and st.filled == 0
    assert face.exchange.orders()[0].status == "Cancelled"
    assert face.broker.executions() == []


def test_partial_fill_then_cancel(face):
    face.exchange.fault_partial_fill(qty=D(1))
    face.broker.place_order(order("c-4", 3))
    (ex,) = eventually(face.broker.executions)
    assert ex.quantity == 1 and ex.order_ref == "c-4"
    (st,) = eventually(lambda: [o for o in face.broker.orders() if o.order_ref == "c-4"],
                       lambda os: os and os[0].filled == 1)
    assert st.status == "Submitted" and st.remaining == 2
    st = face.broker.cancel_order("c-4")
    assert (st.status, st.filled) == ("Cancelled", D(1))
    assert face.exchange.positions()[0].quantity == 1


def test_executions_after_reconnect_and_restart_still_have_every_fill(face):
    face.broker.place_order(order("c-5", 1))
    face.broker.place_order(order("c-6", 10, SPY, "SELL"))
    before = with_commission(face, "c-6")
    face.cut()
    after_cut = eventually(face.broker.executions, lambda xs: len(xs) == 2)
    face.restart()
    after_restart = eventually(face.broker.executions,
                               lambda xs: len(xs) == 2 and all(e.commission for e in xs))
    key = lambda xs: sorted((e.exec_id, e.order_ref, e.quantity, e.price) for e in xs)  # noqa: E731
    assert key(before) == key(after_cut) == key(after_restart)
    # 1 contract at 1.00; 10 SPY at IB's fixed share schedule (0.005 a share, at least 1.00)
    assert sorted(e.commission for e in after_restart) == [D(1), D(1)]


def test_orders_found_by_order_ref_after_reconnect_and_restart(face):
    face.broker.place_order(order("c-7", 1))
    face.broker.place_order(order("c-8", 1, limit="90000"))
    for step in (face.cut, face.restart):
        step()
        found = {o.order_ref: o for o in eventually(face.broker.orders, lambda os: len(os) >= 2)}
        assert found["c-7"].status == "Filled" and found["c-7"].filled == 1
        assert found["c-8"].status == "Submitted" and found["c-8"].perm_id
    with pytest.raises(BrokerError):
        face.broker.place_order(order("c-7", 1))  # still known: never sent twice


def test_snapshot_positions_and_cash(face):
    face.broker.place_order(order("c-9", 3))
    face.broker.place_order(order("c-10", 10, SPY))
    with_commission(face, "c-10")
    snap = face.broker.snapshot()
    assert snap.account == ACCOUNT
    held = {p.contract.code: (p.quantity, p.avg_cost) for p in snap.positions}
    assert held == {"MBTZ26": (D(3), D(9500)), "SPY": (D(10), D(500))}  # IB: avgCost x mult
    # 100000 - 10 x 500 (shares) - 3 x 1.00 - 1.00 (commissions: 10 shares pay IB's 1.00 minimum)
    assert dict(snap.cash)["USD"] == D(94996)
    assert dict(snap.unsettled_pnl).get("USD", D(0)) == 0


def test_external_trade_shows_without_order_ref(face):
    face.exchange.external_trade("SPY", D(-5), D("501"))
    (ex,) = eventually(face.broker.executions)
    assert (ex.order_ref, ex.side, ex.quantity, ex.price) == ("", "SELL", D(5), D(501))
    assert ex.contract.code == "SPY"
    (pos,) = face.broker.snapshot().positions
    assert pos.quantity == -5


def test_both_faces_forget_yesterday_and_say_since_when(face):
    """With a day window (IB's own behaviour) a filled order and its execution of the day before
    are reported by neither face after midnight, a resting order is, and `memory_since` tells the
    start of the day; the same orderRef is then taken again (IB refuses nothing it forgot)."""
    import datetime as dt

    face.exchange.set_clock(dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.timezone.utc))
    face.exchange.set_day_window("America/New_York")
    face.broker.place_order(order("d-1", 1))
    face.broker.place_order(order("d-2", 1, limit="90000"))  # rests
    eventually(face.broker.executions, lambda xs: [e.order_ref for e in xs] == ["d-1"])
    face.exchange.set_clock(dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.timezone.utc))
    face.restart()  # a new process: what the broker tells now
    morning = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.timezone.utc)
    assert face.broker.memory_since(morning) == dt.datetime(2026, 12, 2, 5, 0, tzinfo=dt.timezone.utc)
    assert face.broker.executions() == []
    assert [o.order_ref for o in face.broker.orders()] == ["d-2"]
    face.broker.place_order(order("d-1", 1))  # forgotten, so not a duplicate: the double trade to guard against
    assert len([o for o in face.exchange.orders() if o.order_ref == "d-1"]) == 1  # the new one, today's
