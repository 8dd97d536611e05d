"""The curves on the read path without SQLAlchemy (reports/series_fast.py) are the full path's, exactly.

- A property, on SQLite and PostgreSQL: random days booked by the engine (test_series_checkpoint's
  plan: fills, closes, settlements, EUR rates, deposits and interest backdated, dividends, a split,
  reversals, corrected closes), curves read in between by the full path, which writes the
  checkpoints; wherever the light path answers, its series in every grouping and cut by
  `--until` is the full replay's to the repr of each Decimal, and it answers whenever the full
  path resumed from a checkpoint and would write none.
- After each change that sets a checkpoint aside (a backdated entry, a reversal of an old entry,
  an old price, settlement or FX rate added or changed, a split on an old day, the config, the
  format), and after entries past its day (the full path would keep a newer one), the light path
  gives None (the full path runs); once the full path has read, it answers again, equal.
- The commands print byte for byte what the full replay prints (tables, --json, --csv), taking
  the light path; with a valid checkpoint they import no SQLAlchemy, pandas or alembic.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from test_pnl_fast import backend  # noqa: F401 - the fixture: a SQLite file, or a PostgreSQL schema
from test_series_checkpoint import BYS, OLD_PRICE_CHANGES, START, Books, _week, \
    book_an_old_split, change_an_old_price, day_plan, rename_an_instrument, walk_days
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.reports import replay, series, series_checkpoint, series_fast, series_state


def light(books: Books, bys: tuple, until: dt.date | None = None) -> dict | None:
    """The light path's series (None: it leaves the read to the full path), held equal to the full
    replay's wherever it answers."""
    found = series_fast.quick_series(books.env.home, "paper", books.url, bys, until)
    if found is None:
        return None
    full = series.full_replay(books.session, bys, until)
    for by in bys:
        assert repr(found[0][by]) == repr(full[by]), (by, until)
    return found[0]


def full_read(books: Books, bys: tuple, until: dt.date | None = None) -> dict:
    """A read on the full path (resumed where it can be; writes the checkpoints it keeps)."""
    report: dict = {}
    series_checkpoint.build_resumed(books.session, bys, until, report)
    return report


def check(books: Books, bys: tuple, until: dt.date | None = None) -> None:
    light(books, bys, until)
    full_read(books, bys, until)
    report = full_read(books, bys, until)  # nothing changed since the read before
    got = light(books, bys, until)
    if report["resumed"] is not None and report["written"] is None:
        assert got is not None, (bys, until, report)


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(days=st.lists(day_plan, min_size=2, max_size=6))
def test_the_light_series_is_the_full_replays(backend, days):
    books = Books(backend.tmp / uuid.uuid4().hex[:8], backend.url())
    try:
        walk_days(books, days, check)
        check(books, ("total",))
        check(books, ("strategy", "total"))
    finally:
        books.close()


# -- each change that sets a checkpoint aside ------------------------------------------------------

@pytest.fixture
def books(backend):
    made = Books(backend.tmp / uuid.uuid4().hex[:8], backend.url())
    yield made
    made.close()


def _set_aside(books: Books) -> None:
    """The light path leaves the next read to the full path; once that has read (and written a
    new checkpoint), it answers again, equal to the full replay."""
    for bys in (BYS, ("total",), ("strategy", "total")):
        assert light(books, bys) is None, bys
    report = full_read(books, BYS)
    assert report["written"] is not None, report
    for bys in (BYS, ("total",), ("strategy", "total")):
        assert light(books, bys) is not None, bys


def test_a_valid_checkpoint_is_answered_from(books):
    last = _week(books)
    for bys in (BYS, ("total",), ("strategy", "total"), ("instrument",)):
        assert light(books, bys) is not None, bys
        for until in (START + dt.timedelta(days=2), last - dt.timedelta(days=1), last, last + dt.timedelta(days=3)):
            assert light(books, bys, until) is not None, (bys, until)


def test_a_backdated_entry_sets_it_aside(books):
    last = _week(books)
    books.interest(last - dt.timedelta(days=3), "USD", 120)
    _set_aside(books)


def test_a_reversal_of_an_old_entry_sets_it_aside(books):
    last = _week(books)
    books.deposit(last - dt.timedelta(days=4), 5000)
    full_read(books, BYS)
    assert light(books, BYS) is not None
    books.reverse(0, last, at_original=True)
    _set_aside(books)


@pytest.mark.parametrize("what", OLD_PRICE_CHANGES)
def test_an_old_price_added_or_changed_sets_it_aside(books, what):
    change_an_old_price(books, what, _week(books))
    _set_aside(books)


def test_a_split_booked_on_an_old_day_sets_it_aside(books):
    last = _week(books)
    book_an_old_split(books, last)
    _set_aside(books)


def test_a_changed_config_sets_it_aside(books):
    _week(books)
    rename_an_instrument(books)
    assert light(books, BYS) is None  # config.toml not checked since it changed: not vouched for
    books.session = Session(open_environment(books.env.home, "paper", books.url))  # checked (and stamped)
    _set_aside(books)  # the checkpoint's contracts are not the config's


def test_a_new_format_sets_it_aside(books, monkeypatch):
    _week(books)
    assert light(books, BYS) is not None
    monkeypatch.setattr(series_state, "FORMAT", series_state.FORMAT + 1)
    monkeypatch.setattr(series_checkpoint, "FORMAT", series_checkpoint.FORMAT + 1)
    _set_aside(books)


def test_entries_after_its_day_leave_the_next_checkpoint_to_the_full_path(books):
    """A day's entries and prices after the checkpoint's day are no reason to replay, but the full
    path keeps the next day's checkpoint: the light path lets it, then answers again."""
    last = _week(books)
    books.trade(last, "MES", 1, 5, True)
    books.closes(last, 40, replace=True)
    assert light(books, BYS) is not None  # the ledger's last day is still `last`
    nxt = last + dt.timedelta(days=1)
    books.trade(nxt, "SPY", 3, 2, False)
    assert light(books, BYS) is None
    assert light(books, ("total",), until=last) is not None  # cut before: nothing newer to keep
    assert full_read(books, BYS)["written"] == last
    assert light(books, BYS) is not None


def _folded(read) -> int:
    """How many postings' moves `read()` folded (replay.FOLDED)."""
    before = replay.FOLDED.moves
    read()
    return replay.FOLDED.moves - before


@pytest.mark.parametrize("gap", [1, 4])
def test_the_first_read_of_a_new_day_folds_each_posting_once(books, gap):
    """The first read of a new day, as the commands do it: the light path, which leaves it to the
    full path (that keeps the newer checkpoint), then the full path. The light path hands over
    before it folds anything: the postings after the checkpoint are folded once, by the full path
    (before: by both). `gap` 4: the new day comes after a weekend and days no one read."""
    last = _week(books)
    nxt = last + dt.timedelta(days=gap)
    books.trade(nxt, "SPY", 3, 2, False)
    books.trade(nxt, "MES", 1, 4, True)
    books.closes(nxt, 5)
    assert _folded(lambda: light(books, BYS)) == 0  # None: handed over before folding
    assert light(books, BYS) is None
    folded = _folded(lambda: full_read(books, BYS))
    assert folded > 0
    report = full_read(books, BYS)
    assert report["resumed"] == nxt - dt.timedelta(days=1) and report["written"] is None, report
    assert _folded(lambda: light(books, BYS)) > 0  # answered: the new day's own postings, once


def test_the_replay_forced_full_is_never_answered_here(books, monkeypatch):
    _week(books)
    monkeypatch.setenv("TRADELEDGER_SERIES_REPLAY", "full")
    assert series_fast.quick_series(books.env.home, "paper", books.url, BYS) is None


# -- the commands ---------------------------------------------------------------------------------

def test_the_commands_print_the_full_replays_bytes_on_the_light_path(books):
    from support import tl

    last = _week(books)
    home = books.env.home
    since, until = str(last - dt.timedelta(days=2)), str(last)
    commands = [("pnl", "--by", "day"), ("pnl", "--by", "day", "--cumulative"), ("pnl", "--by", "day", "--json"),
                ("pnl", "--by", "day", "--csv"), ("pnl", "--by", "day", "--since", since),
                ("pnl", "--by", "day", "--until", until, "--cumulative", "--json"),
                ("pnl", "--by", "day", "--since", since, "--until", until, "--csv"),
                ("pnl", "--by", "strategy", "--until", until), ("pnl", "--by", "instrument", "--until", until, "--json"),
                ("report", "performance"), ("report", "performance", "--json"), ("report", "performance", "--csv"),
                ("report", "performance", "--since", str(START + dt.timedelta(days=2))),
                ("report", "performance", "--until", until, "--json")]
    for args in commands:
        resumed = tl(home, *args)
        os.environ["TRADELEDGER_SERIES_REPLAY"] = "full"
        try:
            full = tl(home, *args)
        finally:
            del os.environ["TRADELEDGER_SERIES_REPLAY"]
        assert resumed.stdout == full.stdout and resumed.stderr == full.stderr, args
    day = lambda text: dt.date.fromisoformat(text)  # noqa: E731
    for by, since_, until_ in (("day", None, None), ("day", day(since), day(until)), ("strategy", None, day(until))):
        assert series_fast.quick_series_pnl(home, "paper", books.url, by, since_, until_) is not None, by
    assert series_fast.quick_performance(home, "paper", books.url, None, None) is not None
    assert json.loads(tl(home, "pnl", "--by", "day", "--json").stdout)["rows"]


PROBE = """
import json, sys
sys.argv = ["tradeledger", *sys.argv[1:]]
from tradeledger.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} | {name for name in sys.modules
                                                                        if name.startswith("tradeledger.")})),
      file=sys.stderr)
"""
HEAVY = {"sqlalchemy", "pandas", "numpy", "alembic", "pydantic", "beancount", "tradeledger.ledger.store",
         "tradeledger.reports.series", "tradeledger.reports.series_checkpoint", "tradeledger.reports.pnl"}


def _modules(home, *args) -> tuple[set[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=300)
    return set(json.loads(proc.stderr.strip().splitlines()[-1])), proc.stdout


def test_with_a_valid_checkpoint_the_commands_import_no_sqlalchemy_nor_pandas(books):
    _week(books)
    home = books.env.home
    for args in (("pnl", "--by", "day", "--json"), ("pnl", "--by", "day"), ("report", "performance", "--json"),
                 ("report", "performance", "--csv")):
        loaded, out = _modules(home, *args)
        assert "tradeledger.reports.series_fast" in loaded and out, args
        assert not loaded & HEAVY, (args, loaded & HEAVY)
    books.interest(START + dt.timedelta(days=1), "USD", 50)  # stale: the full path, which replays and writes
    loaded, _ = _modules(home, "pnl", "--by", "day", "--json")
    assert {"sqlalchemy", "tradeledger.reports.series_checkpoint"} <= loaded
    loaded, _ = _modules(home, "pnl", "--by", "day", "--json")  # the checkpoint it wrote: light again
    assert not loaded & HEAVY, loaded & HEAVY
