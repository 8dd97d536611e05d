"""The first money: `init --capital X [--currency USD]`.

Capital arrives in the ledger as a deposit, `Assets:Broker:<Acct>:Cash` against
`Equity:Deposits`, booked through the same maintenance path as `adjust cash --kind deposit`
(an adjustment record says who and why). A simulated broker is funded with the same cash, so the
ledger and the broker agree from day one and reconciliation is clean before the first trade:

* `--broker sim`: the embedded exchange (`<env>/sim.db`) gets the deposit;
* `--broker ib`: the simulated IB gateway's state (`<env>/ibsim.db`, what `ibsim serve` uses)
  gets it; a real account already holds its cash, and the opening (issue 17) books what the
  broker holds minus what the ledger holds, so nothing is counted twice.

Funding is idempotent: the deposit's ledger key is `deposit:init`, the exchange's journal
reference `init`; running `init --capital` again with the same figure books nothing, with another
figure it refuses (later money is `adjust cash --kind deposit`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tradeledger.engine.context import Context
from tradeledger.engine.setup.environment import ConfigError

INIT_KEY = "deposit:init"
INIT_REF = "init"


@dataclass(frozen=True)
class Funded:
    amount: Decimal
    currency: str
    entry: int | None  # the ledger entry (None when it was already booked)
    broker: str | None  # what was funded at the broker side


def fund(ctx: Context, amount: Decimal, currency: str, when: dt.datetime, who: str = "init") -> Funded:
    """Book the initial deposit and fund the simulated broker with it (each exactly once)."""
    from tradeledger.engine.trust import adjust

    currency = currency.upper()
    if amount <= 0:
        raise ConfigError(f"--capital must be positive, not {amount}")
    existing = ctx.ledger.find_by_key(INIT_KEY)
    entry = None
    if existing is not None:
        booked = ctx.ledger.get(existing)
        cash = next(p for p in booked.postings if p.account == ctx.chart.cash)
        if (cash.units, cash.commodity) != (amount, currency):
            raise ConfigError(f"the initial deposit is already booked as {cash.units} {cash.commodity} "
                              f"(entry {existing}); add money with `adjust cash {currency} AMOUNT --kind deposit`")
    else:
        booked = adjust.book(ctx, lambda conn: adjust.plan_cash(
            conn, ctx, currency, amount, "initial capital", when, INIT_KEY, "deposit"), who)
        entry = booked.txn_id
    return Funded(amount, currency, entry, _fund_broker(ctx, amount, currency))


def _fund_broker(ctx: Context, amount: Decimal, currency: str) -> str | None:
    from tradeledger.broker.simexchange import SimExchange

    if ctx.settings.broker == "sim":
        path = ctx.dir / "sim.db"
    elif ctx.settings.ib_host in ("127.0.0.1", "localhost", "::1"):
        path = ctx.dir / "ibsim.db"  # the simulated gateway's state; a real gateway ignores it
    else:
        return None
    exchange = SimExchange(path, ctx.settings.account)
    try:
        if not any(kind == "deposit" and ref == INIT_REF for _, _, _, kind, ref in exchange.cash_journal()):
            exchange.deposit(currency, amount, ref=INIT_REF)
    finally:
        exchange.close()
    return str(path)
