"""Positions and P&L, derived from postings; the same figures for the CLI, Fava and reports.

Realized P&L (variation margin for futures, lot gains for shares) is exactly minus the sum of a
holder's `Income:Trading:<holder>` postings in the period, and commissions exactly the sum of its
`Expenses:Commissions:<holder>` postings, so beancount reproduces both. Unrealized P&L is what
the open positions would add if marked now: futures position x (latest price - mark) x
multiplier, shares lots x (latest price - cost). Figures stay in their own currency; the base
currency total uses the dated FX rate and says so when a rate is missing instead of assuming 1.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.accounting import holdings as holdings_mod
from tradeledger.engine.targets import prices
from tradeledger.engine import tables
from tradeledger.engine.setup.config import instrument_of_contract
from tradeledger.engine.accounting.holdings import holder_of
from tradeledger.engine.setup.session import Session
from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled, plain
from tradeledger.ledger.store import ts_bound
from tradeledger.ledger.sums import combine, unit_sums

ZERO = Decimal(0)
UNATTRIBUTED = "unattributed"


def _holder_name(session: Session, holder: str | None) -> str:
    if holder is None:
        return UNATTRIBUTED
    strategy = session.config.strategy_by_account(holder)
    return strategy.name if strategy else holder


def _latest_rows(conn, table, key, value) -> dict[str, tuple[str, int]]:
    """key -> (date, scaled value) of each key's newest row, in one query."""
    newest = sa.select(table.c[key], sa.func.max(table.c.date).label("date")).group_by(table.c[key]).subquery()
    query = sa.select(table.c[key], table.c.date, table.c[value]).join(
        newest, sa.and_(table.c[key] == newest.c[key], table.c.date == newest.c.date))
    return {k: (d, v) for k, d, v in conn.execute(query)}


def latest_prices(session: Session, codes) -> dict[str, Decimal]:
    """The newest known price of each contract: its settlement, else its instrument's close
    (a settlement wins a tie: it is the exchange's own mark)."""
    with read_connection(session.env.engine) as conn:
        settlements = _latest_rows(conn, tables.settlement, "contract", "price")
        closes = _latest_rows(conn, tables.price_bar, "instrument", "close")
    result = {}
    for code in codes:
        candidates = []
        if code in settlements:
            candidates.append((settlements[code][0], 1, settlements[code][1]))
        instrument = instrument_of_contract(session.config, code)
        if instrument is not None and instrument.name in closes:
            candidates.append((closes[instrument.name][0], 0, closes[instrument.name][1]))
        if candidates:
            result[code] = from_scaled(max(candidates)[2])
    return result


def positions(session: Session, strategy: str | None = None) -> list[dict]:
    if strategy is not None and strategy != UNATTRIBUTED and strategy not in session.config.strategies:
        known = ", ".join(sorted(session.config.strategies)) or "none configured"
        raise ValueError(f"unknown strategy {strategy!r} (strategies: {known}, or {UNATTRIBUTED})")
    env = session.env
    chart = env.chart
    contracts = holdings_mod.known_contracts(env.ledger)
    with read_connection(env.engine) as conn:
        balances = env.ledger.positions(prefix=chart.root, conn=conn)
        marks = holdings_mod.marks(conn)
    last_prices = latest_prices(session, {code for _, code in balances})
    rows = []
    for (account, code), qty in sorted(balances.items()):
        holder = holder_of(chart, account)
        if holder is False:
            continue
        name = _holder_name(session, holder)
        if strategy is not None and name != strategy:
            continue
        contract = contracts.get(code)
        last = last_prices.get(code)
        unrealized = _unrealized(env, account, contract, qty, marks.get((holder, code)), last)
        rows.append({"account": account, "strategy": name, "contract": code, "qty": qty,
                     "mark": marks.get((holder, code)), "last": last, "unrealized": plain(unrealized),
                     "currency": contract.currency if contract else None})
    return rows


def _unrealized(env, account, contract, qty, mark, last) -> Decimal:
    if contract is None or last is None:
        return ZERO
    if contract.sec_type == "FUT":
        return ZERO if mark is None else qty * (last - mark) * contract.multiplier
    return sum((units * (last * contract.multiplier - cost.number)
                for cost, units in env.ledger.lots(account, contract.code)), ZERO)


# What holding brings besides price moves: dividends net of withholding, the account's interest and
# fees (under the strategy that bears them, or `Account` when unallocated).
CARRY_ACCOUNTS = ("Income:Dividends:", "Expenses:Taxes:Withholding:", "Income:Interest:", "Expenses:Interest:",
                  "Expenses:Fees:")
PNL_ACCOUNTS = ("Income:Trading:", "Expenses:Commissions:") + CARRY_ACCOUNTS


def pnl(session: Session, by: str = "strategy", since: dt.date | None = None,
        until: dt.date | None = None) -> dict:
    """P&L rows grouped by strategy, instrument or day, per currency and in the base currency."""
    if by not in ("strategy", "instrument", "day"):
        raise ValueError("--by must be strategy, instrument or day")
    if since and until and since >= until:
        raise ValueError("--since must be before --until")
    env = session.env
    base = env.settings.base_currency
    native: dict = defaultdict(lambda: defaultdict(lambda: [ZERO, ZERO, ZERO, ZERO]))  # key -> ccy -> [r, u, c, i]
    for (account, currency, *rest), amount in _income_rows(session, by, since, until):
        key = rest[0] if rest else None
        slot = native[key][currency]
        if account.startswith("Income:Trading:"):
            slot[0] -= amount
        elif account.startswith("Expenses:Commissions:"):
            slot[2] += amount
        elif account.startswith(CARRY_ACCOUNTS):
            slot[3] -= amount  # dividends less withholding, interest less fees: what holding brought
    if until is None and by != "day":  # unrealized is a figure of now, not of a past period
        for row in positions(session):
            if row["currency"] is None:
                continue
            key = row["strategy"] if by == "strategy" else _instrument_name(session, row["contract"])
            native[key][row["currency"]][1] += row["unrealized"]
    rows, missing = [], set()
    for key in sorted(native, key=lambda k: str(k)):
        per_ccy, total, complete = [], ZERO, True
        for ccy, (realized, unrealized, commissions, income) in sorted(native[key].items()):
            net = realized + unrealized + income - commissions
            per_ccy.append({"currency": ccy, "realized": plain(realized), "unrealized": plain(unrealized),
                            "commissions": plain(commissions), "income": plain(income), "net": plain(net)})
            rate = _rate(env, ccy, base, until)
            if rate is None:
                complete = False
                missing.add(ccy)
            else:
                total += net * rate
        convert = lambda field: _convert(env, per_ccy, field, base, until)  # noqa: E731
        rows.append({by: key, "realized": convert("realized"),
                     "unrealized": convert("unrealized"), "commissions": convert("commissions"),
                     "income": convert("income"), "net": _cents(total) if complete else None, "currency": base, "native": per_ccy})
    return {"by": by, "since": since, "until": until, "currency": base, "rows": rows,
            "missing_fx": sorted(missing)}


def _rate(env, ccy: str, base: str, until: dt.date | None) -> Decimal | None:
    if ccy == base:
        return Decimal(1)
    try:
        return prices.fx_rate(env, ccy, until)
    except ValueError:
        return None


def _convert(env, per_ccy: list[dict], field: str, base: str, until) -> Decimal | None:
    total = ZERO
    for row in per_ccy:
        rate = _rate(env, row["currency"], base, until)
        if rate is None:
            return None
        total += row[field] * rate
    return _cents(total)


def _cents(amount: Decimal) -> Decimal:
    """Base-currency totals are converted figures, shown to the cent; native figures stay exact."""
    return amount.quantize(Decimal("0.01"))


def _instrument_name(session: Session, code: str) -> str:
    instrument = instrument_of_contract(session.config, code)
    return instrument.name if instrument else code


def _income_rows(session: Session, by: str, since, until):
    """((account, currency, key), amount) for the P&L accounts' postings (PNL_ACCOUNTS)."""
    env = session.env
    if by == "strategy":
        for (account, ccy), amount in env.ledger.income(since, until).items():
            if account.startswith(PNL_ACCOUNTS):
                holder = account.rsplit(":", 1)[1]
                yield (account, ccy, _holder_name(session, None if holder == "Unattributed" else holder)), amount
        return
    if by == "day":
        for (account, ccy, day), amount in env.ledger.income(since, until, by_day=True).items():
            if account.startswith(PNL_ACCOUNTS):
                yield (account, ccy, day), amount
        return
    # by instrument: each entry names its contract in its metadata
    p, t, a = schema.posting, schema.txn, schema.account
    contract = _meta_field(env.engine.dialect.name, t.c.meta, "contract").label("contract")
    sums = unit_sums(p.c.units, env.engine)  # overflow-free on SQLite too
    query = (sa.select(a.c.name, p.c.commodity, contract, *sums)
             .join(t, t.c.id == p.c.txn_id).join(a, a.c.id == p.c.account_id)
             .where(sa.or_(*(a.c.name.like(prefix + "%") for prefix in PNL_ACCOUNTS)))
             .group_by(a.c.name, p.c.commodity, contract))
    if since:
        query = query.where(p.c.ts >= ts_bound(since))
    if until:
        query = query.where(p.c.ts < ts_bound(until))
    with read_connection(env.engine) as conn:
        for row in conn.execute(query):
            account, ccy, code, total = *row[:3], combine(row, len(sums))
            yield (account, ccy, _instrument_name(session, code or "other")), from_scaled(total)


def _meta_field(dialect: str, column, name: str):
    """A field of an entry's JSON metadata, extracted by the database itself."""
    if dialect == "postgresql":
        return sa.func.json_extract_path_text(sa.cast(column, sa.JSON), name)
    return sa.func.json_extract(column, f"$.{name}")
