"""What share holdings bring and what the account pays and earns: dividends, splits, interest, fees.

These are cash and position movements that happen at the broker without an order. Each becomes a
balanced ledger entry, built in entries.py by pure functions from the action (the records here)
and the holdings it applies to; the caller reads the holdings and books the entry in one
database transaction.

Dividends (cash, per share, in the share's currency) are owed to whoever holds the shares at the
end of the day before the ex-date (the record holders), the trader's unattributed holdings
included. They are booked in two steps:

    ex-date   Assets:Receivable:<Acct>:Dividends      gross - tax   (what the broker will pay)
              Expenses:Taxes:Withholding:<Holder>     tax           (withheld at source)
              Income:Dividends:<Holder>               -gross
    pay date  Assets:Broker:<Acct>:Cash               net
              Assets:Receivable:<Acct>:Dividends      -net

A short holder pays the dividend (a payment in lieu, no withholding): the same postings with the
signs turned. Gross amounts are exact (shares x amount per share). The broker withholds on the
account as a whole (the rate x the account's gross, to the cent); that figure is split among the
long holders in whole cents by largest remainder, so the ledger's tax is the broker's to the cent.

Splits change every lot's units and per-unit cost with the same total cost, keeping the lot's
date and label (FIFO order is unchanged): 100 SPY {600 USD} becomes 200 SPY {300 USD} in a 2:1
split. Each lot is closed and reopened in one entry, which beancount books with zero errors. A
split that leaves a fraction of a share is paid by the broker in cash (cash in lieu, a price per
new share): in the same entry each holder keeps its whole shares (the account's whole shares shared
out by largest remainder) and sells the rest FIFO at that price, realising P&L against the lots'
cost (`entries.split_postings`). Without a cash-in-lieu price such a split is refused, as is a
per-unit cost or lot finer than the ledger's precision.

Interest and fees belong to the account as a whole. They go to `Income:Interest:<Holder>`,
`Expenses:Interest:<Holder>` or `Expenses:Fees:<Holder>`, either all to the account
(`Account`, unallocated) or split across strategies by weights (e.g. their capital shares), in
whole cents by largest remainder so that the parts add up to the amount exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tradeledger.errors import CorporateActionError  # noqa: F401 (raised by the builders in entries.py; imported from here)

ZERO = Decimal(0)
CENT = Decimal("0.01")
NANO = Decimal("1e-9")
UNALLOCATED = "Account"  # the holder component of interest and fees that no strategy bears


@dataclass(frozen=True)
class Dividend:
    ticker: str
    ex_date: dt.date
    pay_date: dt.date
    amount: Decimal  # per share, in `currency`
    currency: str
    withholding: Decimal = ZERO  # fraction withheld at source, 0..1
    source: str = "import"
    ref: str = ""  # the source's own id (a Flex action id), for the record

    @property
    def key(self) -> str:
        """One dividend per ticker and ex-date, whichever source reports it: a second source links
        to the stored one (or disagrees, and says so) instead of booking it again."""
        return f"{self.ticker}:{self.ex_date.isoformat()}:div"


@dataclass(frozen=True)
class Split:
    ticker: str
    date: dt.date  # effective at the start of this day
    new: Decimal  # shares after, per `old` shares before: 2:1 is new=2, old=1; 1:10 is new=1, old=10
    old: Decimal
    source: str = "import"
    ref: str = ""
    cash_in_lieu: Decimal | None = None  # per post-split share, in `currency`: what the broker pays for a fraction
    currency: str = ""

    @property
    def ratio(self) -> Decimal:
        return self.new / self.old

    @property
    def key(self) -> str:
        return f"{self.ticker}:{self.date.isoformat()}:split"


@dataclass(frozen=True)
class AccountCash:
    """Interest or a fee for the whole account; `amount` is signed as it moves cash (a fee < 0)."""

    kind: str  # interest | fee
    date: dt.date
    amount: Decimal
    currency: str
    description: str
    ref: str


# -- dividends -------------------------------------------------------------------------------------


# -- splits ----------------------------------------------------------------------------------------


# -- interest and fees -----------------------------------------------------------------------------


def allocate_cents(amount: Decimal, weights: dict[str, Decimal]) -> dict[str, Decimal]:
    """`amount` split by weights in whole cents (largest remainder), summing to it exactly."""
    positive = {k: w for k, w in weights.items() if w > 0}
    total = sum(positive.values(), ZERO)
    if not positive or total == 0:
        return {UNALLOCATED: amount}
    sign = -1 if amount < 0 else 1
    in_cents = abs(amount) / CENT
    if in_cents != in_cents.to_integral_value():  # sub-cent amounts: split the cents, keep the rest whole
        return {UNALLOCATED: amount}
    exact = {k: in_cents * w / total for k, w in positive.items()}
    floors = {k: int(v) for k, v in exact.items()}
    left = int(in_cents) - sum(floors.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - floors[k]), k))[:left]:
        floors[k] += 1
    return {k: sign * Decimal(v) * CENT for k, v in floors.items() if v}


