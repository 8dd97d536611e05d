"""The ledger's records: accounts, transactions and postings, as beancount defines them.

A transaction is a dated, timed, balanced set of postings. A posting moves `units` of a
`commodity` into or out of an account, optionally held at a `cost` (a lot: number, currency,
date and label) or converted at a `price`. Its *weight* is what it contributes to the balance,
exactly as beancount computes it:

    units x cost.number   in cost.currency    when the posting has a cost
    units x price.number  in price.currency   when it has a price
    units                 in commodity        otherwise

A transaction balances when the weights sum to zero in every currency. tradeledger requires
exact zero (no tolerance): every amount it books is computed, not typed.

Futures are held at zero cost (`2 MESZ26 {0 USD}`), so their postings weigh nothing and the
variation margin moves as separate cash and income postings. Shares are held at cost, in lots
labelled with the fill id.

Records are immutable and hashable (postings, costs and amounts are NamedTuples, as in beancount's
core, because a ledger reads millions of them); functions over them are pure. Nothing here
touches a database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple
from decimal import Decimal

from tradeledger.ledger.names import (  # noqa: F401 - re-exported: the names and their error live there
    ACCOUNT_TYPES, LedgerError, is_valid_account, is_valid_commodity,
)
from tradeledger.ledger.numbers import plain

_LINK = re.compile(r"^[A-Za-z0-9_./-]+$")
_META_KEY = re.compile(r"^[a-z][a-zA-Z0-9_-]*$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]*$")
BOOKING_METHODS = ("STRICT", "FIFO", "LIFO", "NONE")


class UnbalancedError(LedgerError):
    pass


class IdempotencyConflict(LedgerError):
    pass



class Amount(NamedTuple):
    number: Decimal
    currency: str


class Cost(NamedTuple):
    """A lot's cost per unit. `label` (the fill id for shares) keeps intraday lots apart."""

    number: Decimal
    currency: str
    date: dt.date | None = None
    label: str | None = None


class Posting(NamedTuple):
    account: str
    units: Decimal
    commodity: str
    cost: Cost | None = None
    price: Amount | None = None

    def weight(self) -> Amount:
        if self.cost is not None:
            return Amount(self.units * self.cost.number, self.cost.currency)
        if self.price is not None:
            return Amount(self.units * self.price.number, self.price.currency)
        return Amount(self.units, self.commodity)


@dataclass(frozen=True)
class Account:
    name: str
    open_date: dt.date
    currencies: tuple[str, ...] = ()  # empty: any commodity
    booking: str = "STRICT"
    close_date: dt.date | None = None


@dataclass(frozen=True)
class Transaction:
    """A balanced entry. `key` makes booking idempotent; `reverses` names a corrected entry."""

    time: dt.datetime  # timezone-aware, stored in UTC
    kind: str
    narration: str
    postings: tuple[Posting, ...]
    links: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    key: str | None = None
    reverses: int | None = None

    @property
    def date(self) -> dt.date:
        return self.time.date()

    def fingerprint(self) -> str:
        """A digest of the content (everything but the key), to tell a replay from a conflict."""
        def n(number: Decimal | None) -> str:  # 5.00 and 5 are the same amount
            return "" if number is None else str(plain(number))

        parts = [
            self.time.isoformat(), self.kind, self.narration, str(self.reverses),
            "|".join(sorted(self.links)), repr(sorted(self.meta)),
        ]
        for p in self.postings:
            cost = p.cost and (n(p.cost.number), p.cost.currency, str(p.cost.date), p.cost.label)
            price = p.price and (n(p.price.number), p.price.currency)
            parts.append(repr((p.account, n(p.units), p.commodity, cost, price)))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def imbalance(postings: tuple[Posting, ...] | list[Posting]) -> dict[str, Decimal]:
    """The non-zero residual weight per currency; empty when the postings balance."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for posting in postings:
        w = posting.weight()
        totals[w.currency] += w.number
    return {currency: total for currency, total in totals.items() if total != 0}


def validate(txn: Transaction) -> None:
    """Refuse anything beancount would refuse or the ledger cannot store; pure."""
    if txn.time.tzinfo is None:
        raise LedgerError("transaction time must be timezone-aware")
    if not _KIND.match(txn.kind):
        raise LedgerError(f"invalid transaction kind {txn.kind!r}")
    if not txn.postings:
        raise LedgerError("a transaction needs at least one posting")
    for link in txn.links:
        if not _LINK.match(link):
            raise LedgerError(f"invalid link {link!r}: letters, digits and _ . / - only")
    for key, value in txn.meta:
        if not _META_KEY.match(key) or not isinstance(value, str):
            raise LedgerError(f"invalid metadata {key!r}: lowercase key and string value required")
    for p in txn.postings:
        if not is_valid_account(p.account):
            raise LedgerError(f"invalid account name {p.account!r}")
        if not is_valid_commodity(p.commodity):
            raise LedgerError(f"invalid commodity {p.commodity!r}")
        if not isinstance(p.units, Decimal) or not p.units.is_finite() or p.units == 0:
            raise LedgerError(f"posting to {p.account}: units must be a non-zero finite Decimal")
        if p.cost is not None and p.price is not None:
            raise LedgerError(f"posting to {p.account}: cost and price together are not supported")
        for extra in (p.cost, p.price):
            if extra is not None and not is_valid_commodity(extra.currency):
                raise LedgerError(f"invalid currency {extra.currency!r}")
    residual = imbalance(txn.postings)
    if residual:
        shown = ", ".join(f"{n} {c}" for c, n in sorted(residual.items()))
        raise UnbalancedError(f"transaction does not balance: residual {shown}")


def reversal_of(txn_id: int, original: Transaction, time: dt.datetime, reason: str,
                key: str | None = None) -> Transaction:
    """The entry that cancels `original` exactly: every posting negated, linked to it. It names
    the contract the original names, so that what groups by contract (`pnl --by instrument`) puts
    it beside the original: an entry of money alone (a commission's) has no position line to tell."""
    postings = tuple(
        Posting(p.account, -p.units, p.commodity, p.cost, p.price) for p in original.postings
    )
    links = tuple(sorted(set(original.links) | {f"entry-{txn_id}"}))
    contract = tuple((k, v) for k, v in original.meta if k == "contract")
    return Transaction(
        time=time, kind="reversal", narration=f"Reversal of entry {txn_id}: {reason}",
        postings=postings, links=links, meta=(("reason", reason),) + contract,
        key=key or f"reversal:{txn_id}", reverses=txn_id,
    )
