"""How trades, commissions and settlements become ledger entries: pure functions, no database.

Futures follow the mark chain (DESIGN.md). Each holder's position in a contract (a strategy, or
None for the unattributed bucket) is held at zero cost and has a *mark*, its last settlement or
fill price. A trade first marks the existing position to the trade price,

    variation margin = position x (price - mark) x multiplier,

booked `Income:Trading:<holder>` against `Assets:Broker:<Acct>:Cash` in the contract's currency;
then the position changes, and the whole new position is marked at the trade price. A trade
that crosses zero is a close of the old position plus an open of the new one, because
beancount cannot reduce a position through zero. A settlement marks every position to the
settlement price the same way.

Shares are lots at cost labelled with the fill id (intraday lots never merge); a reduction names
the lots it closes, oldest first, and realizes (price - cost) x units into Income:Trading.

Commissions are postings of their own: Expenses:Commissions:<holder> against cash.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tradeledger.broker.base import Contract
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Cost, Posting, Transaction

ZERO = Decimal(0)


@dataclass(frozen=True)
class Holding:
    """A holder's current position in one contract: units, mark (futures), open lots (shares)."""

    position: Decimal = ZERO
    mark: Decimal | None = None
    lots: tuple[tuple[Cost, Decimal], ...] = ()


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


def mark_postings(chart: Chart, holder: str | None, contract: Contract, holding: Holding,
                  price: Decimal) -> list[Posting]:
    """Variation margin of a futures position from its mark to `price`."""
    if holding.position == 0 or contract.sec_type != "FUT":
        return []
    if holding.mark is None:
        raise ValueError(f"{contract.code}: position of {holder or 'unattributed'} has no mark")
    vm = holding.position * (price - holding.mark) * contract.multiplier
    if vm == 0:
        return []
    return [Posting(chart.cash, vm, contract.currency), Posting(chart.trading(holder), -vm, contract.currency)]


def futures_trade(chart: Chart, holder: str | None, contract: Contract, holding: Holding,
                  qty: Decimal, price: Decimal) -> list[Posting]:
    postings = mark_postings(chart, holder, contract, holding, price)
    account, zero = chart.holdings(holder), Cost(ZERO, contract.currency)
    after = holding.position + qty
    if holding.position != 0 and after != 0 and _sign(after) != _sign(holding.position):
        postings += [Posting(account, -holding.position, contract.code, zero),
                     Posting(account, after, contract.code, zero)]
    else:
        postings.append(Posting(account, qty, contract.code, zero))
    return postings


def shares_trade(chart: Chart, holder: str | None, contract: Contract, holding: Holding,
                 qty: Decimal, price: Decimal, date: dt.date, label: str) -> list[Posting]:
    account, currency = chart.holdings(holder), contract.currency
    postings = [Posting(chart.cash, -qty * price * contract.multiplier, currency)]
    remaining = qty
    for cost, units in holding.lots:  # oldest first; all open lots share one sign
        if remaining == 0 or _sign(units) == _sign(remaining):
            break
        take = _sign(remaining) * min(abs(units), abs(remaining))
        postings.append(Posting(account, take, contract.code, cost))
        gain = -take * (price * contract.multiplier - cost.number)  # cost is per unit, multiplier in
        if gain != 0:
            postings.append(Posting(chart.trading(holder), -gain, currency))
        remaining -= take
    if remaining != 0:
        postings.append(Posting(account, remaining, contract.code,
                                Cost(price * contract.multiplier, currency, date, label)))
    return postings


def trade_postings(chart: Chart, holder: str | None, contract: Contract, holding: Holding,
                   qty: Decimal, price: Decimal, date: dt.date, label: str) -> list[Posting]:
    """The postings of one holder's share of a trade (signed qty)."""
    if qty == 0:
        return []
    if contract.sec_type == "FUT":
        return futures_trade(chart, holder, contract, holding, qty, price)
    return shares_trade(chart, holder, contract, holding, qty, price, date, label)


def commission_postings(chart: Chart, holder: str | None, amount: Decimal, currency: str) -> list[Posting]:
    if amount == 0:
        return []
    return [Posting(chart.commissions(holder), amount, currency), Posting(chart.cash, -amount, currency)]


def after_trade(contract: Contract, holding: Holding, postings: list[Posting], qty: Decimal,
                price: Decimal) -> Holding:
    """The holding after a trade: futures re-marked at the price; shares lots from the postings."""
    position = holding.position + qty
    if contract.sec_type == "FUT":
        return Holding(position, price if position != 0 else None)
    lots = {cost: units for cost, units in holding.lots}
    for p in postings:
        if p.commodity == contract.code and p.cost is not None:
            lots[p.cost] = lots.get(p.cost, ZERO) + p.units
    ordered = tuple((c, u) for c, u in lots.items() if u != 0)
    return Holding(position, None, ordered)


@dataclass(frozen=True)
class FillShare:
    """One holder's part of a broker fill."""

    holder: str | None
    qty: Decimal  # signed
    commission: Decimal | None  # None: pending


def fill_entry(chart: Chart, contract: Contract, exec_key: str, price: Decimal, time: dt.datetime,
               shares: list[FillShare], holdings: dict, commission_currency: str, order_ref: str,
               narration: str) -> tuple[Transaction, dict]:
    """The ledger entry of one execution and the holdings after it (holdings: holder -> Holding)."""
    postings: list[Posting] = []
    after = dict(holdings)
    for share in shares:
        holding = holdings.get(share.holder, Holding())
        trade = trade_postings(chart, share.holder, contract, holding, share.qty, price, time.date(), exec_key)
        postings += trade
        after[share.holder] = after_trade(contract, holding, trade, share.qty, price)
        if share.commission is not None:
            postings += commission_postings(chart, share.holder, share.commission, commission_currency)
    pending = any(s.commission is None for s in shares)
    meta = (("exec", exec_key), ("price", str(price)), ("contract", contract.code),
            ("commission", "pending" if pending else "booked"), ("order-ref", order_ref or "none"))
    txn = Transaction(time=time, kind="fill", narration=narration, postings=tuple(postings),
                      links=(f"fill-{_link(exec_key)}",), meta=meta, key=f"fill:{chart.broker_account}:{exec_key}")
    return txn, after


def commission_entry(chart: Chart, exec_key: str, time: dt.datetime, parts: dict, currency: str,
                     contract_code: str) -> Transaction:
    postings: list[Posting] = []
    for holder, amount in parts.items():
        postings += commission_postings(chart, holder, amount, currency)
    if not postings:  # a zero commission still closes the pending state: book nothing, record it
        raise ValueError("zero commission: nothing to book")
    return Transaction(time=time, kind="commission", narration=f"Commission {exec_key}", postings=tuple(postings),
                       links=(f"fill-{_link(exec_key)}",), meta=(("contract", contract_code), ("exec", exec_key)),
                       key=f"commission:{chart.broker_account}:{exec_key}")


def settlement_entry(chart: Chart, contract: Contract, date: dt.date, time: dt.datetime, price: Decimal,
                     holdings: dict) -> tuple[Transaction | None, dict]:
    """Mark every holder's futures position to the settlement price; one entry per contract and day."""
    postings: list[Posting] = []
    after = dict(holdings)
    for holder in sorted(holdings, key=lambda h: h or ""):
        holding = holdings[holder]
        if holding.position == 0:
            continue
        postings += mark_postings(chart, holder, contract, holding, price)
        after[holder] = Holding(holding.position, price)
    if not postings:
        return None, after
    txn = Transaction(time=time, kind="settlement", narration=f"Settle {contract.code} {price}",
                      postings=tuple(postings), links=(f"settle-{contract.code}-{date.isoformat()}",),
                      meta=(("contract", contract.code), ("price", str(price))),
                      key=f"settle:{chart.broker_account}:{contract.code}:{date.isoformat()}")
    return txn, after


def expiry_entry(chart: Chart, contract: Contract, date: dt.date, time: dt.datetime, price: Decimal,
                 holdings: dict) -> tuple[Transaction | None, dict]:
    """A futures contract's expiry: every holder's position marked one last time to the final
    settlement price (variation margin, as a daily settlement) and closed at that price. No
    execution exists; one entry per contract."""
    postings: list[Posting] = []
    after = dict(holdings)
    zero = Cost(ZERO, contract.currency)
    for holder in sorted(holdings, key=lambda h: h or ""):
        holding = holdings[holder]
        if holding.position == 0:
            continue
        postings += mark_postings(chart, holder, contract, holding, price)
        postings.append(Posting(chart.holdings(holder), -holding.position, contract.code, zero))
        after[holder] = Holding(ZERO, None)
    if not postings:
        return None, after
    txn = Transaction(time=time, kind="expiry", narration=f"Expiry {contract.code}: final settlement {price}",
                      postings=tuple(postings), links=(f"expiry-{contract.code}",),
                      meta=(("contract", contract.code), ("price", str(price)), ("last-trade", date.isoformat())),
                      key=f"expiry:{chart.broker_account}:{contract.code}")
    return txn, after


def _link(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_./-" else "-" for ch in text)
