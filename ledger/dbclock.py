"""The database's clock: the one time every host that shares a ledger sees.

Several hosts may share one PostgreSQL ledger, and their clocks may be minutes apart. A time one
host writes and another compares, a lease's expiry above all, is therefore taken from the one
clock they all see, the database server's, inside the statement that writes or compares it: a
host whose clock runs ahead must not judge a live lease expired (two daemons, two traders), nor a
host whose clock lags keep a dead holder's lease alive. The daemon's heartbeat is stamped by it
too, and its age measured against it: a monitor on a host minutes off must neither call a live
daemon silent nor miss a dead one. So are the alert outbox's times (whether a row is due after a
backoff or a deliverer's claim, how many a channel was sent in the last hour: the daemon and a
cron `alerts send` elsewhere deliver from one outbox) and a reconciliation's `written_at` (its age
on /metrics). An IB environment's own clock (`Context.now`, what it stamps orders, runs and
exceptions by and judges their ages by) is this clock read at the edge; a sim environment's is its
exchange's.

`now(dialect, seconds)` is that clock as an SQL expression, `seconds` later, in the ledger's
timestamp text (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC: `rows.fmt_ts`), so that it compares as text
with the times stored beside it and reads back with `store.parse_ts`:

- PostgreSQL: `clock_timestamp()`, the time the statement reads it, not the transaction's start
  (`now()`): a transaction that waited for a row lock still writes a whole lease from the moment
  it writes it.
- SQLite: `strftime(..., 'now')`, the clock of the one host the file lives on (the same clock
  the process reads), in milliseconds padded to six digits.

`seconds` may be negative and need not be whole. Tests that need a later moment without waiting
for it pass it explicitly to the functions that take a lease, write the heartbeat or deliver
alerts (`ahead`); production code passes the lease's length or a backoff (or nothing) and nothing
else.
"""

from __future__ import annotations

import sqlalchemy as sa

PG_FORMAT = "YYYY-MM-DD HH24:MI:SS.US"
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f"  # milliseconds: '000' makes them the six digits of fmt_ts


def now(dialect: str, seconds: float = 0) -> sa.ColumnElement[str]:
    """The database's current time plus `seconds`, as timestamp text, evaluated by the database."""
    if dialect == "postgresql":
        utc = sa.func.timezone("UTC", sa.func.clock_timestamp())
        later = utc + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float))
        return sa.func.to_char(later, PG_FORMAT, type_=sa.String)
    if dialect == "sqlite":
        stamp = sa.func.strftime(SQLITE_FORMAT, "now", f"{float(seconds):+.3f} seconds", type_=sa.String)
        return stamp.concat("000")
    raise ValueError(f"no database clock for the {dialect} dialect")


def read(conn, seconds: float = 0) -> str:
    """The database's current time (plus `seconds`) as timestamp text, read now."""
    return conn.execute(sa.select(now(conn.dialect.name, seconds))).scalar_one()
