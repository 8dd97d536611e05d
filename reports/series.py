"""Daily P&L that adds up: realized plus the change in unrealized, day by day, from postings.

One pass over the postings that matter (holdings, `Income:Trading`, `Expenses:Commissions`,
cash and deposits), in booking-time order, replays each holder's positions, share cost basis
and futures marks; at the end of every day each open position is valued with that day's price
(its settlement, else its instrument's close, else the newest before) and that day's FX rate:

    unrealized(day)   shares: units x price x multiplier - cost basis
                      futures: units x (price - mark) x multiplier (zero right after the daily mark)
    net(day)          realized(day) + income(day) - commissions(day) + unrealized(day) - unrealized(day before)

(income: dividends less withholding, interest less fees, what holding brought.)

A close quoted before a booked split values the units held after it restated (old/new: a
2:1 split on the morning of its date is no gain until the day's close; engine/accounting/restate.py).

All figures are exact Decimals in their own currency; the base-currency figure of a day converts
that day's native figures at that day's rate. A period's total is the sum of its days, and the
base-currency totals are rounded once, on the cumulative figure: each day's net is the change
of the rounded cumulative, so the days of any period sum to the period's total to the cent.

A futures holder's mark is the price of the latest entry that touched its position or variation
margin in that contract (fills, settlements, adoptions, transfers and closes name their price in
the entry's metadata, an internal cross in `internal_cross`); a reversal (which names none) leaves
it where it was, and so does a corrected fill when the holder held a position before the
original's reversal (trading/corrections.py: the corrected entry books against the mark M of
then, which stays M; only a holder flat before is marked at the corrected price).

`build` reads the database; `compute` is the pure part (records in, series out), and with it
every part that needs no database (the moves of an entry, each account's role, the folding, the
days): reports/replay.py, which reports/series_fast.py runs on a raw connection (no SQLAlchemy). The postings are
streamed in booking order (`posting_moves`), never held: each day's moves are folded as they pass
(`fold`), since `compute` values a day only after all of its moves (sums per holder, currency
and contract; a position's units and basis; the mark the day's last mark-setting move left). A
series costs memory by days and holders, not by postings.

`compute` carries a state (`Fold`) from one day to the next; reports/series_checkpoint.py keeps it
at the end of a past day, with the series up to there, so that the next read folds and values only
the days after it (`build_many`; `full_replay` is the replay from the first entry, always).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.accounting.valuation import booked_splits
from tradeledger.engine.setup.config import instrument_of_contract
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.reading import engine_reader
# The replay itself (pure; reports/replay.py), named here as it always was.
from tradeledger.reports.replay import (  # noqa: F401 - re-exported
    CARRY_ACCOUNTS, CENT, TOTAL, UNATTRIBUTED, ZERO, ContractInfo, Day, Fold, Move, RawMove, Series, _EntryMoves,
    _Prices, _add, _day_moves, cents, compute, crossed_prices, day_range, day_range_after, fold, moves_of,
    prices_from, role, series_of, unfolded,
)
from tradeledger.reports import replay as _replay

# -- reading the database -------------------------------------------------------------------------

def contract_infos(ctx: Context) -> dict[str, ContractInfo]:
    result = {}
    for code, c in known_contracts(ctx.ledger).items():
        instrument = instrument_of_contract(ctx.config, code)
        result[code] = ContractInfo(code, c.currency, c.multiplier, c.sec_type == "FUT",
                                    instrument.name if instrument else code)
    return result


def load_prices(ctx: Context, after: dt.date | None = None, carried: dict | None = None) -> _Prices:
    """Every price, settlement and FX rate; `after`: only those dated after it (an index range on
    the date), and `carried` (`_Prices.last_on(after)`, a checkpoint's) the newest of each on or
    before it, which is all a day after it can carry forward."""
    found = []
    with read_connection(ctx.engine) as conn:
        for table, key, value in ((tables.settlement, "contract", "price"), (tables.price_bar, "instrument", "close"),
                                  (tables.fx_rate, "currency", "rate")):
            query = sa.select(table.c[key], table.c.date, table.c[value])
            if after is not None:
                query = query.where(table.c.date > after.isoformat())
            found.append(conn.execute(query).all())
        splits = booked_splits(conn)
    return prices_from(*found, splits, carried)


def _holder_name(ctx: Context, component: str) -> str:
    if component == "Unattributed":
        return UNATTRIBUTED
    strategy = ctx.config.strategy_by_account(component)
    return strategy.name if strategy else component


def load_moves(ctx: Context, contracts: dict[str, ContractInfo] | None = None) -> list[Move]:
    """The moves of every day, folded (`fold`) as the postings stream by: memory grows with days,
    holders and contracts, not with postings."""
    return fold(posting_moves(ctx), contract_infos(ctx) if contracts is None else contracts)


def posting_moves(ctx: Context, since: dt.date | None = None, entries: tuple | None = None,
                  cut: dt.date | None = None, at_cut: dict | None = None) -> Iterator[RawMove]:
    """Every posting that moves P&L, cash, deposits or a position, with its entry's contract and
    price, in booking order, streamed from one read transaction (never all in memory).

    `since`: only the entries from that day on, `entries` the replay's state before them
    (`_EntryMoves.state`, a checkpoint's). `cut`: `at_cut["entries"]` is set to that state at the
    end of the day `cut` (once an entry of a later day comes, or at the end)."""
    # An internal cross names no price in its entry's metadata: its price is the run's reference
    # price, kept beside it (the engine marks both holders there, position_mark).
    with read_connection(ctx.engine) as conn:
        crossed = crossed_prices(conn.execute(
            sa.select(tables.internal_cross.c.txn_id, tables.internal_cross.c.price)
            .where(tables.internal_cross.c.txn_id.is_not(None))))
    with engine_reader(ctx.engine) as reader:
        accounts = replay_accounts(ctx, reader)
        roles = {i: _role(ctx, name) for i, name in accounts.items()}
        yield from moves_of(reader, accounts, roles, crossed, since, entries, cut, at_cut)


def replay_accounts(ctx: Context, reader) -> dict[int, str]:
    """id -> name of the accounts whose postings the replay reads."""
    return _replay.replay_accounts(reader.account_names(), ctx.chart.root)


def account_roles(ctx: Context, accounts: dict[int, str]) -> dict[str, tuple]:
    """name -> what the account's postings are to the replay (`replay.role`): what of the config and
    the chart a checkpoint was computed with."""
    return {name: _role(ctx, name) for name in accounts.values()}


def _role(ctx: Context, account: str) -> tuple[str, str | None, str | None, bool]:
    return role(ctx.chart.root, lambda component: _holder_name(ctx, component), account)


def last_price_date(ctx: Context) -> dt.date | None:
    with read_connection(ctx.engine) as conn:
        found = [conn.execute(sa.select(sa.func.max(table.c.date))).scalar()
                 for table in (tables.price_bar, tables.settlement)]
    found = [dt.date.fromisoformat(d) for d in found if d]
    return max(found) if found else None


def build(ctx: Context, by: str = "total", until: dt.date | None = None, checkpoints: bool | None = None) -> Series:
    """The daily series of a session's ledger (every day from the first entry, so that a period
    starting later still knows the unrealized P&L it starts from)."""
    return build_many(ctx, (by,), until, checkpoints)[by]


def build_many(ctx: Context, bys, until: dt.date | None = None, checkpoints: bool | None = None) -> dict[str, Series]:
    """Several groupings from one read of the postings and prices: resumed from a stored checkpoint
    where one is valid (reports/series_checkpoint.py), else replayed from the first entry.
    `checkpoints=False` (or TRADELEDGER_SERIES_REPLAY=full) always replays everything and stores
    nothing: the oracle the resumed series is held equal to."""
    if checkpoints is None:
        checkpoints = os.environ.get("TRADELEDGER_SERIES_REPLAY", "") != "full"
    if checkpoints:
        from tradeledger.reports.series_checkpoint import build_resumed

        return build_resumed(ctx, tuple(bys), until)
    return full_replay(ctx, bys, until)


def full_replay(ctx: Context, bys, until: dt.date | None = None) -> dict[str, Series]:
    """Every grouping replayed from the first entry (the series as it always was)."""
    contracts = contract_infos(ctx)
    moves = load_moves(ctx, contracts)
    end_days = day_range(moves, last_price_date(ctx), until)
    prices = load_prices(ctx)
    base = ctx.settings.base_currency
    return {by: compute(moves, contracts, prices, base, end_days, by) for by in bys}


