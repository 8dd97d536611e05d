"""The ledger in its database: opening accounts, booking entries exactly once, and the queries.

`Ledger` wraps an engine. Every write happens inside one database transaction, either its own
or a connection handed in by the caller, so that an engine decision and the ledger entry that
records it commit together or not at all.

Booking (`book`) validates the entry (pure, `model.validate`), resolves its accounts, and
writes the postings then the header; the database re-checks the balance itself. An entry with
an idempotency key is booked at most once: the same key with the same content returns the
existing entry, a different content raises `IdempotencyConflict`.

Queries return plain dicts keyed by (account name, commodity) with Decimal values; they are
the same queries the CLI, the reports and the beancount check use.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.model import (
    Account, Amount, Cost, IdempotencyConflict, LedgerError, Posting, Transaction,
    BOOKING_METHODS, is_valid_account, is_valid_commodity, reversal_of, validate,
)
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.queries import LedgerQueries
from tradeledger.ledger.sums import FACTOR, combine, unit_sums
from tradeledger.ledger.rows import Prepared, fingerprint, fmt_ts, meta_json, prepare

UTC = dt.timezone.utc
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)  # the TS_FORMAT text, fast


def ts_bound(value: dt.datetime | dt.date | None) -> str | None:
    """A time or a date (meaning its midnight UTC) as a comparable text bound."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return fmt_ts(value)
    return value.isoformat()


@dataclass(frozen=True)
class Booked:
    """The outcome of a booking: the entry's id, and whether this call created it."""

    id: int
    created: bool


@dataclass(frozen=True)
class Commodity:
    name: str
    kind: str  # future, share, currency, other
    currency: str | None
    multiplier: Decimal
    first_date: dt.date


class Ledger(LedgerQueries):
    def __init__(self, engine: Engine):
        self.engine = engine
        # Caches of rows that are never deleted or changed: accounts and commodities. A row seen
        # inside a transaction is cached only once that transaction commits (a rollback would
        # otherwise leave the cache naming a row that does not exist).
        self._account_ids: dict[str, int] = {}
        self._accounts: dict[str, Account] = {}
        self._commodities: dict[str, Commodity] = {}
        sa.event.listen(engine, "commit", self._on_commit)
        sa.event.listen(engine, "rollback", self._on_rollback)

    def _pending(self, c: Connection) -> dict:
        """Rows seen in the connection's current transaction, cached for good when it commits."""
        transaction = c.get_transaction()
        entry = c.info.get(("tl_cache", id(self)))
        if entry is None or entry[0] is not transaction:  # never trust what another transaction saw
            entry = (transaction, {})
            c.info[("tl_cache", id(self))] = entry
        return entry[1]

    def _remember(self, c: Connection, key: tuple, value, apply) -> None:
        if c.in_transaction():
            self._pending(c)[key] = (*value, apply)
        else:
            apply()

    def _on_commit(self, c: Connection) -> None:
        transaction, seen = c.info.pop(("tl_cache", id(self)), (None, {}))
        if transaction is c.get_transaction():
            for *_value, apply in seen.values():
                apply()

    def _on_rollback(self, c: Connection) -> None:
        # A rollback after the connection was lost (a terminated PostgreSQL backend) runs on an
        # invalidated connection whose `info` cannot be reached (PendingRollbackError): its
        # pending rows died with it, and touching it would hide the real error from the user.
        if c.invalidated or c.closed:
            return
        try:
            c.info.pop(("tl_cache", id(self)), None)
        except sa.exc.SQLAlchemyError:
            pass

    # -- accounts and commodities ------------------------------------------------------------

    def open_account(self, account: Account, conn: Connection | None = None) -> int:
        """Open an account; opening it again with the same definition is a no-op."""
        if not is_valid_account(account.name):
            raise LedgerError(f"invalid account name {account.name!r}")
        if account.booking not in BOOKING_METHODS:
            raise LedgerError(f"invalid booking method {account.booking!r}")
        if self._accounts.get(account.name) == account:  # accounts are never deleted: a safe cache
            return self._account_ids[account.name]
        with _tx(self.engine, conn) as c:
            seen = self._pending(c).get(("account", account.name))
            if seen is not None and seen[1] == account:
                return seen[0]
            row = c.execute(sa.select(schema.account).where(schema.account.c.name == account.name)).first()
            if row is not None:
                existing = _account_from_row(row)
                if existing != account:
                    raise LedgerError(f"account {account.name} is already open with another definition")
                self._remember(c, ("account", account.name), (row.id, existing),
                               lambda: self._cache_account(row.id, existing))
                return row.id
            result = c.execute(schema.account.insert().values(
                name=account.name, open_date=account.open_date.isoformat(),
                close_date=account.close_date and account.close_date.isoformat(),
                currencies=",".join(account.currencies), booking=account.booking,
            ))
            new_id = result.inserted_primary_key[0]
            self._remember(c, ("account", account.name), (new_id, account),
                           lambda: self._cache_account(new_id, account))
            return new_id

    def accounts(self) -> list[Account]:
        with read_connection(self.engine) as c:
            rows = c.execute(sa.select(schema.account).order_by(schema.account.c.name)).all()
        return [_account_from_row(r) for r in rows]

    def _cache_account(self, account_id: int, account: Account) -> None:
        self._account_ids[account.name], self._accounts[account.name] = account_id, account

    def ensure_commodity(self, commodity: Commodity, conn: Connection | None = None) -> None:
        if not is_valid_commodity(commodity.name):
            raise LedgerError(f"invalid commodity name {commodity.name!r}")
        if self._commodities.get(commodity.name) == commodity:
            return
        with _tx(self.engine, conn) as c:
            seen = self._pending(c).get(("commodity", commodity.name))
            if seen is not None and seen[0] == commodity:
                return
            row = c.execute(sa.select(schema.commodity).where(schema.commodity.c.name == commodity.name)).first()
            if row is None:
                c.execute(schema.commodity.insert().values(
                    name=commodity.name, kind=commodity.kind, currency=commodity.currency,
                    multiplier=str(commodity.multiplier), first_date=commodity.first_date.isoformat(),
                ))
            elif (Decimal(row.multiplier), row.kind, row.currency) != (commodity.multiplier, commodity.kind,
                                                                      commodity.currency):
                raise LedgerError(
                    f"commodity {commodity.name} is booked as {row.kind} in {row.currency or '-'} with multiplier "
                    f"{Decimal(row.multiplier)}, not {commodity.kind} in {commodity.currency or '-'} with multiplier "
                    f"{commodity.multiplier}: a booked commodity never changes; put its definition back in "
                    "config.toml, or configure a new instrument")
            else:
                self._remember(c, ("commodity", commodity.name), (commodity,),
                               lambda: self._commodities.__setitem__(commodity.name, commodity))

    def commodities(self, conn: Connection | None = None) -> list[Commodity]:
        with _read(self.engine, conn) as c:
            rows = c.execute(sa.select(schema.commodity).order_by(schema.commodity.c.name)).all()
        return [Commodity(r.name, r.kind, r.currency, Decimal(r.multiplier),
                          dt.date.fromisoformat(r.first_date)) for r in rows]

    def set_price(self, commodity: str, date: dt.date, number: Decimal, currency: str,
                  conn: Connection | None = None) -> None:
        """Record a price directive for the export (share marks); the latest write wins."""
        table = schema.price
        with _tx(self.engine, conn) as c:
            c.execute(table.delete().where(table.c.commodity == commodity, table.c.date == date.isoformat(),
                                           table.c.currency == currency))
            c.execute(table.insert().values(commodity=commodity, date=date.isoformat(), currency=currency,
                                            number=to_scaled(number, f"price of {commodity}")))

    def prices(self) -> list[tuple[dt.date, str, Decimal, str]]:
        t = schema.price
        with read_connection(self.engine) as c:
            rows = c.execute(sa.select(t).order_by(t.c.date, t.c.commodity)).all()
        return [(dt.date.fromisoformat(r.date), r.commodity, from_scaled(r.number), r.currency) for r in rows]

    # -- booking ------------------------------------------------------------------------------

    def book(self, txn: Transaction, conn: Connection | None = None) -> Booked:
        if conn is None:  # durable booking, one entry per commit: straight to the fast path
            ready = prepare(txn)
            if ready is not None and not ready.labelled and self._book_own([txn], [ready], results := []):
                return results[0]
        return self.book_many([txn], conn)[0]

    def book_many(self, txns: Iterable[Transaction], conn: Connection | None = None,
                  new: bool = False) -> list[Booked]:
        """Book entries in one database transaction; replays return the existing ids.

        The fast path writes positional rows on the raw DB-API cursor and lets the unique index
        on the idempotency key find a replay; on any refusal from the database (a replay, a
        conflict, a rule) it undoes its rows and the general path below books or refuses the
        entries with its usual answers. A transaction it opens itself is simply rolled back;
        inside the caller's transaction a savepoint bounds the attempt.

        `new=True` (in the caller's transaction) says the caller knows none of the entries is
        booked yet (a fill sync's chunk): no savepoint is taken (SQLite copies every page a
        savepoint's statements touch into a journal of its own, which costs as much as the
        inserts), and a refusal by the database raises `LedgerError`: the caller's transaction
        is then to be rolled back, as the one-by-one path it falls back to expects."""
        txns = list(txns)
        prepared = [prepare(txn) for txn in txns]
        for txn, ready in zip(txns, prepared):
            if ready is None:
                validate(txn)  # raises what is wrong; or a number the fast path leaves alone
        # Labelled lots (shares) are checked against the ledger, which needs to know first whether
        # an entry is a replay: those entries take the general path.
        fast = all(ready is not None and not ready.labelled for ready in prepared) and _distinct_keys(txns)
        if conn is None:
            if fast and self._book_own(txns, prepared, results := []):
                return results
            with self.engine.begin() as c:
                return self._book_general(c, txns)
        if fast and new:
            cursor = conn.connection.cursor()
            try:
                ids = self._insert_rows(cursor, conn.dialect, _allocate_ids(conn, len(txns)), txns, prepared,
                                        refused=LedgerError)
            except _Retry:  # an account not cached yet: refused before anything was written
                pass
            else:
                return [Booked(txn_id, True) for txn_id in ids]
        elif fast:
            cursor = conn.connection.cursor()
            cursor.execute("SAVEPOINT tl_book")
            try:
                ids = self._insert_rows(cursor, conn.dialect, _allocate_ids(conn, len(txns)), txns, prepared)
            except _Retry:
                cursor.execute("ROLLBACK TO SAVEPOINT tl_book")
                cursor.execute("RELEASE SAVEPOINT tl_book")
            else:
                cursor.execute("RELEASE SAVEPOINT tl_book")
                return [Booked(txn_id, True) for txn_id in ids]
        return self._book_general(conn, txns)

    def book_new(self, txn: Transaction, conn: Connection) -> Booked:
        """Book one entry, in the caller's transaction, that the caller found not booked under its
        own locks (a fill whose `fill` row does not exist): `book` without its savepoint.

        Its key is looked up first (one indexed read, far cheaper than a savepoint, which makes
        SQLite copy every page its statements touch into a journal of its own): an entry booked
        after all (a ledger restored from an export without its fill rows) gets `book`'s answers
        (the existing id, or `IdempotencyConflict`). A refusal by the database raises
        `LedgerError`, after which the caller's transaction is to be rolled back, whole: what it
        wrote before this entry is not undone here."""
        if txn.key is not None:
            cursor = conn.connection.cursor()
            try:
                cursor.execute("SELECT 1 FROM txn WHERE idem_key = ?".replace("?", _PARAMS[conn.dialect.paramstyle]),
                               (txn.key,))
                booked = cursor.fetchone() is not None
            finally:
                cursor.close()
            if booked:
                return self._book_general(conn, [txn])[0]
        return self.book_many([txn], conn, new=True)[0]

    def import_entries(self, entries, expected: int | None = None, before=None, **options):
        """A bulk import: every entry booked in one transaction, all or nothing, its rules checked
        over the staged set (`ledger/bulk.py`); entries already booked (same key, same content)
        are skipped. Entries are `Transaction`s, or `bulk.Importing` for a reversal named by key."""
        from tradeledger.ledger import bulk

        return bulk.import_entries(self, entries, expected=expected, before=before, **options)

    def _book_own(self, txns: list[Transaction], prepared: list[Prepared], results: list[Booked]) -> bool:
        """The fast path in a transaction of its own, on a raw pooled connection (no SQLAlchemy
        statement, event or result in the way: one BEGIN, one id query, two executemany, COMMIT).
        False, with nothing written, when the database refused: the caller books generally."""
        dialect = self.engine.dialect
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if dialect.name == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE")
                    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM txn")
                    first = cursor.fetchone()[0] + 1
                    ids = list(range(first, first + len(txns)))
                else:
                    cursor.execute("SELECT nextval('txn_id_seq') FROM generate_series(1, %s)", (len(txns),))
                    ids = [row[0] for row in cursor.fetchall()]
                self._insert_rows(cursor, dialect, ids, txns, prepared)
                raw.commit() if dialect.name != "sqlite" else cursor.execute("COMMIT")
            except (_Retry, dialect.loaded_dbapi.Error):
                raw.rollback()
                return False
            finally:
                cursor.close()
        finally:
            raw.close()
        results.extend(Booked(txn_id, True) for txn_id in ids)
        return True

    def _insert_rows(self, cursor, dialect, ids: list[int], txns: list[Transaction],
                     prepared: list[Prepared], refused: type[Exception] | None = None) -> list[int]:
        """Insert every entry as new; `_Retry` when an account is not cached (before anything is
        written: the general path looks it up and says what is wrong), or when the database
        refuses (then `refused` instead, when given, with the database's reason)."""
        booked_at = fmt_ts(dt.datetime.now(UTC))
        postings, headers = [], []
        accounts, account_ids = self._accounts, self._account_ids
        for txn_id, txn, ready in zip(ids, txns, prepared):
            ts, date = fmt_ts(txn.time), txn.date
            for row in ready.postings:
                account = accounts.get(row[0])
                if (account is None or date < account.open_date
                        or (account.close_date and date > account.close_date)
                        or (account.currencies and row[1] not in account.currencies)):
                    raise _Retry()
                postings.append((txn_id, ts, account_ids[row[0]], *row[1:]))
            headers.append((txn_id, ts, txn.kind, txn.narration, ",".join(txn.links),
                            meta_json(txn.meta), txn.key,
                            fingerprint(txn, ready), txn.reverses, booked_at))
        mark = _PARAMS[dialect.paramstyle]
        try:
            cursor.executemany(_INSERT_POSTING.replace("?", mark), postings)
            cursor.executemany(_INSERT_TXN.replace("?", mark), headers)
            if dialect.name == "postgresql" and _fold_due(ids):
                cursor.execute("SELECT tl_fold_balances()")  # see fold_balances
        except dialect.loaded_dbapi.Error as exc:
            if refused is not None:
                raise refused(f"the database refused the entries: {_db_reason(exc)}") from None
            raise _Retry() from None
        return ids

    def _book_general(self, c: Connection, txns: list[Transaction]) -> list[Booked]:
        existing = self._existing_by_key(c, [t.key for t in txns if t.key])
        results: list[Booked | None] = [None] * len(txns)
        fresh: list[tuple[int, Transaction]] = []
        seen_keys: dict[str, int] = {}
        for i, txn in enumerate(txns):
            if txn.key and txn.key in existing:
                txn_id, fingerprint = existing[txn.key]
                _same_or_conflict(txn, fingerprint)
                results[i] = Booked(txn_id, False)
            elif txn.key and txn.key in seen_keys:
                j = seen_keys[txn.key]
                _same_or_conflict(txn, txns[j].fingerprint())
            else:
                if txn.key:
                    seen_keys[txn.key] = i
                fresh.append((i, txn))
        if fresh:
            ids = _allocate_ids(c, len(fresh))
            self._insert(c, [(txn_id, txn) for txn_id, (_, txn) in zip(ids, fresh)])
            for txn_id, (i, _) in zip(ids, fresh):
                results[i] = Booked(txn_id, True)
        for i, txn in enumerate(txns):
            if results[i] is None:  # a duplicate key inside this batch
                results[i] = results[seen_keys[txn.key]]
        return results  # type: ignore[return-value]

    def reverse(self, txn_id: int, time: dt.datetime, reason: str, key: str | None = None,
                conn: Connection | None = None) -> Booked:
        """Book the exact opposite of an entry, linked to it; an entry is reversed at most once."""
        if not reason.strip():
            raise LedgerError("a reversal needs a reason")
        with _tx(self.engine, conn) as c:
            original = self.get(txn_id, c)
            already = c.execute(sa.select(schema.txn.c.id).where(schema.txn.c.reverses_id == txn_id)).first()
            if already is not None and key is None:
                raise LedgerError(f"entry {txn_id} is already reversed by entry {already.id}")
            if original.kind == "reversal":
                raise LedgerError(f"entry {txn_id} is itself a reversal; book a new entry instead")
            return self.book(reversal_of(txn_id, original, time, reason, key), c)

    def _existing_by_key(self, c: Connection, keys: list[str]) -> dict[str, tuple[int, str]]:
        found: dict[str, tuple[int, str]] = {}
        t = schema.txn
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = c.execute(sa.select(t.c.idem_key, t.c.id, t.c.fingerprint).where(t.c.idem_key.in_(chunk)))
            found.update({k: (i, f) for k, i, f in rows})
        return found

    def _check_lots(self, c: Connection, entries: list[tuple[int, Transaction]],
                    state: tuple[dict, dict] | None = None) -> None:
        """Refuse a reduction of a labelled lot (shares) that the lot cannot cover.

        Beancount books a posting against a lot only if the lot holds enough of the same sign;
        otherwise it refuses the whole ledger file ("not enough lots"). The engine always reduces
        what it read from the ledger, but a reversal of a purchase whose lot was since sold, or a
        hand-made entry, could break the export: so the ledger checks, in the same transaction.
        (Unlabelled lots, futures at zero cost, are reduced FIFO and never split here.) `state`
        carries what was read and changed from one call to the next (a bulk import's chunks)."""
        balances, lots = kept_balances(c), kept_lots(c)
        account_balance, lot_balance = state if state is not None else ({}, {})
        for _txn_id, txn in entries:
            for posting in txn.postings:
                cost = posting.cost
                if cost is None or cost.label is None:
                    continue
                account_id = self._account_id(c, posting, txn.date)
                holding = (account_id, posting.commodity)
                lot = holding + (cost,)
                if holding not in account_balance:
                    account_balance[holding] = _kept_total(c, balances, account_id=account_id,
                                                           commodity=posting.commodity)
                if lot not in lot_balance:
                    lot_balance[lot] = _kept_total(
                        c, lots, account_id=account_id, commodity=posting.commodity, cost_label=cost.label,
                        cost=to_scaled(cost.number), cost_currency=cost.currency,
                        cost_date=cost.date.isoformat() if cost.date else "")
                held, in_lot, units = account_balance[holding], lot_balance[lot], posting.units
                reduces = held != 0 and (units > 0) != (held > 0)
                if reduces and (in_lot == 0 or (in_lot > 0) != (held > 0) or abs(units) > abs(in_lot)):
                    raise LedgerError(f"{posting.account}: {units} {posting.commodity} would reduce lot "
                                      f"{cost.label!r} at {cost.number} {cost.currency}, which holds {in_lot}")
                account_balance[holding] = held + units
                lot_balance[lot] = in_lot + units

    def _insert(self, c: Connection, entries: list[tuple[int, Transaction]]) -> None:
        self._check_lots(c, entries)
        booked_at = fmt_ts(dt.datetime.now(UTC))
        postings, headers = [], []
        for txn_id, txn in entries:
            ts = fmt_ts(txn.time)
            for p in txn.postings:
                postings.append(_posting_row(txn_id, ts, self._account_id(c, p, txn.date), p))
            headers.append(dict(
                id=txn_id, ts=ts, kind=txn.kind, narration=txn.narration, links=",".join(txn.links),
                meta=json.dumps(dict(txn.meta), sort_keys=True), idem_key=txn.key,
                fingerprint=txn.fingerprint(), reverses_id=txn.reverses, booked_at=booked_at,
            ))
        try:
            c.execute(schema.posting.insert(), postings)
            c.execute(schema.txn.insert(), headers)
            if _fold_due([txn_id for txn_id, _ in entries]):
                fold_balances(c)
        except (sa.exc.IntegrityError, sa.exc.InternalError) as exc:
            raise LedgerError(f"the database refused the entry: {_db_reason(exc)}") from None

    def _account_id(self, c: Connection, posting: Posting, date: dt.date) -> int:
        name = posting.account
        seen = self._pending(c).get(("account", name))
        if name in self._account_ids:
            account_id, account = self._account_ids[name], self._accounts[name]
        elif seen is not None:
            account_id, account = seen[0], seen[1]
        else:
            row = c.execute(sa.select(schema.account).where(schema.account.c.name == name)).first()
            if row is None:
                raise LedgerError(f"unknown account {name}: open it first")
            account_id, account = row.id, _account_from_row(row)
            self._remember(c, ("account", name), (account_id, account),
                           lambda: self._cache_account(account_id, account))
        if date < account.open_date or (account.close_date and date > account.close_date):
            raise LedgerError(f"account {name} is not open on {date}")
        if account.currencies and posting.commodity not in account.currencies:
            raise LedgerError(f"account {name} does not accept {posting.commodity}")
        return account_id

    # -- reading entries ----------------------------------------------------------------------

    def get(self, txn_id: int, conn: Connection | None = None) -> Transaction:
        with _read(self.engine, conn) as c:
            header = c.execute(sa.select(schema.txn).where(schema.txn.c.id == txn_id)).first()
            if header is None:
                raise LedgerError(f"no entry {txn_id}")
            rows = c.execute(_postings_query().where(schema.posting.c.txn_id == txn_id)
                             .order_by(schema.posting.c.id)).all()  # as booked (a join's order is the planner's)
        return _txn_from_rows(header, rows)

    def reversed_originals(self, conn: Connection | None = None) -> dict[int, str | None]:
        """id -> key (None: it has none) of every entry that a reversal names."""
        t, o = schema.txn, schema.txn.alias("original")
        with _read(self.engine, conn) as c:
            return dict(c.execute(sa.select(o.c.id, o.c.idem_key).join(t, t.c.reverses_id == o.c.id)).all())

    def find_by_key(self, key: str, conn: Connection | None = None) -> int | None:
        with _read(self.engine, conn) as c:
            return c.execute(sa.select(schema.txn.c.id).where(schema.txn.c.idem_key == key)).scalar()

    def entries(self) -> Iterator[tuple[int, Transaction]]:
        """Every entry in booking (id) order, streamed: the export reads the ledger through this.

        Headers and postings are two index-ordered streams merged by transaction id, so memory
        stays flat however big the ledger is.
        """
        t, p = schema.txn, schema.posting
        with read_connection(self.engine) as c1, read_connection(self.engine) as c2:
            headers = c1.execution_options(yield_per=2000).execute(sa.select(t).order_by(t.c.id))
            postings = iter(c2.execution_options(yield_per=10000).execute(
                _postings_query().order_by(p.c.txn_id, p.c.id)))
            pending = next(postings, None)
            for header in headers:
                rows = []
                while pending is not None and pending[0] == header.id:
                    rows.append(pending)
                    pending = next(postings, None)
                yield header.id, _txn_from_rows(header, rows)

    def count(self) -> tuple[int, int]:
        with read_connection(self.engine) as c:
            txns = c.execute(sa.select(sa.func.count()).select_from(schema.txn)).scalar()
            postings = c.execute(sa.select(sa.func.count()).select_from(schema.posting)).scalar()
        return txns, postings

    # -- queries ------------------------------------------------------------------------------

    def balances(self, as_of: dt.datetime | dt.date | None = None, prefix: str | None = None,
                 conn: Connection | None = None, commodity: str | None = None,
                 commodities: Collection[str] | None = None,
                 from_end: bool | None = False) -> dict[tuple[str, str], Decimal]:
        """Units per (account, commodity) including entries up to `as_of` (a date: before it), of
        one commodity or of some.

        Without `as_of` this reads the balances the database maintains (migrations 0011, 0012):
        its cost is the number of accounts, not of postings. With `as_of` it sums the postings
        before it, or (`from_end`) takes the maintained balances less the postings after it: the
        same integers (db verify holds the maintained balances equal to their postings), at the
        cost of the entries after `as_of` instead of those before. `from_end` None: whichever
        side holds fewer entries (two range counts on ix_txn_ts), so that a balance at the end of
        a recent day (the daily report's, valuation.nav's) costs that day and the days since, not
        the history."""
        a = schema.account
        with _read(self.engine, conn) as c:
            bound = None if as_of is None else ts_bound(as_of)
            inclusive = isinstance(as_of, dt.datetime)
            if bound is not None and from_end is None:
                from_end = self._fewer_after(c, bound, inclusive)
            names = dict(c.execute(sa.select(a.c.id, a.c.name)).all())
            wanted = None if prefix is None else [i for i, name in names.items() if name.startswith(prefix)]
            if wanted is not None and not wanted:
                return {}
            ids = list(names) if wanted is None else wanted
            if bound is None or from_end:
                totals = self._summed(c, wanted, commodity, commodities)
                if bound is not None:
                    for key, units in _sums_beside(c, ids, bound, inclusive, after=True).items():
                        totals[key] = totals.get(key, 0) - units
            else:
                totals = _sums_beside(c, ids, bound, inclusive, after=False)
        return {(names[acc], com): from_scaled(total) for (acc, com), total in totals.items()
                if total and (commodity is None or com == commodity) and (commodities is None or com in commodities)}

    @staticmethod
    def _fewer_after(c: Connection, bound: str, inclusive: bool) -> bool:
        """Whether fewer entries lie after the bound than before it: index-only range counts on
        ix_txn_ts, each cut at a limit that grows eightfold until one side is under it, so the
        question costs about the smaller side, not the ledger."""
        t = schema.txn
        sides = (t.c.ts > bound if inclusive else t.c.ts >= bound, t.c.ts <= bound if inclusive else t.c.ts < bound)
        limit = 1024
        while True:
            after, before = (c.execute(sa.select(sa.func.count()).select_from(
                sa.select(t.c.ts).where(side).limit(limit).subquery())).scalar() for side in sides)
            if after < limit or before < limit:
                return after < before
            limit *= 8

    @staticmethod
    def _summed(c: Connection, wanted: list[int] | None, commodity: str | None,
                commodities: Collection[str] | None) -> dict[tuple[int, str], int]:
        """Scaled units per (account id, commodity) over all time: the maintained balances (the
        postings summed on a database that maintains none)."""
        if maintained(c):
            b = kept_balances(c)
            sums = [b.c.whole, b.c.nanos]
            query = sa.select(b.c.account_id, b.c.commodity, *sums)
            column_account, column_commodity = b.c.account_id, b.c.commodity
        else:  # pragma: no cover - every ledger at the schema head maintains them
            p = schema.posting
            sums = unit_sums(p.c.units, c)  # overflow-free on SQLite too (ledger/sums.py)
            query = sa.select(p.c.account_id, p.c.commodity, *sums).group_by(p.c.account_id, p.c.commodity)
            column_account, column_commodity = p.c.account_id, p.c.commodity
        if commodity is not None:
            query = query.where(column_commodity == commodity)
        if commodities is not None:
            query = query.where(column_commodity.in_(sorted(commodities)))
        if wanted is not None:  # read only those accounts' rows (the key leads with the account)
            query = query.where(column_account.in_(wanted))
        return {(row[0], row[1]): combine(row, len(sums)) for row in c.execute(query)}

    def positions(self, prefix: str = "Assets:", conn: Connection | None = None) -> dict[tuple[str, str], Decimal]:
        """Balances in contracts and shares (commodities that are not currencies)."""
        with _read(self.engine, conn) as c:
            currencies = set(c.execute(sa.select(schema.commodity.c.name).where(
                schema.commodity.c.kind == "currency")).scalars())
            balances = self.balances(prefix=prefix, conn=c)
        return {k: v for k, v in balances.items() if k[1] not in currencies}

    def income(self, since: dt.date | dt.datetime | None = None, until: dt.date | dt.datetime | None = None,
               by_day: bool = False, conn: Connection | None = None) -> dict[tuple, Decimal]:
        """Income and expenses per (account, currency[, day]) with since <= time < until.

        Over all time (no bounds, not by day) this reads the maintained balances."""
        p, a = schema.posting, schema.account
        with _read(self.engine, conn) as c:
            accounts = dict(c.execute(sa.select(a.c.id, a.c.name).where(
                sa.or_(a.c.name.like("Income:%"), a.c.name.like("Expenses:%")))).all())
            if not accounts:
                return {}
            if since is None and until is None and not by_day and maintained(c):
                b = kept_balances(c)
                rows = c.execute(sa.select(b.c.account_id, b.c.commodity, b.c.whole, b.c.nanos).where(
                    b.c.account_id.in_(list(accounts)))).all()
                totals = [(acc, com, int(whole) * FACTOR + int(nanos)) for acc, com, whole, nanos in rows]
                return {(accounts[acc], com): from_scaled(total) for acc, com, total in totals if total != 0}
            columns = [p.c.account_id, p.c.commodity]
            if by_day:
                columns.append(sa.func.substr(p.c.ts, 1, 10).label("day"))
            sums = unit_sums(p.c.units, c)
            if c.dialect.name == "sqlite" and (since is not None or until is not None):
                rows = _period_sums_sqlite(c, list(accounts), ts_bound(since), ts_bound(until), by_day)
            else:
                query = (sa.select(*columns, *sums).where(p.c.account_id.in_(list(accounts))).group_by(*columns)
                         .order_by(*columns))  # one order on both backends (status shows it)
                if since is not None:
                    query = query.where(p.c.ts >= ts_bound(since))
                if until is not None:
                    query = query.where(p.c.ts < ts_bound(until))
                rows = c.execute(query).all()
        result: dict[tuple, Decimal] = {}
        for row in rows:
            key = (accounts[row[0]], row[1]) + ((dt.date.fromisoformat(row[2]),) if by_day else ())
            total = combine(row, len(sums))
            if total != 0:
                result[key] = from_scaled(total)
        return result

    def lots(self, account: str, commodity: str, conn: Connection | None = None) -> list[tuple[Cost, Decimal]]:
        """Open lots of a commodity in an account, oldest first: (cost, units), read from the lots
        the database maintains (migrations 0011, 0012), so the cost is the number of lots."""
        a = schema.account
        with _read(self.engine, conn) as c:
            lot = kept_lots(c)
            query = (sa.select(lot.c.cost, lot.c.cost_currency, lot.c.cost_date, lot.c.cost_label, lot.c.first_ts,
                               lot.c.whole, lot.c.nanos)
                     .join(a, a.c.id == lot.c.account_id)
                     .where(a.c.name == account, lot.c.commodity == commodity))
            rows = [(*r[:5], int(r[5]) * FACTOR + int(r[6])) for r in c.execute(query)]
        lots = [(Cost(from_scaled(r[0]), r[1], dt.date.fromisoformat(r[2]) if r[2] else None, r[3] or None),
                 from_scaled(r[5]), r[4])
                for r in rows if r[5] != 0]
        lots.sort(key=lambda lot: (lot[2], lot[0].label or ""))
        return [(cost, units) for cost, units, _ in lots]


# -- helpers ----------------------------------------------------------------------------------

class _tx:
    """Use the caller's connection (its transaction) or open a new transaction."""

    def __init__(self, engine: Engine, conn: Connection | None):
        self.engine, self.conn, self._ctx = engine, conn, None

    def __enter__(self) -> Connection:
        if self.conn is not None:
            return self.conn
        self._ctx = self.engine.begin()
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False


class _read(_tx):
    def __enter__(self) -> Connection:
        if self.conn is not None:
            return self.conn
        self._ctx = read_connection(self.engine)
        return self._ctx.__enter__()


def maintained(c: Connection) -> bool:
    """Whether the database maintains `balance` and `lot_balance`: SQLite directly (migration
    0011), PostgreSQL through per-transaction deltas (0012; see `kept_balances`)."""
    return True


def kept_balances(c: Connection):
    """The maintained balances as a selectable with the columns of `balance` (account_id,
    commodity, whole, nanos): the table itself on SQLite; on PostgreSQL the table plus the deltas
    this statement can see (committed and not folded yet, or this transaction's own), summed in
    the same statement, so in one snapshot."""
    b = schema.balance
    if c.dialect.name == "sqlite":
        return b
    d = schema.balance_delta
    both = sa.union_all(sa.select(b.c.account_id, b.c.commodity, b.c.whole, b.c.nanos),
                        sa.select(d.c.account_id, d.c.commodity, d.c.whole, d.c.nanos)).subquery()
    return (sa.select(both.c.account_id, both.c.commodity, sa.func.sum(both.c.whole).label("whole"),
                      sa.func.sum(both.c.nanos).label("nanos"))
            .group_by(both.c.account_id, both.c.commodity).subquery("kept_balance"))


def kept_lots(c: Connection):
    """The maintained lots as a selectable with the columns of `lot_balance` (see kept_balances)."""
    lot = schema.lot_balance
    if c.dialect.name == "sqlite":
        return lot
    d = schema.lot_delta
    key = ("account_id", "commodity", "cost", "cost_currency", "cost_date", "cost_label")
    both = sa.union_all(*(sa.select(*(t.c[k] for k in key), t.c.whole, t.c.nanos, t.c.first_ts)
                          for t in (lot, d))).subquery()
    return (sa.select(*(both.c[k] for k in key), sa.func.sum(both.c.whole).label("whole"),
                      sa.func.sum(both.c.nanos).label("nanos"), sa.func.min(both.c.first_ts).label("first_ts"))
            .group_by(*(both.c[k] for k in key)).subquery("kept_lot"))


FOLD_EVERY = 16  # entries (by id) between two folds of the PostgreSQL deltas


def _fold_due(ids: list[int]) -> bool:
    """Whether a booking of these entry ids folds the deltas: the one that takes a multiple of
    FOLD_EVERY does, whichever process it is (ids come from one sequence), so the deltas a reader
    adds up stay few (what committed since the last fold) and the fold's cost is spread."""
    return any(i % FOLD_EVERY == 0 for i in ids) or len(ids) >= FOLD_EVERY


def fold_balances(c: Connection) -> None:
    """PostgreSQL: move committed deltas into `balance`/`lot_balance` (migration 0012), unless
    another transaction is doing so (see `_fold_due` for when a booking calls it). Nothing to do on
    SQLite."""
    if c.dialect.name == "postgresql":
        c.exec_driver_sql("SELECT tl_fold_balances()")


def _kept_total(c: Connection, table, **where) -> Decimal:
    """A maintained balance (`kept_balances` or `kept_lots` row matching `where`), 0 when none."""
    row = c.execute(sa.select(table.c.whole, table.c.nanos).where(
        *(table.c[name] == value for name, value in where.items()))).first()
    return from_scaled(0 if row is None else int(row[0]) * FACTOR + int(row[1]))


def _same_or_conflict(txn: Transaction, fingerprint: str) -> None:
    if txn.fingerprint() != fingerprint:
        raise IdempotencyConflict(f"an entry with key {txn.key!r} is already booked with different "
                                  "content; refusing to book it again")


class _Retry(Exception):
    """The database refused the fast path's rows: book through the general path instead."""


def _distinct_keys(txns: list[Transaction]) -> bool:
    keys = [txn.key for txn in txns if txn.key]
    return len(keys) == len(set(keys))


_PARAMS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_INSERT_POSTING = ("INSERT INTO posting (txn_id, ts, account_id, commodity, units, cost, cost_currency, cost_date, "
                   "cost_label, price, price_currency, weight, weight_currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_TXN = ("INSERT INTO txn (id, ts, kind, narration, links, meta, idem_key, fingerprint, reverses_id, booked_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _sums_beside(c: Connection, account_ids: list[int], bound: str, inclusive: bool,
                 after: bool) -> dict[tuple[int, str], int]:
    """Scaled units per (account id, commodity) of these accounts' postings before `bound` (up to
    it, `inclusive`), or after it (`after`: from it on, or past it when `inclusive`), read along
    ix_posting_period (account, time): a range per account. On SQLite the index is named
    (`_period_sums_sqlite` says why: for the GROUP BY's order it scanned ix_posting_commodity,
    every posting of the ledger, whichever side was asked)."""
    if not account_ids:
        return {}
    sqlite = c.dialect.name == "sqlite"
    hint = " INDEXED BY ix_posting_period" if sqlite else ""
    sums = (f"SUM(units / {FACTOR}), SUM(units % {FACTOR})" if sqlite
            else f"div(SUM(units), {FACTOR}), mod(SUM(units), {FACTOR})")
    side = (">" if inclusive else ">=") if after else ("<=" if inclusive else "<")
    marks = ", ".join(f":a{i}" for i in range(len(account_ids)))
    sql = (f"SELECT account_id, commodity, {sums} FROM posting{hint} WHERE account_id IN ({marks}) "
           f"AND ts {side} :bound GROUP BY account_id, commodity")
    params = {f"a{i}": account_id for i, account_id in enumerate(account_ids)} | {"bound": bound}
    return {(account_id, com): int(whole) * FACTOR + int(rest)
            for account_id, com, whole, rest in c.execute(sa.text(sql), params)}


def _period_sums_sqlite(c: Connection, account_ids: list[int], since: str | None, until: str | None,
                        by_day: bool) -> list[tuple]:
    """`income`'s sums over a period on SQLite, read along ix_posting_period (account, time): for
    the GROUP BY's order SQLite took ix_posting_balance (until migration 0014 dropped it) and read
    every posting of the accounts (status's P&L of today: 9 s at 10M postings); the hint keeps the
    range whatever index the statistics favour, and SQLAlchemy's SQLite dialect renders none.
    Columns as the Core query's: account id, commodity[, day], whole, nanos."""
    day = ", substr(ts, 1, 10)" if by_day else ""
    bounds = (" AND ts >= :since" if since is not None else "") + (" AND ts < :until" if until is not None else "")
    marks = ", ".join(f":a{i}" for i in range(len(account_ids)))
    sql = (f"SELECT account_id, commodity{day}, SUM(units / {FACTOR}), SUM(units % {FACTOR}) "
           f"FROM posting INDEXED BY ix_posting_period WHERE account_id IN ({marks}){bounds} "
           f"GROUP BY account_id, commodity{day} ORDER BY account_id, commodity{day}")
    params = {f"a{i}": account_id for i, account_id in enumerate(account_ids)} | {"since": since, "until": until}
    return [tuple(r) for r in c.execute(sa.text(sql), params)]


def _allocate_ids(c: Connection, n: int) -> list[int]:
    """Ids for n new entries. SQLite: MAX(id) once per transaction (the write lock is held from
    BEGIN IMMEDIATE, so it cannot race), then counted on in memory; PostgreSQL: its sequence."""
    if c.dialect.name == "postgresql":
        return list(c.execute(sa.text("SELECT nextval('txn_id_seq') FROM generate_series(1, :n)"), {"n": n}).scalars())
    transaction = c.get_transaction()
    held = c.info.get("tl_next_txn_id")
    if held is None or held[0] is not transaction:
        top = c.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM txn").scalar()
        held = (transaction, top + 1)
    first = held[1]
    c.info["tl_next_txn_id"] = (transaction, first + n)
    return list(range(first, first + n))


def _posting_row(txn_id: int, ts: str, account_id: int, p: Posting) -> dict:
    weight = p.weight()
    what = f"posting to {p.account}"
    return dict(
        txn_id=txn_id, ts=ts, account_id=account_id, commodity=p.commodity,
        units=to_scaled(p.units, what),
        cost=p.cost and to_scaled(p.cost.number, what + " (cost)"),
        cost_currency=p.cost and p.cost.currency,
        cost_date=p.cost and p.cost.date and p.cost.date.isoformat(),
        cost_label=p.cost and p.cost.label,
        price=p.price and to_scaled(p.price.number, what + " (price)"),
        price_currency=p.price and p.price.currency,
        weight=to_scaled(weight.number, what + " (weight)"), weight_currency=weight.currency,
    )


_POSTING_COLUMNS = ("txn_id", "units", "commodity", "cost", "cost_currency", "cost_date", "cost_label",
                    "price", "price_currency")


def _postings_query():
    p, a = schema.posting, schema.account
    return (sa.select(*(p.c[name] for name in _POSTING_COLUMNS), a.c.name.label("account"))
            .join(a, a.c.id == p.c.account_id))


def _txn_from_rows(header, rows) -> Transaction:
    postings = []
    for _txn, units, commodity, cost, cost_ccy, cost_date, label, price, price_ccy, account in rows:
        postings.append(Posting(
            account, from_scaled(units), commodity,
            None if cost is None else Cost(from_scaled(cost), cost_ccy,
                                           cost_date and dt.date.fromisoformat(cost_date), label),
            None if price is None else Amount(from_scaled(price), price_ccy)))
    return Transaction(
        time=parse_ts(header.ts), kind=header.kind, narration=header.narration, postings=tuple(postings),
        links=tuple(header.links.split(",")) if header.links else (),
        meta=tuple(sorted(json.loads(header.meta).items())) if header.meta != "{}" else (),
        key=header.idem_key, reverses=header.reverses_id,
    )


def _account_from_row(row) -> Account:
    return Account(
        name=row.name, open_date=dt.date.fromisoformat(row.open_date),
        currencies=tuple(row.currencies.split(",")) if row.currencies else (),
        booking=row.booking, close_date=row.close_date and dt.date.fromisoformat(row.close_date),
    )


def _db_reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    return text.replace("tradeledger: ", "")
