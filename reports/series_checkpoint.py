"""The trader's curves resume from a checkpoint: a curve costs the days since it, not the history.

The daily series (reports/series.py) is a replay: every posting from the first entry is folded
and each day valued. What day D+1 needs from everything before it is small: each holder's units,
cost basis and futures mark per contract, cash per currency, net deposits in base, the groups
with something held (`series.Fold`), what the next entries' marks need (`_EntryMoves.state`:
units held and the last entry per holder account and contract), and the newest price,
settlement and FX rate of each on or before D. Beside them, the series itself up to D (every
group's days, NAV and deposits), which a curve from the first day shows. `series_checkpoint`
keeps all of that per grouping (total, strategy, instrument) as one JSON row; a series that
resumes reads only the entries from D+1 on (an index range on the entries' time), the prices
dated after D, and values the days after D.

**Valid.** A checkpoint at the end of day D is used only if the replay from the first entry would
give the same state there, i.e. nothing it was computed from changed:
- entries: as many entries have a time on or before D as when it was written (`entries`). The
  ledger is append-only (no update, no delete: the database refuses them), so the count moves
  exactly when an entry is booked on or before D: a late or backdated entry, a reversal or a
  correction of an old one (booked at the original's time), an opening, a split's entry. A count,
  not the highest entry id: on PostgreSQL ids come from a sequence, and an entry holding a
  smaller id can commit after a larger one was read, unseen by an id watermark. It is a range
  count on `ix_txn_ts`, an index-only read: no posting is touched;
- prices: as many price changes on or before D (migration 0015: triggers log the date of
  every price, settlement or FX row inserted, deleted or changed, one row each; an import that
  stores a price it already had logs nothing). A count again, for the same reason: the sum of
  the rows' `n` on `ix_price_change_day_n`, since the log is pruned (`prune`, migration 0017:
  the rows on or before the oldest stored checkpoint's day folded into one that stands for
  them, in the transaction that writes checkpoints; `db verify` checks none a checkpoint
  counted went missing);
- the booked splits dated on or before D are the ones it was computed with;
- the config and the chart as the replay reads them: each account's role (`series._role`: its
  kind, its holder's name under the strategies of the config) for the accounts it knew, none
  of the accounts added since older than it; each contract's currency, multiplier, kind and
  pricing instrument for the contracts it knew, none of those since named by a move it folded;
  the base currency; and `FORMAT`, this code's version of the state (raise it when the replay's
  arithmetic or the payload changes).
Otherwise the series is replayed from the first entry, and a new checkpoint written.

**Written.** By the read commands themselves (`pnl --by day`, `report performance`, `report daily`;
`report nav` values one day from the maintained balances, no replay), not the daemon: whoever reads a curve pays one replay when there is no valid
checkpoint and writes it for the next read, an environment without the daemon gets them too,
and the evening jobs stay as they are. D is the last day of the series on or before the day
before the ledger's last day (its newest entry or price): never the ledger's last day, whose
prices may still come or change. A series cut by `--until` at or before D writes nothing. The
write is its own short transaction after the read, one upsert per grouping that keeps the newer
day (`ON CONFLICT ... WHERE day <= excluded.day`): a reader sees the old row or the new, never
half of one; two processes writing at once both write a state of the same ledger, one wins.
The counts are read before the data the state is computed from: an entry or a price committed
in between is in the state but not in the counts, so the next read finds the checkpoint stale
and replays (never the other way round). A write that fails (a locked or read-only database)
is skipped: a read command does not fail for the sake of the next one.

**Exact.** Decimals are kept as their own text (`str`, which round-trips sign, digits and
exponent), dicts in their order (the NAV is a sum in the order of the positions), so a resumed
series is the replayed one to every Decimal; `--since`, `--until`, the cumulative rounding
(reports/pnl.py) work on the series as before. `series.build_many(..., checkpoints=False)` or
TRADELEDGER_SERIES_REPLAY=full replays from the first entry and stores nothing: the oracle the
tests hold a resumed series equal to.

**Read without SQLAlchemy.** The validity rules, the record and its encoding are pure
(reports/series_state.py), and so is the replay (reports/replay.py): reports/series_fast.py
decides and resumes by the same code on the raw connection of the read path, and answers only
where this module would resume and write nothing; it never writes (the first read of a new day
comes here, and keeps the checkpoint the next reads are answered from; the read path hands it
over before folding a posting, so each is folded once).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.context import Context
from tradeledger.engine.trading import killpoint
from tradeledger.ledger import dbclock
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.reading import engine_reader
from tradeledger.reports import series as S

# The state's record and its encoding (pure: series_state.py), named here as they always were.
from tradeledger.reports.series_state import (  # noqa: F401 - re-exported
    FORMAT, PRICE_CHANGES_SQL, PRUNED_SQL, Checkpoint, Counts, _contracts_out, _prices_in, _prices_out, _splits_out,
    _still_valid, cut_day, decode_fold, encode, encode_fold, kept_day, usable,
)

ZERO = Decimal(0)


# -- validity -------------------------------------------------------------------------------------

def counts(conn, reader, day: dt.date, to_write: bool = False) -> Counts:
    """The entries on or before `day` and the price changes dated on or before it; `to_write`: and
    the rows the prunes folded away so far (what `write` checks no prune changed since)."""
    changes = conn.execute(sa.text(PRICE_CHANGES_SQL.replace("?", ":day")), {"day": day.isoformat()}).scalar()
    folded = conn.exec_driver_sql(PRUNED_SQL).scalar() if to_write else 0
    return Counts(day, reader.entries_before((day + dt.timedelta(days=1)).isoformat()), int(changes), int(folded))


def _valid(ctx: Context, conn, reader, bys: tuple, accounts: dict, contracts: dict) -> list[Checkpoint] | None:
    """The stored checkpoints of every grouping in `bys`, all at one day and all valid, or None
    (series_state.usable decides)."""
    rows = {by: (day, fmt, entries, changes, payload) for by, day, fmt, entries, changes, payload in conn.execute(
        sa.select(tables.series_checkpoint.c.series_by, tables.series_checkpoint.c.day,
                  tables.series_checkpoint.c.format, tables.series_checkpoint.c.entries,
                  tables.series_checkpoint.c.price_changes, tables.series_checkpoint.c.payload)
        .where(tables.series_checkpoint.c.series_by.in_(bys)))}
    from tradeledger.engine.accounting.valuation import booked_splits

    return usable(rows, bys, lambda day: counts(conn, reader, day), lambda: booked_splits(conn),
                  ctx.settings.base_currency, S.account_roles(ctx, accounts), accounts, contracts, FORMAT)


# -- the series, resumed --------------------------------------------------------------------------

def build_resumed(ctx: Context, bys: tuple, until: dt.date | None = None, report: dict | None = None) -> dict[str, S.Series]:
    """`series.build_many`, from the valid checkpoints of `bys` where there are some; writes the
    checkpoints of the day before the ledger's last day for the next read. `report` (the tests,
    the benchmark) is told the day it resumed from ("resumed", None: replayed from the first
    entry) and the day of the checkpoints it wrote ("written", None: none)."""
    report = {} if report is None else report
    base = ctx.settings.base_currency
    contracts = S.contract_infos(ctx)
    prices_last = S.last_price_date(ctx)
    with read_connection(ctx.engine) as conn, engine_reader(ctx.engine) as reader:
        last_ts = reader.last_entry_time()
        accounts = S.replay_accounts(ctx, reader)
        found = _valid(ctx, conn, reader, bys, accounts, contracts)
        cut = cut_day(last_ts, prices_last, until, found)  # None: nothing newer to keep
        # counted before the data: whatever commits in between makes the new checkpoint stale, not wrong
        before = counts(conn, reader, cut, to_write=True) if cut is not None else None
    start = found[0].day if found else None
    report["resumed"], report["written"] = start, None
    if found and until is not None and until <= start + dt.timedelta(days=1):
        return {cp.by: S.series_of(cp.fold, base, until) for cp in found}  # every day asked is stored
    at_cut: dict = {}
    moves = S.fold(S.posting_moves(ctx, None if start is None else start + dt.timedelta(days=1),
                                   found[0].entries if found else None, cut, at_cut), contracts)
    if found:
        prices = S.load_prices(ctx, start, found[0].prices)
        days = S.day_range_after(start, moves, prices_last, until)
    else:
        prices = S.load_prices(ctx)
        days = S.day_range(moves, prices_last, until)
    kept = kept_day(days, cut)  # the state kept at the end of the series' last day on or before the cut
    payloads: dict = {}
    out = {}
    for cp_or_by in (found or bys):
        by = cp_or_by.by if found else cp_or_by
        start_state = cp_or_by.fold if found else None

        def keep(state: S.Fold, by=by) -> None:
            payloads[by] = encode(by, state, at_cut["entries"], prices, cut, base, S.account_roles(ctx, accounts),
                              max(accounts, default=0), contracts)

        out[by] = S.compute(moves, contracts, prices, base, days, by, start_state, kept, keep)
    if before is not None and kept is not None and len(payloads) == len(bys) and write(ctx, before, payloads):
        report["written"] = before.day
    return out


def write(ctx: Context, at: Counts, payloads: dict[str, str]) -> bool:
    """Store the checkpoints of `at.day` in one short transaction, keeping a newer one another
    process stored meanwhile, and prune the price changes no checkpoint needs any more (`prune`);
    False when the database would not take them, or a prune since `at` was counted may have
    changed the sums it holds (nothing written)."""
    statement = sa.text(
        "INSERT INTO series_checkpoint (series_by, day, format, entries, price_changes, payload, written_at) "
        "VALUES (:by, :day, :format, :entries, :changes, :payload, :at) "
        "ON CONFLICT (series_by) DO UPDATE SET day = excluded.day, format = excluded.format, "
        "entries = excluded.entries, price_changes = excluded.price_changes, payload = excluded.payload, "
        "written_at = excluded.written_at WHERE series_checkpoint.day <= excluded.day")
    try:
        with ctx.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # one writer at a time (SQLite: BEGIN IMMEDIATE)
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended('tl:series_checkpoint', 0))"))
            if conn.exec_driver_sql(PRUNED_SQL).scalar() != at.folded:
                return False  # pruned since the counts: the sum on or before `at.day` may not be theirs
            written_at = dbclock.read(conn)
            for by, payload in payloads.items():
                conn.execute(statement, {"by": by, "day": at.day.isoformat(), "format": FORMAT, "at": written_at,
                                         "entries": at.entries, "changes": at.price_changes, "payload": payload})
            prune(conn)
            killpoint.reach("checkpoint_written")  # written, not committed: a kill here leaves the old rows
    except sa.exc.DBAPIError:
        return False
    return True


def prune(conn) -> int:
    """Fold the `price_change` rows dated on or before the oldest stored checkpoint's day into one
    row, at the newest of their days, standing for all of them (`n`); returns how many rows went.

    A checkpoint at day D compares the sum of `n` on or before D with the one it counted. Every
    stored checkpoint is at that oldest day or later, and a checkpoint's day only moves on (the
    upsert keeps the newer), so every sum a stored checkpoint compares is the same after as before.
    A read that counted before a prune and writes after it is refused by `write` (the rows folded
    away grew), so no checkpoint holds a sum from before a prune it could be off by. The rows
    deleted are the rows summed (one DELETE ... RETURNING): nothing is counted twice or lost,
    whoever else writes. Run in the transaction that writes the checkpoints, which is what makes
    the older rows obsolete."""
    floor = conn.execute(sa.text("SELECT MIN(day) FROM series_checkpoint")).scalar()
    if floor is None or conn.execute(sa.text("SELECT COUNT(*) FROM price_change WHERE day <= :floor"),
                                     {"floor": floor}).scalar() < 2:
        return 0  # nothing to fold: no checkpoint, or one row at most
    gone = conn.execute(sa.text("DELETE FROM price_change WHERE day <= :floor RETURNING day, n"),
                        {"floor": floor}).all()
    if gone:
        conn.execute(sa.text("INSERT INTO price_change (day, n) VALUES (:day, :n)"),
                     {"day": max(day for day, _ in gone), "n": sum(int(n) for _, n in gone)})
    return max(len(gone) - 1, 0)


def stored(ctx: Context) -> list[dict]:
    """The stored checkpoints (grouping, day, counts): what `db` diagnostics and the tests read."""
    with read_connection(ctx.engine) as conn:
        return [dict(row._mapping) for row in conn.execute(
            sa.select(tables.series_checkpoint.c.series_by, tables.series_checkpoint.c.day,
                      tables.series_checkpoint.c.format, tables.series_checkpoint.c.entries,
                      tables.series_checkpoint.c.price_changes).order_by(tables.series_checkpoint.c.series_by))]

