"""What arrives in the account without a trade: the opening, and later surpluses (the records; the
entries are built by `entries.opening_entry` and `entries.surplus_entry`).

The *opening* is the ledger's first look at the broker. It books, in one entry linked
`opening-<Acct>`, what the broker holds MINUS what the ledger already holds, against
`Equity:Opening-Balances`:

* every position into `Assets:Broker:<Acct>:Unattributed`: futures at zero cost, marked from the
  broker's current mark on (IB: the portfolio's market price; the simulator: its last fill,
  settlement or transfer price; the average cost / multiplier when the broker gives no mark);
  shares (anything held at cost) as one lot at the broker's average cost per unit, dated the
  day the lot was acquired when the broker says so, else the opening's day, labelled
  `open-<contract>`;
* the cash of every currency, measured like reconciliation measures it: the broker's cash plus
  its unsettled futures P&L plus what the ledger's marks add over the broker's (zero for
  positions opened at the broker's mark), minus the ledger's cash (a deposit booked by
  `init --capital`, fills booked before the opening) and minus the variation margin this very
  entry books on positions the ledger already held. A funded simulator opens with no extra
  cash, a real account with all of it, and a second opening can only find nothing to book.

A *surplus* found later (the broker holds more of a contract than every holder in the ledger,
in the same direction, and no execution explains it) arrives the same way, into Unattributed,
in an entry of its own (`surplus_entry`).

A trade into Unattributed at the arrival price books exactly this: futures first mark the
bucket's existing position to that price, then add at zero cost; shares add a lot whose cost is
paid by `Equity:Opening-Balances` instead of by cash (nothing was paid from this account).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from tradeledger.broker.base import BrokerPosition, Contract
from tradeledger.ledger.model import Transaction, is_valid_commodity

ZERO = Decimal(0)


@dataclass(frozen=True)
class OpenedPosition:
    """One contract at the opening: what the broker held, what the ledger held, what was booked."""

    contract: Contract
    broker_qty: Decimal
    ledger_qty: Decimal
    booked: Decimal
    price: Decimal  # futures: the mark it is held from; shares: the cost per unit

    def as_json(self) -> dict:
        return {"contract": self.contract.code, "sec_type": self.contract.sec_type,
                "currency": self.contract.currency, "broker": str(self.broker_qty),
                "ledger_before": str(self.ledger_qty), "booked": str(self.booked), "price": str(self.price)}


@dataclass(frozen=True)
class OpenedCash:
    currency: str
    broker: Decimal
    unsettled: Decimal
    ledger_before: Decimal
    booked: Decimal

    def as_json(self) -> dict:
        return {"currency": self.currency, "broker": str(self.broker), "unsettled": str(self.unsettled),
                "ledger_before": str(self.ledger_before), "booked": str(self.booked)}


@dataclass(frozen=True)
class OpeningPlan:
    """The opening entry (None when nothing differs) and everything it was computed from."""

    txn: Transaction | None
    positions: tuple[OpenedPosition, ...]
    cash: tuple[OpenedCash, ...]
    skipped: tuple[tuple[BrokerPosition, str], ...]  # positions that cannot be booked, and why
    after: dict = field(default_factory=dict)  # contract code -> holder -> Holding (marks to save)

    def as_json(self) -> dict:
        return {"positions": [p.as_json() for p in self.positions], "cash": [c.as_json() for c in self.cash],
                "skipped": [{"contract": p.contract.code, "qty": str(p.quantity), "why": why}
                            for p, why in self.skipped]}


def arrival_price(position: BrokerPosition) -> Decimal:
    """The per-unit price a position arrives at: futures at the broker's mark (else its average
    cost / multiplier, as IB's futures avgCost is price x multiplier); shares at the average
    cost per unit (avgCost / multiplier, so that the lot's cost is the broker's avgCost)."""
    multiplier = position.contract.multiplier or Decimal(1)
    if position.contract.sec_type == "FUT" and position.mark is not None:
        return position.mark
    return position.avg_cost / multiplier


def unbookable(contract: Contract) -> str:
    """Why a broker contract cannot be held in the ledger, or "" (pure)."""
    if not is_valid_commodity(contract.code):
        return f"{contract.code!r} is not a valid commodity name"
    if not contract.currency:
        return f"{contract.code} has no currency"
    return ""


