"""Holders: who owns a position in the books, a strategy or the unattributed bucket.

A `Holder` is a strategy's account component (`Trend-fast`, the name `Chart.holdings` turns into
`Assets:Broker:<Acct>:Strategy:Trend-fast`) or `UNATTRIBUTED` (None): positions, fills and
commissions no strategy owns (`Assets:Broker:<Acct>:Unattributed`).

The unattributed holder has exactly three spellings, each converted here and nowhere else:
None in memory (every engine function), "" in the engine's tables (holder columns are part of
primary keys and cannot be NULL), and "unattributed" for a person (output and command input).
"""

from __future__ import annotations

from tradeledger.ledger.accounts import Chart

Holder = str | None  # a strategy's account component, or UNATTRIBUTED
UNATTRIBUTED: Holder = None
UNATTRIBUTED_NAME = "unattributed"  # what a person reads and types


def to_column(holder: Holder) -> str:
    """The holder as the engine's tables store it ("" for unattributed)."""
    return holder or ""


def from_column(value: str | None) -> Holder:
    """A holder column's value back into a Holder."""
    return value or UNATTRIBUTED


def display(holder: Holder) -> str:
    """The holder as a person reads it."""
    return holder or UNATTRIBUTED_NAME


def names_unattributed(name: str) -> bool:
    """Does a person's word name the unattributed bucket?"""
    return name.strip().lower() == UNATTRIBUTED_NAME


def sort_key(holder: Holder) -> str:
    """Unattributed first, then strategies by name (a stable order for entries and output)."""
    return to_column(holder)


def holder_of(chart: Chart, account: str) -> Holder | bool:
    """The holder owning a holdings account; False when the account holds nothing of theirs."""
    if account == chart.unattributed:
        return UNATTRIBUTED
    prefix = f"{chart.root}:Strategy:"
    return account[len(prefix):] if account.startswith(prefix) else False
