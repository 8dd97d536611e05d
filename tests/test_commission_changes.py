"""The broker reports another commission for an execution whose commission is booked (same
execId, no new version): the difference is booked, never dropped.

The commission entry still standing (a late commission's) is reversed, and one entry takes back
what the fill's entry (and an attribution that moved it) booked per holder, read back from the
postings, and books the new amount split over the fill's holders. The fill row says the new
commission, so a rerun is a replay. The simulated exchange charges the account the difference
(`SimExchange.revise_commission`), so reconciliation compares the ledger's cash with the
broker's. Through the engine on the sim broker, on SQLite and PostgreSQL.

MBT: multiplier 0.1, commission 1.00 per contract at the sim.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled
from test_attributed_corrections import C_TREND, C_U, TREND, World, w  # noqa: F401 (w: the fixture)

C_CARRY = "Expenses:Commissions:Carry"


def commission_row(w, exec_id):
    with read_connection(w.env.engine) as conn:
        row = conn.execute(sa.select(tables.fill).where(tables.fill.c.exec_id == exec_id)).one()
    return from_scaled(row.commission), row.commission_txn_id


def test_a_changed_commission_is_booked_by_difference_and_a_rerun_is_a_replay(w):
    w.buy({"Trend": 2})
    w.sync()
    [fill] = w.exchange.executions()
    assert w.income()[C_TREND] == D("2.00")
    w.exchange.revise_commission(fill.exec_id, D("2.50"))
    before = w.entries()
    report = w.sync()
    assert w.income()[C_TREND] == D("2.50") and w.entries() == before + 1  # 2.00 before the fix: dropped
    assert report.commission_changes == [(fill.exec_id, D("2.00"), D("2.50"), "USD")]
    assert report.replays == 0 and report.booked == [] and report.commissions == []
    commission, txn_id = commission_row(w, fill.exec_id)
    entry = w.env.ledger.get(txn_id)
    assert commission == D("2.50") and f"fill-{fill.base_exec_id}" in entry.links
    assert "2.00 -> 2.50" in entry.narration
    again = w.sync()  # the same report again: a replay
    assert again.commission_changes == [] and again.replays == 1 and w.entries() == before + 1
    w.assert_clean()
    # A second change (down to 1.75) replaces the first: its entry is reversed, not stacked.
    w.exchange.revise_commission(fill.exec_id, D("1.75"))
    assert w.sync().commission_changes == [(fill.exec_id, D("2.50"), D("1.75"), "USD")]
    assert w.income()[C_TREND] == D("1.75") and w.env.ledger.reversed_by(txn_id) is not None
    w.assert_clean()
    # A correction of the fill afterwards reverses the fill and the commission standing now
    # (1.75), and books the corrected version's (the sim charges 2 x 1.00 again).
    w.exchange.advance_clock(dt.timedelta(minutes=1))
    w.exchange.correct_execution(fill.exec_id, D(89900))
    assert w.sync().corrected == [fill.base_exec_id + ".02"]
    assert w.income()[C_TREND] == D("2.00") and w.income()[TREND] == D("20.00")
    w.assert_clean()


def test_a_changed_commission_of_a_split_fill_and_of_a_late_one(w):
    """Split over trend 2 / carry 1 (3.00: 2.00 / 1.00) then changed to 3.30: 2.20 / 1.10. A
    late commission (its own entry) changed: that entry is reversed, the new one booked."""
    w.buy({"Trend": 2, "Carry": 1})
    w.sync()
    [fill] = w.exchange.executions()
    income = w.income()
    assert (income[C_TREND], income[C_CARRY]) == (D("2.00"), D("1.00"))
    w.exchange.revise_commission(fill.exec_id, D("3.30"))
    report = w.sync()
    income = w.income()
    assert (income[C_TREND], income[C_CARRY]) == (D("2.20"), D("1.10"))
    assert len(report.commission_changes) == 1
    # report costs reads the parts back from the fill's entry and its commission's: as pnl says.
    from tradeledger.reports.exposure import costs, fills_with_costs
    [row] = fills_with_costs(w.session)
    assert row["commission"] == D("3.30")
    assert {p["strategy"]: p["commission"] for p in row["strategies"]} == {"trend": D("2.20"), "carry": D("1.10")}
    assert {r["strategy"]: r["commissions"] for r in costs(w.session)["rows"]} == {"trend": D("2.20"),
                                                                                  "carry": D("1.10")}
    w.assert_clean()

    w.exchange.fault_late_commission(n_polls=1)
    late = w.exchange.external_trade(w.contract, D(1), D(90000))
    assert w.sync().pending_commissions == [late.base_exec_id]
    assert w.sync().commissions == [late.base_exec_id]
    _, late_txn = commission_row(w, late.exec_id)
    w.exchange.revise_commission(late.exec_id, D("0.80"))
    report = w.sync()
    assert w.income()[C_U] == D("0.80") and w.env.ledger.reversed_by(late_txn) is not None
    assert report.commission_changes == [(late.exec_id, D("1.00"), D("0.80"), "USD")]
    w.assert_clean()


def test_a_changed_commission_of_an_attributed_fill_stays_with_the_strategy(w):
    """The commission was in the fill's entry (Unattributed's) and the attribution moved it to
    trend: the change takes back trend's 2.00 and books 2.60 to trend; Unattributed stays at 0."""
    fill = w.exchange.external_trade(w.contract, D(2), D(90000))
    w.sync()
    w.attribute(fill.base_exec_id)
    w.exchange.revise_commission(fill.exec_id, D("2.60"))
    report = w.sync()
    income = w.income()
    assert income[C_TREND] == D("2.60") and income.get(C_U, D(0)) == 0
    assert len(report.commission_changes) == 1
    w.assert_clean()


def test_a_changed_commission_through_the_ib_gateway_and_the_real_client(tmp_path):
    """The simulated IB gateway answers reqExecutions with the exchange's commission report for
    the same execId; ib_async updates the fill's report in place, and the sync books the change."""
    from tradeledger.engine.trading.cycle import wait_for_fills
    from support import sync_until_commissions_booked
    from test_ib_faults import Rig

    rig = Rig(tmp_path)
    try:
        run_id = rig.record({"Trend": 2})
        rig.submit(run_id)
        wait_for_fills(rig.session, run_id, timeout=5)
        # The fill and its commission are two messages; a sync between them books the commission
        # as pending (by design), so wait for the commission itself, not a time.
        sync_until_commissions_booked(rig.env, rig.session.broker)
        [ex] = rig.exchange.executions()
        assert rig.env.ledger.income()[("Expenses:Commissions:Trend", "USD")] == D("2.00")
        rig.exchange.revise_commission(ex.exec_id, D("2.35"))
        rig.session.broker.executions(refresh=True)  # reqExecutions now, as a reconnect or the timer does
        report = rig.sync()
        assert rig.env.ledger.income()[("Expenses:Commissions:Trend", "USD")] == D("2.35")
        assert report.commission_changes == [(ex.exec_id, D("2.00"), D("2.35"), "USD")]
        assert rig.sync().commission_changes == []
        rig.assert_exactly_once(orders=1)  # ledger cash vs the gateway's: reconciliation clean
    finally:
        rig.close()


def test_a_commission_reported_in_another_currency_is_refused_and_nothing_is_written(w):
    """Another currency is not a difference the engine can book: the booking raises (a sync
    then reports the execution as not booked and opens an exception) and writes nothing."""
    from dataclasses import replace

    import pytest

    from tradeledger.engine.trading.fills import SyncReport, book_execution

    w.buy({"Trend": 2})
    w.sync()
    [fill] = w.exchange.executions()
    before = w.entries()
    odd = replace(fill, commission=D("1.80"), commission_currency="EUR")
    with pytest.raises(ValueError, match="commission reported in EUR, booked in USD"):
        with w.env.engine.begin() as conn:
            book_execution(conn, w.env.books, odd, SyncReport(), now=w.session.now())
    assert w.entries() == before and commission_row(w, fill.exec_id)[0] == D("2.00")
