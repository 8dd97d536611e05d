"""The database's clock (ledger/dbclock.py) and the leases written by it, on both backends: the
stored text is the ledger's timestamp format, what the refusals and the health endpoint read."""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

from tradeledger.engine.tables import trading_lease
from tradeledger.engine.trading import lease
from tradeledger.ledger import dbclock
from tradeledger.ledger.store import parse_ts

UTC = dt.timezone.utc
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def test_the_database_clock_reads_as_the_stored_timestamp_text(engine):
    with engine.connect() as conn:
        now, later, earlier = dbclock.read(conn), dbclock.read(conn, 30), dbclock.read(conn, -1.5)
        # PostgreSQL's clock is the server's (the test process's may be faked); SQLite's is this process's
        reference = conn.exec_driver_sql("SELECT clock_timestamp()").scalar() if engine.dialect.name == "postgresql" \
            else dt.datetime.now(UTC)
    assert all(STAMP.match(text) for text in (now, later, earlier)), (now, later, earlier)
    assert earlier < now < later  # as text, as the leases compare them
    assert abs(parse_ts(now) - reference) < dt.timedelta(seconds=5)  # UTC, not local time
    assert dt.timedelta(seconds=29.9) < parse_ts(later) - parse_ts(now) < dt.timedelta(seconds=31)
    assert dt.timedelta(seconds=1.4) < parse_ts(now) - parse_ts(earlier) < dt.timedelta(seconds=2.5)


def test_a_lease_is_written_and_judged_by_the_database_clock(engine):
    assert lease.try_acquire(engine, "paper", "a:1:x", "cycle --approve (run 1)", 30) is None
    with engine.connect() as conn:
        row = conn.execute(sa.select(trading_lease)).one()
        now = parse_ts(dbclock.read(conn))
    assert STAMP.match(row.acquired_at) and STAMP.match(row.expires_at)
    assert dt.timedelta(seconds=29.9) < parse_ts(row.expires_at) - parse_ts(row.acquired_at) < dt.timedelta(seconds=31)
    assert parse_ts(row.acquired_at) <= now
    # Another owner (its process not gone: this one) is refused while it lives, with the stored times.
    holder = lease.try_acquire(engine, "paper", "b:2:y", "orders submit (run 1)", 30)
    assert holder is not None and holder.owner == "a:1:x"
    assert f"(lease until {row.expires_at[:19]} UTC)" in holder.describe("paper")
    assert lease.live_holder(engine, "paper").owner == "a:1:x"
    # 31 s later by the database's clock it has expired: taken over, a lease from then.
    assert lease.try_acquire(engine, "paper", "b:2:y", "orders submit (run 1)", 30, ahead=31) is None
    with engine.connect() as conn:
        taken = conn.execute(sa.select(trading_lease)).one()
    assert taken.owner == "b:2:y" and taken.expires_at > row.expires_at
    assert lease.renew(engine, "paper", "b:2:y", 5) and not lease.renew(engine, "paper", "a:1:x", 5)
    with engine.connect() as conn:
        renewed = conn.execute(sa.select(trading_lease.c.expires_at)).scalar()
    assert renewed < taken.expires_at  # renewed to 5 s from now by the database's clock
