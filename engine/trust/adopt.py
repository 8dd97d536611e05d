"""Adopting broker positions that predate the ledger into the unattributed bucket.

A position the broker reports in a contract the ledger has never held (no posting in any
strategy account or in Unattributed, ever) was there before tradeledger started keeping the
books: the trader's own stocks, an option, a future bought by hand before the ledger existed.
It is booked once into `Assets:Broker:<Acct>:Unattributed` with what the broker says about it,
at the snapshot's time, and raises an `unattributed_position` exception (info for instruments
tradeledger is not configured for, warning for ones it trades):

* futures at zero cost (`2 MESZ26 {0 USD}`, the entry balances at zero), marked from the
  adoption price on: the broker's average cost / multiplier (IB's futures avgCost is
  price x multiplier), so later fills and settlements book variation margin from there;
* shares (and anything else held at cost) as one lot at the broker's average cost per unit,
  labelled `adopt-<contract>`, against `Equity:Opening-Balances`.

A contract the ledger *has* held and now disagrees on is not adopted: that is a reconciliation
break, which a person resolves with the maintenance tools. Adoption is idempotent (its ledger key
is per account and contract), and a failure for one contract is reported, never raised past it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy.engine import Connection

from tradeledger.broker.base import AccountSnapshot, BrokerPosition
from tradeledger.engine.accounting.booking import Holding
from tradeledger.engine.trust.exceptions import list_exceptions, raise_exception, resolve
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, save_marks
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Cost, Posting, Transaction
from tradeledger.ledger.store import Ledger

ZERO = Decimal(0)


def adoptable(snap: AccountSnapshot, ever_held: frozenset) -> list[BrokerPosition]:
    """Broker positions in contracts the ledger has never held (pure)."""
    return [p for p in snap.positions if p.quantity != 0 and p.contract.code not in ever_held]


def adoption_price(position: BrokerPosition) -> Decimal:
    """The per-unit price a futures position is marked from: IB's avgCost / multiplier."""
    multiplier = position.contract.multiplier or Decimal(1)
    return position.avg_cost / multiplier


def adoption_entry(chart: Chart, position: BrokerPosition, time: dt.datetime) -> Transaction:
    """The ledger entry adopting one broker position into Unattributed (pure)."""
    k, qty = position.contract, position.quantity
    if k.sec_type == "FUT":
        price = adoption_price(position)
        postings = (Posting(chart.unattributed, qty, k.code, Cost(ZERO, k.currency)),)
    else:
        price = position.avg_cost
        cost = Cost(position.avg_cost, k.currency, time.date(), f"adopt-{k.code}")
        postings = (Posting(chart.unattributed, qty, k.code, cost),)
        if qty * position.avg_cost != 0:
            postings += (Posting(chart.opening_balances, -qty * position.avg_cost, k.currency),)
    return Transaction(
        time=time, kind="adoption", narration=f"Adopt {qty} {k.code} held at the broker before the ledger",
        postings=postings, links=(f"adopt-{_link(k.code)}",),
        meta=(("contract", k.code), ("price", str(price)), ("source", "broker-snapshot")),
        key=f"adopt:{chart.broker_account}:{k.code}")


def adopt_position(conn: Connection, ledger: Ledger, chart: Chart, position: BrokerPosition, time: dt.datetime,
                   configured: bool, now: dt.datetime | None = None) -> int:
    """Book the adoption, set the futures mark, and raise the exception; returns the entry id."""
    k = position.contract
    ensure_contract(conn, ledger, k, time.date())
    ensure_holder(conn, ledger, chart, None)
    booked = ledger.book(adoption_entry(chart, position, time), conn)
    if k.sec_type == "FUT":
        save_marks(conn, k, {None: Holding(position.quantity, adoption_price(position))}, time)
    raise_exception(
        conn, "unattributed_position", k.code,
        f"{position.quantity} {k.code} at the broker predates the ledger: adopted into Unattributed "
        f"(entry {booked.id}) at {adoption_price(position) if k.sec_type == 'FUT' else position.avg_cost}",
        severity="warning" if configured else "info",
        dedupe_key=f"unattributed_position:{chart.broker_account}:{k.code}", now=now)
    return booked.id


def resolve_cleared_unattributed(conn: Connection, account: str, still_unattributed: set, who: str,
                                 now: dt.datetime | None = None) -> None:
    """Resolve unattributed_position exceptions whose contract Unattributed no longer holds."""
    prefix = f"unattributed_position:{account}:"
    for e in list_exceptions(conn, "open"):
        key = e["dedupe_key"]
        if e["kind"] == "unattributed_position" and key.startswith(prefix) \
                and key[len(prefix):] not in still_unattributed:
            resolve(conn, e["id"], who, "Unattributed no longer holds this contract", now)


def _link(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_./-" else "-" for ch in text)
