"""The whole ledger in and out as JSON lines (`export entries`, `import entries`).

`export_entries` writes every account, commodity and entry of an environment's ledger, exactly,
with the engine's running marks (`position_mark`: the price each holder's futures position is
marked to, which the next fill or settlement books its variation margin from),
streamed in booking order (memory stays flat however big the ledger is), atomically (a temporary
file renamed over the target). `import_entries` reads such a file, or one written by another
system in the same format (`ledger/jsonl.py`), and books it through the bulk import
(`ledger/bulk.py`): all or nothing in one transaction, accounts, commodities and marks written in
that same transaction (a mark in the file replaces the target's for that holder and contract), every rule of the ledger checked over the whole set, entries already booked
(same key, same content) skipped. Together they move a ledger between environments or from
SQLite to PostgreSQL; `db verify` on the target then re-derives everything from its postings.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.errors import UserError
from tradeledger.ledger.bulk import Imported
from tradeledger.ledger.jsonl import EntriesFile, account_line, commodity_line, entry_line
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled, jsonable, to_scaled
from tradeledger.ledger.store import Commodity, parse_ts


def export_entries(ctx: Context, path: Path) -> tuple[int, int]:
    """Write the ledger to `path`; returns (accounts, entries) written."""
    ledger = ctx.ledger
    path = Path(path)
    originals = ledger.reversed_originals()
    temporary = path.with_name(f".{path.name}.tmp")
    entries = 0
    with open(temporary, "w", encoding="utf-8") as out:
        accounts = ledger.accounts()
        for account in accounts:
            out.write(account_line(account) + "\n")
        for c in ledger.commodities():
            out.write(commodity_line(c.name, c.kind, c.currency, c.multiplier, c.first_date) + "\n")
        with read_connection(ctx.engine) as conn:
            for r in conn.execute(sa.select(tables.position_mark).order_by(tables.position_mark.c.contract,
                                                                             tables.position_mark.c.holder)):
                out.write(json.dumps({"mark": {"holder": r.holder, "contract": r.contract,
                                               "price": jsonable(from_scaled(r.price)), "time": r.time}}) + "\n")
        for txn_id, txn in ledger.entries():
            # An original that a reversal names without a key is named by its ref (its id here).
            ref = str(txn_id) if txn_id in originals and originals[txn_id] is None else None
            reverses = None
            if txn.reverses is not None:
                key = originals.get(txn.reverses)
                reverses = {"key": key} if key is not None else {"ref": str(txn.reverses)}
            out.write(entry_line(txn, ref, reverses) + "\n")
            entries += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return len(accounts), entries


def import_entries(ctx: Context, path: Path) -> Imported:
    """Book every entry of a JSON-lines file (see the module's docstring)."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        expected = sum(1 for _ in handle)  # lines, about the entries: decides whether indexes are rebuilt
        handle.seek(0)
        source = EntriesFile(handle, name=str(path), directives=("mark",))
        ledger = ctx.ledger
        marks = [_mark(source, number, m) for number, m in source.directives["mark"]]

        def open_all(conn) -> None:
            for account in source.accounts:
                ledger.open_account(account, conn)
            for c in source.commodities:
                ledger.ensure_commodity(Commodity(c.name, c.kind, c.currency, c.multiplier, c.date), conn)
            t = tables.position_mark
            for holder, contract, price, time in marks:
                conn.execute(t.delete().where(t.c.holder == holder, t.c.contract == contract))
                conn.execute(t.insert().values(holder=holder, contract=contract, price=price, time=time))

        return ledger.import_entries(source.entries(), expected=expected, before=open_all,
                                     stage_from=source.stage_source())


def _mark(source: EntriesFile, number: int, m: dict) -> tuple[str, str, int, str]:
    """A mark line as a `position_mark` row: (holder column, contract, scaled price, time)."""
    try:
        holder, contract, time = m["holder"], m["contract"], m["time"]
        if not all(isinstance(v, str) for v in (holder, contract, time)) or not isinstance(m["price"], str):
            raise TypeError("holder, contract, price and time are text")
        parse_ts(time)
        return holder, contract, to_scaled(Decimal(m["price"]), "mark"), time
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        why = f"missing {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
        raise source.error(number, f"not a mark ({why})") from None
