"""The rows a bulk import stores, made from its entries: pure, no database.

A `Preparer` knows the ledger's accounts (name -> id, open and close dates, currencies) and turns
entries into exactly the rows the booking fast path stores (`rows.prepare`: the same exactness,
the same fingerprint), each distinct posting made once and kept by value. It refuses an entry the
ledger would refuse (`validate`, exactness, an unknown account, one not accepting the commodity,
one not open on the entry's date), naming it by its place in the input.

What it cannot decide without the database is left to the writer (`ledger/bulk.py`): whether a
key is already booked (a replay, or a conflict), the id an original named by key or ref has, and
whether a labelled lot covers its reduction. The import runs it in its own process, or, for a big
file on SQLite, in stager processes beside it (`ledger/stager.py`): that is why it holds no
connection.

On SQLite a NULL is carried in a row as the integer `NULL`, turned back by the INSERT (NULLIF):
Python's sqlite3 binds None through its adapter lookup (two failed attribute lookups, each
raising), 0.3-0.45 us a value, more than half of a posting's insert for a posting's six empty
cost and price columns. No stored value can equal it: numbers are at most 2**63 - 1 in magnitude
(numbers.py), ids are positive, and the other columns are text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from decimal import Decimal
from typing import NamedTuple

from tradeledger.ledger.model import LedgerError, Transaction, validate
from tradeledger.ledger.rows import _posting_row, _printed, entry_checked, fingerprint, \
    meta_json as _meta_json, numbers_typed, stored_ts

NULL = -2**63
NULLABLE_POSTING = frozenset(range(5, 11))  # cost .. price_currency, of the 13 columns below
NULLABLE_TXN = frozenset({6, 8})  # idem_key, reverses_id
POSTING_COLUMNS = ("txn_id, ts, account_id, commodity, units, cost, cost_currency, cost_date, cost_label, price, "
                   "price_currency, weight, weight_currency")
TXN_COLUMNS = "id, ts, kind, narration, links, meta, idem_key, fingerprint, reverses_id, booked_at"
ROWS = 64  # rows per INSERT on SQLite: 64 x 13 columns stays under 999 variables (older SQLite's limit)
MAX_SEEN = 200_000  # distinct postings kept as made (rows.py's bound): cleared when full


class Importing(NamedTuple):
    """An entry whose reversal names its original by key (an entry already booked, or one earlier
    in the same import), or by the `ref` an earlier entry of the import carries: what a file can
    say, since it cannot know the ids its entries will get."""

    txn: Transaction
    reverses_key: str | None = None
    ref: str | None = None
    reverses_ref: str | None = None


class Ready(NamedTuple):
    """An entry's postings as the preparer made them."""

    hits: list[tuple]  # each posting as `Preparer._posting` made it
    prints: list[str]  # each posting's part of the fingerprint (what `rows.fingerprint` reads)
    labelled: bool  # some posting reduces or adds to a labelled lot (the lot check applies)
    iso: str  # the entry's time.isoformat(), what its fingerprint reads
    ts: str  # its time as stored (`rows.fmt_ts`)


class Checked(NamedTuple):
    """An input item checked and made ready: what the writer decides on."""

    place: int
    txn: Transaction
    reverses_key: str | None
    ready: Ready
    digest: str
    item: Importing


class Rows(NamedTuple):
    """A chunk's rows: headers (a tuple each), postings (on SQLite their values end to end, else a
    tuple each), the sums they add to the maintained balances (balance key -> units) and lots
    (lot key -> [units, first time]), and the labelled entries, (place, id, txn), for the lot check."""

    headers: list[tuple]
    postings: list
    sums: dict
    lots: dict
    labelled: list[tuple[int, int, Transaction]]  # (place, id, txn)
    count: int  # postings


PLAIN = Importing(None)  # what a plain `Transaction` of the input carries as its item (no key, no ref)


def refuse(place: int, why: str) -> LedgerError:
    return LedgerError(f"entry {place} of the import: {why}; nothing was imported")


class Preparer:
    def __init__(self, accounts: dict[str, tuple], sqlite: bool, booked_at: str):
        """accounts: name -> (id, open date, close date or None, currencies)."""
        self.accounts, self.sqlite, self.booked_at = accounts, sqlite, booked_at
        # (account, units' text, commodity, cost, price) -> what `_posting` made of the posting (its
        # account and commodity checked). Keyed by the units' text, not the Posting: hashing a
        # Decimal made by arithmetic (a fill's units are) costs several times its str(); the text
        # is exact (sign, digits, exponent), so equal texts make equal rows.
        self.seen: dict = {}
        self.valued: dict = {}  # posting -> the same, by value: for a posting whose key is new
        # balance key -> [key, units summed in the chunk being made, touched in it]: a posting adds
        # to its cell, held in what `_posting` made, with no dict lookup (a fifth of `rows`' time)
        self.cells: dict[tuple, list] = {}
        opens = [opened for _, opened, _, _ in accounts.values()]
        closes = [closed for _, _, closed, _ in accounts.values() if closed]
        # Entries dated in this span find every account open: their postings' dates need no check.
        self.open_span = (max(opens, default=dt.date.min), min(closes, default=dt.date.max))

    def check(self, place: int, item) -> Checked:
        """An input item (a `Transaction` or `Importing`) checked and its postings made, or refused."""
        if type(item) is Transaction:  # the common case, without an Importing made for it
            txn, reverses_key, item = item, None, PLAIN
        else:
            item = item if isinstance(item, Importing) else Importing(item)
            txn, reverses_key = item.txn, item.reverses_key
            if not isinstance(txn, Transaction):
                raise refuse(place, f"not an entry: {type(txn).__name__}")
            if (txn.reverses is not None) + (reverses_key is not None) + (item.reverses_ref is not None) > 1:
                raise refuse(place, "a reversal names its original once, by id, key or ref")
        ready = self._prepare(place, txn)
        if ready is None:
            try:
                validate(txn)
            except LedgerError as exc:
                raise refuse(place, str(exc)) from None
            raise refuse(place, "a number cannot be stored exactly (more than 9 decimals, or out of range)")
        return Checked(place, txn, reverses_key, ready, fingerprint(txn, ready, ready.iso), item)

    @staticmethod
    def named(checked: Checked, reverses: int | None) -> tuple[Transaction, str]:
        """The entry and its fingerprint once its reversal's original has an id, as `book` stores it."""
        txn = checked.txn
        if reverses == txn.reverses:
            return txn, checked.digest
        txn = dataclasses.replace(txn, reverses=reverses)
        return txn, fingerprint(txn, checked.ready, checked.ready.iso)

    def _prepare(self, place: int, txn: Transaction) -> Ready | None:
        """`rows.prepare` for this import: the same checks and rows, each distinct posting made
        once (its stored tail, with its account's id, accepted once); None when `validate` or
        exactness would refuse the entry."""
        if not entry_checked(txn):
            return None
        seen, hits, prints, labelled = self.seen, [], [], False
        currency, total, mixed = None, 0, False  # the weights' sum while they are in one currency
        for p in txn.postings:
            units = p.units
            if type(units) is not Decimal:
                return None  # an int 1 == Decimal 1, and str(1) == str(Decimal(1)): checked before the key
            key = (p.account, str(units), p.commodity, p.cost, p.price)
            hit = seen.get(key)
            if hit is None:
                if not numbers_typed(p):
                    return None
                hit = self.valued.get(p)  # equal in value, its units written otherwise (5.0, 5.00)
                if hit is None:
                    hit = self._posting(place, p)
                    if hit is None:
                        return None
                    if len(self.valued) >= MAX_SEEN:
                        self.valued.clear()
                    self.valued[p] = hit
                if len(seen) >= MAX_SEEN:
                    seen.clear()
                seen[key] = hit
            elif hit[8] and not numbers_typed(p):
                return None  # equal to a posting seen, but its cost or price number is not a Decimal
            hits.append(hit)
            prints.append(hit[1])
            if hit[2] != currency:
                mixed = currency is not None
                currency = hit[2]
            total += hit[3]
            labelled = labelled or hit[4]
        if mixed:  # summed per currency (the few entries whose weights are in several)
            totals: dict = {}
            for hit in hits:
                totals[hit[2]] = totals.get(hit[2], 0) + hit[3]
            if any(totals.values()):
                return None  # unbalanced: validate says how
        elif total:
            return None
        iso = txn.time.isoformat()
        return Ready(hits, prints, labelled, iso, stored_ts(txn.time, iso))

    def _posting(self, place: int, p) -> tuple | None:
        """A distinct posting as this import stores it, or None when `validate` or exactness would
        refuse it: (the stored row after txn_id and ts, its part of the fingerprint, its weight's
        currency, its weight, labelled, its account's name, its balance's key, its lot's key or
        None, whether it has a cost or price: a number of a posting equal to it to type-check).
        Its balance's key is held in its cell (`cells`). Its account must exist and accept its commodity."""
        row = _posting_row(p)
        if row is None:
            return None
        name, commodity = row[0], row[1]
        account = self.accounts.get(name)
        if account is None:
            raise refuse(place, f"unknown account {name}: open it first")
        if account[3] and commodity not in account[3]:
            raise refuse(place, f"account {name} does not accept {commodity}")
        tail = (account[0], *row[1:])
        lot = None if row[3] is None else (account[0], commodity, row[3], row[4], row[5] or "", row[6] or "")
        if self.sqlite:
            tail = tuple(NULL if value is None else value for value in tail)
        key = (account[0], commodity)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [key, 0, False]
        return (tail, _printed(p), row[10], row[9], row[6] is not None, name, cell, lot,
                p.cost is not None or p.price is not None)

    def rows(self, fresh: list[tuple]) -> Rows:
        """The rows of new entries, each (place, txn, ready, digest, id, reverses id): refused
        where an account is not open on the entry's date."""
        headers, postings, labelled = [], [], []  # postings: on SQLite the rows' values end to end
        accounts, (latest_open, earliest_close) = self.accounts, self.open_span
        add = postings.extend if self.sqlite else postings.append
        null = NULL if self.sqlite else None
        lots: dict = {}  # lot key -> [units, first time]
        touched = []  # the cells this chunk adds to (a zero sum too: the triggers leave a row)
        for cell in self.cells.values():  # what a refused chunk may have left
            cell[1], cell[2] = 0, False
        count = 0
        for place, txn, ready, digest, txn_id, reverses in fresh:
            ts, date = ready.ts, txn.date
            head = (txn_id, ts)
            if date < latest_open or date > earliest_close:  # some account is not open that day
                for hit in ready.hits:
                    _, opened, closed, _ = accounts[hit[5]]
                    if date < opened or (closed and date > closed):
                        raise refuse(place, f"account {hit[5]} is not open on {date}")
            for hit in ready.hits:
                tail = hit[0]
                add(head + tail)
                cell = hit[6]
                cell[1] += tail[2]
                if not cell[2]:
                    cell[2] = True
                    touched.append(cell)
                if hit[7] is not None:
                    lot = lots.get(hit[7])
                    if lot is None:
                        lots[hit[7]] = [tail[2], ts]
                    else:
                        lot[0] += tail[2]
                        if ts < lot[1]:
                            lot[1] = ts
            count += len(ready.hits)
            if ready.labelled:
                labelled.append((place, txn_id, txn))
            headers.append((txn_id, ts, txn.kind, txn.narration, ",".join(txn.links), _meta_json(txn.meta),
                            null if txn.key is None else txn.key, digest, null if reverses is None else reverses,
                            self.booked_at))
        sums = {cell[0]: cell[1] for cell in touched}  # balance key -> units
        return Rows(headers, postings, sums, lots, labelled, count)


def insert_sqlite(cursor, table: str, columns: str, rows: list) -> None:
    """Rows into a SQLite table, ROWS rows to an INSERT (a sixth less than one a statement:
    sqlite3's step per row), NULL as the NULL integer; posting rows given as their values end to
    end (no tuple per row to make, then flatten)."""
    width = columns.count(",") + 1
    nullable = NULLABLE_POSTING if table.endswith("posting") else NULLABLE_TXN
    one = "(" + ", ".join(f"NULLIF(?, {NULL})" if i in nullable else "?" for i in range(width)) + ")"
    values = rows if table.endswith("posting") else list(itertools.chain.from_iterable(rows))
    per = ROWS * width
    full = len(values) - len(values) % per
    if full:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * ROWS)}",
                           [values[start:start + per] for start in range(0, full, per)])
    if full < len(values):
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES {one}",
                           [values[start:start + width] for start in range(full, len(values), width)])
