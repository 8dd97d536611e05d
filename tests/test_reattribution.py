"""A fill's commission follows whoever holds the fill's position, across time.

An outside BUY (no orderRef: booked to Unattributed) is attributed to a strategy; while the
attribution stands, a late commission and a changed commission are booked to the strategy. When
the trader reverses the attribution (the position goes back to Unattributed), the commission
those entries booked to the strategy goes back with it, in the same database transaction; a new
attribution (to the same or another strategy) takes it again. Per holder, the commission postings
of the fill's entries (the entries linked `fill-<exec key>`) are what IB charged times the share
of the fill that holder holds now, to the cent; `pnl`, `report costs` and the beancount export say
the same. Through the engine on the simulated broker, on SQLite and PostgreSQL (the `w` fixture
of test_attributed_corrections: MBT, 1.00 commission per contract at the sim).
"""

from __future__ import annotations

from decimal import Decimal as D

from tradeledger.engine.trust import adjust
from tradeledger.engine.accounting.entries import link
from test_attributed_corrections import C_TREND, C_U, w  # noqa: F401 (w: the fixture)

C_CARRY = "Expenses:Commissions:Carry"


def outside_buy(w, qty=2, late=False):
    if late:
        w.exchange.fault_late_commission(n_polls=1)
    fill = w.exchange.external_trade(w.contract, D(qty), D(90000))
    w.sync()
    return fill


def attribute(w, key, strategy="trend"):
    now = w.session.now()
    return adjust.book(w.session, lambda conn: adjust.plan_attribute(
        conn, w.session, key, strategy, "mine", now, adjust.new_key("attribute", w.env.chart)), who="test")


def reverse(w, txn_id):
    now = w.session.now()
    return adjust.book(w.session, lambda conn: adjust.plan_reverse(
        conn, w.session, txn_id, "not mine", now, adjust.new_key("reverse", w.env.chart)), who="test")


def fill_commissions(w, exec_key) -> dict[str, D]:
    """Expenses:Commissions account -> what the entries linked to the fill booked there (non-zero)."""
    out: dict[str, D] = {}
    for _, txn in w.env.ledger.entries():
        if f"fill-{link(exec_key)}" in txn.links:
            for p in txn.postings:
                if p.account.startswith("Expenses:Commissions:"):
                    out[p.account] = out.get(p.account, D(0)) + p.units
    return {a: v for a, v in out.items() if v}


def test_a_late_commission_goes_back_with_a_reversed_attribution(w):
    """Pending at the attribution, 2.00 arrives while it stands (trend's), then the trader reverses
    it: the 2 units are Unattributed's again, and so is the 2.00. Before the fix trend kept it."""
    fill = outside_buy(w, late=True)
    booked = attribute(w, fill.base_exec_id)
    assert w.sync().commissions == [fill.base_exec_id]
    assert fill_commissions(w, fill.base_exec_id) == {C_TREND: D("2.00")}
    reverse(w, booked.txn_id)
    assert w.positions() == {(None, "MBTZ26"): D(2)}
    assert fill_commissions(w, fill.base_exec_id) == {C_U: D("2.00")}
    income = w.income()
    assert (income.get(C_TREND, D(0)), income[C_U]) == (D(0), D("2.00"))
    w.assert_clean()


def test_a_changed_commission_goes_back_with_a_reversed_attribution(w):
    """2.00 known at the fill (the attribution moves it), changed to 2.60 while the attribution
    stands (trend's), then the attribution is reversed: all 2.60 is Unattributed's. Before the fix
    the reversal took back only the 2.00 the attribution moved; trend kept 0.60."""
    fill = outside_buy(w)
    booked = attribute(w, fill.base_exec_id)
    w.exchange.revise_commission(fill.exec_id, D("2.60"))
    assert len(w.sync().commission_changes) == 1
    assert fill_commissions(w, fill.base_exec_id) == {C_TREND: D("2.60")}
    reverse(w, booked.txn_id)
    assert fill_commissions(w, fill.base_exec_id) == {C_U: D("2.60")}
    w.assert_clean()


def test_a_reversed_attribution_can_be_attributed_again(w):
    """The trader gave the fill to the wrong strategy: reversed, it goes to carry, with its
    commission (late, then changed while trend held it)."""
    fill = outside_buy(w, late=True)
    first = attribute(w, fill.base_exec_id)
    w.sync()
    w.exchange.revise_commission(fill.exec_id, D("2.40"))
    w.sync()
    reverse(w, first.txn_id)
    attribute(w, fill.base_exec_id, "carry")
    assert w.positions() == {("Carry", "MBTZ26"): D(2)}
    assert fill_commissions(w, fill.base_exec_id) == {C_CARRY: D("2.40")}
    w.assert_clean()


def test_a_late_commission_changed_before_any_attribution_is_grouped_under_its_instrument(w):
    """`pnl --by instrument` puts a commission entry's reversal beside the entry (its reversal
    names the entry's contract). Before, a changed late commission left its reversal in 'other':
    MBT 4.60, other -2.00, for a fill that cost 2.60."""
    from tradeledger.reports.pnl import pnl, replayed_pnl
    fill = outside_buy(w, late=True)
    w.sync()
    w.exchange.revise_commission(fill.exec_id, D("2.60"))
    w.sync()
    for report in (pnl, replayed_pnl):
        rows = report(w.session, by="instrument")["rows"]
        assert [(r["instrument"], r["commissions"]) for r in rows] == [("MBT", D("2.60"))], report.__name__
    w.assert_clean()
