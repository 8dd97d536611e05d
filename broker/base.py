"""The broker interface: what tradeledger asks of any broker, and the records it gets back.

A broker here is an account at a venue that accepts orders and reports executions. The engine
never talks to a venue directly; it talks to an object that satisfies `Broker`, of which there
are two: the embedded simulated broker (`broker.sim`) and Interactive Brokers through ib_async
(`broker.ib`). Both are driven synchronously: every call returns when the answer is known, and
fills are *pulled* (`executions()`), never pushed, so that the same booking code serves a live
fill and an execution sync after a restart.

This module knows nothing of the ledger. All records are small immutable values; quantities
and prices are `Decimal`, never float. Quantities carry their sign through `side` on orders and
executions (always positive there) and through the sign of `quantity` on positions.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tradeledger.broker.errors import BrokerDisconnected, BrokerError  # noqa: F401 - re-exported

BUY = "BUY"
SELL = "SELL"
SIDES = (BUY, SELL)

MARKET = "MKT"
LIMIT = "LMT"


@dataclass(frozen=True)
class Contract:
    """A tradeable contract as the broker knows it.

    `code` is tradeledger's own name, also the beancount commodity: root + month code +
    two-digit year for futures (MBTZ26), the ticker for shares (SPY).
    """

    code: str
    sec_type: str  # "FUT" or "STK"
    symbol: str  # the broker's symbol (MBT, BRR, SPY)
    exchange: str
    currency: str
    multiplier: Decimal = Decimal(1)
    expiry: str = ""  # YYYYMM (lastTradeDateOrContractMonth) for futures
    trading_class: str = ""
    con_id: int = 0


def contract_fields(c: Contract) -> dict:
    """A contract's fields as JSON values (the multiplier as exact text)."""
    return {"code": c.code, "sec_type": c.sec_type, "symbol": c.symbol, "exchange": c.exchange,
            "currency": c.currency, "multiplier": str(c.multiplier), "expiry": c.expiry,
            "trading_class": c.trading_class, "con_id": c.con_id}


def contract_to_json(c: Contract) -> str:
    """A contract as the text stored with a snapshot (every field; exact multiplier)."""
    return json.dumps(contract_fields(c), sort_keys=True)


def contract_from_json(text: str) -> Contract:
    data = json.loads(text)
    data["multiplier"] = Decimal(data["multiplier"])
    return Contract(**data)


@dataclass(frozen=True)
class ComboLeg:
    """One leg of a combination (BAG) order: buying the combo trades `side` x `ratio` of `contract`
    per combo unit (selling it, the opposite side)."""

    contract: Contract
    side: str
    ratio: int = 1


@dataclass(frozen=True)
class OrderRequest:
    """An order to send. `order_ref` names tradeledger's order row and comes back on every fill.

    A calendar spread is a BAG contract (`contract.sec_type == "BAG"`) with `legs`; the broker
    fills it as one execution per leg, each carrying the combo's order_ref (IB also reports the
    combo itself, which books nothing)."""

    order_ref: str
    contract: Contract
    side: str
    quantity: Decimal  # > 0
    order_type: str = MARKET
    limit_price: Decimal | None = None
    legs: tuple[ComboLeg, ...] = ()


@dataclass(frozen=True)
class OrderStatus:
    """The broker's view of one order."""

    order_ref: str
    broker_order_id: int
    perm_id: int
    contract_code: str
    side: str
    quantity: Decimal
    filled: Decimal
    status: str  # Submitted, PreSubmitted, Filled, Cancelled, Inactive, Rejected
    reason: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_done(self) -> bool:
        return self.status in ("Filled", "Cancelled", "Inactive", "Rejected")


@dataclass(frozen=True)
class Execution:
    """One execution report. `exec_id` may carry a correction suffix (`.01` -> `.02`).

    `commission` is None while the broker has not reported it: pending, never zero.
    `order_ref` is "" for a trade made outside tradeledger.
    """

    exec_id: str
    account: str
    contract: Contract
    side: str
    quantity: Decimal  # > 0
    price: Decimal
    time: dt.datetime  # timezone-aware UTC
    order_ref: str = ""
    perm_id: int = 0
    broker_order_id: int = 0
    commission: Decimal | None = None
    commission_currency: str = ""

    @property
    def base_exec_id(self) -> str:
        """The id without its correction suffix: the booking key of this fill."""
        head, sep, _tail = self.exec_id.rpartition(".")
        return head if sep else self.exec_id

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side == BUY else -self.quantity


@dataclass(frozen=True)
class BrokerPosition:
    """A position at the broker. `mark` is the price its unsettled futures P&L is measured to
    (IB: the portfolio's market price, which FuturesPNL uses; the simulator: its last fill or
    settlement price); None when the broker does not say."""

    account: str
    contract: Contract
    quantity: Decimal  # signed
    avg_cost: Decimal  # per unit, as the broker reports it (IB: price x multiplier for futures)
    mark: Decimal | None = None


@dataclass(frozen=True)
class AccountSnapshot:
    """Everything the broker says the account holds, at one moment."""

    account: str
    taken_at: dt.datetime
    positions: tuple[BrokerPosition, ...]
    cash: tuple[tuple[str, Decimal], ...]  # (currency, amount)
    open_orders: tuple[OrderStatus, ...] = field(default_factory=tuple)
    unsettled_pnl: tuple[tuple[str, Decimal], ...] = field(default_factory=tuple)
    # the last line of the broker's cash journal its cash holds (the simulator's journal, read in the
    # same transaction); None when the broker does not say (IB): its time then is the cut-off
    cash_journal: int | None = None


@dataclass(frozen=True)
class CashEvent:
    """Cash the broker moved without a trade: a dividend, tax withheld, interest, a fee, a deposit.

    Only brokers that report these through their API offer `cash_events()` (the simulated one);
    IB reports them in its Flex statement instead (`tradeledger import flex`)."""

    time: dt.datetime
    currency: str
    amount: Decimal
    kind: str  # dividend | withholding | interest | fee | deposit | withdrawal | transfer
    ref: str  # the ticker for dividends and withholding
    seq: int | None = None  # its line in the broker's cash journal (AccountSnapshot.cash_journal), when it says


@dataclass(frozen=True)
class ListedContract:
    """A contract the broker lists, with its own dates (IB's contract details): the last trading
    day (`lastTradeDateOrContractMonth`, YYYYMMDD; a month only when the broker gives no day) and
    the real expiration (`realExpirationDate`); empty when the broker does not say."""

    contract: Contract
    last_trade_date: str = ""
    real_expiration: str = ""


@dataclass(frozen=True)
class DailyBar:
    """One day's close of a contract as the broker's historical data gives it."""

    date: dt.date
    close: Decimal


def day_start(now: dt.datetime, zone: str) -> dt.datetime:
    """The start (midnight) of `now`'s day in the time zone `zone`, as a UTC time (pure). A broker
    whose memory is "today" (IB: executions and completed orders since midnight in the TWS/gateway's
    time zone) remembers nothing from before it."""
    if now.tzinfo is None:
        raise ValueError("day_start needs a timezone-aware time")
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    midnight = dt.datetime.combine(local.date(), dt.time(0), tzinfo=tz)
    return midnight.astimezone(dt.timezone.utc)


def check_zone(zone: str, what: str) -> str:
    """`zone` if it names an IANA time zone; else a ValueError naming `what`."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{what}: unknown time zone {zone!r} (an IANA name such as America/New_York)") from None
    return zone


class Broker(Protocol):
    """What the engine needs from a broker. Every call is synchronous."""

    account: str

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def place_order(self, request: OrderRequest) -> OrderStatus:
        """Send an order. Refuses (BrokerError) an order_ref the broker already holds."""
        ...

    def cancel_order(self, order_ref: str) -> OrderStatus: ...

    def orders(self) -> list[OrderStatus]:
        """Open and completed orders of the current session, keyed by order_ref."""
        ...

    def executions(self, since: dt.datetime | None = None) -> list[Execution]:
        """Every execution the broker reports (may repeat; the booking is idempotent)."""
        ...

    def memory_since(self, now: dt.datetime) -> dt.datetime | None:
        """How far back the broker's memory of orders and executions reaches at `now`: an order
        done, or an execution made, before this moment is no longer reported by `orders()` /
        `executions()` (IB: the start of the broker's day). None: it forgets nothing. An order
        that is working is reported whenever it was placed."""
        ...

    def snapshot(self) -> AccountSnapshot: ...

    def daily_bars(self, contract: Contract, days: int) -> list[DailyBar]:
        """The contract's daily closes over the last `days` days (IB: reqHistoricalData)."""
        ...

    def listed_contracts(self, pattern: Contract) -> list[ListedContract]:
        """Every contract the broker lists that matches `pattern` (a future without an expiry:
        all its months), with the broker's dates (IB: reqContractDetails)."""
        ...
