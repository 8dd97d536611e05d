"""IB's Flex statement, second part: corporate-action records and option/futures expiries.

`engine/trust/flex.py` reads the statement and books its trades, dividends, interest and fees;
this module reads two more of its sections and books them through the same paths as every other
source, exactly once, linked to what is already booked. What it cannot book, or what differs
from the ledger, becomes an exception that says what to do; nothing is changed silently.

**CorporateActions** (`<CorporateAction>`, grouped by IB's action id):

* Splits: forward (`FS`), forward split issue (`FI`) and reverse (`RS`). The ratio comes from
  IB's description ("... SPLIT 1 FOR 10 ..."), the date from the record's report date (the day
  the new shares trade; IB stamps the evening before in dateTime). A reverse split comes as two
  rows, the old shares leaving under `TICKER.OLD` and the new arriving under `TICKER`; a forward
  split as one row of the shares added. The shares IB reports are compared with what the ledger's
  holders held before the split (a difference is an exception, nothing stored). When the split
  leaves the account a fraction of a share, IB's proceeds for it are the cash in lieu: their
  price per new share is stored with the split, which then books as `actions import` would
  (`entries.split_postings`). A split is stored once per ticker and date whatever the source: a
  file's or the broker's with the same figures is linked, one with other figures is an exception.
* Cash dividends (`CD`), where IB reports them here as well as in its cash transactions: linked
  to the dividend of that ticker paid (or ex) on that day, compared per share; one tradeledger
  has no record of is an exception naming the `actions import` row to add (the record has no
  ex-date, which the booking needs).
* Anything else (mergers, spin-offs, ...) is an exception: tradeledger does not book it.

**OptionEAE** (exercises, assignments, expirations):

* A future's expiry is the expiry path's final settlement (`futures/expiry.py`): one already
  booked is matched (its price compared); one not booked, while the ledger holds the contract, is
  booked from the record's price (`entries.expiry_entry`), or, with no price, is an exception
  naming the settlement row to import.
* Options: tradeledger does not hold options; each record is an exception saying what to book
  by hand (an assignment's or exercise's shares come as a trade in the statement).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from tradeledger.engine.context import Context
from tradeledger.broker.base import Contract
from tradeledger.engine.accounting.actions import list_actions, store_actions
from tradeledger.engine.accounting.corporate import Split
from tradeledger.engine.accounting.entries import expiry_entry
from tradeledger.engine.accounting.holdings import holder_of, known_contracts, load_holdings, save_marks
from tradeledger.engine.futures.expiry import missing_key
from tradeledger.engine.trust.exceptions import ExceptionKind, dedupe_key, raise_exception, resolve_by_key
from tradeledger.errors import CorporateActionError

UTC = dt.timezone.utc
ZERO = Decimal(0)
NANO = Decimal("1e-9")
CENT = Decimal("0.01")
SPLIT_RATIO = re.compile(r"SPLIT\s+([0-9]+(?:\.[0-9]+)?)\s+FOR\s+([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
CASH_DIVIDEND = re.compile(r"CASH DIVIDEND\s+([A-Z]{3})\s+([0-9]+(?:\.[0-9]+)?)\s+PER SHARE", re.IGNORECASE)
SPLIT_TYPES = ("FS", "FI", "RS")
REORG_NAMES = {"TC": "merger", "SO": "spin-off", "SD": "stock dividend", "DW": "delisting", "RI": "rights issue",
               "IC": "issue change", "BM": "bond maturity", "OR": "asset purchase", "PI": "purchase issue"}


def _value(x) -> str:
    return getattr(x, "value", x) or ""


def _date(record) -> dt.date | None:
    day = getattr(record, "reportDate", None) or getattr(record, "dateTime", None) or getattr(record, "date", None)
    return day.date() if isinstance(day, dt.datetime) else day


# -- reading (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlexSplit:
    ticker: str
    date: dt.date
    new: Decimal
    old: Decimal
    shares_before: Decimal | None  # the old shares IB took out (reverse split), else None
    shares_after: Decimal | None  # the new shares IB put in (reverse split), else None
    shares_added: Decimal | None  # forward split: the shares IB added
    proceeds: Decimal  # cash IB paid for a fraction (0: none)
    currency: str
    action_id: str


@dataclass(frozen=True)
class FlexCashDividend:
    ticker: str
    date: dt.date
    per_share: Decimal
    currency: str
    action_id: str


@dataclass(frozen=True)
class FlexOtherAction:
    ticker: str
    date: dt.date | None
    kind: str
    description: str
    action_id: str


@dataclass(frozen=True)
class FlexExpiry:
    category: str  # FUT, OPT, FOP
    contract: Contract  # named as tradeledger names it (futures)
    what: str  # Expiration, Assignment, Exercise, Cash Settlement
    date: dt.date | None
    quantity: Decimal  # as IB reports it (closing a long: negative)
    price: Decimal | None  # the final settlement / exercise price, None when IB gives none
    ref: str  # IB's trade id


def read_corporate_actions(records) -> list[FlexSplit | FlexCashDividend | FlexOtherAction]:
    """IB's corporate-action rows, grouped by action id, as what tradeledger books (pure)."""
    groups: dict[str, list] = defaultdict(list)
    for r in records:
        groups[str(r.actionID or r.transactionID or f"{r.symbol}:{r.dateTime}")].append(r)
    result: list = []
    for action_id, rows in groups.items():
        first = rows[0]
        kind = _value(first.type)
        description = first.actionDescription or first.description or ""
        ticker = next((r.symbol for r in rows if r.symbol and not r.symbol.endswith(".OLD")),
                      (first.symbol or "").removesuffix(".OLD"))
        day = _date(first)
        if kind in SPLIT_TYPES and (match := SPLIT_RATIO.search(description)) and day is not None:
            old_rows = [r for r in rows if (r.symbol or "").endswith(".OLD")]
            new_rows = [r for r in rows if not (r.symbol or "").endswith(".OLD")]
            new_qty = sum((r.quantity or ZERO for r in new_rows), ZERO)
            proceeds = sum((r.proceeds or ZERO for r in rows), ZERO)
            result.append(FlexSplit(
                ticker, day, Decimal(match.group(1)), Decimal(match.group(2)),
                -sum((r.quantity or ZERO for r in old_rows), ZERO) if old_rows else None,
                new_qty if old_rows else None, None if old_rows else new_qty, proceeds,
                first.currency or "", action_id))
        elif kind == "CD" and (match := CASH_DIVIDEND.search(description)) and day is not None:
            result.append(FlexCashDividend(ticker, day, Decimal(match.group(2)), match.group(1).upper(), action_id))
        else:
            result.append(FlexOtherAction(ticker, day, REORG_NAMES.get(kind, kind or "unknown action"), description,
                                          action_id))
    return result


def read_expiries(records, namer) -> list[FlexExpiry]:
    result = []
    for r in records:
        category = _value(r.assetCategory)
        what = _value(r.transactionType)
        if what in ("Buy", "Sell"):  # the closing trade IB lists with an exercise: the trade, not the event
            continue
        expiry = r.expiry.strftime("%Y%m%d") if r.expiry else ""
        raw = Contract(code=r.symbol or "", sec_type=category, symbol=(r.underlyingSymbol or r.symbol or "")
                       if category == "FUT" else r.symbol or "", exchange=r.listingExchange or "",
                       currency=r.currency or "", multiplier=r.multiplier or Decimal(1), expiry=expiry)
        contract = namer(raw) if namer and category == "FUT" else raw
        price = r.tradePrice if r.tradePrice else (r.markPrice or None)
        day = r.date or r.expiry
        result.append(FlexExpiry(category, contract, what, day, r.quantity or ZERO, price,
                                 str(r.tradeID or f"{r.symbol}:{day}")))
    return result


def cash_in_lieu_price(proceeds: Decimal, fraction: Decimal) -> Decimal:
    """The price per new share of IB's proceeds for a fraction, to the ledger's 9 places (pure)."""
    return (proceeds / fraction).quantize(NANO, rounding=ROUND_HALF_EVEN).normalize()


# -- importing ---------------------------------------------------------------------------------------


@dataclass
class RecordsReport:
    actions: list[str]  # corporate actions stored or linked (their keys)
    expiries_booked: list[str]
    expiries_known: int
    todo: list[str]  # what could not be booked, with what to do (each also an exception)


def _exception(ctx: Context, kind: ExceptionKind, subject: str, detail: str, ref: str, now: dt.datetime,
               report: RecordsReport, severity: str = "error", key: str | None = None) -> None:
    report.todo.append(detail)
    with ctx.engine.begin() as conn:
        raise_exception(conn, kind, subject, detail, severity=severity, now=now,
                        dedupe_key=key or dedupe_key(kind, ctx.settings.account, "flex", ref))


def _held_before(ctx: Context, ticker: str, day: dt.date) -> Decimal:
    """The shares of `ticker` the ledger's holders held at the end of the day before `day`."""
    balances = ctx.ledger.balances(as_of=day, prefix=ctx.chart.root, commodity=ticker)
    return sum((u for (account, _), u in balances.items() if holder_of(ctx.chart, account) is not False), ZERO)


def import_corporate_actions(ctx: Context, records, shares: set[str], difference, now: dt.datetime,
                             report: RecordsReport) -> None:
    """Store the statement's splits (and link its cash dividends) as corporate actions, once each;
    `difference(subject, detail)` raises what differs from the ledger."""
    for item in read_corporate_actions(records):
        if isinstance(item, FlexOtherAction):
            _exception(ctx, ExceptionKind.CORPORATE_ACTION, f"{item.kind} {item.ticker} {item.date}",
                       f"IB's statement shows a {item.kind} on {item.ticker} on {item.date} ({item.description}): "
                       f"tradeledger does not book it; book its effect by hand (tradeledger adjust ...)",
                       item.action_id, now, report)
        elif item.ticker not in shares:
            _exception(ctx, ExceptionKind.CORPORATE_ACTION, f"{item.ticker} {item.date}",
                       f"IB's statement shows a corporate action on {item.ticker}, which is not a configured share: "
                       f"configure it or book the action by hand", item.action_id, now, report)
        elif isinstance(item, FlexSplit):
            _import_split(ctx, item, difference, now, report)
        else:
            _link_cash_dividend(ctx, item, difference, now, report)


def _import_split(ctx: Context, item: FlexSplit, difference, now: dt.datetime, report: RecordsReport) -> None:
    subject = f"split {item.ticker} {item.date}"
    held = _held_before(ctx, item.ticker, item.date)
    exact = held * item.new / item.old
    whole = item.shares_after if item.shares_after is not None else held + (item.shares_added or ZERO)
    if item.shares_before is not None and item.shares_before != held:
        difference(subject, f"IB's statement: split {item.ticker} {item.new}:{item.old} on {item.date} took "
                            f"{item.shares_before} old shares; the ledger's holders held {held}")
        return
    if whole != exact.to_integral_value(rounding="ROUND_FLOOR"):
        difference(subject, f"IB's statement: split {item.ticker} {item.new}:{item.old} on {item.date} leaves "
                            f"{whole} shares; the ledger's {held} make {exact}")
        return
    fraction = exact - whole
    price = None
    if fraction > 0 and item.proceeds > 0:
        price = cash_in_lieu_price(item.proceeds, fraction)
        if (fraction * price).quantize(CENT) != item.proceeds:
            difference(subject, f"IB's statement: cash in lieu of {item.proceeds} for {fraction} {item.ticker} "
                                f"is not a price per share to 9 places; book the split by hand")
            return
    split = Split(item.ticker, item.date, item.new, item.old, "flex", item.action_id, price,
                  item.currency if price is not None else "")
    try:
        with ctx.engine.begin() as conn:
            store_actions(conn, [split], now)
    except CorporateActionError as exc:
        difference(subject, f"IB's statement: {exc}")
        return
    report.actions.append(split.key)
    if fraction > 0 and price is None:
        stored = next((a for a in list_actions(ctx) if a["key"] == split.key), None)
        if stored is None or stored["amount"] is None:
            _exception(ctx, ExceptionKind.CORPORATE_ACTION, subject,
                       f"IB's statement: split {item.ticker} {item.new}:{item.old} on {item.date} leaves the account "
                       f"{fraction} of a share, and shows no cash in lieu for it: add its price per new share "
                       f"(tradeledger actions import FILE with split,{item.ticker},{item.date},,PRICE,"
                       f"{item.currency or 'USD'},,{item.new}:{item.old}), then tradeledger actions book",
                       item.action_id, now, report)


def _link_cash_dividend(ctx: Context, item: FlexCashDividend, difference, now: dt.datetime, report: RecordsReport) -> None:
    day = item.date.isoformat()
    known = [a for a in list_actions(ctx) if a["kind"] == "dividend" and a["ticker"] == item.ticker
             and day in (a["pay_date"], a["ex_date"])]
    if not known:
        _exception(ctx, ExceptionKind.CORPORATE_ACTION, f"dividend {item.ticker} {item.date}",
                   f"IB's statement shows a cash dividend of {item.per_share} {item.currency} per share on "
                   f"{item.ticker} on {item.date} that tradeledger has no record of, and gives no ex-date: import "
                   f"it (tradeledger actions import FILE with dividend,{item.ticker},EX_DATE,{day},{item.per_share},"
                   f"{item.currency},WITHHOLDING,), then tradeledger actions book", item.action_id, now, report)
        return
    action = known[0]
    if (Decimal(action["amount"]), action["currency"]) != (item.per_share, item.currency):
        difference(f"dividend {item.ticker} {item.date}",
                   f"IB's statement: its corporate actions show a cash dividend of {item.per_share} {item.currency} "
                   f"per share on {item.ticker} on {item.date}; the ledger's is {action['amount']} "
                   f"{action['currency']} ({action['key']})")
        return
    report.actions.append(action["key"])


def import_expiries(ctx: Context, records, namer, difference, now: dt.datetime, report: RecordsReport) -> None:
    """Match or book each futures expiry of the statement once; every option record is an exception."""
    for item in read_expiries(records, namer):
        code = item.contract.code
        if item.date is None:
            _exception(ctx, ExceptionKind.STATEMENT_DIFFERENCE, f"{item.what} {code}",
                       f"IB's statement shows an {item.what.lower()} of {item.quantity} {code} without a date: add "
                       f"the date and expiry fields to the Flex query's Option Exercises section", item.ref, now,
                       report)
            continue
        if item.category != "FUT":
            _exception(ctx, ExceptionKind.STATEMENT_DIFFERENCE, f"{item.what} {code} {item.date}",
                       f"IB's statement shows an option {item.what.lower()} of {item.quantity} {code} on {item.date}: "
                       f"tradeledger does not hold options; book its effect by hand (tradeledger adjust ...; the "
                       f"shares of an exercise or assignment come as a trade in the statement)", item.ref, now,
                       report, severity="warning")
            continue
        _import_futures_expiry(ctx, item, difference, now, report)


def _import_futures_expiry(ctx: Context, item: FlexExpiry, difference, now: dt.datetime, report: RecordsReport) -> None:
    ledger, chart, code = ctx.ledger, ctx.chart, item.contract.code
    subject = f"expiry {code}"
    booked_id = ledger.find_by_key(f"expiry:{chart.broker_account}:{code}")
    if booked_id is not None:
        booked_price = Decimal(dict(ledger.get(booked_id).meta)["price"])
        if item.price is not None and booked_price != item.price:
            difference(subject, f"IB's statement: {code} expired at {item.price}; the ledger booked its final "
                                f"settlement at {booked_price}")
            return
        report.expiries_known += 1
        return
    held = sum((u for (account, _), u in ledger.balances(prefix=chart.root, commodity=code).items()
                if holder_of(chart, account) is not False), ZERO)
    if held == 0:
        if item.quantity:
            difference(subject, f"IB's statement: {abs(item.quantity)} {code} expired on {item.date}; the ledger "
                                f"holds none and booked no expiry")
        return
    if abs(item.quantity) != abs(held):
        difference(subject, f"IB's statement: {abs(item.quantity)} {code} expired on {item.date}; the ledger's "
                            f"holders hold {held}")
        return
    if item.price is None:
        _exception(ctx, ExceptionKind.MISSING_FINAL_SETTLEMENT, code,
                   f"IB's statement shows {code} expired on {item.date} without its final settlement price: import "
                   f"`date,contract,settle` with the row `{item.date.isoformat()},{code},PRICE` and reconcile "
                   f"(the expiry path books it)", item.ref, now, report, key=missing_key(chart.broker_account, code))
        return
    with ctx.engine.begin() as conn:
        contract = known_contracts(ledger, conn)[code]
        holdings = load_holdings(conn, ctx.books, contract)
        when = min(dt.datetime.combine(item.date, dt.time(23, 0), tzinfo=UTC), now)
        txn, after = expiry_entry(chart, contract, item.date, when, item.price, holdings)
        if txn is not None and ledger.book(txn, conn).created:
            save_marks(conn, contract, after, now)
            report.expiries_booked.append(f"{code} at {item.price}")
        resolve_by_key(conn, missing_key(chart.broker_account, code), "flex", "final settlement booked from IB's "
                       "statement", now=now)
