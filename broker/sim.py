"""The embedded simulated broker: the `Broker` interface over a `SimExchange`.

The exchange (broker.simexchange) keeps the account; this face only adds what a connection
adds: a connected/disconnected state and the disconnect faults. A call made while
disconnected, or one that meets a pending `fault_disconnect`, raises `BrokerDisconnected`
and leaves the broker disconnected until `connect()` succeeds, as a dropped IB socket does.
A `fault_lost_reply` is nastier: the exchange carries the request out, then the answer is
lost, so the engine must find out from `orders()` / `executions()` what happened (this is
what the orderRef on every order is for).

Because the exchange lives in a file, a new SimBroker over the same file after a restart sees
the same orders, executions, positions and cash.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable, TypeVar

from tradeledger.broker.base import (
    AccountSnapshot, BrokerDisconnected, CashEvent, Contract, DailyBar, Execution, ListedContract, OrderRequest,
    OrderStatus,
)
from tradeledger.broker.simexchange import SimExchange
from tradeledger.broker.simstore import connect

T = TypeVar("T")


class SimBroker:
    """A `Broker` backed by a simulated exchange (an object, or the path of its file)."""

    def __init__(self, exchange: SimExchange | str | Path, account: str | None = None):
        if not isinstance(exchange, SimExchange):
            exchange = SimExchange(exchange, account or "DU1234567")
        if account is not None and account != exchange.account:
            raise ValueError(f"the exchange holds account {exchange.account}, not {account}")
        self.exchange = exchange
        self.account = exchange.account
        self.connected = False

    def connect(self) -> None:
        connect(self.exchange)  # a pending disconnect fault refuses it (broker/simstore.py)
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def _call(self, action: Callable[[], T]) -> T:
        """Run one request through the connection, applying any pending call fault."""
        if not self.connected:
            raise BrokerDisconnected("not connected to the simulated broker: call connect()")
        fault = self.exchange.take_call_fault()
        if fault == "disconnect":
            self.connected = False
            raise BrokerDisconnected("simulated: socket disconnect")
        result = action()
        if fault == "lost_reply":
            self.connected = False
            raise BrokerDisconnected("simulated: socket disconnect after the request was sent")
        return result

    def place_order(self, request: OrderRequest) -> OrderStatus:
        return self._call(lambda: self.exchange.place_order(request))

    def cancel_order(self, order_ref: str) -> OrderStatus:
        return self._call(lambda: self.exchange.cancel_order(order_ref))

    def orders(self) -> list[OrderStatus]:
        return self._call(self.exchange.orders)

    def executions(self, since: dt.datetime | None = None) -> list[Execution]:
        return self._call(lambda: self.exchange.executions(since))

    def memory_since(self, now: dt.datetime) -> dt.datetime | None:
        """What the exchange really keeps: the start of its day with a day window, else None."""
        return self.exchange.memory_since(now)

    def cash_events(self) -> list[CashEvent]:
        """The exchange's cash journal, less trades, commissions and settlements."""
        return self._call(lambda: [CashEvent(j.at, j.currency, j.amount, j.kind, j.ref, j.seq)
                                   for j in self.exchange.journal_lines()
                                   if j.kind in ("dividend", "withholding", "interest", "fee", "deposit", "withdrawal",
                                                 "transfer", "cash_in_lieu")])

    def dividends(self) -> list[tuple]:
        """(ticker, ex-date, pay date, per share, withholding) of the dividends the exchange declared."""
        return self._call(self.exchange.declared_dividends)

    def splits(self) -> list[tuple]:
        """(ticker, date, new, old, cash in lieu per new share or None) of the splits the exchange made."""
        return self._call(self.exchange.declared_splits)

    def snapshot(self) -> AccountSnapshot:
        return self._call(self.exchange.snapshot)

    def daily_bars(self, contract: Contract, days: int) -> list[DailyBar]:
        """Daily closes from the exchange's price history (a settlement is its day's last price),
        built exactly as the simulated gateway answers reqHistoricalData."""
        from tradeledger.broker.ibsim.history import bars_from_history

        def bars() -> list[DailyBar]:
            history = self.exchange.price_history(contract.code)
            return [DailyBar(dt.datetime.strptime(b.date, "%Y%m%d").date(), b.close)
                    for b in bars_from_history(history, "1 day", f"{days} D", self.exchange.now())]
        return self._call(bars)

    def listed_contracts(self, pattern: Contract) -> list[ListedContract]:
        """The exchange's futures of `pattern`'s symbol (and trading class), with the dates the
        exchange was given (`SimExchange.set_contract_dates`), else none: the rule stays the truth."""
        def listed() -> list[ListedContract]:
            dates = self.exchange.contract_dates()
            return [ListedContract(k, *dates.get(k.code, ("", ""))) for k in self.exchange.contracts()
                    if k.sec_type == pattern.sec_type and k.symbol == pattern.symbol
                    and (not pattern.trading_class or k.trading_class in ("", pattern.trading_class))
                    and (not pattern.expiry or k.expiry.startswith(pattern.expiry))]
        return self._call(listed)
