"""A chunk of new executions booked as one: what `sync_fills` does per transaction.

Booking executions one by one reads, per execution, its order, the order's allocation, what the
order already filled, the contract's holdings and marks, and writes the entry, the fill row, its
allocation rows, the order and the marks: about sixteen statements per fill. A chunk of new
executions (none booked before, no spread leg) needs each of those reads once per chunk and each
write once per table:

- orders, their allocations and what each order already allocated: three reads for the chunk;
- each contract's holdings (positions from the maintained balances, marks, lots): read once per
  contract, then carried in memory from one execution to the next (`fill_entry` returns the
  holdings after each), so the cost of a fill does not grow with the ledger's history;
- the entries: one `Ledger.book_many`; the fill rows: one insert with RETURNING; allocations: one
  executemany; orders: one executemany of their new filled quantity and state; marks: one upsert
  per holder whose holding changed (and one delete per holder left flat), at the time of the
  execution that last moved it.

The decisions are the same pure functions the one-by-one path calls (`allocate_fill`,
`commission_split`, `fill_entry`), fed in time order, so a chunk books exactly what booking its
executions one per transaction would. A chunk with anything else (an execution booked before:
a correction or a late commission; a spread's leg) is left to the one-by-one path (`None`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books
from tradeledger.broker.base import BUY, Execution
from tradeledger.engine import tables
from tradeledger.engine.accounting.entries import FillShare, commission_split, fill_entry
from tradeledger.engine.accounting.holders import display, to_column
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings_many
from tradeledger.engine.trading import killpoint
from tradeledger.engine.trading.attribution import unattributed_fill
from tradeledger.engine.trading.netting import allocate_fill
from tradeledger.engine.trust.exceptions import raise_occurrence
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.store import fmt_ts

_IN = 500  # values per IN (...) list


def _in_chunks(values: list):
    for start in range(0, len(values), _IN):
        yield values[start:start + _IN]


def book_new_fills(conn: Connection, books: Books, executions: list[Execution], report, *, now: dt.datetime) -> bool:
    """Book a chunk of executions none of which is booked yet, as one; False (nothing written)
    when the chunk holds anything the one-by-one path must book (see the module's docstring).
    `now` (the environment's clock) dates the exceptions an unattributed execution raises."""
    ledger, chart = books.ledger, books.chart
    f, o, oa, fa, leg = tables.fill, tables.broker_order, tables.order_alloc, tables.fill_alloc, tables.order_leg
    account = chart.broker_account
    keys = [e.base_exec_id for e in executions]
    for part in _in_chunks(keys):
        if conn.execute(sa.select(f.c.id).where(f.c.account == account, f.c.exec_key.in_(part),
                                                f.c.superseded_by.is_(None)).limit(1)).first() is not None:
            return False  # booked before: a correction, a late commission or a replay
    refs = sorted({e.order_ref for e in executions if e.order_ref})
    orders = {}
    for part in _in_chunks(refs):
        orders.update({r.order_ref: r for r in conn.execute(sa.select(o).where(o.c.order_ref.in_(part)))})
    order_ids = sorted(r.id for r in orders.values())
    weights: dict[int, dict] = defaultdict(dict)
    already: dict[int, dict] = defaultdict(dict)
    for part in _in_chunks(order_ids):
        if conn.execute(sa.select(leg.c.order_id).where(leg.c.order_id.in_(part)).limit(1)).first() is not None:
            return False  # a spread: its legs are allocated each on its own
        for r in conn.execute(sa.select(oa).where(oa.c.order_id.in_(part))):
            weights[r.order_id][r.holder] = from_scaled(r.quantity)
        for order_id, holder, qty in conn.execute(
                sa.select(f.c.order_id, fa.c.holder, sa.func.sum(fa.c.quantity)).join(f, f.c.id == fa.c.fill_id)
                .where(f.c.order_id.in_(part), f.c.superseded_by.is_(None)).group_by(f.c.order_id, fa.c.holder)):
            already[order_id][holder] = abs(from_scaled(qty))
    filled = {r.id: from_scaled(r.filled) for r in orders.values()}
    contracts = {e.contract.code: e.contract for e in executions}
    for e in {e.contract.code: e for e in reversed(executions)}.values():  # each contract's first
        ensure_contract(conn, ledger, e.contract, e.time.date())
    opened: set = set()
    holdings = load_holdings_many(conn, books, list(contracts.values()))
    before = dict(holdings)

    moved: dict[tuple[str, object], object] = {}  # (contract, holder) -> time its holding last changed
    entries, fills = [], []
    for e in executions:
        contract = e.contract
        sign = 1 if e.side == BUY else -1
        order = orders.get(e.order_ref) if e.order_ref else None
        if order is None:
            shares = [(None, sign * e.quantity)]
        else:
            split = allocate_fill(weights[order.id], e.quantity, already[order.id])
            shares = [(holder, sign * qty) for holder, qty in split.items()]
            for holder, qty in split.items():
                done = already[order.id]
                done[to_column(holder)] = done.get(to_column(holder), Decimal(0)) + qty
            filled[order.id] += e.quantity
        for holder, _ in shares:
            if holder not in opened:
                ensure_holder(conn, books, holder)
                opened.add(holder)
        parts = commission_split(e.commission, shares)
        fill_shares = [FillShare(h, q, parts.get(h, Decimal(0)) if e.commission is not None else None)
                       for h, q in shares]
        currency = e.commission_currency or contract.currency
        who = ", ".join(display(h) for h, _ in shares)
        txn, after = fill_entry(chart, contract, e.base_exec_id, e.price, e.time, fill_shares,
                                holdings[contract.code], currency, e.order_ref,
                                f"{e.side} {e.quantity} {contract.code} @ {e.price} for {who}")
        for holder, holding in after.items():
            if holdings[contract.code].get(holder) != holding:
                moved[(contract.code, holder)] = e.time
        holdings[contract.code] = after
        entries.append(txn)
        fills.append((e, shares, order, currency))

    booked = ledger.book_many(entries, conn, new=True)  # none booked yet: checked above, under the locks
    fill_ids = _fill_ids(conn, len(fills))
    _many(conn, "INSERT INTO fill (id, account, exec_key, exec_id, order_id, order_ref, contract, side, quantity, "
                "price, time, commission, commission_currency, txn_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
          [(fill_id, e.account, e.base_exec_id, e.exec_id, order.id if order else None, e.order_ref or "",
            e.contract.code, e.side, to_scaled(e.quantity, "fill quantity"), to_scaled(e.price, "fill price"),
            fmt_ts(e.time), None if e.commission is None else to_scaled(e.commission, "commission"), currency, b.id)
           for fill_id, (e, _shares, order, currency), b in zip(fill_ids, fills, booked)])
    _many(conn, "INSERT INTO fill_alloc (fill_id, holder, quantity) VALUES (?, ?, ?)",
          [(fill_id, to_column(holder), to_scaled(qty, "allocation"))
           for fill_id, (_e, shares, _o, _c) in zip(fill_ids, fills) for holder, qty in shares])
    _many(conn, "UPDATE broker_order SET filled = ?, state = ? WHERE id = ?",
          [(to_scaled(filled[r.id], "filled"), "filled" if filled[r.id] >= from_scaled(r.quantity)
            else (r.state if r.state in ("cancelled", "unknown") else "partial"), r.id) for r in orders.values()])
    _save_marks(conn, holdings, before, moved, contracts)
    killpoint.reach("fill_chunk")  # a chunk written, not committed: the crash tests kill here
    for e, shares, order, _currency in fills:
        report.booked.append(e.base_exec_id)
        if e.commission is None:
            report.pending_commissions.append(e.base_exec_id)
        if order is None:
            report_unattributed(conn, e, report, now=now)
    return True


def report_unattributed(conn: Connection, e: Execution, report, *, now: dt.datetime) -> None:
    """A trade made outside tradeledger (no orderRef of ours) is booked to Unattributed, and said so."""
    report.unattributed.append(e.base_exec_id)
    raise_occurrence(conn, unattributed_fill(
        e.account, e.base_exec_id, e.contract.code,
        f"{e.side} {e.quantity} {e.contract.code} @ {e.price} at {e.time.isoformat()} has no orderRef of ours: "
        f"booked to Unattributed"), now=now)


def _fill_ids(conn: Connection, n: int) -> list[int]:
    """Ids for n new fill rows: SQLite counts on from MAX(id) (this transaction holds the write
    lock from its BEGIN IMMEDIATE); PostgreSQL takes them from the column's sequence."""
    if conn.dialect.name == "postgresql":
        return list(conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence('fill', 'id')) FROM generate_series(1, %(n)s)", {"n": n}).scalars())
    first = conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) + 1 FROM fill").scalar()
    return list(range(first, first + n))


def _many(conn: Connection, sql: str, rows: list[tuple]) -> None:
    """Positional rows straight to the driver's executemany (no per-row statement building)."""
    if rows:
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s"), rows)
        finally:
            cursor.close()


def _save_marks(conn: Connection, holdings: dict, before: dict, moved: dict, contracts: dict) -> None:
    """The marks of the holders whose futures holding changed in the chunk: each such (holder,
    contract) row deleted, and inserted again where a position is left (fixed SQL, positional
    rows: no statement built per chunk)."""
    changed, keep = [], []
    for code, after in holdings.items():
        if contracts[code].sec_type != "FUT":
            continue
        for holder, holding in after.items():
            if before[code].get(holder) == holding:
                continue
            changed.append((to_column(holder), code))
            if holding.position != 0 and holding.mark is not None:
                keep.append((to_column(holder), code, to_scaled(holding.mark, "mark"), fmt_ts(moved[(code, holder)])))
    _many(conn, "DELETE FROM position_mark WHERE holder = ? AND contract = ?", changed)
    _many(conn, "INSERT INTO position_mark (holder, contract, price, time) VALUES (?, ?, ?, ?)", keep)
