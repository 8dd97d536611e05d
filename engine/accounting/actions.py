"""Corporate actions through their life: imported once, booked once when due, to every holder.

An action arrives from a file (`tradeledger actions import FILE`), from IB's Flex statement
(`engine/trust/flex.py`) or from the simulated broker's own record of what it paid. It is
stored once in `corporate_action`, keyed by ticker, date and the source's id; importing the same
action again is a no-op, and one whose figures differ from the stored one is a conflict.

Booking (`book_due`) takes every stored action whose date has come, in date order, and books it
in one database transaction per action together with the row that records its entries, so a
crash leaves an action either booked with its row updated or not booked at all, and a rerun
books the rest:

* a dividend's ex-date entry goes to the record holders: each holder's shares at the end of
  the day before the ex-date, read from the ledger as of that moment (the unattributed holdings
  included); its pay-date entry turns the receivable into cash once the pay date has come;
* a split re-states every holder's lots at its date. It must be booked before anything trades
  the ticker at or after that date (lots are read as they stand now), else it is refused.

Around the account's opening (engine/trust/cutoff.py `holds_paid`), cash the broker paid before it
is in the opening's cash and is never booked again:

* a dividend PAID before the opening books neither entry: its ex-date entry would leave a
  receivable that its pay-date entry would turn into cash the opening already booked. Its income
  is in the opening's equity, as the interest paid before it. It is marked booked with no entry
  (0) and said (`BookReport.in_opening`; `actions list`: "in the opening's cash"). One whose
  ex-date entry was booked before the opening was taken (`actions book` with no opening yet) has
  its receivable paid against `Equity:Opening-Balances`, the cash the opening booked, not cash;
* a dividend with its ex-date before the opening and its pay date after it is booked: the
  opening's cash does not hold it. Its record holders are the ledger's at the ex-date plus the
  shares the opening brought in (`_opening_arrivals`): the opening books every execution the
  broker reports before it, so the shares it brings in are those held before any of them, hence
  at the ex-date; without them a dividend paid after the opening on shares held since before it
  would find no holder and never be booked;
* a split made before the opening is in its positions (post-split) and its cash in lieu in its
  cash: marked booked with no entry and said, never re-stated again.

The file format (one header, blank fields where they do not apply):

    kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio
    dividend,SPY,2026-12-19,2026-12-31,1.85,USD,0.15,
    split,GLD,2026-12-10,,,,,2:1
    split,XYZ,2026-12-14,,41.25,USD,,1:10

A split's `amount` and `currency`, when given, are the broker's cash in lieu of a fractional share,
per new share: without it a split that leaves a fraction is refused when it comes to be booked.
A source that gives the price for a split stored without one completes it (until it is booked).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from tradeledger.errors import UserError
from tradeledger.engine.context import Context
from tradeledger.engine.accounting.corporate import (
    UNALLOCATED, AccountCash, CorporateActionError, Dividend, Split, allocate_cents,
)
from tradeledger.engine.accounting.entries import account_cash_entry, dividend_ex_entry, dividend_net, dividend_pay_entry, split_entry
from tradeledger.engine.accounting.holdings import LEDGER_EPOCH, holder_of
from tradeledger.engine.tables import corporate_action
from tradeledger.engine.trust import cutoff
from tradeledger.engine.targets.prices import CsvImportError, parse_date, parse_number, read_csv_rows, trading_config
from tradeledger.ledger.model import Account
from tradeledger.ledger.numbers import from_scaled, to_scaled
from tradeledger.ledger.store import fmt_ts
from tradeledger.errors import UserError

UTC = dt.timezone.utc
HEADER = ("kind", "ticker", "ex_date", "pay_date", "amount", "currency", "withholding", "ratio")


# -- parsing (pure) --------------------------------------------------------------------------------


def parse_ratio(text: str) -> tuple[Decimal, Decimal]:
    parts = text.split(":")
    if len(parts) != 2:
        raise UserError(f"ratio {text!r} must be NEW:OLD, e.g. 2:1 or 1:10")
    new, old = (parse_number(p, "ratio") for p in parts)
    if new <= 0 or old <= 0 or new != new.to_integral_value() or old != old.to_integral_value():
        raise UserError(f"ratio {text!r} must be two positive whole numbers")
    if new == old:
        raise UserError(f"ratio {text!r} changes nothing")
    return new, old


def parse_actions_csv(text: str, shares: set[str], source: str) -> list[Dividend | Split]:
    """Every row checked; a file with a bad row raises CsvImportError listing each (line, why)."""
    header, rows = read_csv_rows(text, source)
    if header != HEADER:
        raise CsvImportError(source, [(1, f"header must be {','.join(HEADER)}")])
    actions, problems = [], []
    for line, fields in rows:
        if len(fields) != len(HEADER):
            problems.append((line, f"expected {len(HEADER)} fields, found {len(fields)}"))
            continue
        kind, ticker, ex_date, pay_date, amount, currency, withholding, ratio = (f.strip() for f in fields)
        try:
            if ticker not in shares:
                raise UserError(f"{ticker!r} is not a configured share or ETF")
            if kind == "dividend":
                ex, pay = parse_date(ex_date), parse_date(pay_date)
                if pay < ex:
                    raise UserError(f"pay date {pay} is before the ex-date {ex}")
                value = parse_number(amount, "amount")
                if value == 0:
                    raise UserError("a dividend of 0")
                tax = parse_number(withholding, "withholding") if withholding else Decimal(0)
                if not 0 <= tax < 1:
                    raise UserError(f"withholding {tax} must be a fraction in [0, 1)")
                if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
                    raise UserError(f"currency {currency!r} must be a 3-letter code")
                actions.append(Dividend(ticker, ex, pay, value, currency, tax, source="import"))
            elif kind == "split":
                new, old = parse_ratio(ratio)
                cil = parse_number(amount, "cash in lieu") if amount else None
                if cil is not None and (cil <= 0 or len(currency) != 3 or not currency.isalpha()
                                        or not currency.isupper()):
                    raise UserError(f"cash in lieu {amount} {currency!r}: a positive price per new share and "
                                     f"a 3-letter currency")
                actions.append(Split(ticker, parse_date(ex_date), new, old, source="import",
                                     cash_in_lieu=cil, currency=currency if cil is not None else ""))
            else:
                raise UserError(f"kind {kind!r} must be dividend or split")
        except ValueError as exc:
            problems.append((line, str(exc)))
    if problems:
        raise CsvImportError(source, problems)
    return actions


# -- storing ---------------------------------------------------------------------------------------


@dataclass
class StoreReport:
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"added": self.added, "unchanged": self.unchanged}


def _row(action: Dividend | Split, now: dt.datetime) -> dict:
    common = {"key": action.key, "ticker": action.ticker, "source": action.source, "ref": action.ref,
              "created_at": fmt_ts(now)}
    if isinstance(action, Dividend):
        return common | {"kind": "dividend", "ex_date": action.ex_date.isoformat(),
                         "pay_date": action.pay_date.isoformat(), "amount": to_scaled(action.amount, "amount"),
                         "currency": action.currency, "withholding": str(action.withholding),
                         "ratio_new": None, "ratio_old": None}
    cil = action.cash_in_lieu
    return common | {"kind": "split", "ex_date": action.date.isoformat(), "pay_date": None,
                     "amount": None if cil is None else to_scaled(cil, "cash in lieu"),
                     "currency": action.currency or None if cil is not None else None, "withholding": None, "ratio_new": to_scaled(action.new),
                     "ratio_old": to_scaled(action.old)}


_COMPARED = ("kind", "ticker", "ex_date", "pay_date", "amount", "currency", "withholding", "ratio_new", "ratio_old")


def store_actions(conn, actions: list[Dividend | Split], now: dt.datetime) -> StoreReport:
    """Insert new actions; the same action again is a no-op; different figures under one key refuse."""
    report = StoreReport()
    for action in actions:
        row = _row(action, now)
        old = conn.execute(sa.select(corporate_action).where(corporate_action.c.key == action.key)).first()
        if old is None:
            conn.execute(corporate_action.insert().values(**row))
            report.added.append(action.key)
            continue
        diffs = [c for c in _COMPARED if getattr(old, c) != row[c]
                 and not (c == "withholding" and Decimal(old.withholding or 0) == Decimal(row[c] or 0))]
        if (row["kind"] == "split" and set(diffs) <= {"amount", "currency"} and old.amount is None
                and old.ex_txn_id is None):  # a split's cash-in-lieu price arriving with a later source
            conn.execute(corporate_action.update().where(corporate_action.c.id == old.id)
                         .values(amount=row["amount"], currency=row["currency"]))
            report.unchanged.append(action.key)
            continue
        if row["kind"] == "split" and set(diffs) <= {"amount", "currency"} and row["amount"] is None:
            diffs = []  # this source does not know the cash-in-lieu price: it does not disagree
        if diffs:
            raise CorporateActionError(f"corporate action {action.key} is stored with other figures "
                                       f"({', '.join(diffs)} differ); nothing imported")
        report.unchanged.append(action.key)
    return report


def import_actions_csv(ctx: Context, path: str | Path, now: dt.datetime | None = None) -> StoreReport:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CsvImportError(str(path), [(0, "not a UTF-8 text file")]) from None
    config = trading_config(ctx)
    shares = {name for name, i in config.instruments.items() if not i.is_future}
    actions = parse_actions_csv(text, shares, str(path))
    with ctx.engine.begin() as conn:
        return store_actions(conn, actions, now or ctx.now())


def sync_from_broker(ctx: Context, broker, now: dt.datetime | None = None) -> StoreReport:
    """Store the dividends (and splits) a broker announces through its API (the simulated one does; for
    IB the Flex statement is the source). Known ones are linked, different figures refused, as for a file."""
    announced = getattr(broker, "dividends", None)
    if announced is None:
        raise CorporateActionError("this broker does not report dividends through its API: import a file or, "
                                   "for IB, its Flex statement (tradeledger import flex FILE)")
    actions: list[Dividend | Split] = [Dividend(ticker, ex, pay, per_share, _currency(ctx, ticker), withholding, "sim")
                                       for ticker, ex, pay, per_share, withholding in announced()]
    splits = getattr(broker, "splits", None)
    if splits is not None:  # the splits it made, with its cash-in-lieu price if it paid one
        actions += [Split(ticker, day, new, old, "sim", "", cil, _currency(ctx, ticker) if cil is not None else "")
                    for ticker, day, new, old, cil in splits()]
    with ctx.engine.begin() as conn:
        return store_actions(conn, actions, now or ctx.now())


def _currency(ctx: Context, ticker: str) -> str:
    instrument = trading_config(ctx).instruments.get(ticker)
    if instrument is None:
        raise CorporateActionError(f"the broker announces a dividend on {ticker}, which is not configured")
    return instrument.currency


def _action(row) -> Dividend | Split:
    if row.kind == "dividend":
        return Dividend(row.ticker, dt.date.fromisoformat(row.ex_date), dt.date.fromisoformat(row.pay_date),
                        from_scaled(row.amount), row.currency, Decimal(row.withholding or 0), row.source, row.ref)
    return Split(row.ticker, dt.date.fromisoformat(row.ex_date), from_scaled(row.ratio_new),
                 from_scaled(row.ratio_old), row.source, row.ref, from_scaled(row.amount), row.currency or "")


def list_actions(ctx: Context) -> list[dict]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(corporate_action).order_by(corporate_action.c.ex_date,
                                                                 corporate_action.c.id)).all()
        cut = cutoff.opening_cut(conn, ctx.settings.account)
    return [{"key": r.key, "kind": r.kind, "ticker": r.ticker, "ex_date": r.ex_date, "pay_date": r.pay_date,
             "amount": str(from_scaled(r.amount)) if r.amount is not None else None, "currency": r.currency,
             "withholding": r.withholding, "ratio": f"{from_scaled(r.ratio_new)}:{from_scaled(r.ratio_old)}"
             if r.kind == "split" else None, "source": r.source,
             "state": _state(r, cut)} for r in rows]


def _state(row, cut: cutoff.Cut | None = None) -> str:
    if _in_opening(row, cut) and (row.pay_txn_id == 0 if row.kind == "dividend" else row.ex_txn_id == 0):
        return "in the opening's cash"  # marked booked with no entry: paid before the opening (book_due)
    if row.kind == "split":
        return "booked" if row.ex_txn_id is not None else "due"
    if row.pay_txn_id is not None:
        return "paid"
    return "receivable" if row.ex_txn_id is not None else "due"


# -- booking ---------------------------------------------------------------------------------------


@dataclass
class BookReport:
    booked: list[str] = field(default_factory=list)  # "dividend SPY ex 2026-12-19", ...
    refused: list[str] = field(default_factory=list)
    in_opening: list[str] = field(default_factory=list)  # paid before the opening: in its cash, not booked again

    def as_json(self) -> dict:
        return {"booked": self.booked, "refused": self.refused, "in_opening": self.in_opening}


def _in_opening(row, cut: cutoff.Cut | None) -> bool:
    """Whether the opening's cash holds what the stored action paid (pure): a dividend's pay date, a
    split's date (its cash in lieu, and its shares in the opening's positions)."""
    day = row.pay_date if row.kind == "dividend" else row.ex_date
    return cutoff.holds_paid(cut, row.ticker, dt.date.fromisoformat(day))


def _start(date: dt.date) -> dt.datetime:
    return dt.datetime.combine(date, dt.time(0), UTC)


def _open_accounts(ctx: Context, conn, accounts: set[str]) -> None:
    for name in sorted(accounts):
        ctx.ledger.open_account(Account(name, LEDGER_EPOCH), conn)


def _holder_positions(ctx: Context, conn, ticker: str, before: dt.date,
                      cut: cutoff.Cut | None = None) -> dict[str | None, Decimal]:
    chart = ctx.chart
    balances = ctx.ledger.balances(as_of=before, prefix=chart.root, conn=conn, commodity=ticker)
    units_by: dict[tuple[str, str], Decimal] = dict(balances)
    for key, units in _opening_arrivals(ctx, conn, ticker, before, cut).items():
        units_by[key] = units_by.get(key, Decimal(0)) + units
    result = {}
    for (account, _), units in units_by.items():
        holder = holder_of(chart, account)
        if holder is not False and units != 0:
            result[holder] = units
    return result


def record_holders(ctx: Context, ticker: str, ex_date: dt.date) -> dict[str | None, Decimal]:
    """Each holder's shares of `ticker` entitled to a dividend ex `ex_date`, as `book_due` reads them
    (the opening's arrivals included): what IB's statement is compared with."""
    with ctx.engine.connect() as conn:
        return _holder_positions(ctx, conn, ticker, ex_date, cutoff.opening_cut(conn, ctx.settings.account))


def _opening_arrivals(ctx: Context, conn, ticker: str, before: dt.date,
                      cut: cutoff.Cut | None) -> dict[tuple[str, str], Decimal]:
    """The shares of `ticker` the opening brought in, when it was taken on or after the start of the
    ex-date `before`: held at the ex-date, since the opening books every execution the broker
    reports before it first (so the shares it brings in were held before any of them)."""
    if cut is None or not cut.entry or cut.at < _start(before):
        return {}
    out: dict[tuple[str, str], Decimal] = {}
    for p in ctx.ledger.get(cut.entry, conn).postings:
        if p.commodity == ticker and p.account.startswith(ctx.chart.root):
            out[(p.account, p.commodity)] = out.get((p.account, p.commodity), Decimal(0)) + p.units
    return out


def book_due(ctx: Context, today: dt.date) -> BookReport:
    """Book every stored action whose date is on or before `today`, each in its own transaction."""
    report = BookReport()
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(corporate_action).where(corporate_action.c.ex_date <= today.isoformat())
                            .order_by(corporate_action.c.ex_date, corporate_action.c.id)).all()
        cut = cutoff.opening_cut(conn, ctx.settings.account)
    for row in rows:
        action = _action(row)
        try:
            if _in_opening(row, cut) and (row.pay_txn_id if isinstance(action, Dividend) else row.ex_txn_id) is None:
                said = _book_in_opening(ctx, row.id, action, cut)
                if said:
                    report.in_opening.append(said)
                continue
            if isinstance(action, Split) and row.ex_txn_id is None:
                _book_split(ctx, row.id, action)
                report.booked.append(f"split {action.ticker} {action.new}:{action.old} on {action.date}")
            elif isinstance(action, Dividend):
                if row.ex_txn_id is None:
                    _book_ex(ctx, row.id, action)
                    report.booked.append(f"dividend {action.ticker} ex {action.ex_date}")
                if row.pay_txn_id is None and action.pay_date <= today:
                    _book_pay(ctx, row.id, action)
                    report.booked.append(f"dividend {action.ticker} paid {action.pay_date}")
        except CorporateActionError as exc:
            report.refused.append(f"{action.key}: {exc}")
    return report


def _booked(conn, row_id: int, column: str) -> bool:
    """Whether the action's entry is recorded (0: due but nobody held the shares, nothing to book)."""
    return conn.execute(sa.select(corporate_action.c[column]).where(corporate_action.c.id == row_id)).scalar_one() \
        is not None


def _book_ex(ctx: Context, row_id: int, dividend: Dividend) -> None:
    chart = ctx.chart
    with ctx.engine.begin() as conn:
        if _booked(conn, row_id, "ex_txn_id"):
            return  # another process booked it first
        positions = _holder_positions(ctx, conn, dividend.ticker, dividend.ex_date,
                                      cutoff.opening_cut(conn, ctx.settings.account))
        txn = dividend_ex_entry(chart, dividend, positions, _start(dividend.ex_date))
        txn_id = 0  # nobody held the shares: recorded as booked with no entry
        if txn is not None:
            _open_accounts(ctx, conn, {p.account for p in txn.postings})
            txn_id = ctx.ledger.book(txn, conn).id
        conn.execute(corporate_action.update().where(corporate_action.c.id == row_id).values(ex_txn_id=txn_id))


def _book_in_opening(ctx: Context, row_id: int, action: Dividend | Split, cut: cutoff.Cut) -> str | None:
    """An action the opening's cash holds, in one transaction: marked booked with no entry (0), or, a
    dividend whose ex-date entry stands from before the opening, its receivable paid against the
    opening's equity (the cash the opening booked holds it). Returns what to say (None: another
    process did it first)."""
    chart = ctx.chart
    with ctx.engine.begin() as conn:
        row = conn.execute(sa.select(corporate_action).where(corporate_action.c.id == row_id)).one()
        if isinstance(action, Split):
            if row.ex_txn_id is not None:
                return None
            conn.execute(corporate_action.update().where(corporate_action.c.id == row_id).values(ex_txn_id=0))
            return (f"split {action.ticker} {action.new}:{action.old} on {action.date}: before {cut.said}, whose "
                    f"positions and cash hold it")
        if row.pay_txn_id is not None:
            return None
        net = dividend_net(ctx.ledger.get(row.ex_txn_id, conn), chart) if row.ex_txn_id else Decimal(0)
        txn = dividend_pay_entry(chart, action, net, _start(action.pay_date), into=chart.opening_balances)
        pay_id = ctx.ledger.book(txn, conn).id if txn is not None else 0
        conn.execute(corporate_action.update().where(corporate_action.c.id == row_id)
                     .values(ex_txn_id=0 if row.ex_txn_id is None else row.ex_txn_id, pay_txn_id=pay_id))
    return in_opening_dividend(action, cut) + (
        f" (its receivable {net} {action.currency} paid into the opening's equity, entry {pay_id})" if pay_id else "")


def in_opening_dividend(dividend: Dividend, cut: cutoff.Cut) -> str:
    return (f"dividend {dividend.ticker} ex {dividend.ex_date} paid {dividend.pay_date}: before {cut.said}, whose "
            f"cash holds it")


def _book_pay(ctx: Context, row_id: int, dividend: Dividend) -> None:
    chart = ctx.chart
    with ctx.engine.begin() as conn:
        row = conn.execute(sa.select(corporate_action).where(corporate_action.c.id == row_id)).one()
        if row.pay_txn_id is not None:
            return
        net = dividend_net(ctx.ledger.get(row.ex_txn_id, conn), chart) if row.ex_txn_id else Decimal(0)  # 0: none
        txn = dividend_pay_entry(chart, dividend, net, _start(dividend.pay_date))
        txn_id = ctx.ledger.book(txn, conn).id if txn is not None else 0
        conn.execute(corporate_action.update().where(corporate_action.c.id == row_id).values(pay_txn_id=txn_id))


def _book_split(ctx: Context, row_id: int, split: Split) -> None:
    chart = ctx.chart
    with ctx.engine.begin() as conn:
        if _booked(conn, row_id, "ex_txn_id"):
            return
        after = ctx.ledger.balances(as_of=_start(split.date) - dt.timedelta(microseconds=1), prefix=chart.root,
                                    conn=conn, commodity=split.ticker)
        now = ctx.ledger.balances(prefix=chart.root, conn=conn, commodity=split.ticker)
        if after != now:
            raise CorporateActionError(
                f"{split.ticker} traded at or after the split date {split.date}: book splits before trading "
                f"the new shares (reverse the later fills, book the split, then re-book them)")
        lots = {}
        for (account, _), units in now.items():
            holder = holder_of(chart, account)
            if holder is not False and units != 0:
                lots[holder] = ctx.ledger.lots(account, split.ticker, conn)
        txn = split_entry(chart, split, lots, _start(split.date))
        txn_id = ctx.ledger.book(txn, conn).id if txn is not None else 0
        conn.execute(corporate_action.update().where(corporate_action.c.id == row_id).values(ex_txn_id=txn_id))


# -- the account's interest and fees -----------------------------------------------------------------


def account_cash_shares(config, item: AccountCash) -> dict[str, Decimal]:
    """Who bears an interest or fee amount, by the configured rule (pure)."""
    rule = config.interest_allocation if item.kind == "interest" else config.fee_allocation
    if rule == "capital":
        return allocate_cents(item.amount, {s.account_name: s.capital_share for s in config.strategies.values()})
    return {UNALLOCATED: item.amount}


def book_account_cash(ctx: Context, item: AccountCash, conn=None, key: str | None = None) -> tuple[int, bool]:
    """Book interest or a fee once, under `key` (the broker's reference's, cash_moves.claim_ref) or
    else its `ref` as it is; returns (entry id, booked now)."""
    if item.amount == 0:
        raise CorporateActionError(f"{item.kind} of 0 {item.currency}: nothing to book")
    txn = account_cash_entry(ctx.chart, item, account_cash_shares(trading_config(ctx), item), key)
    with _begin(ctx, conn) as c:
        _open_accounts(ctx, c, {p.account for p in txn.postings})
        booked = ctx.ledger.book(txn, c)
    return booked.id, booked.created


class _begin:
    """The caller's connection, or a new transaction."""

    def __init__(self, env, conn):
        self.env, self.conn, self._ctx = env, conn, None

    def __enter__(self):
        if self.conn is not None:
            return self.conn
        self._ctx = self.env.engine.begin()
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc) if self._ctx is not None else False
