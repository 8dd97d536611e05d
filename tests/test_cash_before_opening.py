"""Cash that moved before the opening is in the opening's cash: never suggested, never booked again.

The opening (engine/trust/opening.py) books what the broker's cash holds at its snapshot, every
movement up to then included. Its cut-off (engine/trust/cutoff.py) says which movements those
are: on the simulated broker exactly (the snapshot reads the exchange's cash journal up to a line),
on IB's Flex statement by the line's time against the opening's. Such a movement is never proposed
by reconciliation (`cash_movement`, the cash break), never booked by `import flex`, and booked by
hand (`actions interest|fee`, `adjust cash`) it is refused, naming the opening. `sim deposit --ref`
gives a deposit the broker's id: reconciliation proposes it with `--ref`, and the id entered again
at the broker's screen moves nothing twice. Every test runs on SQLite and PostgreSQL, through the
CLI as the trader types it, across reconciliations run twice and a day boundary.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from decimal import Decimal as D

import pytest

from tradeledger.engine.setup.environment import open_environment
from support import SPY_CORE_CONFIG, sim_world, tl

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 3, 15, tzinfo=UTC)
DAY = "2026-12-03"


@pytest.fixture
def home(tmp_path, db_url):
    """A sim environment with no opening yet, the exchange's clock at 2026-12-03 15:00 UTC."""
    home = tmp_path / "home"
    env, session = sim_world(home, SPY_CORE_CONFIG, T0, db_url=db_url)
    session.close()
    env.engine.dispose()
    return home


def cash(home) -> D:
    env = open_environment(home, "paper")
    try:
        return env.ledger.balances().get((env.chart.cash, "USD"), D(0))
    finally:
        env.engine.dispose()


def open_exceptions(home, kind: str) -> list[dict]:
    return [e for e in json.loads(tl(home, "exceptions", "list", "--json").stdout) if e["kind"] == kind]


def proposed_commands(detail: str) -> list[list[str]]:
    return [shlex.split(c)[1:] for c in re.findall(r'tradeledger actions [^;(]*?--reason "[^"]*"', detail)]


def test_interest_before_the_opening_is_in_it_and_never_proposed(home):
    tl(home, "sim", "interest", "12.34", "USD", "--ref", "9006")
    tl(home, "sim", "deposit", "USD", "1000")
    first = tl(home, "reconcile")  # takes the opening: the broker's 1012.34 USD, the interest in it
    assert "unbooked interest" not in first.stdout
    assert cash(home) == D("1012.34")
    for _ in range(2):  # run again: still nothing to book
        tl(home, "reconcile")
    assert open_exceptions(home, "cash_movement") == []
    # booked by hand anyway, as an older reconciliation proposed it: refused, nothing booked
    refused = tl(home, "actions", "interest", "12.34", "USD", "--date", DAY, "--ref", "9006", "--reason", "x", code=1)
    assert "opening" in refused.stderr and "twice" in refused.stderr
    assert cash(home) == D("1012.34")
    tl(home, "reconcile")
    assert open_exceptions(home, "cash_movement") == []


def test_a_proposal_raised_before_the_opening_is_resolved_by_the_next_reconciliation(home):
    """The first reconciliation checks the broker's interest before it takes the opening: nothing is
    proposed then either, and after a day a new interest (after the opening) is proposed alone."""
    tl(home, "sim", "interest", "5", "USD", "--ref", "7001")
    tl(home, "reconcile")
    tl(home, "sim", "clock", "set", "2026-12-04T15:00")
    tl(home, "sim", "interest", "7", "USD", "--ref", "7002")
    for _ in range(2):
        assert tl(home, "reconcile", code=1).exit_code == 1
        [found] = open_exceptions(home, "cash_movement")
        assert found["subject"] == "interest USD 2026-12-04"
        [command] = proposed_commands(found["detail"])
        assert command[command.index("--ref") + 1] == "7002" and "7001" not in found["detail"]
    assert json.loads(tl(home, *command, "--json").stdout)["booked"] is True
    assert tl(home, *command, "--json").exit_code == 0  # the same command again: a replay
    assert cash(home) == D(12)
    for _ in range(2):
        tl(home, "reconcile")
    assert open_exceptions(home, "cash_movement") == []


def test_sim_deposit_with_a_ref_is_proposed_with_it_and_moves_once(home):
    tl(home, "sim", "deposit", "USD", "1000", "--ref", "D1")  # before the opening: in it
    tl(home, "reconcile")
    assert cash(home) == D(1000)
    tl(home, "sim", "clock", "set", "2026-12-04T10:00")  # the next day
    said = json.loads(tl(home, "sim", "deposit", "USD", "250", "--ref", "D2", "--json").stdout)
    assert said["moved"] is True and said["ref"] == "D2"
    again = tl(home, "sim", "deposit", "USD", "250", "--ref", "D2")  # the line from the shell's history
    assert "nothing moved" in again.stdout
    other = tl(home, "sim", "deposit", "USD", "300", "--ref", "D2", code=1)
    assert "ref D2" in other.stderr and "amount 250" in other.stderr
    assert "ref D2" in tl(home, "sim", "interest", "1", "USD", "--ref", "D2", code=1).stderr
    for _ in range(2):  # nothing books by itself, however often it runs
        result = json.loads(tl(home, "reconcile", "--json", code=1).stdout)
        [line] = [c for c in result["cash"] if c["currency"] == "USD"]
        assert line["diff"] == "-250" or D(str(line["diff"])) == D(-250)
        [proposal] = line["proposals"]
        assert "--ref D2" in proposal and "--date 2026-12-04" in proposal and "D1" not in proposal
    assert cash(home) == D(1000)
    booked = json.loads(tl(home, *shlex.split(proposal), "--yes", "--json").stdout)
    assert booked["booked"] is True
    replay = json.loads(tl(home, *shlex.split(proposal), "--yes", "--json").stdout)
    assert replay["booked"] is False and replay["entry"] == booked["entry"]
    assert cash(home) == D(1250)
    for _ in range(2):
        assert json.loads(tl(home, "reconcile", "--json").stdout)["clean"] is True
    # the deposit the opening holds, booked by hand anyway: refused by its id, or by its day
    refused = tl(home, "adjust", "cash", "USD", "1000", "--kind", "deposit", "--date", DAY, "--ref", "D1",
                 "--reason", "x", "--yes", code=1)
    assert "D1" in refused.stderr and "opening" in refused.stderr
    refused = tl(home, "adjust", "cash", "USD", "1000", "--kind", "deposit", "--date", "2026-12-02",
                 "--reason", "x", "--yes", code=1)
    assert "before the opening" in refused.stderr
    assert "before the opening" in tl(home, "actions", "interest", "3", "USD", "--date", "2026-12-02",
                                      "--reason", "x", code=1).stderr
    assert cash(home) == D(1250)


def flex_statement(path) -> str:
    """IB's Flex statement of DU1234567: interest and a deposit before the opening (2026-12-05 15:00 UTC),
    a fee and a deposit after it (IB's times are New York's: 20:20 on the 5th is 01:20 UTC on the 6th)."""
    rows = [("12.34", "Broker Interest Received", "9004", "20261203;202000", "USD CREDIT INT FOR NOV-2026"),
            ("5000", "Deposits &amp; Withdrawals", "9006", "20261204", "CASH RECEIPTS"),
            ("-1.50", "Other Fees", "9005", "20261205;202000", "NYSE MARKET DATA FEE NOV 2026"),
            ("700", "Deposits &amp; Withdrawals", "9007", "20261206;120000", "CASH RECEIPTS")]
    lines = "\n".join(
        f'<CashTransaction accountId="DU1234567" currency="USD" assetCategory="" symbol="" description="{text}" '
        f'dateTime="{when}" amount="{amount}" type="{kind}" transactionID="{tid}" reportDate="{when[:8]}" />'
        for amount, kind, tid, when, text in rows)
    path.write_text(
        '<FlexQueryResponse queryName="tradeledger" type="AF">\n<FlexStatements count="1">\n'
        '<FlexStatement accountId="DU1234567" fromDate="20261201" toDate="20261206" period="LastMonth" '
        'whenGenerated="20261206;235959">\n<Trades>\n</Trades>\n<CashTransactions>\n'
        f'{lines}\n</CashTransactions>\n</FlexStatement>\n</FlexStatements>\n</FlexQueryResponse>\n')
    return str(path)


def test_a_flex_line_before_the_opening_is_neither_booked_nor_proposed(home, tmp_path):
    tl(home, "sim", "clock", "set", "2026-12-05T15:00")
    tl(home, "reconcile")  # the opening: an empty account, on the 5th
    tl(home, "sim", "clock", "set", "2026-12-07T09:00")
    path = flex_statement(tmp_path / "s.xml")
    for _ in range(2):  # a statement imported twice books nothing twice
        out = tl(home, "import", "flex", path).stdout
        assert "in the opening's cash (not booked again): interest 12.34 USD 2026-12-03 (ref 9004)" in out
        assert "deposit 5000 USD 2026-12-04 (ref 9006)" in out
        proposals = [line for line in out.splitlines() if line.startswith("not booked (a cash movement")]
        assert len(proposals) == 1 and "--ref 9007" in proposals[0]
    assert cash(home) == D("-1.50")  # the fee after the opening, booked once
    found = open_exceptions(home, "cash_movement")
    assert [e["subject"] for e in found] == ["USD 700 2026-12-06"]
    refused = tl(home, "actions", "interest", "12.34", "USD", "--date", "2026-12-03", "--ref", "9004",
                 "--reason", "x", code=1)
    assert "before the opening" in refused.stderr


# -- the cut-off itself (pure) ------------------------------------------------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from tradeledger.broker.base import CashEvent  # noqa: E402
from tradeledger.engine.trust import cutoff  # noqa: E402
from tradeledger.engine.trust.reconcile import unbooked_moves  # noqa: E402


@given(st.lists(st.tuples(st.integers(-5, 5), st.sampled_from(["deposit", "withdrawal", "interest"]),
                          st.booleans()), min_size=1, max_size=12),
       st.integers(0, 12), st.booleans())
def test_a_movement_is_proposed_only_after_the_cut(moves, journal, by_journal):
    """At one frozen instant, the journal line decides; with no line, the time does (at or before: held)."""
    events = [CashEvent(T0, "USD", D(n or 1), kind, f"R{i}" if has_ref else "", i + 1 if by_journal else None)
              for i, (n, kind, has_ref) in enumerate(moves)]
    cut = cutoff.Cut(1, T0, journal)
    proposed = {m.ref for m in unbooked_moves(events, cut, lambda ref: False).get("USD", ())}
    expected = {e.ref for e in events if e.kind in ("deposit", "withdrawal") and e.ref and by_journal and e.seq > journal}
    assert proposed == expected
    assert not unbooked_moves(events, cutoff.Cut(1, T0 - dt.timedelta(seconds=1)), lambda ref: True)
    assert all(not cutoff.holds(None, e.time, e.seq) for e in events)  # no opening: nothing is held yet
