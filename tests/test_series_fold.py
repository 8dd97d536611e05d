"""The daily series reads each day's moves folded, streamed from the database: the same series as
one move per posting, in memory that does not grow with the postings (reports/series.py)."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeledger.engine.setup.demo import run_demo
from tradeledger.ledger.model import Posting, Transaction
from tradeledger.reports import series

F = 10**9
SHARE = series.ContractInfo("SPY", "USD", D(1), False, "SPY")
FUTURE = series.ContractInfo("FESXZ26", "EUR", D(10), True, "FESX")
FUTURE2 = series.ContractInfo("FESXH27", "EUR", D(10), True, "FESX")
CONTRACTS = {c.code: c for c in (SHARE, FUTURE, FUTURE2)}
BYS = ("strategy", "instrument", "total")


def _raw_moves(data, days: list[dt.date]) -> list[tuple]:
    """Postings' moves as `posting_moves` yields them: several entries a day, in booking order."""
    holders = st.sampled_from(["a", "b", "unattributed"])
    codes = st.sampled_from(["SPY", "FESXZ26", "FESXH27", "OTHER"])  # OTHER: a contract nobody knows
    units = st.integers(-5, 5).filter(bool).map(lambda n: n * F // data.draw(st.sampled_from([1, 2, 4])))
    price = st.none() | st.decimals(min_value=D(90), max_value=D(110), places=2)
    raw, entry = [], 0
    for day in days:
        for _ in range(data.draw(st.integers(0, 4))):
            entry += 1
            contract = data.draw(codes)
            p = data.draw(price)
            for _ in range(data.draw(st.integers(1, 4))):
                kind = data.draw(st.sampled_from(["position", "realized", "commission", "income", "cash", "deposit"]))
                holder = None if kind in ("cash", "deposit") else data.draw(holders)
                amount = data.draw(units)
                if kind == "position":
                    code = data.draw(st.sampled_from([contract, "SPY"]))
                    basis = amount * 100 if code == "SPY" else 0
                    raw.append((day.isoformat(), kind, holder, code, amount, basis, None,
                                p if code == contract else None, entry))
                elif kind in ("realized", "commission", "income"):
                    ccy = data.draw(st.sampled_from(["USD", "EUR", "GBP"]))  # GBP: never a rate
                    raw.append((day.isoformat(), kind, holder, ccy, amount, 0, data.draw(st.none() | st.just(contract)),
                                p if kind == "realized" else None, entry))
                else:
                    raw.append((day.isoformat(), kind, None, data.draw(st.sampled_from(["USD", "EUR"])), amount,
                                0, None, None, entry))
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_folded_days_give_the_series_of_every_posting(data):
    """Random postings' moves (positions with and without a price, realized P&L that marks a
    future, commissions, income, cash, deposits; currencies without a rate; a contract nobody
    knows): `compute` gives the same series, in every grouping, for the folded days as for one
    move per posting."""
    base = dt.date(2026, 1, 5)
    days = [base + dt.timedelta(days=i) for i in range(data.draw(st.integers(1, 6)))]
    raw = _raw_moves(data, days)
    price = st.decimals(min_value=D(90), max_value=D(110), places=2)
    closes = {"SPY": {d: data.draw(price) for d in days if data.draw(st.booleans())}}
    settlements = {"FESXZ26": {d: data.draw(price) for d in days if data.draw(st.booleans())}}
    fx = {"EUR": {d: data.draw(st.decimals(min_value=D("0.9"), max_value=D("1.3"), places=4))
                  for d in days if data.draw(st.booleans())}}
    prices = series._Prices(settlements, closes, fx)
    one_each, folded = series.unfolded(raw), series.fold(raw, CONTRACTS)
    if not raw:
        return
    span = series.day_range(one_each, None, None)
    assert series.day_range(folded, None, None) == span
    for by in BYS:
        assert series.compute(folded, CONTRACTS, prices, "USD", span, by) == \
            series.compute(one_each, CONTRACTS, prices, "USD", span, by), by


def test_a_days_last_mark_wins_whichever_move_set_it():
    """A position line's price and a future's realized P&L both mark the holder; the day ends at
    the last of them, in booking order, whichever kind it was."""
    day = "2026-01-05"
    raw = [(day, "position", "a", "FESXZ26", 2 * F, 0, None, D(100), 1),
           (day, "realized", "a", "EUR", 30 * F, 0, "FESXZ26", D(103), 2),
           (day, "position", "a", "FESXZ26", 1 * F, 0, None, D(101), 3),
           (day, "realized", "a", "EUR", -10 * F, 0, "FESXZ26", D(99), 4)]
    folded = series.fold(raw, CONTRACTS)
    position = [m for m in folded if m.kind == "position"]
    assert [(m.units, m.price) for m in position] == [(D(3), D(99))]
    assert [m.units for m in folded if m.kind == "realized"] == [D(20)]
    # a share's realized P&L does not mark: the position line's price stays
    raw = [(day, "position", "a", "SPY", F, 100 * F, None, D(100), 1),
           (day, "realized", "a", "USD", F, 0, "SPY", D(105), 2)]
    assert [m.price for m in series.fold(raw, CONTRACTS) if m.kind == "position"] == [D(100)]


def test_a_currency_that_nets_to_nothing_needs_no_rate():
    """Realized P&L in GBP (no rate) that nets to zero within the day leaves the day's base
    figures known, folded or not."""
    day = dt.date(2026, 1, 5)
    raw = [(day.isoformat(), "realized", "a", "GBP", 5 * F, 0, None, None, 1),
           (day.isoformat(), "realized", "a", "GBP", -5 * F, 0, None, None, 2),
           (day.isoformat(), "realized", "a", "USD", 7 * F, 0, None, None, 3)]
    prices = series._Prices({}, {}, {})
    for moves in (series.unfolded(raw), series.fold(raw, CONTRACTS)):
        got = series.compute(moves, CONTRACTS, prices, "USD", [day], "strategy").groups["a"][day]
        assert got.missing_fx == frozenset() and got.base_realized == D(7) and got.realized == {"USD": D(7)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    session = run_demo(tmp_path_factory.mktemp("fold") / "home", days=5)
    yield session
    session.close()


def test_the_demo_ledgers_series_folded_equals_every_posting(demo):
    """The demo's ledger (futures fills and settlements, an internal cross, shares, a dividend, a
    split, a trade at the broker's screen): the same series either way, in every grouping."""
    raw = list(series.posting_moves(demo))
    contracts, prices = series.contract_infos(demo), series.load_prices(demo)
    one_each, folded = series.unfolded(raw), series.load_moves(demo, contracts)
    assert folded == series.fold(raw, contracts)
    assert len(folded) < len(one_each)
    span = series.day_range(one_each, series.last_price_date(demo), None)
    for by in BYS:
        assert series.compute(folded, contracts, prices, "USD", span, by) == \
            series.compute(one_each, contracts, prices, "USD", span, by), by


def _book_days(session, start: dt.date, days: int, per_day: int, tag: str) -> None:
    """`per_day` balanced cash entries on each of `days` days from `start` (money moved between
    cash and deposits): postings the replay streams."""
    chart, entries = session.chart, []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        for j in range(per_day):
            time = dt.datetime.combine(day, dt.time(12, j % 60, j // 60), tzinfo=dt.timezone.utc)
            entries.append(Transaction(time, "cash-adjust", f"move {tag} {i}.{j}", (
                Posting(chart.cash, D(j + 1), "USD"), Posting(chart.deposits, -D(j + 1), "USD")),
                key=f"fold-{tag}-{day}-{j}"))
    session.ledger.import_entries(entries)


def test_the_replay_holds_days_not_postings(tmp_path):
    """Memory while the series is read: four times the postings on the same days costs about the
    same (the postings stream by; what is kept is a move per day and key). One move per posting,
    as the replay kept them before, grows with them."""
    session = run_demo(tmp_path / "home", days=2)
    try:
        start = dt.date(2026, 3, 2)

        def peak() -> tuple[int, int]:
            tracemalloc.start()
            try:
                moves = series.load_moves(session)
                return tracemalloc.get_traced_memory()[1], len(moves)
            finally:
                tracemalloc.stop()

        _book_days(session, start, 20, 300, "first")  # 12,000 postings: two batches fetched, and more
        small, small_moves = peak()
        for tag in ("second", "third", "fourth"):  # the same days, four times the postings in all
            _book_days(session, start, 20, 300, tag)
        large, large_moves = peak()
        assert large_moves == small_moves
        assert large < small * 1.25, (small, large)
        tracemalloc.start()
        try:
            kept = series.unfolded(series.posting_moves(session))  # every posting's move, held
            every = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(kept) > 48_000 and every > 3 * large, (large, every)  # the check can fail
    finally:
        session.close()
