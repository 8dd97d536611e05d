"""Writing the whole ledger as a beancount file, and checking it with beancount itself.

The export is the ledger in beancount's own syntax: options, `open` directives (with allowed
commodities and booking method), `commodity` directives carrying the multiplier, `price`
directives for shares (never a price per unit for futures: beancount would value them without the
multiplier; the engine passes what a contract is worth after settlement, its unsettled margin),
and every transaction with its links and metadata (`id`, `time`, `kind` and its own).

It is written to a temporary file in the target's directory and renamed over the target, so a
reader (Fava watches the file) never sees half a ledger.

`check` loads the file with beancount, collects every error, and compares beancount's balance
of every account and commodity with the ledger's own query; any difference is reported.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tradeledger.ledger.model import Posting, Transaction
from tradeledger.ledger.numbers import SCALE
from tradeledger.ledger.reading import engine_reader
from tradeledger.ledger.store import Ledger, parse_ts

FACTOR = 10**SCALE


def _num(number: Decimal) -> str:
    return format(number.normalize(), "f")  # 'f' never prints an exponent: 1E+2 -> 100


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def format_posting(p: Posting) -> str:
    line = f"  {p.account}  {_num(p.units)} {p.commodity}"
    if p.cost is not None:
        parts = [f"{_num(p.cost.number)} {p.cost.currency}"]
        if p.cost.date is not None:
            parts.append(p.cost.date.isoformat())
        if p.cost.label is not None:
            parts.append(_quote(p.cost.label))
        line += " {" + ", ".join(parts) + "}"
    elif p.price is not None:
        line += f" @ {_num(p.price.number)} {p.price.currency}"
    return line


def format_transaction(txn_id: int, txn: Transaction) -> str:
    head = f"{txn.date.isoformat()} * {_quote(txn.narration)}"
    if txn.links:
        head += " " + " ".join("^" + link for link in txn.links)
    lines = [head, f'  id: "{txn_id}"', f'  time: "{txn.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"',
             f"  kind: {_quote(txn.kind)}"]
    if txn.reverses is not None:
        lines.append(f'  reverses: "{txn.reverses}"')
    for key, value in txn.meta:
        if key not in ("id", "time", "kind", "reverses"):
            lines.append(f"  {key}: {_quote(value)}")
    lines.extend(format_posting(p) for p in txn.postings)
    return "\n".join(lines) + "\n"


def render(ledger: Ledger, title: str, operating_currency: str, prices=None, fava: tuple[str, str] | None = None):
    """The ledger as beancount text, chunk by chunk.

    `prices`: (date, commodity, number, currency) directives the caller values the ledger with
    (the engine's closes, FX rates and futures' unsettled margin); `fava`: (extension module, its
    config) for a `custom "fava-extension"` directive, and Fava opens on the balance sheet at
    the operating currency (market value converted, as NAV is).

    Everything is read in one read transaction on one raw connection with a modest page cache
    (ledger/reading.py): the entries as two streams in id order, headers and postings, merged as
    they arrive and written from their rows (`format_transaction` gives the same text from
    records); memory holds one batch of rows and the accounts, never the ledger.
    """
    yield f'option "title" {_quote(title)}\noption "operating_currency" "{operating_currency}"\n'
    yield 'option "booking_method" "STRICT"\n\n'
    with engine_reader(ledger.engine) as reader:
        accounts = list(reader.rows("SELECT id, name, open_date, close_date, currencies, booking FROM account "
                                    "ORDER BY name"))
        if fava is not None:
            first = min((opened for _, _, opened, _, _, _ in accounts), default=None)
            day = first or "2000-01-01"
            yield f'{day} custom "fava-extension" {_quote(fava[0])} {_quote(fava[1])}\n'
            yield f'{day} custom "fava-option" "default-page" "balance_sheet/?conversion={operating_currency}"\n\n'
        for _, name, opened, closed, currencies, booking in accounts:
            line = f"{opened} open {name}"
            if currencies:
                line += " " + currencies
            if booking != "STRICT":
                line += f' "{booking}"'
            yield line + "\n"
            if closed:
                yield f"{closed} close {name}\n"
        yield "\n"
        futures = set()
        for name, kind, first_date, multiplier in reader.rows(
                "SELECT name, kind, first_date, multiplier FROM commodity ORDER BY name"):
            if kind == "future":
                futures.add(name)
            yield (f"{first_date} commodity {name}\n  kind: {_quote(kind)}\n"
                   f"  multiplier: {_quote(_num(Decimal(multiplier)))}\n")
        yield "\n"
        for date, commodity, number, currency in reader.rows(
                "SELECT date, commodity, number, currency FROM price ORDER BY date, commodity"):
            if commodity not in futures:
                yield f"{date} price {commodity} {scaled_text(number)} {currency}\n"
        for date, commodity, number, currency in prices or ():  # futures included: the caller values them
            yield f"{date.isoformat()} price {commodity} {_num(number)} {currency}\n"
        yield "\n"
        yield from _entries(reader, {row[0]: row[1] for row in accounts})


_HEADERS = "SELECT id, ts, kind, narration, links, meta, reverses_id FROM txn ORDER BY id"
_POSTINGS = ("SELECT txn_id, account_id, units, commodity, cost, cost_currency, cost_date, cost_label, price, "
             "price_currency FROM posting ORDER BY txn_id, id")


def _entries(reader, names: dict[int, str]):
    """Every entry as format_transaction writes it, from two row streams in entry id order: the
    postings drive, each new entry id takes its header (an entry without postings, which the
    database does not allow, would still be written as its header alone)."""
    headers = reader.stream(_HEADERS, "tl_export_headers", batch=1000)
    header = next(headers, None)
    out: list[str] = []
    lines: list[str] | None = None
    current = None
    size = 0
    for txn_id, account_id, units, commodity, cost, cost_ccy, cost_date, label, price, price_ccy in \
            reader.stream(_POSTINGS, "tl_export_postings"):
        if txn_id != current:
            if lines is not None:
                out.append("\n".join(lines) + "\n\n")
                lines = None
            while header is not None and header[0] < txn_id:  # entries without postings
                out.append("\n".join(_head(header)) + "\n\n")
                header = next(headers, None)
            current = txn_id
            if header is None or header[0] != txn_id:
                continue  # a posting without its header: not an entry (db verify names it)
            lines = _head(header)
            header = next(headers, None)
            if len(out) >= 512:
                yield "".join(out)
                out = []
        if lines is None:
            continue
        line = f"  {names[account_id]}  {_text(units)} {commodity}"
        if cost is not None:
            line += " {" + _text(cost) + " " + cost_ccy
            if cost_date:
                line += ", " + cost_date
            if label is not None:
                line += ", " + _quote(label)
            line += "}"
        elif price is not None:
            line += f" @ {_text(price)} {price_ccy}"
        lines.append(line)
    if lines is not None:
        out.append("\n".join(lines) + "\n\n")
    while header is not None:
        out.append("\n".join(_head(header)) + "\n\n")
        header = next(headers, None)
    if out:
        yield "".join(out)


def _head(header) -> list[str]:
    """An entry's first lines (format_transaction's) from its header row."""
    txn_id, ts, kind, narration, links, meta, reverses = header
    if len(ts) == 26 and ts[10] == " ":  # the stored form (store.TS_FORMAT): no parsing needed
        day, time = ts[:10], f"{ts[:10]}T{ts[11:]}Z"
    else:
        parsed = parse_ts(ts)
        day, time = parsed.date().isoformat(), parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    head = f"{day} * {_quote(narration)}"
    if links:
        head += " " + " ".join("^" + link for link in links.split(","))
    lines = [head, f'  id: "{txn_id}"', f'  time: "{time}"', f"  kind: {_quote(kind)}"]
    if reverses is not None:
        lines.append(f'  reverses: "{reverses}"')
    if meta != "{}":
        for key, value in sorted(json.loads(meta).items()):
            if key not in ("id", "time", "kind", "reverses"):
                lines.append(f"  {key}: {_quote(value)}")
    return lines


def scaled_text(value: int) -> str:
    """Stored nano-units as `_num(from_scaled(value))` writes them (tests hold them equal), without
    building a Decimal: the export writes one or two of these per posting."""
    whole, rest = divmod(value, FACTOR) if value >= 0 else divmod(-value, FACTOR)
    sign = "-" if value < 0 else ""
    if rest == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{rest:09d}".rstrip("0")


_texts: dict[int, str] = {}


def _text(value: int) -> str:
    """scaled_text, remembered: quantities, fees and prices repeat (bounded: cleared when full)."""
    text = _texts.get(value)
    if text is None:
        if len(_texts) >= 4096:
            _texts.clear()
        text = _texts[value] = scaled_text(value)
    return text


def export_beancount(ledger: Ledger, path: Path, title: str = "tradeledger",
                     operating_currency: str = "USD", prices=None, fava: tuple[str, str] | None = None) -> int:
    """Write the ledger to `path` atomically; returns the number of bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    size = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for chunk in render(ledger, title, operating_currency, prices, fava):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


@dataclass(frozen=True)
class CheckResult:
    errors: tuple[str, ...]
    differences: tuple[tuple[str, str, Decimal, Decimal], ...]  # account, commodity, ours, beancount's
    accounts: int
    entries: int

    @property
    def ok(self) -> bool:
        return not self.errors and not self.differences

    def as_json(self) -> dict:
        return {
            "ok": self.ok, "entries": self.entries, "accounts": self.accounts,
            "errors": list(self.errors),
            "differences": [{"account": a, "commodity": c, "ledger": str(o), "beancount": str(b)}
                            for a, c, o, b in self.differences],
        }


def beancount_balances(path: Path) -> tuple[dict[tuple[str, str], Decimal], list[str], int]:
    """Load a file with beancount; its balance per (account, commodity), its errors, entry count."""
    from beancount import loader
    from beancount.core import data, realization

    entries, errors, _options = loader.load_file(str(path))
    messages = [_format_error(e) for e in errors]
    balances: dict[tuple[str, str], Decimal] = {}
    real_root = realization.realize(entries)
    for real_account in realization.iter_children(real_root):
        for position in real_account.balance:
            key = (real_account.account, position.units.currency)
            balances[key] = balances.get(key, Decimal(0)) + position.units.number
    count = sum(1 for e in entries if isinstance(e, data.Transaction))
    return {k: v for k, v in balances.items() if v != 0}, messages, count


def check(ledger: Ledger, path: Path) -> CheckResult:
    theirs, errors, count = beancount_balances(path)
    ours = ledger.balances()
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, Decimal(0)), theirs.get(key, Decimal(0))
        if a != b:
            differences.append((key[0], key[1], a, b))
    return CheckResult(tuple(errors), tuple(differences), len(ledger.accounts()), count)


def _format_error(error) -> str:
    source = getattr(error, "source", None) or {}
    where = f"{Path(source.get('filename', '?')).name}:{source.get('lineno', '?')}" if source else "?"
    return f"{where}: {error.message}"
