"""`ibsim seed-demo` seeds the demo's history up to yesterday by the environment's clock (UTC on
IB), as `init --demo` starts the demo by UTC's date: never by the machine's local date, which in a
zone far from UTC is another day for hours of every day (history up to today, or a day missing).
Run with TZ set to such a zone: UTC+14 when UTC's hour is 10 or later (local is tomorrow), else
UTC-12 (local is yesterday). On both backends, through the CLI as the trader types it."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from tradeledger.broker.simexchange import SimExchange
from support import tl

UTC = dt.timezone.utc


@pytest.fixture
def far_zone(monkeypatch):
    """A TZ whose local date is not UTC's right now (tzset'd for this process, restored after)."""
    zone = "Etc/GMT-14" if dt.datetime.now(UTC).hour >= 10 else "Etc/GMT+12"  # POSIX signs: GMT-14 is UTC+14
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    yield zone
    monkeypatch.undo()
    time.tzset()


def test_seed_demo_seeds_up_to_yesterday_by_utc_in_any_local_zone(tmp_path, db_url, far_zone):
    utc_today = dt.datetime.now(UTC).date()
    assert dt.date.today() != utc_today, far_zone  # the premise: the local date differs from UTC's
    home = tmp_path / "ib"
    tl(home, "--db-url", db_url, "init", "--broker", "ib", "--ib-port", "1", "--account", "DU1234567")
    SimExchange(tmp_path / "ibsim.db", "DU1234567").close()
    seeded = json.loads(tl(home, "ibsim", "seed-demo", "--state", tmp_path / "ibsim.db", "--json").stdout)
    if dt.datetime.now(UTC).date() != utc_today:  # midnight UTC passed during the test
        pytest.skip("UTC's date changed during the test")
    assert seeded["history_until"] == (utc_today - dt.timedelta(days=1)).isoformat()
