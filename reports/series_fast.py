"""The trader's curves on the read path without SQLAlchemy: resumed from a valid checkpoint, or None.

`pnl --by day` and `report performance` show a series (reports/series.py) that a read resumes from
the checkpoint of a past day (reports/series_checkpoint.py): the days after it cost little, but a
command on the full path pays about three quarters of its time in start-up imports (SQLAlchemy,
pandas, alembic, pydantic). Here the same series is read on the raw connection of an environment
opened for reading (engine/setup/quick.py, ledger/reading.py `Reader`) and computed by the one
pure code both paths share (reports/replay.py: the moves of the entries after the checkpoint's
day, folded, the days valued from the checkpoint's state on; series_state.py: whether the stored
checkpoints are valid), in one read transaction.

It answers only where the full path would answer from the same checkpoints and write nothing:
the checkpoints of every grouping asked are stored, at one day, valid by series_state.usable (the
same counts, splits, roles, contracts, base currency and format), and the full path would keep no
newer one from this read (`series_state.cut_day` and `kept_day`: the checkpoint is at the day
before the ledger's last already, `--until` cuts the series before that day, or the series ends
before it). Otherwise (no checkpoint, a stale or older one, the
environment not vouched for, TRADELEDGER_SERIES_REPLAY=full) it returns None and the full path
runs, replays and writes, as it does without this module. That the full path keeps a newer
checkpoint is known before a posting is folded (`series_state.keeps_newer` from the days some
moves surely fall on, else at the first move of the day that settles it), so the first read of a
new day folds each posting once, in the full path, not here and again there.
tests/test_series_fast.py holds its output equal to the full path's, byte for byte, on random
ledgers and after each invalidation.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

from tradeledger.engine.accounting.restate import SPLITS_SQL, booked_splits
from tradeledger.ledger.reading import Reader
from tradeledger.reports import replay as R
from tradeledger.reports import series_state as state

# The prices dated after a checkpoint's day (series.load_prices' statements).
PRICES_AFTER = ("SELECT contract, date, price FROM settlement WHERE date > ?",
                "SELECT instrument, date, close FROM price_bar WHERE date > ?",
                "SELECT currency, date, rate FROM fx_rate WHERE date > ?")
ONE_DAY = dt.timedelta(days=1)


def contract_infos(reader: Reader, instrument_name: Callable[[str], str]) -> dict[str, R.ContractInfo]:
    """series.contract_infos from the commodity rows: the futures and shares the ledger booked."""
    return {name: R.ContractInfo(name, currency or "", multiplier, kind == "future", instrument_name(name))
            for name, kind, currency, multiplier in reader.commodities() if kind in ("future", "share")}


def last_price_date(reader: Reader) -> dt.date | None:
    """series.last_price_date: the newest close or settlement date."""
    found = reader.rows("SELECT (SELECT MAX(date) FROM price_bar), (SELECT MAX(date) FROM settlement)").fetchone()
    dates = [dt.date.fromisoformat(d) for d in found if d]
    return max(dates) if dates else None


def counts(reader: Reader, day: dt.date) -> state.Counts:
    """series_checkpoint.counts: the entries on or before `day`, the price changes dated on or before it."""
    changes = reader.rows(state.PRICE_CHANGES_SQL, (day.isoformat(),)).fetchone()[0]
    return state.Counts(day, reader.entries_before((day + ONE_DAY).isoformat()), int(changes))


def resumed_series(reader: Reader, root: str, base: str, holder_name: Callable[[str], str],
                   instrument_name: Callable[[str], str], bys: tuple,
                   until: dt.date | None = None) -> dict[str, R.Series] | None:
    """`series.build_many(bys, until)` from the stored checkpoints, or None: the full path.
    `root`: the broker account's (Chart.root); `holder_name` and `instrument_name` as pnl_fast's."""
    contracts = contract_infos(reader, instrument_name)
    prices_last = last_price_date(reader)
    accounts = R.replay_accounts(reader.account_names(), root)
    roles = {i: R.role(root, holder_name, name) for i, name in accounts.items()}
    rows = {by: tuple(rest) for by, *rest in
            reader.rows(state.CHECKPOINTS_SQL.format(", ".join("?" * len(bys))), tuple(bys))}
    splits: dict = {}

    def splits_now() -> dict:
        splits.update(booked_splits(reader.rows(SPLITS_SQL)))
        return splits

    found = state.usable(rows, bys, lambda day: counts(reader, day), splits_now, base,
                         {name: roles[i] for i, name in accounts.items()}, accounts, contracts, state.FORMAT)
    if found is None:
        return None  # none valid: the full path replays from the first entry, and writes one
    cut = state.cut_day(reader.last_entry_time(), prices_last, until, found)
    start = found[0].day
    if until is not None and until <= start + ONE_DAY:
        return {cp.by: R.series_of(cp.fold, base, until) for cp in found}  # every day asked is stored
    # Whether the full path keeps a newer checkpoint from this read is known before the moves are
    # folded (it folds them itself then): from the days some of them surely fall on, else as they come.
    known = known_move_days(reader, roles, start)
    if state.keeps_newer(start, cut, until, prices_last, known):
        return None
    crossed = R.crossed_prices(reader.rows(R.CROSSED_SQL))
    raw = R.moves_of(reader, accounts, roles, crossed, start + ONE_DAY, found[0].entries)
    try:
        moves = R.fold(_handing_over(raw, start, cut, until, prices_last, known), contracts)
    except _KeptNewer:
        return None
    prices = R.prices_from(*(list(reader.rows(sql, (start.isoformat(),))) for sql in PRICES_AFTER), splits,
                           found[0].prices)
    days = R.day_range_after(start, moves, prices_last, until)
    if state.kept_day(days, cut) is not None:  # _handing_over stops before: kept as the rule itself
        return None  # the full path keeps a newer checkpoint from this read: let it
    return {cp.by: R.compute(moves, contracts, prices, base, days, cp.by, cp.fold) for cp in found}


def known_move_days(reader: Reader, roles: dict[int, tuple], start: dt.date) -> set[dt.date]:
    """Days after `start` that moves surely fall on: the first and the last posting after it in
    the accounts each of whose postings is a move (every role but a holding, where a line without a
    cost is none), two index lookups per account."""
    ids = [i for i, role in roles.items() if role[0] != "holding"]
    first = reader.first_from(ids, (start + ONE_DAY).isoformat())
    if first is None:
        return set()
    last = reader.last_before(ids, "9999")
    return {dt.date.fromisoformat(first[:10]), dt.date.fromisoformat(last[:10])}


class _KeptNewer(Exception):
    """The full path keeps a newer checkpoint from this read: stop folding, hand it over."""


def _handing_over(raw, start: dt.date, cut: dt.date | None, until: dt.date | None, prices_last: dt.date | None,
                  known: set[dt.date]):
    """The moves of `raw`, stopped (`_KeptNewer`) at the first move of a day that makes it sure the
    full path keeps a newer checkpoint (series_state.keeps_newer), before that move is folded."""
    if cut is None:
        yield from raw
        return
    seen, day = set(known), None
    for move in raw:
        if move[0] != day:
            day = move[0]
            seen.add(dt.date.fromisoformat(day))
            if state.keeps_newer(start, cut, until, prices_last, seen):
                raise _KeptNewer
        yield move


def quick_series(home: str | Path | None, env: str, db_url: str | None, bys: tuple,
                 until: dt.date | None = None) -> tuple[dict[str, R.Series], dict] | None:
    """The series of `bys` and the environment's checked config.toml (parsed), or None: the full path."""
    if os.environ.get("TRADELEDGER_SERIES_REPLAY", "") == "full":
        return None  # the oracle: always the full replay
    from tradeledger.engine.setup import quick
    from tradeledger.reports.pnl_fast import _namers

    opened = quick.open_for_reading(home, env, db_url)
    if opened is None:
        return None
    try:
        holder_name, instrument_name = _namers(opened.raw)
        built = resumed_series(opened.reader, f"Assets:Broker:{opened.account}", opened.base_currency, holder_name,
                               instrument_name, bys, until)
    finally:
        opened.close()
    return None if built is None else (built, opened.raw)


def quick_series_pnl(home: str | Path | None, env: str, db_url: str | None, by: str, since: dt.date | None,
                     until: dt.date | None, cumulative: bool = False) -> dict | None:
    """`pnl(by, since, until, cumulative)` as the replay gives it (reports/pnl.py, replayed_pnl), or None."""
    if by not in ("strategy", "instrument", "day") or since and until and since >= until:
        return None  # the full path refuses it, in its words
    found = quick_series(home, env, db_url, ("total" if by == "day" else by,), until)
    if found is None:
        return None
    from tradeledger.reports.pnl_rows import series_rows

    return series_rows(next(iter(found[0].values())), by, since, until, cumulative)


def quick_performance(home: str | Path | None, env: str, db_url: str | None, since: dt.date | None,
                      until: dt.date | None) -> dict | None:
    """`report performance` (reports/performance.py) from the checkpoints, or None: the full path."""
    found = quick_series(home, env, db_url, ("strategy", "total"), until)
    if found is None:
        return None
    from tradeledger.reports.performance import capitals_from_raw, performance_of

    built, raw = found
    return performance_of(built, capitals_from_raw(raw), built["total"].currency, since, until)
