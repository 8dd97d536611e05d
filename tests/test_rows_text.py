"""The booking fast path writes a time and an entry's meta as text of its own making
(`rows.fmt_ts`, `rows.meta_json`), faster than strftime and json.dumps: the text must be theirs
exactly, or a stored time would sort wrong and a fingerprint or an export would differ. A bulk
import makes the stored time from the isoformat the fingerprint reads (`rows.stored_ts`): it must
be `fmt_ts`'s text too."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, strategies as st

from tradeledger.ledger.model import LedgerError
from tradeledger.ledger.rows import fmt_ts, meta_json, stored_ts

zones = st.builds(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)), st.integers(-23 * 60, 23 * 60))


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=zones))
def test_fmt_ts_is_strftime_in_utc(time):
    assert fmt_ts(time) == time.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.one_of(st.just(dt.timezone.utc), zones)))
def test_stored_ts_from_isoformat_is_fmt_ts(time):
    assert stored_ts(time, time.isoformat()) == fmt_ts(time)


def test_fmt_ts_refuses_a_naive_time():
    with pytest.raises(LedgerError, match="timezone-aware"):
        fmt_ts(dt.datetime(2026, 1, 2))


@given(st.dictionaries(st.text(), st.text(), max_size=5))
def test_meta_json_is_json_dumps(meta):
    assert meta_json(tuple(meta.items())) == json.dumps(meta, sort_keys=True)
