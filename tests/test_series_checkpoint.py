"""The trader's curves resumed from a checkpoint are the full replay's, exactly (reports/series_checkpoint.py).

- A property, on SQLite and PostgreSQL: random days booked by the engine (fills of strategies'
  orders and trades at the broker's screen, closes, settlements marked, EUR rates, deposits and
  interest today or backdated, dividends with an ex-date days back, a split, reversals of old
  entries at their own time or today, closes corrected days later), curves read in between; every
  read, in every grouping and cut by `--until`, is the full replay's series to the last Decimal
  (compared by repr: digits, exponents, dict order), and a read straight after one that wrote a
  checkpoint resumes from it.
- A checkpoint is set aside by each kind of change it depends on (one test each): a backdated
  entry, a reversal of an old entry, a price, settlement or FX rate of an old day added or
  changed, a split booked on an old day, the config (an instrument renamed), the format version;
  and is used again once the next read has written a new one. A change after its day is no reason.
- A kill between writing the checkpoints and committing them leaves the old ones, whole.
- The commands print byte for byte what they print from the full replay.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from test_pnl_fast import CONFIG, CONTRACTS, TARGETS, _execute
from test_pnl_fast import backend  # noqa: F401 - the fixture: a SQLite file, or a PostgreSQL schema
from tradeledger.engine import tables
from tradeledger.engine.accounting.actions import book_account_cash, book_due, store_actions
from tradeledger.engine.accounting.corporate import AccountCash, Dividend, Split
from tradeledger.engine.setup.config import Limits, to_contract
from tradeledger.engine.setup.environment import init_environment, open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.prices import parse_prices_csv, store_rows
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.trading.marking import mark_settlements, settle_at_sim_exchange
from tradeledger.engine.trading.orders import TargetLine, plan, record_plan
from tradeledger.engine.trust import adjust
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.verify import verify
from tradeledger.reports import series, series_checkpoint

UTC = dt.timezone.utc
START = dt.date(2026, 12, 3)  # a Thursday
BYS = ("total", "strategy", "instrument")
READS = {"day": ("total",), "perf": ("strategy", "total"), "instrument": ("instrument",), "all": BYS}


def at(day: dt.date, hour: int = 15, second: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, 0, second), tzinfo=UTC)


class Books:
    """An environment on the simulated exchange, and what the test booked (to reverse later)."""

    def __init__(self, home, url):
        env = init_environment(home, "paper", "sim", None, db_url=url, config_extra=CONFIG)
        self.env, self.session, self.url = env, Session(env), url
        self.exchange = self.session.exchange()
        self.exchange.set_clock(at(START, 14))
        self.contracts = {}
        for name, (code, expiry, price) in CONTRACTS.items():
            self.contracts[name] = to_contract(self.session.config.instruments[name], code, expiry)
            self.exchange.add_contract(self.contracts[name])
            self.exchange.set_price(code, price)
        lines = [TargetLine(holder, name, self.contracts[name], D(target), CONTRACTS[name][2])
                 for holder, name, target in TARGETS]
        record_plan(env, plan(1, lines, {}, Limits(), {}), at(START, 14))
        with read_connection(env.engine) as conn:
            self.orders = {r.contract: [r.order_ref, r.side, int(D(r.quantity) / 10**9)]
                           for r in conn.execute(sa.select(tables.broker_order))}
        self.n = 0
        self.reversible: list[int] = []
        self.split = False
        self.dividends: set[dt.date] = set()

    def close(self) -> None:
        self.session.close()
        self.session.engine.dispose()

    # -- what a day brings --------------------------------------------------------------------

    def trade(self, day: dt.date, name: str, qty: int, offset: int, external: bool) -> None:
        code, _, base = CONTRACTS[name]
        price = base + offset
        order = self.orders.get(code)
        self.exchange.set_clock(at(day, 15))
        if external or order is None or order[2] == 0:
            self.exchange.external_trade(code, D(qty), price)
        else:
            part = min(order[2], abs(qty))
            order[2] -= part
            self.n += 1
            exec_id = f"0000cafe.{self.n:08x}.01"
            _execute(self.exchange, (exec_id, exec_id.rpartition(".")[0], 0, 7000 + self.n, order[0], code, order[1],
                                     str(part), str(price), at(day, 15, self.n % 60), f"{1 + self.n % 3}.25", 0))
        sync_fills(self.env, self.session.broker)

    def closes(self, day: dt.date, offset: int, replace: bool = False) -> None:
        rows = [(day, "SPY", CONTRACTS["SPY"][2] + offset), (day, "MES", CONTRACTS["MES"][2] + offset)]
        text = "date,instrument,close\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
        store_rows(self.session, parse_prices_csv(text, self.session.config, "USD"), "test", replace)

    def settle(self, day: dt.date, offset: int) -> None:
        self.exchange.set_clock(at(day, 22))
        for name in ("MES", "FESX"):
            code, _, base = CONTRACTS[name]
            settle_at_sim_exchange(self.session, code, base + offset, day)
        mark_settlements(self.session, day)

    def fx(self, day: dt.date, rate: str, replace: bool = False) -> None:
        text = f"date,currency,rate\n{day},EUR,{rate}\n"
        store_rows(self.session, parse_prices_csv(text, self.session.config, "USD"), "test", replace)

    def deposit(self, day: dt.date, amount: int) -> None:
        key = f"dep-{uuid.uuid4().hex[:8]}"
        booked = adjust.book(self.session, lambda conn: adjust.plan_cash(
            conn, self.session, "USD", D(amount), "deposit", at(day, 12), key, "deposit"), "test")
        self.reversible.append(booked.txn_id)

    def interest(self, day: dt.date, currency: str, amount: int) -> None:
        txn_id, _ = book_account_cash(self.session, AccountCash("interest", day, D(amount) / 4, currency, "test",
                                                                f"i-{uuid.uuid4().hex[:8]}"))
        self.reversible.append(txn_id)

    def dividend(self, ex: dt.date, pay: dt.date, cents: int) -> None:
        if ex in self.dividends:  # one a day: the action's key
            return
        self.dividends.add(ex)
        with self.session.engine.begin() as conn:
            store_actions(conn, [Dividend("SPY", ex, pay, D(cents) / 100, "USD", D("0.15"))], at(pay, 9))
        book_due(self.session, pay)

    def split_spy(self, day: dt.date) -> None:
        if self.split:
            return
        self.split = True
        with self.session.engine.begin() as conn:
            store_actions(conn, [Split("SPY", day, D(2), D(1))], at(day, 0))
        book_due(self.session, day)

    def reverse(self, index: int, day: dt.date, at_original: bool) -> None:
        if not self.reversible:
            return
        txn_id = self.reversible.pop(index % len(self.reversible))
        original = self.session.ledger.get(txn_id)
        self.session.ledger.reverse(txn_id, original.time if at_original else at(day, 16), "test reversal")


def same(books: Books, bys: tuple, until: dt.date | None = None) -> dict:
    """Read the series resumed where it can be, and the full replay; every grouping the same, to the
    repr of each Decimal. Returns what the resumed read did (`build_resumed`'s report)."""
    report: dict = {}
    resumed = series_checkpoint.build_resumed(books.session, bys, until, report)
    full = series.full_replay(books.session, bys, until)
    for by in bys:
        assert repr(resumed[by]) == repr(full[by]), (by, until, report)
    return report


def read_twice(books: Books, bys: tuple, until: dt.date | None = None) -> tuple[dict, dict]:
    first = same(books, bys, until)
    second = same(books, bys, until)
    if first["written"] is not None:  # nothing changed in between: the next read starts there
        assert second["resumed"] == first["written"], (first, second)
    return first, second


BACK = st.sampled_from([0, 0, 0, 1, 2, 4])  # days back: mostly today, as most entries are
day_plan = st.fixed_dictionaries({
    "trades": st.lists(st.tuples(st.sampled_from(["MES", "FESX", "SPY"]), st.integers(-3, 3).filter(bool),
                                 st.integers(-25, 25), st.booleans()), max_size=3),
    "close": st.none() | st.integers(-30, 30),
    "settle": st.none() | st.integers(-30, 30),
    "fx": st.none() | st.sampled_from(["1.0571", "1.1043", "0.9987"]),
    "deposit": st.none() | st.tuples(st.integers(1, 9).map(lambda n: n * 1000), BACK),
    "interest": st.none() | st.tuples(st.sampled_from(["USD", "EUR"]), st.integers(-500, 500).filter(bool),
                                      BACK),
    "dividend": st.none() | st.tuples(st.integers(5, 90), BACK),  # cents a share, ex days back
    "split": st.booleans(),
    "reverse": st.none() | st.tuples(st.integers(0, 20), st.booleans()),  # which, at its own time
    "correct": st.none() | st.tuples(st.integers(1, 4), st.integers(-30, 30)),  # a close days back, changed
    "reads": st.lists(st.tuples(st.sampled_from(sorted(READS)), st.none() | st.integers(0, 6)), max_size=2),
    "evening": st.booleans(),  # every curve read at the day's end, as a trader does
    "next": st.integers(1, 3),
})


def book_day(books: Books, day: dt.date, today: dict) -> None:
    """What `day_plan` drew for one day, booked (some of it days back)."""
    if today["split"] and day > START:
        books.split_spy(day)
    for name, qty, offset, external in today["trades"]:
        books.trade(day, name, qty, offset, external)
    if today["close"] is not None:
        books.closes(day, today["close"])
    if today["settle"] is not None:
        books.settle(day, today["settle"])
    if today["fx"] is not None:
        books.fx(day, today["fx"])
    if today["deposit"] is not None:
        books.deposit(day - dt.timedelta(days=today["deposit"][1]), today["deposit"][0])
    if today["interest"] is not None:
        currency, amount, back = today["interest"]
        books.interest(day - dt.timedelta(days=back), currency, amount)
    if today["dividend"] is not None:
        cents, back = today["dividend"]
        books.dividend(day - dt.timedelta(days=back), day, cents)
    if today["reverse"] is not None:
        books.reverse(*today["reverse"][:1], day, today["reverse"][1])
    if today["correct"] is not None:
        back, offset = today["correct"]
        books.closes(day - dt.timedelta(days=back), offset, replace=True)


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(days=st.lists(day_plan, min_size=2, max_size=6))
def test_every_read_is_the_full_replays(backend, days):
    books = Books(backend.tmp / uuid.uuid4().hex[:8], backend.url())
    try:
        walk_days(books, days, read_twice)
        assert verify(books.session.ledger).ok  # and no price change a checkpoint needs was pruned
    finally:
        books.close()


def walk_days(books: Books, days: list[dict], read) -> None:
    """Book each of `day_plan`'s days and read as it says, `read(books, bys, until)`, then read every
    grouping (tests/test_series_fast.py walks the same days with its own read)."""
    day = START
    for today in days:
        book_day(books, day, today)
        for kind, cut in today["reads"]:
            read(books, READS[kind], None if cut is None else START + dt.timedelta(days=cut))
        if today["evening"]:
            read(books, BYS)
        day += dt.timedelta(days=today["next"])
    read(books, BYS)


# -- each change that sets a checkpoint aside -------------------------------------------------------

def _week(books: Books) -> dt.date:
    """Five days of fills, closes, settlements and rates; returns the last day. Read once: the
    checkpoint of the day before it is written."""
    day = START
    for k in range(6):
        books.trade(day, "MES", 1 + k % 2, k, False)
        books.trade(day, "FESX", -1, -k, True)
        books.trade(day, "SPY", 2, k, k % 2 == 0)
        books.closes(day, k * 3)
        books.settle(day, k * 2 - 3)
        books.fx(day, f"1.{1000 + k * 37}")
        if k < 5:
            day += dt.timedelta(days=1)
    first = same(books, BYS)
    assert first["resumed"] is None and first["written"] == day - dt.timedelta(days=1), first
    assert same(books, BYS)["resumed"] == day - dt.timedelta(days=1)
    return day


@pytest.fixture
def books(backend):
    made = Books(backend.tmp / uuid.uuid4().hex[:8], backend.url())
    yield made
    made.close()


def _set_aside(books: Books) -> None:
    """The next read replays from the first entry (and equals it), the one after resumes again."""
    report = same(books, BYS)
    assert report["resumed"] is None, report
    assert report["written"] is not None
    assert same(books, BYS)["resumed"] == report["written"]


def test_a_backdated_entry_sets_it_aside(books):
    last = _week(books)
    books.interest(last - dt.timedelta(days=3), "USD", 120)
    _set_aside(books)


def test_a_reversal_of_an_old_entry_sets_it_aside(books):
    last = _week(books)
    books.deposit(last - dt.timedelta(days=4), 5000)
    same(books, BYS)
    same(books, BYS)
    books.reverse(0, last, at_original=True)
    _set_aside(books)


OLD_PRICE_CHANGES = ("close", "settlement", "fx", "close changed", "fx changed")


def change_an_old_price(books: Books, what: str, last: dt.date) -> None:
    """A price of a day before `last` added or changed: a close, a settlement, an FX rate (one of
    OLD_PRICE_CHANGES); tests/test_series_fast.py makes the same changes to the read path."""
    old = last - dt.timedelta(days=2)
    if what == "close":
        text = f"date,instrument,close\n{START - dt.timedelta(days=1)},SPY,590\n"
        store_rows(books.session, parse_prices_csv(text, books.session.config, "USD"), "test")
    elif what == "settlement":
        books.exchange.set_clock(at(last, 23))
        settle_at_sim_exchange(books.session, "FESXZ26", D(4990), START - dt.timedelta(days=1))
    elif what == "fx":
        books.fx(START - dt.timedelta(days=2), "1.2222")
    elif what == "close changed":
        books.closes(old, 17, replace=True)
    else:
        books.fx(old, "1.3333", replace=True)


def book_an_old_split(books: Books, last: dt.date) -> None:
    """A split recorded as booked three days before `last`, with no entry."""
    with books.session.engine.begin() as conn:
        conn.execute(tables.corporate_action.insert().values(
            kind="split", ticker="SPY", ex_date=(last - dt.timedelta(days=3)).isoformat(), ratio_new=2 * 10**9,
            ratio_old=10**9, source="test", key="SPY:split:test", created_at=at(last).isoformat(), ex_txn_id=0))


def rename_an_instrument(books: Books) -> None:
    """config.toml edited with the books closed: FESXZ26 is priced as another instrument."""
    config_path = books.env.dir / "config.toml"
    text = config_path.read_text()
    assert "[instruments.FESX]" in text
    books.close()
    config_path.write_text(text.replace("[instruments.FESX]", "[instruments.EUROSTOXX]")
                           .replace("FESX = 1", "EUROSTOXX = 1"))


@pytest.mark.parametrize("what", OLD_PRICE_CHANGES)
def test_an_old_price_added_or_changed_sets_it_aside(books, what):
    change_an_old_price(books, what, _week(books))
    _set_aside(books)


def test_a_price_stored_again_unchanged_keeps_it(books):
    last = _week(books)
    books.closes(last - dt.timedelta(days=2), 3 * 3)  # the same closes again: nothing changed
    assert same(books, BYS)["resumed"] == last - dt.timedelta(days=1)


def test_a_split_booked_on_an_old_day_sets_it_aside(books):
    last = _week(books)
    book_an_old_split(books, last)
    _set_aside(books)


def test_a_changed_config_sets_it_aside(books):
    _week(books)
    rename_an_instrument(books)
    books.session = Session(open_environment(books.env.home, "paper", books.url))
    _set_aside(books)


def test_a_new_format_sets_it_aside(books, monkeypatch):
    _week(books)
    monkeypatch.setattr(series_checkpoint, "FORMAT", series_checkpoint.FORMAT + 1)
    _set_aside(books)


def test_entries_and_prices_after_its_day_keep_it(books):
    """What comes after the checkpoint's day is what a resumed read reads: no reason to replay."""
    last = _week(books)
    books.trade(last, "MES", 1, 5, True)
    books.interest(last, "EUR", 80)
    books.closes(last, 40, replace=True)
    books.fx(last, "1.2000", replace=True)
    nxt = last + dt.timedelta(days=1)
    books.trade(nxt, "SPY", 3, 2, False)
    books.closes(nxt, 5)
    report = same(books, BYS)
    assert report["resumed"] == last - dt.timedelta(days=1) and report["written"] == last, report
    assert same(books, BYS)["resumed"] == last
    assert same(books, ("total",), until=last)["resumed"] == last  # every day asked for is stored


# -- the price-change log, pruned ------------------------------------------------------------------

def _log(books: Books) -> tuple[int, int]:
    """(rows, the changes they stand for) of the price-change log."""
    with read_connection(books.session.engine) as conn:
        rows, changes = conn.execute(sa.text("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM price_change")).one()
    return int(rows), int(changes)


def _floor(books: Books) -> str:
    with read_connection(books.session.engine) as conn:
        return conn.execute(sa.text("SELECT MIN(day) FROM series_checkpoint")).scalar()


def test_the_price_change_log_is_pruned_as_the_checkpoints_move_on(books):
    """Each checkpoint written folds the log's rows on or before the oldest checkpoint's day into
    one: the log holds a row per change after it, and one, not a row per change since the first
    price; no change is lost (the sum of `n` is every change logged), and an old price changed after
    a prune still sets the checkpoints aside."""
    last = _week(books)
    rows, changes = _log(books)
    assert rows == 1 + _changes_after(books, _floor(books)), (rows, changes)
    day = last
    for k in range(4):  # a new day each, read as a trader does: the checkpoints move on
        day += dt.timedelta(days=1)
        books.trade(day, "MES", 1, k, True)
        books.closes(day, k)
        books.fx(day, f"1.{2000 + k}")
        before = _log(books)[1]
        report = same(books, BYS)
        assert report["written"] == day - dt.timedelta(days=1), report
        rows, changes = _log(books)
        assert changes == before, "a prune loses no change"
        assert rows == 1 + _changes_after(books, _floor(books)), rows
    assert rows < changes
    assert verify(books.session.ledger).ok
    change_an_old_price(books, "close changed", day)
    _set_aside(books)


def _changes_after(books: Books, floor: str) -> int:
    with read_connection(books.session.engine) as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM price_change WHERE day > :d"), {"d": floor}).scalar())


def test_a_write_counted_before_a_prune_is_refused(books):
    """A read that counted before another process's prune writes nothing (its sums may be of rows
    folded since); the checkpoints stored stay, valid."""
    last = _week(books)
    stored = series_checkpoint.stored(books.session)
    with read_connection(books.session.engine) as conn:
        pruned = conn.execute(sa.text(series_checkpoint.PRUNED_SQL)).scalar()
    at = series_checkpoint.Counts(last, 10**6, 10**6, pruned - 1)  # counted before the last prune
    assert not series_checkpoint.write(books.session, at, {"total": "{}"})
    assert series_checkpoint.stored(books.session) == stored
    assert same(books, BYS)["resumed"] == last - dt.timedelta(days=1)


def test_db_verify_finds_a_checkpoint_whose_price_changes_were_pruned(books):
    _week(books)
    assert verify(books.session.ledger).ok
    with books.session.engine.begin() as conn:  # a prune gone wrong: rows a checkpoint counted, deleted
        conn.execute(sa.text("DELETE FROM price_change WHERE day <= :d"), {"d": _floor(books)})
    found = verify(books.session.ledger)
    assert {f.check for f in found.findings} == {"checkpoints"}, found.findings
    assert "rows it needs were pruned" in found.findings[0].detail


# -- a kill between writing and committing -----------------------------------------------------------

def test_a_kill_before_the_commit_leaves_the_old_checkpoints(books):
    last = _week(books)
    before = series_checkpoint.stored(books.session)
    assert [row["day"] for row in before] == [(last - dt.timedelta(days=1)).isoformat()] * 3
    books.trade(last + dt.timedelta(days=1), "MES", 1, 3, True)  # the next read writes newer ones
    books.closes(last + dt.timedelta(days=1), 4)
    env = {**os.environ, "TRADELEDGER_KILL_AT": "checkpoint_written"}
    run = subprocess.run([sys.executable, "-m", "tradeledger.cli", "--home", str(books.env.home), "pnl", "--by",
                          "day", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == -9, (run.returncode, run.stderr[-2000:])
    assert series_checkpoint.stored(books.session) == before  # the old rows, whole
    report = same(books, BYS)  # and usable: a valid checkpoint, resumed from
    assert report["resumed"] == last - dt.timedelta(days=1) and report["written"] == last, report


# -- the commands print what the full replay prints --------------------------------------------------

def test_the_commands_print_the_full_replays_bytes(books):
    from support import tl

    last = _week(books)
    books.interest(last - dt.timedelta(days=1), "USD", 44)  # stale: replayed and rewritten
    home = books.env.home
    commands = [("pnl", "--by", "day", "--cumulative"), ("pnl", "--by", "day", "--since", str(last - dt.timedelta(days=2))),
                ("pnl", "--by", "strategy", "--until", str(last)), ("report", "performance"),
                ("report", "performance", "--since", str(START + dt.timedelta(days=2)))]
    for _ in range(2):  # the first replays and writes, the second resumes
        for args in commands:
            resumed = tl(home, *args).stdout
            os.environ["TRADELEDGER_SERIES_REPLAY"] = "full"
            try:
                full = tl(home, *args).stdout
            finally:
                del os.environ["TRADELEDGER_SERIES_REPLAY"]
            assert resumed == full, args
            assert json.loads(tl(home, *args, "--json").stdout) is not None
    assert series_checkpoint.stored(books.session)


def test_two_readers_writing_at_once_both_succeed(books):
    """Two processes' reads write the same checkpoints at once: neither fails, one wins, and what
    is stored is valid (the next read resumes from it and equals the full replay)."""
    import threading

    last = _week(books)
    with books.session.engine.begin() as conn:
        conn.execute(sa.delete(tables.series_checkpoint))
    reports, errors = [], []

    def read():
        try:
            report: dict = {}
            series_checkpoint.build_resumed(books.session, BYS, None, report)
            reports.append(report)
        except Exception as exc:  # noqa: BLE001 - the test says which
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(reports) == 2
    assert any(r["written"] == last - dt.timedelta(days=1) for r in reports), reports
    assert same(books, BYS)["resumed"] == last - dt.timedelta(days=1)
