"""An attributed fill (booked to Unattributed, given to a strategy by `adjust attribute`) in
`report costs`, in a late commission and in the blotter: each says who holds it now.

- `report costs` reads a fill's commission from the ledger: its entry, its late (or changed)
  commission's, and its attribution's (which moved the commission to the strategy) with that
  attribution's reversal. Per strategy it equals `pnl`'s commissions column, to the cent.
- The effective holder of the fill's Unattributed part is the attribution's strategy while the
  attribution stands, Unattributed once the trader reversed it (`attribution.live_attribution`):
  a late commission books there, and `fills list` shows it.

Through the engine on the simulated broker, on SQLite and PostgreSQL (the `w` fixture of
test_attributed_corrections: MBT, 1.00 commission per contract).
"""

from __future__ import annotations

from decimal import Decimal as D

from tradeledger.engine.trading.fills import list_fills
from tradeledger.engine.trust import adjust
from tradeledger.ledger.db import read_connection
from tradeledger.reports.exposure import costs, fills_with_costs
from tradeledger.reports.pnl import pnl
from test_attributed_corrections import C_TREND, C_U, w  # noqa: F401 (w: the fixture)


def outside_buy(w, late=False):
    if late:
        w.exchange.fault_late_commission(n_polls=1)
    fill = w.exchange.external_trade(w.contract, D(2), D(90000))
    w.sync()
    return fill


def reverse(w, txn_id):
    now = w.session.now()
    adjust.book(w.session, lambda conn: adjust.plan_reverse(conn, w.session, txn_id, "not mine", now,
                                                          adjust.new_key("reverse", w.env.chart)), who="test")


def by_costs(w) -> dict:
    return {r["strategy"]: r["commissions"] for r in costs(w.session)["rows"] if r["commissions"]}


def by_pnl(w) -> dict:
    return {r["strategy"]: r["commissions"] for r in pnl(w.session)["rows"] if r["commissions"]}


def blotter(w, key) -> dict:
    with read_connection(w.env.engine) as conn:
        [row] = [r for r in list_fills(conn, w.env.ledger) if r["fill_id"] == key]
    return row["allocation"]


def test_costs_give_an_attributed_fills_commission_to_the_strategy(w):
    """The probe: outside BUY 2 (commission 2.00 in the fill's entry, Unattributed's), attributed to
    trend (the attribution moves the 2.00). Before the fix costs said {'unattributed': 2.00}
    where pnl says {'trend': 2.00}."""
    fill = outside_buy(w)
    w.attribute(fill.base_exec_id)
    assert w.income()[C_TREND] == D("2.00") and w.income().get(C_U, D(0)) == 0
    assert by_costs(w) == by_pnl(w) == {"trend": D("2.00")}
    [row] = fills_with_costs(w.session)
    assert [(p["strategy"], p["quantity"], p["commission"]) for p in row["strategies"]] == [("trend", D(2), D("2.00"))]
    assert blotter(w, fill.base_exec_id) == {"Trend": D(2)}
    w.assert_clean()


def test_costs_after_the_attribution_was_reversed_by_hand(w):
    """`adjust reverse` of the attribution moves the commission back: costs and pnl both say
    Unattributed 2.00, and the blotter no longer names trend."""
    fill = outside_buy(w)
    booked = w.attribute(fill.base_exec_id)
    reverse(w, booked.txn_id)
    assert by_costs(w) == by_pnl(w) == {"unattributed": D("2.00")}
    assert blotter(w, fill.base_exec_id) == {"unattributed": D(2)}
    w.assert_clean()


def test_a_late_commission_after_the_attribution_was_reversed_goes_to_unattributed(w):
    """The commission is pending when the fill is attributed (nothing moves), the trader reverses
    the attribution, then the 2.00 arrives: it is Unattributed's, who holds the 2 units. Before
    the fix it went to trend (and `fills list` still said "Trend (attributed)")."""
    fill = outside_buy(w, late=True)
    booked = w.attribute(fill.base_exec_id)
    reverse(w, booked.txn_id)
    assert w.positions() == {(None, "MBTZ26"): D(2)}
    assert w.sync().commissions == [fill.base_exec_id]
    income = w.income()
    assert (income.get(C_TREND, D(0)), income[C_U]) == (D(0), D("2.00"))
    assert by_costs(w) == by_pnl(w) == {"unattributed": D("2.00")}
    assert blotter(w, fill.base_exec_id) == {"unattributed": D(2)}
    assert w.sync().commissions == []  # a replay
    w.assert_clean()


def test_a_late_commission_while_the_attribution_stands_goes_to_the_strategy(w):
    """The guard: without a reversal the late 2.00 is trend's, in the ledger, costs, pnl and the blotter."""
    fill = outside_buy(w, late=True)
    w.attribute(fill.base_exec_id)
    assert w.sync().commissions == [fill.base_exec_id]
    assert w.income()[C_TREND] == D("2.00") and w.income().get(C_U, D(0)) == 0
    assert by_costs(w) == by_pnl(w) == {"trend": D("2.00")}
    assert blotter(w, fill.base_exec_id) == {"Trend": D(2)}
    w.assert_clean()
