"""Reconciliation scenarios on the simulated broker, through a real environment.

Each scenario drives the sim exchange (the broker's own screen) and the engine, then asks
`reconcile` for the truth; after each the ledger balances and beancount's check is clean.
"A trade the broker forgot" (`_forgotten_trade`) is a trade whose execution has left the broker's
execution window: the position moved, the execution list does not show it, as at IB after a few
days, or after an expiry.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from support import sim_world
from tradeledger.broker.base import AccountSnapshot, Contract
from tradeledger.engine.trading import cycle
from tradeledger.engine.setup.config import Limits, current_contract
from tradeledger.engine.trust.exceptions import active_locks, list_exceptions, resolve
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.accounting.holdings import marks
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust.reconcile import compare, ledger_view, reconcile, reconcile_session
from tradeledger.engine.tables import broker_snapshot
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount
from tradeledger.ledger.model import Posting, Transaction

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)

CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"

[strategies.trend]
capital_share = 1
instruments = { MES = 1 }

[sim]
commission_per_contract = "0"

[reconcile]
cash_tolerance = "0.01"
"""


@pytest.fixture
def world(tmp_path):
    env, session = sim_world(tmp_path / "home", CONFIG, T0,
                             lambda config: [(current_contract(config.instruments["MES"], T0.date()), D(5000))])
    exchange = session.exchange()
    mes = current_contract(session.config.instruments["MES"], T0.date())
    session.broker  # connect
    yield session, exchange, mes
    session.close()


def _tick(exchange, minutes=1):
    return exchange.advance_clock(dt.timedelta(minutes=minutes))


def _trade(session, run_id, target, price=D(5000)):
    """The strategy goes to `target` contracts through tradeledger's own orders."""
    env, exchange = session, session.exchange()
    mes = current_contract(session.config.instruments["MES"], T0.date())
    now = _tick(exchange)
    lines = [TargetLine("Trend", "MES", mes, D(target), price)]
    order_plan = plan(run_id, lines, holder_positions(env.ledger, env.chart), Limits(), {})
    record_plan(env, order_plan, now)
    send_planned(env, session.broker, run_id, now)
    sync_fills(env, session.broker)
    _tick(exchange)


def _forgotten_trade(exchange, code, qty, price=None):
    """A trade at the broker whose execution the broker no longer reports."""
    e = exchange.external_trade(code, D(qty), price)
    with sqlite3.connect(exchange.path) as conn:
        conn.execute("DELETE FROM executions WHERE exec_id = ?", (e.exec_id,))
    _tick(exchange)
    return e


def _open(session, kind=None):
    with read_connection(session.engine) as conn:
        return [e for e in list_exceptions(conn, "open") if kind is None or e["kind"] == kind]


def _locks(session):
    with read_connection(session.engine) as conn:
        return active_locks(conn)


def _books_ok(session, tmp_path):
    path = tmp_path / "check.beancount"
    export_beancount(session.ledger, path)
    result = check(session.ledger, path)
    assert result.ok, result


def test_trade_made_outside_tradeledger(world, tmp_path):
    session, exchange, mes = world
    _tick(exchange)
    exchange.external_trade(mes.code, D(2))
    _tick(exchange)
    result = reconcile_session(session)
    assert result.sync.unattributed and result.clean, result.as_json()
    data = result.as_json()
    assert set(data) == {"clean", "breaks", "cash", "unattributed"}
    assert data["unattributed"] == [{"account": "DU1234567", "contract": mes.code, "qty": D(2), "adopted": False}]
    [fill_exc] = _open(session, "unattributed_fill")
    assert mes.code in fill_exc["subject"] and "orderRef" in fill_exc["detail"]
    assert holder_positions(session.ledger, session.chart) == {(None, mes.code): D(2)}
    again = reconcile_session(session)  # a second sync books nothing and raises nothing new
    assert again.clean and len(_open(session, "unattributed_fill")) == 1
    _books_ok(session, tmp_path)


def test_broker_flat_while_ledger_holds_break_lock_then_clean(world, tmp_path, monkeypatch):
    session, exchange, mes = world
    _trade(session, 1, 2)
    assert reconcile_session(session).clean
    _forgotten_trade(exchange, mes.code, -2)  # e.g. closed by hand, its execution gone
    result = reconcile_session(session)
    assert not result.clean
    assert [b.as_json() for b in result.breaks] == [{"account": "DU1234567", "contract": mes.code, "ledger_qty": D(2),
                                                    "broker_qty": D(0), "diff": D(2), "kind": "position"}]
    [brk] = _open(session, "reconciliation_break")
    assert brk["severity"] == "error" and brk["subject"] == mes.code
    locks = _locks(session)
    assert list(locks) == ["MES"] and f"exception {brk['id']}" in locks["MES"]

    # Orders for the locked instrument are refused with the reason, by plan and by the cycle's planning.
    lines = [TargetLine("Trend", "MES", mes, D(3), D(5000))]
    [cp] = plan(9, lines, {}, Limits(), {}, locks).contracts
    assert cp.refused.startswith("MES is locked: reconciliation break")
    monkeypatch.setattr(cycle, "order_lines", lambda s, run_id, now: lines)
    [cp] = cycle.plan_run(session, 9, session.now()).contracts
    assert "MES is locked" in cp.refused and "ledger 2, broker 0" in cp.refused

    again = reconcile_session(session)  # one open exception per cause, not one per run
    assert not again.clean and len(_open(session, "reconciliation_break")) == 1
    assert _open(session, "reconciliation_break")[0]["count"] == 2

    _forgotten_trade(exchange, mes.code, 2)  # the position is back at the broker
    fixed = reconcile_session(session)
    assert fixed.clean and _locks(session) == {} and _open(session, "reconciliation_break") == []
    with read_connection(session.engine) as conn:
        [closed] = [e for e in list_exceptions(conn, "resolved") if e["id"] == brk["id"]]
    assert closed["resolved"]["by"] == "reconcile"
    _books_ok(session, tmp_path)


def test_a_later_surplus_is_adopted_and_strategies_keep_trading(world, tmp_path):
    session, exchange, mes = world
    _trade(session, 1, 1)
    _trade(session, 2, 0)  # the ledger has held MES, and holds none now
    _forgotten_trade(exchange, mes.code, 3)  # 3 arrive at the broker with no execution reported
    result = reconcile_session(session)
    assert result.clean and result.breaks == [], result.as_json()
    assert result.unattributed == [{"account": "DU1234567", "contract": mes.code, "qty": D(3), "adopted": True}]
    assert _locks(session) == {}  # nothing locked: no strategy's position changed
    [review] = _open(session, "unattributed_position")
    assert review["severity"] == "warning" and f"adjust adopt {mes.code} 3" in review["detail"]
    lines = [TargetLine("Trend", "MES", mes, D(1), D(5000))]
    assert plan(3, lines, holder_positions(session.ledger, session.chart), Limits(), {},
                _locks(session)).refusals == []
    again = reconcile_session(session)  # adopted once
    assert again.clean and again.unattributed[0]["adopted"] is False
    assert holder_positions(session.ledger, session.chart) == {(None, mes.code): D(3)}
    _books_ok(session, tmp_path)


def test_a_shortfall_is_a_break_that_locks_until_a_person_says_whose(world, tmp_path):
    from tradeledger.engine.trust.adjust import book, new_key, plan_manual_close

    session, exchange, mes = world
    _trade(session, 1, 2)
    _forgotten_trade(exchange, mes.code, -2, D(5010))  # gone at the broker, no execution reported
    result = reconcile_session(session)
    assert [(b.kind, b.ledger_qty, b.broker_qty, b.diff) for b in result.breaks] == [("position", D(2), D(0), D(2))]
    assert result.unattributed == [] and "MES" in _locks(session)
    [brk] = [e for e in _open(session, "reconciliation_break") if e["subject"] == mes.code]
    assert f"adjust manual-close {mes.code}" in brk["detail"]
    # its variation margin (2 x 10 x 5) reached the broker's cash: a cash difference until it is said whose
    # Resolving by hand releases the lock; a later reconciliation that still finds it locks again.
    with session.engine.begin() as conn:
        resolve(conn, brk["id"], "me", "investigating with the broker", now=session.now())
    assert _locks(session) == {}
    assert not reconcile_session(session).clean and "MES" in _locks(session)
    env = session
    ctx, now = env, session.now()
    key = new_key("manual-close", env.chart)
    book(ctx, lambda conn: plan_manual_close(conn, ctx, mes.code, "trend", "closed at the desk", now,
                                                         key, price=D(5010)), "me")
    assert reconcile_session(session).clean and _locks(session) == {}
    _books_ok(session, tmp_path)


def test_failed_snapshot_is_never_flat(world, tmp_path):
    session, exchange, mes = world
    _trade(session, 1, 2)
    _forgotten_trade(exchange, mes.code, -1)
    assert not reconcile_session(session).clean  # a real break (a shortfall), open and locked
    before = session.ledger.count()
    exchange.fault_disconnect(1)
    result = reconcile_session(session)
    assert not result.clean
    assert [b.as_json() for b in result.breaks] == [{"account": "DU1234567", "contract": None, "ledger_qty": None,
                                                    "broker_qty": None, "diff": None, "kind": "broker_unreachable"}]
    assert session.ledger.count() == before  # nothing booked
    with read_connection(session.engine) as conn:
        last = conn.execute(sa.select(broker_snapshot).order_by(broker_snapshot.c.id.desc())).first()
    assert last.status == "failed" and "BrokerDisconnected" in last.error
    [down] = _open(session, "broker_disconnected")
    assert down["severity"] == "error"
    # The earlier break is neither resolved nor replaced by a false "flat" break.
    [brk] = _open(session, "reconciliation_break")
    assert brk["count"] == 1 and "MES" in _locks(session)

    session.broker.connect()
    _forgotten_trade(exchange, mes.code, 1)
    assert reconcile_session(session).clean
    assert _open(session) == [] and _locks(session) == {}
    _books_ok(session, tmp_path)


class _Stale:
    """A broker whose snapshot was taken before the latest fills (a slow or cached snapshot)."""

    def __init__(self, broker, snapshot: AccountSnapshot):
        self.broker, self._snapshot, self.account = broker, snapshot, broker.account

    def snapshot(self):
        return self._snapshot

    def executions(self, since=None):
        return self.broker.executions(since)


def test_snapshot_older_than_a_booked_fill_raises_no_false_break(world):
    session, exchange, mes = world
    env = session
    _trade(session, 1, 1)
    old = session.broker.snapshot()  # broker: 1
    _trade(session, 2, 3)  # booked after the snapshot: ledger 3
    result = reconcile(env, _Stale(session.broker, old), now=session.now())
    assert result.clean, result.as_json()
    executions = session.broker.executions()
    window = min(e.time for e in executions)
    with read_connection(env.engine) as conn:  # as of now the ledger holds 3 against the snapshot's 1
        now_view = ledger_view(conn, env.books, session.now(), window)
    assert [(b.kind, b.ledger_qty, b.broker_qty) for b in compare(now_view, old, executions).breaks] == [
        ("position", D(3), D(1))]


def test_cash_within_and_outside_tolerance(world, tmp_path):
    session, exchange, mes = world
    _trade(session, 1, 1)
    exchange.set_price(mes.code, D(5010))
    _trade(session, 2, 2, D(5010))  # VM +50 booked by the ledger at the fill; unsettled at the broker
    result = reconcile_session(session)
    [usd] = result.cash
    assert (usd.ledger, usd.broker, usd.unsettled, usd.status) == (D(50), D(0), D(50), "ok") and result.clean
    exchange.deposit("USD", D("0.005"))
    result = reconcile_session(session)
    assert result.clean and result.cash[0].diff == D("-0.005")
    exchange.deposit("USD", D(5))
    result = reconcile_session(session)
    assert not result.clean and result.breaks == []
    assert result.cash[0].as_json()["status"] == "break" and result.cash[0].diff == D("-5.005")
    [brk] = _open(session, "reconciliation_break")
    assert brk["subject"] == "cash USD" and _locks(session) == {}  # cash breaks lock no instrument
    env = session
    env.ledger.book(Transaction(session.now(), "deposit", "Deposit", (
        Posting(env.chart.cash, D("5.005"), "USD"), Posting(env.chart.deposits, D("-5.005"), "USD"))))
    assert reconcile_session(session).clean and _open(session) == []
    _books_ok(session, tmp_path)


def test_pending_commission_is_not_a_cash_break(world):
    session, exchange, mes = world
    exchange.set_commission(D("1.25"))
    exchange.fault_late_commission(n_polls=5)
    _trade(session, 1, 2)
    result = reconcile_session(session)
    assert result.clean and result.cash[0].status == "pending" and result.cash[0].diff == D("2.50")
    for _ in range(5):
        sync_fills(session, session.broker)
    result = reconcile_session(session)
    assert result.clean and result.cash[0].status == "ok"


def test_the_first_reconciliation_opens_the_ledger_where_the_broker_is(world, tmp_path):
    session, exchange, mes = world
    env = session
    spy = Contract("SPY", "STK", "SPY", "SMART", "USD")
    opt = Contract("SPY 261218C00500000", "OPT", "SPY", "SMART", "USD", D(100))  # not a commodity name
    exchange.add_contract(spy)
    exchange.add_contract(opt)
    exchange.deposit("USD", D(10000))
    _forgotten_trade(exchange, mes.code, 3, D(4990))
    _forgotten_trade(exchange, "SPY", 10, D("450.25"))
    _forgotten_trade(exchange, opt.code, 1, D("3.10"))
    # Cash the ledger already holds (a deposit booked by hand) is not opened twice.
    opening = exchange.cash()["USD"]
    env.ledger.book(Transaction(T0, "opening", "Opening cash", (
        Posting(env.chart.cash, opening, "USD"), Posting(env.chart.opening_balances, -opening, "USD"))))
    result = reconcile_session(session)
    adopted = {u["contract"]: (u["qty"], u["adopted"]) for u in result.unattributed}
    assert adopted == {mes.code: (D(3), True), "SPY": (D(10), True)}
    # The option could not be booked: it is reported, its own break, and blocks nothing else.
    assert [(b.contract, b.kind) for b in result.breaks] == [(opt.code, "position")]
    assert set(_locks(session)) == {opt.code}
    lines = [TargetLine("Trend", "MES", mes, D(1), D(5000))]
    assert plan(3, lines, {}, Limits(), {}, _locks(session)).refusals == []
    kinds = {(e["subject"], e["severity"]) for e in _open(session, "unattributed_position")}
    assert kinds == {(opt.code, "error")}
    assert any(note.startswith("opening: taken") for note in result.notes)
    with read_connection(env.engine) as conn:
        assert marks(conn)[(None, mes.code)] == D(4990)  # 24950 / 5: IB's avgCost is price x multiplier
    lots = env.ledger.lots(env.chart.unattributed, "SPY")
    assert [(c.number, units) for c, units in lots] == [(D("450.25"), D(10))]
    assert env.ledger.balances()[("Equity:Opening-Balances", "USD")] == -opening - D("4502.50")
    again = reconcile_session(session)  # adopted once
    assert [u["adopted"] for u in again.unattributed] == [False, False]
    assert len(_open(session, "unattributed_position")) == 1
    _books_ok(session, tmp_path)


def test_unknown_fill_inside_the_broker_window_is_flagged(world):
    from tradeledger.broker.base import Execution
    from tradeledger.engine.trading.fills import SyncReport, book_execution

    session, exchange, mes = world
    env = session
    _trade(session, 1, 1)
    ghost = Execution("ffffffff.00000099.01.01", "DU1234567", mes, "BUY", D(1), D(5000), session.now(),
                      commission=D(0), commission_currency="USD")
    with env.engine.begin() as conn:
        book_execution(conn, env.books, ghost, SyncReport(), now=session.now())
    _tick(exchange)
    result = reconcile_session(session)
    kinds = sorted((b.kind, b.contract) for b in result.breaks)
    assert kinds == [("position", mes.code), ("unknown_fill", mes.code)]


def test_an_internal_cross_marks_strategies_off_the_broker_and_cash_still_reconciles(world, tmp_path):
    """Carry buys 1 (the broker fills it at 5000). A later run crosses 1 from Trend to Carry at
    the reference price 5010: no broker trade, but the ledger marks Carry's +1 to 5010 (+50 VM,
    1 x 10 x 5). Intraday the ledger's cash is 50 above the broker's cash + unsettled P&L, which
    is exactly sum over holders of position x (holder's mark - broker's mark) x multiplier:
    Carry 2 x 5010 + Trend -1 x 5010 - 1 x 5000 (the broker's mark), times 5 = 50. Clean."""
    session, exchange, mes = world
    env = session
    now = _tick(exchange)
    lines = [TargetLine("Carry", "MES", mes, D(1), D(5000))]
    record_plan(env, plan(1, lines, {}, Limits(), {}), now)
    send_planned(env, session.broker, 1, now)
    sync_fills(env, session.broker)
    now = _tick(exchange)
    lines = [TargetLine("Carry", "MES", mes, D(2), D(5010)), TargetLine("Trend", "MES", mes, D(-1), D(5010))]
    order_plan = plan(2, lines, holder_positions(env.ledger, env.chart), Limits(), {})
    assert [(x.seller, x.buyer, x.quantity) for x in order_plan.contracts[0].crosses] == [("Trend", "Carry", D(1))]
    assert order_plan.contracts[0].side is None  # everything crossed: nothing for the broker
    record_plan(env, order_plan, now)
    _tick(exchange)
    result = reconcile_session(session, who="test")
    [usd] = result.cash
    assert usd.ledger - (usd.broker + usd.unsettled) == D(50)
    assert usd.marks == D(50) and usd.status == "ok"
    assert result.clean, result.as_json()


def test_flat_at_the_broker_while_holders_are_marked_apart_is_no_cash_break(world, tmp_path):
    """Trend buys 1 at 5000 (marked 5000); a trade outside tradeledger sells 1 at 5002 (Unattributed
    -1 marked 5002). The broker is flat, realized 10.00 it has not settled (unsettled 10); the
    ledger holds them as two marks: 1 x 5000 - 1 x 5002, times 5, is -10. Clean: before, a flat
    broker reports no position, so no mark, and the ledger's -10 was a cash break proposing a
    10.00 deposit that never happened."""
    session, exchange, mes = world
    _trade(session, 1, 1)
    exchange.external_trade(mes.code, D(-1), D(5002))
    sync_fills(session, session.broker)
    _tick(exchange)
    result = reconcile_session(session, who="test")
    [usd] = result.cash
    assert usd.ledger - (usd.broker + usd.unsettled) == D(-10)
    assert usd.marks == D(-10) and usd.status == "ok", result.as_json()
    _books_ok(session, tmp_path)


def test_strategies_crossed_at_other_marks_while_the_broker_is_flat_reconcile(world, tmp_path):
    """Found by tests/test_across_runs.py (a crash, then two runs). Carry buys 1 at the broker
    (5000); run 2 crosses 1 from Trend to Carry at the reference price 5010; run 3 sells Carry's
    second contract at the broker (5000). The broker is flat, so it reports no MES position and no
    mark; the ledger holds Carry +1 marked 5000 and Trend -1 marked 5010, and its cash is 50 below
    the broker's: Carry's VM +50 (the cross) - 100 (2 x 10 x 5 down to the fill). That is sum over
    holders of position x (holder's mark - broker's mark) x multiplier, where a flat account's mark
    multiplies nothing: 1 x 5000 - 1 x 5010, times 5 = -50. It was skipped for want of a broker
    mark, and the cash showed as a 50.00 break (a withdrawal proposed) that nothing could clear."""
    session, exchange, mes = world
    env = session
    now = _tick(exchange)
    record_plan(env, plan(2, [TargetLine("Carry", "MES", mes, D(1), D(5000))], {}, Limits(), {}), now)
    send_planned(env, session.broker, 2, now)
    sync_fills(env, session.broker)
    now = _tick(exchange)
    lines = [TargetLine("Carry", "MES", mes, D(2), D(5010)), TargetLine("Trend", "MES", mes, D(-1), D(5010))]
    record_plan(env, plan(3, lines, holder_positions(env.ledger, env.chart), Limits(), {}), now)
    now = _tick(exchange)
    lines = [TargetLine("Carry", "MES", mes, D(1), D(5000)), TargetLine("Trend", "MES", mes, D(-1), D(5000))]
    record_plan(env, plan(4, lines, holder_positions(env.ledger, env.chart), Limits(), {}), now)
    send_planned(env, session.broker, 4, now)
    sync_fills(env, session.broker)
    _tick(exchange)
    assert holder_positions(env.ledger, env.chart) == {("Carry", mes.code): D(1), ("Trend", mes.code): D(-1)}
    assert not [p for p in exchange.positions() if p.contract.code == mes.code]  # flat at the broker
    result = reconcile_session(session, who="test")
    [usd] = result.cash
    assert usd.ledger - (usd.broker + usd.unsettled) == D(-50)
    assert usd.marks == D(-50) and usd.status == "ok"
    assert result.clean, result.as_json()
    _books_ok(session, tmp_path)
