"""Rolling without changing exposure: `roll plan` and `roll execute`.

A roll alone is a target run whose targets are the strategies' current exposures: nothing but the
roll states move anything; except after an interrupted roll (one leg filled, the other not) still
open, whose holders are targeted at what they are meant to hold, so that the missing leg trades. It is recorded like any run (state approved, reviewed by `roll`, its
inputs saying so) so that its crosses, orders and fills are attributed and restartable exactly as
a strategy run's (engine/trading/orders.py); `cycle --approve` plans the same rolls together with
the day's exposure changes, netted, in one run.

A roll run is newer than any run before it, so it would supersede a strategy run still waiting
for its review (or approved and not executed yet): the reviewer's run could no longer be executed,
and the day's exposure changes would be silently dropped. `roll execute` therefore refuses while
such a run exists, naming it: execute it with `cycle --approve` (which rolls too), or reject it.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine import tables
from tradeledger.engine.futures.exposure import exposures, instrument_index
from tradeledger.engine.futures.interrupted import intended_exposures, interrupted_of_run
from tradeledger.engine.setup.config import current_contract
from tradeledger.engine.targets.prices import (
    PriceError, fx_rate_on, latest_contract_close, latest_price, latest_settlement,
)
from tradeledger.engine.targets.runs import APPROVED, PENDING, TargetError, list_runs
from tradeledger.engine.trading.cycle import plan_run, submit_run, wait_for_fills
from tradeledger.engine.trading.orders import holder_positions
from tradeledger.ledger.numbers import to_scaled
from tradeledger.ledger.store import fmt_ts


def _price(ctx: Context, instrument, on: dt.date, conn) -> Decimal:
    """The instrument's close, else its current contract's own close, else its settlement."""
    code = current_contract(instrument, on).code
    for latest, key in ((latest_price, instrument.name), (latest_contract_close, code)):
        try:
            return latest(ctx, key, on, conn)[1]
        except PriceError:
            continue
    return latest_settlement(ctx, code, on, conn)[1]


def record_roll_run(session, on: dt.date, now: dt.datetime) -> int:
    """An approved run whose targets are the current exposures of every held future; a holder of
    an interrupted roll still open is targeted at what it is meant to hold (`intended_exposures`:
    its exposure before the half roll, or a later run's target), so the roll completes it."""
    env, config = session, session.config
    of = instrument_index(config)
    by_component = {s.account_name: s for s in config.strategies.values()}
    with env.engine.begin() as conn:
        held = exposures(holder_positions(env.ledger, env.chart, conn), of)
        intended = intended_exposures(conn, of)
        rows = []
        for holder, name in sorted(set(held) | set(intended), key=lambda k: (str(k[0]), k[1])):
            units = held.get((holder, name), Decimal(0))
            instrument = config.instruments[name]
            strategy = by_component.get(holder)
            if strategy is None or not instrument.is_future:
                continue  # unattributed positions are not rolled by tradeledger
            price = _price(env, instrument, on, conn)
            fx = fx_rate_on(env, instrument.currency, on, conn)[1]
            contract = current_contract(instrument, on)
            target = intended[(holder, name)][0] if (holder, name) in intended else units
            explain = {"kind": "roll", "strategy": strategy.name, "account": holder, "execution_instrument": name,
                       "signal_instrument": name, "contract": contract.code, "price": str(price), "fx_rate": str(fx),
                       "current": str(units), "target": str(target)}
            if (holder, name) in intended:
                explain["completes"] = f"interrupted spread {intended[(holder, name)][1]}"
            rows.append({"strategy": strategy.name, "instrument": name, "contract": contract.code,
                         "current": to_scaled(units), "target": to_scaled(target),
                         "explain": json.dumps(explain, sort_keys=True)})
        run_id = conn.execute(tables.target_run.insert().values(
            created_at=fmt_ts(now), as_of=on.isoformat(), state=APPROVED, reviewed_at=fmt_ts(now), reviewed_by="roll",
            review_note="roll: targets are the current exposures", inputs=json.dumps({"kind": "roll"}),
        )).inserted_primary_key[0]
        if rows:
            conn.execute(tables.target_line.insert(), [{"run_id": run_id, **row} for row in rows])
    return int(run_id)


def roll_plan(session, on: dt.date):
    """What the rolls due on `on` would send (a plan only: nothing is recorded or sent)."""
    now = session.now()
    run_id = record_roll_run(session, on, now)
    try:
        return plan_run(session, run_id, now, on)
    finally:
        _forget_run(session, run_id)


def _forget_run(ctx: Context, run_id: int) -> None:
    """A planned-only roll run leaves nothing behind (it was never reviewed by a person)."""
    with ctx.engine.begin() as conn:
        conn.execute(tables.target_line.delete().where(tables.target_line.c.run_id == run_id))
        conn.execute(tables.target_run.delete().where(tables.target_run.c.id == run_id))


def run_under_review(ctx: Context, now: dt.datetime) -> str | None:
    """Why a roll run may not be recorded now: the newest strategy run, when it is still pending
    review or approved and not planned yet (and not expired), in words; else None."""
    runs = list_runs(ctx, now)
    if not runs or runs[0].inputs.get("kind") == "roll" or runs[0].status not in (PENDING, APPROVED):
        return None
    newest = runs[0]
    if newest.status == APPROVED:
        with ctx.engine.begin() as conn:
            planned = conn.execute(sa.select(tables.run_plan.c.run_id).where(
                tables.run_plan.c.run_id == newest.id).limit(1)).first()
        if planned is not None:
            return None
        return (f"run {newest.id} is approved and not executed yet: execute it with `tradeledger cycle --approve "
                f"--run {newest.id}` (it rolls too); a roll run now would supersede it")
    return (f"run {newest.id} is pending review: approve and execute it with `tradeledger cycle --approve --run "
            f"{newest.id}` (it rolls too), or reject it; a roll run now would supersede it")


def execute_rolls(session, timeout: float = 30.0) -> dict:
    now = session.now()
    waiting = run_under_review(session, now)
    if waiting:
        raise TargetError(f"roll execute refused: {waiting}")
    run_id = record_roll_run(session, now.date(), now)
    order_plan = submit_run(session, run_id, now, what="roll execute").plan
    fills = wait_for_fills(session, run_id, timeout)
    return {"run": run_id, "interrupted": interrupted_of_run(session, run_id), "spreads": sum(1 for s in order_plan.spreads if s.old_side and not s.refused),
            "outright": sum(1 for c in order_plan.contracts if c.side and not c.refused),
            "crosses": sum(len(c.crosses) for c in order_plan.contracts if not c.refused)
            + sum(len(s.old_crosses) + len(s.new_crosses) for s in order_plan.spreads if not s.refused),
            "booked": len(fills.booked), "refused": order_plan.refusals}
