"""The IB-compatible simulated gateway: an asyncio TCP server over a `SimExchange`.

    exchange = SimExchange("paper.sqlite")
    server = IBSimServer(exchange).start()          # background thread, port chosen by the OS
    ib = ib_async.IB(); ib.connect("127.0.0.1", server.port, clientId=1)
    ...
    server.stop()

The unmodified ib_async client connects to it as to TWS / IB Gateway at server version 178.
The gateway adds to the exchange only what a TWS session adds: client ids, per-client order
ids, routing of pushes to the client that owns an order, and the timing of commission reports.
The exchange stays the single source of truth for orders, executions, positions and cash (and for
what is forgotten: with its day window, reqExecutions and the open and completed orders leave out,
as IB does, what was done before midnight), so a gateway restarted over the same exchange file
reports the same state (the owner client of an
order is the one thing kept only in memory).

Pushes are produced by one *publisher* that diffs the exchange against what it has already
reported: new executions become execDetails to the owning client, order state changes become
orderStatus (+ openOrder), commissions that became known become commissionReports to every
connected client (ib_async ignores reports for executions it has not seen). It runs right after
every order request, before every reqPositions answer (so a client already subscribed meets the
push and the answer interleaved, as at TWS when a fill lands while it asks) and every
`poll_interval` seconds, so changes made directly on the exchange (a price move that fills a
resting limit, an external trade, a correction) reach clients too.

Test controls, all callable from any thread: `drop_connections()` cuts every socket as a
network failure would; `drop_after_next_order()` does it right after an order reached the
exchange, before the client hears back; `hold_commissions()` / `release_commissions()` withhold commission
reports (live and in reqExecutions answers) to model IB's late reports; `commission_delay`
does the same for a fixed time after each execution; `correct_execution()` issues a
correction (`.01` -> `.02`) through the exchange; `withhold_answers("completed orders",
"executions")` leaves those requests unanswered (a slow gateway at start-up sync) until
`withhold_answers()` clears it; `leave_out_currencies("EUR")` leaves a currency out of the account's
ledger answers from now on (an account that no longer holds it), until `leave_out_currencies()`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from dataclasses import replace
from decimal import Decimal
from typing import Callable, TypeVar

from tradeledger.broker.base import BrokerError, BrokerPosition, ComboLeg, Contract, Execution, OrderStatus
from tradeledger.broker.ibsim import messages as m
from tradeledger.broker.ibsim.contracts import WireContract, with_con_id
from tradeledger.broker.ibsim.session import Session, order_request
from tradeledger.broker.ibsim.wire import format_decimal as _text
from tradeledger.broker.simexchange import SimExchange

log = logging.getLogger("tradeledger.ibsim")
T = TypeVar("T")

# Exchange status -> TWS status text. IB has no "Rejected": a refused order goes Inactive.
WIRE_STATUS = {"Rejected": "Inactive"}
MIN_TICKS = {"MBT": "5", "BRR": "5", "ES": "0.25", "MES": "0.25", "NQ": "0.25", "MNQ": "0.25",
             "RTY": "0.1", "M2K": "0.1", "YM": "1", "MYM": "1", "ZN": "0.015625",
             "ZF": "0.0078125", "ZB": "0.03125", "ZT": "0.00390625"}
FULL_SCAN_EVERY = 40  # publisher ticks between full execution scans (see _scan_since)
BAG_CON_ID = 28812380  # the conId IB gives every combination (BAG) contract


def combo_reports(executions: list[Execution], combos: dict[int, list[tuple[str, str, int]]],
                  orders: dict[int, OrderStatus], contracts: dict[str, Contract]) -> list[Execution]:
    """IB's extra execution report for each filled combination (pure): after the legs' own
    executions, one more for the BAG itself, with the combo's quantity and net price (the sum of
    each leg's price x ratio, bought legs positive) and the order's orderRef and permId. It
    carries no commission: the legs' reports do."""
    reports = []
    for order_id, legs in sorted(combos.items()):
        st = orders.get(order_id)
        if st is None or st.status != "Filled":
            continue
        first: dict[str, Execution] = {}
        for ex in executions:  # the first report of each leg (a correction is an extra report)
            if ex.broker_order_id == order_id and ex.contract.sec_type != "BAG":
                first.setdefault(ex.contract.code, ex)
        if any(code not in first for code, _, _ in legs):
            continue
        net = sum((first[code].price * ratio * (1 if side == "BUY" else -1) for code, side, ratio in legs), Decimal(0))
        lead = first[legs[0][0]]
        combo = contracts.get(st.contract_code) or Contract(st.contract_code, "BAG", lead.contract.symbol,
                                                            lead.contract.exchange, lead.contract.currency)
        reports.append(replace(
            lead, exec_id=f"{lead.exec_id.split('.')[0]}.{st.perm_id:08x}.02.01",
            contract=replace(combo, sec_type="BAG", con_id=BAG_CON_ID), side=st.side, quantity=st.quantity,
            price=net, time=max(first[code].time for code, _, _ in legs), commission=None, commission_currency=""))
    return reports


class IBSimServer:
    def __init__(self, exchange: SimExchange, host: str = "127.0.0.1", port: int = 0,
                 account: str | None = None, poll_interval: float = 0.05,
                 commission_delay: float = 0.0, base_currency: str = "USD") -> None:
        self.exchange = exchange
        self.host = host
        self._requested_port = port
        # The managed account is the exchange's unless overridden (to test a mismatch).
        self.account = account or exchange.account
        self.poll_interval = poll_interval
        self.commission_delay = commission_delay
        self.base_currency = base_currency
        self.port = 0
        self.sessions: dict[int, Session] = {}
        self._owner: dict[int, int] = {}  # exchange order id -> client id that placed it
        self._order_kind: dict[int, tuple[str, Decimal | None]] = {}  # -> (type, limit)
        self._sent_status: dict[int, tuple[str, Decimal]] = {}
        self._tracked: set[int] = set()  # open orders whose status changes we push
        self._seen: dict[str, float] = {}  # exec id -> monotonic time first published
        self._commission_sent: set[str] = set()
        self._pending: dict[str, dt.datetime] = {}  # exec ids still owing a commission report
        self._latest: dt.datetime | None = None
        self._fills: dict[int, tuple[Decimal, Decimal]] = {}  # perm id -> (qty, notional)
        self._last_fill: dict[int, Decimal] = {}  # perm id -> price of its latest execution
        self._hold = False
        self.withheld: frozenset[str] = frozenset()  # requests left unanswered (withhold_answers)
        self.left_out: frozenset[str] = frozenset()  # currencies no ledger answer lists (leave_out_currencies)
        self.orders_received = 0
        self._drop_on_order = 0  # orders still to be answered by a cut connection
        self._ticks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._publisher: asyncio.Task | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start_async(self) -> None:
        """Start serving on the running loop (the CLI's way)."""
        self._loop = asyncio.get_running_loop()
        self.publish()  # everything already in the exchange counts as reported
        for order in self.exchange.open_orders():
            self._tracked.add(order.broker_order_id)
            self._sent_status[order.broker_order_id] = (order.status, order.filled)
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._publisher = asyncio.create_task(self._publish_forever())
        log.info("IB simulated gateway for %s on %s:%s", self.account, self.host, self.port)

    async def serve_forever(self) -> None:
        await self.start_async()
        try:
            await self._server.serve_forever()
        finally:
            await self.stop_async()

    async def stop_async(self) -> None:
        if self._publisher:
            self._publisher.cancel()
        if self._server:
            self._server.close()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()

    def start(self) -> IBSimServer:
        """Serve from a background thread; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # report a bind failure to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.run_until_complete(asyncio.sleep(0))  # let aborted transports close
            loop.close()

        self._thread = threading.Thread(target=run, name="ibsim-gateway", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread and self._loop and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._thread = None

    def __enter__(self) -> IBSimServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run fn on the gateway's loop and wait for it (from any thread)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()
        if threading.current_thread() is self._thread:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(10)

    # --- test controls -------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Cut every client socket, as a network failure would."""

        def drop() -> None:
            for session in list(self.sessions.values()):
                session.close()

        self._call(drop)

    def drop_after_next_order(self, n: int = 1) -> None:
        """The next n orders reach the exchange (and may fill), then every socket is cut before
        the client hears anything: the reply to a placed order is lost."""

        def arm() -> None:
            self._drop_on_order += n

        self._call(arm)

    def connected_clients(self) -> list[int]:
        return self._call(lambda: sorted(self.sessions))

    def hold_commissions(self, hold: bool = True) -> None:
        def set_hold() -> None:
            self._hold = hold
            if not hold:
                self.publish()

        self._call(set_hold)

    def withhold_answers(self, *requests: str) -> None:
        """Leave "completed orders" / "executions" requests unanswered from now on."""
        unknown = set(requests) - {"completed orders", "executions"}
        if unknown:
            raise ValueError(f"cannot withhold {sorted(unknown)}")

        def set_withheld() -> None:
            self.withheld = frozenset(requests)

        self._call(set_withheld)

    def leave_out_currencies(self, *currencies: str) -> None:
        """List no ledger row of these currencies in account answers from now on: a currency the
        account emptied may stop being reported at all, rather than reported as 0."""

        def set_left_out() -> None:
            self.left_out = frozenset(c.upper() for c in currencies)

        self._call(set_left_out)

    def release_commissions(self) -> None:
        self.hold_commissions(False)

    def correct_execution(self, exec_id: str, new_price: Decimal | None = None,
                          new_qty: Decimal | None = None) -> Execution:
        def correct() -> Execution:
            ex = self.exchange.correct_execution(exec_id, new_price, new_qty)
            self.publish()
            return ex

        return self._call(correct)

    def publish_now(self) -> None:
        self._call(self.publish)

    # --- sessions --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Session(self, reader, writer).run()

    def register(self, client_id: int, session: Session) -> bool:
        if client_id in self.sessions:
            return False
        self.sessions[client_id] = session
        return True

    def session_ended(self, session: Session) -> None:
        if session.client_id is not None and self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    # --- the account as the wire shows it ------------------------------------------------------

    def catalogue(self) -> list[Contract]:
        return [with_con_id(c) for c in self.exchange.contracts()]

    def min_tick(self, contract: Contract) -> Decimal:
        key = contract.trading_class or contract.symbol
        return Decimal(MIN_TICKS.get(key, "0.01"))

    def positions(self) -> list[BrokerPosition]:
        return [replace(p, account=self.account, contract=with_con_id(p.contract))
                for p in self.exchange.positions()]

    def account_values(self) -> list[tuple[str, str, str]]:
        """(tag, value, currency) rows: IB's per-currency ledger, plus the account's codes."""
        snap = self.exchange.snapshot()
        cash = dict(snap.cash)
        unsettled = dict(snap.unsettled_pnl)
        stock_value: dict[str, Decimal] = {}
        for p in snap.positions:
            if p.contract.sec_type == "STK":
                price = self.exchange.price(p.contract.code) or p.avg_cost
                cur = p.contract.currency
                stock_value[cur] = stock_value.get(cur, Decimal(0)) + p.quantity * price
        rows = [("AccountCode", self.account, ""), ("AccountType", "INDIVIDUAL", ""),
                ("Currency", self.base_currency, self.base_currency)]
        zero = Decimal(0)
        for cur in sorted((set(cash) | set(unsettled) | set(stock_value) | {self.base_currency}) - self.left_out):
            c, u, s = cash.get(cur, zero), unsettled.get(cur, zero), stock_value.get(cur, zero)
            rows += [("CashBalance", _text(c), cur), ("TotalCashValue", _text(c), cur),
                     ("FuturesPNL", _text(u), cur), ("StockMarketValue", _text(s), cur),
                     ("NetLiquidationByCurrency", _text(c + u + s), cur)]
        return rows

    def account_summary(self, tags: set[str]) -> list[tuple[str, str, str]]:
        rows = self.account_values()
        out = []
        if "$LEDGER:ALL" in tags:
            out += [r for r in rows if r[2] and r[0] != "Currency"]
        elif "$LEDGER" in tags:
            out += [r for r in rows if r[2] == self.base_currency and r[0] != "Currency"]
        base = {tag: value for tag, value, cur in rows if cur in ("", self.base_currency)}
        if "NetLiquidationByCurrency" in base:
            base["NetLiquidation"] = base["NetLiquidationByCurrency"]
        for tag in sorted(tags & set(base)):
            out.append((tag, base[tag], "" if tag in ("AccountType",) else self.base_currency))
        return out

    def wire_order(self, st: OrderStatus, contracts: dict[str, Contract]) -> m.WireOrder:
        order_type, limit = self._order_kind.get(st.broker_order_id, ("MKT", None))
        qty, notional = self._fills.get(st.perm_id, (Decimal(0), Decimal(0)))
        status = WIRE_STATUS.get(st.status, st.status)
        return m.WireOrder(
            order_id=st.broker_order_id, client_id=self._owner.get(st.broker_order_id, 0),
            perm_id=st.perm_id, contract=contracts[st.contract_code], action=st.side,
            quantity=st.quantity, order_type=order_type, limit_price=limit,
            account=self.account, order_ref=st.order_ref, status=status, filled=st.filled,
            avg_fill_price=notional / qty if qty else Decimal(0),
            last_fill_price=self._last_fill.get(st.perm_id, Decimal(0)),
            completed_status=f"Rejected: {st.reason}" if st.status == "Rejected" else "")

    def wire_orders(self, open_only: bool) -> list[m.WireOrder]:
        orders = self.exchange.open_orders() if open_only else self.exchange.orders()
        contracts = {c.code: c for c in self.catalogue()}
        return [self.wire_order(o, contracts) for o in orders]

    def execution_rows(self, executions: list[Execution]):
        """(execution, orderId, clientId, cumQty, avgPrice) per distinct execution."""
        totals: dict[int, tuple[Decimal, Decimal]] = {}
        done: set[str] = set()
        for ex in executions:
            if ex.exec_id in done:
                continue
            done.add(ex.exec_id)
            if ex.contract.sec_type == "BAG":  # the combo's own report: its quantity, its net price
                yield (replace(ex, account=self.account), ex.broker_order_id,
                       self._owner.get(ex.broker_order_id, 0), ex.quantity, ex.price)
                continue
            qty, notional = totals.get(ex.perm_id, (Decimal(0), Decimal(0)))
            qty, notional = qty + ex.quantity, notional + ex.quantity * ex.price
            totals[ex.perm_id] = (qty, notional)
            yield (replace(ex, account=self.account, contract=with_con_id(ex.contract)),
                   ex.broker_order_id, self._owner.get(ex.broker_order_id, 0), qty,
                   notional / qty)

    def with_combo_reports(self, executions: list[Execution], new: list[Execution] | None = None) -> list[Execution]:
        """`executions` and, after them, the combination reports of the filled combos among them
        (or among `new`: then only reports not sent yet)."""
        wanted = {ex.broker_order_id for ex in (executions if new is None else new)}
        combos = {oid: legs for oid, legs in self.exchange.combo_legs().items() if oid in wanted} if wanted else {}
        if not combos:
            return executions if new is None else []
        every = executions if new is None else self.exchange.executions()
        orders = {o.broker_order_id: o for o in self.exchange.orders()}
        reports = combo_reports(every, combos, orders, {c.code: c for c in self.exchange.contracts()})
        if new is None:
            return executions + reports
        fresh = [r for r in reports if r.exec_id not in self._seen]
        for r in fresh:
            self._seen[r.exec_id] = time.monotonic()
        return fresh

    def commission_released(self, ex: Execution, now: float) -> bool:
        if ex.commission is None or self._hold:
            return False
        return now - self._seen.get(ex.exec_id, now) >= self.commission_delay

    # --- orders ------------------------------------------------------------------------------

    def place_order(self, session: Session, order_id: int, wc: WireContract, action: str,
                    quantity: Decimal | None, order_type: str, limit: Decimal | None,
                    order_ref: str, legs: tuple = ()) -> None:
        self.orders_received += 1  # every placeOrder, accepted or refused: what a client sent
        if order_id <= 0 or order_id in self._owner:
            session.error(order_id, 103, f"Duplicate order id: {order_id}")
            return
        combo: tuple[ComboLeg, ...] = ()
        if wc.sec_type == "BAG":  # a combination: its legs by conId, the BAG itself is no security
            by_id = {c.con_id: c for c in self.catalogue()}
            missing = [con_id for con_id, _, _ in legs if con_id not in by_id]
            if not legs or missing:
                session.error(order_id, 200, f"No security definition has been found for the combo legs {missing}")
                return
            combo = tuple(ComboLeg(by_id[con_id], side, ratio) for con_id, ratio, side in legs)
            first = combo[0].contract
            contract = Contract("/".join(leg.contract.code for leg in combo), "BAG", first.symbol, first.exchange,
                                first.currency, first.multiplier, "", first.trading_class)
        else:
            contract = session.resolve(order_id, wc)
        if contract is None:
            return
        try:
            request = replace(order_request(order_ref, contract, action, quantity, order_type, limit), legs=combo)
            st = self.exchange.place_order(request, order_id=order_id)
        except BrokerError as exc:
            if str(exc).startswith("duplicate order id"):
                session.error(order_id, 103, f"Duplicate order id: {order_id}")
            else:
                session.error(order_id, 201, f"Order rejected - reason:{exc}")
            return
        self._owner[order_id] = session.client_id or 0
        self._order_kind[order_id] = (order_type, request.limit_price)
        self._tracked.add(order_id)
        if self._drop_on_order > 0:
            self._drop_on_order -= 1
            for other in list(self.sessions.values()):
                other.close()
            self.publish()  # bookkeeping only: nobody is connected to hear it
            return
        if st.status == "Rejected":
            session.error(order_id, 201, f"Order rejected - reason:{st.reason}")
        else:
            # Acknowledge as TWS does (Submitted, nothing filled) before any fill is reported.
            ack = self.wire_order(replace(st, status="Submitted", filled=Decimal(0)),
                                  {contract.code: contract})
            session.send(m.open_order(ack))
            session.send(m.order_status(ack))
            self._sent_status[order_id] = ("Submitted", Decimal(0))
        self.publish()

    def cancel_order(self, session: Session, order_id: int) -> None:
        try:
            st = self.exchange.cancel_order_id(order_id)
        except BrokerError:
            session.error(order_id, 135, f"Can't find order with id ={order_id}")
            return
        if st.status == "Cancelled" and self._sent_status.get(order_id, ("",))[0] != "Cancelled":
            self.publish()
            session.error(order_id, 202, "Order Canceled - reason:")
        else:
            session.error(order_id, 161, "Cancel attempted when order is not in a cancellable "
                          f"state. Order permId ={st.perm_id}")

    # --- the publisher --------------------------------------------------------------------------

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.publish()
            except Exception:  # a failing tick must not stop the pushes for good
                log.exception("publisher tick failed")

    def _scan_since(self) -> dt.datetime | None:
        """Where the next scan starts: at the newest execution seen, or earlier when an older
        one still owes its commission. Every FULL_SCAN_EVERY ticks the whole list is read, so
        an execution stamped in the past by a simulated clock is not missed for long."""
        self._ticks += 1
        if self._latest is None or self._ticks % FULL_SCAN_EVERY == 0:
            return None
        return min([self._latest, *self._pending.values()])

    def publish(self) -> None:
        now = time.monotonic()
        executions = self.exchange.executions(self._scan_since())
        new: list[Execution] = []
        touched: set[int] = set()
        for ex in executions:
            if ex.exec_id in self._seen:
                continue
            self._seen[ex.exec_id] = now
            new.append(ex)
            qty, notional = self._fills.get(ex.perm_id, (Decimal(0), Decimal(0)))
            self._fills[ex.perm_id] = (qty + ex.quantity, notional + ex.quantity * ex.price)
            self._last_fill[ex.perm_id] = ex.price
            if self._latest is None or ex.time > self._latest:
                self._latest = ex.time
            if ex.exec_id not in self._commission_sent:
                self._pending[ex.exec_id] = ex.time
            if ex.broker_order_id:
                touched.add(ex.broker_order_id)
        combos = self.with_combo_reports(executions, new) if new else []
        for ex, order_id, owner, cum, avg in self.execution_rows(new + combos):
            for session in self._receivers(owner):
                session.send(m.exec_details(-1, ex, order_id, owner, cum, avg))
        if new:
            self._push_positions({ex.contract.code for ex in new})
        if touched or self._tracked:
            self._push_statuses(touched | self._tracked)
        latest = {ex.exec_id: ex for ex in executions}
        for exec_id in list(self._pending):
            ex = latest.get(exec_id)
            if ex is not None and self.commission_released(ex, now):
                report = m.commission_report(exec_id, ex.commission, ex.commission_currency)
                for session in list(self.sessions.values()):
                    session.send(report)
                self._commission_sent.add(exec_id)
                del self._pending[exec_id]
        for session in list(self.sessions.values()):
            session.stream_prices()

    def _push_positions(self, codes: set[str]) -> None:
        """TWS keeps a reqPositions subscription open: changed positions are pushed, a closed
        one as quantity 0 (which is how ib_async learns to drop it)."""
        listeners = [s for s in self.sessions.values() if s.positions_subscribed]
        if not listeners:
            return
        held = {p.contract.code: p for p in self.positions()}
        contracts = {c.code: c for c in self.catalogue()}
        for code in sorted(codes):
            pos = held.get(code) or BrokerPosition(self.account, contracts[code], Decimal(0),
                                                   Decimal(0))
            for session in listeners:
                session.send(m.position(pos))

    def _receivers(self, owner: int) -> list[Session]:
        """The owning client and a master client (id 0), as TWS routes order pushes."""
        return [s for cid, s in self.sessions.items() if cid in (owner, 0)]

    def _push_statuses(self, order_ids: set[int]) -> None:
        contracts = {c.code: c for c in self.catalogue()}
        for st in self.exchange.orders():
            oid = st.broker_order_id
            if oid not in order_ids:
                continue
            wo = self.wire_order(st, contracts)
            previous = self._sent_status.get(oid)
            if previous == (wo.status, wo.filled):
                continue
            self._sent_status[oid] = (wo.status, wo.filled)
            for session in self._receivers(wo.client_id):
                session.send(m.order_status(wo))
                if previous is None or previous[0] != wo.status:
                    session.send(m.open_order(wo))
            if st.is_done:
                self._tracked.discard(oid)
            else:
                self._tracked.add(oid)
