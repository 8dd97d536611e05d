"""What the trader is told about an outside fill, across attribution and its reversal.

An outside BUY 2 MBTZ26 (no orderRef of ours) is booked to Unattributed and raises an
`unattributed_fill` exception; `adjust attribute` gives it to a strategy and resolves it. When
the trader reverses that attribution (`adjust reverse`), the fill is Unattributed's again, and so
is the question: the same transaction that books the reversal raises the exception anew (a new
row under the same dedupe key: the resolved one keeps its history), so `exceptions` and `status`
show it; attributing the fill again resolves it again. A repeated reversal is refused and
raises nothing. The blotter names the holder as the user does (`carry`, not the account component
`Carry`), and says apart that the fill is attributed; messages about money show its cents.

Through the engine and the `tradeledger` command on the simulated broker, SQLite and PostgreSQL
(the `w` fixture of test_attributed_corrections: MBT, 1.00 commission per contract).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, strategies as st

from tradeledger.engine.trust import adjust
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.errors import AdjustError
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import MINOR_UNITS, money_exact, plain
from test_attributed_corrections import World, w  # noqa: F401 (w: the fixture)
from test_reattribution import as_json, attribute, outside_buy, reverse, run


def fill_exceptions(w: World, key: str) -> list[dict]:
    """The unattributed_fill exceptions of fill `key`, oldest first."""
    with read_connection(w.env.engine) as conn:
        rows = list_exceptions(conn)
    return [e for e in reversed(rows) if e["dedupe_key"] == f"unattributed_fill:DU1234567:{key}"]


def states(w: World, key: str) -> list[str]:
    return [e["state"] for e in fill_exceptions(w, key)]


def test_reversing_the_attribution_raises_the_unattributed_fill_again(w):
    """Before the fix the reversal left the only exception resolved: the fill sat in Unattributed
    and nothing open said so."""
    fill = outside_buy(w)
    key = fill.base_exec_id
    assert states(w, key) == ["open"]
    booked = attribute(w, key)
    assert booked.resolved == (f"unattributed_fill:DU1234567:{key}",) and states(w, key) == ["resolved"]
    undone = reverse(w, booked.txn_id)
    assert w.positions() == {(None, "MBTZ26"): D(2)}
    assert states(w, key) == ["resolved", "open"]
    raised = fill_exceptions(w, key)[-1]
    assert raised["kind"] == "unattributed_fill" and raised["subject"] == f"MBTZ26 {key}"
    assert f"attribution to trend (entry {booked.txn_id}) is reversed" in raised["detail"]
    assert "not mine" in raised["detail"]  # the reversal's reason
    assert undone.reopened == (f"unattributed_fill:DU1234567:{key}",)
    w.assert_clean()


def test_a_repeated_reversal_is_refused_and_raises_nothing(w):
    fill = outside_buy(w)
    booked = attribute(w, fill.base_exec_id)
    key = adjust.new_key("reverse", w.env.chart)
    reverse(w, booked.txn_id, request_key=key)
    for again in (key, None):  # the same request rerun, or a new one
        with pytest.raises(AdjustError, match="already reversed"):
            reverse(w, booked.txn_id, request_key=again)
    [_, raised] = fill_exceptions(w, fill.base_exec_id)
    assert (raised["state"], raised["count"]) == ("open", 1)


def test_attributing_again_resolves_it_again_and_each_reversal_raises_it_once(w):
    fill = outside_buy(w, late=True)
    key = fill.base_exec_id
    first = attribute(w, key)
    w.sync()  # the late commission, booked to trend
    reverse(w, first.txn_id)
    second = attribute(w, key, "carry")
    assert second.resolved == (f"unattributed_fill:DU1234567:{key}",)
    assert states(w, key) == ["resolved", "resolved"]
    reverse(w, second.txn_id)
    assert states(w, key) == ["resolved", "resolved", "open"]
    attribute(w, key)
    assert states(w, key) == ["resolved"] * 3
    w.assert_clean()


def test_the_dry_run_says_it_and_raises_nothing(w):
    """The plan (what the dry run shows) names the exception it raises; only booking raises it."""
    fill = outside_buy(w)
    booked = attribute(w, fill.base_exec_id)
    with read_connection(w.env.engine) as conn:
        plan = adjust.plan_reverse(conn, w.session, booked.txn_id, "not mine", w.session.now(),
                                   adjust.new_key("reverse", w.env.chart))
    assert plan.summary()["reopens"] == [f"unattributed_fill:DU1234567:{fill.base_exec_id}"]
    assert states(w, fill.base_exec_id) == ["resolved"]


def test_reversing_another_kind_of_entry_raises_nothing(w):
    """An adoption's reversal, a cash adjustment's: no fill goes back to Unattributed."""
    fill = outside_buy(w)
    attribute(w, fill.base_exec_id)
    now = w.session.now()
    cash = adjust.book(w.session, lambda conn: adjust.plan_cash(
        conn, w.session, "USD", D("5.00"), "interest", now, adjust.new_key("cash", w.env.chart)), who="test")
    assert reverse(w, cash.txn_id).reopened == ()
    assert states(w, fill.base_exec_id) == ["resolved"]


def test_the_users_path_exceptions_and_status_show_it_again(w):
    """`sim trade`, `fills sync`, `adjust attribute`, `adjust reverse` (its dry run says it
    re-opens the exception), then `exceptions list` and `status` show it open again; `adjust
    attribute` resolves it again; a rerun of the reversal is refused and leaves one open."""
    home = w.tmp / "home"
    run(home, "sim", "trade", "MBTZ26", "2", "90000")
    run(home, "fills", "sync")
    [fill] = as_json(home, "fills", "list")
    key, dedupe = fill["fill_id"], f"unattributed_fill:DU1234567:{fill['fill_id']}"

    def open_keys():
        return [e["dedupe_key"] for e in as_json(home, "exceptions", "list")]

    assert open_keys() == [dedupe]
    attributed = as_json(home, "adjust", "attribute", key, "--strategy", "carry", "--yes")
    assert open_keys() == [] and as_json(home, "status")["open_exceptions"]["warning"] == 0
    dry = run(home, "adjust", "reverse", attributed["entry"], "--reason", "not ours", input="n\n").output
    assert f"re-opens: {dedupe}" in dry and open_keys() == []
    said = run(home, "adjust", "reverse", attributed["entry"], "--reason", "not ours", input="y\n").output
    assert f"re-opened {dedupe}" in said
    assert open_keys() == [dedupe] and as_json(home, "status")["open_exceptions"]["warning"] == 1
    again = run(home, "adjust", "reverse", attributed["entry"], "--reason", "again", "--yes", ok=False)
    assert again.exit_code == 1 and open_keys() == [dedupe]
    out = as_json(home, "adjust", "attribute", key, "--strategy", "trend", "--yes")
    assert out["resolved"] == [dedupe] and open_keys() == []


# -- the blotter names the strategy as the user does -------------------------------------------------

def test_fills_list_json_names_the_strategy_as_the_user_does(w):
    """Before: "strategy": "Carry (attributed)", "allocation": {"Carry (attributed)": "2"} (the
    account component with a display label). Now the user's name, and a field of its own."""
    home = w.tmp / "home"
    run(home, "sim", "trade", "MBTZ26", "2", "90000")
    run(home, "fills", "sync")
    [fill] = as_json(home, "fills", "list")
    assert (fill["strategy"], fill["allocation"], fill["attributed_to"]) == ("unattributed", {"unattributed": "2"}, None)
    as_json(home, "adjust", "attribute", fill["fill_id"], "--strategy", "carry", "--yes")
    [fill] = as_json(home, "fills", "list")
    assert (fill["strategy"], fill["allocation"], fill["attributed_to"]) == ("carry", {"carry": "2"}, "carry")
    text = run(home, "fills", "list").output
    assert "carry (attributed)" in text and "Carry" not in text


def test_fills_list_of_a_strategys_own_fill_says_not_attributed(w):
    w.buy_for_trend(1)
    w.sync()
    [fill] = as_json(w.tmp / "home", "fills", "list")
    assert (fill["strategy"], fill["allocation"], fill["attributed_to"]) == ("trend", {"trend": "1"}, None)


# -- money in messages shows its cents ---------------------------------------------------------------

def test_the_changed_commission_warning_shows_cents(w):
    """Before: "from 2 to 2.60" for a booked 2.00 (the stored amount, normalised)."""
    home = w.tmp / "home"
    run(home, "sim", "trade", "MBTZ26", "2", "90000")
    run(home, "fills", "sync")
    [fill] = as_json(home, "fills", "list")
    w.exchange.revise_commission(fill["exec_id"], D("2.60"))
    said = run(home, "fills", "sync").output
    assert f"changed the commission of execution {fill['exec_id']} from 2.00 to 2.60 USD" in said
    w.exchange.revise_commission(fill["exec_id"], D("3"))
    said = run(home, "fills", "sync").output
    assert "from 2.60 to 3.00 USD" in said
    w.exchange.revise_commission(fill["exec_id"], D("3.0125"))  # never rounded away
    said = run(home, "fills", "sync").output
    assert "from 3.00 to 3.0125 USD" in said
    narrations = [t.narration for _, t in w.env.ledger.entries() if t.kind == "reversal"]
    assert any("2.60 -> 3.00 USD" in n for n in narrations), narrations


@given(st.decimals(min_value=-10**9, max_value=10**9, places=6, allow_nan=False, allow_infinity=False),
       st.sampled_from(["USD", "EUR", "JPY", "KWD", None]))
def test_money_exact_shows_the_minor_unit_and_never_rounds(amount, currency):
    text = money_exact(amount, currency)
    places = MINOR_UNITS.get(currency or "", 2)
    assert D(text) == amount and "E" not in text  # exact, never in exponent form
    shown = len(text.partition(".")[2])
    assert shown >= places and (shown == places or shown == -plain(amount).as_tuple().exponent)


def test_money_exact_examples():
    assert [money_exact(D(x), c) for x, c in [("2", "USD"), ("2.6", "USD"), ("3.0125", "USD"), ("200", "JPY"),
                                              ("1E+2", None), ("-0.5", "EUR"), ("1.5", "KWD")]] == \
        ["2.00", "2.60", "3.0125", "200", "100.00", "-0.50", "1.500"]


# -- an adopted surplus: the unattributed_position exception ------------------------------------------


def position_keys(home) -> list[tuple[str, str]]:
    """(state, severity) of every unattributed_position exception of MBTZ26, oldest first."""
    rows = as_json(home, "exceptions", "list", "--all")
    return [(e["state"], e["severity"]) for e in reversed(rows)
            if e["dedupe_key"] == "unattributed_position:DU1234567:MBTZ26"]


def test_reversing_an_adoption_raises_the_unattributed_position_again(w):
    """2 MBTZ26 arrive at the broker without an execution: `reconcile` adopts them into
    Unattributed and raises `unattributed_position`; `adjust adopt` gives them to carry and resolves
    it. Reversing that adoption puts the 2 back in Unattributed: before the fix nothing said so
    (the only exception stayed resolved, and no later reconciliation raises it: the ledger and the
    broker agree). Now the reversal raises it anew, as it was (the same severity), its dry run says
    so, and adopting again resolves it again."""
    home = w.tmp / "home"
    assert as_json(home, "reconcile")["clean"]  # the opening: the account was empty
    run(home, "sim", "transfer-in", "MBTZ26", "2", "--price", "90000")
    assert as_json(home, "reconcile")["clean"]
    assert position_keys(home) == [("open", "warning")]
    adopted = as_json(home, "adjust", "adopt", "MBTZ26", "2", "--strategy", "carry", "--reason", "ours", "--yes")
    assert adopted["resolved"] == ["unattributed_position:DU1234567:MBTZ26"]
    assert position_keys(home) == [("resolved", "warning")]
    dry = run(home, "adjust", "reverse", adopted["entry"], "--reason", "not ours", input="n\n").output
    assert "re-opens: unattributed_position:DU1234567:MBTZ26" in dry
    assert position_keys(home) == [("resolved", "warning")]
    run(home, "adjust", "reverse", adopted["entry"], "--reason", "not ours", "--yes")
    assert w.positions() == {(None, "MBTZ26"): D(2)}
    assert position_keys(home) == [("resolved", "warning"), ("open", "warning")]
    [raised] = [e for e in as_json(home, "exceptions", "list") if e["kind"] == "unattributed_position"]
    assert "Unattributed's again" in raised["detail"] and "not ours" in raised["detail"]
    assert "adjust adopt MBTZ26 2 --strategy" in raised["detail"]
    assert as_json(home, "reconcile")["clean"] and position_keys(home)[-1] == ("open", "warning")
    again = as_json(home, "adjust", "adopt", "MBTZ26", "2", "--strategy", "trend", "--reason", "trend's", "--yes")
    assert again["resolved"] == ["unattributed_position:DU1234567:MBTZ26"]
    assert position_keys(home) == [("resolved", "warning")] * 2
    w.assert_clean()


def test_reversing_a_partial_adoption_raises_nothing_new(w):
    """Adopting 1 of 2 leaves Unattributed holding 1: the exception stays open (nothing resolved),
    and reversing that adoption bumps nothing and opens no second row."""
    home = w.tmp / "home"
    as_json(home, "reconcile")
    run(home, "sim", "transfer-in", "MBTZ26", "2", "--price", "90000")
    as_json(home, "reconcile")
    adopted = as_json(home, "adjust", "adopt", "MBTZ26", "1", "--strategy", "carry", "--reason", "half", "--yes")
    assert adopted["resolved"] == []
    run(home, "adjust", "reverse", adopted["entry"], "--reason", "not ours", "--yes")
    assert position_keys(home) == [("open", "warning")]
    w.assert_clean()
