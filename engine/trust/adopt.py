"""What the broker holds beyond the ledger: surpluses are adopted, shortfalls are breaks.

After the opening (engine/trust/opening.py) every position change should arrive as an execution.
Some do not: a transfer in from another broker, a position opened on another platform, a
delivery at expiry. Reconciliation books every execution the broker reports first; what is left
over is decided per contract by one rule (docs/reconciliation.md):

* **surplus** — the broker holds more than all the ledger's holders together, in the same
  direction (or the ledger holds none): the difference is adopted into
  `Assets:Broker:<Acct>:Unattributed` (futures at the broker's mark, shares at its average cost
  against Equity:Opening-Balances; `engine.accounting.arrivals.surplus_entry`) and raises an
  `unattributed_position` exception to review (warning for an instrument tradeledger trades,
  info otherwise). Nothing is locked: no strategy's position changed, so strategies keep trading.
* **shortfall** — the broker holds less than the ledger's holders (or the other way round):
  some holder's position left without an execution, and only a person knows whose. It stays a
  reconciliation break that locks the instrument until someone says whose it was
  (`tradeledger adjust manual-close`) and the books agree again.

A contract with an execution the ledger could not book is never adopted (the execution would
count it twice once booked): its break stands. Adoption is one transaction per contract, keyed
by account, contract and snapshot, and re-checks the ledger under the contract's lock, so two
reconciliations never adopt one surplus twice. A failure for one contract is reported, never
raised past it.

The exception is raised when the units arrive, and reconciliation never raises it again (the
ledger and the broker then agree). So when `adjust reverse` takes back an adoption (or an
attribution) whose booking resolved it, the units are Unattributed's again and the reversal raises
it anew in its own transaction (`position_back`), as it was (its severity), with the way out.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.context import Books
from tradeledger.broker.base import AccountSnapshot, BrokerPosition
from tradeledger.engine.accounting.arrivals import arrival_price, unbookable
from tradeledger.engine.accounting.entries import surplus_entry
from tradeledger.engine.accounting.holders import holder_of
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder, load_holdings, save_marks
from tradeledger.engine.tables import tl_exception
from tradeledger.engine.trust.exceptions import (
    ExceptionKind, Occurrence, dedupe_key, key_prefix, list_exceptions, raise_exception, resolve,
)

ZERO = Decimal(0)


def surplus(broker_qty: Decimal, ledger_qty: Decimal) -> Decimal:
    """The units the broker holds beyond the ledger in the same direction, else 0 (pure)."""
    if broker_qty == 0 or (ledger_qty != 0 and (ledger_qty > 0) != (broker_qty > 0)):
        return ZERO
    return broker_qty - ledger_qty if abs(broker_qty) > abs(ledger_qty) else ZERO


def surpluses(snap: AccountSnapshot, positions: dict, skip: set = frozenset()) -> list[tuple[BrokerPosition, Decimal]]:
    """(broker position, surplus) for every contract the broker holds more of (pure)."""
    out = []
    for p in snap.positions:
        extra = surplus(p.quantity, positions.get(p.contract.code, ZERO))
        if extra and p.contract.code not in skip:
            out.append((p, extra))
    return out


def adopt_surplus(conn: Connection, books: Books, position: BrokerPosition, snapshot_id: int,
                  as_of: dt.datetime, configured: bool, now: dt.datetime | None = None) -> int | None:
    """Adopt the contract's surplus as of the snapshot; returns the entry id, or None when the
    ledger (re-read under the contract's lock) no longer shows a surplus."""
    ledger, chart = books.ledger, books.chart
    k = position.contract
    why = unbookable(k)
    if why:
        raise ValueError(why)
    ensure_contract(conn, ledger, k, as_of.date())
    ensure_holder(conn, books, None)
    holdings = load_holdings(conn, books, k)  # takes the contract's lock
    held = sum((units for (account, _), units in ledger.balances(
        as_of=as_of, prefix=chart.root, conn=conn, commodity=k.code).items()
        if holder_of(chart, account) is not False), ZERO)
    extra = surplus(position.quantity, held)
    if not extra:
        return None
    txn, after = surplus_entry(chart, position, holdings, extra, snapshot_id, as_of)
    booked = ledger.book(txn, conn)
    save_marks(conn, k, after, as_of, before=holdings)
    raise_exception(
        conn, ExceptionKind.UNATTRIBUTED_POSITION, k.code,
        f"{extra} {k.code} arrived at the broker without an execution (a transfer in, a trade on another "
        f"platform, a delivery): adopted into Unattributed (entry {booked.id}) at {arrival_price(position)}; "
        f"strategies keep trading. To give it to a strategy: `tradeledger adjust adopt {k.code} {abs(extra)} "
        f"--strategy NAME`",
        severity="warning" if configured else "info",
        dedupe_key=dedupe_key(ExceptionKind.UNATTRIBUTED_POSITION, chart.broker_account, k.code), now=now)
    return booked.id


def resolve_cleared_unattributed(conn: Connection, account: str, still_unattributed: set, who: str,
                                 now: dt.datetime | None = None) -> None:
    """Resolve unattributed_position exceptions whose contract Unattributed no longer holds."""
    prefix = key_prefix(ExceptionKind.UNATTRIBUTED_POSITION, account)
    for e in list_exceptions(conn, "open"):
        key = e["dedupe_key"]
        if e["kind"] == ExceptionKind.UNATTRIBUTED_POSITION and key.startswith(prefix) \
                and key[len(prefix):] not in still_unattributed:
            resolve(conn, e["id"], who, "Unattributed no longer holds this contract", now=now)


def position_back(conn: Connection, key: str, code: str, units: Decimal, what: str, reason: str) -> Occurrence:
    """The `unattributed_position` exception `key` raised anew: `units` of `code` are Unattributed's
    again because `what` (an adoption into a strategy, as the user names it) was reversed for
    `reason`; at the severity its last occurrence had (warning, or info for an instrument
    tradeledger does not trade)."""
    t = tl_exception
    severity = conn.execute(sa.select(t.c.severity).where(t.c.dedupe_key == key).order_by(t.c.id.desc())
                            .limit(1)).scalar() or "warning"
    return Occurrence(ExceptionKind.UNATTRIBUTED_POSITION, code,
                      f"{units} {code} is Unattributed's again: {what} is reversed ({reason}); strategies keep "
                      f"trading. To give it to a strategy: `tradeledger adjust adopt {code} {abs(units)} "
                      f"--strategy NAME`", key, severity)
