"""Every ledger entry tradeledger books is built here: pure functions, no database.

Futures follow the mark chain (DESIGN.md). Each holder's position in a contract (a strategy, or
None for the unattributed bucket, `holders.Holder`) is held at zero cost and has a *mark*, its
last settlement or fill price. A trade first marks the existing position to the trade price,

    variation margin = position x (price - mark) x multiplier,

booked `Income:Trading:<holder>` against `Assets:Broker:<Acct>:Cash` in the contract's currency;
then the position changes, and the whole new position is marked at the trade price. A trade
that crosses zero is a close of the old position plus an open of the new one, because
beancount cannot reduce a position through zero. A settlement marks every position to the
settlement price the same way.

Shares are lots at cost labelled with the fill id (intraday lots never merge); a reduction names
the lots it closes, oldest first, and realizes (price - cost) x units into Income:Trading.

Commissions are postings of their own: Expenses:Commissions:<holder> against cash.

Three shared builders make every entry that moves positions or commissions:
`trade_between` (one trade at one price between holders: marks, position changes, lots, and
the holdings after it), `commission_split` (a commission pro rata to the holders' quantities,
exact to the cent) and `link` (a beancount link from any id). The entries:

    kind          builder            booked by
    fill          fill_entry         trading/fills.py
    commission    commission_entry   trading/commissions.py (a commission reported late)
    commission    commission_change_entry   trading/commissions.py (the broker changed it)
    commission    commission_follow_entry   trading/commissions.py (an attribution reversed)
    cross         cross_entry        trading/orders.py (internal cross at the reference price)
    fill          correction_entry   trading/corrections.py (a corrected execution)
    settlement    settlement_entry   trading/marking.py
    expiry        expiry_entry       futures/expiry.py (final settlement of an expired future)
    attribute, adopt, transfer       transfer_entry   trust/adjust.py
    manual-close  close_entry        trust/adjust.py
    cash-adjust   cash_entry         trust/adjust.py
    opening       opening_entry      trust/opening.py (what the broker holds at the first look)
    surplus       surplus_entry      trust/adopt.py (a later surplus into Unattributed)
    dividend, dividend-paid          dividend_ex_entry, dividend_pay_entry   accounting/actions.py
    split         split_entry        accounting/actions.py
    interest, fee account_cash_entry accounting/actions.py
    reversal      ledger.model.reversal_of, booked by Ledger.reverse

The records these entries are built from stay beside the code that reads them: `arrivals.py`
(the opening's plan, what arrived at which price) and `corporate.py` (dividends, splits,
interest and fees, and how each is booked, in words).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from tradeledger.broker.base import AccountSnapshot, BrokerPosition, Contract, Execution
from tradeledger.engine.accounting.arrivals import OpenedCash, OpenedPosition, OpeningPlan, arrival_price, unbookable
from tradeledger.engine.accounting.corporate import AccountCash, Dividend, Split
from tradeledger.engine.accounting.holders import Holder, display, from_column, sort_key, to_column
from tradeledger.engine.trading.netting import allocate_commission
from tradeledger.errors import AdjustError, CorporateActionError, CorrectionUnsupported
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Cost, Posting, Transaction
from tradeledger.ledger.numbers import money_exact, plain

ZERO = Decimal(0)
NANO = Decimal("1e-9")


@dataclass(frozen=True)
class Holding:
    """A holder's current position in one contract: units, mark (futures), open lots (shares)."""

    position: Decimal = ZERO
    mark: Decimal | None = None
    lots: tuple[tuple[Cost, Decimal], ...] = ()


def _sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


# `\w` on a str pattern is exactly `ch.isalnum() or ch == "_"`: one C pass instead of a Python
# loop over the characters (a fill sync calls this once per execution).
_NOT_IN_LINK = re.compile(r"[^\w./-]")


def link(text: str) -> str:
    """A beancount link made of any id (characters a link cannot hold become '-')."""
    return _NOT_IN_LINK.sub("-", text)


def key_tail(key: str) -> str:
    """The last part of an idempotency key (`adjust:transfer:DU1:ab12` -> `ab12`): its label."""
    return key.rsplit(":", 1)[-1]


# -- postings of one holder -----------------------------------------------------------------------

def mark_postings(chart: Chart, holder: Holder, contract: Contract, holding: Holding,
                  price: Decimal) -> list[Posting]:
    """Variation margin of a futures position from its mark to `price`."""
    if holding.position == 0 or contract.sec_type != "FUT":
        return []
    if holding.mark is None:
        raise ValueError(f"{contract.code}: position of {display(holder)} has no mark")
    vm = holding.position * (price - holding.mark) * contract.multiplier
    return vm_postings(chart, holder, contract.currency, vm)


def vm_postings(chart: Chart, holder: Holder, currency: str, amount: Decimal) -> list[Posting]:
    """Variation margin `amount` into the broker's cash, out of the holder's trading income."""
    if amount == 0:
        return []
    return [Posting(chart.cash, amount, currency), Posting(chart.trading(holder), -amount, currency)]


def position_postings(account: str, code: str, currency: str, before: Decimal, change: Decimal) -> list[Posting]:
    """A futures position change at zero cost, split into close + open if it crosses zero."""
    zero = Cost(ZERO, currency)
    after = before + change
    if change == 0:
        return []
    if before != 0 and after != 0 and _sign(before) != _sign(after):
        return [Posting(account, -before, code, zero), Posting(account, after, code, zero)]
    return [Posting(account, change, code, zero)]


def futures_trade(chart: Chart, holder: Holder, contract: Contract, holding: Holding,
                  qty: Decimal, price: Decimal) -> list[Posting]:
    return mark_postings(chart, holder, contract, holding, price) + position_postings(
        chart.holdings(holder), contract.code, contract.currency, holding.position, qty)


def shares_trade(chart: Chart, holder: Holder, contract: Contract, holding: Holding,
                 qty: Decimal, price: Decimal, date: dt.date, label: str) -> list[Posting]:
    account, currency = chart.holdings(holder), contract.currency
    postings = [Posting(chart.cash, -qty * price * contract.multiplier, currency)]
    remaining = qty
    for cost, units in holding.lots:  # oldest first; all open lots share one sign
        if remaining == 0 or _sign(units) == _sign(remaining):
            break
        take = _sign(remaining) * min(abs(units), abs(remaining))
        postings.append(Posting(account, take, contract.code, cost))
        gain = -take * (price * contract.multiplier - cost.number)  # cost is per unit, multiplier in
        if gain != 0:
            postings.append(Posting(chart.trading(holder), -gain, currency))
        remaining -= take
    if remaining != 0:
        postings.append(Posting(account, remaining, contract.code,
                                Cost(price * contract.multiplier, currency, date, label)))
    return postings


def trade_postings(chart: Chart, holder: Holder, contract: Contract, holding: Holding,
                   qty: Decimal, price: Decimal, date: dt.date, label: str) -> list[Posting]:
    """The postings of one holder's share of a trade (signed qty)."""
    if qty == 0:
        return []
    if contract.sec_type == "FUT":
        return futures_trade(chart, holder, contract, holding, qty, price)
    return shares_trade(chart, holder, contract, holding, qty, price, date, label)


def commission_postings(chart: Chart, holder: Holder, amount: Decimal, currency: str) -> list[Posting]:
    if amount == 0:
        return []
    return [Posting(chart.commissions(holder), amount, currency), Posting(chart.cash, -amount, currency)]


def after_trade(contract: Contract, holding: Holding, postings: list[Posting], qty: Decimal,
                price: Decimal) -> Holding:
    """The holding after a trade: futures re-marked at the price; shares lots from the postings."""
    position = holding.position + qty
    if contract.sec_type == "FUT":
        return Holding(position, price if position != 0 else None)
    lots = {cost: units for cost, units in holding.lots}
    for p in postings:
        if p.commodity == contract.code and p.cost is not None:
            lots[p.cost] = lots.get(p.cost, ZERO) + p.units
    ordered = tuple((c, u) for c, u in lots.items() if u != 0)
    return Holding(position, None, ordered)


# -- the shared builders --------------------------------------------------------------------------

def trade_between(chart: Chart, contract: Contract, holdings: dict, legs, price: Decimal, date: dt.date,
                  label: str, commissions: dict | None = None,
                  commission_currency: str = "") -> tuple[list[Posting], dict]:
    """One trade at one price among holders: `legs` are (holder, signed qty) in booking order.

    Each holder's existing position is first marked to the price (futures) or its lots reduced
    oldest first (shares), then changed; `commissions` (holder -> amount) adds each holder's
    commission after its leg. Returns the postings and the holdings after (holder -> Holding)."""
    postings: list[Posting] = []
    after = dict(holdings)
    for holder, qty in legs:
        holding = after.get(holder, Holding())
        trade = trade_postings(chart, holder, contract, holding, qty, price, date, label)
        postings += trade
        after[holder] = after_trade(contract, holding, trade, qty, price)
        if commissions is not None:
            postings += commission_postings(chart, holder, commissions.get(holder, ZERO), commission_currency)
    return postings, after


def commission_split(commission: Decimal | None, quantities) -> dict:
    """A commission split among holders pro rata to their (signed) quantities, summing to it to
    the cent (largest remainder); {} while it is pending (None)."""
    if commission is None:
        return {}
    # Split in the commission's own smallest unit as its value has it, never as it was written: a
    # broker's 5.630 (1126 shares x 0.005) is split in cents like 5.63, as the stored fill reads
    # back. Only booking splits: nothing splits a booked commission again (a correction reverses
    # the stored entries, reports/exposure.py reads the booked parts), because a ledger booked
    # before this rule holds 3.795 + 1.835 where it gives 3.80 + 1.83.
    commission = plain(commission)
    if commission.as_tuple().exponent > -2:
        commission = commission.quantize(Decimal("0.01"))
    weights = {to_column(holder): abs(qty) for holder, qty in quantities}
    return {from_column(k): v for k, v in allocate_commission(commission, weights).items()}


# -- fills, commissions, crosses, settlements ----------------------------------------------------

@dataclass(frozen=True)
class FillShare:
    """One holder's part of a broker fill."""

    holder: Holder
    qty: Decimal  # signed
    commission: Decimal | None  # None: pending


def fill_entry(chart: Chart, contract: Contract, exec_key: str, price: Decimal, time: dt.datetime,
               shares: list[FillShare], holdings: dict, commission_currency: str, order_ref: str,
               narration: str) -> tuple[Transaction, dict]:
    """The ledger entry of one execution and the holdings after it (holdings: holder -> Holding)."""
    pending = any(s.commission is None for s in shares)
    commissions = {s.holder: s.commission for s in shares if s.commission is not None}
    postings, after = trade_between(chart, contract, holdings, [(s.holder, s.qty) for s in shares], price,
                                    time.date(), exec_key, commissions, commission_currency)
    meta = (("exec", exec_key), ("price", str(price)), ("contract", contract.code),
            ("commission", "pending" if pending else "booked"), ("order-ref", order_ref or "none"))
    txn = Transaction(time=time, kind="fill", narration=narration, postings=tuple(postings),
                      links=(f"fill-{link(exec_key)}",), meta=meta, key=f"fill:{chart.broker_account}:{exec_key}")
    return txn, after


def commission_entry(chart: Chart, exec_key: str, time: dt.datetime, parts: dict, currency: str,
                     contract_code: str) -> Transaction:
    postings: list[Posting] = []
    for holder, amount in parts.items():
        postings += commission_postings(chart, holder, amount, currency)
    if not postings:  # a zero commission still closes the pending state: book nothing, record it
        raise ValueError("zero commission: nothing to book")
    return Transaction(time=time, kind="commission", narration=f"Commission {exec_key}", postings=tuple(postings),
                       links=(f"fill-{link(exec_key)}",), meta=(("contract", contract_code), ("exec", exec_key)),
                       key=f"commission:{chart.broker_account}:{exec_key}")


def booked_commissions(chart: Chart, sums: dict, currency: str) -> dict:
    """holder -> the commission some entries booked for it, from `Ledger.entry_sums` of those
    entries under Expenses:Commissions: (entry id -> (account, commodity) -> units) (pure)."""
    out: dict = {}
    for per_account in sums.values():
        for (account, commodity), units in per_account.items():
            if commodity == currency:
                holder = chart.strategy_of(account)
                out[holder] = out.get(holder, ZERO) + units
    return {h: v for h, v in out.items() if v != 0}


def _exact(amount: Decimal) -> str:
    """An amount exactly as it is, with at least cents (2 -> 2.00, 3.795 stays 3.795)."""
    return money_exact(amount)


def commission_change_entry(chart: Chart, exec_id: str, exec_key: str, time: dt.datetime, booked: dict,
                            parts: dict, currency: str, contract_code: str, old: Decimal, new: Decimal,
                            replaces: int) -> Transaction | None:
    """The broker reports another commission for a booked execution (same execId): one entry that
    takes back, holder by holder, what the entries still standing booked (`booked`, read back from
    their postings, never split again) and books the new commission's parts (pure). `replaces` is
    the entry it follows (the late commission it comes with the reversal of, or the fill): its key.
    None when there is nothing to post (both zero)."""
    postings = _rebased(chart, booked, parts, currency)
    if not postings:
        return None
    return Transaction(time=time, kind="commission", postings=tuple(postings),
                       narration=f"Commission {exec_id} changed by the broker: {_exact(old)} -> {_exact(new)} "
                                 f"{currency}",
                       links=(f"fill-{link(exec_key)}", f"entry-{replaces}"),
                       meta=(("contract", contract_code), ("exec", exec_id), ("commission-was", _exact(old)),
                             ("commission", _exact(new))),
                       key=f"commission:{chart.broker_account}:{exec_id}:after-{replaces}")


def commission_follow_entry(chart: Chart, exec_key: str, time: dt.datetime, booked: dict, parts: dict,
                            currency: str, contract_code: str, commission: Decimal, attribution: int,
                            reason: str) -> Transaction | None:
    """A fill's commission follows its position back when the attribution (entry `attribution`)
    that gave the position to a strategy is reversed (pure): one entry that takes back, holder by
    holder, what the fill's entries still standing booked (`booked`, read back) and books the
    commission's parts over the holders of the position now. Keyed by the attribution: it is
    reversed once, so this is booked once. None when there is nothing to post."""
    postings = _rebased(chart, booked, parts, currency)
    if not postings:
        return None
    return Transaction(time=time, kind="commission", postings=tuple(postings),
                       narration=f"Commission {exec_key} ({_exact(commission)} {currency}) follows its position: "
                                 f"attribution entry {attribution} reversed: {reason}",
                       links=(f"fill-{link(exec_key)}", f"entry-{attribution}"),
                       meta=(("contract", contract_code), ("exec", exec_key), ("commission", _exact(commission))),
                       key=f"commission:{chart.broker_account}:{exec_key}:follows-{attribution}")


def _rebased(chart: Chart, booked: dict, parts: dict, currency: str) -> list[Posting]:
    """Take back what was booked per holder, then book the parts (the order a reader checks)."""
    postings: list[Posting] = []
    for holder in sorted(booked, key=sort_key):
        postings += commission_postings(chart, holder, -booked[holder], currency)
    for holder in sorted(parts, key=sort_key):
        postings += commission_postings(chart, holder, parts[holder], currency)
    return postings


def cross_entry(chart: Chart, contract: Contract, holdings: dict, run_id: int, seller: str, buyer: str,
                quantity: Decimal, price: Decimal, time: dt.datetime, tag: str = "") -> tuple[Transaction, dict]:
    """An internal cross: `quantity` moves from seller to buyer at the run's reference price,
    zero-sum, with no broker order and no commission."""
    label = f"cross-{run_id}-{contract.code}-{seller}-{buyer}"
    postings, after = trade_between(chart, contract, holdings, ((seller, -quantity), (buyer, quantity)), price,
                                    time.date(), label)
    txn = Transaction(time=time, kind="cross", narration=f"Cross {contract.code} {seller} -> {buyer} "
                      f"{quantity} @ {price}", postings=tuple(postings),
                      links=(f"cross-{run_id}-{contract.code}",), meta=(("contract", contract.code), ("run", str(run_id))),
                      key=f"cross:{chart.broker_account}:{run_id}:{contract.code}:{seller}:{buyer}"
                      + (f":{tag}" if tag else ""))
    return txn, after


def mark_every_holder(chart: Chart, contract: Contract, holdings: dict, price: Decimal,
                      close: bool = False) -> tuple[list[Posting], dict]:
    """Every holder's futures position marked to `price` (its variation margin), and closed at
    that price when `close` (an expiry): the postings and the holdings after them."""
    postings: list[Posting] = []
    after = dict(holdings)
    for holder in sorted(holdings, key=sort_key):
        holding = holdings[holder]
        if holding.position == 0:
            continue
        postings += mark_postings(chart, holder, contract, holding, price)
        if close:
            postings += position_postings(chart.holdings(holder), contract.code, contract.currency,
                                          holding.position, -holding.position)
        after[holder] = Holding(ZERO, None) if close else Holding(holding.position, price)
    return postings, after


def settlement_key(chart: Chart, code: str, date: dt.date) -> str:
    """The one key of a contract's settlement on a day: a day is settled once."""
    return f"settle:{chart.broker_account}:{code}:{date.isoformat()}"


def settlement_entry(chart: Chart, contract: Contract, date: dt.date, time: dt.datetime, price: Decimal,
                     holdings: dict) -> tuple[Transaction | None, dict]:
    """Mark every holder's futures position to the settlement price; one entry per contract and day."""
    postings, after = mark_every_holder(chart, contract, holdings, price)
    if not postings:
        return None, after
    txn = Transaction(time=time, kind="settlement", narration=f"Settle {contract.code} {price}",
                      postings=tuple(postings), links=(f"settle-{contract.code}-{date.isoformat()}",),
                      meta=(("contract", contract.code), ("price", str(price))),
                      key=settlement_key(chart, contract.code, date))
    return txn, after



def expiry_entry(chart: Chart, contract: Contract, date: dt.date, time: dt.datetime, price: Decimal,
                 holdings: dict) -> tuple[Transaction | None, dict]:
    """A futures contract's expiry: every holder's position marked one last time to the final
    settlement price (variation margin, as a daily settlement) and closed at that price. No
    execution exists; one entry per contract."""
    postings, after = mark_every_holder(chart, contract, holdings, price, close=True)
    if not postings:
        return None, after
    txn = Transaction(time=time, kind="expiry", narration=f"Expiry {contract.code}: final settlement {price}",
                      postings=tuple(postings), links=(f"expiry-{contract.code}",),
                      meta=(("contract", contract.code), ("price", str(price)), ("last-trade", date.isoformat())),
                      key=f"expiry:{chart.broker_account}:{contract.code}")
    return txn, after

# -- corrections (trading/corrections.py explains the arithmetic) ---------------------------------

@dataclass(frozen=True)
class HolderCorrection:
    holder: Holder
    q_old: Decimal  # signed
    q_new: Decimal  # signed


@dataclass(frozen=True)
class OriginalFill:
    """The booked version of a fill that a correction replaces."""

    exec_key: str
    exec_id: str
    txn_id: int
    entry: Transaction
    quantity: Decimal  # unsigned, as reported
    price: Decimal
    date: dt.date
    # The entry of `adjust attribute` (or manual-close) that gave this unattributed fill to a
    # strategy, reversed with the fill: None when the fill was never attributed.
    attribution: Transaction | None = None


def rebooked_vm(chart: Chart, entries, currency: str) -> dict:
    """holder -> the variation margin the entries booked for it, read back from their
    Income:Trading postings (pure). A correction reverses these entries whole; the VM they booked
    on positions other than the fill's units (marked to the fill or transfer price) did not
    depend on the fill, so the corrected entry books it again, exactly as it was."""
    prefix = chart.trading(None).rsplit(":", 1)[0] + ":"
    out: dict = {}
    for entry in entries:
        for p in entry.postings:
            if p.account.startswith(prefix) and p.commodity == currency:
                holder = chart.strategy_of(p.account)
                out[holder] = out.get(holder, ZERO) - p.units
    return out


def futures_correction(chart: Chart, contract: Contract, h: HolderCorrection, holding: Holding,
                       vm_pre: Decimal, p_old: Decimal, p_new: Decimal
                       ) -> tuple[list[Posting], Holding]:
    """One holder's part of a corrected futures entry and its holding after (pure).

    `holding` is the holder's position *before* the reversal (it includes q_old)."""
    x = holding.position
    y = x - h.q_old  # after the reversal
    if x != 0 and y != 0 and _sign(x) != _sign(y):
        raise CorrectionUnsupported(
            f"{contract.code}: the position of {display(h.holder)} has changed sign since "
            "the fill; reverse and rebook it by hand")
    if x != 0 and holding.mark is None:
        raise CorrectionUnsupported(f"{contract.code}: {display(h.holder)} has no mark")
    mark = holding.mark if x != 0 else p_new
    k = contract.multiplier
    cash = vm_pre + (h.q_new * (mark - p_new) - h.q_old * (mark - p_old)) * k
    postings = vm_postings(chart, h.holder, contract.currency, cash)
    postings += position_postings(chart.holdings(h.holder), contract.code, contract.currency, y, h.q_new)
    final = y + h.q_new
    return postings, Holding(final, mark if final != 0 else None)


def shares_correction(chart: Chart, contract: Contract, h: HolderCorrection, lots, original: Transaction,
                      label: str, date: dt.date, p_new: Decimal) -> list[Posting]:
    """One holder's corrected shares entry (pure): only while the fill's own lot is whole."""
    account = chart.holdings(h.holder)
    mine = [p for p in original.postings if p.account == account and p.commodity == contract.code]
    if any(p.cost is None or p.cost.label != label for p in mine) or not mine:
        raise CorrectionUnsupported(f"{contract.code}: the fill closed earlier lots; a corrected "
                                    "reduction must be reversed and rebooked by hand")
    opened = sum((p.units for p in mine), ZERO)
    open_now = sum((u for cost, u in lots if cost.label == label), ZERO)
    if open_now != opened:
        raise CorrectionUnsupported(f"{contract.code}: lot {label} of {display(h.holder)} "
                                    f"is no longer whole ({open_now} of {opened} left); reverse and "
                                    "rebook it by hand")
    others = tuple((cost, u) for cost, u in lots if cost.label != label)
    position = sum((u for _, u in others), ZERO)
    return shares_trade(chart, h.holder, contract, Holding(position, None, others), h.q_new, p_new,
                        date, label)


def correction_entry(chart: Chart, contract: Contract, original: OriginalFill, e: Execution,
                     parts: list[HolderCorrection], holdings: dict, currency: str,
                     when: dt.datetime) -> tuple[Transaction, dict]:
    """The corrected entry of a fill (booked after the original's reversal), linked to the
    original, and the futures holdings after it. Raises CorrectionUnsupported before anything
    is written when the correction cannot be booked automatically."""
    # A bust (quantity 0) leaves no quantity to split its commission (if any) by: its holders'.
    busted = all(part.q_new == 0 for part in parts)
    commission = commission_split(e.commission, [(part.holder, part.q_old if busted else part.q_new)
                                                 for part in parts])
    postings: list[Posting] = []
    after: dict = {}
    reversed_entries = [original.entry] + ([original.attribution] if original.attribution is not None else [])
    if original.attribution is not None and contract.sec_type != "FUT":
        raise CorrectionUnsupported(f"{contract.code}: a shares fill attributed to a strategy is corrected by "
                                    "hand (its lots moved at the attribution); reverse the attribution "
                                    "(`adjust reverse`) or book the difference with `adjust`")
    vm = rebooked_vm(chart, reversed_entries, contract.currency) if contract.sec_type == "FUT" else {}
    for part in parts:
        holding = holdings.get(part.holder, Holding())
        if contract.sec_type == "FUT":
            legs, after[part.holder] = futures_correction(chart, contract, part, holding, vm.pop(part.holder, ZERO),
                                                          original.price, e.price)
        else:
            legs = shares_correction(chart, contract, part, holding.lots, original.entry, original.exec_key,
                                     original.date, e.price)
        postings += legs
        if commission:
            postings += commission_postings(chart, part.holder, commission.get(part.holder, ZERO), currency)
    for holder in sorted(vm, key=sort_key):  # holders whose other positions the reversed entries marked
        postings += vm_postings(chart, holder, contract.currency, vm[holder])
    who = ", ".join(display(part.holder) for part in parts)
    meta = (("exec", original.exec_key), ("exec-id", e.exec_id), ("corrects", original.exec_id),
            ("price", str(e.price)), ("contract", contract.code),
            ("commission", "pending" if e.commission is None else "booked"),
            ("order-ref", e.order_ref or "none"))
    links = (f"fill-{link(original.exec_key)}", f"entry-{original.txn_id}")
    narration = (f"Correction: {e.side} {e.quantity} {contract.code} @ {e.price} "
                 f"for {who} (was {original.quantity} @ {original.price})")
    if original.attribution is not None:
        meta += (("attributed", who),)
        links += tuple(x for x in original.attribution.links if x.startswith("adjust-"))
        narration += f", attributed to {who} (the attribution at the old price is reversed)"
    txn = Transaction(time=when, kind="fill", postings=tuple(postings), meta=meta, narration=narration,
                      links=links, key=f"fill:{chart.broker_account}:{e.exec_id}")
    return txn, after


# -- maintenance --------------------------------------------------------------------

CASH_KINDS = ("interest", "fee", "deposit", "withdrawal", "adjustment")


def whole_contracts(contract: Contract, qty: Decimal) -> None:
    """Futures move in whole contracts on every path (transfer, adopt, attribute, manual close), as
    fills do: a fraction is refused, never booked (pure)."""
    if contract.sec_type == "FUT" and qty != qty.to_integral_value():
        raise AdjustError(f"{contract.code} is a future: whole contracts only, not {qty}")


def transfer_entry(chart: Chart, contract: Contract, holdings: dict, giver: Holder, taker: Holder,
                   qty: Decimal, price: Decimal, time: dt.datetime, kind: str, narration: str, key: str,
                   links: tuple[str, ...], meta: tuple[tuple[str, str], ...]) -> tuple[Transaction, dict]:
    """Move signed `qty` of the giver's position to the taker at `price` (a zero-sum trade)."""
    if giver == taker:
        raise AdjustError(f"{display(giver)} cannot transfer to itself")
    if qty == 0:
        raise AdjustError("nothing to move: quantity 0")
    whole_contracts(contract, qty)
    have = holdings.get(giver, Holding()).position
    if have == 0 or (have > 0) != (qty > 0) or abs(qty) > abs(have):
        raise AdjustError(f"insufficient position: {display(giver)} holds {have} {contract.code}, "
                          f"cannot give {qty}")
    postings, after = trade_between(chart, contract, holdings, ((giver, -qty), (taker, qty)), price, time.date(),
                                    f"{kind}-{key_tail(key)}")
    txn = Transaction(time=time, kind=kind, narration=narration, postings=tuple(postings),
                      links=links, meta=meta + (("contract", contract.code), ("price", str(price))), key=key)
    return txn, after


def with_commission_moved(chart: Chart, txn: Transaction, amount: Decimal, currency: str, taker: Holder,
                          giver: Holder = None) -> Transaction:
    """The entry with a booked commission moved from the giver (unattributed) to the taker."""
    moved = (Posting(chart.commissions(taker), amount, currency), Posting(chart.commissions(giver), -amount, currency))
    return Transaction(time=txn.time, kind=txn.kind, narration=txn.narration, postings=txn.postings + moved,
                       links=txn.links, meta=txn.meta, key=txn.key)


def close_entry(chart: Chart, contract: Contract, holdings: dict, holder: Holder, price: Decimal,
                time: dt.datetime, narration: str, key: str, links: tuple[str, ...],
                meta: tuple[tuple[str, str], ...], qty: Decimal | None = None) -> tuple[Transaction, dict]:
    """Close a holder's position (signed `qty` of it, else all of it) at `price` with no broker
    fill (it happened elsewhere)."""
    holding = holdings.get(holder, Holding())
    if holding.position == 0:
        raise AdjustError(f"insufficient position: {display(holder)} holds no {contract.code}")
    qty = -holding.position if qty is None else qty
    whole_contracts(contract, qty)
    postings, after = trade_between(chart, contract, holdings, ((holder, qty),), price, time.date(), key_tail(key))
    txn = Transaction(time=time, kind="manual-close", narration=narration, postings=tuple(postings), links=links,
                      meta=meta + (("contract", contract.code), ("price", str(price))), key=key)
    return txn, after


def cash_entry(chart: Chart, currency: str, amount: Decimal, cash_kind: str, reason: str, time: dt.datetime,
               key: str, ref: str | None = None) -> Transaction:
    """Cash in (amount > 0) or out against Income/Expenses:Adjustments, or Equity:Deposits; with the
    broker's reference of the movement (`ref`) in its meta and its link, `ref-<ref>`, which a
    reversal and a rebooking of the same movement carry too."""
    if amount == 0:
        raise AdjustError("a cash adjustment of 0 books nothing")
    if cash_kind not in CASH_KINDS:
        raise AdjustError(f"unknown cash kind {cash_kind!r}: use one of {', '.join(CASH_KINDS)}")
    if cash_kind == "deposit" and amount < 0 or cash_kind == "withdrawal" and amount > 0:
        raise AdjustError(f"a {cash_kind} of {amount}: deposits are positive, withdrawals negative")
    if cash_kind in ("deposit", "withdrawal"):
        counter = chart.deposits
    else:
        counter = chart.income_adjustments if amount > 0 else chart.expense_adjustments
    return Transaction(time=time, kind="cash-adjust", narration=f"{cash_kind.capitalize()} {amount} {currency}: "
                       f"{reason}", postings=(Posting(chart.cash, amount, currency), Posting(counter, -amount, currency)),
                       links=(f"ref-{link(ref)}",) if ref else (f"adjust-{key_tail(key)}",),
                       meta=(("reason", reason), ("adjust", cash_kind)) + ((("ref", ref),) if ref else ()), key=key)


# -- corporate actions: withholding and cash in lieu (corporate.py builds the entries around them) ---

CENT = Decimal("0.01")


def cents_by_largest_remainder(total: Decimal, exact: dict) -> dict:
    """`total` (whole cents) in whole-cent parts, each as near its `exact` share as can be: every
    part is its exact share rounded down to the cent, then the cents left over go one each to the
    largest remainders (ties: to the larger share, then in holder order), so the parts add up to
    `total` exactly. Works
    with signed shares (a holder that pays). Parts of 0 are left out."""
    in_cents = total / CENT
    if in_cents != in_cents.to_integral_value():
        raise ValueError(f"{total} is not a whole number of cents")
    floors = {k: (v / CENT).to_integral_value(rounding="ROUND_FLOOR") for k, v in exact.items()}
    left = int(in_cents - sum(floors.values(), ZERO))
    order = sorted(exact, key=lambda k: (-(exact[k] / CENT - floors[k]), -abs(exact[k]), sort_key(k)))
    if left < 0 or left > len(order):
        raise ValueError(f"{total} is not the sum of {exact} rounded to the cent")
    for k in order[:left]:
        floors[k] += 1
    return {k: v * CENT for k, v in floors.items() if v}


def withholding_parts(per_share: Decimal, rate: Decimal, positions: dict) -> dict:
    """Each record holder's withholding tax on a dividend, adding up to the account's.

    The broker withholds on the account as a whole: `rate` x the account's gross, rounded to the
    cent (half even), where the gross is the net position's (a short holder pays the dividend and
    is not taxed). That figure is split among the long holders by their gross, in whole cents by
    largest remainder, so the ledger's withholding is the broker's to the cent (rounding each
    holder's tax alone can differ from it by a cent per holder)."""
    gross = {h: units * per_share for h, units in positions.items() if units > 0}
    account_gross = sum(positions.values(), ZERO) * per_share
    if not gross or account_gross <= 0 or rate == 0:
        return {}
    total = (account_gross * rate).quantize(CENT, rounding="ROUND_HALF_EVEN")
    long_gross = sum(gross.values(), ZERO)
    return cents_by_largest_remainder(total, {h: total * g / long_gross for h, g in gross.items()})


def whole_after_split(exact: dict) -> dict:
    """Whole shares each holder keeps after a split that leaves fractions: the account keeps the
    whole part of its total (what the broker keeps), shared out by largest remainder (each holder
    its whole part, the shares left over one each to the largest fractions), so the holders' whole
    shares add up to the broker's. Long holders only (pure)."""
    floors = {h: v.to_integral_value(rounding="ROUND_FLOOR") for h, v in exact.items()}
    total = sum(exact.values(), ZERO).to_integral_value(rounding="ROUND_FLOOR")
    left = int(total - sum(floors.values(), ZERO))
    for h in sorted(exact, key=lambda h: (-(exact[h] - floors[h]), sort_key(h)))[:left]:
        floors[h] += 1
    return floors


def split_postings(chart: Chart, ticker: str, new: Decimal, old: Decimal, lots: dict, date: dt.date,
                   cash_in_lieu: Decimal | None = None, currency: str = "") -> list[Posting]:
    """The postings of a split (`new` shares for every `old`) on every holder's lots.

    Each lot is closed and reopened at units x new/old and per-unit cost x old/new, keeping its
    date and label (the same total cost, FIFO order unchanged). When that leaves a fraction of a
    share, the broker sells the account's fraction and pays cash in lieu at `cash_in_lieu` per
    post-split share (the account's cash rounded to the cent): each holder keeps its whole shares
    (`whole_after_split`) and sells the rest of its position, oldest lots first, realising the
    price less the lots' cost into Income:Trading; a holder whose largest fraction rounded up
    buys the missing part from the others at the same price (a new lot). The holders' cash adds
    up to the broker's by largest remainder; the sub-cent rest is trading income."""
    if new <= 0 or old <= 0:
        raise CorporateActionError(f"split {ticker}: ratio {new}:{old} must be positive")
    restated: dict = {}
    for holder in sorted(lots, key=sort_key):
        restated[holder] = []
        for cost, units in lots[holder]:
            new_units, new_cost = units * new / old, cost.number * old / new
            if new_units != new_units.quantize(NANO) or new_cost != new_cost.quantize(NANO):
                raise CorporateActionError(f"split {ticker} {new}:{old}: a lot of {units} at {cost.number} becomes "
                                  f"{new_units} at {new_cost}, not exact to 9 places; book it by hand")
            restated[holder].append((cost, units, Cost(new_cost.normalize() if new_cost else ZERO, cost.currency,
                                                       cost.date, cost.label), new_units))
    exact = {h: sum((r[3] for r in rows), ZERO) for h, rows in restated.items()}
    fractional = {h: v for h, v in exact.items() if v != v.to_integral_value()}
    if fractional and cash_in_lieu is None:
        holder, units = next(iter(fractional.items()))
        raise CorporateActionError(f"split {ticker} {new}:{old}: {display(holder)} would hold {units} shares, a fraction; "
                          f"give the broker's cash-in-lieu price per new share (the split's amount)")
    if any(v < 0 for v in fractional.values()):
        raise CorporateActionError(f"split {ticker} {new}:{old}: a short position would hold a fraction; book it by hand")
    keep = whole_after_split(exact) if fractional else exact
    cash = {h: (exact[h] - keep[h]) * cash_in_lieu for h in exact if keep[h] != exact[h]} if fractional else {}
    parts = cents_by_largest_remainder(sum(cash.values(), ZERO).quantize(CENT, rounding="ROUND_HALF_EVEN"),
                                       cash) if cash else {}
    postings: list[Posting] = []
    for holder, rows in restated.items():
        account = chart.holdings(holder)
        to_sell = exact[holder] - keep[holder]  # > 0 sells, < 0 buys, post-split units
        gain = parts.get(holder, ZERO)  # cash in (out when buying)
        for cost, units, new_cost, new_units in rows:
            sold = min(new_units, to_sell) if to_sell > 0 else ZERO
            to_sell -= sold
            gain -= sold * new_cost.number
            postings.append(Posting(account, -units, ticker, cost))
            if new_units - sold:
                postings.append(Posting(account, new_units - sold, ticker, new_cost))
        if to_sell < 0:  # rounded up: buy the missing fraction at the cash-in-lieu price
            postings.append(Posting(account, -to_sell, ticker, Cost(cash_in_lieu, currency, date,
                                                                    f"cil-{ticker}-{date.isoformat()}")))
            gain -= to_sell * cash_in_lieu
        if parts.get(holder):
            postings.append(Posting(chart.cash, parts[holder], currency))
        if gain and holder in cash:
            postings.append(Posting(chart.trading(holder), -gain, currency))
    return postings


# -- arrivals: the opening and later surpluses (records in arrivals.py) ------------------------


def arrival_postings(chart: Chart, contract: Contract, holding: Holding, qty: Decimal, price: Decimal,
                     date: dt.date, label: str) -> list[Posting]:
    """Unattributed receives signed `qty` at `price` without paying for it from this account."""
    legs = trade_postings(chart, None, contract, holding, qty, price, date, label)
    if contract.sec_type == "FUT":
        return legs
    first = legs[0]  # shares_trade's purchase leg: paid by equity, not by this account's cash
    assert first.account == chart.cash and first.commodity == contract.currency
    return [Posting(chart.opening_balances, first.units, first.commodity)] + legs[1:]


def _cash_of(postings: list[Posting], chart: Chart) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for p in postings:
        if p.account == chart.cash:
            out[p.commodity] = out.get(p.commodity, ZERO) + p.units
    return out


def opening_entry(chart: Chart, snap: AccountSnapshot, snapshot_id: int, holdings: dict, ledger_cash: dict,
                  acquired: dict | None = None) -> OpeningPlan:
    """The opening (pure): `holdings` is contract code -> holder -> Holding for every contract the
    broker holds; `ledger_cash` currency -> the ledger's cash; `acquired` code -> lot date."""
    acquired = acquired or {}
    time, day = snap.taken_at, snap.taken_at.date()
    postings: list[Posting] = []
    opened, skipped, after_all = [], [], {}
    vm: dict[str, Decimal] = {}
    marks_over: dict[str, Decimal] = {}  # what the ledger's marks add over the broker's, per currency
    for position in sorted(snap.positions, key=lambda p: p.contract.code):
        k = position.contract
        if position.quantity == 0:
            continue
        why = unbookable(k)
        if why:
            skipped.append((position, why))
            continue
        held = dict(holdings.get(k.code, {}))
        ledger_qty = sum((h.position for h in held.values()), ZERO)
        diff, price = position.quantity - ledger_qty, arrival_price(position)
        if diff:
            legs = arrival_postings(chart, k, held.get(None, Holding()), diff, price,
                                    acquired.get(k.code, day), f"open-{k.code}")
            postings += legs
            for ccy, amount in _cash_of(legs, chart).items():
                vm[ccy] = vm.get(ccy, ZERO) + amount
            held[None] = after_trade(k, held.get(None, Holding()), legs, diff, price)
            after_all[k.code] = held
        opened.append(OpenedPosition(k, position.quantity, ledger_qty, diff, price))
        if k.sec_type == "FUT" and position.mark is not None:
            extra = sum(((h.mark - position.mark) * h.position * k.multiplier for h in held.values()
                         if h.position and h.mark is not None), ZERO)
            marks_over[k.currency] = marks_over.get(k.currency, ZERO) + extra
    cash, unsettled = dict(snap.cash), dict(snap.unsettled_pnl)
    lines = []
    for ccy in sorted(set(cash) | set(unsettled) | set(ledger_cash) | set(vm) | set(marks_over)):
        target = cash.get(ccy, ZERO) + unsettled.get(ccy, ZERO) + marks_over.get(ccy, ZERO)
        booked = target - ledger_cash.get(ccy, ZERO) - vm.get(ccy, ZERO)
        if booked:
            postings += [Posting(chart.cash, booked, ccy), Posting(chart.opening_balances, -booked, ccy)]
        lines.append(OpenedCash(ccy, cash.get(ccy, ZERO), unsettled.get(ccy, ZERO), ledger_cash.get(ccy, ZERO),
                                booked))
    txn = None
    if postings:
        txn = Transaction(time=time, kind="opening",
                          narration=f"Opening: the account {chart.broker_account} as the broker held it",
                          postings=tuple(postings), links=(f"opening-{link(chart.broker_account)}",),
                          meta=(("snapshot", str(snapshot_id)), ("source", "broker-snapshot")),
                          key=f"opening:{chart.broker_account}")
    return OpeningPlan(txn, tuple(opened), tuple(lines), tuple(skipped), after_all)


def surplus_entry(chart: Chart, position: BrokerPosition, holdings: dict, surplus: Decimal, snapshot_id: int,
                  time: dt.datetime) -> tuple[Transaction, dict]:
    """A later surplus of `surplus` units arriving into Unattributed (pure); returns the entry and
    the contract's holdings after it."""
    k = position.contract
    price = arrival_price(position)
    held = dict(holdings)
    legs = arrival_postings(chart, k, held.get(None, Holding()), surplus, price, time.date(),
                            f"arrive-{snapshot_id}-{k.code}")
    held[None] = after_trade(k, held.get(None, Holding()), legs, surplus, price)
    txn = Transaction(
        time=time, kind="adoption",
        narration=f"Adopt {surplus} {k.code} found at the broker without an execution",
        postings=tuple(legs), links=(f"adopt-{link(k.code)}-{snapshot_id}",),
        meta=(("contract", k.code), ("price", str(price)), ("snapshot", str(snapshot_id)),
              ("source", "broker-snapshot")),
        key=f"adopt:{chart.broker_account}:{k.code}:{snapshot_id}")
    return txn, held


# -- corporate actions, interest and fees (records in corporate.py) ----------------------------


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN)


def dividend_ex_entry(chart: Chart, dividend: Dividend, positions: dict[str | None, Decimal],
                      time: dt.datetime) -> Transaction | None:
    """The ex-date entry for every record holder (holder -> shares held before the ex-date)."""
    postings: list[Posting] = []
    receivable = chart.dividends_receivable
    taxes = withholding_parts(dividend.amount, dividend.withholding, positions)
    for holder in sorted(positions, key=lambda h: h or ""):
        shares = positions[holder]
        if shares == 0:
            continue
        gross = shares * dividend.amount
        tax = taxes.get(holder, ZERO)
        postings.append(Posting(chart.dividends(holder), -gross, dividend.currency))
        if tax:
            postings.append(Posting(chart.withholding(holder), tax, dividend.currency))
        postings.append(Posting(receivable, gross - tax, dividend.currency))
    if not postings:
        return None
    return Transaction(
        time=time, kind="dividend", narration=f"Dividend {dividend.ticker} {dividend.amount} {dividend.currency}"
        f" per share, ex {dividend.ex_date.isoformat()}", postings=tuple(postings),
        links=(f"div-{dividend.ticker}-{dividend.ex_date.isoformat()}",),
        meta=(("contract", dividend.ticker), ("pay-date", dividend.pay_date.isoformat()),
              ("withholding", str(dividend.withholding)), ("source", dividend.source)),
        key=f"dividend:{chart.broker_account}:{dividend.key}")


def dividend_pay_entry(chart: Chart, dividend: Dividend, net: Decimal, time: dt.datetime,
                       into: str | None = None) -> Transaction | None:
    """The pay-date entry: the receivable booked at the ex-date becomes cash (`into`: the opening's
    equity instead, when the opening's cash already holds what the broker paid, actions.book_due)."""
    if net == 0:
        return None
    return Transaction(
        time=time, kind="dividend-paid", narration=f"Dividend {dividend.ticker} paid", postings=(
            Posting(into or chart.cash, net, dividend.currency), Posting(chart.dividends_receivable, -net, dividend.currency)),
        links=(f"div-{dividend.ticker}-{dividend.ex_date.isoformat()}",),
        meta=(("ticker", dividend.ticker), ("ex-date", dividend.ex_date.isoformat())),
        key=f"dividend-paid:{chart.broker_account}:{dividend.key}")


def dividend_net(txn: Transaction, chart: Chart) -> Decimal:
    """What the ex-date entry left receivable (the cash the pay date brings)."""
    return sum((p.units for p in txn.postings if p.account == chart.dividends_receivable), ZERO)


def split_entry(chart: Chart, split: Split, lots: dict[str | None, list[tuple[Cost, Decimal]]],
                time: dt.datetime) -> Transaction | None:
    """Every holder's lots of the ticker, re-stated in post-split units at the same total cost, and
    the fractions the broker paid cash in lieu for sold (`entries.split_postings`)."""
    postings = split_postings(chart, split.ticker, split.new, split.old, lots, split.date, split.cash_in_lieu,
                              split.currency)
    if not postings:
        return None
    meta = (("ticker", split.ticker), ("ratio", f"{split.new}:{split.old}"), ("source", split.source))
    if split.cash_in_lieu is not None:
        meta += (("cash-in-lieu", f"{split.cash_in_lieu} {split.currency}"),)
    return Transaction(
        time=time, kind="split", narration=f"Split {split.ticker} {split.new}:{split.old}",
        postings=tuple(postings), links=(f"split-{split.ticker}-{split.date.isoformat()}",),
        meta=meta, key=f"split:{chart.broker_account}:{split.key}")


def account_cash_entry(chart: Chart, item: AccountCash, shares: dict[str, Decimal],
                       key: str | None = None) -> Transaction:
    """Interest or a fee against cash, borne by `shares` (holder component -> signed amount); keyed
    by `key` (the broker's reference's: cash_moves.claim_ref), else by `item.ref` as it is."""
    if item.kind not in ("interest", "fee"):
        raise CorporateActionError(f"unknown account cash kind {item.kind!r} (interest or fee)")
    postings = [Posting(chart.cash, item.amount, item.currency)]
    for holder in sorted(shares):
        part = shares[holder]
        if item.kind == "fee":
            account = chart.fees(holder)
        else:
            account = chart.interest_income(holder) if item.amount > 0 else chart.interest_expense(holder)
        postings.append(Posting(account, -part, item.currency))
    return Transaction(
        time=dt.datetime.combine(item.date, dt.time(12), dt.timezone.utc), kind=item.kind,
        narration=item.description or f"{item.kind} {item.amount} {item.currency}", postings=tuple(postings),
        links=(), meta=(("ref", item.ref),), key=key or f"{item.kind}:{chart.broker_account}:{item.ref}")
