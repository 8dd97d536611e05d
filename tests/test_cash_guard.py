"""Money that arrives is booked once, whatever way the trader follows (engine/trust/cash_moves.py).

* Reconciliation's `cash_movement` exception for interest or a fee the broker moved carries the
  broker's id (`--ref ID`) when the broker gave one, so that the command it proposes and IB's
  Flex statement key the movement alike; without an id it says how to give one. Booked as it was
  proposed before (without the id), the statement finds the hand's entry of that very movement
  and books nothing.
* `actions interest|fee` without `--ref`: the same movement (kind, currency, amount, day) entered
  again with other words is refused (exit 1, one line naming the entry, `--ref` and `--again`);
  `--again` books a real second one; the very same command again is a replay (exit 0). Two
  processes at once book once.
* A ledger the old keying booked twice (the hand's `interest:<Acct>:9006`, the statement's
  `interest:<Acct>:flex-9006`) is a `db verify` finding naming both entries and the reversal that
  repairs it; nothing is reversed by itself.

Every test runs on SQLite and PostgreSQL, through the CLI as the trader types it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
import sys
from decimal import Decimal as D

import pytest

from tradeledger.engine.accounting.actions import book_account_cash
from tradeledger.engine.accounting.corporate import AccountCash
from tradeledger.engine.setup.environment import open_environment
from support import SPY_CORE_CONFIG, one_line_error, sim_world, tl

UTC = dt.timezone.utc
DAY = "2026-12-03"


def statement(path, amount="12.34", tid="9006") -> str:
    """IB's Flex statement of DU1234567 with one credit interest line of 2026-12-03 (IB's time zone)."""
    path.write_text(
        '<FlexQueryResponse queryName="tradeledger" type="AF">\n<FlexStatements count="1">\n'
        '<FlexStatement accountId="DU1234567" fromDate="20261201" toDate="20261231" period="LastMonth" '
        'whenGenerated="20261231;235959">\n<Trades>\n</Trades>\n<CashTransactions>\n'
        f'<CashTransaction accountId="DU1234567" currency="USD" assetCategory="" symbol="" '
        f'description="USD CREDIT INT FOR NOV-2026" dateTime="20261203;101000" amount="{amount}" '
        f'type="Broker Interest Received" transactionID="{tid}" reportDate="20261203" />\n'
        '</CashTransactions>\n</FlexStatement>\n</FlexStatements>\n</FlexQueryResponse>\n')
    return str(path)


@pytest.fixture
def home(tmp_path, db_url):
    """A sim environment of account DU1234567 whose exchange's clock is 2026-12-03 15:00 UTC."""
    home = tmp_path / "home"
    env, session = sim_world(home, SPY_CORE_CONFIG, dt.datetime(2026, 12, 3, 15, tzinfo=UTC), db_url=db_url)
    session.close()
    env.engine.dispose()
    tl(home, "reconcile")  # the opening: an empty account
    return home


def cash_state(home) -> tuple[int, D]:
    """(entries, the broker account's USD cash in the ledger)."""
    env = open_environment(home, "paper")
    try:
        return env.ledger.count()[0], env.ledger.balances().get((env.chart.cash, "USD"), D(0))
    finally:
        env.engine.dispose()


def proposed(home, subject: str) -> str:
    """The open `cash_movement` exception's detail for `subject` (e.g. `interest USD 2026-12-03`)."""
    found = [e for e in json.loads(tl(home, "exceptions", "list", "--json").stdout)
             if e["kind"] == "cash_movement" and e["subject"] == subject]
    assert len(found) == 1, found
    return found[0]["detail"]


def commands_in(detail: str) -> list[list[str]]:
    """The `tradeledger actions ...` commands a detail proposes, as argv (after `tradeledger`)."""
    return [shlex.split(c)[1:] for c in re.findall(r'tradeledger actions [^;(]*?--reason "[^"]*"', detail)]


# -- 1. reconciliation proposes with the broker's id; the statement then books nothing ------------------

def test_reconcile_proposes_the_brokers_id_and_the_statement_then_books_once(home, tmp_path):
    tl(home, "sim", "interest", "12.34", "USD", "--ref", "9006")
    tl(home, "reconcile", code=1)
    detail = proposed(home, f"interest USD {DAY}")
    [command] = commands_in(detail)
    assert command[:6] == ["actions", "interest", "12.34", "USD", "--date", DAY] and "--ref" in command
    assert command[command.index("--ref") + 1] == "9006", detail
    assert "booked once" in detail
    booked = json.loads(tl(home, *command, "--json").stdout)
    assert booked["booked"] is True
    out = tl(home, "import", "flex", statement(tmp_path / "s.xml")).stdout
    assert "0 booked, 1 already booked" in out and f"as entry {booked['entry']}" in out
    assert cash_state(home)[1] == D("12.34")
    tl(home, "reconcile")  # clean: the exception resolved


def test_interest_booked_as_proposed_without_an_id_is_known_to_the_statement(home, tmp_path):
    """The broker gave no id: the exception says to add one; the trader books it as proposed, without;
    IB's statement (transactionID 9006) then finds the hand's entry of that movement and books nothing."""
    tl(home, "sim", "interest", "12.34", "USD")
    tl(home, "reconcile", code=1)
    detail = proposed(home, f"interest USD {DAY}")
    assert "add --ref ID" in detail and "import flex" in detail
    [command] = commands_in(detail)
    assert "--ref" not in command
    entry = json.loads(tl(home, *command, "--json").stdout)["entry"]
    before = cash_state(home)
    assert before[1] == D("12.34")
    out = tl(home, "import", "flex", statement(tmp_path / "s.xml")).stdout
    assert "0 booked, 1 already booked" in out
    assert f"(ref 9006) as entry {entry}, booked by hand without its ref" in out
    assert cash_state(home) == before
    again = tl(home, "import", "flex", statement(tmp_path / "s.xml")).stdout  # a replay, still
    assert "0 booked, 1 already booked" in again and cash_state(home) == before


def test_an_adjust_cash_interest_without_an_id_stands_for_one_statement_line_only(home, tmp_path):
    """Booked by `adjust cash --kind interest` without the id, it stands for one line of that movement:
    a second line of the same amount that day (another id) is booked."""
    tl(home, "adjust", "cash", "USD", "12.34", "--kind", "interest", "--date", DAY, "--reason", "interest",
       "--yes")
    path = tmp_path / "s.xml"
    statement(path)
    text = path.read_text().replace("</CashTransactions>", (
        '<CashTransaction accountId="DU1234567" currency="USD" assetCategory="" symbol="" description="USD CREDIT '
        'INT ADJ" dateTime="20261203;111000" amount="12.34" type="Broker Interest Received" transactionID="9010" '
        'reportDate="20261203" />\n</CashTransactions>'))
    path.write_text(text)
    assert "1 booked, 1 already booked" in tl(home, "import", "flex", str(path)).stdout
    assert "0 booked, 2 already booked" in tl(home, "import", "flex", str(path)).stdout
    assert cash_state(home)[1] == D("24.68")


# -- 2. without --ref: the same movement in other words is refused, --again books a second --------------

def interest(home, reason, *extra, code=0):
    return tl(home, "actions", "interest", "12.34", "USD", "--date", DAY, "--reason", reason, *extra, code=code)


def test_the_same_movement_reworded_is_refused_naming_the_entry(home):
    entry = json.loads(interest(home, "USD credit interest Nov", "--json").stdout)["entry"]
    before = cash_state(home)
    line = one_line_error(interest(home, "Nov interest on USD cash", code=1))
    assert f"is already booked as entry {entry}" in line and "--ref" in line and "--again" in line, line
    assert cash_state(home) == before
    replay = json.loads(interest(home, "USD credit interest Nov", "--json").stdout)  # the very same command
    assert replay["booked"] is False and replay["replay"] is True and replay["entry"] == entry
    assert cash_state(home) == before
    second = json.loads(interest(home, "a second credit", "--again", "--json").stdout)
    assert second["booked"] is True and second["entry"] != entry
    assert cash_state(home)[1] == D("24.68")
    refused = tl(home, "actions", "fee", "-1.50", "USD", "--date", DAY, "--reason", "x", "--ref", "9", "--again",
                 code=2)
    assert "--again is for a movement without --ref" in refused.stderr


def test_a_fee_equal_to_one_booked_by_adjust_cash_or_the_statement_is_refused(home, tmp_path):
    booked = json.loads(tl(home, "adjust", "cash", "USD", "-1.50", "--kind", "fee", "--date", DAY, "--reason",
                           "market data", "--yes", "--json").stdout)
    line = one_line_error(tl(home, "actions", "fee", "-1.50", "USD", "--date", DAY, "--reason", "data fee", code=1))
    assert f"entry {booked['entry']}" in line
    tl(home, "import", "flex", statement(tmp_path / "s.xml"))  # the statement books interest 9006
    line = one_line_error(interest(home, "credit interest", code=1))
    assert "(ref 9006)" in line and "--ref" in line
    assert cash_state(home)[1] == D("10.84")


def test_processes_racing_book_once(home):
    """Three `actions interest` of one movement at once, two as one command and one in other words:
    one books; the same command again is a replay of it (exit 0), the other words are refused (exit 1,
    one line naming the entry); the ledger holds the interest once."""
    base = [sys.executable, "-m", "tradeledger.cli", "--home", str(home), "actions", "interest", "12.34", "USD",
            "--date", DAY, "--json", "--reason"]
    reasons = ["credit interest", "credit interest", "interest, said otherwise"]
    processes = [subprocess.Popen(base + [reason], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for reason in reasons]
    outs = [p.communicate(timeout=120) for p in processes]
    said = {n: json.loads(out) for n, ((out, _), p) in enumerate(zip(outs, processes)) if p.returncode == 0}
    assert [s["booked"] for s in said.values()].count(True) == 1, outs
    [entry] = [s["entry"] for s in said.values() if s["booked"]]
    for n, ((_, err), p) in enumerate(zip(outs, processes)):
        if p.returncode == 0:
            assert said[n]["entry"] == entry, outs
            continue
        assert p.returncode == 1, outs
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and f"entry {entry}" in lines[0], err
    winner = next(reasons[n] for n, s in said.items() if s["booked"])
    assert all((reasons[n] == winner) == (processes[n].returncode == 0) for n in range(3)), (winner, outs)
    assert cash_state(home)[1] == D("12.34")


# -- 3. a ledger already booked twice: db verify names both and the reversal -----------------------------

def test_db_verify_flags_a_movement_booked_under_the_old_key_and_the_statements(home):
    env = open_environment(home, "paper")
    try:
        day = dt.date(2026, 12, 3)
        hand, _ = book_account_cash(env, AccountCash("interest", day, D("12.34"), "USD", "IB interest Nov", "9006"))
        ours, _ = book_account_cash(env, AccountCash("interest", day, D("12.34"), "USD", "USD CREDIT INT", "flex-9006"))
        account = env.chart.broker_account
        assert env.ledger.get(hand).key == f"interest:{account}:9006"
        assert env.ledger.get(ours).key == f"interest:{account}:flex-9006"
    finally:
        env.engine.dispose()
    before = cash_state(home)
    assert before[1] == D("24.68")  # the old bug: one movement, twice
    result = tl(home, "db", "verify", "--json", code=1)
    [finding] = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "cash"]
    detail = finding["detail"]
    assert f"entry {hand} " in detail and f"entry {ours} " in detail and "ref 9006 is booked 2 times" in detail
    [command] = re.findall(r"`tradeledger (adjust reverse [^`]*)`", detail)
    assert command.startswith(f"adjust reverse {hand} ")  # the hand's: the statement's entry is the record
    assert cash_state(home) == before  # flagged, not repaired
    assert "NOT VERIFIED" in tl(home, "db", "verify", code=1).stdout
    tl(home, *shlex.split(command), "--yes")
    tl(home, "db", "verify")
    assert cash_state(home)[1] == D("12.34")


def test_db_verify_passes_a_movement_booked_once_and_one_reversed_and_rebooked(home, tmp_path):
    tl(home, "actions", "interest", "12.00", "USD", "--date", DAY, "--reason", "typo", "--ref", "9006")
    env = open_environment(home, "paper")
    try:
        [entry] = [i for i, t in env.ledger.entries() if t.kind == "interest"]
    finally:
        env.engine.dispose()
    tl(home, "adjust", "reverse", entry, "--reason", "12.34, not 12.00", "--yes")
    tl(home, "import", "flex", statement(tmp_path / "s.xml"))
    interest(home, "one without a ref", "--again")
    tl(home, "db", "verify")
