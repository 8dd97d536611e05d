"""The simulated exchange's file, clock, commission rates and pending faults: what every command of a
sim environment opens (its clock is the environment's), apart from the market, orders and account
(broker/simexchange.py's `SimExchange`, which is a `SimStore`) so that `status` can read the clock
and probe the broker without building the broker's records (broker/base.py).

One SQLite file per account, opened in WAL mode; every call one transaction (BEGIN IMMEDIATE ...
COMMIT). A new file gets its schema, account, id counters and default commission; a file that
holds another account is refused (environments never share one). Faults are rows, so they survive
a restart until consumed.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Iterator

from tradeledger.broker.errors import BrokerDisconnected, BrokerError

UTC = dt.timezone.utc
SCHEMA_VERSION = "1"
DEFAULT_COMMISSION = Decimal("1.00")  # per futures contract; set_commission overrides
_TIME_FMT = "%Y-%m-%dT%H:%M:%S.%f+00:00"  # fixed width, so text order is time order

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contracts (
    code TEXT PRIMARY KEY, sec_type TEXT, symbol TEXT, exchange TEXT, currency TEXT,
    multiplier TEXT, expiry TEXT, trading_class TEXT, con_id INTEGER);
CREATE TABLE IF NOT EXISTS prices (code TEXT PRIMARY KEY, price TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS price_history (
    seq INTEGER PRIMARY KEY, code TEXT NOT NULL, price TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commission_rates (code TEXT PRIMARY KEY, per_contract TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY, perm_id INTEGER NOT NULL UNIQUE, order_ref TEXT NOT NULL,
    code TEXT NOT NULL, side TEXT NOT NULL, quantity TEXT NOT NULL, order_type TEXT NOT NULL,
    limit_price TEXT, filled TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    fill_cap TEXT, held INTEGER NOT NULL DEFAULT 0, commission_delay INTEGER,
    created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_ref ON orders(order_ref) WHERE order_ref != '';
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY, exec_id TEXT NOT NULL UNIQUE, base_id TEXT NOT NULL,
    order_id INTEGER NOT NULL, perm_id INTEGER NOT NULL, order_ref TEXT NOT NULL,
    code TEXT NOT NULL, side TEXT NOT NULL, quantity TEXT NOT NULL, price TEXT NOT NULL,
    at TEXT NOT NULL, commission TEXT NOT NULL, polls_left INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS positions (
    code TEXT PRIMARY KEY, quantity TEXT NOT NULL, avg_price TEXT NOT NULL, mark TEXT,
    unsettled TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cash (currency TEXT PRIMARY KEY, amount TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cash_journal (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, currency TEXT NOT NULL, amount TEXT NOT NULL,
    kind TEXT NOT NULL, ref TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settlements (
    code TEXT NOT NULL, date TEXT NOT NULL, price TEXT NOT NULL, PRIMARY KEY (code, date));
CREATE TABLE IF NOT EXISTS order_legs (
    order_id INTEGER NOT NULL, seq INTEGER NOT NULL, code TEXT NOT NULL, side TEXT NOT NULL,
    ratio INTEGER NOT NULL, PRIMARY KEY (order_id, seq));
CREATE TABLE IF NOT EXISTS contract_dates (
    code TEXT PRIMARY KEY, last_trade TEXT NOT NULL, real_expiration TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, arg TEXT NOT NULL,
    remaining INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dividends (
    code TEXT NOT NULL, ex_date TEXT NOT NULL, pay_date TEXT NOT NULL, shares TEXT NOT NULL,
    per_share TEXT NOT NULL, withholding TEXT NOT NULL, paid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (code, ex_date));
CREATE TABLE IF NOT EXISTS splits (
    code TEXT NOT NULL, date TEXT NOT NULL, new TEXT NOT NULL, old TEXT NOT NULL, cash_in_lieu TEXT,
    PRIMARY KEY (code, date));
"""


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("simulated times must be timezone-aware")
    return when.astimezone(UTC)


def _ts(when: dt.datetime) -> str:
    return _utc(when).strftime(_TIME_FMT)


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class SimStore:
    """The file of one simulated account: its connection, meta, clock, commission rates and faults."""

    def __init__(self, path: str | Path, account: str = "DU1234567",
                 commission_per_contract: Decimal | None = None):
        self.path = Path(path)
        # One connection guarded by a lock: the IB gateway may call in from its server thread.
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL: a killed process never loses a committed fill (only a power cut could),
        # which is what a simulator's crash tests need, at a fraction of FULL's fsyncs.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'orders_by_ref'").fetchone():
            # an older file's orderRefs were unique for good; like IB's, they are unique only among the
            # orders the exchange still remembers (broker/simexchange.py, `_remembered_ref`)
            self._db.execute("DROP INDEX orders_by_ref")
        with self._tx() as c:
            stored = self._meta(c, "account")
            if stored is None:
                import secrets  # here: only a new exchange draws its ids

                self._set_meta(c, "schema", SCHEMA_VERSION)
                self._set_meta(c, "account", account)
                self._set_meta(c, "exec_prefix", secrets.token_hex(4))
                self._set_meta(c, "next_exec", "1")
                self._set_meta(c, "next_order_id", "1")
                # Perm ids start somewhere random so that two files rarely share one.
                self._set_meta(c, "next_perm_id", str(100_000_000 + secrets.randbelow(10**8)))
                c.execute("INSERT INTO commission_rates VALUES ('*', ?)",
                          (str(DEFAULT_COMMISSION),))
            if commission_per_contract is not None and stored in (None, account):
                self._set_rate(c, "*", commission_per_contract)
        if stored not in (None, account):  # environments never share a file
            self._db.close()
            raise BrokerError(f"{self.path} holds account {stored}, not {account}")
        self.account = account

    @classmethod
    def configured(cls, path: str | Path, account: str, per_contract: Decimal, per_share: Decimal,
                   shares: list[str]) -> SimStore:
        """The exchange of an environment, its commissions set as its config says: `per_contract`
        the default, `per_share` for each of the `shares` (engine/setup/session.py)."""
        exchange = cls(path, account, commission_per_contract=per_contract)
        for name in shares:
            exchange.set_commission(per_share, name)
        return exchange

    @classmethod
    def open_existing(cls, path: str | Path, default_account: str = "DU1234567") -> SimStore:
        """An exchange already kept in `path`, under the account it holds (`default_account` if none)."""
        with sqlite3.connect(path) as raw:
            stored = raw.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
        return cls(path, stored[0] if stored else default_account)

    # -- plumbing --

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SimStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _meta(c, key: str) -> str | None:
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _set_meta(c, key: str, value: str) -> None:
        c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _counter(self, c, key: str) -> int:
        value = int(self._meta(c, key))
        self._set_meta(c, key, str(value + 1))
        return value

    @staticmethod
    def _set_rate(c, code: str, per_contract: Decimal) -> None:
        rate = str(Decimal(per_contract))
        # written only when it changes: every command that opens the exchange sets the configured
        # rates, and a write per command would cost a checkpoint (an fsync) when it closes
        if c.execute("SELECT 1 FROM commission_rates WHERE code = ? AND per_contract = ?", (code, rate)).fetchone() is None:
            c.execute("INSERT OR REPLACE INTO commission_rates VALUES (?, ?)", (code, rate))

    # -- clock --

    def _now(self, c) -> dt.datetime:
        fixed = self._meta(c, "clock")
        return _parse_ts(fixed) if fixed else dt.datetime.now(UTC)

    def now(self) -> dt.datetime:
        with self._tx() as c:
            return self._now(c)

    def set_clock(self, when: dt.datetime | None) -> None:
        """Freeze the simulated clock at `when` (None: follow the real clock again)."""
        with self._tx() as c:
            if when is None:
                c.execute("DELETE FROM meta WHERE key = 'clock'")
            else:
                self._set_meta(c, "clock", _ts(when))
            self._time_passed(c)

    def advance_clock(self, delta: dt.timedelta) -> dt.datetime:
        with self._tx() as c:
            when = self._now(c) + delta
            self._set_meta(c, "clock", _ts(when))
            self._time_passed(c)
            return when

    # -- the broker's day: how far back it remembers --

    def _memory_since(self, c, now: dt.datetime | None = None) -> dt.datetime | None:
        zone = self._meta(c, "day_window")
        if not zone:
            return None
        from tradeledger.broker.base import day_start

        return day_start(now or self._now(c), zone)

    def memory_since(self, now: dt.datetime | None = None) -> dt.datetime | None:
        """The start of the exchange's day at `now` (default its clock) when it keeps a day window
        (`set_day_window`): it then reports no order done and no execution made before it, as IB
        does. None (the default): it remembers everything."""
        with self._tx() as c:
            return self._memory_since(c, now)

    def day_window(self) -> str | None:
        with self._tx() as c:
            return self._meta(c, "day_window")

    def set_day_window(self, zone: str | None) -> None:
        """Forget, like IB, every order done and every execution made before midnight in `zone`
        (an IANA name) of the exchange's clock; None: remember everything again."""
        with self._tx() as c:
            if zone is None:
                c.execute("DELETE FROM meta WHERE key = 'day_window'")
            else:
                from tradeledger.broker.base import check_zone

                self._set_meta(c, "day_window", check_zone(zone, "day window"))

    def _time_passed(self, c) -> None:
        """What falls due when the clock moves, in the same transaction (the exchange pays its
        dividends whose pay date has come)."""

    def set_commission(self, per_contract: Decimal, code: str | None = None) -> None:
        """Commission per contract (or share) for `code`, or the default for all codes."""
        with self._tx() as c:
            self._set_rate(c, code or "*", per_contract)

    # -- faults --

    def _add_fault(self, kind: str, arg: dict, remaining: int = 1) -> None:
        if remaining < 1:
            raise ValueError("a fault must apply at least once")
        with self._tx() as c:
            c.execute("INSERT INTO faults (kind, arg, remaining) VALUES (?, ?, ?)",
                      (kind, json.dumps(arg), remaining))

    def _take_fault(self, c, *kinds: str) -> dict | None:
        """Consume one use of the oldest pending fault of these kinds."""
        marks = ",".join("?" * len(kinds))
        r = c.execute(f"SELECT * FROM faults WHERE kind IN ({marks}) ORDER BY id LIMIT 1",
                      kinds).fetchone()
        if r is None:
            return None
        if r["remaining"] <= 1:
            c.execute("DELETE FROM faults WHERE id = ?", (r["id"],))
        else:
            c.execute("UPDATE faults SET remaining = remaining - 1 WHERE id = ?", (r["id"],))
        return {"kind": r["kind"], **json.loads(r["arg"])}

    def take_call_fault(self) -> str | None:
        """For broker faces: consume one disconnect or lost-reply fault, returning its kind."""
        with self._tx() as c:
            f = self._take_fault(c, "disconnect", "lost_reply")
            return None if f is None else f["kind"]

    def disconnect_pending(self) -> bool:
        with self._tx() as c:
            return c.execute("SELECT 1 FROM faults WHERE kind = 'disconnect'").fetchone() \
                is not None

    def pending_faults(self) -> list[tuple[str, dict, int]]:
        with self._tx() as c:
            return [(r["kind"], json.loads(r["arg"]), r["remaining"])
                    for r in c.execute("SELECT * FROM faults ORDER BY id")]


REFUSED = "simulated: connection refused (disconnect fault)"


def connect(store: SimStore) -> None:
    """What connecting to the simulated broker does (SimBroker.connect): a pending disconnect or
    lost-reply fault refuses it, and is consumed."""
    if store.take_call_fault() is not None:
        raise BrokerDisconnected(REFUSED)
