"""One client connection to the simulated gateway: the handshake and every request handler.

A `Session` reads framed requests from its socket and answers them from the shared exchange
through the `IBSimServer` that owns it. Requests are decoded with the same positional layout
ib_async's `client.py` uses to write them (version 178). Answers that IB streams as a list
closed by an *End* message (positions, open/completed orders, executions, contract details,
account values) always end with that message, even when the list is empty: ib_async's
`IB.connect` waits for each End before it declares the connection synchronised.

Pushes that do not answer a request (live fills, order status changes, commission reports)
are made by the server's publisher, which routes each one to the session that owns the order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING

from tradeledger.broker.base import LIMIT, MARKET, BrokerError, OrderRequest
from tradeledger.broker.ibsim import messages as m
from tradeledger.broker.ibsim import wire
from tradeledger.broker.ibsim.contracts import WireContract
from tradeledger.broker.ibsim.history import bars_from_history

if TYPE_CHECKING:
    from tradeledger.broker.ibsim.server import IBSimServer

log = logging.getLogger("tradeledger.ibsim")

MSG_CLIENT_ID_IN_USE = (
    "Unable to connect as the client id is already in use. Retry with a unique client id."
)


class Session:
    def __init__(self, server: IBSimServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.exchange = server.exchange
        self.reader = reader
        self.writer = writer
        self.client_id: int | None = None
        self.positions_subscribed = False
        self.market_data: dict[int, tuple[str, Decimal | None]] = {}  # reqId -> (code, last sent)
        self.handlers = {
            1: self.req_mkt_data,
            2: self.cancel_mkt_data,
            3: self.place_order,
            4: self.cancel_order,
            5: self.req_open_orders,
            6: self.req_account_updates,
            7: self.req_executions,
            8: self.req_ids,
            9: self.req_contract_details,
            15: self.ignore,  # reqAutoOpenOrders: every order is reported to its owner anyway
            16: self.req_all_open_orders,
            17: self.req_managed_accts,
            20: self.req_historical_data,
            25: self.ignore,  # cancelHistoricalData: answers are never streamed
            49: self.req_current_time,
            59: self.ignore,  # reqMarketDataType: the simulator only has "live" data
            61: self.req_positions,
            62: self.req_account_summary,
            63: self.ignore,  # cancelAccountSummary: summaries are answered once
            64: self.cancel_positions,
            76: self.req_account_updates_multi,
            77: self.ignore,
            99: self.req_completed_orders,
        }

    # --- plumbing ---------------------------------------------------------------------------

    def send(self, fields: m.Fields) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.encode_frame(fields))

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(m.error(req_id, code, text))

    def close(self) -> None:
        # abort, not close: a dropped connection must look like a cut cable to the client.
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def run(self) -> None:
        try:
            if await self._handshake():
                await self._serve()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except wire.WireError as exc:
            log.warning("closing connection: %s", exc)
        finally:
            self.server.session_ended(self)
            self.close()

    async def _read_frame(self) -> list[str]:
        (size,) = wire.LENGTH.unpack(await self.reader.readexactly(4))
        if size > wire.MAX_FRAME:
            raise wire.WireError(f"frame of {size} bytes")
        return wire.split_fields(await self.reader.readexactly(size))

    async def _handshake(self) -> bool:
        if await self.reader.readexactly(4) != wire.API_PREFIX:
            raise wire.WireError("not a TWS API client (no API\\0 prefix)")
        (size,) = wire.LENGTH.unpack(await self.reader.readexactly(4))
        low, high, _options = wire.parse_version_range(await self.reader.readexactly(size))
        version = wire.negotiate(low, high)
        self.writer.write(wire.encode_handshake_reply(version, dt.datetime.now(dt.timezone.utc)))
        fields = await self._read_frame()
        if not fields or fields[0] != "71":
            raise wire.WireError(f"expected startApi, got {fields[:1]}")
        client_id = wire.FieldReader(fields, 2).int()
        if not self.server.register(client_id, self):
            # TWS answers 326 and hangs up; ib_async then waits out its connect timeout.
            self.error(-1, 326, MSG_CLIENT_ID_IN_USE)
            await self.writer.drain()
            return False
        self.client_id = client_id
        self.send(m.managed_accounts([self.server.account]))
        self.send(m.next_valid_id(self.exchange.next_order_id()))
        return True

    async def _serve(self) -> None:
        while True:
            fields = await self._read_frame()
            if not fields:
                continue
            try:
                msg_id = int(fields[0])
            except ValueError:
                raise wire.WireError(f"bad message id {fields[0]!r}") from None
            handler = self.handlers.get(msg_id)
            if handler is None:
                log.info("client %s: unsupported request %s ignored", self.client_id, msg_id)
                continue
            try:
                handler(wire.FieldReader(fields, 1))
            except BrokerError as exc:
                self.error(-1, 321, f"Error validating request: {exc}")
            await self.writer.drain()

    def ignore(self, r: wire.FieldReader) -> None:
        pass

    def resolve(self, req_id: int, wc: WireContract):
        """The catalogue contract a request names, or error 200 and None."""
        found = [c for c in self.server.catalogue() if wc.matches(c)]
        if len(found) != 1:
            self.error(req_id, 200, "No security definition has been found for the request"
                       if not found else f"The contract description specified is ambiguous: "
                       f"{wc.describe()}")
            return None
        return found[0]

    # --- session and time -------------------------------------------------------------------

    def req_ids(self, r: wire.FieldReader) -> None:
        self.send(m.next_valid_id(self.exchange.next_order_id()))

    def req_managed_accts(self, r: wire.FieldReader) -> None:
        self.send(m.managed_accounts([self.server.account]))

    def req_current_time(self, r: wire.FieldReader) -> None:
        self.send(m.current_time(int(self.exchange.now().timestamp())))

    # --- positions and account --------------------------------------------------------------

    def req_positions(self, r: wire.FieldReader) -> None:
        # Pending pushes go out first: a change made on the exchange since the publisher's last
        # tick reaches a client already subscribed both as a push and in this answer, the
        # interleaving a TWS client meets when a fill lands while it asks (every time here, not
        # by chance of timing).
        self.server.publish()
        self.positions_subscribed = True
        for pos in self.server.positions():
            self.send(m.position(pos))
        self.send(m.position_end())

    def cancel_positions(self, r: wire.FieldReader) -> None:
        self.positions_subscribed = False

    def req_account_updates(self, r: wire.FieldReader) -> None:
        r.skip()  # version
        subscribe, account = r.bool(), r.str()
        if not subscribe:
            return
        if account and account != self.server.account:
            self.error(-1, 321, f"Error validating request: unknown account {account}")
            return
        for key, value, currency in self.server.account_values():
            self.send(m.update_account_value(key, value, currency, self.server.account))
        for pos in self.server.positions():
            # Futures are valued at the exchange's own mark, the price its FuturesPNL runs to
            # (as IB's marketPrice is the price of its real-time FuturesPNL).
            price = pos.mark if pos.mark is not None else self.exchange.price(pos.contract.code)
            unit_cost = pos.avg_cost / pos.contract.multiplier
            price = unit_cost if price is None else price
            unrealized = (price - unit_cost) * pos.quantity * pos.contract.multiplier
            self.send(m.update_portfolio(pos, price, unrealized, Decimal(0)))
        self.send(m.update_account_time(self.exchange.now()))
        self.send(m.account_download_end(self.server.account))

    def req_account_updates_multi(self, r: wire.FieldReader) -> None:
        r.skip()
        req_id, account, model = r.int(), r.str(), r.str()
        if account in ("", "All", self.server.account):
            for key, value, currency in self.server.account_values():
                self.send(m.account_update_multi(req_id, self.server.account, key, value,
                                                 currency, model))
        self.send(m.account_update_multi_end(req_id))

    def req_account_summary(self, r: wire.FieldReader) -> None:
        r.skip()
        req_id, _group, tags = r.int(), r.str(), set(r.str().split(","))
        for tag, value, currency in self.server.account_summary(tags):
            self.send(m.account_summary(req_id, self.server.account, tag, value, currency))
        self.send(m.account_summary_end(req_id))

    # --- contracts and market data ----------------------------------------------------------

    def req_contract_details(self, r: wire.FieldReader) -> None:
        r.skip()
        req_id = r.int()
        wc = WireContract(r)
        found = [c for c in self.server.catalogue() if wc.matches(c)]
        if not found:
            self.error(req_id, 200, "No security definition has been found for the request")
            return
        dates = self.exchange.contract_dates()
        for c in found:
            self.send(m.contract_details(req_id, c, self.server.min_tick(c), c.code, *dates.get(c.code, ("", ""))))
        self.send(m.contract_details_end(req_id))

    def req_mkt_data(self, r: wire.FieldReader) -> None:
        r.skip()
        req_id = r.int()
        wc = WireContract(r)
        if wc.sec_type == "BAG":
            self.error(req_id, 200, "combo market data is not simulated")
            return
        if r.bool():  # delta-neutral contract present
            r.skip(3)
        _generic, snapshot = r.str(), r.bool()
        contract = self.resolve(req_id, wc)
        if contract is None:
            return
        price = self.send_ticks(req_id, contract.code)
        if snapshot:
            self.send(m.tick_snapshot_end(req_id))
        else:
            self.market_data[req_id] = (contract.code, price)

    def send_ticks(self, req_id: int, code: str) -> Decimal | None:
        price = self.exchange.price(code)
        if price is not None:
            one = Decimal(1)
            for tick in (m.TICK_BID, m.TICK_ASK, m.TICK_LAST):
                self.send(m.tick_price(req_id, tick, price, one))
            settled = self.exchange.settlement_prices(code)
            self.send(m.tick_price(req_id, m.TICK_CLOSE, settled[-1][1] if settled else price))
        return price

    def cancel_mkt_data(self, r: wire.FieldReader) -> None:
        r.skip()
        self.market_data.pop(r.int(), None)

    def stream_prices(self) -> None:
        """Called by the publisher: push a new price to each live subscription."""
        for req_id, (code, last) in list(self.market_data.items()):
            price = self.exchange.price(code)
            if price is not None and price != last:
                self.send_ticks(req_id, code)
                self.market_data[req_id] = (code, price)

    def req_historical_data(self, r: wire.FieldReader) -> None:
        req_id = r.int()
        contract = self.resolve(req_id, WireContract(r))
        if contract is None:
            return
        r.skip()  # includeExpired
        r.skip()  # endDateTime: the simulated clock is the end
        bar_size, duration = r.str(), r.str()
        history = self.exchange.price_history(contract.code)
        end = self.exchange.now()
        bars = bars_from_history(history, bar_size, duration, end)
        start = bars[0].date if bars else ""
        self.send(m.historical_data(req_id, start, bars[-1].date if bars else "", bars))

    # --- orders and executions --------------------------------------------------------------

    def place_order(self, r: wire.FieldReader) -> None:
        order_id = r.int()
        wc = WireContract(r)
        r.skip(2)  # secIdType, secId
        action, quantity, order_type = r.str(), r.decimal(), r.str()
        limit_price = r.decimal()
        r.skip(4)  # auxPrice, tif, ocaGroup, account
        r.skip(2)  # openClose, origin
        order_ref = r.str()
        legs = []
        if wc.sec_type == "BAG":  # combo legs follow the order's first fields
            r.skip(8)  # transmit, parentId, blockOrder, sweepToFill, displaySize, triggerMethod, outsideRth, hidden
            for _ in range(r.int()):
                con_id, ratio, leg_action, _exchange = r.int(), r.int(), r.str(), r.str()
                r.skip(4)  # openClose, shortSaleSlot, designatedLocation, exemptCode
                legs.append((con_id, ratio, leg_action))
        self.server.place_order(self, order_id, wc, action, quantity, order_type, limit_price,
                                order_ref, tuple(legs))

    def cancel_order(self, r: wire.FieldReader) -> None:
        r.skip()
        self.server.cancel_order(self, r.int())

    def req_open_orders(self, r: wire.FieldReader) -> None:
        self._send_open_orders(everyone=self.client_id == 0)

    def req_all_open_orders(self, r: wire.FieldReader) -> None:
        self._send_open_orders(everyone=True)

    def _send_open_orders(self, everyone: bool) -> None:
        for order in self.server.wire_orders(open_only=True):
            if everyone or order.client_id == self.client_id:
                self.send(m.open_order(order))
                self.send(m.order_status(order))
        self.send(m.open_order_end())

    def req_completed_orders(self, r: wire.FieldReader) -> None:
        if "completed orders" in self.server.withheld:
            return
        for order in self.server.wire_orders(open_only=False):
            if order.status not in ("PreSubmitted", "Submitted"):
                self.send(m.completed_order(order))
        self.send(m.completed_orders_end())

    def req_executions(self, r: wire.FieldReader) -> None:
        if "executions" in self.server.withheld:
            return
        r.skip()
        req_id, client_id, account = r.int(), r.int(), r.str()
        since, symbol, sec_type = r.str(), r.str(), r.str()
        _exchange, side = r.str(), r.str()
        cutoff = _parse_filter_time(since)
        executions = self.server.with_combo_reports(self.exchange.executions())
        released = []
        for ex, order_id, owner, cum, avg in self.server.execution_rows(executions):
            if (client_id and owner != client_id) or (account and account != ex.account) \
                    or (symbol and symbol != ex.contract.symbol) \
                    or (sec_type and sec_type != ex.contract.sec_type) \
                    or (side and side[0] != ("B" if ex.side == "BUY" else "S")) \
                    or (cutoff and ex.time < cutoff):
                continue
            self.send(m.exec_details(req_id, ex, order_id, owner, cum, avg))
            if self.server.commission_released(ex, time.monotonic()):
                released.append(ex)
        # Commission reports after their execDetails, before the End: a client that waits for
        # the End then knows every commission the gateway knows.
        for ex in released:
            self.send(m.commission_report(ex.exec_id, ex.commission, ex.commission_currency))
        self.send(m.exec_details_end(req_id))


def _parse_filter_time(text: str) -> dt.datetime | None:
    """ExecutionFilter.time: "yyyymmdd hh:mm:ss" (UTC here), optionally "yyyymmdd-hh:mm:ss"."""
    text = text.strip().replace("-", " ")
    if not text:
        return None
    parts = text.split()
    try:
        when = dt.datetime.strptime(" ".join(parts[:2]), "%Y%m%d %H:%M:%S")
    except ValueError:
        return None
    return when.replace(tzinfo=dt.timezone.utc)


def order_request(order_ref: str, contract, action: str, quantity: Decimal | None,
                  order_type: str, limit_price: Decimal | None) -> OrderRequest:
    if order_type not in (MARKET, LIMIT):
        raise BrokerError(f"order type {order_type} is not simulated")
    if quantity is None:
        raise BrokerError("order quantity missing")
    return OrderRequest(order_ref=order_ref, contract=contract, side=action,
                        quantity=quantity, order_type=order_type,
                        limit_price=limit_price if order_type == LIMIT else None)
