"""The simulated exchange over real SQLite files: fills, account arithmetic, persistence, faults."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from decimal import Decimal as D

import pytest

from tradeledger.broker.base import (
    BUY, LIMIT, SELL, BrokerError, Contract, Execution, OrderRequest,
)
from tradeledger.broker.simexchange import (
    SimExchange, average_price, is_marketable, next_revision, partial_cap, variation,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
MBT = Contract("MBTZ26", "FUT", "MBT", "CME", "USD", D("0.1"), "202612")
MES = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612")
CL = Contract("CLK20", "FUT", "CL", "NYMEX", "USD", D(1000), "202005")
SPY = Contract("SPY", "STK", "SPY", "SMART", "USD")
EXEC_ID = re.compile(r"^[0-9a-f]{8}\.[0-9a-f]{8}\.01\.[0-9a-f]{2}$")


@pytest.fixture
def x(tmp_path):
    ex = SimExchange(tmp_path / "sim.db", commission_per_contract=D("1.25"))
    ex.set_clock(T0)
    for k in (MBT, MES, CL, SPY):
        ex.add_contract(k)
    yield ex
    ex.close()


def mkt(ref, k, side, qty):
    return OrderRequest(ref, k, side, D(qty))


def lmt(ref, k, side, qty, limit):
    return OrderRequest(ref, k, side, D(qty), LIMIT, D(limit))


# --- pure functions ---

def test_pure_functions():
    assert is_marketable(BUY, D(100), D(100)) and not is_marketable(BUY, D(99), D(100))
    assert is_marketable(SELL, D(-5), D(-6)) is False and is_marketable(SELL, D(-6), D(-5))
    assert variation(D(2), D("90150"), D("90500"), D("0.1")) == D("70")
    assert variation(D(0), D(1), D(2), D(5)) == 0 and variation(D(1), None, D(2), D(5)) == 0
    assert average_price(D(1), D(10), D(1), D(20)) == D(15)
    assert average_price(D(2), D(10), D(-1), D(20)) == D(10)
    assert average_price(D(1), D(10), D(-3), D(20)) == D(20)
    assert next_revision("0000e859.603f1a4b.01.01") == "0000e859.603f1a4b.01.02"
    assert next_revision("0000e859.603f1a4b.01.0f") == "0000e859.603f1a4b.01.10"
    assert partial_cap(D(5), {"ratio": "0.5"}) == D(2)
    assert partial_cap(D(5), {"qty": "9"}) == D(5)


# --- orders and fills ---

def test_market_order_fills_at_current_price(x):
    x.set_price("MESZ26", D("5012.25"))
    st = x.place_order(mkt("o1", MES, BUY, 2))
    assert (st.status, st.filled, st.broker_order_id, st.is_done) == ("Filled", D(2), 1, True)
    [e] = x.executions()
    assert EXEC_ID.match(e.exec_id) and e.exec_id.endswith(".01.01")
    assert (e.side, e.quantity, e.price, e.order_ref) == (BUY, D(2), D("5012.25"), "o1")
    assert (e.time, e.account, e.broker_order_id, e.perm_id) == (T0, "DU1234567", 1, st.perm_id)
    assert (e.commission, e.commission_currency) == (D("2.50"), "USD")


def test_market_order_without_price_is_rejected(x):
    st = x.place_order(mkt("o1", MES, BUY, 1))
    assert st.status == "Rejected" and "no market price for MESZ26" in st.reason
    assert x.executions() == [] and x.positions() == []


def test_zero_and_negative_prices_trade(x):
    x.set_price("CLK20", D("-37.63"))
    x.place_order(mkt("o1", CL, BUY, 1))
    x.set_price("CLK20", D("0"))
    x.place_order(mkt("o2", CL, SELL, 1))
    assert [e.price for e in x.executions()] == [D("-37.63"), D(0)]
    assert x.unsettled_pnl() == {"USD": D("37630")}  # 1 x 37.63 x 1000


def test_limit_order_fills_when_marketable_else_rests(x):
    x.set_price("MESZ26", D(5000))
    assert x.place_order(lmt("b1", MES, BUY, 1, 5001)).status == "Filled"
    assert x.executions()[0].price == D(5000)  # marketable: trades at the market
    st = x.place_order(lmt("b2", MES, BUY, 1, 4990))
    s2 = x.place_order(lmt("s1", MES, SELL, 1, 5010))
    assert (st.status, s2.status) == ("Submitted", "Submitted")
    assert {o.order_ref for o in x.open_orders()} == {"b2", "s1"}
    assert x.set_price("MESZ26", D(4995)) == []
    fills = x.set_price("MESZ26", D(4985))  # gaps through the bid: fills at its limit
    assert [(f.order_ref, f.price) for f in fills] == [("b2", D(4990))]
    assert [f.order_ref for f in x.set_price("MESZ26", D(5010))] == ["s1"]
    assert x.open_orders() == [] and x.positions()[0].quantity == D(1)


def test_limit_order_before_any_price_rests(x):
    assert x.place_order(lmt("b", MES, BUY, 1, 5000)).status == "Submitted"
    assert x.release_order("b").status == "Submitted"  # nothing to trade against yet
    assert [f.price for f in x.set_price("MESZ26", D(4999))] == [D(5000)]


def test_order_ids_increase_perm_ids_unique_and_duplicates_refused(x):
    x.set_price("MESZ26", D(5000))
    sts = [x.place_order(mkt(f"o{i}", MES, BUY, 1)) for i in range(3)]
    assert [s.broker_order_id for s in sts] == [1, 2, 3]
    assert len({s.perm_id for s in sts}) == 3
    with pytest.raises(BrokerError, match="duplicate order_ref"):
        x.place_order(mkt("o1", MES, SELL, 1))
    assert len(x.orders()) == 3 and x.positions()[0].quantity == D(3)
    with pytest.raises(BrokerError):
        x.place_order(OrderRequest("bad", MES, BUY, D(0)))
    # A wire client may pick its own id; the next one continues after it.
    assert x.place_order(mkt("w", MES, BUY, 1), order_id=10).broker_order_id == 10
    assert x.next_order_id() == 11
    with pytest.raises(BrokerError, match="duplicate order id"):
        x.place_order(mkt("w2", MES, BUY, 1), order_id=10)


def test_cancel(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(lmt("r", MES, BUY, 1, 4000))
    assert x.cancel_order("r").status == "Cancelled"
    assert x.cancel_order("r").status == "Cancelled"  # idempotent
    assert x.set_price("MESZ26", D(3000)) == []
    with pytest.raises(BrokerError, match="no order"):
        x.cancel_order("nope")


def test_contract_conflict_refused_and_nothing_stored(x):
    x.set_price("MESZ26", D(5000))
    wrong = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(50), "202612")
    with pytest.raises(BrokerError, match="already traded as"):
        x.place_order(mkt("o", wrong, BUY, 1))
    assert x.orders() == []


# --- account arithmetic ---

def test_futures_settlement_variation_margin_by_hand(x):
    # MBT x0.1: buy 1 @90050, buy 1 @90150, settle 90500.
    # lot 1: (90500-90050) x 0.1 = 45; lot 2: (90500-90150) x 0.1 = 35; VM = 80.
    # Booked as the model does it: at the 2nd fill 1 x (90150-90050) x 0.1 = 10 unsettled,
    # at settlement 10 + 2 x (90500-90150) x 0.1 = 80. Commissions 2 x 1.25.
    x.set_price("MBTZ26", D(90050))
    x.place_order(mkt("a", MBT, BUY, 1))
    assert x.cash() == {"USD": D("-1.25")}  # no cash at a futures fill but the commission
    x.set_price("MBTZ26", D(90150))
    x.place_order(mkt("b", MBT, BUY, 1))
    assert x.unsettled_pnl() == {"USD": D(10)}
    assert x.unsettled_pnl(include_open=True) == {"USD": D(10)}
    assert x.settle("MBTZ26", D(90500), dt.date(2026, 3, 2)) == D(80)
    assert x.cash() == {"USD": D("77.50")}
    assert x.unsettled_pnl() == {"USD": D(0)}
    [pos] = x.positions()
    assert (pos.quantity, pos.avg_cost) == (D(2), D("9010.0"))  # IB: avg price x multiplier
    # Next day: sell 2 @90400 rolls 2 x (90400-90500) x 0.1 = -20; settle while flat moves it.
    x.set_price("MBTZ26", D(90400))
    x.place_order(mkt("c", MBT, SELL, 2))
    assert x.settle("MBTZ26", D(90300), dt.date(2026, 3, 3)) == D(-20)
    assert x.cash() == {"USD": D("77.50") - 20 - D("2.50")}
    assert x.positions() == []
    assert x.settlement_prices("MBTZ26") == [(dt.date(2026, 3, 2), D(90500)),
                                             (dt.date(2026, 3, 3), D(90300))]


def test_settle_is_idempotent_per_day(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(mkt("a", MES, BUY, 1))
    assert x.settle("MESZ26", D(5010), dt.date(2026, 3, 2)) == D(50)
    assert x.settle("MESZ26", D(5010), dt.date(2026, 3, 2)) == 0
    with pytest.raises(BrokerError, match="already settled"):
        x.settle("MESZ26", D(5020), dt.date(2026, 3, 2))
    assert x.cash() == {"USD": D(50) - D("1.25")}


def test_flip_books_close_and_open(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(mkt("a", MES, BUY, 1))
    x.set_price("MESZ26", D(5010))
    x.place_order(mkt("b", MES, SELL, 3))  # rolls +1 x 10 x 5 = 50, now short 2 @5010
    x.set_price("MESZ26", D(5000))
    assert x.unsettled_pnl() == {"USD": D(50)}
    assert x.unsettled_pnl(include_open=True) == {"USD": D(150)}  # + -2 x -10 x 5
    [pos] = x.positions()
    assert (pos.quantity, pos.avg_cost) == (D(-2), D(5010 * 5))


def test_shares_move_cash_at_the_fill(x):
    x.set_commission(D("0.005"), "SPY")
    x.deposit("USD", D(10000))
    x.set_price("SPY", D("501.10"))
    x.place_order(mkt("a", SPY, BUY, 10))
    x.set_price("SPY", D("502.30"))
    x.place_order(mkt("b", SPY, SELL, 4))
    # IB's fixed schedule: 0.005 a share but at least 1.00 an execution (10 and 4 shares: 1.00 each)
    assert x.cash() == {"USD": D(10000) - D("5011.0") + D("2009.2") - D("2.00")}
    [pos] = x.positions()
    assert (pos.quantity, pos.avg_cost) == (D(6), D("501.10"))
    assert x.settle("SPY", D(503), dt.date(2026, 3, 2)) == 0
    assert x.unsettled_pnl() == {}
    kinds = [kind for _, _, _, kind, _ in x.cash_journal()]
    assert kinds == ["deposit", "trade", "commission", "trade", "commission"]


def test_external_trade_has_no_order_ref(x):
    x.set_price("MESZ26", D(5000))
    e = x.external_trade("MESZ26", D(-2))
    assert (e.order_ref, e.broker_order_id, e.side, e.quantity, e.price) == (
        "", 0, SELL, D(2), D(5000))
    assert e.perm_id > 0 and e.commission == D("2.50")
    assert x.orders() == [] and x.positions()[0].quantity == D(-2)
    e2 = x.external_trade(SPY, D(3), D(500))
    assert (e2.side, e2.price) == (BUY, D(500))
    with pytest.raises(BrokerError):
        x.external_trade("UNKNOWN", D(1), D(1))


# --- persistence ---

def test_state_persists_across_reopen(tmp_path):
    path = tmp_path / "sim.db"
    with SimExchange(path) as a:
        a.set_clock(T0)
        a.set_commission(D("0.62"), "MESZ26")
        a.add_contract(MES)
        a.deposit("USD", D("1000.00"))
        a.set_price("MESZ26", D("5000.25"))
        a.place_order(mkt("a", MES, BUY, 2))
        a.place_order(lmt("r", MES, BUY, 1, 4000))
        a.fault_late_commission(3)
        before = (a.executions(), a.orders(), a.cash(), a.positions(), a.unsettled_pnl())
    with SimExchange(path) as b:
        assert (b.executions(), b.orders(), b.cash(), b.positions(), b.unsettled_pnl()) == before
        assert b.price("MESZ26") == D("5000.25") and b.now() == T0
        assert b.pending_faults() == [("late_commission", {"n_polls": 3}, 1)]
        assert b.place_order(mkt("c", MES, BUY, 1)).broker_order_id == 3
        assert b.set_price("MESZ26", D(3999))[0].order_ref == "r"  # resting order survived
        ids = [e.exec_id for e in b.executions()]
        assert len(set(ids)) == 3
    with pytest.raises(BrokerError, match="holds account DU1234567"):
        SimExchange(path, account="DU7654321")


def test_another_process_then_this_one(tmp_path):
    path = tmp_path / "sim.db"
    script = f"""
from decimal import Decimal as D
from tradeledger.broker.base import Contract, OrderRequest
from tradeledger.broker.simexchange import SimExchange
x = SimExchange({str(path)!r})
k = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612")
x.set_price("MESZ26", D("5000"))
x.place_order(OrderRequest("from-child", k, "BUY", D(1)))
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    with SimExchange(path) as x:
        [e] = x.executions()
        assert e.order_ref == "from-child" and x.positions()[0].quantity == 1


def test_a_failed_call_leaves_nothing_half_done(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(mkt("a", MES, BUY, 1))
    state = (x.executions(), x.cash(), x.positions(), x.orders())
    with pytest.raises(BrokerError):
        x.correct_execution("ffffffff.ffffffff.01.01", new_price=D(1))
    with pytest.raises(BrokerError):
        x.correct_execution(state[0][0].exec_id, new_qty=D(0))
    assert (x.executions(), x.cash(), x.positions(), x.orders()) == state


# --- faults ---

def test_partial_fill_then_cancel(x):
    x.set_price("MESZ26", D(5000))
    x.fault_partial_fill(ratio=D("0.4"))
    st = x.place_order(mkt("p", MES, BUY, 5))
    assert (st.status, st.filled, st.remaining) == ("Submitted", D(2), D(3))
    x.set_price("MESZ26", D(4999))  # held: the rest does not trade on its own
    assert x.orders()[0].filled == D(2)
    st = x.cancel_order("p")
    assert (st.status, st.filled) == ("Cancelled", D(2))
    assert x.positions()[0].quantity == D(2)
    assert x.place_order(mkt("q", MES, BUY, 5)).status == "Filled"  # fault consumed


def test_partial_fill_release_and_limit(x):
    x.set_price("MESZ26", D(5000))
    x.fault_partial_fill(qty=D(1))
    assert x.place_order(lmt("p", MES, BUY, 3, 4990)).status == "Submitted"
    assert [f.quantity for f in x.set_price("MESZ26", D(4990))] == [D(1)]
    st = x.release_order("p")
    assert (st.status, st.filled) == ("Filled", D(3))
    assert [e.quantity for e in x.executions()] == [D(1), D(2)]


def test_duplicate_executions(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(mkt("a", MES, BUY, 1))
    x.place_order(mkt("b", MES, BUY, 1))
    x.fault_duplicate_executions()
    twice = x.executions()
    assert len(twice) == 4 and len({e.exec_id for e in twice}) == 2
    assert len(x.executions()) == 2


def test_late_commission_then_known(x):
    x.set_price("MESZ26", D(5000))
    x.fault_late_commission(n_polls=2)
    x.place_order(mkt("a", MES, BUY, 2))
    x.place_order(mkt("b", MES, BUY, 1))  # only the next order is late
    polls = [[e.commission for e in x.executions()] for _ in range(3)]
    assert polls == [[None, D("1.25")], [None, D("1.25")], [D("2.50"), D("1.25")]]
    assert x.cash() == {"USD": D("-3.75")}  # the broker debited it at the fill anyway


def test_correction_replaces_price_in_futures_pnl(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(mkt("a", MES, BUY, 2))
    first = x.executions()[0]
    x.set_clock(T0 + dt.timedelta(minutes=5))
    fixed = x.correct_execution(first.exec_id, new_price=D("4999.50"))
    assert fixed.exec_id == first.exec_id[:-2] + "02"
    assert fixed.base_exec_id == first.base_exec_id and fixed.order_ref == "a"
    assert (fixed.price, fixed.quantity, fixed.commission) == (D("4999.50"), D(2), D("2.50"))
    assert fixed.time == T0 + dt.timedelta(minutes=5)
    assert [e.exec_id for e in x.executions()] == [first.exec_id, fixed.exec_id]
    # Bought 0.50 cheaper: 2 x 0.5 x 5 = 5 more P&L, settled into cash with the rest.
    assert x.unsettled_pnl() == {"USD": D(5)}
    assert x.settle("MESZ26", D(5010), dt.date(2026, 3, 2)) == D(5) + 2 * 10 * 5
    # Correcting again bumps the latest version, whichever id is given.
    again = x.correct_execution(first.exec_id, new_qty=D(3))
    assert again.exec_id.endswith(".03") and again.price == D("4999.50")
    assert x.positions()[0].quantity == D(3)
    # The extra contract was bought at 4999.50 and is now marked at 5010: 10.5 x 5.
    assert x.unsettled_pnl() == {"USD": D("52.5")}
    assert x.cash() == {"USD": D(105) - D("3.75")}  # commission follows the new quantity


def test_correction_of_shares_moves_cash(x):
    x.set_commission(D(0), "SPY")
    x.set_price("SPY", D(500))
    x.place_order(mkt("a", SPY, BUY, 10))
    e = x.executions()[0]
    x.correct_execution(e.exec_id, new_price=D("499.90"), new_qty=D(8))
    assert x.cash() == {"USD": D("-3999.20")}
    [pos] = x.positions()
    assert (pos.quantity, pos.avg_cost) == (D(8), D("499.90"))


def test_disconnect_fault_is_persistent_until_consumed(tmp_path, x):
    x.fault_disconnect(2)
    x.close()
    y = SimExchange(x.path)
    assert y.disconnect_pending()
    assert [y.take_call_fault() for _ in range(3)] == ["disconnect", "disconnect", None]
    y.close()


def test_executions_since(x):
    x.set_price("MESZ26", D(5000))
    x.place_order(mkt("a", MES, BUY, 1))
    x.set_clock(T0 + dt.timedelta(hours=1))
    x.place_order(mkt("b", MES, BUY, 1))
    later = x.executions(since=T0 + dt.timedelta(minutes=30))
    assert [e.order_ref for e in later] == ["b"]
    assert all(isinstance(e, Execution) and e.time.tzinfo is not None for e in later)


def test_killed_mid_stream_leaves_whole_fills_only(tmp_path):
    """SIGKILL a process placing orders in a loop; every fill is then whole: executions,
    order fills, position and cash all agree."""
    path = tmp_path / "sim.db"
    script = f"""
import sys
from decimal import Decimal as D
from tradeledger.broker.base import Contract, OrderRequest
from tradeledger.broker.simexchange import SimExchange
x = SimExchange({str(path)!r}, commission_per_contract=D("0.62"))
k = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612")
x.set_price("MESZ26", D("5000"))
i = 0
while True:
    x.set_price("MESZ26", D(5000 + i % 7))
    x.place_order(OrderRequest(f"o{{i}}", k, "BUY" if i % 3 else "SELL", D(1 + i % 2)))
    i += 1
    if i == 20:
        print("go", flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"go"
    child.kill()
    child.wait()
    with SimExchange(path) as x:
        execs = x.executions()
        assert len(execs) >= 20
        assert sum(o.filled for o in x.orders()) == sum(e.quantity for e in execs)
        held = sum(p.quantity for p in x.positions())
        assert held == sum(e.signed_quantity for e in execs)
        pnl = sum((e2.price - e1.price) * sum(e.signed_quantity for e in execs[:i + 1]) * 5
                  for i, (e1, e2) in enumerate(zip(execs, execs[1:])))
        assert x.unsettled_pnl() == {"USD": pnl}
        assert x.cash() == {"USD": -sum(e.commission for e in execs)}


def test_commissions_follow_ibs_fixed_schedule():
    from tradeledger.broker.simexchange import commission_for

    assert commission_for("FUT", D("1.25"), D(3), D(6000), D(5)) == D("3.75")  # per contract
    assert commission_for("STK", D("0.005"), D(270), D(600), D(1)) == D("1.35")  # per share
    assert commission_for("STK", D("0.005"), D(10), D(600), D(1)) == D("1.00")  # the minimum
    assert commission_for("STK", D("0.005"), D(1000), D("0.30"), D(1)) == D("3.000")  # at most 1% of 300
    assert commission_for("STK", D("0.005"), D(10), D("2"), D(1)) == D("0.20")  # 1% of 20, below the minimum
