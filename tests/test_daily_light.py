"""The daily report read from the nearer end is the full replay's, exactly (reports/daily.py).

`report daily` shows the curves (resumed from a checkpoint, reports/series_checkpoint.py) and the
positions, exposure and NAV at the day's end (the maintained balances less the entries after the
day, `Ledger.balances(from_end=...)`). The oracle, `daily(..., full=True)` (what
TRADELEDGER_SERIES_REPLAY=full gives), replays the curves and sums the balances from the first entry.

- A property, on SQLite and PostgreSQL: test_series_checkpoint's random days (fills, closes,
  settlements, EUR rates, deposits and interest backdated, dividends, a split, reversals,
  corrected closes), the daily report read in between, of the ledger's last day and of the days
  the plan's reads cut at; every figure equal to the oracle's, to the repr of each Decimal.
- On a week's ledger: the light report folds only the days after the checkpoint, and the command
  prints the oracle's bytes (--json, --csv).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from test_pnl_fast import backend  # noqa: F401 - the fixture: a SQLite file, or a PostgreSQL schema
from test_series_checkpoint import START, Books, _week, book_an_old_split, change_an_old_price, day_plan, walk_days
from tradeledger.ledger.db import read_connection
from tradeledger.reports import replay
from tradeledger.reports.daily import daily


def last_day(books: Books) -> dt.date:
    with read_connection(books.session.engine) as conn:
        return dt.date.fromisoformat(conn.execute(sa.text("SELECT MAX(ts) FROM txn")).scalar()[:10])


def same_daily(books: Books, day: dt.date) -> None:
    """The report of `day` read from the nearer end (twice: the first may write a checkpoint, the
    second resumes from it) and from the first entry: the same figures."""
    full = daily(books.session, day, full=True)
    for _ in range(2):
        light = daily(books.session, day, full=False)
        assert repr(light) == repr(full), day


def read(books: Books, bys: tuple, until: dt.date | None = None) -> None:
    same_daily(books, last_day(books) if until is None else until - dt.timedelta(days=1))


@settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(days=st.lists(day_plan, min_size=2, max_size=6))
def test_the_light_daily_report_is_the_full_replays(backend, days):
    books = Books(backend.tmp / uuid.uuid4().hex[:8], backend.url())
    try:
        walk_days(books, days, read)
        same_daily(books, START)
    finally:
        books.close()


@pytest.fixture
def books(backend):
    made = Books(backend.tmp / uuid.uuid4().hex[:8], backend.url())
    yield made
    made.close()


def _folded(books: Books, day: dt.date, full: bool) -> int:
    before = replay.FOLDED.moves
    daily(books.session, day, full=full)
    return replay.FOLDED.moves - before


def test_the_light_report_folds_the_days_after_the_checkpoint_only(books):
    last = _week(books)
    light, full = _folded(books, last, False), _folded(books, last, True)
    assert 0 < light < full / 3, (light, full)
    same_daily(books, last)
    same_daily(books, last - dt.timedelta(days=3))


def test_after_an_old_change_the_light_report_is_still_the_full_replays(books):
    last = _week(books)
    change_an_old_price(books, "close changed", last)
    same_daily(books, last)
    book_an_old_split(books, last)
    same_daily(books, last)
    books.interest(last - dt.timedelta(days=2), "EUR", 75)
    same_daily(books, last - dt.timedelta(days=1))


def test_the_command_prints_the_full_replays_bytes(books):
    from support import tl

    last = _week(books)
    home = books.env.home
    for args in (("report", "daily", "--date", str(last), "--json"), ("report", "daily", "--date", str(last), "--csv"),
                 ("report", "daily", "--date", str(last - dt.timedelta(days=2)), "--json")):
        light = tl(home, *args)
        os.environ["TRADELEDGER_SERIES_REPLAY"] = "full"
        try:
            full = tl(home, *args)
        finally:
            del os.environ["TRADELEDGER_SERIES_REPLAY"]
        assert light.stdout == full.stdout and light.stderr == full.stderr, args
