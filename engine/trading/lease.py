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

The lease is re-entrant within one process (a cycle that calls submit holds it once). Its times
(`acquired_at`, `expires_at`, and the moment they are compared with) are the database's clock,
computed in the statement that writes or judges them (`ledger/dbclock.py`), never this host's
nor the simulated exchange's: two hosts sharing a PostgreSQL ledger with clocks minutes apart
must still agree whether a lease has expired. On SQLite that clock is the file's one host's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.tables import trading_lease
from tradeledger.errors import UserError
from tradeledger.ledger import dbclock

LEASE_SECONDS = 30
DEFAULT_WAIT = 5.0


class TradingBusy(UserError):
    """Another live process holds this environment's trading lease."""


class LeaseLost(UserError):
    """Our lease expired and was taken over: stop before sending anything more."""


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


def gone_from_here(host: str, pid: int) -> bool:
    """Was the holder a process on this host that no longer exists (killed: its rerun need not wait
    for the expiry)? Pure but for the process table."""
    return host == socket.gethostname() and pid != os.getpid() and not pid_alive(pid)


def take_row(engine, table: sa.Table, env: str, owner: str, values: dict, seconds: float,
             gone=lambda row: False, ahead: float = 0) -> object | None:
    """Insert the environment's lease row in `table` (the trading lease, the daemon's), or take it
    over when it has expired by the database's clock or `gone(row)` says its holder is gone; one
    transaction, the row locked on PostgreSQL. `acquired_at` and `expires_at` (`seconds` later)
    are the database's clock, as is the expiry's comparison, all inside the statements that write
    them. None when `owner` holds it now, else the row of the live holder in the way. Another
    process inserting the row first raises IntegrityError.

    `ahead` is for tests only: act as if the database's clock were that many seconds later (a
    newcomer after the expiry, without waiting for it)."""
    with engine.begin() as conn:
        dialect = conn.dialect.name
        clock = dbclock.now(dialect, ahead)
        stamps = dict(acquired_at=clock, expires_at=dbclock.now(dialect, ahead + seconds))
        query = sa.select(table).where(table.c.env == env)
        if dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            conn.execute(table.insert().values(env=env, owner=owner, **values, **stamps))
            return None
        # Ours, or its process gone from this host: take it; else only if expired, judged in the UPDATE.
        may_take = sa.true() if row.owner == owner or gone(row) else table.c.expires_at <= clock
        taken = conn.execute(table.update().where(table.c.env == env, table.c.owner == row.owner, may_take)
                             .values(owner=owner, **values, **stamps))
        return None if taken.rowcount == 1 else row


def _holder(row) -> Holder:
    return Holder(row.owner, row.pid, row.host, row.what, row.acquired_at, row.expires_at)


def try_acquire(engine, env: str, owner: str, what: str, seconds: float, ahead: float = 0) -> Holder | None:
    """Take the lease (one transaction); None on success, else the live holder. `ahead`: tests only
    (`take_row`)."""
    host, pid = socket.gethostname(), os.getpid()
    values = dict(pid=pid, host=host, what=what[:200])
    try:
        row = take_row(engine, trading_lease, env, owner, values, seconds,
                       lambda row: gone_from_here(row.host, row.pid), ahead)
        return None if row is None else _holder(row)
    except sa.exc.IntegrityError:  # another process inserted the row first
        holder = current_holder(engine, env)
        if holder is None:
            with engine.connect() as conn:
                at = dbclock.read(conn)
            holder = Holder("?", 0, "?", "another trader", at, at)
        return holder


def current_holder(engine, env: str, conn=None) -> Holder | None:
    def read(c):
        row = c.execute(sa.select(trading_lease).where(trading_lease.c.env == env)).first()
        return None if row is None else _holder(row)
    if conn is not None:
        return read(conn)
    with engine.connect() as c:
        return read(c)


def live_holder(engine, env: str, conn=None) -> Holder | None:
    """The holder of the lease if it is live: not expired by the database's clock (read in the
    same statement as the row), its process not gone from this host."""
    def read(c):
        query = sa.select(trading_lease, dbclock.now(c.dialect.name).label("db_now")).where(trading_lease.c.env == env)
        row = c.execute(query).first()
        if row is None or row.expires_at <= row.db_now or gone_from_here(row.host, row.pid):
            return None
        return _holder(row)
    if conn is not None:
        return read(conn)
    with engine.connect() as c:
        return read(c)


def renew(engine, env: str, owner: str, seconds: float) -> bool:
    """Extend our lease to `seconds` from now by the database's clock; False when it is not ours."""
    with engine.begin() as conn:
        result = conn.execute(trading_lease.update().where(trading_lease.c.env == env, trading_lease.c.owner == owner)
                              .values(expires_at=dbclock.now(conn.dialect.name, seconds)))
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
                and not renew(self.engine, self.env, self.owner, self.seconds):
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
    deadline = time.monotonic() + wait  # how long this process waits: its own elapsed time
    while True:
        holder = try_acquire(engine, env, owner, what, seconds)
        if holder is None:
            break
        if time.monotonic() >= deadline:
            raise TradingBusy(f"{holder.describe(env)}: refused after waiting {wait:g} s; run it again once that "
                              f"finishes")
        threading.Event().wait(poll)
    lease = Lease(env, owner, what, engine, seconds)
    stop = threading.Event()

    def keep_renewing():
        while not stop.wait(seconds / 3):
            try:
                if not renew(engine, env, owner, seconds):
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
