"""Who holds an unattributed fill now: the `adjust attribute` (or manual close by execution) that
gave it to a strategy, and whether that entry still stands.

A fill booked to Unattributed (no orderRef of ours) can be given to a strategy once
(`adjust attribute`; the `adjustment` row stays, so a second attribution is refused). The
trader can reverse that entry by hand (`adjust reverse`), and a correction of the fill reverses
it too (the corrected entry then books the fill to the strategy itself). The effective holder of
the fill's Unattributed part is the attribution's strategy while its entry is not reversed, else
Unattributed. Every place that asks (a late commission, a changed commission, a correction, the
blotter, the costs report) asks here, so they cannot disagree.
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
    """exec key -> its attribution (standing or reversed), for the fills of `exec_keys` (all
    when None) that were ever attributed."""
    a = tables.adjustment
    query = sa.select(a.c.subject, a.c.to_holder, a.c.txn_id).where(a.c.kind.in_(KINDS)).order_by(a.c.id)
    found: dict[str, tuple[str, int]] = {}
    if exec_keys is None:
        rows = conn.execute(query).all()
    else:
        keys = sorted(set(exec_keys))
        rows = [r for start in range(0, len(keys), 500)
                for r in conn.execute(query.where(a.c.subject.in_(keys[start:start + 500])))]
    for subject, to_holder, txn_id in rows:
        if to_holder and subject not in found:  # one per fill: a second attribution is refused
            found[subject] = (to_holder, txn_id)
    reversed_by = ledger.reversals([txn_id for _, txn_id in found.values()], conn)
    return {key: Attribution(key, holder, txn_id, reversed_by.get(txn_id)) for key, (holder, txn_id) in found.items()}


def live_attribution(conn: Connection, ledger, exec_key: str) -> tuple[str, int] | None:
    """(strategy, entry id) of the attribution that gave this unattributed fill to a strategy,
    while that entry stands (not reversed); else None: the fill's Unattributed part is Unattributed's."""
    found = attributions(conn, ledger, [exec_key]).get(exec_key)
    return (found.strategy, found.txn_id) if found is not None and found.live else None
