"""Property tests on random ledgers, on SQLite and on PostgreSQL.

A random ledger is a sequence of trading events for a few strategies, turned into balanced
entries by a small pure model written here (independently of the engine):
- futures fills at zero cost (`n MBTZ26 {0 USD}`), each first marking the existing position to
  the fill price (variation margin, income against cash, times the multiplier), a fill that
  crosses zero booked as a close and an open, and a commission;
- daily settlements marking every open futures position;
- share purchases in lots labelled with the fill id, and sales that name the lot they reduce,
  with the realized P&L to income;
- cash deposits.

Each example uses accounts of its own (a fresh namespace), so that the examples share one
database per backend without disturbing each other, and the whole accumulated ledger is what
beancount checks.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from tradeledger.ledger.export import beancount_balances, check, export_beancount
from tradeledger.ledger.model import LedgerError, Account, Cost, Posting, Transaction, imbalance
from tradeledger.ledger.store import Commodity, Ledger

UTC = dt.timezone.utc
OPEN = dt.date(2026, 1, 1)
START = dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
CONTRACTS = {"MBTZ26": D("0.1"), "MESZ26": D(5)}
TICK = {"MBTZ26": D(5), "MESZ26": D("0.25")}
BASE = {"MBTZ26": D(90000), "MESZ26": D(6000)}
STRATEGIES = 3
NAMESPACES = itertools.count(1)
PROPERTY = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass
class Names:
    ns: str

    @property
    def cash(self) -> str:
        return f"Assets:Broker:{self.ns}:Cash"

    @property
    def deposits(self) -> str:
        return f"Equity:{self.ns}:Deposits"

    def holdings(self, s: int) -> str:
        return f"Assets:Broker:{self.ns}:Strategy:S{s}"

    def trading(self, s: int) -> str:
        return f"Income:Trading:{self.ns}-S{s}"

    def commissions(self, s: int) -> str:
        return f"Expenses:Commissions:{self.ns}-S{s}"

    def all(self) -> list[Account]:
        accounts = [Account(self.cash, OPEN), Account(self.deposits, OPEN)]
        for s in range(STRATEGIES):
            accounts += [Account(self.holdings(s), OPEN, booking="FIFO"), Account(self.trading(s), OPEN),
                         Account(self.commissions(s), OPEN)]
        return accounts


@dataclass
class State:
    position: dict = field(default_factory=lambda: defaultdict(D))   # (strategy, contract) -> units
    mark: dict = field(default_factory=dict)                           # (strategy, contract) -> mark
    lots: list = field(default_factory=list)                           # [strategy, Cost, units]


fills = st.tuples(st.just("fill"), st.integers(0, STRATEGIES - 1), st.sampled_from(sorted(CONTRACTS)),
                  st.integers(-4, 4).filter(bool), st.integers(-400, 400), st.integers(0, 600))
settles = st.tuples(st.just("settle"), st.sampled_from(sorted(CONTRACTS)), st.integers(-400, 400))
buys = st.tuples(st.just("buy"), st.integers(0, STRATEGIES - 1), st.integers(1, 50), st.integers(1000, 90000))
sells = st.tuples(st.just("sell"), st.integers(0, 100), st.integers(0, 100), st.integers(1000, 90000))
deposits = st.tuples(st.just("deposit"), st.integers(1, 10**9))
events = st.lists(st.tuples(st.one_of(fills, fills, settles, buys, sells, deposits), st.integers(1, 1500)),
                  min_size=1, max_size=14)


def build(names: Names, ops) -> list[Transaction]:
    """The balanced entries for a sequence of events (pure)."""
    state, time, entries = State(), START, []
    for n, (op, minutes) in enumerate(ops):
        time += dt.timedelta(minutes=minutes)
        key = f"{names.ns}-{n}"
        postings: list[Posting] = []
        if op[0] == "fill":
            _, s, contract, qty, ticks, commission_cents = op
            price = BASE[contract] + ticks * TICK[contract]
            postings += _mark(names, state, contract, price, only=s)
            held = state.position[(s, contract)]
            after = held + qty
            account, zero = names.holdings(s), Cost(D(0), "USD")
            if held != 0 and after != 0 and (held > 0) != (after > 0):  # crosses zero: close, then open
                postings += [Posting(account, -held, contract, zero), Posting(account, after, contract, zero)]
            else:
                postings.append(Posting(account, D(qty), contract, zero))
            state.position[(s, contract)] = after
            if commission_cents:
                fee = D(commission_cents) / 100
                postings += [Posting(names.commissions(s), fee, "USD"), Posting(names.cash, -fee, "USD")]
            kind, narration = "fill", f"{'BUY' if qty > 0 else 'SELL'} {abs(qty)} {contract} @ {price} for S{s}"
        elif op[0] == "settle":
            _, contract, ticks = op
            price = BASE[contract] + ticks * TICK[contract]
            postings += _mark(names, state, contract, price)
            kind, narration = "settlement", f"Settle {contract} {price}"
        elif op[0] == "buy":
            _, s, units, cents = op
            price = D(cents) / 100
            cost = Cost(price, "USD", time.date(), f"fill-{key}")
            postings += [Posting(names.holdings(s), D(units), "SPY", cost),
                         Posting(names.cash, -units * price, "USD")]
            state.lots.append([s, cost, D(units)])
            kind, narration = "fill", f"BUY {units} SPY @ {price} for S{s}"
        elif op[0] == "sell":
            _, pick, size, cents = op
            open_lots = [lot for lot in state.lots if lot[2] > 0]
            if open_lots:
                lot = open_lots[pick % len(open_lots)]
                s, cost, units = lot
                sold = 1 + size % int(units)
                price = D(cents) / 100
                pnl = sold * (price - cost.number)
                postings += [Posting(names.holdings(s), -D(sold), "SPY", cost),
                             Posting(names.cash, sold * price, "USD")]
                if pnl:
                    postings.append(Posting(names.trading(s), -pnl, "USD"))
                lot[2] -= sold
            kind, narration = "fill", "SELL SPY"
        else:
            amount = D(op[1]) / 100
            postings += [Posting(names.cash, amount, "USD"), Posting(names.deposits, -amount, "USD")]
            kind, narration = "deposit", "Deposit"
        if postings:
            entries.append(Transaction(time, kind, narration, tuple(postings), links=(f"ev-{key}",),
                                       meta=(("source", "hypothesis"),), key=key))
    return entries


def _mark(names: Names, state: State, contract: str, price: D, only: int | None = None) -> list[Posting]:
    """Variation margin from each holder's mark to `price` (only strategy `only` at its fill)."""
    postings = []
    for s in range(STRATEGIES) if only is None else [only]:
        held, mark = state.position[(s, contract)], state.mark.get((s, contract))
        if held and mark is not None:
            amount = held * (price - mark) * CONTRACTS[contract]
            if amount:
                postings += [Posting(names.cash, amount, "USD"), Posting(names.trading(s), -amount, "USD")]
        state.mark[(s, contract)] = price
    return postings


def expected_balances(entries: list[Transaction]) -> dict[tuple[str, str], D]:
    totals: dict[tuple[str, str], D] = defaultdict(D)
    for entry in entries:
        for p in entry.postings:
            totals[(p.account, p.commodity)] += p.units
    return {k: v for k, v in totals.items() if v != 0}


def within(balances: dict, names: Names) -> dict:
    return {k: v for k, v in balances.items() if names.ns in k[0]}


def setup_example(ledger: Ledger) -> Names:
    names = Names(f"P{next(NAMESPACES):06d}")  # fixed width: no namespace is a prefix of another
    with ledger.engine.begin() as conn:
        for account in names.all():
            ledger.open_account(account, conn)
        ledger.ensure_commodity(Commodity("USD", "currency", None, D(1), OPEN), conn)
        ledger.ensure_commodity(Commodity("SPY", "share", "USD", D(1), OPEN), conn)
        for contract, multiplier in CONTRACTS.items():
            ledger.ensure_commodity(Commodity(contract, "future", "USD", multiplier, OPEN), conn)
    return names


def book_all(ledger: Ledger, entries: list[Transaction], batch: bool) -> list[int]:
    if batch:
        return [b.id for b in ledger.book_many(entries)]
    return [ledger.book(e).id for e in entries]


# -- the properties ----------------------------------------------------------------------------

def test_the_model_generates_balanced_entries():
    """The generator itself: every entry it makes balances (else the properties prove nothing)."""
    names = Names("Px")
    ops = [(("fill", 0, "MBTZ26", 3, 0, 200), 1), (("fill", 1, "MBTZ26", -1, 10, 0), 1),
           (("fill", 0, "MBTZ26", -5, 20, 1000), 1), (("settle", "MBTZ26", -40), 1),
           (("buy", 2, 10, 40000), 1), (("sell", 0, 3, 41000), 1), (("deposit", 5), 1)]
    entries = build(names, ops)
    assert all(not imbalance(e.postings) for e in entries)
    flip = entries[2]
    assert [p.units for p in flip.postings if p.commodity == "MBTZ26"] == [D(-3), D(-2)]
    # S0: long 3 from 90000, flipped at 90100: 3 x 100 x 0.1 = 30.00; short 2 settled at 89800:
    # -2 x -300 x 0.1 = 60.00. S1: short 1 from 90050 settled at 89800: -1 x -250 x 0.1 = 25.00.
    balances = expected_balances(entries)
    assert balances[(names.trading(0), "USD")] == D("-90.00")
    assert balances[(names.trading(1), "USD")] == D("-25.00")
    assert balances[(names.trading(2), "USD")] == D("-40.00")  # 4 SPY sold 10.00 above cost
    assert balances[(names.commissions(0), "USD")] == D("12.00")
    assert balances[(names.cash, "USD")] == D("90") + D("25") - D("12") - D("4000") + D("1640") + D("0.05")
    assert balances[(names.holdings(0), "MBTZ26")] == D(-2)


@PROPERTY
@given(ops=events, batch=st.booleans())
def test_balanced_entries_book(ledger: Ledger, ops, batch):
    names = setup_example(ledger)
    entries = build(names, ops)
    txns_before, _ = ledger.count()
    ids = book_all(ledger, entries, batch)
    assert len(set(ids)) == len(entries)
    assert ledger.count()[0] == txns_before + len(entries)
    assert within(ledger.balances(), names) == expected_balances(entries)
    for txn_id, entry in zip(ids, entries):
        assert ledger.get(txn_id) == entry


amounts = st.integers(-10**15, 10**15).filter(bool)
raw_postings = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["USD", "EUR"]), amounts), min_size=1, max_size=6)
RAW_IDS = itertools.count(10**12)


@PROPERTY
@given(postings=raw_postings, skew=amounts, skew_currency=st.sampled_from(["USD", "EUR"]))
def test_unbalanced_entries_are_refused_through_raw_sql(ledger: Ledger, postings, skew, skew_currency):
    names = setup_example(ledger)
    accounts = [names.cash, names.deposits, names.trading(0), names.commissions(1)]
    ts = "2026-03-02 14:00:00.000000"
    with ledger.engine.connect() as conn:
        ids = {a: conn.execute(sa.text("SELECT id FROM account WHERE name = :n"), {"n": a}).scalar_one()
               for a in accounts}
    totals: dict[str, int] = defaultdict(int)
    for _, currency, units in postings:
        totals[currency] += units
    balancing = [(0, c, -total) for c, total in totals.items() if total]

    def insert(rows) -> None:
        txn_id = next(RAW_IDS)
        with ledger.engine.begin() as conn:
            for account, currency, units in rows:
                conn.exec_driver_sql(
                    "INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
                    f"VALUES ({txn_id}, '{ts}', {ids[accounts[account]]}, '{currency}', {units}, {units}, '{currency}')")
            conn.exec_driver_sql("INSERT INTO txn (id, ts, kind, narration, links, meta, fingerprint, booked_at) "
                                 f"VALUES ({txn_id}, '{ts}', 'raw', 'raw', '', '{{}}', 'x', '{ts}')")

    before = ledger.count()
    with pytest.raises(sa.exc.DBAPIError, match="does not balance"):
        insert(postings + balancing + [(1, skew_currency, skew)])
    assert ledger.count() == before
    insert(postings + balancing)  # the same postings, balanced, commit
    assert ledger.count()[0] == before[0] + 1
    expected: dict = defaultdict(int)
    for account, currency, units in postings + balancing:
        expected[(accounts[account], currency)] += units
    assert within(ledger.balances(), names) == {k: D(v).scaleb(-9) for k, v in expected.items() if v}


def reversal_overdraws_a_lot(entries, i) -> bool:
    """Whether negating entry i would reduce some labelled lot by more than it holds, as beancount
    sees it: a posting against the account's holding reduces, and must find its lot (pure)."""
    lots: dict = {}
    held: dict = {}
    for entry in entries:
        for p in entry.postings:
            if p.cost is not None and p.cost.label is not None:
                lots[(p.account, p.commodity, p.cost)] = lots.get((p.account, p.commodity, p.cost), D(0)) + p.units
                held[(p.account, p.commodity)] = held.get((p.account, p.commodity), D(0)) + p.units
    for p in entries[i].postings:
        if p.cost is None or p.cost.label is None:
            continue
        units, lot, total = -p.units, lots[(p.account, p.commodity, p.cost)], held[(p.account, p.commodity)]
        if total != 0 and (units > 0) != (total > 0):
            if lot == 0 or (lot > 0) != (total > 0) or abs(units) > abs(lot):
                return True
        lots[(p.account, p.commodity, p.cost)] = lot + units
        held[(p.account, p.commodity)] = total + units
    return False


@PROPERTY
@given(ops=events, pick=st.integers(0, 1000))
def test_reversing_any_entry_nets_its_accounts_back(ledger: Ledger, ops, pick):
    names = setup_example(ledger)
    entries = build(names, ops)
    assume(entries)
    ids = book_all(ledger, entries, batch=True)
    i = pick % len(entries)
    before = ledger.balances()
    if reversal_overdraws_a_lot(entries, i):
        # Reversing a purchase whose lot was since (partly) sold would leave beancount without
        # the lot to reduce: the ledger refuses it, and nothing changes.
        with pytest.raises(LedgerError, match="would reduce lot"):
            ledger.reverse(ids[i], entries[-1].time + dt.timedelta(hours=1), "property test")
        assert ledger.balances() == before
        return
    reversal = ledger.reverse(ids[i], entries[-1].time + dt.timedelta(hours=1), "property test")
    assert reversal.created
    after = ledger.balances()
    change = {k: after.get(k, D(0)) - before.get(k, D(0)) for k in set(before) | set(after)}
    undone = expected_balances([entries[i]])
    assert {k: v for k, v in change.items() if v} == {k: -v for k, v in undone.items()}
    rest = entries[:i] + entries[i + 1:]
    assert within(after, names) == expected_balances(rest)
    assert ledger.get(reversal.id).reverses == ids[i]


@PROPERTY
@given(ops=events, pick=st.integers(0, 1000))
def test_replaying_any_entry_is_a_no_op(ledger: Ledger, ops, pick):
    names = setup_example(ledger)
    entries = build(names, ops)
    assume(entries)
    ids = book_all(ledger, entries, batch=False)
    counts, balances = ledger.count(), ledger.balances()
    i = pick % len(entries)
    again = ledger.book(entries[i])
    assert (again.id, again.created) == (ids[i], False)
    replay = ledger.book_many(entries)
    assert [(b.id, b.created) for b in replay] == [(txn_id, False) for txn_id in ids]
    assert ledger.count() == counts
    assert ledger.balances() == balances


@PROPERTY
@given(ops=events)
def test_beancount_agrees_with_the_ledger(ledger: Ledger, ops, tmp_path_factory):
    names = setup_example(ledger)
    book_all(ledger, build(names, ops), batch=True)
    path = tmp_path_factory.mktemp("export") / "ledger.beancount"
    export_beancount(ledger, path)
    result = check(ledger, path)
    assert result.errors == ()
    assert result.differences == ()
    assert result.entries == ledger.count()[0]
    theirs, errors, _ = beancount_balances(path)
    assert not errors
    assert theirs == ledger.balances()
