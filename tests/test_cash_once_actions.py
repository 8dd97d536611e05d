"""Interest and fees are booked once however they reach the ledger (engine/trust/cash_moves.py).

`actions interest|fee --ref R` (by hand, R as IB's transaction id, typed `9006` or `flex-9006`),
`adjust cash --kind interest|fee --ref R` and `import flex` (the statement's line with
transactionID R) all key the movement by R alike (`cash_moves.claim_ref`): whichever comes
first books it, the others say it is already booked (exit 0) and book nothing; the same R for
another movement is refused (exit 1, one line), nothing booked. An entry booked before R was
normalised (the key `interest:<Acct>:9006`, as `actions interest --ref 9006` booked it) is still
recognised. `adjust list` shows an entry's R. Every test runs on SQLite and PostgreSQL, through
the CLI as the trader types it.
"""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.accounting.actions import book_account_cash
from tradeledger.engine.accounting.corporate import AccountCash
from tradeledger.engine.setup.environment import open_environment
from support import SPY_CORE_CONFIG, booked_once, one_line_error, sim_world

import datetime as dt

INTEREST, FEE = "Income:Interest:Account", "Expenses:Fees:Account"
LINES = {  # transaction id -> (IB's type, amount, description)
    "interest": ("9006", "Broker Interest Received", "12.34", "USD CREDIT INT FOR NOV-2026"),
    "fee": ("9007", "Other Fees", "-1.50", "NYSE MARKET DATA FEE NOV 2026"),
}


def statement(path, *kinds) -> str:
    """An IB Flex statement of account DU1234567 holding the interest and/or fee of LINES, dated 2026-12-03."""
    rows = "\n".join(
        f'<CashTransaction accountId="DU1234567" currency="USD" assetCategory="" symbol="" description="{text}" '
        f'dateTime="20261203;202000" amount="{amount}" type="{kind}" transactionID="{tid}" reportDate="20261203" />'
        for tid, kind, amount, text in (LINES[k] for k in kinds))
    path.write_text(
        '<FlexQueryResponse queryName="tradeledger" type="AF">\n<FlexStatements count="1">\n'
        '<FlexStatement accountId="DU1234567" fromDate="20261201" toDate="20261231" period="LastMonth" '
        'whenGenerated="20261231;235959">\n<Trades>\n</Trades>\n<CashTransactions>\n'
        f'{rows}\n</CashTransactions>\n</FlexStatement>\n</FlexStatements>\n</FlexQueryResponse>\n')
    return str(path)


@pytest.fixture
def home(tmp_path, db_url):
    home = tmp_path / "home"
    # the statement's days are December 2026's (IB's November interest and fee): the test's world sets the
    # exchange's clock, as sim_world does; `sim clock set` moves it only forward from the machine's time
    env, session = sim_world(home, SPY_CORE_CONFIG, dt.datetime(2027, 1, 2, 12, tzinfo=dt.timezone.utc),
                             db_url=db_url)
    session.close()
    env.engine.dispose()
    return home


def tl(home, *args, code: int | None = 0):
    result = CliRunner().invoke(main, ["--home", str(home), *map(str, args)], catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def by_hand(home, kind, ref, amount=None, *extra, code=0):
    """`actions interest|fee AMOUNT USD --date 2026-12-03 --ref REF` as the trader types it."""
    amount = LINES[kind][2] if amount is None else amount
    return tl(home, "actions", kind, amount, "USD", "--date", "2026-12-03", "--reason", f"IB {kind} Nov",
              "--ref", ref, *extra, code=code)


def flex(home, tmp_path, *kinds, code=0):
    return tl(home, "import", "flex", statement(tmp_path / "statement.xml", *(kinds or ("interest",))), code=code)


def ledger_state(home) -> tuple[int, dict]:
    """(number of entries, the balances of cash, interest and fees)."""
    env = open_environment(home, "paper")
    try:
        balances = env.ledger.balances()
        wanted = {env.chart.cash: "cash", INTEREST: "interest", FEE: "fee", "Income:Adjustments": "adjustments",
                  "Expenses:Adjustments": "adjustments"}
        out = {}
        for (account, currency), units in balances.items():
            if account in wanted and units:
                out[wanted[account]] = out.get(wanted[account], D(0)) + units
        return env.ledger.count()[0], out
    finally:
        env.engine.dispose()


# -- by hand, then the statement ---------------------------------------------------------------------

@pytest.mark.parametrize("typed", ["9006", "flex-9006"])
def test_interest_booked_by_hand_then_the_statement_books_it_once(home, tmp_path, typed):
    hand = json.loads(by_hand(home, "interest", typed, None, "--json").stdout)
    assert hand["booked"] is True and hand["replay"] is False and hand["ref"] == "9006"
    after_hand = ledger_state(home)
    assert after_hand[1] == {"cash": D("12.34"), "interest": D("-12.34")}
    out = flex(home, tmp_path).stdout
    assert "interest and fees: 0 booked, 1 already booked" in out
    assert f"already booked: interest 12.34 USD 2026-12-03 (ref 9006) as entry {hand['entry']}" in out
    assert ledger_state(home) == after_hand
    # and the hand again, in either spelling: a replay
    again = by_hand(home, "interest", "flex-9006" if typed == "9006" else "9006")
    assert again.stdout.strip() == (f"already booked as entry {hand['entry']}: interest 12.34 USD on 2026-12-03, "
                                    "ref 9006; nothing booked")
    assert ledger_state(home) == after_hand


def test_a_fee_booked_by_hand_then_the_statement_books_it_once(home, tmp_path):
    hand = json.loads(by_hand(home, "fee", "9007", None, "--json").stdout)
    out = flex(home, tmp_path, "interest", "fee").stdout
    assert "interest and fees: 1 booked, 1 already booked" in out
    assert f"(ref 9007) as entry {hand['entry']}" in out
    assert ledger_state(home)[1] == {"cash": D("10.84"), "interest": D("-12.34"), "fee": D("1.50")}


# -- the statement, then by hand ---------------------------------------------------------------------

@pytest.mark.parametrize("kind, typed", [("interest", "9006"), ("interest", "flex-9006"), ("fee", "9007"),
                                         ("fee", "flex-9007")])
def test_the_statement_first_then_by_hand_is_already_booked(home, tmp_path, kind, typed):
    assert "1 booked, 0 already booked" in flex(home, tmp_path, kind).stdout
    before = ledger_state(home)
    text = by_hand(home, kind, typed)
    ref = typed.removeprefix("flex-")
    assert text.stdout.startswith("already booked as entry ") and f"ref {ref}; nothing booked" in text.stdout
    replay = json.loads(by_hand(home, kind, typed, None, "--json").stdout)
    assert replay["booked"] is False and replay["replay"] is True and replay["ref"] == ref
    assert ledger_state(home) == before


# -- the same reference for another movement ---------------------------------------------------------

@pytest.mark.parametrize("first", ["hand", "statement"])
def test_the_same_reference_for_another_amount_is_refused(home, tmp_path, first):
    if first == "hand":
        entry = json.loads(by_hand(home, "interest", "9006", None, "--json").stdout)["entry"]
    else:
        flex(home, tmp_path)
        entry = None
    before = ledger_state(home)
    refused = by_hand(home, "interest", "flex-9006", "12.00", code=1)
    line = one_line_error(refused)
    assert "ref 9006 is already booked as entry" in line and "amount 12.34 (asked 12.00)" in line
    if entry is not None:
        assert f"entry {entry} " in line
    # another kind, another date: refused too
    assert "kind interest (asked fee)" in one_line_error(by_hand(home, "fee", "9006", "-12.34", code=1))
    dated = tl(home, "actions", "interest", "12.34", "USD", "--date", "2026-12-04", "--reason", "x", "--ref", "9006",
               code=1)
    assert "date 2026-12-03 (asked 2026-12-04)" in one_line_error(dated)
    assert ledger_state(home) == before


def test_interest_booked_by_hand_for_another_amount_is_a_difference_to_the_statement(home, tmp_path):
    by_hand(home, "interest", "9006", "12.00")
    before = ledger_state(home)
    out = flex(home, tmp_path, code=1)
    assert "amount 12.00 (statement 12.34)" in out.stderr or "amount 12 (statement 12.34)" in out.stderr
    assert ledger_state(home) == before


def test_adjust_cash_and_actions_interest_meet_on_one_key(home, tmp_path):
    booked = json.loads(tl(home, "adjust", "cash", "USD", "12.34", "--kind", "interest", "--date", "2026-12-03",
                           "--ref", "9006", "--reason", "IB interest", "--yes", "--json").stdout)
    assert f"already booked as entry {booked['entry']}" in by_hand(home, "interest", "9006").stdout
    assert "1 already booked" in flex(home, tmp_path).stdout
    assert ledger_state(home)[1] == {"cash": D("12.34"), "adjustments": D("-12.34")}
    # and the other way round, for the fee
    fee = json.loads(by_hand(home, "fee", "9007", None, "--json").stdout)
    replay = json.loads(tl(home, "adjust", "cash", "USD", "-1.50", "--kind", "fee", "--date", "2026-12-03",
                           "--ref", "flex-9007", "--reason", "IB fee", "--yes", "--json").stdout)
    assert replay["replay"] is True and replay["entry"] == fee["entry"]


def test_interest_booked_by_hand_then_reversed_is_booked_again(home, tmp_path):
    hand = json.loads(by_hand(home, "interest", "9006", "12.00", "--json").stdout)  # a typo
    tl(home, "adjust", "reverse", hand["entry"], "--reason", "12.34, not 12.00", "--yes")
    assert "1 booked, 0 already booked" in flex(home, tmp_path).stdout  # the statement books it
    assert "already booked as entry" in by_hand(home, "interest", "9006").stdout
    assert "1 already booked" in flex(home, tmp_path).stdout
    assert ledger_state(home)[1] == {"cash": D("12.34"), "interest": D("-12.34")}


# -- a ledger booked before the reference was normalised ---------------------------------------------

def _book_old_style(home, kind, ref, amount) -> int:
    """What `actions interest|fee --ref REF` booked before: the key `{kind}:<Acct>:REF`, REF as typed."""
    env = open_environment(home, "paper")
    try:
        entry, created = book_account_cash(env, AccountCash(kind, dt.date(2026, 12, 3), D(amount), "USD",
                                                            f"IB {kind} Nov", ref))
        assert created and env.ledger.get(entry).key == f"{kind}:{env.chart.broker_account}:{ref}"
        return entry
    finally:
        env.engine.dispose()


def test_an_entry_under_the_old_key_is_still_recognised(home, tmp_path):
    entry = _book_old_style(home, "interest", "9006", "12.34")
    before = ledger_state(home)
    out = flex(home, tmp_path).stdout
    assert "0 booked, 1 already booked" in out and f"as entry {entry}" in out
    assert f"already booked as entry {entry}" in by_hand(home, "interest", "flex-9006").stdout
    assert f"already booked as entry {entry}" in by_hand(home, "interest", "9006").stdout
    assert "amount 12.34 (asked 12.43)" in one_line_error(by_hand(home, "interest", "9006", "12.43", code=1))
    assert ledger_state(home) == before
    listed = json.loads(tl(home, "adjust", "cash", "USD", "12.34", "--kind", "interest", "--ref", "9006",
                           "--reason", "x", "--yes", "--json").stdout)
    assert listed["replay"] is True and listed["entry"] == entry


def test_a_fee_under_the_old_key_for_another_amount_is_a_difference(home, tmp_path):
    _book_old_style(home, "fee", "9007", "-1.05")
    before = ledger_state(home)
    out = flex(home, tmp_path, "fee", code=1)
    assert "fee 9007" in out.stderr and "(statement -1.50)" in out.stderr
    assert ledger_state(home) == before


# -- adjust list shows the reference -----------------------------------------------------------------

def test_adjust_list_shows_the_reference(home):
    with_ref = json.loads(tl(home, "adjust", "cash", "USD", "5000", "--kind", "deposit", "--ref", "flex-9100",
                             "--reason", "wire", "--yes", "--json").stdout)
    without = json.loads(tl(home, "adjust", "cash", "USD", "70", "--kind", "deposit", "--reason", "cheque",
                            "--yes", "--json").stdout)
    tl(home, "adjust", "reverse", with_ref["entry"], "--reason", "wrong account", "--yes")
    rows = json.loads(tl(home, "adjust", "list", "--json").stdout)
    refs = {r["entry"]: r["ref"] for r in rows}
    assert refs[with_ref["entry"]] == "9100" and refs[without["entry"]] is None
    [reversal] = [r for r in rows if r["kind"] == "reverse"]
    assert reversal["ref"] == "9100"  # the reversal of R's entry names R too
    text = tl(home, "adjust", "list").stdout
    assert "ref" in text and "9100" in text


# -- the simulated broker's interest, and processes racing -------------------------------------------

def test_sim_interest_says_the_command_with_its_reference(home):
    said = tl(home, "sim", "interest", "12.34", "USD", "--ref", "9006").stdout
    assert "`tradeledger actions interest 12.34 USD --date 2027-01-02 --ref 9006 --reason ...`" in said
    assert ledger_state(home)[0] == 0  # the broker moved it; the ledger books nothing until told


def test_the_keys_are_one_scheme():
    from tradeledger.engine.trust import cash_moves
    from tradeledger.ledger.model import Posting, Transaction

    assert cash_moves.legacy_keys("U1", "9006") == ("interest:U1:9006", "fee:U1:9006")
    assert cash_moves.ref_key("U1", "interest", cash_moves.normal_ref("flex-9006")) == "interest:U1:flex-9006"
    time = dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc)
    postings = (Posting("Assets:Cash", D(1), "USD"), Posting("Income:Interest:Account", D(-1), "USD"))
    assert cash_moves.from_statement(Transaction(time, "interest", "x", postings, meta=(("ref", "flex-9006"),)))
    assert not cash_moves.from_statement(Transaction(time, "interest", "x", postings, meta=(("ref", "9006"),)))
    assert not cash_moves.from_statement(Transaction(time, "cash-adjust", "x", postings, meta=(("ref", "flex-1"),)))


def test_processes_racing_by_hand_book_once(home):
    """Two `actions interest --ref 9006` and two `adjust cash --kind interest --ref flex-9006` at once:
    one books, three say it is already booked (exit 0); the ledger holds the interest once."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "tradeledger.cli", "--home", str(home)]
    actions = base + ["actions", "interest", "12.34", "USD", "--date", "2026-12-03", "--reason", "IB interest",
                      "--ref", "9006", "--json"]
    adjust = base + ["adjust", "cash", "USD", "12.34", "--kind", "interest", "--date", "2026-12-03", "--ref",
                     "flex-9006", "--reason", "IB interest", "--yes", "--json"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in (actions, adjust, actions, adjust)]
    booked_once(processes)
    assert ledger_state(home)[1]["cash"] == D("12.34")
