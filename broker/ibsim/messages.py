"""Encoders for every server -> client message the simulated gateway sends, at server version 178.

Each function returns the message as a list of field values (see `wire.to_field`); the server
frames it. The field order and count are copied from ib_async 2.1's decoder
(`ib_async/decoder.py`), which is strict: a message one field short is dropped with a logged
exception and the request that waited for it times out. Where the decoder reads a count
(`numLegs`, `numConditions`, ...) we always send "0" so that no optional block follows, and
where it branches on a value (`deltaNeutralOrderType`, `hedgeType`, `algoStrategy`) we send the
empty string so that the branch is not taken. `tests/test_ibsim_wire.py` runs every encoder
through ib_async's own decoder.

Message ids (first field) are IB's "incoming message" ids; most messages then carry a version
number that the decoder skips.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tradeledger.broker.base import BrokerPosition, Contract, Execution
from tradeledger.broker.ibsim.contracts import contract_fields, local_symbol, multiplier_text
from tradeledger.broker.ibsim.wire import format_ib_time

Fields = list[object]

TICK_BID, TICK_ASK, TICK_LAST, TICK_CLOSE = 1, 2, 4, 9


@dataclass(frozen=True)
class WireOrder:
    """What openOrder / orderStatus / completedOrder say about one order."""

    order_id: int  # the client's id; 0 for an order this client did not place
    client_id: int
    perm_id: int
    contract: Contract
    action: str  # BUY / SELL
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    account: str
    order_ref: str
    status: str  # IB status text: PreSubmitted, Submitted, Filled, Cancelled, Inactive
    filled: Decimal = Decimal(0)
    avg_fill_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    completed_time: str = ""
    completed_status: str = ""

    @property
    def remaining(self) -> Decimal:
        if self.status in ("Cancelled", "Inactive"):
            return Decimal(0)
        return self.quantity - self.filled


# --- session ---------------------------------------------------------------------------------


def next_valid_id(order_id: int) -> Fields:
    return [9, 1, order_id]


def managed_accounts(accounts: list[str]) -> Fields:
    return [15, 1, ",".join(accounts)]


def current_time(epoch: int) -> Fields:
    return [49, 1, epoch]


def error(req_id: int, code: int, message: str) -> Fields:
    # The last field (advancedOrderRejectJson) exists from server version 166.
    return [4, 2, req_id, code, message, ""]


# --- positions and account --------------------------------------------------------------------


def position(pos: BrokerPosition) -> Fields:
    return [61, 3, pos.account, *contract_fields(pos.contract), pos.quantity, pos.avg_cost]


def position_end() -> Fields:
    return [62, 1]


def update_account_value(key: str, value: str, currency: str, account: str) -> Fields:
    return [6, 2, key, value, currency, account]


def update_portfolio(
    pos: BrokerPosition, market_price: Decimal, unrealized: Decimal, realized: Decimal
) -> Fields:
    c = pos.contract
    market_value = pos.quantity * market_price * c.multiplier
    return [
        7,
        8,
        c.con_id,
        c.symbol,
        c.sec_type,
        c.expiry,
        "0",
        "",
        multiplier_text(c),
        c.exchange,  # primaryExchange
        c.currency,
        local_symbol(c),
        c.trading_class or c.symbol,
        pos.quantity,
        market_price,
        market_value,
        pos.avg_cost,
        unrealized,
        realized,
        pos.account,
    ]


def update_account_time(when: dt.datetime) -> Fields:
    return [8, 1, when.strftime("%H:%M")]


def account_download_end(account: str) -> Fields:
    return [54, 1, account]


def account_update_multi(
    req_id: int, account: str, key: str, value: str, currency: str, model_code: str = ""
) -> Fields:
    return [73, 1, req_id, account, model_code, key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [74, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [63, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [64, 1, req_id]


# --- contracts and market data ----------------------------------------------------------------


def contract_details(req_id: int, c: Contract, min_tick: Decimal, long_name: str,
                     last_trade: str = "", real_expiration: str = "") -> Fields:
    # No version field from server version 164 on; lastTradeDate travels as "lastTimes".
    # A future's last trading day (YYYYMMDD) when the venue knows it, else its month.
    is_future = c.sec_type == "FUT"
    return [
        10,
        req_id,
        c.symbol,
        c.sec_type,
        (last_trade or c.expiry) if is_future else c.expiry,
        "0",
        "",
        c.exchange,
        c.currency,
        local_symbol(c),
        c.trading_class or c.symbol,  # marketName
        c.trading_class or c.symbol,
        c.con_id,
        min_tick,
        multiplier_text(c),
        "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,LMT,MKT,STP",  # orderTypes
        c.exchange,  # validExchanges
        1,  # priceMagnifier
        0,  # underConId
        long_name,
        c.exchange,  # primaryExchange
        c.expiry if is_future else "",  # contractMonth
        "",  # industry
        "",  # category
        "",  # subcategory
        "UTC",  # timeZoneId
        "",  # tradingHours
        "",  # liquidHours
        "",  # evRule
        "",  # evMultiplier
        0,  # numSecIds
        1,  # aggGroup
        c.symbol if is_future else "",  # underSymbol
        "IND" if is_future else "",  # underSecType
        "",  # marketRuleIds
        (real_expiration or c.expiry) if is_future else "",  # realExpirationDate
        "" if is_future else "COMMON",  # stockType
        1,  # minSize
        1,  # sizeIncrement
        1,  # suggestedSizeIncrement
    ]


def contract_details_end(req_id: int) -> Fields:
    return [52, 1, req_id]


def tick_price(req_id: int, tick_type: int, price: Decimal, size: Decimal = Decimal(0)) -> Fields:
    return [1, 6, req_id, tick_type, price, size, 0]


def tick_snapshot_end(req_id: int) -> Fields:
    return [57, 1, req_id]


def market_data_type(req_id: int, kind: int) -> Fields:
    return [58, 1, req_id, kind]


@dataclass(frozen=True)
class Bar:
    date: str  # "YYYYMMDD" for daily bars, "YYYYMMDD HH:MM:SS" intraday
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    count: int = 0


def historical_data(req_id: int, start: str, end: str, bars: list[Bar]) -> Fields:
    fields: Fields = [17, req_id, start, end, len(bars)]
    for b in bars:
        wap = (b.open + b.high + b.low + b.close) / 4
        fields += [b.date, b.open, b.high, b.low, b.close, b.volume, wap, b.count]
    return fields


# --- orders and executions --------------------------------------------------------------------


def order_status(o: WireOrder) -> Fields:
    return [
        3,
        o.order_id,
        o.status,
        o.filled,
        o.remaining,
        o.avg_fill_price,
        o.perm_id,
        0,  # parentId
        o.last_fill_price,
        o.client_id,
        "",  # whyHeld
        0,  # mktCapPrice
    ]


def _order_head(o: WireOrder) -> Fields:
    """action .. orderRef: the fields openOrder and completedOrder share at their start."""
    return [
        o.action,
        o.quantity,
        o.order_type,
        o.limit_price,
        None,  # auxPrice
        "DAY",
        "",  # ocaGroup
        o.account,
        "O",  # openClose
        0,  # origin: customer
        o.order_ref,
    ]


def open_order(o: WireOrder) -> Fields:
    # No version field; the decoder's reading order is followed field by field.
    return [
        5,
        o.order_id,
        *contract_fields(o.contract),
        *_order_head(o),
        o.client_id,
        o.perm_id,
        0,  # outsideRth
        0,  # hidden
        None,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # sharesAllocation (deprecated, skipped by the decoder)
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage; no faProfile from v177
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        None,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        None,  # startingPrice
        None,  # stockRefPrice
        None,  # delta
        None,  # stockRangeLower
        None,  # stockRangeUpper
        0,  # displaySize
        0,  # blockOrder
        0,  # sweepToFill
        0,  # allOrNone
        None,  # minQty
        0,  # ocaType
        0,  # eTradeOnly
        0,  # firmQuoteOnly
        None,  # nbboPriceCap
        0,  # parentId
        0,  # triggerMethod
        None,  # volatility
        0,  # volatilityType
        "",  # deltaNeutralOrderType: empty, so no delta-neutral block
        None,  # deltaNeutralAuxPrice
        0,  # continuousUpdate
        0,  # referencePriceType
        None,  # trailStopPrice
        None,  # trailingPercent
        None,  # basisPoints
        None,  # basisPointsType
        "",  # comboLegsDescrip
        0,  # numLegs
        0,  # numOrderLegs
        0,  # numSmartComboRoutingParams
        None,  # scaleInitLevelSize
        None,  # scaleSubsLevelSize
        None,  # scalePriceIncrement: unset, so no scale block
        "",  # hedgeType: empty, so no hedgeParam
        0,  # optOutSmartRouting
        "",  # clearingAccount
        "",  # clearingIntent
        0,  # notHeld
        0,  # deltaNeutralContract present
        "",  # algoStrategy: empty, so no params
        0,  # solicited
        0,  # whatIf
        o.status,
        "",  # initMarginBefore
        "",  # maintMarginBefore
        "",  # equityWithLoanBefore
        "",  # initMarginChange
        "",  # maintMarginChange
        "",  # equityWithLoanChange
        "",  # initMarginAfter
        "",  # maintMarginAfter
        "",  # equityWithLoanAfter
        None,  # commission (what-if estimate)
        None,  # minCommission
        None,  # maxCommission
        "",  # commissionCurrency
        "",  # warningText
        0,  # randomizeSize
        0,  # randomizePrice
        0,  # numConditions
        "",  # adjustedOrderType
        None,  # triggerPrice
        None,  # trailStopPrice
        None,  # lmtPriceOffset
        None,  # adjustedStopPrice
        None,  # adjustedStopLimitPrice
        None,  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier.name
        "",  # softDollarTier.val
        "",  # softDollarTier.displayName
        None,  # cashQty
        0,  # dontUseAutoPriceForHedge
        0,  # isOmsContainer
        0,  # discretionaryUpToLimitPrice
        0,  # usePriceMgmtAlgo
        None,  # duration (v159)
        None,  # postToAts (v160)
        0,  # autoCancelParent (v162)
        None,  # minTradeQty (v170)
        None,  # minCompeteSize
        None,  # competeAgainstBestOffset
        None,  # midOffsetAtWhole
        None,  # midOffsetAtHalf
    ]


def open_order_end() -> Fields:
    return [53, 1]


def completed_order(o: WireOrder) -> Fields:
    # Like openOrder without orderId and clientId (IB reports completed orders by permId).
    return [
        101,
        *contract_fields(o.contract),
        *_order_head(o),
        o.perm_id,
        0,  # outsideRth
        0,  # hidden
        None,  # discretionaryAmt
        "",  # goodAfterTime
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        None,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        None,  # startingPrice
        None,  # stockRefPrice
        None,  # delta
        None,  # stockRangeLower
        None,  # stockRangeUpper
        0,  # displaySize
        0,  # sweepToFill
        0,  # allOrNone
        None,  # minQty
        0,  # ocaType
        0,  # triggerMethod
        None,  # volatility
        0,  # volatilityType
        "",  # deltaNeutralOrderType
        None,  # deltaNeutralAuxPrice
        0,  # continuousUpdate
        0,  # referencePriceType
        None,  # trailStopPrice
        None,  # trailingPercent
        "",  # comboLegsDescrip
        0,  # numLegs
        0,  # numOrderLegs
        0,  # numSmartComboRoutingParams
        None,  # scaleInitLevelSize
        None,  # scaleSubsLevelSize
        None,  # scalePriceIncrement
        "",  # hedgeType
        "",  # clearingAccount
        "",  # clearingIntent
        0,  # notHeld
        0,  # deltaNeutralContract present
        "",  # algoStrategy
        0,  # solicited
        o.status,
        0,  # randomizeSize
        0,  # randomizePrice
        0,  # numConditions
        None,  # trailStopPrice
        None,  # lmtPriceOffset
        None,  # cashQty
        0,  # dontUseAutoPriceForHedge
        0,  # isOmsContainer
        "",  # autoCancelDate
        o.filled,  # filledQuantity
        0,  # refFuturesConId
        0,  # autoCancelParent
        "",  # shareholder
        0,  # imbalanceOnly
        0,  # routeMarketableToBbo
        0,  # parentPermId
        o.completed_time,
        o.completed_status,
        None,  # minTradeQty (v170)
        None,  # minCompeteSize
        None,  # competeAgainstBestOffset
        None,  # midOffsetAtWhole
        None,  # midOffsetAtHalf
    ]


def completed_orders_end() -> Fields:
    return [102]


def exec_details(
    req_id: int, ex: Execution, order_id: int, client_id: int, cum_qty: Decimal, avg_price: Decimal
) -> Fields:
    """req_id is -1 for a live fill, the request's id for a reqExecutions answer."""
    return [
        11,
        req_id,
        order_id,
        *contract_fields(ex.contract),
        ex.exec_id,
        format_ib_time(ex.time),
        ex.account,
        ex.contract.exchange,
        "BOT" if ex.side == "BUY" else "SLD",
        ex.quantity,
        ex.price,
        ex.perm_id,
        client_id,
        0,  # liquidation
        cum_qty,
        avg_price,
        ex.order_ref,
        "",  # evRule
        None,  # evMultiplier
        "",  # modelCode
        1,  # lastLiquidity: added
        0,  # pendingPriceRevision (v178)
    ]


def exec_details_end(req_id: int) -> Fields:
    return [55, 1, req_id]


def commission_report(
    exec_id: str, commission: Decimal, currency: str, realized_pnl: Decimal | None = None
) -> Fields:
    # IB sends UNSET_DOUBLE for an unknown realized P&L; empty reads back as 0 in ib_async.
    return [59, 1, exec_id, commission, currency, realized_pnl, None, None]
