"""Execution corrections booked by reversal, through the engine on the simulated broker.

The exchange issues the correction (`SimExchange.correct_execution`: suffix .01 -> .02, its own
position, cash and commission adjusted); `sync_fills` sees the newer version and
`engine/corrections.py` reverses the original entry and books the corrected one. Every figure
below is worked by hand in the comments; every test ends with a clean beancount check.

Contract MESZ26: multiplier 5, commission 1.00 per contract.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.broker.base import Contract
from tradeledger.broker.sim import SimBroker
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import Holding
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.accounting.entries import HolderCorrection, futures_correction
from tradeledger.errors import CorrectionUnsupported
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.accounting.holdings import marks
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
MES = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612", "MES")
SPY = Contract("SPY", "STK", "SPY", "ARCA", "USD")
T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=UTC)


class World:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.env = init_environment(tmp_path / "home", "paper", "sim", None)
        self.exchange = SimExchange(tmp_path / "sim.db", commission_per_contract=D("1.00"))
        self.exchange.set_clock(T0)
        self.broker = SimBroker(self.exchange)
        self.broker.connect()
        self.run = 0

    def trade(self, contract, targets: dict, price, minutes: int = 1):
        """Move the clock, set the price, and trade the holders to `targets` in one order."""
        self.exchange.advance_clock(dt.timedelta(minutes=minutes))
        self.exchange.set_price(contract.code, D(price))
        self.run += 1
        now = self.exchange.now()
        lines = [TargetLine(h, "X", contract, D(t), D(price)) for h, t in targets.items()]
        order_plan = plan(self.run, lines, holder_positions(self.env.ledger, self.env.chart),
                          Limits(), {})
        record_plan(self.env, order_plan, now)
        send_planned(self.env, self.broker, self.run, now)
        return self.sync()

    def sync(self):
        return sync_fills(self.env, self.broker)

    def settle(self, contract, price, day):
        self.exchange.settle(contract.code, D(price), day)
        when = dt.datetime.combine(day, dt.time(21), tzinfo=UTC)
        mark_day(self.env, {contract.code: contract}, day,
                 {contract.code: D(price)}, when)

    def correct(self, exec_id, price=None, qty=None):
        self.exchange.advance_clock(dt.timedelta(minutes=1))
        return self.exchange.correct_execution(exec_id, price and D(price), qty and D(qty))

    def income(self, account):
        return self.env.ledger.income().get((account, "USD"), D(0))

    def cash(self):
        return self.env.ledger.balances().get((self.env.chart.cash, "USD"), D(0))

    def broker_cash_plus_unsettled(self):
        return self.exchange.cash().get("USD", D(0)) + self.exchange.unsettled_pnl().get("USD", D(0))

    def positions(self):
        return holder_positions(self.env.ledger, self.env.chart)

    def fills(self):
        with read_connection(self.env.engine) as conn:
            return conn.execute(sa.select(tables.fill).order_by(tables.fill.c.id)).all()

    def assert_beancount_clean(self):
        path = self.tmp / "ledger.beancount"
        export_beancount(self.env.ledger, path)
        result = check(self.env.ledger, path)
        assert result.ok, result


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.exchange.close()


def test_price_correction_after_a_settlement(w):
    w.trade(MES, {"A": 2}, 5000)  # A buys 2 @ 5000, commission 2.00
    [fill] = w.exchange.executions()
    w.settle(MES, 5010, T0.date())  # 2 x (5010 - 5000) x 5 = +100
    assert w.income("Income:Trading:A") == D(-100)

    w.correct(fill.exec_id, price=4998)
    report = w.sync()
    assert report.corrected == [fill.exec_id[:-2] + "02"] and report.corrections == []
    # mark M = 5010; VM before the fill 0; [2 x (5010 - 4998) - 2 x (5010 - 5000)] x 5 = +20
    # total: 100 + 20 = 120 = 2 x (5010 - 4998) x 5, as if the fill had been right at first.
    assert w.income("Income:Trading:A") == D(-120)
    assert w.income("Expenses:Commissions:A") == D("2.00")  # old 2.00 reversed, new 2.00
    assert w.cash() == D("118.00") == w.broker_cash_plus_unsettled()
    assert w.positions() == {("A", "MESZ26"): D(2)}
    with read_connection(w.env.engine) as conn:
        assert marks(conn)[("A", "MESZ26")] == D(5010)  # the mark itself unchanged
    old, new = w.fills()
    assert old.superseded_by == new.id and new.superseded_by is None
    assert (new.exec_key, D(new.price) / 10**9) == (old.exec_key, D(4998))

    # A second correction (.03) replaces .02 the same way; replays book nothing.
    w.correct(fill.exec_id, price=5001)
    assert len(w.sync().corrected) == 1
    # [2 x (5010 - 5001) - 2 x (5010 - 4998)] x 5 = -30 on top of 120: 90 = 2 x 9 x 5
    assert w.income("Income:Trading:A") == D(-90)
    again = w.sync()
    assert again.corrected == [] and again.booked == [] and again.replays == 1
    assert [f.superseded_by is None for f in w.fills()] == [False, False, True]
    w.assert_beancount_clean()


def test_quantity_correction_with_later_fill_and_settlement(w):
    w.trade(MES, {"A": 2}, 5000)  # fill 1: +2 @ 5000
    first = w.exchange.executions()[0]
    w.trade(MES, {"A": 3}, 5020)  # fill 2: +1 @ 5020; VM 2 x 20 x 5 = 200
    w.settle(MES, 5030, T0.date())  # 3 x 10 x 5 = 150
    assert w.income("Income:Trading:A") == D(-350)

    w.correct(first.exec_id, qty=3)  # it was 3 @ 5000, not 2
    w.sync()
    # X = 3, M = 5030, q_old = 2, q_new = 3: [3 x 30 - 2 x 30] x 5 = +150
    # total 200 + 150 + 150 = 500 = 3 x (5030 - 5000) x 5 + 1 x (5030 - 5020) x 5 = 450 + 50
    assert w.income("Income:Trading:A") == D(-500)
    assert w.positions() == {("A", "MESZ26"): D(4)}
    assert w.income("Expenses:Commissions:A") == D("4.00")  # 3.00 (corrected) + 1.00
    assert w.cash() == D("496.00") == w.broker_cash_plus_unsettled()
    with read_connection(w.env.engine) as conn:
        orders = conn.execute(sa.select(tables.broker_order).order_by(tables.broker_order.c.id)).all()
    assert [D(o.filled) / 10**9 for o in orders] == [D(3), D(1)]
    w.assert_beancount_clean()


def test_quantity_correction_when_the_holder_is_flat(w):
    w.trade(MES, {"A": 2}, 5000)  # +2 @ 5000
    first = w.exchange.executions()[0]
    w.trade(MES, {"A": 0}, 5010)  # -2 @ 5010: 2 x 10 x 5 = +100
    w.correct(first.exec_id, qty=3)
    w.sync()
    # flat: M = p_new = 5000: [3 x 0 - 2 x 0] x 5 = 0; the residual +1 is marked at 5000
    assert w.income("Income:Trading:A") == D(-100)
    assert w.positions() == {("A", "MESZ26"): D(1)}
    with read_connection(w.env.engine) as conn:
        assert marks(conn)[("A", "MESZ26")] == D(5000)
    # Settle 5020: the ledger marks +1 from 5000 (+100); the exchange had it at 5010 plus the
    # 50 its own correction booked: both now hold 200 of P&L, minus 3.00 (corrected buy)
    # + 2.00 (the sell) of commission.
    w.settle(MES, 5020, T0.date())
    assert w.income("Income:Trading:A") == D(-200)
    assert w.cash() == D("195.00") == w.broker_cash_plus_unsettled()
    w.assert_beancount_clean()


def test_split_fill_price_correction_and_refused_quantity_change(w):
    w.trade(MES, {"A": 2, "B": 1}, 5000)  # one order of 3, A 2 and B 1, commission 3.00
    [fill] = w.exchange.executions()
    w.correct(fill.exec_id, price=5002)
    assert len(w.sync().corrected) == 1
    # A: 2 x (5000 - 5002) x 5 = -20; B: 1 x (-2) x 5 = -10 (they paid more)
    assert w.income("Income:Trading:A") == D(20) and w.income("Income:Trading:B") == D(10)
    assert w.income("Expenses:Commissions:A") == D("2.00")
    assert w.income("Expenses:Commissions:B") == D("1.00")
    assert w.cash() == D("-33.00") == w.broker_cash_plus_unsettled()

    w.correct(fill.exec_id, qty=4)
    report = w.sync()
    assert report.corrected == [] and len(report.corrections) == 1
    assert "split between 2 holders" in report.correction_reasons[report.corrections[0]]
    assert w.positions() == {("A", "MESZ26"): D(2), ("B", "MESZ26"): D(1)}  # nothing written
    assert len(w.sync().corrections) == 1  # reported again on every sync
    w.assert_beancount_clean()


def test_shares_correction_rebooks_a_whole_lot_and_refuses_a_broken_one(w):
    w.exchange.deposit("USD", D(100000))
    w.trade(SPY, {"A": 10}, 500)  # lot of 10 @ 500, cash -5000, commission 1.00 (IB's share minimum)
    [fill] = w.exchange.executions()
    w.correct(fill.exec_id, price="499.5")
    assert len(w.sync().corrected) == 1
    # the lot is reversed and reopened at 499.5: cash -4995.00 - 1.00 (the deposit was opened with the account)
    assert w.cash() == D(100000) - D("4996.00")
    [(cost, units)] = w.env.ledger.lots(w.env.chart.holdings("A"), "SPY")
    assert (cost.number, units, cost.label) == (D("499.5"), D(10), fill.base_exec_id)

    w.trade(SPY, {"A": 4}, 510)  # sells 6 out of that lot: no longer whole
    w.correct(fill.exec_id, price="499")
    report = w.sync()
    assert report.corrected == [] and "no longer whole" in list(report.correction_reasons.values())[0]
    w.assert_beancount_clean()


def test_futures_correction_is_pure_and_refuses_a_flipped_position():
    chart = Chart("DU1234567")
    part = HolderCorrection("A", D(2), D(3))
    postings, after = futures_correction(chart, MES, part, Holding(D(3), D(5030)), D(0), D(5000),
                                         D(5000))
    assert after == Holding(D(4), D(5030))
    cash = [p.units for p in postings if p.account == chart.cash]
    assert cash == [D(150)]  # [3 x 30 - 2 x 30] x 5
    # bought 2, then sold 1 more than held since: reversing +2 from +1 would cross zero
    with pytest.raises(CorrectionUnsupported, match="changed sign"):
        futures_correction(chart, MES, part, Holding(D(1), D(5030)), D(0), D(5000), D(5000))
