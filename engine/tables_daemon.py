"""The daemon's and the maintenance tools' tables (migration 0004).

- `daemon_lease`: at most one row per environment. The daemon that holds it (owner, pid, host)
  renews `expires_at` while it runs; a second daemon is refused while the lease has not expired,
  and takes it over once it has (the first one died without releasing it).
- `daemon_heartbeat`: one row per environment, rewritten after every job and on every renewal:
  when the daemon last showed life, which job ran last and how it ended (`status` reads it).
- `adjustment`: one row per maintenance entry booked by `tradeledger adjust ...`: what was done,
  to what (a fill's execution key, a contract, an entry id), why, by whom, the ledger entry that
  records it, and the marks the contract's holders had before (so that the entry can be reversed
  with the mark chain intact). Facts of earlier bookings (`fill_alloc`) are never edited: an
  attribution is a row here plus its own ledger entry.

The APScheduler job store lives in the same database in a table of its own
(`tl_apscheduler_jobs`), created by APScheduler itself. Times are UTC text in the ledger's format.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

daemon_lease = Table(
    "daemon_lease", metadata,
    Column("env", String(16), primary_key=True),
    Column("owner", String(128), nullable=False),  # host:pid:random, unique per daemon process
    Column("pid", Integer, nullable=False),
    Column("host", String(128), nullable=False),
    Column("acquired_at", String(26), nullable=False),
    Column("expires_at", String(26), nullable=False),
)

daemon_heartbeat = Table(
    "daemon_heartbeat", metadata,
    Column("env", String(16), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("started_at", String(26), nullable=False),
    Column("at", String(26), nullable=False),
    Column("last_job", String(64)),
    Column("last_result", Text),  # "ok: ...", "failed: ...", "skipped: ..."
    Column("state", String(16), nullable=False, server_default="running"),  # running | stopped
)

adjustment = Table(
    "adjustment", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # attribute adopt transfer manual-close reverse cash
    Column("subject", String(128), nullable=False),  # exec key, contract, entry id or currency
    Column("contract", String(64)),
    Column("from_holder", String(64)),  # "" for unattributed
    Column("to_holder", String(64)),
    Column("quantity", BigInteger),  # signed, nano-units
    Column("price", BigInteger),
    Column("reason", Text, nullable=False),
    Column("who", String(64), nullable=False),
    Column("created_at", String(26), nullable=False),
    Column("txn_id", BigInteger, nullable=False),
    Column("marks_before", Text),  # JSON {holder: price} of the contract's futures marks
    Column("resolved", Text),  # JSON list of exception dedupe keys this entry resolved
)

Index("ix_adjustment_subject", adjustment.c.kind, adjustment.c.subject)
