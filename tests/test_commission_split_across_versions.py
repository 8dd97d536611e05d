"""A fill booked under the old commission rule stays exactly what it was, whatever touches it later.

Commit 328482a changed `commission_split`: a commission is split among strategies by its value
(the sim's 1126 x 0.005 = 5.630 is split in cents, as 5.63: A 3.80 + B 1.83) where it was split
as the broker wrote it (in tenths of a cent: A 3.795 + B 1.835). Ledgers booked before that
commit hold the old parts. Every path that later touches such a fill must reverse, compare and
report what the ledger *booked* (read back from its postings), never a recomputation under the
rule of the day, or the ledger is left 0.005 off per strategy, a correction does not cancel what
it replaces, and a report disagrees with `pnl` by a cent.

The old fill is booked through the engine's real path on a real database with the pre-328482a
rule put back in `commission_split`'s place for the booking only (`old_rule`), and the stored
postings are checked to be 3.795 / 1.835 before anything else happens. Then each path runs on
today's code: a re-sync (replay), a Flex statement naming the same trade, a price correction
(reversal + rebook), a quantity correction of the split fill (refused: writes nothing), a late
commission reported after the upgrade, a late commission booked under the old rule and then
corrected, `db verify`, reconciliation (cash compared to the tenth of a cent, not within the
cent tolerance), the beancount export, and the costs/pnl reports.

SPY at 100.00, commission 0.005 per share; strategies A (759 shares) and B (367) buy together:
one order, one execution of 1126 shares, commission 5.630 USD.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.broker.base import Contract
from tradeledger.broker.sim import SimBroker
from tradeledger.broker.simexchange import SimExchange
from tradeledger.engine import tables
from tradeledger.engine.accounting import entries
from tradeledger.engine.accounting.holders import from_column, to_column
from tradeledger.engine.accounting.holdings import verify_books
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading import commissions, fill_chunk, fills
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.netting import allocate_commission
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust.reconcile import reconcile
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
SPY = Contract("SPY", "STK", "SPY", "ARCA", "USD")
T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
A, B = "Expenses:Commissions:A", "Expenses:Commissions:B"
OLD = {A: D("3.795"), B: D("1.835")}  # 5.630 split in tenths of a cent (before 328482a)
NEW = {A: D("3.80"), B: D("1.83")}  # 5.63 split in cents (328482a on)


def old_commission_split(commission, quantities) -> dict:
    """`entries.commission_split` as it was before 328482a: split in the unit the commission was
    written in (5.630 -> tenths of a cent)."""
    if commission is None:
        return {}
    if commission.as_tuple().exponent > -2:
        commission = commission.quantize(D("0.01"))
    weights = {to_column(holder): abs(qty) for holder, qty in quantities}
    return {from_column(k): v for k, v in allocate_commission(commission, weights).items()}


@contextmanager
def old_rule(monkeypatch):
    """Book with the pre-328482a rule wherever the engine splits a commission."""
    with monkeypatch.context() as m:
        for module in (entries, fills, fill_chunk, commissions):
            m.setattr(module, "commission_split", old_commission_split)
        yield


class World:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.env = init_environment(tmp_path / "home", "paper", "sim", None)
        self.exchange = SimExchange(tmp_path / "sim.db")
        self.exchange.set_commission(D("0.005"), "SPY")
        self.exchange.set_clock(T0)
        self.broker = SimBroker(self.exchange)
        self.broker.connect()
        self.run = 0

    def buy_together(self, price="100.00"):
        """A buys 759 and B 367 SPY in one order: one execution of 1126 shares."""
        self.exchange.advance_clock(dt.timedelta(minutes=1))
        self.exchange.set_price("SPY", D(price))
        self.run += 1
        now = self.exchange.now()
        lines = [TargetLine(h, "X", SPY, D(t), D(price)) for h, t in (("A", 759), ("B", 367))]
        order_plan = plan(self.run, lines, holder_positions(self.env.ledger, self.env.chart), Limits(), {})
        record_plan(self.env, order_plan, now)
        send_planned(self.env, self.broker, self.run, now)
        return self.sync()

    def sync(self):
        return sync_fills(self.env, self.broker)

    def balance(self, account, ccy="USD"):
        return self.env.ledger.balances().get((account, ccy), D(0))

    def commissions(self):
        return {a: self.balance(a) for a in (A, B)}

    def cash(self):
        return self.balance(self.env.chart.cash)

    def broker_cash(self):
        return self.exchange.cash().get("USD", D(0))

    def fills(self):
        with read_connection(self.env.engine) as conn:
            return conn.execute(sa.select(tables.fill).order_by(tables.fill.c.id)).all()

    def entry_commissions(self, txn_id):
        """account -> units of the Expenses:Commissions postings of one stored entry."""
        out: dict = {}
        for p in self.env.ledger.get(txn_id).postings:
            if p.account.startswith("Expenses:Commissions:"):
                out[p.account] = out.get(p.account, D(0)) + p.units
        return out

    def counts(self):
        return self.env.ledger.count()

    def assert_whole(self):
        """db verify clean; the export loads and beancount agrees; cash is the broker's to the nano."""
        result = verify_books(self.env.ledger, self.env.chart)
        assert result.ok, result.findings
        path = self.tmp / "ledger.beancount"
        export_beancount(self.env.ledger, path)
        checked = check(self.env.ledger, path)
        assert checked.ok, checked
        assert self.cash() == self.broker_cash()


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.exchange.close()


def book_old_fill(w, monkeypatch, late=False):
    """The fill as a ledger from before 328482a holds it (commission in the fill's entry, or
    pending and then booked late, both under the old rule); checked as stored."""
    if late:
        w.exchange.fault_late_commission(1)
    with old_rule(monkeypatch):
        report = w.buy_together()
        if late:
            assert report.pending_commissions == report.booked
            assert w.sync().commissions == report.booked
    [row] = w.fills()
    assert row.commission == 5630 * 10**6  # 5.630 USD stored
    booked = w.entry_commissions(row.commission_txn_id if late else row.txn_id)
    assert booked == OLD
    assert w.commissions() == OLD
    assert w.cash() == D("-112600") - D("5.630") == w.broker_cash()
    return row


def test_old_split_is_what_the_old_rule_booked_and_the_new_rule_differs():
    shares = [("A", D(759)), ("B", D(367))]
    assert old_commission_split(D("5.630"), shares) == {"A": D("3.795"), "B": D("1.835")}
    assert entries.commission_split(D("5.630"), shares) == {"A": D("3.80"), "B": D("1.83")}


@pytest.mark.parametrize("late", [False, True], ids=["in-fill", "late"])
def test_a_resync_and_a_replayed_statement_book_nothing_and_change_nothing(w, monkeypatch, tmp_path, late):
    row = book_old_fill(w, monkeypatch, late)
    before = w.counts()
    for _ in range(2):
        report = w.sync()
        assert report.booked == [] and report.commissions == [] and report.corrected == [] and report.failed == []
        assert report.replays == 1 and report.pending_commissions == []
    # The same trade in IB's Flex statement: known, compared (side, quantity, price), not booked.
    from tradeledger.engine.trust.flex import import_flex

    statement = tmp_path / "flex.xml"
    e = w.exchange.executions()[0]
    ny = e.time.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    statement.write_text(
        '<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="1">'
        '<FlexStatement accountId="DU1234567" fromDate="20261101" toDate="20261130" period="LastMonth" '
        'whenGenerated="20261130;235959"><Trades>'
        f'<Trade accountId="DU1234567" currency="USD" assetCategory="STK" symbol="SPY" multiplier="1" '
        f'tradeDate="{ny:%Y%m%d}" dateTime="{ny:%Y%m%d;%H%M%S}" quantity="1126" tradePrice="100" '
        f'ibCommission="-5.63" ibCommissionCurrency="USD" buySell="BUY" ibExecID="{e.exec_id}" '
        f'orderReference="{e.order_ref}" transactionID="9001" conid="756733" exchange="ARCA" />'
        '</Trades></FlexStatement></FlexStatements></FlexQueryResponse>')
    flex = import_flex(w.env, statement, now=T0 + dt.timedelta(days=1))
    assert flex.trades_booked == [] and flex.trades_known == 1 and flex.differences == []
    assert w.counts() == before
    assert w.commissions() == OLD
    [again] = w.fills()
    assert (again.id, again.commission, again.txn_id, again.commission_txn_id) == \
        (row.id, row.commission, row.txn_id, row.commission_txn_id)
    w.assert_whole()


@pytest.mark.parametrize("late", [False, True], ids=["in-fill", "late"])
def test_a_price_correction_reverses_the_old_parts_exactly(w, monkeypatch, late):
    """The correction reverses what was booked (3.795 / 1.835, in the fill's entry or in its late
    commission's) and books the corrected fill's commission by today's rule (3.80 / 1.83): nothing
    of the old parts is left over and nothing is booked twice."""
    row = book_old_fill(w, monkeypatch, late)
    w.exchange.advance_clock(dt.timedelta(minutes=1))
    w.exchange.correct_execution(row.exec_id, D("99.90"))  # same quantity: the commission stays 5.630
    report = w.sync()
    assert len(report.corrected) == 1 and report.corrections == [] and report.failed == []
    old, new = w.fills()
    assert old.superseded_by == new.id and new.commission == 5630 * 10**6
    reversed_ = [w.env.ledger.reversed_by(old.txn_id)] + ([w.env.ledger.reversed_by(old.commission_txn_id)]
                                                          if late else [])
    assert None not in reversed_
    undone: dict = {}
    for txn_id in reversed_:
        for account, units in w.entry_commissions(txn_id).items():
            undone[account] = undone.get(account, D(0)) + units
    assert undone == {a: -v for a, v in OLD.items()}
    assert w.entry_commissions(new.txn_id) == NEW
    assert w.commissions() == NEW  # 3.795 - 3.795 + 3.80, not 3.805 or 3.79
    assert sum(w.commissions().values()) == D("5.63")
    assert w.cash() == -D("1126") * D("99.90") - D("5.63") == w.broker_cash()
    again = w.sync()
    assert again.corrected == [] and again.booked == [] and again.replays == 1
    assert w.commissions() == NEW
    w.assert_whole()


def test_a_correction_of_the_split_fills_quantity_is_refused_and_writes_nothing(w, monkeypatch):
    row = book_old_fill(w, monkeypatch)
    before = w.counts()
    w.exchange.advance_clock(dt.timedelta(minutes=1))
    w.exchange.correct_execution(row.exec_id, new_qty=D(1000))
    for _ in range(2):  # said on every sync, never booked half
        report = w.sync()
        assert report.corrected == [] and len(report.corrections) == 1
        assert "split between 2 holders" in next(iter(report.correction_reasons.values()))
    assert w.counts() == before and w.commissions() == OLD
    assert [f.superseded_by for f in w.fills()] == [None]
    assert verify_books(w.env.ledger, w.env.chart).ok


def test_a_commission_pending_under_the_old_code_is_booked_by_todays_rule(w, monkeypatch):
    """Booked pending before the upgrade, reported after it: there is nothing of the old rule's to
    reverse, and the late entry splits the value (3.80 / 1.83)."""
    w.exchange.fault_late_commission(1)
    with old_rule(monkeypatch):
        report = w.buy_together()
    assert report.pending_commissions == report.booked
    [row] = w.fills()
    assert row.commission is None and w.entry_commissions(row.txn_id) == {}
    late = w.sync()
    assert late.commissions == report.booked and late.booked == []
    [row] = w.fills()
    assert w.entry_commissions(row.commission_txn_id) == NEW == w.commissions()
    assert w.sync().commissions == []  # reported once, booked once
    assert w.commissions() == NEW
    w.assert_whole()


@pytest.mark.parametrize("late", [False, True], ids=["in-fill", "late"])
def test_reconciliation_compares_the_booked_cash_to_the_tenth_of_a_cent(w, monkeypatch, late):
    book_old_fill(w, monkeypatch, late)
    result = reconcile(w.env, w.broker, now=w.exchange.now())
    assert result.clean and result.breaks == []
    [line] = [c for c in result.cash if c.currency == "USD"]
    assert line.diff == 0 and line.status == "ok"  # exactly, not within the 0.01 tolerance
    assert w.commissions() == OLD


@pytest.mark.parametrize("late", [False, True], ids=["in-fill", "late"])
def test_costs_report_the_commission_the_ledger_booked(w, monkeypatch, late):
    """reports/exposure.py gives each strategy's part of a fill's commission: the part the ledger
    booked (3.795 / 1.835 for an old fill), not the stored total split again by today's rule
    (3.80 / 1.83), so `report costs` and `pnl` agree to the cent (3.80 and 1.84 shown for both)."""
    from tradeledger.reports.exposure import costs, fills_with_costs
    from tradeledger.reports.pnl import pnl

    book_old_fill(w, monkeypatch, late)
    session = Session(w.env)
    [fill] = fills_with_costs(session)
    parts = {f"Expenses:Commissions:{p['strategy']}": p["commission"] for p in fill["strategies"]}
    assert parts == OLD == w.commissions()
    assert fill["commission"] == D("5.63")
    by_costs = {r["strategy"]: r["commissions"] for r in costs(session)["rows"]}
    by_pnl = {r["strategy"]: r["commissions"] for r in pnl(session)["rows"] if r["strategy"] in ("A", "B")}
    assert by_costs == by_pnl == {"A": D("3.80"), "B": D("1.84")}

    # After a correction the report gives the corrected entry's parts (booked by today's rule).
    [row] = w.fills()
    w.exchange.advance_clock(dt.timedelta(minutes=1))
    w.exchange.correct_execution(row.exec_id, D("99.90"))
    assert len(w.sync().corrected) == 1
    [fill] = fills_with_costs(session)
    parts = {f"Expenses:Commissions:{p['strategy']}": p["commission"] for p in fill["strategies"]}
    assert parts == NEW == w.commissions()
    by_costs = {r["strategy"]: r["commissions"] for r in costs(session)["rows"]}
    by_pnl = {r["strategy"]: r["commissions"] for r in pnl(session)["rows"] if r["strategy"] in ("A", "B")}
    assert by_costs == by_pnl == {"A": D("3.80"), "B": D("1.83")}


def test_entry_sums_read_back_what_an_entry_booked(ledger):
    """The ledger query the costs report reads: an entry's postings under a prefix, summed per
    account and commodity, exact to the nano on both backends (a reversal reads back negated)."""
    from tradeledger.ledger.model import Account, Posting, Transaction
    from tradeledger.ledger.store import Commodity

    opened = dt.date(2026, 1, 1)
    cash = "Assets:Broker:DU1234567:Cash"
    for name in (cash, A, B, "Expenses:Commissions:Unattributed"):
        ledger.open_account(Account(name, opened))
    ledger.ensure_commodity(Commodity("USD", "currency", None, D(1), opened))
    postings = (Posting(A, D("3.795"), "USD"), Posting(cash, D("-3.795"), "USD"),
                Posting(B, D("1.835"), "USD"), Posting(cash, D("-1.835"), "USD"))
    booked = ledger.book(Transaction(T0, "commission", "Commission E1", postings, key="commission:DU1234567:E1"))
    other = ledger.book(Transaction(T0, "commission", "Commission E2", (
        Posting("Expenses:Commissions:Unattributed", D("1.000000001"), "USD"),
        Posting(cash, D("-1.000000001"), "USD")), key="commission:DU1234567:E2"))
    undone = ledger.reverse(booked.id, T0, "test")
    sums = ledger.entry_sums([booked.id, other.id, undone.id, None, 10**9], "Expenses:Commissions:")
    assert sums == {booked.id: {(A, "USD"): D("3.795"), (B, "USD"): D("1.835")},
                    other.id: {("Expenses:Commissions:Unattributed", "USD"): D("1.000000001")},
                    undone.id: {(A, "USD"): D("-3.795"), (B, "USD"): D("-1.835")}}
    assert ledger.entry_sums([], "Expenses:Commissions:") == {}
    assert ledger.entry_sums([booked.id], "Assets:") == {booked.id: {(cash, "USD"): D("-5.630")}}
