"""Properties of the corporate-action arithmetic (entries.py), over random holdings:

* withholding: the holders' parts add up to the broker's account-level tax to the cent, each within a
  cent of its exact share;
* a split with cash in lieu: the entry balances; every holder ends with whole shares adding up to what
  the broker keeps (the whole part of the account's shares); the holders' cash adds up to the broker's
  cash in lieu to the cent; the lots kept are restated at cost x old/new, the oldest sold first.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from tradeledger.engine.accounting.entries import split_postings, withholding_parts
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Cost

HOLDERS = (None, "A", "B", "C")
CENT = D("0.01")
positions = st.dictionaries(st.sampled_from(HOLDERS), st.integers(1, 5000), min_size=1)


@settings(max_examples=200, deadline=None)
@given(positions, st.integers(1, 500), st.integers(0, 99))
def test_withholding_parts_add_up_to_the_account_level_tax(held, per_share_cents, rate_percent):
    per_share, rate = D(per_share_cents) / 100, D(rate_percent) / 100
    units = {h: D(n) for h, n in held.items()}
    parts = withholding_parts(per_share, rate, units)
    account = (sum(units.values()) * per_share * rate).quantize(CENT)
    assert sum(parts.values(), D(0)) == account
    for h, n in units.items():
        assert abs(parts.get(h, D(0)) - n * per_share * rate) < CENT + CENT / 2


lots_of = st.lists(st.tuples(st.integers(1, 400), st.integers(100, 99999)), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(HOLDERS), lots_of, min_size=1), st.sampled_from([2, 4, 5, 8, 10, 20]),
       st.integers(1, 500000))
def test_a_split_with_cash_in_lieu_keeps_whole_shares_and_adds_up(holdings, old, cil_cents):
    chart = Chart("DU1234567")
    day = dt.date(2026, 12, 1)
    lots = {h: [(Cost(D(cost) / 100, "USD", day, f"{h}-{i}"), D(n)) for i, (n, cost) in enumerate(rows)]
            for h, rows in holdings.items()}
    price = D(cil_cents) / 100
    postings = split_postings(chart, "XYZ", D(1), D(old), lots, dt.date(2026, 12, 7), price, "USD")

    assert sum((p.units * (p.cost.number if p.cost else 1) for p in postings), D(0)) == 0  # balanced
    total = sum((n for rows in lots.values() for _, n in rows), D(0))
    # the closing postings take out the old units; what is left is each holder's post-split position
    after = {h: sum((p.units for p in postings if p.account == chart.holdings(h) and p.units > 0), D(0))
             for h in lots}
    assert all(v == v.to_integral_value() for v in after.values())
    assert sum(after.values()) == (total / old).to_integral_value(rounding="ROUND_FLOOR")
    cash = sum((p.units for p in postings if p.account == chart.cash), D(0))
    assert cash == ((total / old - sum(after.values())) * price).quantize(CENT)
    for h in lots:  # kept lots: restated at cost x old, oldest sold first (FIFO)
        restated = {c.label: c.number * old for c, _ in lots[h]}
        kept = [p for p in postings if p.account == chart.holdings(h) and p.units > 0
                and not (p.cost.label or "").startswith("cil-")]
        assert all(p.cost.number == restated[p.cost.label] for p in kept)
        labels = [c.label for c, _ in lots[h]]
        kept_labels = [p.cost.label for p in kept]
        assert kept_labels == labels[len(labels) - len(kept_labels):]
        full = {c.label: n / old for c, n in lots[h]}
        assert all(p.units == full[p.cost.label] for p in kept[1:])  # only the oldest kept lot is cut
