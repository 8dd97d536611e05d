"""`import entries` makes each distinct posting line once (ledger/jsonl.py keeps it by its text):
a line must still come out exactly as made afresh, and a line of the wrong shape must still be
refused with its own reason, whatever was read before it."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from tradeledger.ledger.jsonl import EntriesFile
from tradeledger.ledger.model import Cost, LedgerError, Posting

CASH, FUT = "Assets:Broker:DU1:Cash", "Assets:Broker:DU1:Futures"


def _line(*postings) -> str:
    return json.dumps({"time": "2026-01-02T14:30:00+00:00", "kind": "fill", "narration": "n",
                       "postings": list(postings)})


def _read(*lines):
    return [item.txn.postings for item in EntriesFile(list(lines), name="f").entries()]


def test_repeated_lines_make_equal_postings_and_each_text_its_own_number():
    fee = {"account": CASH, "units": "-1.24", "commodity": "USD"}
    lot = {"account": FUT, "units": "2", "commodity": "MESZ26",
           "cost": {"number": "0", "currency": "USD", "date": None, "label": None}}
    first, again, other = _read(_line(fee, lot), _line(fee, lot), _line({**fee, "units": "-1.240"}, lot))
    assert first == again == (Posting(CASH, D("-1.24"), "USD"), Posting(FUT, D(2), "MESZ26", Cost(D(0), "USD")))
    assert str(other[0].units) == "-1.240"  # an equal number in other text is made from its own text


@pytest.mark.parametrize("bad, why", [
    ({"account": CASH, "units": -1.24, "commodity": "USD"}, "decimal text"),
    ({"account": CASH, "units": "-1.24", "commodity": 7}, "commodity must be text"),
    ({"account": CASH, "commodity": "USD"}, "missing units"),
    ({"account": CASH, "units": "-1.24", "commodity": "USD", "cost": ["0", "USD"]}, "not an entry"),
])
def test_a_bad_line_is_refused_after_good_ones(bad, why):
    good = {"account": CASH, "units": "-1.24", "commodity": "USD"}
    with pytest.raises(LedgerError, match=f"f, line 2: .*{why}"):
        _read(_line(good), _line(bad))


def test_a_label_that_is_not_text_is_not_taken_for_one_that_is():
    lot = {"account": FUT, "units": "2", "commodity": "MESZ26",
           "cost": {"number": "0", "currency": "USD", "date": None, "label": 5}}
    as_float = {**lot, "cost": {**lot["cost"], "label": 5.0}}  # 5 == 5.0: one key, were it kept
    made, = _read(_line(lot))[0]
    again, = _read(_line(as_float))[0]
    assert type(made.cost.label) is int and type(again.cost.label) is float
