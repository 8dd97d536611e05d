"""Exposure and costs per strategy and instrument, in the base currency.

Exposure of a strategy in an instrument is the sum over every contract of that instrument it
holds: notional = units x price x multiplier x FX (signed), its percentage of the strategy's
capital (the capital its latest target run sized with; the account's NAV for the total), and the
expected annual risk the sizing assumed: |units| x daily price volatility (the run's figure) x
multiplier x FX x 16 (sqrt of 256 business days).

Costs of a fill are its commission and its slippage against the run's reference price (the
price the run sized with, the one the order plan carries): slippage = side x (fill price -
reference) x quantity x multiplier, positive when the fill was worse. Each strategy carries its
allocated share of a fill's slippage and the part of its commission the ledger booked for it (read
back from the entries' postings, so the costs add up to `pnl`'s commissions whatever rule split them). Both are given in money (base currency at the fill day's rate) and in
basis points of the traded notional at the reference price. Fills without a run (trades made
outside tradeledger) have commissions but no slippage.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.accounting import valuation
from tradeledger.engine.accounting.holders import to_column
from tradeledger.engine.accounting.holdings import holder_of, known_contracts
from tradeledger.engine.setup.config import instrument_of_contract
from tradeledger.engine.trading.attribution import attributions
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.prices import PriceError, fx_rate
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled
from tradeledger.reports.series import cents

ZERO = Decimal(0)
BPS = Decimal(10000)
ANNUAL = Decimal(16)


def _latest_run_figures(conn) -> tuple[dict, dict]:
    """(strategy, instrument) -> explain of the newest run line; strategy -> capital amount."""
    lines = {}
    capital = {}
    runs = tables.target_run
    for run_id, inputs in conn.execute(sa.select(runs.c.id, runs.c.inputs).order_by(runs.c.id)):
        for name, cap in json.loads(inputs or "{}").get("strategy_capital", {}).items():
            capital[name] = Decimal(cap["amount"])
    t = tables.target_line
    for strategy, explain in conn.execute(sa.select(t.c.strategy, t.c.explain).order_by(t.c.run_id)):
        e = json.loads(explain)
        lines[(strategy, e.get("execution_instrument"))] = e
        if strategy not in capital and e.get("capital") and e.get("capital_share"):
            capital[strategy] = Decimal(e["capital"]) * Decimal(e["capital_share"])
    return lines, capital


def _rate(ctx: Context, ccy: str, on: dt.date | None = None) -> Decimal | None:
    try:
        return fx_rate(ctx, ccy, on)
    except (PriceError, ValueError):
        return None


def held(ctx: Session, on: dt.date | None = None, from_end: bool | None = None) -> list[dict]:
    """Positions per holder and contract at the end of day `on` (default: now), with the price of
    that day and the notional in the base currency. The units at a day's end are summed from
    whichever end of the ledger is nearer (`Ledger.balances`' `from_end`; False: from the first entry)."""
    env, chart = ctx, ctx.chart
    contracts = known_contracts(env.ledger)
    balances = env.ledger.positions(prefix=chart.root) if on is None else {
        k: v for k, v in env.ledger.balances(as_of=on + dt.timedelta(days=1), prefix=chart.root,
                                             from_end=from_end).items()
        if k[1] in contracts}
    prices = valuation.latest_prices(env, ctx.config, {code for _, code in balances}, on)
    rows = []
    for (account, code), qty in sorted(balances.items()):
        holder = holder_of(chart, account)
        if holder is False or code not in contracts:
            continue
        contract = contracts[code]
        instrument = instrument_of_contract(ctx.config, code)
        price, rate = prices.get(code), _rate(env, contract.currency, on)
        notional = None if price is None or rate is None else cents(qty * price * contract.multiplier * rate)
        rows.append({"strategy": _strategy_name(ctx, holder or ""), "instrument": instrument.name if instrument else code,
                     "contract": code, "qty": qty, "price": price, "currency": contract.currency,
                     "multiplier": contract.multiplier, "fx": rate, "notional": notional})
    return rows


def exposure(ctx: Session, on: dt.date | None = None, positions: list[dict] | None = None,
             from_end: bool | None = None) -> dict:
    """Rows per (strategy, instrument), and totals per strategy and for the account. `positions`:
    `held(ctx, on)` when the caller has it already (the daily report); `from_end` as `held`'s."""
    env = ctx
    with read_connection(env.engine) as conn:
        lines, capital = _latest_run_figures(conn)
    grouped: dict = defaultdict(lambda: {"qty": ZERO, "notional": ZERO, "risk": ZERO, "contracts": [],
                                         "missing": set(), "risk_known": True})
    for row in (held(ctx, on, from_end) if positions is None else positions):
        g = grouped[(row["strategy"], row["instrument"])]
        g["contracts"].append(row["contract"])
        g["qty"] += row["qty"]
        if row["notional"] is None:
            g["missing"].add(f"price or FX of {row['contract']}")
            continue
        g["notional"] += row["notional"]
        vol = lines.get((row["strategy"], row["instrument"]), {}).get("volatility")
        if vol is None:
            g["risk_known"] = False
        else:
            g["risk"] += abs(row["qty"]) * Decimal(vol) * row["multiplier"] * row["fx"] * ANNUAL
    nav = valuation.nav(env, ctx.config, on, from_end).total
    rows, per_strategy = [], defaultdict(lambda: {"notional": ZERO, "gross": ZERO, "risk": ZERO})
    for (strategy, name), g in sorted(grouped.items()):
        if g["qty"] == 0:
            continue
        cap = capital.get(strategy)
        notional = None if g["missing"] else cents(g["notional"])
        rows.append({"strategy": strategy, "instrument": name, "contracts": sorted(set(g["contracts"])), "qty": g["qty"],
                     "notional": notional,
                     "pct_capital": None if notional is None or not cap else round(float(notional / cap) * 100, 2),
                     "annual_risk": cents(g["risk"]) if g["risk_known"] and notional is not None else None,
                     "missing": sorted(g["missing"])})
        if notional is not None:
            s = per_strategy[strategy]
            s["notional"] += notional
            s["gross"] += abs(notional)
            s["risk"] += g["risk"] if g["risk_known"] else ZERO
    strategies = [{"strategy": k, "net_notional": v["notional"], "gross_notional": v["gross"],
                   "capital": capital.get(k), "gross_pct_capital": round(float(v["gross"] / capital[k]) * 100, 2)
                   if capital.get(k) else None, "annual_risk_sum": cents(v["risk"])}
                  for k, v in sorted(per_strategy.items())]
    gross = sum((v["gross"] for v in per_strategy.values()), ZERO)
    return {"currency": env.settings.base_currency, "on": on, "nav": nav, "rows": rows, "strategies": strategies,
            "total": {"gross_notional": gross, "gross_pct_nav": round(float(gross / nav) * 100, 2) if nav else None}}


def _json_field(conn, column, name: str):
    """A field of a JSON text column, extracted by the database itself."""
    if conn.dialect.name == "postgresql":
        return sa.func.json_extract_path_text(sa.cast(column, sa.JSON), name)
    return sa.func.json_extract(column, f"$.{name}")


def _reference_prices(conn, order_ids=None) -> dict[int, dict]:
    """order id -> {run, reference price}: the price its run sized the order's contract with."""
    o, t = tables.broker_order, tables.target_line
    price = sa.func.max(_json_field(conn, t.c.explain, "price"))
    query = (sa.select(o.c.id, o.c.run_id, price).join(t, sa.and_(t.c.run_id == o.c.run_id, t.c.contract == o.c.contract))
             .group_by(o.c.id, o.c.run_id))
    if order_ids is not None:
        query = query.where(o.c.id.in_(sorted(order_ids)))
    return {order_id: {"run": run_id, "reference": Decimal(str(value))}
            for order_id, run_id, value in conn.execute(query) if value is not None}


def fills_with_costs(ctx: Session, day: dt.date | None = None, since: dt.date | None = None,
                     until: dt.date | None = None, limit: int | None = None) -> list[dict]:
    """Booked fills (of one day, or since/until, or the newest `limit`) with their reference price,
    slippage and commission, oldest first."""
    if day is not None:
        since, until = day, day + dt.timedelta(days=1)
    env = ctx
    f, fa = tables.fill, tables.fill_alloc
    contracts = known_contracts(env.ledger)
    with read_connection(env.engine) as conn:
        query = sa.select(f).where(f.c.superseded_by.is_(None)).order_by(f.c.time.desc(), f.c.id.desc())
        if since is not None:
            query = query.where(f.c.time >= since.isoformat())
        if until is not None:
            query = query.where(f.c.time < until.isoformat())
        if limit is not None:
            query = query.limit(limit)
        rows = conn.execute(query).all()[::-1]
        wanted = {r.order_id for r in rows if r.order_id is not None}
        refs = _reference_prices(conn, wanted if len(wanted) <= 5000 else None)
        allocs = defaultdict(list)
        ids = [r.id for r in rows]
        alloc_query = sa.select(fa)
        if since is not None or until is not None or limit is not None:
            alloc_query = alloc_query.where(fa.c.fill_id.in_(ids)) if len(ids) <= 5000 else alloc_query
        for r in conn.execute(alloc_query):
            allocs[r.fill_id].append((r.holder, from_scaled(r.quantity)))
        attributed = attributions(conn, env.ledger, [r.exec_key for r in rows]) if rows else {}
        held_by = {key: a.strategy for key, a in attributed.items() if a.live}
        booked = _booked_commissions(env, rows, attributed, conn)
    out, rates = [], {}
    for r in rows:
        contract = contracts.get(r.contract)
        multiplier = contract.multiplier if contract else Decimal(1)
        currency = contract.currency if contract else (r.commission_currency or env.settings.base_currency)
        qty, price = from_scaled(r.quantity), from_scaled(r.price)
        sign = Decimal(1) if r.side == "BUY" else Decimal(-1)
        ref = refs.get(r.order_id, {}).get("reference") if r.order_id else None
        slip = None if ref is None else sign * (price - ref) * qty * multiplier
        commission = None if r.commission is None else from_scaled(r.commission)
        key = (currency, r.time[:10])
        if key not in rates:
            rates[key] = _rate(env, currency, dt.date.fromisoformat(r.time[:10]))
        rate = rates[key]
        notional = None if ref is None else abs(qty * ref * multiplier)
        per = []
        split = booked.get(r.id, {})
        holders: dict[str, Decimal] = {}
        for holder, q in allocs.get(r.id, []):
            # Unattributed's part of a fill whose attribution stands is the strategy's.
            holder = held_by.get(r.exec_key, holder or "") if not holder else holder
            holders[holder] = holders.get(holder, ZERO) + q
        if commission is not None:  # a holder the ledger booked commission for and no longer holds units
            holders.update({h: ZERO for h, v in split.items() if v and h not in holders})
        for holder, q in holders.items():
            share = abs(q) / qty if qty else ZERO
            name = _strategy_name(ctx, holder)
            per.append({"strategy": name, "quantity": q,
                        "slippage": None if slip is None else slip * share,
                        "commission": None if commission is None else split.get(holder, ZERO)})
        out.append({"fill_id": r.exec_key, "time": r.time, "order": r.order_ref or None,
                    "run": refs.get(r.order_id, {}).get("run") if r.order_id else None,
                    "contract": r.contract, "side": r.side, "quantity": qty, "price": price, "reference": ref,
                    "currency": currency, "slippage": slip, "commission": commission if commission is not None else "pending",
                    "slippage_base": None if slip is None or rate is None else cents(slip * rate),
                    "slippage_bps": None if slip is None or not notional else round(float(slip / notional * BPS), 2),
                    "fx": rate, "strategies": per})
    return out


def _commission_entries(r, attributed) -> tuple:
    """The entries that booked a fill's commission: its own, its late (or changed) commission's,
    and, for a fill given to a strategy by `adjust attribute`, the attribution (which moved the
    commission from Unattributed) and the entry that reversed it (by hand, or a correction)."""
    a = attributed.get(r.exec_key)
    return (r.txn_id, r.commission_txn_id) + ((a.txn_id, a.reversed_by) if a is not None else ())


def _booked_commissions(env, rows, attributed, conn) -> dict[int, dict[str, Decimal]]:
    """fill id -> holder (as fill_alloc stores it) -> the commission the ledger booked for that
    holder: the Expenses:Commissions postings of the fill's entry, of its late commission's and of
    its attribution's (and that attribution's reversal), read back. So per strategy the costs are
    `pnl`'s commissions, an attributed fill's included. Never the stored total split again: the rule
    that split it may have changed since (328482a: a fill booked before it holds 3.795 + 1.835
    where today's rule gives 3.80 + 1.83)."""
    chart = env.chart
    sums = env.ledger.entry_sums([i for r in rows if r.commission is not None for i in _commission_entries(r, attributed)],
                                 "Expenses:Commissions:", conn)
    out: dict[int, dict[str, Decimal]] = {}
    for r in rows:
        if r.commission is None:
            continue
        parts: dict[str, Decimal] = {}
        for txn_id in _commission_entries(r, attributed):
            for (account, _ccy), units in sums.get(txn_id, {}).items():
                holder = to_column(chart.strategy_of(account))
                parts[holder] = parts.get(holder, ZERO) + units
        out[r.id] = parts
    return out


def _strategy_name(ctx: Session, holder: str | None) -> str:
    if not holder:
        return "unattributed"
    strategy = ctx.config.strategy_by_account(holder)
    return strategy.name if strategy else holder


def costs(ctx: Session, since: dt.date | None = None, until: dt.date | None = None) -> dict:
    """Slippage and commissions per strategy: money (base currency) and bps of traded notional."""
    totals = defaultdict(lambda: {"fills": 0, "notional": ZERO, "slippage": ZERO, "commissions": ZERO,
                                  "pending": 0, "missing_fx": set()})
    contracts = known_contracts(ctx.ledger)
    for fill in fills_with_costs(ctx, since=since, until=until):
        rate = fill["fx"]
        contract = contracts.get(fill["contract"])
        mult = contract.multiplier if contract else Decimal(1)
        for part in fill["strategies"]:
            t = totals[part["strategy"]]
            t["fills"] += 1
            if rate is None:
                t["missing_fx"].add(fill["currency"])
                continue
            if part["slippage"] is not None:
                t["slippage"] += part["slippage"] * rate
                t["notional"] += abs(part["quantity"]) * fill["reference"] * mult * rate
            if part["commission"] is None:
                t["pending"] += 1
            else:
                t["commissions"] += part["commission"] * rate
    rows = []
    for name, t in sorted(totals.items()):
        n = t["notional"]
        rows.append({"strategy": name, "fills": t["fills"], "notional": cents(n), "slippage": cents(t["slippage"]),
                     "slippage_bps": round(float(t["slippage"] / n * BPS), 2) if n else None,
                     "commissions": cents(t["commissions"]),
                     "commission_bps": round(float(t["commissions"] / n * BPS), 2) if n else None,
                     "pending_commissions": t["pending"], "missing_fx": sorted(t["missing_fx"])})
    return {"currency": ctx.settings.base_currency, "since": since, "until": until, "rows": rows}
