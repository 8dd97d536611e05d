"""Typed kinds and keys: one function spells every exception's dedupe key; one module spells the
unattributed holder; an overfill is its own exception type, not a message to parse."""

from decimal import Decimal as D

import pytest

from tradeledger.engine.accounting import holders
from tradeledger.engine.trading.netting import Overfill, allocate_fill
from tradeledger.engine.trust.exceptions import UNBOOKED_EXECUTION, ExceptionKind, dedupe_key, key_prefix
from tradeledger.ledger.accounts import Chart


def test_dedupe_keys_are_spelled_by_one_function():
    assert dedupe_key(ExceptionKind.UNATTRIBUTED_FILL, "DU1", "0001.01") == "unattributed_fill:DU1:0001.01"
    assert dedupe_key("limit_hit", "MESZ26", "2026-11-02") == "limit_hit:MESZ26:2026-11-02"
    assert dedupe_key(UNBOOKED_EXECUTION, "DU1", "x") == "unbooked_execution:DU1:x"
    assert dedupe_key(ExceptionKind.RECONCILIATION_BREAK, "DU1", "MESZ26").startswith(
        key_prefix(ExceptionKind.RECONCILIATION_BREAK, "DU1"))
    with pytest.raises(ValueError):
        dedupe_key("unattributed_fil", "DU1")  # a typo is refused, never a key nothing resolves


def test_one_spelling_of_unattributed_per_place():
    chart = Chart("DU1")
    assert holders.to_column(holders.UNATTRIBUTED) == "" and holders.from_column("") is None
    assert holders.display(None) == "unattributed" and holders.display("Trend") == "Trend"
    assert holders.names_unattributed(" Unattributed ")
    assert holders.holder_of(chart, chart.unattributed) is None
    assert holders.holder_of(chart, chart.holdings("Trend")) == "Trend"
    assert holders.holder_of(chart, chart.cash) is False


def test_an_overfill_is_typed():
    with pytest.raises(Overfill, match="overfill"):
        allocate_fill({"A": D(2)}, D(3))
