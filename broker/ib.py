"""Interactive Brokers behind the `Broker` interface, through ib_async.

Threading model. ib_async is asyncio code whose objects belong to the event loop they were
made on; used from another thread it fails ("There is no current event loop"). So an
`IBBroker` owns one event loop running in one dedicated daemon thread, creates its `ib_async.IB`
on that loop, and marshals every public call onto it with `asyncio.run_coroutine_threadsafe`.
The public methods are plain synchronous functions, safe to call from any thread; they block
until the answer is known or `request_timeout` passes.

Connection. `connect()` runs ib_async's own connect, which waits for nextValidId and
managedAccounts and then synchronises positions, open and completed orders, account values
and, last, the day's executions (reqExecutions) -- on every connect, so fills made while we
were away come back. A sync request that is not answered within `timeout` fails the connect
(BrokerDisconnected naming the request, socket closed, retried like a refused connection):
trading on an incomplete picture could send again an order IB already has. `timeout` is `[ib]
connect_timeout` (engine/setup/environment.py). The gateway's managed account must be the configured one, or connect
fails: orders must never go to the wrong account. A clientId already in use (error 326)
fails at once with a clear BrokerError instead of waiting out ib_async's timeout. A connect that
fails, for any reason, releases all it made (loop thread, loop, socket) and leaves no reconnect
running: its caller retries with a new broker. Once connected, when the socket drops, the broker
reconnects by itself with exponential backoff; calls made meanwhile wait up to `reconnect_wait`
for it, then raise `BrokerDisconnected`.

Executions. A fill is an execDetails message joined with its commissionReport by execId.
Commission is None until its report arrives (pending, never zero). ib_async forgets all fills
on disconnect; this adapter keeps its own table keyed by execId across reconnects, so a
commission learned before a drop stays known. Corrections (`.01` -> `.02`) are separate
executions, as IB reports them; the booking layer keys by `Execution.base_exec_id`.

Memory. IB remembers a day: reqExecutions returns the executions since the start of the
broker's day (midnight in the TWS / gateway's time zone, `day_timezone`), and an order that was
done before it is in neither the open nor the completed orders. `memory_since(now)` says from
when, so the engine never reads "not reported" as "never sent" for an order older than that
(engine/trading/inflight.py).

Contracts are keyed by conId: futures local symbols repeat every ten years (MBTZ6), so a
contract is qualified once through reqContractDetails and remembered by its conId. A contract
first met in IB's reports (a fresh process, a trade made in TWS) is built from IB's fields and
passed through `contract_namer`, which the engine supplies to give it its own code (IB's BRR,
trading class BTC, December 2026 -> tradeledger's BTCZ26; engine/contracts_ib.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from typing import TypeVar

from ib_async import IB, ComboLeg as IBComboLeg, Contract as IBContract, LimitOrder, MarketOrder, Trade
from ib_async.util import UNSET_DOUBLE

from tradeledger.broker.base import (
    BUY, LIMIT, SELL, AccountSnapshot, BrokerDisconnected, BrokerError, BrokerPosition,
    Contract, DailyBar, Execution, ListedContract, OrderRequest, OrderStatus, check_zone, day_start,
)
from tradeledger.logs import quiet

quiet("ib_async")  # its log lines stay out of the user's terminal (tradeledger/logs.py)

log = logging.getLogger("tradeledger.broker.ib")
T = TypeVar("T")
UTC = dt.timezone.utc
MONTH_CODES = "FGHJKMNQUVXZ"
# The time zone whose midnight starts IB's day (the TWS / IB Gateway login's time zone; `[ib]
# day_timezone`): reqExecutions and the completed orders reach back to it and no further.
DAY_TIMEZONE = "America/New_York"

# ib_async's order states -> the Broker interface's.
_STATUS = {"PendingSubmit": "PreSubmitted", "ApiPending": "PreSubmitted",
           "PreSubmitted": "PreSubmitted", "Submitted": "Submitted",
           "PendingCancel": "Submitted", "ValidationError": "Submitted",
           "ApiCancelled": "Cancelled", "Cancelled": "Cancelled", "Filled": "Filled",
           "Inactive": "Inactive"}
# Error codes that decide the fate of a request, and what to tell the user.
_ERRORS = {
    326: "client id {client_id} is already in use at {host}:{port}; choose another client id",
    200: "IB has no security definition for {what}",
    202: "order cancelled: {text}",
    103: "duplicate order id: {text}",
    201: "order rejected: {text}",
}


def dec(value: float | str | Decimal) -> Decimal:
    """An ib_async number as Decimal, via its shortest text (0.1 -> 0.1, 2.0 -> 2)."""
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def avg_cost(value: float) -> Decimal:
    """IB's avgCost is a double (453333.3333333333): keep 9 decimal places, what a ledger stores;
    the digits beyond are binary noise, not money."""
    return dec(Decimal(repr(value)).quantize(Decimal("1e-9")))


def plain(value: Decimal) -> Decimal:
    # ib_async writes a Decimal with str(): keep it out of exponent notation (1E+2).
    return Decimal(format(value, "f"))


class IBBroker:
    """A `Broker` on an IB account via TWS / IB Gateway (or the simulated gateway)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7497, client_id: int = 1,
                 account: str = "", timeout: float = 4.0, request_timeout: float = 10.0,
                 reconnect: bool = True, reconnect_wait: float | None = None,
                 max_backoff: float = 5.0, contracts: Iterable[Contract] = (),
                 contract_namer: Callable[[Contract], Contract] | None = None,
                 refresh_every: float = 5.0, day_timezone: str = DAY_TIMEZONE) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.day_timezone = check_zone(day_timezone, "ib.day_timezone")
        self.account = account
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self.reconnect_wait = timeout if reconnect_wait is None else reconnect_wait
        self.max_backoff = max_backoff
        self._by_con_id: dict[int, Contract] = {c.con_id: c for c in contracts if c.con_id}
        # Maps a contract built from IB's fields to the caller's name for it (tradeledger's
        # code from the configured instrument); identity when not given.
        self._namer = contract_namer or (lambda c: c)
        self._executions: dict[str, Execution] = {}
        self.refresh_every = refresh_every
        self._refreshed_at = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ib: IB | None = None
        self._want_connected = False
        self._dropping = False  # set while we disconnect on purpose
        self._synced: asyncio.Event | None = None
        self._reconnector: asyncio.Task | None = None
        self.reconnects = 0

    # --- the loop thread -----------------------------------------------------------------

    def _start_loop(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"ib-broker-{self.client_id}",
                                        daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, make: Callable[[], Awaitable[T]], timeout: float | None = None,
             retry: bool = False) -> T:
        """Run the coroutine `make()` on the loop thread and wait for its result.

        retry=True is for reads: a socket that drops under the request is waited out
        (reconnect) and the read made again. Order requests are never retried here -- only
        the caller can tell, from orders(), whether the first one reached the broker."""
        if self._loop is None or not self._loop.is_running():
            raise BrokerDisconnected("not connected: call connect()")
        if threading.current_thread() is self._thread:
            raise BrokerError("IBBroker's blocking API called from its own event loop")

        async def call() -> T:
            try:
                return await make()
            except ConnectionError:
                if not retry:
                    raise
            return await make()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result(timeout or self.request_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerError(f"IB did not answer within {timeout or self.request_timeout}s")
        except ConnectionError as exc:  # ib_async: 'Socket disconnect' mid-request
            raise BrokerDisconnected(f"connection to IB lost: {exc}") from exc

    # --- connection --------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and synchronise, or raise having released everything this made.

        A failed connect closes the loop thread, its loop and the socket (`close()`): the caller
        (Session.broker, so the daemon's retries with backoff) never gets the object to close, and
        a gateway down for an hour would otherwise leave one thread and its descriptors per try."""
        self._start_loop()

        async def first_connect() -> None:
            await self._connect_async()
            # Only now does a drop start the reconnector. During this first try ib_async's own
            # disconnect-on-failure fires disconnectedEvent; a reconnector started then would outlive
            # the failed connect and could later take the client id from the caller's next broker.
            self._want_connected = True

        try:
            self._run(first_connect, timeout=self.timeout + 30)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect, stop the loop and join its thread; connect() may be called again after."""
        self._want_connected = False
        if self._loop and self._loop.is_running():
            async def shut() -> None:
                if self._reconnector:
                    self._reconnector.cancel()
                self._disconnect()  # the socket's own close is queued ahead of the stop below

            try:
                asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
        # The event and the task belong to the loop just closed; a later connect makes its own.
        self._loop = self._thread = self._ib = self._synced = self._reconnector = None

    @property
    def is_connected(self) -> bool:
        return bool(self._synced and self._synced.is_set())

    def _disconnect(self) -> None:
        if self._ib is not None:
            self._dropping = True
            try:
                self._ib.disconnect()
            except ConnectionError:
                # IB.disconnect() reads connection stats, which fails on a socket that is
                # open but not yet ready (e.g. refused with 326): close the client directly.
                self._ib.client.disconnect()
                self._ib.wrapper.reset()
            finally:
                self._dropping = False
        if self._synced:
            self._synced.clear()

    async def _connect_async(self) -> None:
        if self._synced is None:
            self._synced = asyncio.Event()
        if self._ib is None:
            self._ib = IB()
            self._ib.disconnectedEvent += self._on_disconnected
        ib = self._ib
        refused = asyncio.get_running_loop().create_future()

        def on_error(req_id: int, code: int, text: str, contract) -> None:
            if code == 326 and not refused.done():
                refused.set_exception(BrokerError(self._message(326, text)))

        ib.errorEvent += on_error
        task = asyncio.ensure_future(
            # raiseSyncErrors: a start-up sync request that times out fails the connect instead
            # of being only logged -- missing completed orders would make an order sent before a
            # crash look never sent (engine/trading/orders.py would send it again).
            ib.connectAsync(self.host, self.port, self.client_id, timeout=self.timeout,
                            raiseSyncErrors=True))
        try:
            await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0)  # a 326 and the hang-up that follows arrive together
            if refused.done():
                task.cancel()
                self._disconnect()
                refused.result()
            try:
                await task
            except ConnectionError as exc:
                self._disconnect()
                if exc.args and isinstance(exc.args[0], list):  # raiseSyncErrors: what timed out
                    raise BrokerDisconnected(
                        f"IB at {self.host}:{self.port} connected but its start-up sync is "
                        f"incomplete ({'; '.join(exc.args[0])} within {self.timeout}s): "
                        f"disconnected, nothing sent") from exc
                raise BrokerDisconnected(
                    f"cannot connect to IB at {self.host}:{self.port} "
                    f"(client id {self.client_id}): {exc!r}") from exc
            except (OSError, asyncio.TimeoutError) as exc:
                self._disconnect()
                raise BrokerDisconnected(
                    f"cannot connect to IB at {self.host}:{self.port} "
                    f"(client id {self.client_id}): {exc!r}") from exc
        finally:
            ib.errorEvent -= on_error
            if not refused.done():
                refused.cancel()
            elif not refused.cancelled():
                refused.exception()  # retrieved: no "exception never retrieved" warning
        accounts = ib.managedAccounts()
        if not self.account and len(accounts) == 1:
            self.account = accounts[0]
        if self.account not in accounts:
            self._disconnect()
            raise BrokerError(f"IB at {self.host}:{self.port} manages {','.join(accounts)}, "
                              f"not the configured account {self.account}: refusing to use it")
        self._absorb_fills()
        self._refreshed_at = asyncio.get_running_loop().time()  # connect ran reqExecutions
        self._synced.set()

    def _on_disconnected(self) -> None:
        if self._synced:
            self._synced.clear()
        if self._dropping or not self._want_connected or not self.reconnect:
            return
        if self._reconnector is None or self._reconnector.done():
            log.warning("IB connection lost; reconnecting")
            self._reconnector = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while self._want_connected:
            await asyncio.sleep(delay)
            try:
                await self._connect_async()
                self.reconnects += 1
                log.info("IB connection restored")
                return
            except BrokerError as exc:
                log.warning("reconnect failed: %s (next try in %.2fs)", exc, delay)
            delay = min(delay * 2, self.max_backoff)

    async def _ready(self) -> IB:
        """The IB client once connected and synchronised; waits out a reconnect."""
        if self._synced is None or self._ib is None:
            raise BrokerDisconnected("not connected: call connect()")
        if not self._synced.is_set():
            if not self._want_connected:
                raise BrokerDisconnected("not connected: call connect()")
            try:
                await asyncio.wait_for(self._synced.wait(), self.reconnect_wait)
            except asyncio.TimeoutError:
                raise BrokerDisconnected(
                    f"IB at {self.host}:{self.port} unreachable; still reconnecting") from None
        return self._ib

    def _message(self, code: int, text: str, what: str = "") -> str:
        template = _ERRORS.get(code, "IB error {code}: {text}")
        return template.format(client_id=self.client_id, host=self.host, port=self.port,
                               what=what or "the contract", text=text, code=code)

    # --- contracts ---------------------------------------------------------------------------

    def qualify(self, contract: Contract) -> Contract:
        """The contract with its IB conId filled in (one reqContractDetails, then cached)."""
        return self._run(lambda: self._qualify(contract), retry=True)

    async def _qualify(self, contract: Contract) -> Contract:
        if contract.con_id and contract.con_id in self._by_con_id:
            return self._by_con_id[contract.con_id]
        ib = await self._ready()
        for known in self._by_con_id.values():
            if known.code == contract.code:
                return known
        details = await asyncio.wait_for(ib.reqContractDetailsAsync(to_ib(contract)),
                                         self.request_timeout)
        if len(details) != 1:
            what = f"{contract.code} ({contract.sec_type} {contract.symbol} {contract.expiry})"
            raise BrokerError(self._message(200, "", what) if not details
                              else f"{what} is ambiguous at IB: {len(details)} matches")
        qualified = replace(contract, con_id=details[0].contract.conId)
        self._by_con_id[qualified.con_id] = qualified
        return qualified

    def from_ib(self, c: IBContract) -> Contract:
        """Our contract for an IB one: the remembered one by conId, else built from IB's fields."""
        known = self._by_con_id.get(c.conId)
        if known is not None:
            return known
        contract = self._namer(contract_from_ib(c))
        if c.conId:
            self._by_con_id[c.conId] = contract
        return contract

    def listed_contracts(self, pattern: Contract) -> list[ListedContract]:
        """IB's contract details for `pattern` (a future without an expiry: every listed month),
        each contract named as ours and remembered by conId, with IB's own dates."""
        return self._run(lambda: self._listed_contracts(pattern), retry=True)

    async def _listed_contracts(self, pattern: Contract) -> list[ListedContract]:
        ib = await self._ready()
        wanted = IBContract(secType=pattern.sec_type, symbol=pattern.symbol, exchange=pattern.exchange,
                            currency=pattern.currency, lastTradeDateOrContractMonth=pattern.expiry,
                            tradingClass=pattern.trading_class)
        details = await asyncio.wait_for(ib.reqContractDetailsAsync(wanted), self.request_timeout)
        out = []
        for d in details:
            contract = self.from_ib(d.contract)
            last = (d.contract.lastTradeDateOrContractMonth or "").strip()
            out.append(ListedContract(contract, last if len(last) == 8 else "", (d.realExpirationDate or "").strip()))
        return out

    def daily_bars(self, contract: Contract, days: int) -> list[DailyBar]:
        """The contract's daily bars over the last `days` days (reqHistoricalData, TRADES)."""
        return self._run(lambda: self._daily_bars(contract, days), retry=True)

    async def _daily_bars(self, contract: Contract, days: int) -> list[DailyBar]:
        ib = await self._ready()
        qualified = await self._qualify(contract)
        bars = await asyncio.wait_for(ib.reqHistoricalDataAsync(
            to_ib(qualified), endDateTime="", durationStr=f"{int(days)} D", barSizeSetting="1 day",
            whatToShow="TRADES", useRTH=True, formatDate=1), self.request_timeout)
        out = []
        for bar in bars or []:
            day = bar.date if isinstance(bar.date, dt.date) else dt.datetime.strptime(str(bar.date)[:8], "%Y%m%d")
            out.append(DailyBar(day.date() if isinstance(day, dt.datetime) else day, dec(bar.close)))
        return out

    # --- orders ------------------------------------------------------------------------------

    def place_order(self, request: OrderRequest) -> OrderStatus:
        return self._run(lambda: self._place_order(request))

    async def _place_order(self, request: OrderRequest) -> OrderStatus:
        ib = await self._ready()
        if request.order_ref and any(o.order_ref == request.order_ref
                                     for o in self._order_statuses(ib)):
            raise BrokerError(f"order_ref {request.order_ref!r} is already at the broker")
        if request.legs:  # a spread: qualify its legs, never the BAG (IB has no details for a combo)
            legs = [(await self._qualify(leg.contract), leg) for leg in request.legs]
            contract = request.contract
            ib_contract = IBContract(
                secType="BAG", symbol=contract.symbol, exchange=contract.exchange, currency=contract.currency,
                comboLegs=[IBComboLeg(conId=k.con_id, ratio=leg.ratio, action=leg.side, exchange=k.exchange)
                           for k, leg in legs])
        else:
            contract = await self._qualify(request.contract)
            ib_contract = to_ib(contract)
        qty = plain(request.quantity)
        if request.order_type == LIMIT:
            order = LimitOrder(request.side, qty, plain(request.limit_price))
        else:
            order = MarketOrder(request.side, qty)
        order.orderRef = request.order_ref
        order.account = self.account
        order.tif = "DAY"
        trade = ib.placeOrder(ib_contract, order)
        await self._settle(trade, lambda: trade.orderStatus.status != "PendingSubmit")
        failure = _trade_error(trade, (200, 103))
        if failure is not None:
            raise BrokerError(self._message(failure.errorCode, failure.message, contract.code))
        return self._status(trade)

    def cancel_order(self, order_ref: str) -> OrderStatus:
        return self._run(lambda: self._cancel_order(order_ref))

    async def _cancel_order(self, order_ref: str) -> OrderStatus:
        ib = await self._ready()
        trades = [t for t in ib.trades() if t.order.orderRef == order_ref]
        if not trades:
            raise BrokerError(f"no order with order_ref {order_ref!r} at the broker")
        live = [t for t in trades if not t.isDone() and t.order.orderId > 0]
        if not live:
            return self._status(trades[0])
        trade = live[0]
        ib.cancelOrder(trade.order)
        await self._settle(trade, trade.isDone)
        return self._status(trade)

    async def _settle(self, trade: Trade, done: Callable[[], bool]) -> None:
        """Wait until done() or an error is logged on the trade (request_timeout at most)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while not done() and not any(e.errorCode for e in trade.log):
            if loop.time() > deadline:
                raise BrokerError(f"no answer from IB about order {trade.order.orderRef!r}; "
                                  "check orders() before resending")
            if not self._synced.is_set():
                raise BrokerDisconnected("connection to IB lost while waiting on an order")
            await asyncio.sleep(0.002)

    def orders(self) -> list[OrderStatus]:
        return self._run(self._orders, retry=True)

    async def _orders(self) -> list[OrderStatus]:
        return self._order_statuses(await self._ready())

    def _order_statuses(self, ib: IB) -> list[OrderStatus]:
        seen: set[int] = set()
        out = []
        for trade in ib.trades():
            perm_id = trade.order.permId or trade.orderStatus.permId
            if perm_id and perm_id in seen:
                continue
            seen.add(perm_id)
            out.append(self._status(trade))
        return out

    def _status(self, trade: Trade) -> OrderStatus:
        o, st = trade.order, trade.orderStatus
        status, reason = _STATUS.get(st.status, st.status), ""
        rejected = _trade_error(trade, (201,))
        if rejected is not None:
            status, reason = "Rejected", rejected.message
        elif st.status == "Inactive" and trade.log == [] and not o.orderId:
            status = "Inactive"  # a completed order from an earlier session
        # a combination's fills are its legs' executions plus its own report: only the latter
        # counts the combos filled (as ib_async's Trade.filled does)
        fills = [f for f in trade.fills if trade.contract.secType != "BAG" or f.contract.secType == "BAG"]
        filled = [dec(st.filled), sum((dec(f.execution.shares) for f in fills), Decimal(0))]
        if o.filledQuantity != UNSET_DOUBLE:
            filled.append(dec(o.filledQuantity))
        return OrderStatus(
            order_ref=o.orderRef, broker_order_id=o.orderId,
            perm_id=o.permId or st.permId, contract_code=self.from_ib(trade.contract).code,
            side=o.action, quantity=dec(o.totalQuantity), filled=max(filled),
            status=status, reason=reason)

    def memory_since(self, now: dt.datetime) -> dt.datetime | None:
        """The start of IB's day at `now`: midnight in the gateway's time zone (`day_timezone`).
        reqExecutions answers from it, and an order done before it is in neither the open nor the
        completed orders. (A fill this process saw earlier may still be in its own table: that only
        ever tells more; the engine relies on nothing from before this moment.)"""
        return day_start(now, self.day_timezone)

    # --- executions and the account ----------------------------------------------------------

    def executions(self, since: dt.datetime | None = None, refresh: bool | None = None
                   ) -> list[Execution]:
        """Every execution of the day known to IB (and any seen earlier in this process).

        Live pushes only reach the client that placed the order, so trades made elsewhere (at
        TWS, by another client id) are learnt by asking again (reqExecutions). refresh=True
        asks now, False never, None (default) when `refresh_every` seconds have passed since
        the last time (connect and reconnect always ask)."""
        return self._run(lambda: self._executions_async(since, refresh), retry=True)

    async def _executions_async(self, since: dt.datetime | None, refresh: bool | None
                                ) -> list[Execution]:
        ib = await self._ready()
        loop = asyncio.get_running_loop()
        if refresh is None:
            refresh = loop.time() - self._refreshed_at >= self.refresh_every
        if refresh:
            await asyncio.wait_for(ib.reqExecutionsAsync(), self.request_timeout)
            self._refreshed_at = loop.time()
        self._absorb_fills()
        out = [e for e in self._executions.values() if since is None or e.time >= since]
        return sorted(out, key=lambda e: (e.time, e.exec_id))

    def _absorb_fills(self) -> None:
        for fill in self._ib.fills():
            if fill.contract.secType == "BAG":
                # IB's extra report of a filled combination: the legs' executions are the trades
                # (and carry the commissions); booking this one too would count the spread twice
                continue
            ex, report = fill.execution, fill.commissionReport
            known = report.execId == ex.execId  # set only once a commissionReport arrived
            previous = self._executions.get(ex.execId)
            record = Execution(
                exec_id=ex.execId, account=ex.acctNumber, contract=self.from_ib(fill.contract),
                side=BUY if ex.side == "BOT" else SELL, quantity=dec(ex.shares),
                price=dec(ex.price), time=ex.time.astimezone(UTC), order_ref=ex.orderRef,
                perm_id=ex.permId, broker_order_id=ex.orderId,
                commission=dec(report.commission) if known else None,
                commission_currency=report.currency if known else "")
            if not known and previous is not None and previous.commission is not None:
                record = replace(record, commission=previous.commission,
                                 commission_currency=previous.commission_currency)
            self._executions[ex.execId] = record

    def snapshot(self) -> AccountSnapshot:
        return self._run(self._snapshot, retry=True)

    async def _snapshot(self) -> AccountSnapshot:
        ib = await self._ready()
        # Wait for the positions' End, then read ib_async's table (one row per conId, the latest
        # message wins, a 0 removes), never the request's own answer list: a position pushed by
        # the open subscription while the answer streams (a fill landing as we ask) is appended
        # to that list too, and the snapshot would list the contract twice (refused as untrusted
        # by engine/trust/snapshots.py).
        await asyncio.wait_for(ib.reqPositionsAsync(), self.request_timeout)
        positions = ib.positions(self.account)
        # The portfolio's market prices are the marks FuturesPNL runs to: reconciliation needs
        # them to compare the ledger's cash like with like. Re-subscribing refreshes them.
        await asyncio.wait_for(ib.reqAccountUpdatesAsync(self.account), self.request_timeout)
        marks = {item.contract.conId: dec(item.marketPrice) for item in ib.portfolio(self.account)
                 if item.contract.secType == "FUT" and item.marketPrice == item.marketPrice}  # not NaN
        values = await self._ledger_values(ib)
        cash = tuple(sorted((cur, dec(v)) for tag, cur, v in values if tag == "CashBalance"))
        pnl = tuple(sorted((cur, dec(v)) for tag, cur, v in values if tag == "FuturesPNL"))
        return AccountSnapshot(
            account=self.account, taken_at=dt.datetime.now(UTC),
            positions=tuple(
                BrokerPosition(p.account, self.from_ib(p.contract), dec(p.position),
                               avg_cost(p.avgCost), marks.get(p.contract.conId))
                for p in positions if p.account == self.account and p.position),
            cash=cash,
            open_orders=tuple(o for o in self._order_statuses(ib) if not o.is_done),
            unsettled_pnl=pnl)

    async def _ledger_values(self, ib: IB) -> list[tuple[str, str, str]]:
        """One account-summary request for the per-currency ledger, cancelled once answered
        (TWS allows only two open summary subscriptions).

        Only the rows this answer sent count. ib_async merges every summary row into one table for
        the connection (wrapper.acctSummary, keyed by account, tag and currency, cleared only at a
        disconnect), so reading that table would keep listing a currency an earlier answer had and
        IB no longer reports -- at its old balance. A fresh request's answer is the whole current
        ledger, so the rows that arrive before its End are the snapshot. (No other summary request
        is ever open on this connection, so every row that arrives meanwhile is this answer's.)"""
        rows: dict[tuple[str, str], str] = {}

        def on_row(v) -> None:
            if v.account == self.account and v.currency not in ("", "BASE"):
                rows[v.tag, v.currency] = v.value

        req_id = ib.client.getReqId()
        future = ib.wrapper.startReq(req_id)
        ib.accountSummaryEvent += on_row
        ib.client.reqAccountSummary(req_id, "All", "$LEDGER:ALL")
        try:
            await asyncio.wait_for(future, self.request_timeout)
        finally:
            ib.accountSummaryEvent -= on_row
            if ib.isConnected():
                ib.client.cancelAccountSummary(req_id)
        return [(tag, currency, value) for (tag, currency), value in rows.items()]


def _trade_error(trade: Trade, codes: tuple[int, ...]):
    for entry in trade.log:
        if entry.errorCode in codes:
            return entry
    return None


def to_ib(c: Contract) -> IBContract:
    """The ib_async contract for ours; with a conId, IB needs nothing else but the exchange."""
    if c.con_id:
        return IBContract(conId=c.con_id, exchange=c.exchange)
    return IBContract(
        secType=c.sec_type, symbol=c.symbol,
        exchange="SMART" if c.sec_type == "STK" else c.exchange,
        currency=c.currency, lastTradeDateOrContractMonth=c.expiry,
        multiplier="" if c.sec_type == "STK" else format(c.multiplier, "f"),
        tradingClass=c.trading_class)


def expiry_from_local_symbol(local: str, today: dt.date | None = None) -> str:
    """YYYYMM from a futures local symbol with a one-digit year (MESZ6 -> 202612): the year is
    the first one ending in that digit from last year on (local symbols repeat every decade)."""
    local = local.strip().upper()
    if len(local) < 3 or not local[-1].isdigit() or local[-2] not in MONTH_CODES:
        return ""
    today = today or dt.date.today()
    first = today.year - 1
    year = first + (int(local[-1]) - first) % 10
    return f"{year}{MONTH_CODES.index(local[-2]) + 1:02d}"


def contract_from_ib(c: IBContract) -> Contract:
    """Build our contract from IB's fields, for a conId we were never told about."""
    expiry = (c.lastTradeDateOrContractMonth or "")[:6]
    if c.secType == "FUT" and len(expiry) < 6 and c.localSymbol:
        expiry = expiry_from_local_symbol(c.localSymbol)
    if c.secType == "FUT" and len(expiry) == 6:
        code = f"{c.symbol}{MONTH_CODES[int(expiry[4:6]) - 1]}{expiry[2:4]}"
    else:
        code = c.symbol
    return Contract(code=code, sec_type=c.secType, symbol=c.symbol,
                    exchange=c.exchange or c.primaryExchange, currency=c.currency,
                    multiplier=Decimal(c.multiplier) if c.multiplier else Decimal(1),
                    expiry=expiry, trading_class=c.tradingClass, con_id=c.conId)
