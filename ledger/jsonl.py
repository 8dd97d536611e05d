"""The ledger as JSON lines: what `export entries` writes and `import entries` reads.

One JSON object per line, exact (numbers as decimal text, times ISO 8601 with their zone):

    {"open": {"account": "Assets:Broker:DU1:Cash", "date": "2026-01-02", "currencies": ["USD"],
              "booking": "STRICT", "close": null}}
    {"commodity": {"name": "MESZ26", "kind": "future", "currency": "USD", "multiplier": "5",
                   "date": "2026-01-02"}}
    {"time": "2026-01-02T14:30:00+00:00", "kind": "fill", "narration": "...", "key": "fill:DU1:0001",
     "links": ["fill-0001"], "meta": {"exec_id": "0001"},
     "postings": [{"account": "...", "units": "2", "commodity": "MESZ26",
                   "cost": {"number": "0", "currency": "USD", "date": null, "label": null}},
                  {"account": "...", "units": "-1.24", "commodity": "USD"}]}

Every `open` and `commodity` line comes before the first entry (they are opened in the import's
own transaction), and so do the lines of state the caller names (`directives`: the engine's
marks, `{"mark": {...}}`), which are handed to it as they are. A reversal names its original by key (`"reverses": {"key": "..."}`), or, for an
original without a key, by the `ref` that original carries in the same file
(`"reverses": {"ref": "17"}`): a file cannot know the ids its entries will get. An entry's `cost`
and `price` are optional. A line that cannot be read is refused with its line number.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tradeledger.ledger.bulk_rows import Importing
from tradeledger.ledger.model import Account, Amount, Cost, LedgerError, Posting, Transaction
from tradeledger.ledger.numbers import jsonable


@dataclass(frozen=True)
class CommodityLine:
    name: str
    kind: str
    currency: str | None
    multiplier: Decimal
    date: dt.date


# -- writing ----------------------------------------------------------------------------------

def account_line(account: Account) -> str:
    return json.dumps({"open": {"account": account.name, "date": account.open_date.isoformat(),
                                "currencies": list(account.currencies), "booking": account.booking,
                                "close": account.close_date and account.close_date.isoformat()}})


def commodity_line(name: str, kind: str, currency: str | None, multiplier: Decimal, date: dt.date) -> str:
    return json.dumps({"commodity": {"name": name, "kind": kind, "currency": currency,
                                     "multiplier": jsonable(multiplier), "date": date.isoformat()}})


def entry_line(txn: Transaction, ref: str | None = None, reverses: dict | None = None) -> str:
    entry: dict = {"time": txn.time.isoformat(), "kind": txn.kind, "narration": txn.narration}
    if txn.key is not None:
        entry["key"] = txn.key
    if ref is not None:
        entry["ref"] = ref
    if reverses is not None:
        entry["reverses"] = reverses
    if txn.links:
        entry["links"] = list(txn.links)
    if txn.meta:
        entry["meta"] = dict(txn.meta)
    entry["postings"] = [_posting_json(p) for p in txn.postings]
    return json.dumps(entry, ensure_ascii=False)


def _posting_json(p: Posting) -> dict:
    out = {"account": p.account, "units": jsonable(p.units), "commodity": p.commodity}
    if p.cost is not None:
        out["cost"] = {"number": jsonable(p.cost.number), "currency": p.cost.currency,
                       "date": p.cost.date and p.cost.date.isoformat(), "label": p.cost.label}
    if p.price is not None:
        out["price"] = {"number": jsonable(p.price.number), "currency": p.price.currency}
    return out


# -- reading ----------------------------------------------------------------------------------

class EntriesFile:
    """A file's directives (read first) and then its entries, streamed as `Importing` records."""

    def __init__(self, lines: Iterable[str], name: str = "input", directives: tuple[str, ...] = ()):
        self.name = name
        self._handle = lines
        self._lines = enumerate(lines, 1)
        self.accounts: list[Account] = []
        self.commodities: list[CommodityLine] = []
        self.directives: dict[str, list[tuple[int, dict]]] = {kind: [] for kind in directives}
        self._first: tuple[int, dict] | None = None
        for number, line in self._lines:
            obj = self._parse(number, line)
            if obj is None:
                continue
            if "open" in obj:
                self.accounts.append(self._account(number, obj["open"]))
            elif "commodity" in obj:
                self.commodities.append(self._commodity(number, obj["commodity"]))
            elif len(obj) == 1 and next(iter(obj)) in self.directives and isinstance(next(iter(obj.values())), dict):
                kind, = obj
                self.directives[kind].append((number, obj[kind]))
            else:
                self._first = (number, obj)
                break

    def entries(self) -> Iterator[Importing]:
        if self._first is not None:
            yield self._entry(*self._first)
        for number, line in self._lines:
            obj = self._parse(number, line)
            if obj is not None:
                yield self._item(number, obj)

    def chunks(self, size: int, mine=None) -> Iterator[tuple[int, list, LedgerError | None]]:
        """The entries in chunks of `size` (the last may be short), only those whose index `mine`
        accepts (all without it): (chunk's index, [(place, Importing)], the refusal that ended it
        or None). The lines of other chunks are counted, not read (a stager's share:
        ledger/stager.py)."""
        batch, place = [], 0
        pending = [self._first] if self._first is not None else []
        for number, line in itertools.chain(pending, self._lines):
            if place % size == 0 and place and batch:  # a chunk ended with the entry before
                yield (place - 1) // size, batch, None
                batch = []
            if isinstance(line, str) and not line.strip():
                continue
            index = place // size
            place += 1
            if mine is None or mine(index):
                try:
                    if isinstance(line, dict):  # the first entry, read (and its kind checked) on opening
                        batch.append((place, self._entry(number, line)))
                    else:
                        batch.append((place, self._item(number, self._parse(number, line))))
                except LedgerError as exc:
                    yield index, batch, exc
                    return
        if batch:
            yield (place - 1) // size, batch, None

    def stage_source(self) -> tuple[int, str, tuple[str, ...]] | None:
        """(descriptor, name, directives) of the file being read, for stagers to read it too; None
        when the lines are not a file one can reopen (a pipe, a list), or where a descriptor cannot
        be reopened with an offset of its own (`/proc/self/fd`: Linux; macOS's /dev/fd shares it)."""
        handle = self._handle
        if not isinstance(handle, io.TextIOBase) or not os.path.isdir("/proc/self/fd"):
            return None
        try:
            if not handle.seekable():
                return None
            return handle.fileno(), self.name, tuple(self.directives)
        except (OSError, ValueError):
            return None

    def _item(self, number: int, obj: dict) -> Importing:
        if "open" in obj or "commodity" in obj or (len(obj) == 1 and next(iter(obj)) in self.directives):
            raise self._error(number, f"{next(iter(obj))} lines come before the first entry")
        return self._entry(number, obj)

    def error(self, number: int, why: str) -> LedgerError:
        """A refusal naming the file and the line (for the caller's own directives too)."""
        return self._error(number, why)

    def _error(self, number: int, why: str) -> LedgerError:
        return LedgerError(f"{self.name}, line {number}: {why}; nothing was imported")

    def _parse(self, number: int, line: str) -> dict | None:
        if not line.strip():
            return None
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise self._error(number, f"not JSON ({exc.args[0].split(':')[0]})") from None
        if not isinstance(obj, dict):
            raise self._error(number, "a line is one JSON object")
        return obj

    def _account(self, number: int, o) -> Account:
        try:
            return Account(_text(o, "account"), _date(o["date"]), tuple(o.get("currencies") or ()),
                           o.get("booking") or "STRICT", o.get("close") and _date(o["close"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise self._error(number, f"an open line needs account and date ({_why(exc)})") from None

    def _commodity(self, number: int, o) -> CommodityLine:
        try:
            return CommodityLine(_text(o, "name"), _text(o, "kind"), o.get("currency"),
                                 _number(o.get("multiplier", "1")), _date(o["date"]))
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise self._error(number, f"a commodity line needs name, kind and date ({_why(exc)})") from None

    def _entry(self, number: int, o: dict) -> Importing:
        try:
            time = dt.datetime.fromisoformat(_text(o, "time"))
            if time.tzinfo is None:
                raise ValueError("the time needs its zone (+00:00)")
            postings = tuple(_posting(p) for p in o["postings"])
            reverses = o.get("reverses")
            if reverses is not None and not (isinstance(reverses, dict) and len(reverses) == 1
                                             and set(reverses) <= {"key", "ref"}):
                raise ValueError('reverses is {"key": ...} or {"ref": ...}')
            meta = o.get("meta") or {}
            txn = Transaction(time, _text(o, "kind"), _text(o, "narration"), postings,
                              links=tuple(o.get("links") or ()), meta=tuple(sorted(meta.items())),
                              key=o.get("key"))
            ref = o.get("ref")
            return Importing(txn, reverses_key=(reverses or {}).get("key"),
                             ref=None if ref is None else str(ref),
                             reverses_ref=None if (reverses or {}).get("ref") is None else str(reverses["ref"]))
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError) as exc:
            raise self._error(number, f"not an entry ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    return f"missing {exc.args[0]}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__


def _text(o: dict, name: str) -> str:
    value = o[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} must be text")
    return value


def _date(value) -> dt.date:
    if not isinstance(value, str):
        raise TypeError("a date is text YYYY-MM-DD")
    return dt.date.fromisoformat(value)


def _number(value) -> Decimal:
    if not isinstance(value, str):
        raise TypeError("numbers are decimal text, never JSON numbers (no float)")
    return Decimal(value)


_made: dict[tuple, Posting] = {}
_MAX_MADE = 100_000


def _posting(p: dict) -> Posting:
    """A posting line made into a `Posting`. A file repeats most of its postings (a commission, a
    position at zero cost, a fee), so each is made once and kept by the text it is made from; a
    line the cache cannot key (a value of the wrong shape) is made, and refused, as it stands."""
    cost, price = p.get("cost"), p.get("price")
    try:
        key = (p["account"], p["units"], p["commodity"],
               cost and (cost["number"], cost["currency"], cost.get("date"), cost.get("label")),
               price and (price["number"], price["currency"]))
        made = _made.get(key)
    except (KeyError, TypeError, AttributeError):
        return _make_posting(p, cost, price)
    if made is None:
        made = _make_posting(p, cost, price)
        if _all_text(key):  # only text keys: 5 == 5.0 == True would share one entry, "5" equals no other
            if len(_made) >= _MAX_MADE:
                _made.clear()
            _made[key] = made
    return made


def _all_text(key: tuple) -> bool:
    return all(type(part) is str or part is None or (type(part) is tuple and _all_text(part)) for part in key)


def _make_posting(p: dict, cost, price) -> Posting:
    return Posting(
        _text(p, "account"), _number(p["units"]), _text(p, "commodity"),
        None if cost is None else Cost(_number(cost["number"]), _text(cost, "currency"),
                                       cost.get("date") and _date(cost["date"]), cost.get("label")),
        None if price is None else Amount(_number(price["number"]), _text(price, "currency")))
