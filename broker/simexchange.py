"""The simulated exchange: one broker account at one venue, kept in its own SQLite file.

This is the core behind both simulated brokers: the embedded `broker.sim.SimBroker` and the
IB-wire-compatible gateway. It speaks no protocol and knows nothing of the ledger; it keeps
the books the way a broker keeps them, so that tradeledger's ledger has something independent
to reconcile against.

The model, in the spirit of beancount's core:

* **Market.** One current price per contract code (`set_price`), any Decimal including zero and
  negative (crude oil, April 2020). Every price is also appended to a history.
* **Orders.** MKT fills in full at the current price, or is Rejected when there is none.
  LMT fills at the current price when marketable (BUY limit >= price, SELL limit <= price),
  otherwise it rests; each `set_price` re-checks resting limits and fills them at their limit
  (a resting order is the passive side: it trades at its own price, even through a gap).
  Order ids increase; perm ids are unique per file; a non-empty order_ref is unique among the
  orders the exchange remembers (see Memory).
* **Executions.** Each fill is an execution with an IB-shaped id `PPPPPPPP.NNNNNNNN.01.01`:
  a random per-file prefix (so a recreated file never reuses an old id), a counter, and a
  revision suffix that a correction increments. Times come from the simulated clock.
* **Account.** The exchange maintains positions and cash itself, like a broker:
  shares move `qty x price` of cash at the fill. Futures move no cash at the fill: each
  contract keeps a *mark* (its last fill or settlement price); a fill first rolls the existing
  position from the mark to the fill price into the contract's *unsettled* P&L, then changes
  the position. `settle(code, price, date)` rolls the position to the settlement price and
  moves the unsettled P&L into cash: the daily variation margin. Commissions (per contract,
  configurable per code) debit cash at the fill, in the contract's currency, even while their
  report is still pending. Every cash movement is also written to a journal, numbered (`seq`); a
  snapshot says the last line its cash holds. A movement given the broker's reference (`ref`: a
  deposit's, interest's or fee's id, as IB's transactionID) names that movement only: entered again
  it moves nothing (`Moved.moved` False), another movement under it is refused (`same_movement`).
* **Memory.** By default the exchange reports every order and execution it ever had. With a
  day window (`set_day_window(zone)`) it forgets like IB: `orders()` and `executions()` report no
  order done and no execution made before midnight in that zone (a working order always);
  `memory_since` says from when. The rows stay in the file: only the reports forget.
* **Faults** are rows in the same file, so they survive a restart until consumed: partial
  fills, duplicated execution reports, late commission reports, corrections, disconnects.

Every public call is one SQLite transaction (BEGIN IMMEDIATE ... COMMIT): a crash leaves
either the whole fill (execution, position, cash, order) or none of it. Money and quantities
are stored as decimal text, never floats.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from tradeledger.broker.base import (
    BUY, LIMIT, MARKET, SIDES, AccountSnapshot, BrokerError, BrokerPosition, Contract,
    Execution, OrderRequest, OrderStatus,
)
from tradeledger.broker.simstore import (  # noqa: F401 - re-exported: the file, its clock and faults live there
    DEFAULT_COMMISSION, SCHEMA_VERSION, UTC, SimStore, _parse_ts, _ts, _utc,
)
from tradeledger.errors import UnknownName

# Shares as IB's fixed pricing charges them: per share, at least SHARE_MINIMUM per execution, at
# most SHARE_MAX_FRACTION of the trade's value.
DEFAULT_SHARE_COMMISSION = Decimal("0.005")
SHARE_MINIMUM = Decimal("1.00")
SHARE_MAX_FRACTION = Decimal("0.01")
ZERO = Decimal(0)


# --- pure functions -------------------------------------------------------------------------

def signed(side: str, quantity: Decimal) -> Decimal:
    return quantity if side == BUY else -quantity


def is_marketable(side: str, limit: Decimal, price: Decimal) -> bool:
    """A buyer pays up to its limit, a seller accepts down to it."""
    return limit >= price if side == BUY else limit <= price


def variation(position: Decimal, mark: Decimal | None, price: Decimal,
              multiplier: Decimal) -> Decimal:
    """What the holder of `position` gains when the contract moves from `mark` to `price`."""
    if position == 0 or mark is None:
        return ZERO
    return position * (price - mark) * multiplier


NINE_PLACES = Decimal("1e-9")


def average_price(position: Decimal, avg: Decimal, qty: Decimal, price: Decimal) -> Decimal:
    """Average open price after a signed fill: adds average in, reductions keep it, a flip
    or a fresh open starts from the fill price."""
    new = position + qty
    if new == 0:
        return ZERO
    if position == 0 or (position > 0) != (new > 0):
        return price
    if (position > 0) == (qty > 0):
        return (position * avg + qty * price) / new
    return avg


def commission_for(sec_type: str, rate: Decimal, qty: Decimal, price: Decimal, multiplier: Decimal) -> Decimal:
    """What one execution costs (pure): futures `rate` per contract; shares `rate` per share, at
    least SHARE_MINIMUM, at most SHARE_MAX_FRACTION of the value traded (IB's fixed schedule)."""
    if sec_type == "FUT" or qty == 0 or rate == 0:  # a rate of 0 is a commission-free account
        return rate * qty
    cap = SHARE_MAX_FRACTION * qty * abs(price) * multiplier
    return max(SHARE_MINIMUM, min(rate * qty, cap)) if cap >= SHARE_MINIMUM else cap


def make_exec_id(prefix: str, counter: int, revision: int = 1) -> str:
    return f"{prefix}.{counter:08x}.01.{revision:02x}"


def next_revision(exec_id: str) -> str:
    """`0000e859.603f1a4b.01.01` -> `0000e859.603f1a4b.01.02`: what IB does on a correction."""
    head, _, tail = exec_id.rpartition(".")
    return f"{head}.{int(tail, 16) + 1:02x}"


def partial_cap(quantity: Decimal, arg: dict) -> Decimal:
    """How much of an order a partial-fill fault lets through: whole units, within [0, qty]."""
    if "qty" in arg:
        cap = Decimal(arg["qty"])
    else:
        cap = (quantity * Decimal(arg["ratio"])).to_integral_value(rounding=ROUND_FLOOR)
    return max(ZERO, min(cap, quantity))


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


@dataclass(frozen=True)
class JournalLine:
    """One line of the exchange's cash journal."""

    seq: int
    at: dt.datetime
    currency: str
    amount: Decimal
    kind: str
    ref: str


@dataclass(frozen=True)
class Moved:
    """What a cash movement at the broker's screen did: its journal line, and whether it moved the
    cash now (False: the reference names that very line already, nothing moved twice)."""

    line: JournalLine
    moved: bool


def same_movement(known: JournalLine, currency: str, amount: Decimal, kind: str) -> bool:
    """Whether a movement asked under a reference the journal knows is that line (pure): the same
    currency, amount and kind; the time is no part of it (the same command retried after midnight).
    Refused otherwise (BrokerError): a broker's reference names one movement."""
    what = [f"{name} {have} (asked {asked})" for name, have, asked in
            (("kind", known.kind, kind), ("currency", known.currency, currency), ("amount", known.amount, amount))
            if have != asked]
    if what:
        raise BrokerError(f"ref {known.ref} is already the broker's {known.kind} of {known.amount} {known.currency} "
                          f"at {known.at.isoformat()} (journal line {known.seq}): {', '.join(what)}; a reference "
                          "names one movement: give this one another")
    return True


# --- the exchange ---------------------------------------------------------------------------

class SimExchange(SimStore):
    """One simulated account at one venue, persisted in `path` (see the module docstring); its
    file, clock, commission rates and pending faults are kept by `SimStore` (broker/simstore.py)."""

    # -- contracts and commissions --

    def add_contract(self, contract: Contract) -> None:
        with self._tx() as c:
            self._register(c, contract)

    def _register(self, c, k: Contract) -> Contract:
        """Know `k` from now on; refuse a code that would change how money is computed."""
        known = self._contract(c, k.code)
        if known is None:
            c.execute("INSERT INTO contracts VALUES (?,?,?,?,?,?,?,?,?)",
                      (k.code, k.sec_type, k.symbol, k.exchange, k.currency,
                       str(k.multiplier), k.expiry, k.trading_class, k.con_id))
            return k
        if (known.sec_type, known.currency, known.multiplier) != (
                k.sec_type, k.currency, Decimal(k.multiplier)):
            raise BrokerError(
                f"contract {k.code} is already traded as {known.sec_type} in {known.currency} with multiplier "
                f"{known.multiplier}; it cannot become {k.sec_type} in {k.currency} with multiplier {k.multiplier} "
                f"(a traded contract's type, currency and multiplier never change): put the instrument's definition "
                "back in config.toml, or configure a new instrument")
        return known

    @classmethod
    def _contract(cls, c, code: str) -> Contract | None:
        r = c.execute("SELECT * FROM contracts WHERE code = ?", (code,)).fetchone()
        return None if r is None else cls._contract_from_row(r)

    @staticmethod
    def _contract_from_row(r) -> Contract:
        return Contract(code=r["code"], sec_type=r["sec_type"], symbol=r["symbol"],
                        exchange=r["exchange"], currency=r["currency"],
                        multiplier=Decimal(r["multiplier"]), expiry=r["expiry"],
                        trading_class=r["trading_class"], con_id=r["con_id"])

    def _known(self, c, code: str) -> Contract:
        k = self._contract(c, code)
        if k is None:
            listed = [r["code"] for r in c.execute("SELECT code FROM contracts")]
            raise BrokerError(str(UnknownName("contract", code, listed, see="tradeledger instruments list")))
        return k

    def contract(self, code: str) -> Contract | None:
        with self._tx() as c:
            return self._contract(c, code)

    def contracts(self) -> list[Contract]:
        with self._tx() as c:
            return [self._contract_from_row(r) for r in c.execute("SELECT * FROM contracts ORDER BY code")]

    def set_contract_dates(self, code: str, last_trade: dt.date, real_expiration: dt.date | None = None) -> None:
        """The venue's own last trading day (and expiration) of a known future: what IB's contract
        details would say (`lastTradeDateOrContractMonth`, `realExpirationDate`)."""
        with self._tx() as c:
            self._known(c, code)
            c.execute("INSERT OR REPLACE INTO contract_dates VALUES (?, ?, ?)",
                      (code, last_trade.strftime("%Y%m%d"), (real_expiration or last_trade).strftime("%Y%m%d")))

    def contract_dates(self) -> dict[str, tuple[str, str]]:
        """code -> (last trading day, real expiration), YYYYMMDD, of the futures given dates."""
        with self._tx() as c:
            return {r[0]: (r[1], r[2]) for r in c.execute("SELECT code, last_trade, real_expiration FROM contract_dates")}

    def combo_legs(self) -> dict[int, list[tuple[str, str, int]]]:
        """order_id -> its legs (code, side as bought, ratio) for every combination order."""
        with self._tx() as c:
            legs: dict[int, list[tuple[str, str, int]]] = {}
            for r in c.execute("SELECT order_id, code, side, ratio FROM order_legs ORDER BY order_id, seq"):
                legs.setdefault(r[0], []).append((r[1], r[2], int(r[3])))
            return legs

    @staticmethod
    def _rate(c, code: str, sec_type: str = "FUT") -> Decimal:
        """The contract's own rate, else the default for its kind ('*' futures, '*STK' shares)."""
        default = "*STK" if sec_type == "STK" else "*"
        r = c.execute("SELECT per_contract FROM commission_rates WHERE code IN (?, ?) "
                      "ORDER BY code = ? LIMIT 1", (code, default, default)).fetchone()
        return Decimal(r[0]) if r else DEFAULT_SHARE_COMMISSION

    def _commission(self, c, k: Contract, qty: Decimal, price: Decimal) -> Decimal:
        return commission_for(k.sec_type, self._rate(c, k.code, k.sec_type), qty, price, k.multiplier)

    # -- market --

    def set_price(self, code: str, price: Decimal, when: dt.datetime | None = None
                  ) -> list[Execution]:
        """Move the market; resting limit orders that become marketable fill at their limit.
        Returns the executions this caused."""
        price = Decimal(price)
        with self._tx() as c:
            at = _ts(when) if when else _ts(self._now(c))
            c.execute("INSERT OR REPLACE INTO prices VALUES (?, ?, ?)", (code, str(price), at))
            c.execute("INSERT INTO price_history (code, price, at) VALUES (?, ?, ?)",
                      (code, str(price), at))
            resting = c.execute(
                "SELECT * FROM orders WHERE code = ? AND status = 'Submitted' AND held = 0 "
                "AND order_type = ? ORDER BY order_id", (code, LIMIT)).fetchall()
            fills = []
            for o in resting:
                limit = Decimal(o["limit_price"])
                if is_marketable(o["side"], limit, price):
                    fills += self._work(c, o["order_id"], limit)
            return fills

    @staticmethod
    def _price(c, code: str) -> Decimal | None:
        r = c.execute("SELECT price FROM prices WHERE code = ?", (code,)).fetchone()
        return None if r is None else Decimal(r[0])

    def price(self, code: str) -> Decimal | None:
        with self._tx() as c:
            return self._price(c, code)

    def price_history(self, code: str) -> list[tuple[dt.datetime, Decimal]]:
        with self._tx() as c:
            return [(_parse_ts(r["at"]), Decimal(r["price"])) for r in c.execute(
                "SELECT at, price FROM price_history WHERE code = ? ORDER BY at, seq", (code,))]

    # -- orders --

    def next_order_id(self) -> int:
        """The id the next order will get (IB's nextValidId)."""
        with self._tx() as c:
            return int(self._meta(c, "next_order_id"))

    def place_order(self, request: OrderRequest, order_id: int | None = None) -> OrderStatus:
        """Accept an order; fill what is marketable now. `order_id` lets a wire client choose
        its own id, as IB clients do; by default the exchange assigns the next one."""
        _validate(request)
        if request.legs:
            return self._place_combo(request, order_id)
        with self._tx() as c:
            k = self._register(c, request.contract)
            if request.order_ref and self._remembered_ref(c, request.order_ref):
                raise BrokerError(f"duplicate order_ref {request.order_ref!r}")
            next_id = int(self._meta(c, "next_order_id"))
            if order_id is None:
                order_id = next_id
            elif c.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone():
                raise BrokerError(f"duplicate order id {order_id}")
            self._set_meta(c, "next_order_id", str(max(next_id, order_id + 1)))
            perm_id = self._counter(c, "next_perm_id")
            price = self._price(c, k.code)
            rejected = request.order_type == MARKET and price is None
            cap = delay = None
            if not rejected:  # a rejected order does not use up a fault
                arg = self._take_fault(c, "partial_fill")
                cap = None if arg is None else str(partial_cap(request.quantity, arg))
                arg = self._take_fault(c, "late_commission")
                delay = None if arg is None else arg["n_polls"]
            c.execute(
                "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,?,?)",
                (order_id, perm_id, request.order_ref, k.code, request.side,
                 str(request.quantity), request.order_type,
                 None if request.limit_price is None else str(request.limit_price), "0",
                 "Rejected" if rejected else "Submitted",
                 f"no market price for {k.code}" if rejected else "",
                 cap, delay, _ts(self._now(c))))
            if not rejected:
                self._match(c, order_id)
            return self._order_status(c, order_id)

    def _place_combo(self, request: OrderRequest, order_id: int | None) -> OrderStatus:
        """A combination (BAG) market order: each leg fills at its own current price, as its own
        execution with the combo's order_ref. A `leg_only` fault fills the first leg and cancels
        the rest (an interrupted spread); a leg without a price rejects the whole order."""
        if request.order_type != MARKET:
            raise BrokerError("the simulated exchange takes combination orders at market only")
        with self._tx() as c:
            legs = [(self._register(c, leg.contract), leg.side, int(leg.ratio)) for leg in request.legs]
            self._register(c, request.contract)
            if request.order_ref and self._remembered_ref(c, request.order_ref):
                raise BrokerError(f"duplicate order_ref {request.order_ref!r}")
            next_id = int(self._meta(c, "next_order_id"))
            order_id = next_id if order_id is None else order_id
            self._set_meta(c, "next_order_id", str(max(next_id, order_id + 1)))
            perm_id = self._counter(c, "next_perm_id")
            missing = [k.code for k, _, _ in legs if self._price(c, k.code) is None]
            c.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0,?,?)",
                      (order_id, perm_id, request.order_ref, request.contract.code, request.side,
                       str(request.quantity), MARKET, None, "0", "Rejected" if missing else "Submitted",
                       f"no market price for {', '.join(missing)}" if missing else "", None, None,
                       _ts(self._now(c))))
            for seq, (k, side, ratio) in enumerate(legs):
                c.execute("INSERT INTO order_legs VALUES (?,?,?,?,?)", (order_id, seq, k.code, side, ratio))
            if not missing:
                only_first = self._take_fault(c, "leg_only") is not None
                for seq, (k, side, ratio) in enumerate(legs):
                    if only_first and seq > 0:
                        c.execute("UPDATE orders SET status = 'Cancelled', reason = ? WHERE order_id = ?",
                                  (f"leg {k.code} not filled", order_id))
                        break
                    leg_side = side if request.side == BUY else ("SELL" if side == BUY else BUY)
                    self._fill(c, k, leg_side, request.quantity * ratio, self._price(c, k.code), request.order_ref,
                               order_id, perm_id)
                else:
                    c.execute("UPDATE orders SET filled = quantity, status = 'Filled' WHERE order_id = ?",
                              (order_id,))
            return self._order_status(c, order_id)

    def fault_leg_only(self, n_orders: int = 1) -> None:
        """The next combination order fills its first leg only; the rest is cancelled."""
        self._add_fault("leg_only", {}, n_orders)

    def _match(self, c, order_id: int) -> None:
        """Trade a live, unheld order against the current price if it is marketable: as the
        aggressor, so at the market price, not at its limit."""
        o = c.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        price = self._price(c, o["code"])
        if o["status"] == "Submitted" and not o["held"] and price is not None and (
                o["order_type"] == MARKET
                or is_marketable(o["side"], Decimal(o["limit_price"]), price)):
            self._work(c, order_id, price)

    def _work(self, c, order_id: int, price: Decimal) -> list[Execution]:
        """Fill as much of a live order as it may take at `price`; hold it at a fault's cap."""
        o = c.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        quantity, filled = Decimal(o["quantity"]), Decimal(o["filled"])
        room = quantity - filled
        if o["fill_cap"] is not None:
            room = min(room, Decimal(o["fill_cap"]) - filled)
        fills = []
        if room > 0:
            k = self._known(c, o["code"])
            fills.append(self._fill(c, k, o["side"], room, price, o["order_ref"], o["order_id"],
                                    o["perm_id"], o["commission_delay"] or 0))
            filled += room
        status = "Filled" if filled == quantity else "Submitted"
        held = int(status == "Submitted" and o["fill_cap"] is not None
                   and filled >= Decimal(o["fill_cap"]))
        c.execute("UPDATE orders SET filled = ?, status = ?, held = ? WHERE order_id = ?",
                  (str(filled), status, held, order_id))
        return fills

    def cancel_order(self, order_ref: str) -> OrderStatus:
        """Cancel what is left of an order; a finished order is returned unchanged."""
        with self._tx() as c:
            return self._cancel(c, self._order_id(c, order_ref))

    def cancel_order_id(self, order_id: int) -> OrderStatus:
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone():
                raise BrokerError(f"no order with id {order_id}")
            return self._cancel(c, order_id)

    def _cancel(self, c, order_id: int) -> OrderStatus:
        c.execute("UPDATE orders SET status = 'Cancelled', held = 0 "
                  "WHERE order_id = ? AND status = 'Submitted'", (order_id,))
        return self._order_status(c, order_id)

    def release_order(self, order_ref: str) -> OrderStatus:
        """Lift a partial-fill hold: the rest of the order trades like a new one, now."""
        with self._tx() as c:
            order_id = self._order_id(c, order_ref)
            c.execute("UPDATE orders SET fill_cap = NULL, held = 0 WHERE order_id = ?",
                      (order_id,))
            self._match(c, order_id)
            return self._order_status(c, order_id)

    def _remembered_ref(self, c, order_ref: str) -> bool:
        """Does an order the exchange still reports carry `order_ref`? IB refuses nothing for an
        orderRef (ib.py refuses one of the orders it sees); an order forgotten at the start of the
        day no longer counts, so the same orderRef is taken again: the defect the engine guards against."""
        since = self._memory_since(c)
        if since is None:
            return c.execute("SELECT 1 FROM orders WHERE order_ref = ?", (order_ref,)).fetchone() is not None
        start = _ts(since)
        return c.execute("SELECT 1 FROM orders o WHERE order_ref = ? AND (status = 'Submitted' OR created_at >= ? OR "
                         "EXISTS (SELECT 1 FROM executions e WHERE e.order_id = o.order_id AND e.at >= ?))",
                         (order_ref, start, start)).fetchone() is not None

    @staticmethod
    def _order_id(c, order_ref: str) -> int:
        r = c.execute("SELECT order_id FROM orders WHERE order_ref = ? AND order_ref != '' ORDER BY order_id DESC",
                      (order_ref,)).fetchone()
        if r is None:
            raise BrokerError(f"no order with order_ref {order_ref!r}")
        return r[0]

    @staticmethod
    def _order_status(c, order_id: int) -> OrderStatus:
        o = c.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return _status_record(o)

    def orders(self) -> list[OrderStatus]:
        """Every order the exchange remembers: with a day window, a done order only if it was placed
        or traded since the day began (a working order always)."""
        with self._tx() as c:
            since = self._memory_since(c)
            if since is None:
                rows = c.execute("SELECT * FROM orders ORDER BY order_id")
            else:
                start = _ts(since)
                rows = c.execute("SELECT * FROM orders o WHERE status = 'Submitted' OR created_at >= ? OR EXISTS ("
                                 "SELECT 1 FROM executions e WHERE e.order_id = o.order_id AND e.at >= ?) "
                                 "ORDER BY order_id", (start, start))
            return [_status_record(o) for o in rows]

    def open_orders(self) -> list[OrderStatus]:
        return [o for o in self.orders() if not o.is_done]

    # -- fills and the account --

    def _fill(self, c, k: Contract, side: str, qty: Decimal, price: Decimal, order_ref: str,
              order_id: int, perm_id: int, commission_delay: int = 0) -> Execution:
        """Record one execution and apply it to position, cash and commission: all or nothing,
        because the caller's transaction commits them together."""
        exec_id = make_exec_id(self._meta(c, "exec_prefix"), self._counter(c, "next_exec"))
        commission = self._commission(c, k, qty, price)
        at = _ts(self._now(c))
        c.execute("INSERT INTO executions (exec_id, base_id, order_id, perm_id, order_ref, code,"
                  " side, quantity, price, at, commission, polls_left) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  (exec_id, exec_id.rpartition(".")[0], order_id, perm_id, order_ref, k.code,
                   side, str(qty), str(price), at, str(commission), commission_delay))
        self._trade(c, k, signed(side, qty), price, exec_id)
        self._move_cash(c, k.currency, -commission, "commission", exec_id)
        return self._execution(c, exec_id, reveal=commission_delay == 0)

    def _trade(self, c, k: Contract, qty: Decimal, price: Decimal, ref: str) -> None:
        """Change the position by signed `qty` at `price`: futures roll their mark into
        unsettled P&L first; shares pay for themselves in cash."""
        position, avg, mark, unsettled = self._position(c, k.code)
        if k.sec_type == "FUT":
            unsettled += variation(position, mark, price, k.multiplier)
        else:
            self._move_cash(c, k.currency, -qty * price * k.multiplier, "trade", ref)
        self._save_position(c, k.code, position + qty, average_price(position, avg, qty, price),
                            price, unsettled)

    @staticmethod
    def _position(c, code: str) -> tuple[Decimal, Decimal, Decimal | None, Decimal]:
        r = c.execute("SELECT * FROM positions WHERE code = ?", (code,)).fetchone()
        if r is None:
            return ZERO, ZERO, None, ZERO
        return (Decimal(r["quantity"]), Decimal(r["avg_price"]), _dec(r["mark"]),
                Decimal(r["unsettled"]))

    @staticmethod
    def _save_position(c, code, quantity, avg, mark, unsettled) -> None:
        c.execute("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)",
                  (code, str(quantity), str(avg), None if mark is None else str(mark),
                   str(unsettled)))

    def _move_cash(self, c, currency: str, amount: Decimal, kind: str, ref: str,
                   at: dt.datetime | None = None) -> None:
        if amount == 0:
            return
        r = c.execute("SELECT amount FROM cash WHERE currency = ?", (currency,)).fetchone()
        balance = (ZERO if r is None else Decimal(r[0])) + amount
        c.execute("INSERT OR REPLACE INTO cash VALUES (?, ?)", (currency, str(balance)))
        c.execute("INSERT INTO cash_journal (at, currency, amount, kind, ref) "
                  "VALUES (?,?,?,?,?)", (_ts(at or self._now(c)), currency, str(amount), kind, ref))

    def _move_once(self, c, currency: str, amount: Decimal, kind: str, ref: str) -> Moved:
        """Move cash, once per reference: a reference the journal knows is that line (`same_movement`)."""
        if ref:
            known = c.execute("SELECT * FROM cash_journal WHERE ref = ? AND kind IN "
                              "('deposit', 'withdrawal', 'transfer', 'interest', 'fee') ORDER BY seq LIMIT 1",
                              (ref,)).fetchone()
            if known is not None:
                line = _journal_line(known)
                same_movement(line, currency, amount, kind)
                return Moved(line, False)
        self._move_cash(c, currency, amount, kind, ref)
        return Moved(_journal_line(c.execute("SELECT * FROM cash_journal ORDER BY seq DESC LIMIT 1").fetchone()), True)

    def deposit(self, currency: str, amount: Decimal, kind: str = "deposit", ref: str = "") -> Moved:
        """Cash arriving (amount > 0) or leaving (< 0) without a trade: a deposit, a withdrawal,
        a transfer between accounts. No execution: only reconciliation can find it. With the
        broker's reference `ref`, once (`_move_once`)."""
        amount = Decimal(amount)
        if amount == 0:
            raise BrokerError("a deposit of 0 moves nothing")
        with self._tx() as c:
            return self._move_once(c, currency.upper(), amount, kind, ref)

    def transfer_in(self, contract: str | Contract, signed_qty: Decimal, price: Decimal | None = None,
                    cost: Decimal | None = None) -> None:
        """A position arriving without an execution (a transfer from another broker, a position
        opened on another platform, a delivery at expiry), or leaving (signed_qty < 0 on a long).

        No cash moves and no execution is reported. Futures: the existing position is first
        rolled from its mark to `price` (the contract's current price by default) into unsettled
        P&L, then the position changes and is marked at `price`. Shares: the average cost takes
        the arriving units at `cost` per unit (default: `price`). This is also how a test or a
        user seeds an account that already holds positions before tradeledger first connects."""
        signed_qty = Decimal(signed_qty)
        if signed_qty == 0:
            raise BrokerError("a transfer needs a non-zero quantity")
        with self._tx() as c:
            k = (self._register(c, contract) if isinstance(contract, Contract)
                 else self._known(c, contract))
            price = self._price(c, k.code) if price is None else Decimal(price)
            if price is None:
                raise BrokerError(f"no market price for {k.code}: give a price")
            if self._price(c, k.code) is None:  # the contract now has a market
                at = _ts(self._now(c))
                c.execute("INSERT OR REPLACE INTO prices VALUES (?, ?, ?)", (k.code, str(price), at))
                c.execute("INSERT INTO price_history (code, price, at) VALUES (?, ?, ?)",
                          (k.code, str(price), at))
            position, avg, mark, unsettled = self._position(c, k.code)
            if k.sec_type == "FUT":
                unsettled += variation(position, mark, price, k.multiplier)
            unit_cost = price if cost is None else Decimal(cost)
            self._save_position(c, k.code, position + signed_qty,
                                average_price(position, avg, signed_qty, unit_cost), price, unsettled)

    def declare_dividend(self, code: str, per_share: Decimal, withholding: Decimal = ZERO,
                         pay_date: dt.date | None = None) -> Decimal:
        """Today (the exchange's clock) is the ex-date: the position held at the end of yesterday
        (today's executions taken out) is entitled to `per_share`, paid on `pay_date` (default:
        today) by `pay_due_dividends`. Returns the entitled shares."""
        with self._tx() as c:
            k = self._known(c, code)
            if k.sec_type == "FUT":
                raise BrokerError(f"{code} is a future: it pays no dividend")
            today = self._now(c).date()
            pay = pay_date or today
            if pay < today:
                raise BrokerError(f"pay date {pay} is before the ex-date {today}")
            start = _ts(dt.datetime.combine(today, dt.time(0), dt.timezone.utc))
            shares = self._position(c, code)[0] - sum(
                (signed(r["side"], Decimal(r["quantity"])) for r in c.execute(
                    "SELECT side, quantity FROM executions WHERE code = ? AND at >= ? AND superseded = 0",
                    (code, start))), ZERO)
            c.execute("INSERT OR IGNORE INTO dividends (code, ex_date, pay_date, shares, per_share, withholding) "
                      "VALUES (?,?,?,?,?,?)", (code, today.isoformat(), pay.isoformat(), str(shares),
                                               str(Decimal(per_share)), str(Decimal(withholding))))
        self.pay_due_dividends()
        return shares

    def declared_dividends(self) -> list[tuple[str, dt.date, dt.date, Decimal, Decimal]]:
        """(ticker, ex-date, pay date, per share, withholding) of every dividend declared here."""
        with self._tx() as c:
            return [(r["code"], dt.date.fromisoformat(r["ex_date"]), dt.date.fromisoformat(r["pay_date"]),
                     Decimal(r["per_share"]), Decimal(r["withholding"]))
                    for r in c.execute("SELECT * FROM dividends ORDER BY ex_date, code")]

    def pay_due_dividends(self) -> Decimal:
        """Pay every declared dividend whose pay date has come (a short pays it, without tax); the
        broker's record (kinds `dividend` and `withholding`) names the ticker. Returns the net paid.
        Moving the clock (`set_clock`, `advance_clock`) and a snapshot pay them too, as a broker pays
        on the pay date whoever looks; this is for a clock that follows the real one."""
        with self._tx() as c:
            return self._pay_due(c)

    def _time_passed(self, c) -> None:
        self._pay_due(c)

    def _pay_due(self, c) -> Decimal:
        total = ZERO
        now = self._now(c)
        for r in c.execute("SELECT * FROM dividends WHERE paid = 0 AND pay_date <= ? ORDER BY ex_date, code",
                           (now.date().isoformat(),)).fetchall():
            k = self._known(c, r["code"])
            gross = Decimal(r["shares"]) * Decimal(r["per_share"])
            tax = (gross * Decimal(r["withholding"])).quantize(Decimal("0.01")) if gross > 0 else ZERO
            # paid on its pay date even when the clock jumped past it: reconciliation knows a
            # dividend by the day the broker paid it
            pay = dt.date.fromisoformat(r["pay_date"])
            at = now if pay == now.date() else dt.datetime.combine(pay, dt.time(0), UTC)
            self._move_cash(c, k.currency, gross, "dividend", r["code"], at)
            self._move_cash(c, k.currency, -tax, "withholding", r["code"], at)
            c.execute("UPDATE dividends SET paid = 1 WHERE code = ? AND ex_date = ?", (r["code"], r["ex_date"]))
            total += gross - tax
        return total

    def split(self, code: str, new: Decimal, old: Decimal, cash_in_lieu: Decimal | None = None) -> Decimal:
        """Split (or reverse split) a share position today: units x new/old, average price x
        old/new. A fraction of a share left over is sold for cash in lieu at `cash_in_lieu` per new
        share (the cash rounded to the cent, kind `cash_in_lieu`); without that price a split that
        leaves a fraction is refused. Recorded (`declared_splits`). Returns the shares held after."""
        new, old = Decimal(new), Decimal(old)
        with self._tx() as c:
            k = self._known(c, code)
            if k.sec_type == "FUT":
                raise BrokerError(f"{code} is a future: it does not split")
            position, avg, mark, unsettled = self._position(c, code)
            exact = position * new / old
            after = exact.to_integral_value(rounding=ROUND_FLOOR) if exact > 0 else exact
            if after != exact and cash_in_lieu is None:
                raise BrokerError(f"split {new}:{old} leaves {exact} shares of {code}: not whole; give the "
                                  f"cash-in-lieu price")
            if after != exact:
                self._move_cash(c, k.currency, ((exact - after) * Decimal(cash_in_lieu)).quantize(Decimal("0.01")),
                                "cash_in_lieu", code)
            self._save_position(c, code, after, avg * old / new, mark, unsettled)
            price = self._price(c, code)
            if price is not None:
                c.execute("UPDATE prices SET price = ? WHERE code = ?", (str(price * old / new), code))
            c.execute("INSERT OR REPLACE INTO splits VALUES (?, ?, ?, ?, ?)",
                      (code, self._now(c).date().isoformat(), str(new), str(old),
                       None if cash_in_lieu is None else str(Decimal(cash_in_lieu))))
            return after

    def declared_splits(self) -> list[tuple[str, dt.date, Decimal, Decimal, Decimal | None]]:
        """(ticker, date, new, old, cash in lieu per new share or None) of every split made here."""
        with self._tx() as c:
            return [(r["code"], dt.date.fromisoformat(r["date"]), Decimal(r["new"]), Decimal(r["old"]),
                     _dec(r["cash_in_lieu"])) for r in c.execute("SELECT * FROM splits ORDER BY date, code")]

    def account_cash(self, currency: str, amount: Decimal, kind: str, ref: str = "") -> Moved:
        """Interest (signed) or a fee (negative) on the account as a whole; with `ref`, once (`_move_once`)."""
        if kind not in ("interest", "fee"):
            raise BrokerError(f"account cash kind {kind!r} must be interest or fee")
        with self._tx() as c:
            return self._move_once(c, currency, Decimal(amount), kind, ref)

    def external_trade(self, contract: str | Contract, signed_qty: Decimal,
                       price: Decimal | None = None) -> Execution:
        """A trade made at the broker's own screen: an execution with no order of ours
        (order_ref "", order id 0), which a late-commission fault also applies to."""
        signed_qty = Decimal(signed_qty)
        if signed_qty == 0:
            raise BrokerError("an external trade needs a non-zero quantity")
        with self._tx() as c:
            k = (self._register(c, contract) if isinstance(contract, Contract)
                 else self._known(c, contract))
            price = self._price(c, k.code) if price is None else Decimal(price)
            if price is None:
                raise BrokerError(f"no market price for {k.code}")
            arg = self._take_fault(c, "late_commission")
            side = BUY if signed_qty > 0 else "SELL"
            return self._fill(c, k, side, abs(signed_qty), price, "", 0,
                              self._counter(c, "next_perm_id"), arg["n_polls"] if arg else 0)

    def settle(self, code: str, price: Decimal, date: dt.date | None = None) -> Decimal:
        """The daily settlement of one contract: roll the position to `price` and move the
        contract's unsettled P&L into cash. Returns the cash moved. Settling the same
        (code, date) again at the same price is a no-op; at another price it is refused."""
        price = Decimal(price)
        with self._tx() as c:
            k = self._known(c, code)
            date = date or self._now(c).date()
            done = c.execute("SELECT price FROM settlements WHERE code = ? AND date = ?",
                             (code, date.isoformat())).fetchone()
            if done is not None:
                if Decimal(done[0]) != price:
                    raise BrokerError(f"{code} already settled on {date} at {done[0]}")
                return ZERO
            c.execute("INSERT INTO settlements VALUES (?, ?, ?)",
                      (code, date.isoformat(), str(price)))
            # the day's settlement is its last price: a daily bar closes there (historical data)
            now = self._now(c)
            at = now if now.date() == date else dt.datetime.combine(date, dt.time(23, 59, 59), tzinfo=UTC)
            c.execute("INSERT INTO price_history (code, price, at) VALUES (?, ?, ?)", (code, str(price), _ts(at)))
            position, avg, mark, unsettled = self._position(c, code)
            if k.sec_type != "FUT":  # shares only take the mark
                self._save_position(c, code, position, avg, price, unsettled)
                return ZERO
            cash = unsettled + variation(position, mark, price, k.multiplier)
            self._save_position(c, code, position, avg, price, ZERO)
            self._move_cash(c, k.currency, cash, "variation", f"{code} {date}")
            return cash

    def expire(self, code: str, final_price: Decimal, date: dt.date | None = None) -> Decimal:
        """A futures contract expires: the final settlement at `final_price` moves the last
        variation margin into cash, and the position disappears. No execution is reported."""
        cash = self.settle(code, final_price, date)
        with self._tx() as c:
            if self._known(c, code).sec_type != "FUT":
                raise BrokerError(f"{code} is not a future: it does not expire")
            c.execute("DELETE FROM positions WHERE code = ?", (code,))
            c.execute("DELETE FROM prices WHERE code = ?", (code,))
        return cash

    def settlement_prices(self, code: str) -> list[tuple[dt.date, Decimal]]:
        with self._tx() as c:
            return [(dt.date.fromisoformat(r[0]), Decimal(r[1])) for r in c.execute(
                "SELECT date, price FROM settlements WHERE code = ? ORDER BY date", (code,))]

    # -- reading the account --

    def executions(self, since: dt.datetime | None = None) -> list[Execution]:
        """Every execution, corrections included as extra reports (as IB sends them).
        Each call counts down late commissions; a duplicate fault repeats every report."""
        with self._tx() as c:
            memory = self._memory_since(c)  # a day window forgets the executions of earlier days
            if memory is not None and (since is None or since < memory):
                since = memory
            if since is None:
                rows = c.execute("SELECT * FROM executions ORDER BY seq").fetchall()
            else:
                rows = c.execute("SELECT * FROM executions WHERE at >= ? ORDER BY seq", (_ts(since),)).fetchall()
            contracts: dict[str, Contract] = {}  # one read per contract, not per execution
            out = [self._from_row(c, r, contracts) for r in rows]
            c.execute("UPDATE executions SET polls_left = polls_left - 1 WHERE polls_left > 0")
            if self._take_fault(c, "duplicate_executions") is not None:
                out = [e for e in out for _ in (0, 1)]
            return out

    def _execution(self, c, exec_id: str, reveal: bool | None = None) -> Execution:
        r = c.execute("SELECT * FROM executions WHERE exec_id = ?", (exec_id,)).fetchone()
        return self._from_row(c, r, {}, reveal)

    def _from_row(self, c, r, contracts: dict, reveal: bool | None = None) -> Execution:
        k = contracts.get(r["code"])
        if k is None:
            k = contracts[r["code"]] = self._known(c, r["code"])
        known = r["polls_left"] == 0 if reveal is None else reveal
        return Execution(
            exec_id=r["exec_id"], account=self.account, contract=k, side=r["side"],
            quantity=Decimal(r["quantity"]), price=Decimal(r["price"]), time=_parse_ts(r["at"]),
            order_ref=r["order_ref"], perm_id=r["perm_id"], broker_order_id=r["order_id"],
            commission=Decimal(r["commission"]) if known else None,
            commission_currency=k.currency)

    def correct_execution(self, exec_id: str, new_price: Decimal | None = None,
                          new_qty: Decimal | None = None) -> Execution:
        """Report a corrected version of a fill (suffix + 1, reported at the current clock)
        and replace the old version in the exchange's own position, cash and commission."""
        with self._tx() as c:
            base = exec_id.rpartition(".")[0] or exec_id
            old = c.execute("SELECT * FROM executions WHERE base_id = ? AND superseded = 0",
                            (base,)).fetchone()
            if old is None:
                raise BrokerError(f"no execution {exec_id}")
            k = self._known(c, old["code"])
            q0, p0 = signed(old["side"], Decimal(old["quantity"])), Decimal(old["price"])
            p1 = p0 if new_price is None else Decimal(new_price)
            qty1 = Decimal(old["quantity"]) if new_qty is None else Decimal(new_qty)
            if qty1 <= 0:
                raise BrokerError("a corrected quantity must be positive")
            q1 = signed(old["side"], qty1)
            new_id = next_revision(old["exec_id"])
            position, avg, mark, unsettled = self._position(c, k.code)
            if k.sec_type == "FUT":
                # The fill's P&L so far is q x (mark - price): swap the old version for the new.
                m = p1 if mark is None else mark
                unsettled += (q1 * (m - p1) - q0 * (m - p0)) * k.multiplier
            else:
                self._move_cash(c, k.currency, -(q1 * p1 - q0 * p0) * k.multiplier,
                                "correction", new_id)
                if position != 0 and position + q1 - q0 != 0:
                    avg = (avg * position + q1 * p1 - q0 * p0) / (position + q1 - q0)
            self._save_position(c, k.code, position + q1 - q0, avg, mark, unsettled)
            c0, c1 = Decimal(old["commission"]), self._commission(c, k, qty1, p1)
            self._move_cash(c, k.currency, c0 - c1, "correction", new_id)
            c.execute("UPDATE executions SET superseded = 1 WHERE seq = ?", (old["seq"],))
            c.execute("INSERT INTO executions (exec_id, base_id, order_id, perm_id, order_ref,"
                      " code, side, quantity, price, at, commission) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (new_id, base, old["order_id"], old["perm_id"], old["order_ref"], k.code,
                       old["side"], str(qty1), str(p1), _ts(self._now(c)), str(c1)))
            return self._execution(c, new_id)

    def revise_commission(self, exec_id: str, commission: Decimal) -> Execution:
        """The broker reports a different commission for the same execution (same execId, no new
        version): the account is charged the difference, and every later report carries it."""
        commission = Decimal(commission)
        with self._tx() as c:
            row = c.execute("SELECT * FROM executions WHERE exec_id = ? AND superseded = 0", (exec_id,)).fetchone()
            if row is None:
                raise BrokerError(f"no live execution {exec_id}")
            k = self._known(c, row["code"])
            c.execute("UPDATE executions SET commission = ? WHERE seq = ?", (str(commission), row["seq"]))
            self._move_cash(c, k.currency, Decimal(row["commission"]) - commission, "commission", exec_id)
            return self._execution(c, exec_id)

    def positions(self) -> list[BrokerPosition]:
        """Non-zero positions; avg_cost as IB reports it (price x multiplier for futures)."""
        with self._tx() as c:
            return self._positions(c)

    def _positions(self, c) -> list[BrokerPosition]:
        out = []
        for r in c.execute("SELECT * FROM positions ORDER BY code").fetchall():
            if Decimal(r["quantity"]) != 0:
                k = self._known(c, r["code"])
                # An average is a derived figure: reported to 9 places, as IB's adapter does.
                avg_cost = (Decimal(r["avg_price"]) * k.multiplier).quantize(NINE_PLACES)
                mark = _dec(r["mark"]) if k.sec_type == "FUT" else None
                out.append(BrokerPosition(self.account, k, Decimal(r["quantity"]), avg_cost.normalize(), mark))
        return out

    def cash(self) -> dict[str, Decimal]:
        with self._tx() as c:
            return self._cash(c)

    @staticmethod
    def _cash(c) -> dict[str, Decimal]:
        return {r[0]: Decimal(r[1]) for r in c.execute("SELECT * FROM cash ORDER BY currency")}

    def cash_journal(self) -> list[tuple[dt.datetime, str, Decimal, str, str]]:
        """Every cash movement: (time, currency, amount, kind, reference)."""
        return [(j.at, j.currency, j.amount, j.kind, j.ref) for j in self.journal_lines()]

    def journal_lines(self) -> list[JournalLine]:
        """Every cash movement with its line number, in order."""
        with self._tx() as c:
            return [_journal_line(r) for r in c.execute("SELECT * FROM cash_journal ORDER BY seq")]

    def unsettled_pnl(self, include_open: bool = False) -> dict[str, Decimal]:
        """Futures P&L booked at fills but not yet settled into cash, per currency.
        With include_open, also the open positions marked to the current price (closer to
        IB's real-time FuturesPNL; the ledger books neither until a fill or a settlement)."""
        with self._tx() as c:
            return self._unsettled(c, include_open)

    def _unsettled(self, c, include_open: bool = False) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for r in c.execute("SELECT * FROM positions ORDER BY code").fetchall():
            k = self._known(c, r["code"])
            if k.sec_type != "FUT":
                continue
            amount = Decimal(r["unsettled"])
            price = self._price(c, k.code)
            if include_open and price is not None:
                amount += variation(Decimal(r["quantity"]), _dec(r["mark"]), price, k.multiplier)
            out[k.currency] = out.get(k.currency, ZERO) + amount
        return out

    def snapshot(self) -> AccountSnapshot:
        """Positions, cash, open orders and unsettled futures P&L, read in one transaction."""
        with self._tx() as c:
            self._pay_due(c)  # on a clock that follows the real one, the pay date comes by itself
            opened = c.execute("SELECT * FROM orders WHERE status = 'Submitted' "
                               "ORDER BY order_id").fetchall()
            return AccountSnapshot(
                account=self.account, taken_at=self._now(c), positions=tuple(self._positions(c)),
                cash=tuple(self._cash(c).items()),
                open_orders=tuple(_status_record(o) for o in opened),
                unsettled_pnl=tuple(sorted(self._unsettled(c).items())),
                cash_journal=c.execute("SELECT COALESCE(MAX(seq), 0) FROM cash_journal").fetchone()[0])

    # -- faults --

    def fault_partial_fill(self, ratio: Decimal | None = None, qty: Decimal | None = None) -> None:
        """The next accepted order fills only `qty` (or floor(quantity x ratio)) and the rest
        rests, held, until cancel_order or release_order."""
        if (ratio is None) == (qty is None):
            raise ValueError("give exactly one of ratio or qty")
        self._add_fault("partial_fill", {"ratio": str(ratio)} if qty is None
                        else {"qty": str(qty)})

    def fault_duplicate_executions(self, n_calls: int = 1) -> None:
        """The next n executions() calls report every execution twice."""
        self._add_fault("duplicate_executions", {}, n_calls)

    def fault_late_commission(self, n_polls: int = 1) -> None:
        """Every fill of the next order (or external trade) reports commission None for the
        next n_polls executions() calls, then the real amount."""
        self._add_fault("late_commission", {"n_polls": int(n_polls)})

    def fault_disconnect(self, n_calls: int = 1) -> None:
        """The next n broker calls (connect included) fail with BrokerDisconnected, undone."""
        self._add_fault("disconnect", {}, n_calls)

    def fault_lost_reply(self, n_calls: int = 1) -> None:
        """The next n broker calls are carried out, then fail with BrokerDisconnected: the
        request reached the exchange but its answer was lost."""
        self._add_fault("lost_reply", {}, n_calls)



def _validate(r: OrderRequest) -> None:
    """Refuse what no exchange would accept, before anything is stored."""
    if r.side not in SIDES:
        raise BrokerError(f"unknown side {r.side!r}")
    if not isinstance(r.quantity, Decimal) or r.quantity <= 0:
        raise BrokerError(f"order quantity must be a positive Decimal, not {r.quantity!r}")
    if r.order_type == LIMIT and r.limit_price is None:
        raise BrokerError("a limit order needs a limit price")
    if r.order_type not in (MARKET, LIMIT):
        raise BrokerError(f"unsupported order type {r.order_type!r}")


def _journal_line(r: sqlite3.Row) -> JournalLine:
    return JournalLine(r["seq"], _parse_ts(r["at"]), r["currency"], Decimal(r["amount"]), r["kind"], r["ref"])


def _status_record(o: sqlite3.Row) -> OrderStatus:
    return OrderStatus(
        order_ref=o["order_ref"], broker_order_id=o["order_id"], perm_id=o["perm_id"],
        contract_code=o["code"], side=o["side"], quantity=Decimal(o["quantity"]),
        filled=Decimal(o["filled"]), status=o["status"], reason=o["reason"])
