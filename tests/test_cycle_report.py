"""What a cycle reports about its fills: every sync it ran, nothing dropped.

`wait_for_fills` syncs until the run's orders are done. Its report is the syncs' reports put
one after the other (`SyncReport.then`): what each booked adds up; an execution that could not
be booked or a correction that could not be booked is reported once, whichever sync saw it; the
commissions still pending are those the last sync found pending.

The broker here is a script of execution lists, one per poll (a broker reports its whole day's
executions on every call, so each list repeats the earlier ones).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import sqlalchemy as sa

from tradeledger.broker.base import Contract, Execution
from tradeledger.engine import tables
from tradeledger.engine.setup.config import Limits
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading.cycle import wait_for_fills
from tradeledger.engine.trading.fills import SyncReport
from tradeledger.engine.trading.orders import TargetLine, plan, record_plan

UTC = dt.timezone.utc
MES = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612", "MES")
T0 = dt.datetime(2026, 11, 2, 15, 0, tzinfo=UTC)


class ScriptedExecutions:
    """A broker whose execution list grows poll by poll as the script says."""

    def __init__(self, polls: list[list[Execution]]):
        self.polls = polls
        self.calls = 0

    def executions(self, since=None) -> list[Execution]:
        self.calls += 1
        return list(self.polls[min(self.calls, len(self.polls)) - 1])


def _execution(exec_id, qty, price, minutes, order_ref="", commission=D("1.00")):
    return Execution(exec_id, "DU1234567", MES, "BUY", D(qty), D(price), T0 + dt.timedelta(minutes=minutes),
                     order_ref=order_ref, commission=commission, commission_currency="USD")


def test_sync_reports_put_one_after_the_other_keep_everything():
    first = SyncReport(booked=["a"], unattributed=["a"], pending_commissions=["a"], corrections=["c.02"],
                       correction_reasons={"c.02": "split"}, failed=[("x.01", "overfill")], replays=1)
    second = SyncReport(booked=["b"], commissions=["a"], corrected=["d.02"], pending_commissions=["b"],
                        corrections=["c.02"], correction_reasons={"c.02": "split"},
                        failed=[("x.01", "overfill"), ("y.01", "no mark")], replays=2)
    total = first.then(second)
    assert total.booked == ["a", "b"] and total.unattributed == ["a"] and total.commissions == ["a"]
    assert total.corrected == ["d.02"]
    assert total.failed == [("x.01", "overfill"), ("y.01", "no mark")]
    assert total.corrections == ["c.02"] and total.correction_reasons == {"c.02": "split"}
    assert total.pending_commissions == ["b"]  # a's commission came in the second sync
    assert total.replays == 3


def test_a_cycle_reports_the_fill_it_could_not_book_and_the_correction_it_booked(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None)
    run = plan(1, [TargetLine("Trend", "MES", MES, D(2), D(5000))], {}, Limits(), {})
    record_plan(env, run, T0)  # one order: buy 2
    with env.engine.connect() as conn:
        ref = conn.execute(sa.select(tables.broker_order.c.order_ref)).scalar()
    outside = _execution("0000aaaa.00000001.01.01", 1, 4990, 1)  # a trade at the broker's screen
    overfill = _execution("0000aaaa.00000002.01.01", 3, 5000, 2, ref)  # 3 of an order of 2
    fill = _execution("0000aaaa.00000003.01.01", 2, 5000, 3, ref)
    corrected = _execution("0000aaaa.00000001.01.02", 1, 4991, 1)  # the outside trade, repriced
    session = Session(env)
    session.broker = ScriptedExecutions([[outside, overfill], [outside, overfill, fill, corrected]])
    report = wait_for_fills(session, 1, timeout=30.0, poll=0.01)
    assert session.broker.calls == 2
    assert report.booked == ["0000aaaa.00000001.01", "0000aaaa.00000003.01"]
    assert report.unattributed == ["0000aaaa.00000001.01"]
    assert [exec_id for exec_id, _ in report.failed] == ["0000aaaa.00000002.01.01"]
    assert "overfill" in report.failed[0][1]
    assert report.corrected == ["0000aaaa.00000001.01.02"]
