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

import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tradeledger.ledger.model import Posting, Transaction
from tradeledger.ledger.store import Ledger


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
    """
    yield f'option "title" {_quote(title)}\noption "operating_currency" "{operating_currency}"\n'
    yield 'option "booking_method" "STRICT"\n\n'
    accounts = ledger.accounts()
    if fava is not None:
        first = min((a.open_date for a in accounts), default=None)
        day = first.isoformat() if first else "2000-01-01"
        yield f'{day} custom "fava-extension" {_quote(fava[0])} {_quote(fava[1])}\n'
        yield f'{day} custom "fava-option" "default-page" "balance_sheet/?conversion={operating_currency}"\n\n'
    for account in accounts:
        line = f"{account.open_date.isoformat()} open {account.name}"
        if account.currencies:
            line += " " + ",".join(account.currencies)
        if account.booking != "STRICT":
            line += f' "{account.booking}"'
        yield line + "\n"
        if account.close_date is not None:
            yield f"{account.close_date.isoformat()} close {account.name}\n"
    yield "\n"
    futures = set()
    for c in ledger.commodities():
        if c.kind == "future":
            futures.add(c.name)
        yield (f"{c.first_date.isoformat()} commodity {c.name}\n  kind: {_quote(c.kind)}\n"
               f"  multiplier: {_quote(_num(c.multiplier))}\n")
    yield "\n"
    for date, commodity, number, currency in ledger.prices():
        if commodity not in futures:
            yield f"{date.isoformat()} price {commodity} {_num(number)} {currency}\n"
    for date, commodity, number, currency in prices or ():  # futures included: the caller values them
        yield f"{date.isoformat()} price {commodity} {_num(number)} {currency}\n"
    yield "\n"
    for txn_id, txn in ledger.entries():
        yield format_transaction(txn_id, txn) + "\n"


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
