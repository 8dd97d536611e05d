"""One trader per environment: the trading lease.

Planning, sending and booking a run's orders happen under one lease per environment, a row in
the environment's own database (`trading_lease`), like the daemon's: so two processes (two
`cycle --approve`, a cycle and an `orders submit`, on SQLite or on PostgreSQL, on one host or
two) never plan from the same state and never both send.

- **Acquire**: insert the row, or take it over when it has expired or when its holder was a
  process on this host that no longer exists (killed: its rerun need not wait for the expiry).
  A live holder makes the newcomer wait up to `wait` seconds (polling), then refuse with who holds
  the lease, doing what, and since when (`TradingBusy`).
- **Hold**: a background thread renews `expires_at` every third of the lease. Before each send
  (and each cancel) the cycle calls `Lease.check()`, which confirms the lease in the database and
  renews it there and then: a holder that stalled past the expiry and was taken over stops before
  it sends anything more, however recently the thread last ran.
- **Release** on leaving the `with` block, whatever happened inside it.

The lease is re-entrant within one process (a cycle that calls submit holds it once). Times are
the wall clock, never the simulated exchange's clock.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.tables import trading_lease
from tradeledger.errors import UserError
from tradeledger.ledger.store import fmt_ts

UTC = dt.timezone.utc
LEASE_SECONDS = 30
DEFAULT_WAIT = 5.0


class TradingBusy(UserError):
    """Another live process holds this environment's trading lease."""


class LeaseLost(UserError):
    """Our lease expired and was taken over: stop before sending anything more."""


def wall_now() -> dt.datetime:
    return dt.datetime.now(UTC)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    owner: str
    pid: int
    host: str
    what: str
    acquired_at: str
    expires_at: str

    def describe(self, env: str) -> str:
        return (f"the {env} environment is being traded by `{self.what}` (pid {self.pid} on {self.host}) since "
                f"{self.acquired_at[:19]} UTC (lease until {self.expires_at[:19]} UTC)")


def is_stale(holder: Holder, now: dt.datetime, host: str) -> bool:
    """May a newcomer take this lease over? Expired, or its process is gone from this host (pure but for
    the process table)."""
    if holder.expires_at <= fmt_ts(now):
        return True
    return holder.host == host and holder.pid != os.getpid() and not pid_alive(holder.pid)


def take_row(engine, table: sa.Table, env: str, owner: str, values: dict, may_take) -> object | None:
    """Insert the environment's lease row in `table` (the trading lease, the daemon's), or take it
    over when `may_take(row)` says its holder is gone; one transaction, the row locked on
    PostgreSQL. None when `owner` holds it now, else the row of the live holder in the way.
    Another process inserting the row first raises IntegrityError."""
    with engine.begin() as conn:
        query = sa.select(table).where(table.c.env == env)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            conn.execute(table.insert().values(env=env, owner=owner, **values))
            return None
        if row.owner != owner and not may_take(row):
            return row
        conn.execute(table.update().where(table.c.env == env, table.c.owner == row.owner)
                     .values(owner=owner, **values))
        return None


def _holder(row) -> Holder:
    return Holder(row.owner, row.pid, row.host, row.what, row.acquired_at, row.expires_at)


def try_acquire(engine, env: str, owner: str, what: str, now: dt.datetime, seconds: int) -> Holder | None:
    """Take the lease (one transaction); None on success, else the live holder."""
    host, pid = socket.gethostname(), os.getpid()
    values = dict(pid=pid, host=host, what=what[:200], acquired_at=fmt_ts(now),
                  expires_at=fmt_ts(now + dt.timedelta(seconds=seconds)))
    try:
        row = take_row(engine, trading_lease, env, owner, values, lambda row: is_stale(_holder(row), now, host))
        return None if row is None else _holder(row)
    except sa.exc.IntegrityError:  # another process inserted the row first
        return current_holder(engine, env) or Holder("?", 0, "?", "another trader", fmt_ts(now), fmt_ts(now))


def current_holder(engine, env: str, conn=None) -> Holder | None:
    def read(c):
        row = c.execute(sa.select(trading_lease).where(trading_lease.c.env == env)).first()
        return None if row is None else Holder(row.owner, row.pid, row.host, row.what, row.acquired_at,
                                               row.expires_at)
    if conn is not None:
        return read(conn)
    with engine.connect() as c:
        return read(c)


def live_holder(engine, env: str, conn=None, now: dt.datetime | None = None) -> Holder | None:
    """The holder of the lease if it is live (not expired, its process not gone)."""
    holder = current_holder(engine, env, conn)
    if holder is None or is_stale(holder, now or wall_now(), socket.gethostname()):
        return None
    return holder


def renew(engine, env: str, owner: str, now: dt.datetime, seconds: int) -> bool:
    with engine.begin() as conn:
        result = conn.execute(trading_lease.update().where(trading_lease.c.env == env, trading_lease.c.owner == owner)
                              .values(expires_at=fmt_ts(now + dt.timedelta(seconds=seconds))))
        return result.rowcount == 1


def release(engine, env: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(trading_lease.delete().where(trading_lease.c.env == env, trading_lease.c.owner == owner))


@dataclass
class Lease:
    env: str
    owner: str
    what: str
    engine: object = None
    seconds: int = LEASE_SECONDS
    lost: threading.Event = field(default_factory=threading.Event)
    depth: int = 1

    def check(self) -> None:
        """Before each send: confirm in the database that the lease is still ours, and renew it (a
        whole lease from now), else raise LeaseLost. The renewing thread's flag alone would let a
        holder that stalled past its expiry go on sending until that thread's next tick, after the
        newcomer who took over had sent the same planned orders."""
        if not self.lost.is_set() and self.engine is not None \
                and not renew(self.engine, self.env, self.owner, wall_now(), self.seconds):
            self.lost.set()
        if self.lost.is_set():
            raise LeaseLost(f"this process lost the {self.env} environment's trading lease (it stalled past its "
                            f"expiry and another trader took over): stopped before sending anything more")


_held: dict[tuple[str, str], Lease] = {}
_held_lock = threading.Lock()


@contextmanager
def hold(ctx: Context, what: str, wait: float = DEFAULT_WAIT, seconds: int = LEASE_SECONDS,
         poll: float = 0.1) -> Iterator[Lease]:
    """Hold the environment's trading lease for the block (re-entrant within this process)."""
    engine, env = ctx.engine, ctx.name
    key = (engine.url.render_as_string(hide_password=True), env)
    with _held_lock:
        mine = _held.get(key)
        if mine is not None:
            mine.depth += 1
    if mine is not None:
        try:
            yield mine
        finally:
            with _held_lock:
                mine.depth -= 1
        return
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = wall_now() + dt.timedelta(seconds=wait)
    while True:
        holder = try_acquire(engine, env, owner, what, wall_now(), seconds)
        if holder is None:
            break
        if wall_now() >= deadline:
            raise TradingBusy(f"{holder.describe(env)}: refused after waiting {wait:g} s; run it again once that "
                              f"finishes")
        threading.Event().wait(poll)
    lease = Lease(env, owner, what, engine, seconds)
    stop = threading.Event()

    def keep_renewing():
        while not stop.wait(seconds / 3):
            try:
                if not renew(engine, env, owner, wall_now(), seconds):
                    lease.lost.set()
                    return
            except sa.exc.SQLAlchemyError:  # a busy database: try again at the next tick
                continue

    renewer = threading.Thread(target=keep_renewing, name=f"trading-lease-{env}", daemon=True)
    renewer.start()
    with _held_lock:
        _held[key] = lease
    try:
        yield lease
    finally:
        with _held_lock:
            _held.pop(key, None)
        stop.set()
        renewer.join(timeout=5)
        release(engine, env, owner)
