"""Who holds an unattributed fill now: the `adjust attribute` (or manual close by execution) that
gave it to a strategy, and whether that entry still stands.

A fill booked to Unattributed (no orderRef of ours) is given to a strategy by `adjust attribute`
(the `adjustment` row stays). The trader can reverse that entry by hand (`adjust reverse`: the
fill's commission follows the position back, trading/commissions.py) and then attribute the fill
again, to the same or another strategy; a second attribution while one stands is refused, so at
most one stands. A correction of the fill reverses the standing one too (the corrected entry then
books the fill to the strategy itself). The effective holder of the fill's Unattributed part is
the strategy of the newest attribution while its entry is not reversed, else Unattributed. Every
place that asks (a late commission, a changed commission, an attribution's reversal, a
correction, the blotter, the costs report) asks here, so they cannot disagree.

The trader is told about such a fill by an `unattributed_fill` exception (`unattributed_fill`, the
one spelling of it): raised when the fill is booked, resolved by the attribution, and raised anew
when that attribution is reversed by hand (`attribution_reversed`), in the reversal's transaction:
the fill is Unattributed's again, so is the question. The resolved exception keeps its history;
the new one is a new row under the same dedupe key, resolved again by the next attribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine import tables
from tradeledger.engine.trust.exceptions import ExceptionKind, Occurrence, dedupe_key

KINDS = ("attribute", "manual-close")


@dataclass(frozen=True)
class Attribution:
    exec_key: str
    strategy: str  # as the holder column stores it
    txn_id: int  # the attribution's entry
    reversed_by: int | None  # the entry that reversed it (by hand, or a correction of the fill)

    @property
    def live(self) -> bool:
        return self.reversed_by is None


def attributions(conn: Connection, ledger, exec_keys=None) -> dict[str, Attribution]:
    """exec key -> its newest attribution (standing or reversed), for the fills of `exec_keys`
    (all when None) that were ever attributed. Only the newest can stand: an older one was
    reversed before the next was booked, and with its reversal it cancels out."""
    a = tables.adjustment
    query = sa.select(a.c.subject, a.c.to_holder, a.c.txn_id).where(a.c.kind.in_(KINDS)).order_by(a.c.id)
    found: dict[str, tuple[str, int]] = {}
    if exec_keys is None:
        rows = conn.execute(query).all()
    else:
        keys = sorted(set(exec_keys))
        rows = [r for start in range(0, len(keys), 500)
                for r in conn.execute(query.where(a.c.subject.in_(keys[start:start + 500])))]
    for subject, to_holder, txn_id in rows:  # oldest first: the newest stays
        if to_holder:  # a manual close at a price names no fill's holder
            found[subject] = (to_holder, txn_id)
    reversed_by = ledger.reversals([txn_id for _, txn_id in found.values()], conn)
    return {key: Attribution(key, holder, txn_id, reversed_by.get(txn_id)) for key, (holder, txn_id) in found.items()}


def live_attribution(conn: Connection, ledger, exec_key: str) -> tuple[str, int] | None:
    """(strategy, entry id) of the attribution that gave this unattributed fill to a strategy,
    while that entry stands (not reversed); else None: the fill's Unattributed part is Unattributed's."""
    found = attributions(conn, ledger, [exec_key]).get(exec_key)
    return (found.strategy, found.txn_id) if found is not None and found.live else None


def unattributed_fill(account: str, exec_key: str, contract_code: str, detail: str) -> Occurrence:
    """The exception of a fill in Unattributed (pure): kind, subject and dedupe key are the same
    whoever raises it (the fill's booking, an attribution's reversal) and whoever resolves it."""
    return Occurrence(ExceptionKind.UNATTRIBUTED_FILL, f"{contract_code} {exec_key}", detail,
                      dedupe_key(ExceptionKind.UNATTRIBUTED_FILL, account, exec_key))


def attribution_reversed(account: str, exec_key: str, contract_code: str, quantity: Decimal, price: Decimal,
                         strategy: str, entry: int, reason: str) -> Occurrence:
    """What the reversal of attribution `entry` (of `quantity` of fill `exec_key` to `strategy`, as
    the user names it) raises with it (pure): the fill is Unattributed's again."""
    return unattributed_fill(account, exec_key, contract_code,
                             f"{quantity:+} {contract_code} @ {price}: its attribution to {strategy} (entry {entry}) "
                             f"is reversed ({reason}): booked to Unattributed again")
