"""Corporate actions in reconciliation: what the broker paid that the ledger has not booked.

Reconciliation books the stored corporate actions that have come due (a dividend's ex-date and
pay date, a split's date) before it compares cash and positions, just as it books the broker's
executions first. What is left is made visible, typed, with what to do:

* `unbooked_dividend`: the broker paid a dividend on a ticker (its cash journal shows it) that
  tradeledger has no record of for that day: import it (`tradeledger actions import FILE`, or
  IB's statement with `tradeledger import flex FILE`), then reconcile again;
* `corporate_action`: a stored action that is due but could not be booked (e.g. a split after
  the new shares traded), with the reason.

Only brokers that report cash events (the simulated one) allow the first check; for IB the Flex
statement is the record of dividends, interest and fees.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from tradeledger.broker.base import BrokerError, CashEvent
from tradeledger.engine.accounting.actions import book_due, list_actions
from tradeledger.engine.trust.exceptions import UNBOOKED_DIVIDEND, ExceptionKind, dedupe_key, raise_exception


def unbooked_dividends(events: list[CashEvent], known: set[tuple[str, dt.date]]) -> list[tuple[str, dt.date, Decimal, str]]:
    """(ticker, day, amount, currency) of broker dividends with no stored action paid that day (pure)."""
    paid: dict[tuple[str, dt.date, str], Decimal] = defaultdict(Decimal)
    for e in events:
        if e.kind == "dividend":
            paid[(e.ref, e.time.date(), e.currency)] += e.amount
    return [(ticker, day, amount, currency) for (ticker, day, currency), amount in sorted(paid.items())
            if (ticker, day) not in known]


def check_corporate_actions(env, broker, today: dt.date, now: dt.datetime) -> list[str]:
    """Book due actions, then raise what is still missing; returns notes for the reconciliation."""
    report = book_due(env, today)
    notes = [f"booked {what}" for what in report.booked]
    with env.engine.begin() as conn:
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
    known = {(a["ticker"], dt.date.fromisoformat(a["pay_date"])) for a in list_actions(env) if a["kind"] == "dividend"}
    with env.engine.begin() as conn:
        for ticker, day, amount, currency in unbooked_dividends(paid, known):
            notes.append(f"unbooked dividend {ticker} {amount} {currency} paid {day}")
            raise_exception(conn, ExceptionKind.CORPORATE_ACTION, f"dividend {ticker} {day}",
                            f"the broker paid a dividend of {amount} {currency} on {ticker} on {day} that tradeledger "
                            f"has no record of: import it (tradeledger actions import FILE, or tradeledger import "
                            f"flex FILE), then reconcile", severity="error", now=now,
                            dedupe_key=dedupe_key(UNBOOKED_DIVIDEND, env.settings.account, ticker, day))
    return notes
