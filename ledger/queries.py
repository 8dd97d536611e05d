"""The Ledger's read queries for the engine and the reports: the ledger's tables are read here, never outside ledger/.

`LedgerQueries` is a mixin of `Ledger` (store.py): every method takes an optional connection
(the caller's transaction, so a decision reads what it will book against) and otherwise reads in
a read transaction of its own. What they return is plain data (names, Decimals, datetimes), never
the ledger's rows, except `moves`, whose stored numbers are returned as they are stored (nano
units) for the replay in reports/series.py, which reads a whole ledger at once.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from decimal import Decimal
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled

UTC = dt.timezone.utc


class LedgerQueries:
    engine: sa.engine.Engine

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with read_connection(self.engine) as c:
                yield c

    def has_account(self, name: str, conn: Connection | None = None) -> bool:
        """Has the account ever been opened?"""
        a = schema.account
        with self._reading(conn) as c:
            return c.execute(sa.select(a.c.id).where(a.c.name == name)).first() is not None

    def commodity_names(self, kind: str | None = None, conn: Connection | None = None) -> set[str]:
        """The names of the commodities the ledger knows (of one kind: currency, future, share)."""
        t = schema.commodity
        query = sa.select(t.c.name) if kind is None else sa.select(t.c.name).where(t.c.kind == kind)
        with self._reading(conn) as c:
            return set(c.execute(query).scalars())

    def commodity(self, name: str, conn: Connection | None = None):
        """The commodity of that name (a `Commodity`), or None when the ledger never booked it."""
        return next((c for c in self.commodities(conn) if c.name == name), None)

    def latest_price(self, commodity: str, conn: Connection | None = None) -> Decimal | None:
        """The newest price directive recorded for a commodity (share marks), or None."""
        p = schema.price
        with self._reading(conn) as c:
            number = c.execute(sa.select(p.c.number).where(p.c.commodity == commodity)
                               .order_by(p.c.date.desc()).limit(1)).scalar()
        return None if number is None else from_scaled(number)

    def last_posting_time(self, commodity: str, conn: Connection | None = None) -> dt.datetime | None:
        """The time of the newest posting in a commodity, or None."""
        p = schema.posting
        with self._reading(conn) as c:
            ts = c.execute(sa.select(sa.func.max(p.c.ts)).where(p.c.commodity == commodity)).scalar()
        return _parse(ts)

    def postings_after(self, commodity: str, txn_id: int, conn: Connection | None = None) -> int:
        """How many postings in a commodity belong to entries booked after entry `txn_id`."""
        p = schema.posting
        with self._reading(conn) as c:
            return c.execute(sa.select(sa.func.count()).select_from(p).where(
                p.c.commodity == commodity, p.c.txn_id > txn_id)).scalar()

    def entry_times(self, conn: Connection | None = None) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The times of the first and the newest entry (None, None for an empty ledger)."""
        t = schema.txn
        with self._reading(conn) as c:
            first, last = c.execute(sa.select(sa.func.min(t.c.ts), sa.func.max(t.c.ts))).one()
        return _parse(first), _parse(last)

    def reversed_by(self, txn_id: int, conn: Connection | None = None) -> int | None:
        """The entry that reverses entry `txn_id`, if one does."""
        t = schema.txn
        with self._reading(conn) as c:
            return c.execute(sa.select(t.c.id).where(t.c.reverses_id == txn_id)).scalar()

    def ids_by_key(self, keys, conn: Connection | None = None) -> dict[str, int]:
        """Idempotency key -> the entry booked under it, for those of `keys` that are booked."""
        t = schema.txn
        keys = sorted(set(keys))
        out: dict[str, int] = {}
        with self._reading(conn) as c:
            for start in range(0, len(keys), 500):
                out.update(c.execute(sa.select(t.c.idem_key, t.c.id).where(t.c.idem_key.in_(keys[start:start + 500]))).all())
        return out

    def entry_ids_on(self, day: dt.date, kinds: tuple[str, ...], conn: Connection | None = None) -> list[int]:
        """The entries of `kinds` dated on `day` (UTC), in booking order."""
        t = schema.txn
        with self._reading(conn) as c:
            return list(c.execute(sa.select(t.c.id).where(
                t.c.ts >= day.isoformat(), t.c.ts < (day + dt.timedelta(days=1)).isoformat(),
                t.c.kind.in_(kinds)).order_by(t.c.id)).scalars())

    def keys_of_kind(self, kinds: tuple[str, ...], conn: Connection | None = None) -> dict[int, str]:
        """Entry id -> its idempotency key, for every keyed entry of `kinds`, in booking order."""
        t = schema.txn
        with self._reading(conn) as c:
            return dict(c.execute(sa.select(t.c.id, t.c.idem_key).where(
                t.c.kind.in_(kinds), t.c.idem_key.is_not(None)).order_by(t.c.id)).all())

    def reversals(self, txn_ids, conn: Connection | None = None) -> dict[int, int]:
        """Entry id -> the entry that reverses it, for those of `txn_ids` that are reversed."""
        t = schema.txn
        ids = sorted({i for i in txn_ids if i is not None})
        out: dict[int, int] = {}
        with self._reading(conn) as c:
            for start in range(0, len(ids), 500):
                out.update(c.execute(sa.select(t.c.reverses_id, t.c.id).where(
                    t.c.reverses_id.in_(ids[start:start + 500]))).all())
        return out

    def commodities_ever_in(self, prefix: str, accounts: tuple[str, ...] = (),
                            conn: Connection | None = None) -> set[str]:
        """Every commodity an account under `prefix` (or one of `accounts`) ever had a posting in."""
        p, a = schema.posting, schema.account
        ids = sa.select(a.c.id).where(sa.or_(a.c.name.like(prefix + "%"), a.c.name.in_(accounts)))
        with self._reading(conn) as c:
            return set(c.execute(sa.select(p.c.commodity).where(p.c.account_id.in_(ids)).distinct()).scalars())

    def entries_mark(self, conn: Connection | None = None) -> tuple[int | None, int]:
        """(newest entry id, number of entries): changes whenever an entry is booked."""
        t = schema.txn
        with self._reading(conn) as c:
            newest, count = c.execute(sa.select(sa.func.max(t.c.id), sa.func.count())).one()
        return newest, count

    def sizes(self, conn: Connection | None = None) -> tuple[int, int, int | None]:
        """(entries, postings, newest entry id): what a backup's manifest records."""
        t, p = schema.txn, schema.posting
        with self._reading(conn) as c:
            entries, newest = c.execute(sa.select(sa.func.count(), sa.func.max(t.c.id))).one()
            postings = c.execute(sa.select(sa.func.count()).select_from(p)).scalar()
        return int(entries), int(postings), newest

    def entries_by_kind(self, conn: Connection | None = None) -> list[tuple[str, int]]:
        """How many entries of each kind (fill, settlement, ...) the ledger holds."""
        t = schema.txn
        with self._reading(conn) as c:
            return [(kind, int(n)) for kind, n in c.execute(sa.select(t.c.kind, sa.func.count()).group_by(t.c.kind))]

    def entry_sums(self, txn_ids, prefix: str,
                   conn: Connection | None = None) -> dict[int, dict[tuple[str, str], Decimal]]:
        """What each of the entries `txn_ids` booked in the accounts under `prefix`, read back from
        its postings: entry id -> (account, commodity) -> units (entries with none are left out).
        A report that shows an entry's parts reads them here, never splits a total again."""
        p, a = schema.posting, schema.account
        ids = sorted({i for i in txn_ids if i is not None})
        out: dict[int, dict[tuple[str, str], Decimal]] = {}
        with self._reading(conn) as c:
            for start in range(0, len(ids), 500):
                query = (sa.select(p.c.txn_id, a.c.name, p.c.commodity, sa.func.sum(p.c.units))
                         .join(a, a.c.id == p.c.account_id)
                         .where(p.c.txn_id.in_(ids[start:start + 500]), a.c.name.like(prefix + "%"))
                         .group_by(p.c.txn_id, a.c.name, p.c.commodity))
                for txn_id, account, commodity, units in c.execute(query):
                    if units:
                        out.setdefault(txn_id, {})[(account, commodity)] = from_scaled(int(units))
        return out

    def moves(self, prefixes: tuple[str, ...], accounts: tuple[str, ...] = (),
              conn: Connection | None = None) -> list[tuple]:
        """Every posting in an account under one of `prefixes` (or one of `accounts`), in booking
        order: (ts, entry id, account, commodity, units, weight, cost, entry meta) with the
        numbers as stored (nano units; cost as its stored JSON)."""
        p, t, a = schema.posting, schema.txn, schema.account
        query = (sa.select(p.c.ts, p.c.txn_id, a.c.name, p.c.commodity, p.c.units, p.c.weight, p.c.cost, t.c.meta)
                 .join(t, t.c.id == p.c.txn_id).join(a, a.c.id == p.c.account_id)
                 .where(sa.or_(*(a.c.name.like(prefix + "%") for prefix in prefixes), a.c.name.in_(accounts)))
                 .order_by(p.c.ts, p.c.txn_id, p.c.id))
        with self._reading(conn) as c:
            return [tuple(r) for r in c.execute(query).all()]


def _parse(ts: str | None) -> dt.datetime | None:
    return None if not ts else dt.datetime.fromisoformat(ts).replace(tzinfo=UTC)
