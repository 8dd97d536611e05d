"""IB's Flex statement as the record: book once what the API does not deliver, flag what differs.

The API delivers executions and commissions, never dividends, interest or fees, and only a few
days of executions. IB's Flex statement (an XML report the trader downloads or schedules) has
all of it. `tradeledger import flex FILE` reads one with `ibflex` and, for the statement's
account only:

* Trades: an execution already booked (same execution id) is compared (side, quantity, price)
  and a difference becomes a `statement_difference` exception; a missed one is booked through
  the same path as a synced fill (attributed by its orderRef, else to Unattributed with an
  exception), exactly once. This is how an order of unknown outcome (one the API forgot,
  engine/trading/unknown.py) gets its fills: filled in full, it becomes `filled` and its
  exception is resolved.
* Dividends and their withholding tax (paired by IB's action id) become corporate actions, keyed
  by ticker and ex-date like every other source: a dividend already known is linked, one whose
  figures differ is a `statement_difference`, never a silent change. The per-share amount comes
  from IB's description ("... Cash Dividend USD 1.85 per Share ..."). What IB paid is compared
  with what the ledger's record holders imply. Due actions are then booked (`book_due`).
* Broker interest and other fees are booked once each (keyed by IB's transaction id) by the
  configured allocation rule (`[account_cash]`), unless the trader booked that transaction id by
  hand (`actions interest|fee --ref ID` or `adjust cash --ref ID`: the same key, cash_moves.claim_ref):
  then it is known (said, with its entry), and a different figure is a `statement_difference`. One
  booked by hand without an id, of the very movement (kind, currency, amount, day), stands for one
  line too (`cash_moves.by_hand_without_ref`).
* Deposits and withdrawals are proposed, not booked: an exception carries the exact
  `tradeledger adjust cash ... --ref ID` command. One booked with its transaction id stands for
  that line only; one booked without is matched by currency, amount and day (`unbooked_moves`).
* Interest, fees, deposits and withdrawals that moved at or before the account's opening (the line's
  time against the opening's, cutoff.py) are in the opening's cash: neither booked nor proposed,
  only said (`in_opening`), since either would count them twice. So are dividends paid on a day
  before the opening's (`cutoff.holds_paid`, the rule `book_due` applies): stored, not compared with
  the ledger's holders (the opening's positions arrived after their ex-date), never booked.
* Corporate-action records (splits with their cash in lieu, cash dividends) and option/futures
  expiries (`OptionEAE`) are read by `flex_records.py`: stored as the same corporate actions as
  every other source, a futures expiry matched with the expiry path's or booked at its price;
  what it cannot book is an exception saying what to do (`FlexReport.to_do`).

Replaying the same statement books nothing twice. Flex times are in the time zone the statement
was generated in (IB's default: US/Eastern); `tz` says which.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.broker.base import Contract, Execution
from tradeledger.engine.accounting.actions import (
    book_account_cash, book_due, in_opening_dividend, list_actions, record_holders, store_actions,
)
from tradeledger.engine.accounting.corporate import AccountCash, CorporateActionError, Dividend
from tradeledger.engine.setup.contracts_ib import ib_contract_namer
from tradeledger.engine.tables import adjustment, fill
from tradeledger.engine.targets.prices import trading_config
from tradeledger.engine.trading.fills import SyncReport, book_execution
from tradeledger.engine.trading.unknown import clear_settled
from tradeledger.engine.trust import cash_moves, cutoff
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception
from tradeledger.ledger.numbers import from_scaled

UTC = dt.timezone.utc
PER_SHARE = re.compile(r"Cash Dividend ([A-Z]{3}) ([0-9]+(?:\.[0-9]+)?) per Share")


class FlexError(ValueError):
    """A statement that cannot be read or is not this environment's; nothing was booked."""


@dataclass(frozen=True)
class FlexDividend:
    ticker: str
    ex_date: dt.date
    pay_date: dt.date
    per_share: Decimal
    currency: str
    gross: Decimal
    tax: Decimal  # positive: what IB withheld
    action_id: str


@dataclass(frozen=True)
class CashMove:
    date: dt.date
    amount: Decimal
    currency: str
    description: str
    ref: str


@dataclass(frozen=True)
class FlexStatement:
    account: str
    to_date: dt.date
    trades: tuple[Execution, ...]
    dividends: tuple[FlexDividend, ...]
    account_cash: tuple[AccountCash, ...]
    deposits: tuple[CashMove, ...]
    corporate_actions: tuple = ()  # ibflex CorporateAction records (flex_records reads them)
    option_eae: tuple = ()  # ibflex OptionEAE records
    times: dict = field(default_factory=dict)  # `flex-ID` -> when the cash line moved (UTC; `_moved_at`)


@dataclass
class FlexReport:
    trades_booked: list[str] = field(default_factory=list)
    trades_known: int = 0
    dividends: list[str] = field(default_factory=list)
    account_cash_booked: list[str] = field(default_factory=list)
    account_cash_known: int = 0
    account_cash_already: list[str] = field(default_factory=list)  # known ones standing: "... (ref R) as entry N"
    in_opening: list[str] = field(default_factory=list)  # cash lines the opening's cash holds: neither booked nor proposed
    proposed: list[str] = field(default_factory=list)  # adjust commands for deposits/withdrawals
    differences: list[str] = field(default_factory=list)
    booked_actions: list[str] = field(default_factory=list)
    corporate_actions: list[str] = field(default_factory=list)  # stored or linked from CorporateActions
    expiries_booked: list[str] = field(default_factory=list)
    expiries_known: int = 0
    to_do: list[str] = field(default_factory=list)  # not booked: each an exception saying what to do

    def as_json(self) -> dict:
        return dict(self.__dict__)


# -- reading (pure but for the file) -----------------------------------------------------------------


def _when(value, tz: ZoneInfo) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=tz)).astimezone(UTC)
    return dt.datetime.combine(value, dt.time(12), tz).astimezone(UTC)


def _moved_at(value, tz: ZoneInfo) -> dt.datetime:
    """When a cash line moved, as the opening's cut-off reads it (UTC): its time; a day alone is the
    end of that day in the statement's zone (IB posts cash at its end of day), so it is in the opening
    only when the opening came after that day."""
    if isinstance(value, dt.datetime):
        return _when(value, tz)
    return dt.datetime.combine(value, dt.time.max, tz).astimezone(UTC)


def _day(value) -> dt.date:
    """The statement's own date of a cash movement (its local day, as IB's statement shows it)."""
    return value.date() if isinstance(value, dt.datetime) else value


def _enum_value(x) -> str:
    return getattr(x, "value", x) or ""


def read_flex(path: str | Path, namer, tz: ZoneInfo) -> FlexStatement:
    from ibflex import parser

    try:
        response = parser.parse(str(path))
    except Exception as exc:  # ibflex raises its own errors and ElementTree's
        raise FlexError(f"{path}: not a Flex statement IB's format allows ({type(exc).__name__}: {exc})") from None
    if len(response.FlexStatements) != 1:
        raise FlexError(f"{path}: {len(response.FlexStatements)} statements; import one account's at a time")
    st = response.FlexStatements[0]
    trades = tuple(_execution(t, st.accountId, namer, tz) for t in st.Trades
                   if getattr(t, "ibExecID", None) and _enum_value(t.assetCategory) in ("STK", "FUT"))
    by_action: dict[str, list] = defaultdict(list)
    account_cash, deposits, times = [], [], {}
    for c in st.CashTransactions:
        kind = _enum_value(c.type)
        if c.dateTime is not None and c.transactionID:
            times[f"flex-{c.transactionID}"] = _moved_at(c.dateTime, tz)
        if kind in ("Dividends", "Payment In Lieu Of Dividends", "Withholding Tax"):
            by_action[c.actionID or f"{c.symbol}:{c.dateTime}"].append(c)
        elif kind in ("Broker Interest Received", "Broker Interest Paid"):
            account_cash.append(AccountCash("interest", _day(c.dateTime), c.amount, c.currency,
                                            c.description or kind, f"flex-{c.transactionID}"))
        elif kind in ("Other Fees", "Advisor Fees"):
            account_cash.append(AccountCash("fee", _day(c.dateTime), c.amount, c.currency,
                                            c.description or kind, f"flex-{c.transactionID}"))
        elif kind == "Deposits & Withdrawals":
            deposits.append(CashMove(_day(c.dateTime), c.amount, c.currency, c.description or kind,
                                     f"flex-{c.transactionID}"))
    dividends = tuple(_dividend(rows, tz) for rows in by_action.values())
    to_date = st.toDate if isinstance(st.toDate, dt.date) else dt.date.today()
    return FlexStatement(st.accountId, to_date, trades, tuple(d for d in dividends if d), tuple(account_cash),
                         tuple(deposits), tuple(st.CorporateActions), tuple(st.OptionEAE), times)


def _execution(t, account: str, namer, tz: ZoneInfo) -> Execution:
    category = _enum_value(t.assetCategory)
    expiry = t.expiry.strftime("%Y%m%d") if getattr(t, "expiry", None) else ""
    raw = Contract(code=t.symbol, sec_type=category, symbol=t.underlyingSymbol or t.symbol if category == "FUT"
                   else t.symbol, exchange=t.exchange or "", currency=t.currency, multiplier=t.multiplier or Decimal(1),
                   expiry=expiry, trading_class="")
    contract = namer(raw) if namer else raw
    commission = -t.ibCommission if t.ibCommission is not None else None
    return Execution(exec_id=t.ibExecID, account=account, contract=contract,
                     side="BUY" if _enum_value(t.buySell) in ("BUY", "BUY (Ca.)") else "SELL",
                     quantity=abs(t.quantity), price=t.tradePrice, time=_when(t.dateTime, tz),
                     order_ref=t.orderReference or "", commission=commission,
                     commission_currency=t.ibCommissionCurrency or t.currency)


def _dividend(rows, tz: ZoneInfo) -> FlexDividend | None:
    gross_rows = [r for r in rows if _enum_value(r.type) != "Withholding Tax"]
    if not gross_rows:
        return None
    first = gross_rows[0]
    gross = sum((r.amount for r in gross_rows), Decimal(0))
    tax = -sum((r.amount for r in rows if _enum_value(r.type) == "Withholding Tax"), Decimal(0))
    match = PER_SHARE.search(first.description or "")
    if first.exDate is None or match is None:
        raise FlexError(f"dividend {first.symbol} of {gross} {first.currency}: the statement lacks its ex-date or "
                        f"per-share amount; add exDate and the description to the Flex query")
    ex = first.exDate.date() if isinstance(first.exDate, dt.datetime) else first.exDate
    return FlexDividend(first.symbol, ex, _day(first.dateTime), Decimal(match.group(2)), match.group(1),
                        gross, tax, str(first.actionID or ""))


# -- importing -----------------------------------------------------------------------------------------


def import_flex(ctx: Context, path: str | Path, tz: str = "America/New_York", now: dt.datetime | None = None) -> FlexReport:
    now = now or ctx.now()
    config = trading_config(ctx)
    statement = read_flex(path, ib_contract_namer(config), ZoneInfo(tz))
    if statement.account != ctx.settings.account:
        raise FlexError(f"{path} is account {statement.account}'s statement; this environment is "
                        f"{ctx.settings.account}: nothing booked")
    report = FlexReport()
    _import_trades(ctx, statement, report, now)
    _import_dividends(ctx, statement, report, now)
    statement = _after_opening(ctx, statement, report)
    by_hand: set[int] = set()  # entries booked by hand without an id, each standing for one line
    for item in statement.account_cash:
        if _book_statement_cash(ctx, item, report, now, by_hand):
            report.account_cash_booked.append(f"{item.kind} {item.amount} {item.currency} {item.date}")
        else:
            report.account_cash_known += 1
    _propose_cash_moves(ctx, statement, report, now)
    _import_records(ctx, statement, config, report, now)
    booked = book_due(ctx, statement.to_date)
    report.booked_actions = booked.booked
    report.in_opening += [line for line in booked.in_opening if line not in report.in_opening]
    for refused in booked.refused:
        key, _, why = refused.partition(": ")
        report.to_do.append(f"corporate action {key} is due but was not booked: {why}")
        with ctx.engine.begin() as conn:
            raise_exception(conn, ExceptionKind.CORPORATE_ACTION, key, report.to_do[-1], severity="error", now=now)
    return report


def _after_opening(ctx: Context, statement: FlexStatement, report: FlexReport) -> FlexStatement:
    """The statement without the interest, fees, deposits and withdrawals that moved at or before the
    opening's cut-off (cutoff.py): the opening's cash holds them, so they are neither booked nor
    proposed, only said (`in_opening`). Before the account has an opening, none are left out."""
    with ctx.engine.connect() as conn:
        cut = cutoff.opening_cut(conn, statement.account)
    if cut is None:
        return statement

    def held(ref: str) -> bool:
        at = statement.times.get(ref)
        return at is not None and cutoff.holds(cut, at)

    for line in [*statement.account_cash, *statement.deposits]:
        if held(line.ref):
            kind = getattr(line, "kind", None) or ("deposit" if line.amount > 0 else "withdrawal")
            report.in_opening.append(f"{kind} {line.amount} {line.currency} {line.date} "
                                     f"(ref {line.ref.removeprefix(cash_moves.FLEX)}): before {cut.said}")
    return replace(statement, account_cash=tuple(a for a in statement.account_cash if not held(a.ref)),
                   deposits=tuple(d for d in statement.deposits if not held(d.ref)))


def _import_records(ctx: Context, statement: FlexStatement, config, report: FlexReport, now: dt.datetime) -> None:
    """Corporate-action records and option/futures expiries (engine/trust/flex_records.py)."""
    from tradeledger.engine.trust.flex_records import RecordsReport, import_corporate_actions, import_expiries

    records = RecordsReport([], [], 0, [])
    shares = {name for name, i in config.instruments.items() if not i.is_future}
    difference = lambda subject, detail: _difference(ctx, subject, detail, report, now)  # noqa: E731
    import_corporate_actions(ctx, statement.corporate_actions, shares, difference, now, records)
    import_expiries(ctx, statement.option_eae, ib_contract_namer(config), difference, now, records)
    report.corporate_actions = records.actions
    report.expiries_booked, report.expiries_known = records.expiries_booked, records.expiries_known
    report.to_do += records.todo


def _difference(ctx: Context, subject: str, detail: str, report: FlexReport, now: dt.datetime) -> None:
    report.differences.append(detail)
    with ctx.engine.begin() as conn:
        raise_exception(conn, ExceptionKind.STATEMENT_DIFFERENCE, subject, detail, severity="error", now=now)


def _import_trades(ctx: Context, statement: FlexStatement, report: FlexReport, now: dt.datetime) -> None:
    for e in statement.trades:
        with ctx.engine.begin() as conn:
            booked = conn.execute(sa.select(fill).where(fill.c.account == e.account, fill.c.exec_key ==
                                                        e.base_exec_id, fill.c.superseded_by.is_(None))).first()
            if booked is None:
                book_execution(conn, ctx.books, e, SyncReport(), now=now)
                clear_settled(conn, now)  # an order of unknown outcome it filled in full is known now
                report.trades_booked.append(e.base_exec_id)
                continue
        report.trades_known += 1
        ledger_side, qty, price = booked.side, from_scaled(booked.quantity), from_scaled(booked.price)
        if (ledger_side, qty, price) != (e.side, e.quantity, e.price):
            _difference(ctx, f"{e.contract.code} {e.base_exec_id}",
                        f"execution {e.exec_id}: IB's statement says {e.side} {e.quantity} @ {e.price}, the ledger "
                        f"booked {ledger_side} {qty} @ {price}", report, now)


def _import_dividends(ctx: Context, statement: FlexStatement, report: FlexReport, now: dt.datetime) -> None:
    with ctx.engine.connect() as conn:
        cut = cutoff.opening_cut(conn, statement.account)
    for d in statement.dividends:
        withholding = _stored_rate(ctx, d) or ((d.tax / d.gross).normalize() if d.gross > 0 and d.tax else Decimal(0))
        dividend = Dividend(d.ticker, d.ex_date, d.pay_date, d.per_share, d.currency, withholding, "flex",
                            d.action_id)
        try:
            with ctx.engine.begin() as conn:
                store_actions(conn, [dividend], now)
        except CorporateActionError as exc:
            _difference(ctx, f"dividend {d.ticker} {d.ex_date}", f"IB's statement: {exc}", report, now)
            continue
        report.dividends.append(dividend.key)
        if cutoff.holds_paid(cut, d.ticker, d.pay_date):  # said on every import, as book_due marks it once
            report.in_opening.append(in_opening_dividend(dividend, cut))
            continue  # its holders are not the ledger's to compare: the opening's positions came after
        held = sum(record_holders(ctx, d.ticker, d.ex_date).values(), Decimal(0))
        if held * d.per_share != d.gross:
            _difference(ctx, f"dividend {d.ticker} {d.ex_date}",
                        f"IB paid {d.gross} {d.currency} gross on {d.ticker} ex {d.ex_date} ({d.gross / d.per_share} "
                        f"shares x {d.per_share}); the ledger's holders held {held}", report, now)


def _stored_rate(ctx: Context, d: FlexDividend) -> Decimal | None:
    """The withholding rate of the dividend already stored (from a file, the broker), when it yields IB's
    account-level tax to the cent on IB's gross: IB states the tax, not the rate, and 2.78 / 18.50 is not
    the 0.15 a file says, though both withhold 2.78."""
    stored = next((a for a in list_actions(ctx) if a["key"] == f"{d.ticker}:{d.ex_date.isoformat()}:div"), None)
    if stored is None or not stored["withholding"]:
        return None
    rate = Decimal(stored["withholding"])
    return rate if (d.gross * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN) == d.tax else None


def _book_statement_cash(ctx: Context, item: AccountCash, report: FlexReport, now: dt.datetime,
                         by_hand: set[int]) -> bool:
    """Book the statement's interest or fee unless its transaction id already stands for an entry;
    True when booked now. Standing for one (booked by an earlier import, or by hand with `actions
    interest|fee --ref ID` or `adjust cash --ref ID`: the same key, cash_moves.claim_ref, which
    finds the old form of the first too) it is known, and compared: another movement is a
    `statement_difference`. A hand entry of the id that was reversed leaves the statement's to
    book, under the next key; one the statement booked and the trader reversed stays reversed.
    Booked by hand without the id (`actions interest|fee` or `adjust cash --kind interest|fee`, as
    reconciliation proposed it before it carried the id): an entry of the very movement (kind,
    currency, amount, day) stands for one line, `by_hand` the entries this import has so matched."""
    ref, chart = item.ref.removeprefix(cash_moves.FLEX), ctx.chart
    stated = cash_moves.Movement(item.kind, item.currency, item.amount, item.date)
    with ctx.engine.begin() as conn:
        claim = cash_moves.claim_ref(conn, ctx.ledger, chart, item.kind, ref)
        standing = claim.standing
        if standing is None:
            if any(cash_moves.from_statement(ctx.ledger.get(e, conn)) for e in claim.taken.values()):
                return False  # the statement's own entry, reversed since by the trader
            cash_moves.lock_day(conn, chart.broker_account, item.currency, item.date)  # as the hand books
            hand = cash_moves.by_hand_without_ref(conn, ctx.ledger, chart, stated, by_hand)
            if hand is not None:
                by_hand.add(hand.entry)
                report.account_cash_already.append(
                    f"{item.kind} {item.amount} {item.currency} {item.date} (ref {ref}) as entry {hand.entry}, "
                    "booked by hand without its ref")
                return False
            return book_account_cash(ctx, item, conn, key=claim.key)[1]
        what = cash_moves.differs(standing.movement, stated, dated=False, by="statement")
        if not what:
            report.account_cash_already.append(f"{item.kind} {item.amount} {item.currency} {item.date} (ref {ref}) "
                                               f"as entry {standing.entry}")
            return False
        by_hand = not cash_moves.from_statement(ctx.ledger.get(standing.entry, conn))
    _difference(ctx, f"{item.kind} {ref}", f"IB's {item.kind} {ref} of {item.amount} {item.currency} on {item.date} "
                f"is booked{' by hand' if by_hand else ''} as entry {standing.entry} with {', '.join(what)}", report, now)
    return False


def _booked_cash(ctx: Context) -> list[tuple[str, Decimal, dt.date, str | None]]:
    """(currency, amount, day of the entry, the broker's reference or None) of every cash
    adjustment booked (`adjust cash`) that stands (a reversed one stands for no movement)."""
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.select(adjustment.c.subject, adjustment.c.quantity, adjustment.c.txn_id)
                            .where(adjustment.c.kind == "cash", adjustment.c.quantity.is_not(None))).all()
        reversed_ = ctx.ledger.reversals([r.txn_id for r in rows], conn)
        out = []
        for r in rows:
            if r.txn_id in reversed_:
                continue
            txn = ctx.ledger.get(r.txn_id, conn)
            out.append((r.subject, from_scaled(r.quantity), txn.time.date(),
                        cash_moves.ref_of_key(ctx.chart.broker_account, txn.key)))
        return out


def unbooked_moves(moves, booked: list[tuple[str, Decimal, dt.date, str | None]]) -> list:
    """The statement's deposits and withdrawals that no cash adjustment stands for (pure). An
    adjustment booked with the broker's reference (`adjust cash --ref ID`) stands for the move of
    that transaction id and no other. Each one without of the same currency and amount stands for
    one move, its own day's first (booked with `--date`), else the earliest move on or before its
    day (booked when it was found). An adjustment of the same amount on an earlier day is another
    move (last month's deposit)."""
    refs = {f"{cash_moves.FLEX}{b[3]}" for b in booked if b[3]}
    left = sorted((b for b in booked if not b[3]), key=lambda b: (b[2], b[0], b[1]))
    moves = sorted((m for m in moves if m.ref not in refs), key=lambda m: m.date)
    for same_day in (True, False):
        pending = []
        for move in moves:
            match = next((b for b in left if (b[0], b[1]) == (move.currency, move.amount)
                          and (b[2] == move.date if same_day else b[2] >= move.date)), None)
            if match is None:
                pending.append(move)
            else:
                left.remove(match)
        moves = pending
    return moves


def _propose_cash_moves(ctx: Context, statement: FlexStatement, report: FlexReport, now: dt.datetime) -> None:
    booked = _booked_cash(ctx)
    for move in statement.deposits:  # booked by hand with its id, as another movement: a difference
        ref = move.ref.removeprefix(cash_moves.FLEX)
        entry = next((b for b in booked if b[3] == ref), None)
        if entry is not None and (entry[0], entry[1]) != (move.currency, move.amount):
            _difference(ctx, f"cash {ref}", f"IB's statement shows {move.amount} {move.currency} on {move.date} "
                        f"for transaction {ref}; the ledger booked {entry[1]} {entry[0]} under it", report, now)
    for move in unbooked_moves(statement.deposits, booked):
        kind = "deposit" if move.amount > 0 else "withdrawal"
        command = (f'tradeledger adjust cash {move.currency} {move.amount} --kind {kind} --date {move.date} '
                   f'--ref {move.ref.removeprefix(cash_moves.FLEX)} --reason "{move.description} ({move.date}, IB '
                   f'{move.ref})"')
        report.proposed.append(command)
        with ctx.engine.begin() as conn:
            raise_exception(conn, ExceptionKind.CASH_MOVEMENT, f"{move.currency} {move.amount} {move.date}",
                            f"IB's statement shows a {kind} of {move.amount} {move.currency} on {move.date} that the "
                            f"ledger has not booked; if it is right: {command}", severity="warning", now=now,
                            dedupe_key=dedupe_key(ExceptionKind.CASH_MOVEMENT, statement.account, move.ref))
