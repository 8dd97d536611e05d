"""A cash movement is booked once, however often `adjust cash` is run (engine/trust/cash_moves.py).

With the broker's reference (`--ref`, IB's transaction id) the run again is a replay: nothing
booked, exit 0, "already booked as entry N"; the same reference with another movement is refused.
Without one, an equal movement (kind, currency, amount, day) already booked refuses the run unless
`--again`. A reference booked by hand and the same transaction id in IB's Flex statement meet: the
statement books nothing twice and proposes nothing booked. Two processes racing with one reference
book once. Every test runs on SQLite and PostgreSQL, through the CLI as the trader types it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.trust import adjust, cash_moves
from tradeledger.engine.trust.exceptions import list_exceptions
from tradeledger.engine.trust.flex import CashMove, import_flex, unbooked_moves
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount
from support import SPY_CORE_CONFIG, booked_once, one_line_error, sim_world

UTC = dt.timezone.utc
DATA = Path(__file__).parent / "data" / "flex_december.xml"  # interest 9004, fee 9005, deposit 9006
NOW = dt.datetime(2027, 1, 2, 12, tzinfo=UTC)
CONFIG = SPY_CORE_CONFIG


@pytest.fixture
def home(tmp_path, db_url):
    home = tmp_path / "home"
    # The days are the December 2026 Flex statement's (tests/data, shared with the Flex tests), so the
    # exchange's clock is set by the test's world, as sim_world does: `sim clock set` moves it only
    # forward from the machine's time, and refused these days from 2027-01-02 on.
    env, session = sim_world(home, CONFIG, NOW, db_url=db_url)
    session.close()
    env.engine.dispose()
    return home


def tl(*args, code: int | None = 0, input: str | None = None):
    result = CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def cash(home, *args, code: int | None = 0, input: str | None = None):
    """`adjust cash` as typed; --reason unless given."""
    reason = () if "--reason" in args else ("--reason", "wire")
    return tl("--home", home, "adjust", "cash", *args, *reason, code=code, input=input)


def cash_json(home, *args, code: int = 0) -> dict:
    return json.loads(cash(home, *args, "--json", code=code).stdout)


def _open(home):
    from tradeledger.engine.setup.environment import open_environment

    return open_environment(home, "paper")


def balance(home, account="cash", currency="USD") -> D:
    env = _open(home)
    try:
        name = env.chart.cash if account == "cash" else account
        return env.ledger.balances().get((name, currency), D(0))
    finally:
        env.engine.dispose()


def count(home) -> int:
    env = _open(home)
    try:
        return env.ledger.count()[0]
    finally:
        env.engine.dispose()


# -- with the broker's reference ---------------------------------------------------------------------

def test_the_same_reference_twice_books_once(home):
    first = cash_json(home, "USD", "5000", "--kind", "deposit", "--ref", "1234567890", "--yes")
    assert first["booked"] is True and first["replay"] is False and first["ref"] == "1234567890"
    assert first["earlier"] == [] and first["quantity"] == "5000"
    assert (first["cash_kind"], first["currency"], first["amount"], first["date"]) == ("deposit", "USD", "5000",
                                                                                      "2027-01-02")
    entries = count(home)
    again = cash(home, "USD", "5000", "--kind", "deposit", "--ref", "1234567890", "--yes")
    assert again.stdout.strip() == (f"already booked as entry {first['entry']}: deposit 5000 USD on 2027-01-02, "
                                    "ref 1234567890; nothing booked")
    assert again.stderr == ""
    replay = cash_json(home, "USD", "5000", "--kind", "deposit", "--ref", "1234567890", "--yes")
    assert replay == {"kind": "cash", "booked": False, "replay": True, "entry": first["entry"], "ref": "1234567890",
                      "cash_kind": "deposit", "currency": "USD", "amount": "5000", "date": "2027-01-02"}
    # reworded, as the statement's exception names it (flex-ID), the next day: the same movement
    tl("--home", home, "sim", "clock", "set", "2027-01-03T09:00")
    assert cash_json(home, "5000", "usd", "--kind", "deposit", "--ref", "flex-1234567890", "--reason",
                     "wire from the bank, retried", "--yes")["entry"] == first["entry"]
    # a dry run of a replay asks nothing
    assert "already booked as entry" in cash(home, "USD", "5000", "--kind", "deposit", "--ref", "1234567890").stdout
    assert count(home) == entries and balance(home) == D(5000)


@pytest.mark.parametrize("change, what", [
    (("USD", "5001", "--kind", "deposit"), "amount 5000 (asked 5001)"),
    (("EUR", "5000", "--kind", "deposit"), "currency USD (asked EUR)"),
    (("USD", "5000", "--kind", "adjustment"), "kind deposit (asked adjustment)"),
    (("USD", "5000", "--kind", "deposit", "--date", "2026-12-30"), "date 2026-12-31 (asked 2026-12-30)"),
])
def test_the_same_reference_with_another_movement_is_refused(home, change, what):
    first = cash_json(home, "USD", "5000", "--kind", "deposit", "--date", "2026-12-31", "--ref", "R-7", "--yes")
    entries = count(home)
    refused = cash(home, *change, "--ref", "R-7", "--yes", code=1)
    line = one_line_error(refused)
    assert f"ref R-7 is already booked as entry {first['entry']}" in line and what in line
    assert f"adjust reverse {first['entry']}" in line
    assert count(home) == entries and balance(home) == D(5000)


def test_a_reversed_reference_is_booked_again_and_then_replays(home):
    wrong = cash_json(home, "USD", "500", "--kind", "deposit", "--ref", "9", "--yes")  # a zero missing
    tl("--home", home, "adjust", "reverse", wrong["entry"], "--reason", "a zero missing", "--yes")
    right = cash_json(home, "USD", "5000", "--kind", "deposit", "--ref", "9", "--yes")
    assert right["booked"] is True and right["entry"] != wrong["entry"]
    assert cash_json(home, "USD", "5000", "--kind", "deposit", "--ref", "9", "--yes")["entry"] == right["entry"]
    env = _open(home)
    try:
        txn = env.ledger.get(right["entry"])
        assert txn.key == f"cash:{env.chart.broker_account}:flex-9:2" and "ref-9" in txn.links
        assert env.ledger.get(wrong["entry"]).key == f"cash:{env.chart.broker_account}:flex-9"
    finally:
        env.engine.dispose()
    assert balance(home) == D(5000)


def test_a_reference_that_cannot_be_a_key_and_again_with_a_reference_are_refused(home):
    assert "the broker's reference is letters" in one_line_error(
        cash(home, "USD", "5", "--kind", "deposit", "--ref", "a b", "--yes", code=1))
    both = cash(home, "USD", "5", "--kind", "deposit", "--ref", "1", "--again", "--yes", code=2)
    assert "--again is for a movement without --ref" in both.stderr
    assert count(home) == 0 or balance(home) == 0


# -- without a reference -----------------------------------------------------------------------------

def test_an_equal_movement_the_same_day_is_refused_unless_again(home):
    first = cash_json(home, "USD", "5000", "--kind", "deposit", "--yes")
    entries = count(home)
    refused = cash(home, "USD", "5000", "--kind", "deposit", "--yes", code=1)
    line = one_line_error(refused)
    assert line == (f"error: an equal deposit 5000 USD on 2027-01-02 is already booked as entry {first['entry']}: if "
                    "this is that one, nothing to do; give --ref REF (the broker's id of this movement) or --again "
                    "if it is a second one")
    assert count(home) == entries
    # the dry run of a second one shows the first; declined, nothing is booked
    dry = cash(home, "USD", "5000", "--kind", "deposit", "--again", input="n\n")
    assert f"already booked that day: entry {first['entry']}: Deposit 5000 USD: wire" in dry.stdout
    assert "not booked" in dry.stdout and count(home) == entries
    second = cash_json(home, "USD", "5000", "--kind", "deposit", "--again", "--yes")
    assert second["booked"] is True and [e["entry"] for e in second["earlier"]] == [first["entry"]]
    # another kind, currency or amount is another movement
    cash(home, "USD", "5000", "--kind", "adjustment", "--yes")
    cash(home, "EUR", "5000", "--kind", "deposit", "--yes")
    cash(home, "USD", "4999.99", "--kind", "deposit", "--yes")
    # a reference says which movement it is: booked, the equal ones shown
    third = cash_json(home, "USD", "5000", "--kind", "deposit", "--ref", "77", "--yes")
    assert third["booked"] is True and len(third["earlier"]) == 2
    assert balance(home) == D(5000) * 4 + D("4999.99")


def test_a_backdated_movement_is_equal_only_to_one_of_the_same_date(home):
    first = cash_json(home, "USD", "-2000", "--kind", "withdrawal", "--date", "2026-12-20", "--yes")
    refused = cash(home, "USD", "-2000", "--kind", "withdrawal", "--date", "2026-12-20", "--yes", code=1)
    assert f"on 2026-12-20 is already booked as entry {first['entry']}" in one_line_error(refused)
    cash(home, "USD", "-2000", "--kind", "withdrawal", "--date", "2026-12-21", "--yes")  # another day
    cash(home, "USD", "-2000", "--kind", "withdrawal", "--yes")  # today's
    assert balance(home) == D(-6000)


def test_a_reversed_movement_does_not_refuse_its_rebooking(home):
    first = cash_json(home, "USD", "300", "--kind", "interest", "--yes")
    tl("--home", home, "adjust", "reverse", first["entry"], "--reason", "wrong account", "--yes")
    assert cash_json(home, "USD", "300", "--kind", "interest", "--yes")["earlier"] == []
    assert balance(home) == D(300)


# -- with IB's Flex statement ------------------------------------------------------------------------

def open_exceptions(home) -> dict:
    env = _open(home)
    try:
        with read_connection(env.engine) as conn:
            return {(e["kind"], e["subject"]): e for e in list_exceptions(conn, "open")}
    finally:
        env.engine.dispose()


def flex(home):
    env = _open(home)
    try:
        return import_flex(env, DATA, now=NOW)
    finally:
        env.engine.dispose()


def test_a_deposit_booked_by_hand_with_its_id_is_not_proposed_by_the_statement(home):
    hand = cash_json(home, "USD", "5000", "--kind", "deposit", "--date", "2026-12-15", "--ref", "9006", "--yes")
    report = flex(home)
    assert report.proposed == [] and report.differences == []
    assert ("cash_movement", "USD 5000 2026-12-15") not in open_exceptions(home)
    # ...and after the statement, the proposed command run again is a replay
    assert cash_json(home, "USD", "5000", "--kind", "deposit", "--date", "2026-12-15", "--ref", "9006",
                     "--yes")["entry"] == hand["entry"]


def test_the_statements_proposal_run_twice_books_once_and_resolves_its_exception(home):
    report = flex(home)
    [proposal] = report.proposed
    assert "--ref 9006" in proposal
    assert ("cash_movement", "USD 5000 2026-12-15") in open_exceptions(home)
    import shlex
    words = shlex.split(proposal)[1:]  # tradeledger adjust cash ...
    booked = json.loads(tl("--home", home, *words, "--yes", "--json").stdout)
    assert booked["booked"] is True and any(k.startswith("cash_movement") for k in booked["resolved"])
    assert ("cash_movement", "USD 5000 2026-12-15") not in open_exceptions(home)
    again = json.loads(tl("--home", home, *words, "--yes", "--json").stdout)
    assert again["replay"] is True and again["entry"] == booked["entry"]
    assert flex(home).proposed == []


def test_interest_booked_by_hand_with_its_id_is_known_to_the_statement(home):
    hand = cash_json(home, "USD", "12.34", "--kind", "interest", "--date", "2026-12-03", "--ref", "9004", "--yes")
    report = flex(home)
    assert report.account_cash_booked == ["fee -1.50 USD 2026-12-03"] and report.account_cash_known == 1
    assert report.differences == []
    income = {k: v for k, v in _income(home).items() if k[0].startswith("Income:")}
    assert income == {("Income:Adjustments", "USD"): D("-12.34"), ("Income:Dividends:Unattributed", "USD"): D("-18.50")}
    assert flex(home).account_cash_known == 2  # and a replay of the statement books nothing
    assert cash_json(home, "USD", "12.34", "--kind", "interest", "--ref", "9004", "--yes")["entry"] == hand["entry"]
    env = _open(home)
    try:
        path = Path(str(home)) / "check.beancount"
        export_beancount(env.ledger, path)
        assert check(env.ledger, path).ok
    finally:
        env.engine.dispose()


def test_interest_booked_by_the_statement_is_a_replay_by_hand_and_another_figure_refused(home):
    flex(home)
    env = _open(home)
    try:
        entry = env.ledger.find_by_key(f"interest:{env.chart.broker_account}:flex-9004")
    finally:
        env.engine.dispose()
    replay = cash_json(home, "USD", "12.34", "--kind", "interest", "--date", "2026-12-03", "--ref", "9004", "--yes")
    assert replay["replay"] is True and replay["entry"] == entry
    refused = cash(home, "USD", "12.43", "--kind", "interest", "--ref", "9004", "--yes", code=1)
    assert f"ref 9004 is already booked as entry {entry}" in one_line_error(refused)


def test_interest_booked_by_hand_with_another_figure_is_a_statement_difference(home):
    cash(home, "USD", "12.00", "--kind", "interest", "--date", "2026-12-03", "--ref", "9004", "--yes")
    report = flex(home)
    assert report.account_cash_booked == ["fee -1.50 USD 2026-12-03"]
    [difference] = report.differences
    assert "12.34" in difference and "amount 12 (statement 12.34)" in difference
    assert ("statement_difference", "interest 9004") in open_exceptions(home)
    assert balance(home, "Income:Adjustments") == D("-12.00")


def test_interest_booked_by_hand_then_reversed_is_booked_from_the_statement(home):
    hand = cash_json(home, "USD", "12.34", "--kind", "interest", "--date", "2026-12-03", "--ref", "9004", "--yes")
    tl("--home", home, "adjust", "reverse", hand["entry"], "--reason", "let the statement allocate it", "--yes")
    report = flex(home)
    assert sorted(report.account_cash_booked) == ["fee -1.50 USD 2026-12-03", "interest 12.34 USD 2026-12-03"]
    assert flex(home).account_cash_booked == []


def _income(home) -> dict:
    env = _open(home)
    try:
        return env.ledger.income()
    finally:
        env.engine.dispose()


def test_a_booking_with_a_reference_stands_only_for_its_own_statement_line():
    """(pure) Two deposits of 5,000 on one day: the one booked with id 1 does not hide id 2, and one
    booked without an id still stands for a line by amount and day."""
    day = dt.date(2026, 12, 15)
    moves = [CashMove(day, D(5000), "USD", "wire", "flex-1"), CashMove(day, D(5000), "USD", "wire", "flex-2")]
    assert [m.ref for m in unbooked_moves(moves, [("USD", D(5000), day, "1")])] == ["flex-2"]
    assert [m.ref for m in unbooked_moves(moves, [("USD", D(5000), day, "3")])] == ["flex-1", "flex-2"]
    assert [m.ref for m in unbooked_moves(moves, [("USD", D(5000), day, "2"), ("USD", D(5000), day, None)])] == []


def test_the_decisions_are_pure():
    day = dt.date(2026, 12, 1)
    asked = cash_moves.Movement("deposit", "USD", D(5000), day)
    booked = cash_moves.Earlier(3, cash_moves.Movement("deposit", "USD", D(5000), day - dt.timedelta(days=1)), "x")
    with pytest.raises(cash_moves.Replay):  # no --date: the day booked stands
        cash_moves.decide_ref(booked, asked, dated=False, ref="1")
    with pytest.raises(adjust.AdjustError, match="date 2026-11-30 \\(asked 2026-12-01\\)"):
        cash_moves.decide_ref(booked, asked, dated=True, ref="1")
    cash_moves.decide_ref(None, asked, dated=True, ref="1")
    cash_moves.decide_plain([booked], asked, again=True)
    assert cash_moves.ref_key("U1", "interest", "5", 2) == "interest:U1:flex-5:2"
    assert cash_moves.ref_of_key("U1", "interest:U1:flex-5:2") == "5"
    assert cash_moves.ref_of_key("U1", "adjust:cash:U1:abc") is None
    assert cash_moves.normal_ref(" flex-12 ") == "12"


# -- two processes at once ---------------------------------------------------------------------------

def test_processes_racing_with_one_reference_book_once(home):
    """Four processes run the same `adjust cash --ref R --yes` at once: one books, three report the
    replay of its entry (exit 0); the ledger holds the deposit once."""
    command = [sys.executable, "-m", "tradeledger.cli", "--home", str(home), "adjust", "cash", "USD", "5000",
               "--kind", "deposit", "--ref", "555", "--reason", "wire", "--yes", "--json"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    booked_once(processes)
    assert balance(home) == D(5000)


def test_the_unique_key_decides_when_a_booking_crosses_another(home, db_url):
    """PostgreSQL (SQLite has one writer: this cannot happen there): another run books R between
    this run's look-up and its insert, without the trading lease; the key index refuses the second
    insert and the run reports the replay of the other's entry."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): no booking can cross another")
    env = _open(home)
    try:
        now = env.now()
        other: list = []

        def planner(conn):
            adj = adjust.plan_cash_move(conn, env, "USD", D(5000), "wire", now, "unused", "deposit", "42")
            other.append(env.ledger.book(adj.txn).id)  # its own transaction, committed now
            return adj

        with pytest.raises(cash_moves.Replay) as replay:
            adjust._book(env, planner, "test", None)
        assert replay.value.entry == other[0]
        assert env.ledger.balances()[(env.chart.cash, "USD")] == D(5000)
    finally:
        env.engine.dispose()
