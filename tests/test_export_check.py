"""The beancount export and `check`, with beancount's own loader as the oracle.

The worked example of shared/EXAMPLES.md (two strategies, one micro bitcoin contract, two days)
is booked through the Ledger API with the variation-margin amounts worked out by hand below;
the ledger, beancount, and the hand-worked totals must all agree to the cent.
"""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal as D
from pathlib import Path

import pytest

from tradeledger.ledger.export import beancount_balances, check, export_beancount
from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.store import Commodity, Ledger

UTC = dt.timezone.utc
ACCT = "DU1234567"
CASH = f"Assets:Broker:{ACCT}:Cash"
A, B = f"Assets:Broker:{ACCT}:Strategy:A", f"Assets:Broker:{ACCT}:Strategy:B"
INC_A, INC_B = "Income:Trading:A", "Income:Trading:B"
COM_A, COM_B = "Expenses:Commissions:A", "Expenses:Commissions:B"
MBT = "MBTZ26"
ZERO = Cost(D(0), "USD")


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def vm(account_income: str, amount: str) -> tuple[Posting, Posting]:
    return Posting(CASH, D(amount), "USD"), Posting(account_income, -D(amount), "USD")


def commission(account: str, amount: str) -> tuple[Posting, Posting]:
    return Posting(account, D(amount), "USD"), Posting(CASH, -D(amount), "USD")


def book_example(ledger: Ledger) -> list[int]:
    """shared/EXAMPLES.md, entry by entry; each VM figure is worked out in its comment."""
    opened = dt.date(2026, 11, 1)
    for name, booking in [(CASH, "STRICT"), (A, "FIFO"), (B, "FIFO"), (INC_A, "STRICT"), (INC_B, "STRICT"),
                          (COM_A, "STRICT"), (COM_B, "STRICT")]:
        ledger.open_account(Account(name, opened, booking=booking))
    ledger.ensure_commodity(Commodity("USD", "currency", None, D(1), opened))
    ledger.ensure_commodity(Commodity(MBT, "future", "USD", D("0.1"), opened))
    entries = [
        # Day 1, reference 90,000: B's -1 crosses with 1 of A's +3, no broker, no commission.
        Transaction(at(1, 14), "cross", "Cross MBTZ26 B -> A @ 90000",
                    (Posting(A, D(1), MBT, ZERO), Posting(B, D(-1), MBT, ZERO)), links=("cross-R1-MBTZ26",),
                    key="cross:R1:MBTZ26"),
        # E1: A buys 1 at 90,050; A's +1 marked 90,000 -> 90,050: 1 x 50 x 0.1 = 5.00. Commission 2.00.
        Transaction(at(1, 14, 1), "fill", "BUY 1 MBTZ26 @ 90050 for A",
                    vm(INC_A, "5.00") + (Posting(A, D(1), MBT, ZERO),) + commission(COM_A, "2.00"),
                    links=("fill-E1",), key=f"fill:{ACCT}:E1"),
        # E2: A buys 1 at 90,150; A's +2 marked 90,050 -> 90,150: 2 x 100 x 0.1 = 20.00. Commission pending.
        Transaction(at(1, 14, 2), "fill", "BUY 1 MBTZ26 @ 90150 for A",
                    vm(INC_A, "20.00") + (Posting(A, D(1), MBT, ZERO),), links=("fill-E2",),
                    meta=(("commission", "pending"),), key=f"fill:{ACCT}:E2"),
        # E2's commission report arrives at the next sync: 2.00.
        Transaction(at(1, 16), "commission", "Commission E2",
                    commission(COM_A, "2.00"), links=("fill-E2",), key=f"commission:{ACCT}:E2"),
        # Settlement 90,500: A 3 x 350 x 0.1 = 105.00; B -1 x 500 x 0.1 = -50.00.
        Transaction(at(1, 21), "settlement", "Settle MBTZ26 90500",
                    vm(INC_A, "105.00") + vm(INC_B, "-50.00"), meta=(("settlement_price", "90500"),),
                    key="settle:MBTZ26:2026-12-01"),
        # Day 2: E3, A sells 5 at 90,300; A's +3 marked 90,500 -> 90,300: 3 x -200 x 0.1 = -60.00.
        # A flip: closing 3 and opening -2. Commission 10.00.
        Transaction(at(2, 14), "fill", "SELL 5 MBTZ26 @ 90300 for A",
                    vm(INC_A, "-60.00") + (Posting(A, D(-3), MBT, ZERO), Posting(A, D(-2), MBT, ZERO))
                    + commission(COM_A, "10.00"), links=("fill-E3",), key=f"fill:{ACCT}:E3"),
        # Settlement 90,000: A -2 x -300 x 0.1 = 60.00; B -1 x -500 x 0.1 = 50.00.
        Transaction(at(2, 21), "settlement", "Settle MBTZ26 90000",
                    vm(INC_A, "60.00") + vm(INC_B, "50.00"), meta=(("settlement_price", "90000"),),
                    key="settle:MBTZ26:2026-12-02"),
    ]
    return [ledger.book(e).id for e in entries]


# Hand-worked totals (EXAMPLES.md): A's VM 5 + 20 + 105 - 60 + 60 = 130.00, commissions
# 2 + 2 + 10 = 14.00; B's VM -50 + 50 = 0.00; cash 130 - 14 + 0 = 116.00; A -2, B -1.
EXPECTED = {
    (INC_A, "USD"): D("-130.00"),
    (COM_A, "USD"): D("14.00"),
    (CASH, "USD"): D("116.00"),
    (A, MBT): D(-2),
    (B, MBT): D(-1),
}


def test_worked_example_to_the_cent(ledger: Ledger, tmp_path):
    book_example(ledger)
    assert ledger.balances() == EXPECTED  # Income:Trading:B nets to zero
    assert ledger.positions() == {(A, MBT): D(-2), (B, MBT): D(-1)}
    assert ledger.income(by_day=True) == {
        (INC_A, "USD", dt.date(2026, 12, 1)): D("-130.00"), (INC_B, "USD", dt.date(2026, 12, 1)): D("50.00"),
        (COM_A, "USD", dt.date(2026, 12, 1)): D("4.00"), (INC_B, "USD", dt.date(2026, 12, 2)): D("-50.00"),
        (COM_A, "USD", dt.date(2026, 12, 2)): D("10.00"),
    }
    path = tmp_path / "ledger.beancount"
    export_beancount(ledger, path)
    theirs, errors, count = beancount_balances(path)
    assert errors == []
    assert count == 7
    assert theirs == EXPECTED
    result = check(ledger, path)
    assert result.ok and result.errors == () and result.differences == ()
    text = path.read_text()
    assert "^fill-E2" in text and 'multiplier: "0.1"' in text
    assert "  Assets:Broker:DU1234567:Strategy:A  -3 MBTZ26 {0 USD}\n" \
           "  Assets:Broker:DU1234567:Strategy:A  -2 MBTZ26 {0 USD}\n" in text


def test_export_is_deterministic_and_keeps_futures_prices_out(ledger: Ledger, tmp_path):
    book_example(ledger)
    ledger.ensure_commodity(Commodity("SPY", "share", "USD", D(1), dt.date(2026, 11, 1)))
    ledger.set_price(MBT, dt.date(2026, 12, 1), D(90500), "USD")
    ledger.set_price("SPY", dt.date(2026, 12, 1), D("601.25"), "USD")
    first, second = tmp_path / "a.beancount", tmp_path / "b.beancount"
    export_beancount(ledger, first)
    export_beancount(ledger, second)
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert "2026-12-01 price SPY 601.25 USD" in text
    assert "price MBTZ26" not in text  # beancount would value futures without the multiplier
    assert check(ledger, first).ok


@pytest.mark.parametrize("original, tampered, difference", [
    ("  Income:Trading:A  -105 USD\n", "  Income:Trading:A  -106 USD\n", None),
    ("  Assets:Broker:DU1234567:Strategy:A  -2 MBTZ26 {0 USD}\n",
     "  Assets:Broker:DU1234567:Strategy:A  -1 MBTZ26 {0 USD}\n",
     ((A, MBT, D(-2), D(-1)),)),
])
def test_a_tampered_file_is_reported(ledger: Ledger, tmp_path, original, tampered, difference):
    book_example(ledger)
    path = tmp_path / "ledger.beancount"
    export_beancount(ledger, path)
    text = path.read_text()
    assert text.count(original) == 1
    text = text.replace(original, tampered)
    if difference is None:  # keep the entry balanced, so that only the comparison can see it
        text = text.replace("  Assets:Broker:DU1234567:Cash  105 USD\n", "  Assets:Broker:DU1234567:Cash  106 USD\n")
        difference = ((CASH, "USD", D("116.00"), D(117)), (INC_A, "USD", D("-130.00"), D(-131)))
    path.write_text(text)
    result = check(ledger, path)
    assert result.errors == ()
    assert result.differences == difference
    assert not result.ok
    assert D(result.as_json()["differences"][0]["ledger"]) == difference[0][2]


@pytest.mark.parametrize("addition, message", [
    ('2026-12-03 * "bad"\n  Assets:Broker:DU1234567:Cash  1 USD\n  Income:Trading:A  -2 USD\n', "does not balance"),
    ('2026-12-03 * "bad"\n  Assets:Nowhere  1 USD\n  Income:Trading:A  -1 USD\n', "inactive account"),
])
def test_a_beancount_error_is_reported(ledger: Ledger, tmp_path, addition, message):
    book_example(ledger)
    path = tmp_path / "ledger.beancount"
    export_beancount(ledger, path)
    lines = path.read_text().count("\n")
    with path.open("a") as f:
        f.write("\n" + addition)
    result = check(ledger, path)
    assert not result.ok
    assert len(result.errors) >= 1
    joined = "\n".join(result.errors).lower()
    assert message in joined or "unknown" in joined
    assert f"ledger.beancount:{lines + 2}" in result.errors[0]


def interrupted(entries):
    """The export's entry stream, breaking after its first chunk (a crash mid-export)."""
    def stream(*args, **kwargs):
        chunks = entries(*args, **kwargs)
        yield next(chunks)
        raise RuntimeError("disk pulled mid-export")
    return stream


def test_export_is_atomic(ledger: Ledger, tmp_path, monkeypatch):
    from tradeledger.ledger import export

    book_example(ledger)
    out = tmp_path / "out"
    path = out / "ledger.beancount"
    export_beancount(ledger, path)
    old = path.read_bytes()
    old_inode = os.stat(path).st_ino
    ledger.book(Transaction(at(3, 10), "commission", "late fee", commission(COM_B, "1.00")))
    monkeypatch.setattr(export, "_entries", interrupted(export._entries))
    with pytest.raises(RuntimeError, match="mid-export"):
        export_beancount(ledger, path)
    monkeypatch.undo()
    assert path.read_bytes() == old  # the old file, whole
    assert sorted(p.name for p in out.iterdir()) == ["ledger.beancount"]  # no temporary left over
    # a clean export replaces it by rename (a new file, never rewritten in place)
    export_beancount(ledger, path)
    assert path.read_bytes() != old and "late fee" in path.read_text()
    assert os.stat(path).st_ino != old_inode
    assert sorted(p.name for p in out.iterdir()) == ["ledger.beancount"]
    assert check(ledger, path).ok


def test_export_into_a_new_directory(ledger: Ledger, tmp_path):
    book_example(ledger)
    path = tmp_path / "deep" / "er" / "ledger.beancount"
    size = export_beancount(ledger, path)
    assert size == len(path.read_text()) > 0
    assert check(ledger, Path(path)).ok
