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
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine import tables

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
