"""Corporate actions in reconciliation: what the broker paid that the ledger has not booked.

Reconciliation books the stored corporate actions that have come due (a dividend's ex-date and
pay date, a split's date) before it compares cash and positions, just as it books the broker's
executions first. What is left is made visible, typed, with what to do:

* `unbooked_dividend`: the broker paid a dividend on a ticker (its cash journal shows it) that
  tradeledger has no record of for that day: import it (`tradeledger actions import FILE`, or
  IB's statement with `tradeledger import flex FILE`), then reconcile again. Never one paid at or
  before the opening's cut-off (cutoff.py): the opening's cash holds it, and booked it would count
  twice; it is said ("in the opening's cash (not booked again)"), and one raised before the opening
  was taken is resolved;
* `corporate_action`: a stored action that is due but could not be booked (e.g. a split after
  the new shares traded), with the reason; or a split the broker made that tradeledger has no
  record of (`tradeledger actions sync`);
* `cash_movement`: interest or a fee the broker moved on a day that the ledger has not booked on
  that day, with the `tradeledger actions interest|fee ...` command that books it: one per
  movement with `--ref ID` when the broker gave each its id (booked once, by hand or by IB's
  statement: cash_moves.claim_ref), else one for the day's amount, saying to add the id. Never one
  the opening's cash holds (moved at or before its cut-off, cutoff.py): booked, it would count twice.

Only brokers that report cash events (the simulated one) allow the first check; for IB the Flex
statement is the record of dividends, interest and fees.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from tradeledger.engine.context import Context
from tradeledger.broker.base import BrokerError, CashEvent
from tradeledger.engine.accounting.actions import book_due, list_actions
from tradeledger.engine.trust import cash_moves, cutoff
from tradeledger.engine.trust.exceptions import (
    UNBOOKED_DIVIDEND, ExceptionKind, dedupe_key, raise_exception, resolve_by_key,
)
from tradeledger.errors import AdjustError
from tradeledger.ledger.db import read_connection


def unbooked_dividends(events: list[CashEvent], known: set[tuple[str, dt.date]]) -> list[tuple[str, dt.date, Decimal, str]]:
    """(ticker, day, amount, currency) of broker dividends with no stored action paid that day (pure)."""
    paid: dict[tuple[str, dt.date, str], Decimal] = defaultdict(Decimal)
    for e in events:
        if e.kind == "dividend":
            paid[(e.ref, e.time.date(), e.currency)] += e.amount
    return [(ticker, day, amount, currency) for (ticker, day, currency), amount in sorted(paid.items())
            if (ticker, day) not in known]


def check_corporate_actions(ctx: Context, broker, today: dt.date, now: dt.datetime) -> list[str]:
    """Book due actions, then raise what is still missing; returns notes for the reconciliation."""
    report = book_due(ctx, today)
    notes = [f"booked {what}" for what in report.booked] + [
        f"in the opening's cash (not booked again): {what}" for what in report.in_opening]
    with ctx.engine.begin() as conn:
        for refused in report.refused:
            key, _, why = refused.partition(": ")
            notes.append(f"could not book {refused}")
            raise_exception(conn, ExceptionKind.CORPORATE_ACTION, key, f"corporate action {key} is due but was not booked: {why}",
                            severity="error", now=now)
    events = getattr(broker, "cash_events", None)
    if events is None:
        return notes
    try:
        paid = events()
    except BrokerError as exc:  # the reconciliation that follows records the broker as unreachable
        return notes + [f"broker cash events not read: {exc}"]
    actions = list_actions(ctx)
    known = {(a["ticker"], dt.date.fromisoformat(a["pay_date"])) for a in actions if a["kind"] == "dividend"}
    with read_connection(ctx.engine) as conn:
        cut = cutoff.opening_cut(conn, ctx.settings.account)
    # before the account has an opening, all of them: the opening, when taken, books the broker's cash
    held = [e for e in paid if e.kind == "dividend" and (cut is None or cutoff.holds_event(cut, e))]
    with ctx.engine.begin() as conn:
        for ticker, day, amount, currency in unbooked_dividends(held, known):  # none stored: said, not raised
            notes.append(f"in the opening's cash (not booked again): dividend {ticker} {amount} {currency} paid {day}")
            resolve_by_key(conn, dedupe_key(UNBOOKED_DIVIDEND, ctx.settings.account, ticker, day), "reconcile",
                           "in the opening's cash", now=now)
        for ticker, day in {(e.ref, e.time.date()) for e in paid if e.kind == "dividend"} & known:
            resolve_by_key(conn, dedupe_key(UNBOOKED_DIVIDEND, ctx.settings.account, ticker, day), "reconcile",
                           "stored", now=now)  # imported since it was raised: book_due books it
        for ticker, day, amount, currency in unbooked_dividends([e for e in paid if e not in held], known):
            notes.append(f"unbooked dividend {ticker} {amount} {currency} paid {day}")
            raise_exception(conn, ExceptionKind.CORPORATE_ACTION, f"dividend {ticker} {day}",
                            f"the broker paid a dividend of {amount} {currency} on {ticker} on {day} that tradeledger "
                            f"has no record of: import it (tradeledger actions import FILE, or tradeledger import "
                            f"flex FILE), then reconcile", severity="error", now=now,
                            dedupe_key=dedupe_key(UNBOOKED_DIVIDEND, ctx.settings.account, ticker, day))
    notes += _check_account_cash(ctx, paid, now) + _check_splits(ctx, broker, {a["key"] for a in actions}, now)
    return notes


ACCOUNT_CASH = {"interest": ("Income:Interest:", "Expenses:Interest:"), "fee": ("Expenses:Fees:",)}


def unbooked_account_cash(events: list[CashEvent], booked: dict) -> list[tuple[str, dt.date, Decimal, str]]:
    """(kind, day, amount the broker moved that the ledger has not booked, currency) of interest and fees,
    per day; `booked` is the ledger's cash from them per (kind, day, currency) (pure)."""
    moved: dict[tuple[str, dt.date, str], Decimal] = defaultdict(Decimal)
    for e in events:
        if e.kind in ACCOUNT_CASH:
            moved[(e.kind, e.time.date(), e.currency)] += e.amount
    return [(kind, day, amount - booked.get((kind, day, currency), Decimal(0)), currency)
            for (kind, day, currency), amount in sorted(moved.items())
            if amount != booked.get((kind, day, currency), Decimal(0))]


def _check_account_cash(ctx: Context, events: list[CashEvent], now: dt.datetime) -> list[str]:
    """Interest and fees the broker moved on a day that the ledger has not booked on that day: a
    `cash_movement` exception carrying the command that books it (resolved once the day agrees).
    Only those after the opening's cut-off: the opening's cash holds the others (cutoff.py), and before
    the account has an opening, all of them (it books the broker's cash when it is taken)."""
    with read_connection(ctx.engine) as conn:
        cut = cutoff.opening_cut(conn, ctx.settings.account)
    held = [e for e in events if e.kind in ACCOUNT_CASH and (cut is None or cutoff.holds_event(cut, e))]
    events = [e for e in events if e.kind in ACCOUNT_CASH and e not in held]
    days = sorted({e.time.date() for e in events})
    booked: dict[tuple[str, dt.date, str], Decimal] = defaultdict(Decimal)
    for day in days:
        for (account, currency), units in ctx.ledger.income(since=day, until=day + dt.timedelta(days=1)).items():
            for kind, prefixes in ACCOUNT_CASH.items():
                if account.startswith(prefixes):
                    booked[(kind, day, currency)] -= units  # income is a credit: the cash it brought
    missing = unbooked_account_cash(events, booked)
    notes = []
    with ctx.engine.begin() as conn:
        for kind, day, amount, currency in missing:
            group = [e for e in events if (e.kind, e.time.date(), e.currency) == (kind, day, currency)]
            unbooked = [(e.amount, ref) for e in group if (ref := _unbooked_ref(conn, ctx, e)) is not None]
            notes.append(f"unbooked {kind} {amount} {currency} on {day}")
            raise_exception(conn, ExceptionKind.CASH_MOVEMENT, f"{kind} {currency} {day}",
                            f"the broker's {kind} of {amount} {currency} on {day} is not booked: "
                            + account_cash_commands(kind, day, amount, currency, unbooked),
                            severity="error", now=now,
                            dedupe_key=dedupe_key(ExceptionKind.CASH_MOVEMENT, ctx.settings.account, kind, day,
                                                  currency))
        for kind, day, currency in {(k, d, c) for k, d, c in booked} - {(k, d, c) for k, d, _, c in missing}:
            resolve_by_key(conn, dedupe_key(ExceptionKind.CASH_MOVEMENT, ctx.settings.account, kind, day, currency),
                           "reconcile", "booked", now=now)
        for kind, day, currency in {(e.kind, e.time.date(), e.currency) for e in held} \
                - {(k, d, c) for k, d, _, c in missing}:  # raised before the opening was taken: it holds them
            resolve_by_key(conn, dedupe_key(ExceptionKind.CASH_MOVEMENT, ctx.settings.account, kind, day, currency),
                           "reconcile", "in the opening's cash", now=now)
    return notes


def account_cash_commands(kind: str, day: dt.date, amount: Decimal, currency: str,
                          unbooked: list[tuple[Decimal, str]]) -> str:
    """The commands that book the missing `amount` once (pure). When the broker's movements of the
    day that no entry stands for by their ids (`unbooked`: amount, id) add up to it, one command
    each with `--ref ID`: keyed by the id, as IB's statement keys the same line, so whichever comes
    first books it. Else one command without an id, saying how to give it."""
    when = day.isoformat()
    if unbooked and sum((a for a, _ in unbooked), Decimal(0)) == amount:
        return "; ".join(f'tradeledger actions {kind} {a} {currency} --date {when} --ref {ref} '
                         f'--reason "broker {kind} {when} (ref {ref})"' for a, ref in unbooked) + (
            " (keyed by the broker's id: booked once, by this or by IB's statement)")
    return (f'tradeledger actions {kind} {amount} {currency} --date {when} --reason "broker {kind} {when}"'
            " (add --ref ID, the broker's id of it, e.g. the transactionID on IB's Flex statement, so that "
            "`import flex` finds it booked; without it the statement counts it only as the same amount that day)")


def _unbooked_ref(conn, ctx: Context, event: CashEvent) -> str | None:
    """The broker's id of an interest or fee movement when no entry stands for it, else None (no id,
    one the ledger cannot key, or booked)."""
    try:
        ref = cash_moves.normal_ref(event.ref) if event.ref else None
    except AdjustError:
        return None
    if ref is None or cash_moves.booked_by_ref(conn, ctx.ledger, ctx.chart, ref)[0] is not None:
        return None
    return ref


def _check_splits(ctx: Context, broker, stored: set[str], now: dt.datetime) -> list[str]:
    """A split the broker made that tradeledger has no record of: a `corporate_action` exception naming
    what to import (resolved once it is stored)."""
    made = getattr(broker, "splits", None)
    if made is None:
        return []
    try:
        splits = made()
    except BrokerError as exc:
        return [f"broker splits not read: {exc}"]
    notes = []
    with ctx.engine.begin() as conn:
        for ticker, day, new, old, cash_in_lieu in splits:
            key = dedupe_key(ExceptionKind.CORPORATE_ACTION, ctx.settings.account, "split", ticker, day)
            if f"{ticker}:{day.isoformat()}:split" in stored:
                resolve_by_key(conn, key, "reconcile", "stored", now=now)
                continue
            notes.append(f"unbooked split {ticker} {new}:{old} on {day}")
            raise_exception(conn, ExceptionKind.CORPORATE_ACTION, f"split {ticker} {day}",
                            f"the broker split {ticker} {new}:{old} on {day}"
                            + (f" paying cash in lieu at {cash_in_lieu}" if cash_in_lieu is not None else "")
                            + " and tradeledger has no record of it: tradeledger actions sync (or actions import "
                            "FILE), then reconcile", severity="error", now=now, dedupe_key=key)
    return notes
