"""Futures commands: `instruments contracts`, `roll status|set|plan|execute`, `expire`.

Each parses, calls one engine function (engine/futures/) and prints.
"""

from __future__ import annotations

import datetime as _dt
import sys

import click
from tradeledger.commands.common import Invocation, json_option, open_session, parse_date, pass_ctx, reason_option, result_option, said
from tradeledger.reports.render import emit_json, say, table


def _today(c: Invocation, on: str | None) -> _dt.date:
    return parse_date(on, "--date") or c.open().now().date()  # the environment's today (the exchange's on sim)


@click.command("contracts")
@click.argument("instrument")
@click.option("--date", "on", default=None, help="As of this date (default today).")
@click.option("--count", default=6, show_default=True, help="How many listed contracts to show.")
@click.option("--refresh", is_flag=True, help="First ask the broker for its contract dates (IB: contract details).")
@json_option
@pass_ctx
def instruments_contracts(c: Invocation, instrument, on, count, refresh, as_json):
    """The known contracts of a future: last trading day (broker or rule), roll window, which is
    priced, which is next, and who holds what."""
    from tradeledger.engine.futures.fetch import contracts_with_refresh

    with open_session(c) as session:
        rows, differences = contracts_with_refresh(session, instrument, _today(c, on), count, refresh)
    if as_json:
        emit_json(rows)
        return
    for line in differences:
        say(f"differs from the rule: {line}")
    table(f"{instrument} contracts", ["contract", "last trade", "source", "expires", "first notice", "roll from",
                                      "force from", "role", "held by"],
          [(r["contract"], r["last_trade"] + (" (rule " + r["rule_last_trade"] + ")" if r["differs_from_rule"] else ""),
            r["source"], r["real_expiration"] or "", r["first_notice"] or "", r["roll_start"], r["force_from"],
            r["role"], r["held_by"])
           for r in rows])


@click.group("roll")
def roll_group():
    """Roll states per instrument: status, set, plan, execute."""


@roll_group.command("status")
@click.option("--date", "on", default=None, help="As on this date (YYYY-MM-DD; default: the environment's today).")
@json_option
@pass_ctx
def roll_status_cmd(c: Invocation, on, as_json):
    """Per instrument: contracts held per strategy, the roll's old and new contract, days to the
    deadline, the state and who set it."""
    from tradeledger.engine.futures.status import roll_status

    rows = roll_status(c.open(), _today(c, on))
    for line in (w for r in rows for w in r.warnings):  # raised as held_into_expiry exceptions
        click.echo(f"warning: {line}", err=True)
    if as_json:
        emit_json([r.as_json() for r in rows])
        return
    table("rolls", ["instrument", "state", "set by", "old", "new", "days to deadline", "held"],
          [(r.instrument, r.state, r.source, r.old or "", r.new, "" if r.days_to_deadline is None else r.days_to_deadline,
            "; ".join(f"{h}: " + ", ".join(f"{u} {code}" for code, u in by.items()) for h, by in r.held.items()))
           for r in rows])


@roll_group.command("set")
@click.argument("instrument")
@click.argument("state", type=click.Choice(["no_roll", "passive", "force", "force_outright", "close", "auto"]))
@reason_option(required=False, help="Why: kept with the roll state.")
@result_option
@pass_ctx
def roll_set_cmd(c: Invocation, instrument, state, reason, as_json):
    """Pin an instrument's roll state (auto: the calendar decides again)."""
    from tradeledger.engine.futures.status import set_roll_state

    env = c.open()
    now = env.now()
    set_roll_state(env, instrument, state, "cli", reason or "", now)
    said(as_json, {"instrument": instrument, "state": state, "pinned": state != "auto", "reason": reason, "at": now},
         f"{instrument}: roll state {state}" + (" (the calendar decides)" if state == "auto" else " (pinned)"))


@roll_group.command("plan")
@click.option("--date", "on", default=None, help="As on this date (YYYY-MM-DD; default: the environment's today).")
@json_option
@pass_ctx
def roll_plan_cmd(c: Invocation, on, as_json):
    """The orders the rolls would send now, netted across strategies (nothing is sent)."""
    from tradeledger.engine.futures.execute import roll_plan

    from tradeledger.engine.targets.prices import trading_config
    from tradeledger.reports.names import Names

    with open_session(c) as session:
        order_plan = roll_plan(session, _today(c, on))
        n = Names(trading_config(session)).strategy  # the user's strategy names, not account components
    rows = []
    for sp in order_plan.spreads:
        rows.append({"instrument": sp.instrument, "kind": "spread", "order": f"{sp.old_side or '-'} {sp.old.code} / "
                     f"{'BUY' if sp.old_side == 'SELL' else 'SELL'} {sp.new.code}" if sp.old_side else "all crossed",
                     "quantity": str(sp.quantity), "moves": {n(h): str(q) for h, q in sp.moves},
                     "crosses": len(sp.old_crosses), "allocation": {n(h): str(q) for h, q in sp.shares},
                     "refused": sp.refused})
    for cp in order_plan.contracts:
        if cp.side or cp.crosses:
            rows.append({"instrument": cp.instrument, "kind": "outright", "order": f"{cp.side or '-'} {cp.contract.code}",
                         "quantity": str(cp.quantity), "moves": {n(h): str(q) for h, q in cp.changes if q},
                         "crosses": len(cp.crosses), "allocation": {n(h): str(q) for h, q in cp.shares},
                         "refused": cp.refused})
    if as_json:
        emit_json(rows)
        return
    table("roll plan", ["instrument", "kind", "order", "qty", "moves", "crosses", "allocation", "refused"],
          [(r["instrument"], r["kind"], r["order"], r["quantity"], r["moves"], r["crosses"], r["allocation"], r["refused"])
           for r in rows])


@roll_group.command("execute")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the roll orders to fill.")
@json_option
@pass_ctx
def roll_execute_cmd(c: Invocation, timeout, as_json):
    """Send the rolls due now (spreads and outright legs), wait for the fills and book them; exits
    non-zero when a roll was refused or a spread stopped with one leg filled."""
    from tradeledger.engine.futures.execute import execute_rolls

    with open_session(c) as session:
        result = execute_rolls(session, timeout=timeout)
    if as_json:
        emit_json(result)
    else:
        say(f"rolls: {result['spreads']} spread(s), {result['outright']} outright order(s), "
            f"{result['crosses']} cross(es); booked {result['booked']} execution(s)")
        for code, why in result["refused"]:
            say(f"refused {code}: {why}")
        for line in result["interrupted"]:  # raised as interrupted_roll; the next cycle completes it
            click.echo(f"error: {line}", err=True)
    if result["interrupted"] or result["refused"]:
        sys.exit(1)


@click.command("adjusted")
@click.argument("instrument")
@click.option("--last", default=10, show_default=True, help="How many of the latest days to print.")
@json_option
@pass_ctx
def data_adjusted(c: Invocation, instrument, last, as_json):
    """Rebuild and show the back-adjusted (Panama) series of a future from its contract closes:
    each day's raw close, its contract and the adjustment added."""
    from tradeledger.engine.futures.panama import rebuild_series

    rows = rebuild_series(c.open(), instrument)[-last:]
    data = [{"date": r.date.isoformat(), "contract": r.contract, "raw": r.raw, "adjustment": r.adjustment,
             "adjusted": r.price} for r in rows]
    if as_json:
        emit_json(data)
        return
    table(f"{instrument} back-adjusted", ["date", "contract", "raw", "adjustment", "adjusted"],
          [(r["date"], r["contract"], r["raw"], r["adjustment"], r["adjusted"]) for r in data])


@click.command("fetch")
@click.argument("instruments", nargs=-1)
@click.option("--days", default=5, show_default=True, type=int, help="How many days of daily bars to ask for.")
@json_option
@pass_ctx
def data_fetch(c: Invocation, instruments, days, as_json):
    """Daily bars from the broker (IB: reqHistoricalData): per contract for futures (the old one
    while it trades, the priced one, the next ones carry reads, those held), per ticker for
    shares; stored like an import, so a rerun stores nothing new. Futures' contract dates are
    asked for first (IB: contract details)."""
    from tradeledger.engine.futures.fetch import fetch_bars

    with open_session(c) as session:
        report = fetch_bars(session, instruments, days)
    if as_json:
        emit_json(report.as_json())
        return
    say(str(report))
    for line in report.differences:
        say(f"differs from the rule: {line}")
    for line in report.missing:
        say(f"no bars: {line}")


def _attach() -> None:
    from tradeledger.commands.targets import data_group, instruments_group

    instruments_group.add_command(instruments_contracts)
    data_group.add_command(data_adjusted)
    data_group.add_command(data_fetch)


_attach()
COMMANDS = [roll_group]
