"""Entries as positional rows: the booking fast path's half that needs no database.

`prepare(txn)` checks an entry exactly as `model.validate` does and, in the same pass, turns
its postings into scaled-integer rows (see `numbers.py`), with the balance checked on those
integers. Every value that reaches a row went through the same exactness rules as
`numbers.to_scaled`, so an entry prepared here is stored bit for bit as the general path would
store it. Anything unusual (a number with more than nine decimals, a value out of range, a
refusal) returns None, and the caller takes the general path, which raises the usual error:
the fast path never decides a refusal itself.

The caches below hold facts that depend only on a value (a valid account name, the scaled
integer of a Decimal, a posting's part of the fingerprint), so they can never be stale; they
are bounded, and cleared when full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import NamedTuple

from tradeledger.ledger import model
from tradeledger.ledger.numbers import SCALE, plain

_FACTOR = 10**SCALE
_LIMIT = 2**63 - 1
_MAX_CACHE = 200_000

_valid_accounts: set[str] = set()
_valid_commodities: set[str] = set()
_valid_kinds: set[str] = set()
_valid_links: set[str] = set()
_valid_meta_keys: set[str] = set()
_scaled: dict[Decimal, int] = {}
_texts: dict[Decimal, str] = {}
_rows: dict[model.Posting, tuple[tuple, str]] = {}


class Prepared(NamedTuple):
    """An entry's rows without the ids the database gives: (account, commodity, units, cost,
    cost currency, cost date, cost label, price, price currency, weight, weight currency)."""

    postings: list[tuple]
    prints: list[str]  # each posting's part of the fingerprint
    labelled: bool  # some posting reduces or adds to a labelled lot (the lot check applies)


def scaled(number: Decimal) -> int | None:
    """`numbers.to_scaled` for a finite Decimal, or None when it would refuse it."""
    value = _scaled.get(number)
    if value is None:
        numerator, denominator = number.as_integer_ratio()
        if _FACTOR % denominator:
            return None
        value = numerator * (_FACTOR // denominator)
        if abs(value) > _LIMIT:
            return None
        if len(_scaled) >= _MAX_CACHE:
            _scaled.clear()
        _scaled[number] = value
    return value


def _known(name: str, cache: set[str], check) -> bool:
    if name in cache:
        return True
    if not check(name):
        return False
    if len(cache) >= _MAX_CACHE:
        cache.clear()
    cache.add(name)
    return True


def entry_checked(txn: model.Transaction) -> bool:
    """What `validate` checks of an entry but its postings: an aware time, its kind, links, meta."""
    if txn.time.tzinfo is None or not _known(txn.kind, _valid_kinds, model._KIND.match) or not txn.postings:
        return False
    for link in txn.links:
        if not _known(link, _valid_links, model._LINK.match):
            return False
    for key, value in txn.meta:  # the cache asked here first: no call for a key seen before
        if not isinstance(value, str) or (key not in _valid_meta_keys
                                          and not _known(key, _valid_meta_keys, model._META_KEY.match)):
            return False
    return True


def numbers_typed(p: model.Posting) -> bool:
    """Every number of the posting is a Decimal. Postings are cached by value, so this comes
    first: an int 1 equals Decimal 1 (and hashes alike) but is refused."""
    return type(p.units) is Decimal and (p.cost is None or type(p.cost.number) is Decimal) \
        and (p.price is None or type(p.price.number) is Decimal)


def prepare(txn: model.Transaction) -> Prepared | None:
    """The entry's rows when it is valid and every number is storable; None otherwise."""
    if not entry_checked(txn):
        return None
    rows, prints, totals, labelled = [], [], {}, False
    for p in txn.postings:
        if not numbers_typed(p):
            return None
        cached = _rows.get(p)
        if cached is None:
            row = _posting_row(p)
            if row is None:
                return None
            if len(_rows) >= _MAX_CACHE:
                _rows.clear()
            cached = _rows[p] = (row, _printed(p))
        row = cached[0]
        rows.append(row)
        prints.append(cached[1])
        currency = row[10]
        totals[currency] = totals.get(currency, 0) + row[9]
        labelled = labelled or row[6] is not None
    if any(totals.values()):
        return None  # unbalanced: validate says how
    return Prepared(rows, prints, labelled)


def _posting_row(p: model.Posting) -> tuple | None:
    """One posting's row, or None when `validate` or `to_scaled` would refuse it."""
    units, cost, price = p.units, p.cost, p.price
    if (not _known(p.account, _valid_accounts, model.is_valid_account)
            or not _known(p.commodity, _valid_commodities, model.is_valid_commodity)
            or type(units) is not Decimal or not units.is_finite() or not units):
        return None
    units_s = scaled(units)
    if units_s is None:
        return None
    if cost is not None or price is not None:
        extra = cost if price is None else price
        if (cost is not None and price is not None) or type(extra.number) is not Decimal \
                or not extra.number.is_finite() \
                or not _known(extra.currency, _valid_commodities, model.is_valid_commodity):
            return None
        factor = scaled(extra.number)
        if factor is None:
            return None
        weight, rest = divmod(units_s * factor, _FACTOR)
        if rest or abs(weight) > _LIMIT:
            return None
        if cost is not None:
            return (p.account, p.commodity, units_s, factor, cost.currency,
                    cost.date and cost.date.isoformat(), cost.label, None, None, weight, cost.currency)
        return (p.account, p.commodity, units_s, None, None, None, None, factor, price.currency,
                weight, price.currency)
    return (p.account, p.commodity, units_s, None, None, None, None, None, None, units_s, p.commodity)


def _n(number: Decimal | None) -> str:
    """The fingerprint's text of a number: equal numbers (5.00, 5) have the same text, so it is
    cached by value."""
    if number is None:
        return ""
    text = _texts.get(number)
    if text is None:
        if len(_texts) >= _MAX_CACHE:
            _texts.clear()
        text = _texts[number] = str(plain(number))
    return text


def _printed(p: model.Posting) -> str:
    cost = p.cost and (_n(p.cost.number), p.cost.currency, str(p.cost.date), p.cost.label)
    price = p.price and (_n(p.price.number), p.price.currency)
    return repr((p.account, _n(p.units), p.commodity, cost, price))


def fingerprint(txn: model.Transaction, prepared: Prepared, iso: str | None = None) -> str:
    """`Transaction.fingerprint()`, the same digest, from the postings' cached parts (and the
    entry's `time.isoformat()` when the caller has it already)."""
    parts = [
        iso or txn.time.isoformat(), txn.kind, txn.narration, str(txn.reverses),
        "|".join(sorted(txn.links)), repr(sorted(txn.meta)), *prepared.prints,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


_UTC = dt.timezone.utc
_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def fmt_ts(time: dt.datetime) -> str:
    """A time as the ledger stores it: UTC text `YYYY-MM-DD HH:MM:SS.ffffff` (`store.TS_FORMAT`).
    By isoformat, three times faster than strftime and the same text, but for years before 1000
    (strftime's %Y does not pad them on every platform: it keeps its own answer there)."""
    if time.tzinfo is None:
        raise model.LedgerError("times must be timezone-aware")
    time = time.astimezone(_UTC)
    if time.year < 1000:
        return time.strftime(_TS_FORMAT)
    return time.isoformat(" ", "microseconds")[:26]


def stored_ts(time: dt.datetime, iso: str) -> str:
    """`fmt_ts(time)` from `iso`, the time's isoformat, when the time is in UTC already (an
    import's common case): the same text, without a second conversion and format."""
    if time.tzinfo is _UTC and time.year >= 1000:  # isoformat: YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00
        return f"{iso[:10]} {iso[11:26]}" if len(iso) == 32 else f"{iso[:10]} {iso[11:19]}.000000"
    return fmt_ts(time)


_quote = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str (ensure_ascii)


def meta_json(meta: tuple) -> str:
    """`json.dumps(dict(meta), sort_keys=True)` for string keys and values, without the encoder's
    machinery (the same text: the same separators, the same escapes)."""
    if not meta:
        return "{}"
    if len(meta) == 1:  # the common case (a fill's exec_id), without the sort and the join
        (key, value), = meta
        return f"{{{_quote(key)}: {_quote(value)}}}"
    return "{" + ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in sorted(dict(meta).items())) + "}"
