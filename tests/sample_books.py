"""A small ledger both the maintained-balance and the bulk-import tests book: two strategies' accounts,
cash in USD and JPY (amounts beyond a 64-bit sum), a future at zero cost, two SPY lots and a partial
FIFO sale with a sub-cent commission."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.store import Commodity, Ledger

UTC = dt.timezone.utc
OPEN = dt.date(2026, 1, 1)
CASH = "Assets:Broker:DU1234567:Cash"
A = "Assets:Broker:DU1234567:Strategy:A"
B = "Assets:Broker:DU1234567:Strategy:B"
INC = "Income:Trading:A"
FEES = "Expenses:Commissions:A"
DEPOSITS = "Equity:Deposits"


def t(day: int, hour: int = 15) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, tzinfo=UTC)


def open_books(ledger: Ledger) -> Ledger:
    opened = {a.name for a in ledger.accounts()}  # an environment's `init` opens cash and deposits
    for name in (CASH, A, B, INC, FEES, DEPOSITS):
        if name not in opened:
            ledger.open_account(Account(name, OPEN, booking="FIFO" if ":Strategy:" in name else "STRICT"))
    for ccy in ("USD", "JPY"):
        if ccy not in {c.name for c in ledger.commodities()}:
            ledger.ensure_commodity(Commodity(ccy, "currency", None, D(1), OPEN))
    ledger.ensure_commodity(Commodity("MESZ26", "future", "USD", D(5), OPEN))
    ledger.ensure_commodity(Commodity("SPY", "share", "USD", D(1), OPEN))
    return ledger


def entries() -> list[Transaction]:
    zero = Cost(D(0), "USD")
    lot1 = Cost(D("600.25"), "USD", dt.date(2026, 12, 1), "fill-1")
    lot2 = Cost(D("601.5"), "USD", dt.date(2026, 12, 2), "fill-2")
    return [
        Transaction(t(1, 9), "deposit", "deposit", (Posting(CASH, D("5000000000"), "JPY"),
                                                   Posting(DEPOSITS, D("-5000000000"), "JPY")), key="d1"),
        Transaction(t(1, 10), "deposit", "deposit", (Posting(CASH, D("5000000000.5"), "JPY"),
                                                    Posting(DEPOSITS, D("-5000000000.5"), "JPY")), key="d2"),
        Transaction(t(1, 11), "deposit", "deposit", (Posting(CASH, D(100000), "USD"),
                                                    Posting(DEPOSITS, D(-100000), "USD")), key="d3"),
        Transaction(t(1), "fill", "buy 3 MESZ26", (Posting(A, D(3), "MESZ26", zero), Posting(A, D(-1), "MESZ26", zero),
                                                   Posting(FEES, D("1.86"), "USD"), Posting(CASH, D("-1.86"), "USD")),
                    key="f1"),
        Transaction(t(1, 16), "fill", "buy SPY", (Posting(B, D(10), "SPY", lot1), Posting(CASH, D("-6002.5"), "USD")),
                    key="f2"),
        Transaction(t(2), "fill", "buy SPY", (Posting(B, D(5), "SPY", lot2), Posting(CASH, D("-3007.5"), "USD")),
                    key="f3"),
        Transaction(t(3), "fill", "sell SPY", (Posting(B, D(-4), "SPY", lot1), Posting(CASH, D("2404"), "USD"),
                                               Posting(INC, D(-3), "USD"), Posting(FEES, D("1.000000001"), "USD"),
                                               Posting(CASH, D("-1.000000001"), "USD")), key="f4"),
    ]
