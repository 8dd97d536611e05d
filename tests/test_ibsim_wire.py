"""The gateway's wire codec and message encoders, checked against ib_async's own decoder.

Each encoder's output is framed, split again by our FrameBuffer, and handed to
`ib_async.decoder.Decoder` at server version 178. The decoder swallows and logs any exception
(a wrong field count drops the message), so every test asserts that the wrapper method was
actually called, with the values we sent.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from ib_async.decoder import Decoder

from tradeledger.broker.base import BrokerPosition, Contract, Execution
from tradeledger.broker.ibsim import messages as m
from tradeledger.broker.ibsim import wire
from tradeledger.broker.ibsim.contracts import (
    WireContract,
    local_symbol,
    stable_con_id,
    with_con_id,
)

MBT = Contract(
    code="MBTZ26",
    sec_type="FUT",
    symbol="MBT",
    exchange="CME",
    currency="USD",
    multiplier=Decimal("0.1"),
    expiry="202612",
    trading_class="MBT",
    con_id=712345678,
)
SPY = Contract(code="SPY", sec_type="STK", symbol="SPY", exchange="ARCA", currency="USD",
               con_id=756733)


class Recorder:
    """Stands in for ib_async's Wrapper: records every call by name."""

    defaultTimezone = dt.timezone.utc

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args):
            self.calls.append((name, args))

        return record

    def only(self, name: str) -> tuple:
        found = [args for n, args in self.calls if n == name]
        assert len(found) == 1, f"{name}: {self.calls}"
        return found[0]


@pytest.fixture
def decode(caplog):
    """Frame the fields, split them again, decode with ib_async; fail on a decoder error."""

    def run(fields: list) -> Recorder:
        rec = Recorder()
        decoder = Decoder(rec, wire.SERVER_VERSION)
        buf = wire.FrameBuffer()
        frame = wire.encode_frame(fields)
        # Feed byte by byte halves to exercise reassembly across reads.
        msgs = list(buf.feed(frame[:3])) + list(buf.feed(frame[3:]))
        assert len(msgs) == 1
        with caplog.at_level(logging.ERROR, logger="ib_async.Decoder"):
            decoder.interpret(msgs[0])
        assert not [r for r in caplog.records if r.name == "ib_async.Decoder"], caplog.text
        return rec

    return run


def test_to_field_conventions():
    assert wire.to_field(None) == ""
    assert wire.to_field(True) == "1" and wire.to_field(False) == "0"
    assert wire.to_field(Decimal("2.50")) == "2.5"
    assert wire.to_field(Decimal("1E+2")) == "100"
    assert wire.to_field(Decimal("-0.000")) == "0"
    assert wire.to_field(Decimal("12345678901.123456789")) == "12345678901.123456789"
    with pytest.raises(wire.WireError):
        wire.to_field("a\0b")


def test_frame_round_trip_many_messages_in_one_read():
    frames = b"".join(wire.encode_frame([i, "x", Decimal("0.1")]) for i in range(3))
    buf = wire.FrameBuffer()
    assert list(buf.feed(frames)) == [[str(i), "x", "0.1"] for i in range(3)]
    assert list(buf.feed(b"")) == []


def test_handshake_version_parsing():
    assert wire.parse_version_range(b"v157..178") == (157, 178, "")
    assert wire.parse_version_range(b"v100..200 +PACEAPI") == (100, 200, "+PACEAPI")
    assert wire.negotiate(157, 178) == 178
    with pytest.raises(wire.WireError):
        wire.negotiate(100, 170)


def test_field_reader_types():
    r = wire.FieldReader(["3", "", "1", "2.5", "1.7976931348623157e+308"])
    assert r.int() == 3 and r.int(default=-1) == -1 and r.bool() is True
    assert r.decimal() == Decimal("2.5") and r.decimal() is None
    assert r.str() == ""  # past the end reads as unset


def test_local_symbol_has_one_digit_year_and_con_ids_are_stable():
    assert local_symbol(MBT) == "MBTZ6"
    assert local_symbol(SPY) == "SPY"
    assert stable_con_id("MESZ26") == stable_con_id("MESZ26") != stable_con_id("MESH27")
    assert with_con_id(Contract("X", "STK", "X", "ARCA", "USD")).con_id == stable_con_id("X")


def test_wire_contract_matching():
    def req(*fields):
        return WireContract(wire.FieldReader([str(f) for f in fields]))

    assert req(712345678, "", "", "", "", "", "", "", "", "", "", "").matches(MBT)
    assert req(0, "MBT", "FUT", "202612", "", "", "", "CME", "", "USD", "", "").matches(MBT)
    assert req(0, "", "FUT", "", "", "", "", "", "", "", "MBTZ6", "").matches(MBT)
    assert not req(0, "MBT", "FUT", "202703", "", "", "", "CME", "", "USD", "", "").matches(MBT)
    assert req(0, "SPY", "STK", "", "", "", "", "SMART", "", "USD", "", "").matches(SPY)


def test_session_messages(decode):
    assert decode(m.next_valid_id(42)).only("nextValidId") == (42,)
    assert decode(m.managed_accounts(["DU1", "DU2"])).only("managedAccounts") == ("DU1,DU2",)
    assert decode(m.current_time(1_700_000_000)).only("currentTime") == (1_700_000_000,)
    assert decode(m.error(7, 200, "No security definition")).only("error") == (
        7,
        200,
        "No security definition",
        "",
    )


def test_position(decode):
    pos = BrokerPosition("DU1234567", MBT, Decimal(-3), Decimal("9512.5"))
    account, contract, qty, avg = decode(m.position(pos)).only("position")
    assert (account, qty, avg) == ("DU1234567", -3.0, 9512.5)
    assert contract.conId == MBT.con_id and contract.localSymbol == "MBTZ6"
    assert contract.multiplier == "0.1" and contract.lastTradeDateOrContractMonth == "202612"
    assert decode(m.position_end()).only("positionEnd") == ()


def test_account_messages(decode):
    assert decode(m.update_account_value("CashBalance", "1000.5", "USD", "DU1")).only(
        "updateAccountValue"
    ) == ("CashBalance", "1000.5", "USD", "DU1")
    pos = BrokerPosition("DU1", SPY, Decimal(10), Decimal("500.25"))
    c, qty, price, value, avg, unreal, real, acct = decode(
        m.update_portfolio(pos, Decimal("501"), Decimal("7.5"), Decimal(0))
    ).only("updatePortfolio")
    assert (c.conId, qty, price, value, avg, unreal, acct) == (
        756733, 10, 501, 5010, 500.25, 7.5, "DU1")
    assert decode(m.account_download_end("DU1")).only("accountDownloadEnd") == ("DU1",)
    assert decode(m.account_update_multi(3, "DU1", "FuturesPNL", "-12.5", "USD")).only(
        "accountUpdateMulti"
    ) == (3, "DU1", "", "FuturesPNL", "-12.5", "USD")
    assert decode(m.account_update_multi_end(3)).only("accountUpdateMultiEnd") == (3,)
    assert decode(m.account_summary(4, "DU1", "TotalCashValue", "99", "USD")).only(
        "accountSummary"
    ) == (4, "DU1", "TotalCashValue", "99", "USD")
    assert decode(m.account_summary_end(4)).only("accountSummaryEnd") == (4,)
    assert decode(m.update_account_time(dt.datetime(2025, 1, 2, 9, 5))).only(
        "updateAccountTime"
    ) == ("09:05",)


def test_contract_details(decode):
    req_id, cd = decode(m.contract_details(5, MBT, Decimal("5"), "Micro Bitcoin")).only(
        "contractDetails"
    )
    c = cd.contract
    assert req_id == 5 and c.conId == MBT.con_id and c.localSymbol == "MBTZ6"
    assert c.multiplier == "0.1" and c.lastTradeDateOrContractMonth == "202612"
    assert (c.symbol, c.secType, c.exchange, c.currency, c.tradingClass) == (
        "MBT",
        "FUT",
        "CME",
        "USD",
        "MBT",
    )
    assert cd.minTick == 5.0 and cd.longName == "Micro Bitcoin" and cd.minSize == 1
    _, cd = decode(m.contract_details(6, SPY, Decimal("0.01"), "SPDR S&P 500")).only(
        "contractDetails"
    )
    assert cd.contract.conId == 756733 and cd.contract.multiplier == "" and cd.stockType == "COMMON"
    assert decode(m.contract_details_end(5)).only("contractDetailsEnd") == (5,)


def test_market_data(decode):
    assert decode(m.tick_price(9, m.TICK_LAST, Decimal("101.25"), Decimal(3))).only(
        "priceSizeTick"
    ) == (9, 4, 101.25, 3.0)
    assert decode(m.tick_snapshot_end(9)).only("tickSnapshotEnd") == (9,)
    bars = [
        m.Bar("20250102", Decimal(1), Decimal(3), Decimal("0.5"), Decimal(2), Decimal(10), 4),
        m.Bar("20250103", Decimal(2), Decimal(2), Decimal(2), Decimal(2)),
    ]
    rec = decode(m.historical_data(8, "20250101", "20250104", bars))
    got = [args[1] for name, args in rec.calls if name == "historicalData"]
    assert [(b.date, b.open, b.high, b.low, b.close, b.volume, b.barCount) for b in got] == [
        ("20250102", 1, 3, 0.5, 2, 10, 4),
        ("20250103", 2, 2, 2, 2, 0, 0),
    ]
    assert rec.only("historicalDataEnd") == (8, "20250101", "20250104")


def _order(**kw) -> m.WireOrder:
    base = dict(
        order_id=11,
        client_id=3,
        perm_id=900001,
        contract=MBT,
        action="BUY",
        quantity=Decimal(2),
        order_type="LMT",
        limit_price=Decimal("95000"),
        account="DU1234567",
        order_ref="tl-ord-7",
        status="Submitted",
    )
    base.update(kw)
    return m.WireOrder(**base)


def test_open_order_and_status(decode):
    order_id, contract, order, state = decode(m.open_order(_order())).only("openOrder")
    assert order_id == 11 and contract.conId == MBT.con_id
    assert (order.orderId, order.clientId, order.permId) == (11, 3, 900001)
    assert (order.action, order.totalQuantity, order.orderType, order.lmtPrice) == (
        "BUY",
        2.0,
        "LMT",
        95000.0,
    )
    assert order.orderRef == "tl-ord-7" and order.account == "DU1234567"
    assert state.status == "Submitted" and order.whatIf is False
    args = decode(m.order_status(_order(status="Filled", filled=Decimal(2)))).only("orderStatus")
    assert args[:6] == (11, "Filled", 2.0, 0.0, 0.0, 900001) and args[8] == 3
    assert decode(m.open_order_end()).only("openOrderEnd") == ()


def test_completed_order(decode):
    o = _order(
        order_id=0, status="Filled", filled=Decimal(2), completed_time="20250102 10:00:00 UTC"
    )
    contract, order, state = decode(m.completed_order(o)).only("completedOrder")
    assert contract.localSymbol == "MBTZ6"
    assert (order.orderId, order.permId, order.orderRef, order.filledQuantity) == (
        0,
        900001,
        "tl-ord-7",
        2.0,
    )
    assert state.status == "Filled" and state.completedTime == "20250102 10:00:00 UTC"
    assert decode(m.completed_orders_end()).only("completedOrdersEnd") == ()


def test_exec_details_and_commission(decode):
    when = dt.datetime(2025, 1, 2, 14, 30, 5, tzinfo=dt.timezone.utc)
    ex = Execution(
        exec_id="0000e859.603f1a4b.01.01",
        account="DU1234567",
        contract=MBT,
        side="SELL",
        quantity=Decimal(1),
        price=Decimal("95012.5"),
        time=when,
        order_ref="tl-ord-7",
        perm_id=900001,
    )
    req_id, contract, e = decode(
        m.exec_details(-1, ex, 11, 3, Decimal(1), Decimal("95012.5"))
    ).only("execDetails")
    assert req_id == -1 and contract.conId == MBT.con_id
    assert (e.execId, e.side, e.shares, e.price, e.permId, e.orderId, e.clientId) == (
        "0000e859.603f1a4b.01.01",
        "SLD",
        1.0,
        95012.5,
        900001,
        11,
        3,
    )
    assert e.orderRef == "tl-ord-7" and e.acctNumber == "DU1234567" and e.time == when
    assert decode(m.exec_details_end(4)).only("execDetailsEnd") == (4,)
    (report,) = decode(m.commission_report(ex.exec_id, Decimal("1.02"), "USD")).only(
        "commissionReport"
    )
    assert (report.execId, report.commission, report.currency, report.realizedPNL) == (
        ex.exec_id,
        1.02,
        "USD",
        0.0,
    )
