"""What arrives in the account without a trade: the opening, and later surpluses. Pure functions.

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

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from tradeledger.broker.base import AccountSnapshot, BrokerPosition, Contract
from tradeledger.engine.accounting.entries import Holding, after_trade, link, trade_postings
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Posting, Transaction, is_valid_commodity

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


def arrival_postings(chart: Chart, contract: Contract, holding: Holding, qty: Decimal, price: Decimal,
                     date: dt.date, label: str) -> list[Posting]:
    """Unattributed receives signed `qty` at `price` without paying for it from this account."""
    legs = trade_postings(chart, None, contract, holding, qty, price, date, label)
    if contract.sec_type == "FUT":
        return legs
    first = legs[0]  # shares_trade's purchase leg: paid by equity, not by this account's cash
    assert first.account == chart.cash and first.commodity == contract.currency
    return [Posting(chart.opening_balances, first.units, first.commodity)] + legs[1:]


def _cash_of(postings: list[Posting], chart: Chart) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for p in postings:
        if p.account == chart.cash:
            out[p.commodity] = out.get(p.commodity, ZERO) + p.units
    return out


def opening_entry(chart: Chart, snap: AccountSnapshot, snapshot_id: int, holdings: dict, ledger_cash: dict,
                  acquired: dict | None = None) -> OpeningPlan:
    """The opening (pure): `holdings` is contract code -> holder -> Holding for every contract the
    broker holds; `ledger_cash` currency -> the ledger's cash; `acquired` code -> lot date."""
    acquired = acquired or {}
    time, day = snap.taken_at, snap.taken_at.date()
    postings: list[Posting] = []
    opened, skipped, after_all = [], [], {}
    vm: dict[str, Decimal] = {}
    marks_over: dict[str, Decimal] = {}  # what the ledger's marks add over the broker's, per currency
    for position in sorted(snap.positions, key=lambda p: p.contract.code):
        k = position.contract
        if position.quantity == 0:
            continue
        why = unbookable(k)
        if why:
            skipped.append((position, why))
            continue
        held = dict(holdings.get(k.code, {}))
        ledger_qty = sum((h.position for h in held.values()), ZERO)
        diff, price = position.quantity - ledger_qty, arrival_price(position)
        if diff:
            legs = arrival_postings(chart, k, held.get(None, Holding()), diff, price,
                                    acquired.get(k.code, day), f"open-{k.code}")
            postings += legs
            for ccy, amount in _cash_of(legs, chart).items():
                vm[ccy] = vm.get(ccy, ZERO) + amount
            held[None] = after_trade(k, held.get(None, Holding()), legs, diff, price)
            after_all[k.code] = held
        opened.append(OpenedPosition(k, position.quantity, ledger_qty, diff, price))
        if k.sec_type == "FUT" and position.mark is not None:
            extra = sum(((h.mark - position.mark) * h.position * k.multiplier for h in held.values()
                         if h.position and h.mark is not None), ZERO)
            marks_over[k.currency] = marks_over.get(k.currency, ZERO) + extra
    cash, unsettled = dict(snap.cash), dict(snap.unsettled_pnl)
    lines = []
    for ccy in sorted(set(cash) | set(unsettled) | set(ledger_cash) | set(vm) | set(marks_over)):
        target = cash.get(ccy, ZERO) + unsettled.get(ccy, ZERO) + marks_over.get(ccy, ZERO)
        booked = target - ledger_cash.get(ccy, ZERO) - vm.get(ccy, ZERO)
        if booked:
            postings += [Posting(chart.cash, booked, ccy), Posting(chart.opening_balances, -booked, ccy)]
        lines.append(OpenedCash(ccy, cash.get(ccy, ZERO), unsettled.get(ccy, ZERO), ledger_cash.get(ccy, ZERO),
                                booked))
    txn = None
    if postings:
        txn = Transaction(time=time, kind="opening",
                          narration=f"Opening: the account {chart.broker_account} as the broker held it",
                          postings=tuple(postings), links=(f"opening-{link(chart.broker_account)}",),
                          meta=(("snapshot", str(snapshot_id)), ("source", "broker-snapshot")),
                          key=f"opening:{chart.broker_account}")
    return OpeningPlan(txn, tuple(opened), tuple(lines), tuple(skipped), after_all)


def surplus_entry(chart: Chart, position: BrokerPosition, holdings: dict, surplus: Decimal, snapshot_id: int,
                  time: dt.datetime) -> tuple[Transaction, dict]:
    """A later surplus of `surplus` units arriving into Unattributed (pure); returns the entry and
    the contract's holdings after it."""
    k = position.contract
    price = arrival_price(position)
    held = dict(holdings)
    legs = arrival_postings(chart, k, held.get(None, Holding()), surplus, price, time.date(),
                            f"arrive-{snapshot_id}-{k.code}")
    held[None] = after_trade(k, held.get(None, Holding()), legs, surplus, price)
    txn = Transaction(
        time=time, kind="adoption",
        narration=f"Adopt {surplus} {k.code} found at the broker without an execution",
        postings=tuple(legs), links=(f"adopt-{link(k.code)}-{snapshot_id}",),
        meta=(("contract", k.code), ("price", str(price)), ("snapshot", str(snapshot_id)),
              ("source", "broker-snapshot")),
        key=f"adopt:{chart.broker_account}:{k.code}:{snapshot_id}")
    return txn, held
