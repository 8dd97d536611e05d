"""A correction of a fill that `adjust attribute` gave to a strategy books to that strategy.

An external BUY 2 MBTZ26 @ 90000 lands in Unattributed; the trader attributes it to `trend`
(a transfer at the fill price, its commission moved with it); IB then corrects the execution
(a new execId version). The correction reverses the fill's entry (and its late commission's)
and the attribution's, and books the corrected fill to trend: the position, its P&L since the
fill and the commission end where the attribution put them, as if the corrected fill had been
attributed. Each test runs through the engine on the simulated broker, on SQLite and PostgreSQL.

MBT: multiplier 0.1, USD, commission 1.00 per contract. The scenario (`attributed`):
- trend buys 1 @ 90000 through its own order (commission 1.00);
- an outside BUY 1 @ 90100 (stays unattributed: U's other position), commission 1.00;
- the outside BUY 2 @ 90000 (the fill that will be attributed and corrected), commission 2.00;
  U's 1 is marked 90100 -> 90000: -10.00. U holds 3 @ 90000.
- settlement day 1 at 90500: trend 1 x 500 x 0.1 = +50.00, U 3 x 500 x 0.1 = +150.00;
- day 2, the 2 are attributed to trend at 90000: U's 3 marked 90500 -> 90000 (-150.00), trend's
  1 the same (-50.00); trend holds 3 @ 90000, U 1 @ 90000; the 2.00 commission moves to trend;
- settlement day 2 at 91000: trend 3 x 1000 x 0.1 = +300.00, U +100.00.
Before any correction: trend 300.00 (1 unit 90000 -> 91000: 100; 2 units: 200), U 90.00 (its one
unit 90100 -> 91000).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.broker.base import BUY, Execution
from tradeledger.engine import tables
from tradeledger.engine.accounting.holdings import marks, verify_books
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.trading.fills import SyncReport, book_execution, list_fills, sync_fills
from tradeledger.engine.trading.marking import mark_day
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust import adjust
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount
from tradeledger.ledger.numbers import from_scaled
from support import future, sim_world

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
DAY1, DAY2 = dt.date(2026, 12, 1), dt.date(2026, 12, 2)
CONFIG = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1
exchange = "CME"

[strategies.trend]
instruments = { MBT = 1 }

[strategies.carry]
instruments = { MBT = 1 }
"""
TREND, U = "Income:Trading:Trend", "Income:Trading:Unattributed"
C_TREND, C_U = "Expenses:Commissions:Trend", "Expenses:Commissions:Unattributed"


class World:
    def __init__(self, tmp_path, db_url):
        self.tmp = tmp_path
        self.env, self.session = sim_world(tmp_path / "home", CONFIG, T0,
                                           future("MBT", "MBTZ26", "202612", 90000), db_url=db_url)
        self.exchange = self.session.exchange()
        self.contract = self.exchange.contract("MBTZ26")

    def sync(self) -> SyncReport:
        return sync_fills(self.env, self.session.broker)

    def buy_for_trend(self, qty):
        self.buy({"Trend": qty})

    def buy(self, targets: dict, run: int = 1):
        """One order to bring the strategies to `targets` at the market (90000): one execution."""
        lines = [TargetLine(h, "MBT", self.contract, D(q), D(90000)) for h, q in targets.items()]
        order_plan = plan(run, lines, holder_positions(self.env.ledger, self.env.chart), Limits(), {})
        record_plan(self.env, order_plan, self.session.now())
        send_planned(self.env, self.session.broker, run, self.session.now())

    def settle(self, day, price):
        when = dt.datetime.combine(day, dt.time(21), tzinfo=UTC)
        self.exchange.set_clock(when)
        self.exchange.set_price("MBTZ26", D(price))
        self.exchange.settle("MBTZ26", D(price), day)
        mark_day(self.env, {"MBTZ26": self.contract}, day, {"MBTZ26": D(price)}, when)

    def attribute(self, key):
        self.exchange.set_clock(dt.datetime.combine(DAY2, dt.time(15), tzinfo=UTC))
        now = self.session.now()
        return adjust.book(self.session, lambda conn: adjust.plan_attribute(
            conn, self.session, key, "trend", "mine", now, adjust.new_key("attribute", self.env.chart)), who="test")

    def correct(self, exec_id, price=None, qty=None):
        self.exchange.advance_clock(dt.timedelta(minutes=1))
        return self.exchange.correct_execution(exec_id, price and D(price), qty and D(qty))

    def income(self):
        return {a: -v if a.startswith("Income") else v for (a, _), v in self.env.ledger.income().items()}

    def positions(self):
        return {k: v for k, v in holder_positions(self.env.ledger, self.env.chart).items() if v}

    def entries(self) -> int:
        with read_connection(self.env.engine) as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sa.table("txn"))).scalar()

    def assert_clean(self, broker_agrees=True):
        """db verify, the beancount export, the P&L report and reconciliation: all clean."""
        assert verify_books(self.env.ledger, self.env.chart).ok
        path = self.tmp / "check.beancount"
        export_beancount(self.env.ledger, path)
        result = check(self.env.ledger, path)
        assert result.ok, result
        from tradeledger.reports.pnl import pnl, replayed_pnl
        income = self.income()
        fast = {r["strategy"]: r for r in pnl(self.session)["rows"]}
        slow = {r["strategy"]: r for r in replayed_pnl(self.session)["rows"]}
        for name, commission in (("trend", C_TREND), ("carry", "Expenses:Commissions:Carry"), ("unattributed", C_U)):
            for rows in (fast, slow):
                shown = rows[name]["commissions"] if name in rows else D(0)
                assert shown == income.get(commission, D(0)), (name, rows.get(name))
            if name in fast:  # the maintained balances and the replay agree on everything
                assert {k: fast[name][k] for k in ("realized", "unrealized", "net")} == \
                    {k: slow[name][k] for k in ("realized", "unrealized", "net")}, (fast[name], slow[name])
        from tradeledger.reports.exposure import costs
        by_costs = {r["strategy"]: r["commissions"] for r in costs(self.session)["rows"]}
        for name in set(by_costs) | set(fast):  # report costs says what the ledger (and pnl) says
            assert by_costs.get(name, D(0)) == (fast[name]["commissions"] if name in fast else D(0)), \
                (name, by_costs, {k: v["commissions"] for k, v in fast.items()})
        if broker_agrees:
            recon = reconcile_session(self.session, who="test")
            assert recon.clean, recon.as_json()


@pytest.fixture
def w(tmp_path, db_url):
    world = World(tmp_path, db_url)
    yield world
    world.session.close()


def attributed(w, late_commission=False) -> Execution:
    """The scenario of the module's docstring, up to the second settlement; returns the fill."""
    w.buy_for_trend(1)
    w.exchange.external_trade(w.contract, D(1), D(90100))
    if late_commission:
        w.exchange.fault_late_commission(n_polls=1)
    fill = w.exchange.external_trade(w.contract, D(2), D(90000))
    w.sync()
    w.settle(DAY1, 90500)
    w.attribute(fill.base_exec_id)
    if late_commission:
        assert w.sync().commissions == [fill.base_exec_id]  # booked to trend (attributed_to)
    w.settle(DAY2, 91000)
    income = w.income()
    assert (income[TREND], income[U]) == (D("300.00"), D("90.00"))
    assert (income[C_TREND], income[C_U]) == (D("3.00"), D("1.00"))
    assert w.positions() == {("Trend", "MBTZ26"): D(3), (None, "MBTZ26"): D(1)}
    return fill


def test_the_probe_the_correction_goes_to_trend_not_unattributed(w):
    """The colleague's probe: outside BUY 2 @ 90000, attributed to trend, corrected to 89900.
    The +20.00 (2 x 100 x 0.1) is trend's, which holds the 2 marked at 90000; before the fix it
    went to Income:Trading:Unattributed."""
    fill = w.exchange.external_trade(w.contract, D(2), D(90000))
    w.sync()
    w.attribute(fill.base_exec_id)
    w.correct(fill.exec_id, price=89900)
    assert w.sync().corrected == [fill.base_exec_id + ".02"]
    income = w.income()
    assert (income.get(TREND, D(0)), income.get(U, D(0))) == (D("20.00"), D(0))
    assert income[C_TREND] == D("2.00") and income.get(C_U, D(0)) == 0
    assert w.positions() == {("Trend", "MBTZ26"): D(2)}
    with read_connection(w.env.engine) as conn:
        assert marks(conn) == {("Trend", "MBTZ26"): D(90000)}
    w.assert_clean()


@pytest.mark.parametrize("late_commission", [False, True])
def test_price_correction_books_to_the_strategy_it_was_attributed_to(w, late_commission):
    fill = attributed(w, late_commission)
    w.correct(fill.exec_id, price=89900)
    before = w.entries()
    report = w.sync()
    assert report.corrected == [fill.base_exec_id + ".02"] and report.corrections == []
    # As if the fill had been 2 @ 89900 and attributed: trend's 2 units 89900 -> 91000 = 220.00;
    # U's one unit still 90100 -> 91000 = 90.00; commissions unchanged (2 x 1.00).
    income = w.income()
    assert (income[TREND], income[U]) == (D("320.00"), D("90.00"))
    assert (income[C_TREND], income.get(C_U)) == (D("3.00"), D("1.00"))
    assert w.positions() == {("Trend", "MBTZ26"): D(3), (None, "MBTZ26"): D(1)}
    with read_connection(w.env.engine) as conn:
        assert marks(conn) == {("Trend", "MBTZ26"): D(91000), (None, "MBTZ26"): D(91000)}
        fill_row = [r for r in list_fills(conn, w.env.ledger) if r["fill_id"] == fill.base_exec_id][0]
        alloc = conn.execute(sa.select(tables.fill_alloc.c.holder, tables.fill_alloc.c.quantity).join(
            tables.fill, tables.fill.c.id == tables.fill_alloc.c.fill_id).where(
            tables.fill.c.exec_id == fill.base_exec_id + ".02")).all()
        adj = conn.execute(sa.select(tables.adjustment)).one()
    assert fill_row["price"] == D(89900) and fill_row["strategy"] == "Trend"
    assert [(h, from_scaled(q)) for h, q in alloc] == [("Trend", D(2))]  # booked to trend: the fact
    # Visible in the fill's history: the fill, the attribution, their reversals, the corrected entry.
    reversal_of_attribution = w.env.ledger.reversed_by(adj.txn_id)
    assert reversal_of_attribution is not None
    # reversals of the fill, its late commission (if any) and the attribution, then the corrected entry
    assert w.entries() == before + (4 if late_commission else 3)
    corrected = w.env.ledger.get(w.env.ledger.find_by_key(f"fill:DU1234567:{fill.base_exec_id}.02"))
    assert f"fill-{fill.base_exec_id}" in corrected.links and "attributed to Trend" in corrected.narration
    # A re-sync (and a restart: a fresh sync) books nothing.
    again = w.sync()
    assert again.corrected == [] and again.booked == [] and w.entries() == before + (4 if late_commission else 3)
    w.assert_clean()
    # The next settlement goes to trend from 91000 on: 3 x 200 x 0.1 = 60.00; U 1 x 200 x 0.1 = 20.00.
    w.settle(dt.date(2026, 12, 3), 91200)
    income = w.income()
    assert (income[TREND], income[U]) == (D("380.00"), D("110.00"))
    w.assert_clean()


def test_quantity_correction_and_a_second_correction_of_an_attributed_fill(w):
    fill = attributed(w)
    w.correct(fill.exec_id, qty=3)  # it was 3 @ 90000, not 2: trend holds 4
    assert w.sync().corrected == [fill.base_exec_id + ".02"]
    # trend: own unit 100.00 + 3 units 90000 -> 91000 = 300.00; U unchanged; commission 1 + 3.
    income = w.income()
    assert (income[TREND], income[U]) == (D("400.00"), D("90.00"))
    assert (income[C_TREND], income[C_U]) == (D("4.00"), D("1.00"))
    assert w.positions() == {("Trend", "MBTZ26"): D(4), (None, "MBTZ26"): D(1)}
    w.assert_clean()
    # A second correction (.03) of the corrected fill: 3 @ 89950. trend: 100 + 3 x 1050 x 0.1.
    w.correct(fill.base_exec_id + ".02", price=89950)
    assert w.sync().corrected == [fill.base_exec_id + ".03"]
    income = w.income()
    assert (income[TREND], income[U]) == (D("415.00"), D("90.00"))
    assert (income[C_TREND], income[C_U]) == (D("4.00"), D("1.00"))
    assert w.positions() == {("Trend", "MBTZ26"): D(4), (None, "MBTZ26"): D(1)}
    w.assert_clean()


def test_a_cancel_of_an_attributed_fill_takes_it_out_of_the_strategy(w):
    """IB's API has no bust: a cancel would be a correction to quantity 0 (the sim refuses to
    make one), so the engine books this Execution record directly, on the real database."""
    fill = attributed(w)
    cancel = Execution(fill.base_exec_id + ".02", fill.account, fill.contract, BUY, D(0), D(90000),
                       w.session.now(), commission=D(0), commission_currency="USD")
    with w.env.engine.begin() as conn:
        report = SyncReport()
        book_execution(conn, w.env.books, cancel, report, now=w.session.now())
    assert report.corrected == [cancel.exec_id]
    income = w.income()
    # trend keeps only its own unit (100.00) and commission; U unchanged.
    assert (income[TREND], income[U]) == (D("100.00"), D("90.00"))
    assert (income[C_TREND], income[C_U]) == (D("1.00"), D("1.00"))
    assert w.positions() == {("Trend", "MBTZ26"): D(1), (None, "MBTZ26"): D(1)}
    w.assert_clean(broker_agrees=False)  # the sim's own books still hold the 2


def test_a_correction_after_the_attribution_was_reversed_goes_to_unattributed(w):
    """`adjust reverse` of the attribution (allowed while nothing later touched the contract) puts
    the fill back in Unattributed: a correction then books there."""
    w.exchange.external_trade(w.contract, D(2), D(90000))
    fill = w.exchange.executions()[-1]
    w.sync()
    booked = w.attribute(fill.base_exec_id)
    now = w.session.now()
    adjust.book(w.session, lambda conn: adjust.plan_reverse(conn, w.session, booked.txn_id, "not mine", now,
                                                          adjust.new_key("reverse", w.env.chart)), who="test")
    assert w.positions() == {(None, "MBTZ26"): D(2)}
    w.correct(fill.exec_id, price=89900)
    assert w.sync().corrected == [fill.base_exec_id + ".02"]
    assert w.positions() == {(None, "MBTZ26"): D(2)}
    income = w.income()
    assert income.get(TREND, D(0)) == 0 and income[C_U] == D("2.00")
    w.assert_clean()


def test_a_shares_fill_attributed_is_refused_loudly_and_nothing_is_written(w):
    """Shares attributed to a strategy moved lots FIFO at the attribution: a correction cannot be
    booked exactly, so it is refused: nothing is written, an open exception says why, every sync."""
    from tradeledger.broker.base import Contract
    from tradeledger.engine.trust.exceptions import list_exceptions

    spy = Contract("SPY", "STK", "SPY", "ARCA", "USD")
    w.exchange.add_contract(spy)
    fill = w.exchange.external_trade(spy, D(10), D("500.00"))
    w.sync()
    w.attribute(fill.base_exec_id)
    w.correct(fill.exec_id, price="499.50")
    before = w.entries()
    for _ in range(2):
        report = w.sync()
        assert report.corrected == [] and report.corrections == [fill.base_exec_id + ".02"]
        assert "attributed to a strategy" in report.correction_reasons[fill.base_exec_id + ".02"]
    assert w.entries() == before
    with read_connection(w.env.engine) as conn:
        found = [x for x in list_exceptions(conn, "open") if x["dedupe_key"].endswith(fill.base_exec_id)
                 and "correction" in x["detail"]]
    assert len(found) == 1 and found[0]["severity"] == "error"


def test_killed_before_the_commit_of_a_correction_then_rerun_books_it_once(w, tmp_path):
    """`fills sync` killed with the correction of an attributed fill (and, after it, a changed
    commission) written but not committed: nothing of it stays, and the rerun books it once."""
    import os
    import signal
    import subprocess
    import sys

    fill = attributed(w)
    w.correct(fill.exec_id, price=89900)
    sync = [sys.executable, "-m", "tradeledger.cli", "--home", str(tmp_path / "home"), "fills", "sync"]
    for step in ("correction", "commission"):
        before, income = w.entries(), w.income()
        done = subprocess.run(sync, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TRADELEDGER_KILL_AT": "correction"})
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        assert w.entries() == before and w.income() == income  # rolled back whole
        report = w.sync()
        if step == "correction":
            assert report.corrected == [fill.base_exec_id + ".02"]
            assert (w.income()[TREND], w.income()[U]) == (D("320.00"), D("90.00"))
        else:
            assert len(report.commission_changes) == 1
            assert (w.income()[C_TREND], w.income()[C_U]) == (D("3.40"), D("1.00"))
        after = w.entries()
        assert after > before and w.sync().replays == 3 and w.entries() == after  # three executions
        w.exchange.revise_commission(fill.base_exec_id + ".02", D("2.40"))
    w.assert_clean()
