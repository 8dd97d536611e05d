"""`tradeledger` commands: orders, fills, settlement marks, positions, P&L, the simulated broker's screen, the cycle and the demo.

Registered on the `main` group of cli.py, which imports this module; each command opens its
environment, calls the engine, and prints a table or JSON.
"""

from __future__ import annotations

import datetime as _dt
import getpass as _getpass
import sys
from pathlib import Path

import click
from tradeledger.commands.common import (
    Invocation, SIGNED, currency_and_amount, define_contract_options, described_contract, json_option, open_session, parse_date, pass_ctx, lazy, lazy_function,
    execution_json, result_option, said, warn_far_from_market,
)
from tradeledger.ledger.numbers import money_exact, money_text, to_decimal as _to_decimal
from tradeledger.reports.names import Names
from tradeledger.reports.render import emit_json, say, table
from tradeledger.errors import UnknownName, UserError

# --- orders, fills, marks, positions, P&L, the simulated broker's screen, the cycle ---
# Imported on first use (commands/common.py: lazy): starting the CLI imports no engine.
_cycle = lazy("tradeledger.engine.trading.cycle")
_fills = lazy("tradeledger.engine.trading.fills")
_marking = lazy("tradeledger.engine.trading.marking")
_orders = lazy("tradeledger.engine.trading.orders")
_Session = lazy_function("tradeledger.engine.setup.session", "Session")
db = lazy("tradeledger.ledger.db")
check_ledger = lazy_function("tradeledger.ledger.export", "check")
export_ledger = lazy_function("tradeledger.engine.accounting.export", "export_ledger")
_pnl = lazy("tradeledger.reports.pnl")
_quick_positions = lazy_function("tradeledger.reports.positions", "quick_positions")
_quick_pnl = lazy_function("tradeledger.reports.pnl_fast", "quick_pnl")
_quick_series_pnl = lazy_function("tradeledger.reports.series_fast", "quick_series_pnl")


def _spread_order(sp) -> str:
    """A roll spread's order in words: its size and both legs ("" when every unit crossed)."""
    if not sp.old_side or not sp.quantity:
        return ""
    return f"spread {sp.quantity}: {sp.old_side} {sp.old.code}, {'BUY' if sp.old_side == 'SELL' else 'SELL'} {sp.new.code}"


def _plan_rows(order_plan, names: Names):
    """The plan's table: a roll spread (both legs, crosses on each, allocated back), then each contract."""
    n = names.strategy
    for sp in order_plan.spreads:
        crosses = "; ".join(f"{n(x.seller)}->{n(x.buyer)} {x.quantity}" for x in sp.old_crosses)
        limits = f"REFUSED: {sp.refused}" if sp.refused else "ok"
        yield (sp.code, "roll " + ", ".join(f"{n(h)} {q:+}" for h, q in sp.moves), crosses, _spread_order(sp),
               ", ".join(f"{n(h)} {q}" for h, q in sp.shares), "", f"{sp.old_price} / {sp.new_price}", limits)
    for cp in order_plan.contracts:
        crosses = "; ".join(f"{n(x.seller)}->{n(x.buyer)} {x.quantity}" for x in cp.crosses)
        order = f"{cp.side} {cp.quantity}" if cp.side and cp.quantity else ""
        limits = f"REFUSED: {cp.refused}" if cp.refused else (f"CLIPPED: {cp.clipped}" if cp.clipped else "ok")
        yield (cp.contract.code, ", ".join(f"{n(h)} {q:+}" for h, q in cp.changes), crosses, order,
               ", ".join(f"{n(h)} {q}" for h, q in cp.shares), ", ".join(f"{n(h)} {q:+}" for h, q in cp.in_flight),
               cp.reference_price, limits)


def _plan_json(order_plan, names: Names):
    n = names.strategy
    return {"run": order_plan.run_id, "contracts": [{
        "contract": cp.contract.code, "instrument": cp.instrument, "reference_price": cp.reference_price,
        "changes": names.keys(dict(cp.changes)), "crosses": [{"seller": n(x.seller), "buyer": n(x.buyer),
                                                              "qty": x.quantity} for x in cp.crosses],
        "order": {"side": cp.side, "qty": cp.quantity, "allocation": names.keys(dict(cp.shares))}
        if cp.side and cp.quantity else None, "in_flight": names.keys(dict(cp.in_flight)), "outcome": cp.outcome,
        "refused": cp.refused or None, "clipped": cp.clipped or None} for cp in order_plan.contracts],
        "spreads": [{
            "spread": sp.code, "instrument": sp.instrument, "old": sp.old.code, "new": sp.new.code,
            "reference_prices": {sp.old.code: sp.old_price, sp.new.code: sp.new_price},
            "moves": names.keys(dict(sp.moves)),
            "crosses": [{"seller": n(x.seller), "buyer": n(x.buyer), "qty": x.quantity} for x in sp.old_crosses],
            "order": {"qty": sp.quantity, "old_side": sp.old_side, "allocation": names.keys(dict(sp.shares))}
            if sp.old_side and sp.quantity else None, "outcome": sp.outcome, "refused": sp.refused or None}
            for sp in order_plan.spreads]}


def _names(env) -> Names:
    from tradeledger.engine.targets.prices import trading_config

    return Names(trading_config(env))


def _show_plan(order_plan, names: Names):
    table(f"plan for run {order_plan.run_id}", ["contract", "changes", "crosses", "order", "allocation",
                                                "in flight", "reference", "limits"], _plan_rows(order_plan, names))


def _execution_json(x, names: Names, fills=None, still_working=()):
    """Everything one execution of a run did, for --json (cycle and orders submit)."""
    data = _plan_json(x.plan, names) if x.plan is not None else {"run": x.run_id, "contracts": []}
    sync = _sync_json(x.synced)
    data |= {"resumed": x.resumed, "nothing_sent_because": dict(x.nothing_sent_because),
             "sent": x.submitted.sent, "already_at_broker": x.submitted.already_at_broker,
             "rejected": x.submitted.rejected, "refused": dict(x.refusals), "clipped": dict(x.submitted.clips),
             "settled": x.settled.lines, "unknown": x.settled.unknown + x.submitted.unknown, "sync_before": sync,
             "fills_booked": x.synced.booked + (fills.booked if fills else []),
             "sync_after": _sync_json(fills) if fills else None, "still_working": list(still_working)}
    return data


def _sync_json(report):
    return {"booked": report.booked, "commissions": report.commissions, "replays": report.replays,
            "unattributed": report.unattributed, "pending_commissions": report.pending_commissions,
            "corrections_not_booked": report.corrections, "correction_reasons": report.correction_reasons,
            "corrected": report.corrected, "failed": [{"exec_id": e, "error": why} for e, why in report.failed],
            "commission_changes": [{"exec_id": c.exec_id, "booked": c.booked, "reported": c.reported,
                                    "currency": c.currency} for c in report.commission_changes]}


def _echo_sync(report, what):
    """Every part of a sync report, as lines; problems on stderr."""
    say(f"{what}: {len(report.booked)} fills booked, {len(report.commissions)} late commissions booked, "
               f"{len(report.corrected)} corrections booked, {report.replays} already booked, "
               f"{len(report.pending_commissions)} commissions pending")
    for key in report.unattributed:
        click.echo(f"warning: fill {key} has no order of ours: booked to Unattributed", err=True)
    for c in report.commission_changes:  # at the cents as booked, never rounded (money_exact)
        click.echo(f"warning: the broker changed the commission of execution {c.exec_id} from "
                   f"{money_exact(c.booked, c.currency)} to {money_exact(c.reported, c.currency)} {c.currency}: "
                   "the difference is booked", err=True)
    for key in report.corrections:
        why = report.correction_reasons.get(key, "")
        click.echo(f"warning: execution correction {key} is not booked{': ' + why if why else ''}; "
                   f"see `tradeledger fills list`", err=True)
    if report.failed:
        click.echo(f"error: {len(report.failed)} executions could not be booked", err=True)
    for exec_id, why in report.failed:
        click.echo(f"error: execution {exec_id} not booked: {why}", err=True)


def _echo_execution(x, names: Names, fills=None, still_working=()):
    """The plan (or what the recorded plan decided), what was sent, and every problem, one line each."""
    for line in x.settled.lines:
        say(f"older order {line}")
    if x.plan is not None:
        _show_plan(x.plan, names)
    else:
        say(f"run {x.run_id} was planned before: each line as recorded then")
        for code, why in x.nothing_sent_because:
            say(f"  {code}: {why}")
    _echo_sync(x.synced, "before planning")
    r = x.submitted
    say(f"{r.crosses} crosses booked, {len(r.sent)} orders sent, {len(r.already_at_broker)} found already at "
               f"the broker, {len(r.rejected)} rejected by the broker, {len(x.refusals)} refused by limits")
    if fills is not None:
        _echo_sync(fills, "after sending")
    for ref, why in r.rejected:
        click.echo(f"error: order {ref} rejected by the broker: {why}", err=True)
    for code, why in x.refusals:
        click.echo(f"error: {code} refused: {why}", err=True)
    for code, why in r.clips:
        click.echo(f"warning: {code} clipped: {why}", err=True)
    for line in r.unknown:
        click.echo(f"error: {line}", err=True)
    for line in still_working:
        if ", unknown, run" in line:  # held as of unknown outcome (engine/trading/unknown.py)
            click.echo(f"error: outcome unknown, counted and its instrument not traded: {line}: "
                       f"`tradeledger exceptions list` says how to resolve it", err=True)
        else:
            click.echo(f"error: still working, not waited for: {line} (the next cycle counts it)", err=True)


@click.group("orders")
def orders_group():
    """Orders from an approved target run."""


@orders_group.command("plan")
@click.argument("run_id", type=int)
@json_option
@pass_ctx
def orders_plan(c: Invocation, run_id, as_json):
    """Preview the crosses and broker orders of an approved run; nothing is recorded or sent."""
    with open_session(c) as session:  # an interrupted roll is checked at the broker first
        order_plan = _cycle.plan_run(session, run_id, session.now())
    names = _names(session)
    emit_json(_plan_json(order_plan, names)) if as_json else _show_plan(order_plan, names)


@orders_group.command("submit")
@click.argument("run_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (live environments ask).")
@click.option("--wait", "wait", type=float, default=10.0, show_default=True, help="Seconds to wait for fills.")
@json_option
@pass_ctx
def orders_submit(c: Invocation, run_id, yes, wait, as_json):
    """Book the crosses, record the orders, then send them (each with an orderRef naming it).

    Exits non-zero when a limit refused a line, the broker rejected an order, an execution could not
    be booked, or an order is still working when the wait ends."""
    with open_session(c) as session:
        if session.name == "live" and not yes:
            click.confirm(f"Send run {run_id}'s orders to LIVE account {session.settings.account}?", abort=True)
        x = _cycle.submit_run(session, run_id, session.now())
        fills = _cycle.wait_for_fills(session, run_id, timeout=wait)
        working = _cycle.still_working(session)
    if as_json:
        emit_json(_execution_json(x, _names(session), fills, working))
    else:
        _echo_execution(x, _names(session), fills, working)
    if x.refusals or x.submitted.rejected or x.synced.failed or fills.failed or working:
        sys.exit(1)


@orders_group.command("list")
@json_option
@pass_ctx
def orders_list(c: Invocation, as_json):
    """Every order: state, quantity, filled, allocation."""
    env = c.open()
    with db.read_connection(env.engine) as conn:
        rows = _orders.list_orders(conn)
    names = _names(env)
    rows = [r | {"allocation": names.keys(r["allocation"])} for r in rows]
    if as_json:
        emit_json(rows)
        return
    table("orders", ["id", "order_ref", "run", "contract", "side", "qty", "filled", "state", "allocation"],
          [(r["id"], r["order_ref"], r["run"], r["contract"], r["side"], r["quantity"], r["filled"], r["state"],
            ", ".join(f"{k} {v}" for k, v in r["allocation"].items())) for r in rows])


@orders_group.command("cancel")
@click.argument("order_id", type=int)
@result_option
@pass_ctx
def orders_cancel(c: Invocation, order_id, as_json):
    """Cancel an order that is not done; what already filled stays booked."""
    with open_session(c) as session:
        ref, confirmed = _cycle.cancel_order(session, order_id)
    data = {"order": order_id, "order_ref": ref, "cancelled": confirmed}
    if not confirmed:
        said(as_json, data, f"error: cancel of order {order_id} ({ref}) requested; the broker has not confirmed it "
                            f"yet, so it still counts as working", err=True)
        sys.exit(1)
    said(as_json, data, f"cancelled order {order_id} ({ref})")


@orders_group.command("resolve")
@click.argument("order_id", type=int)
@click.option("--filled", "outcome", flag_value="filled",
              help="The broker's statement shows its executions, and they are booked (`tradeledger import flex`).")
@click.option("--never-sent", "outcome", flag_value="never_sent",
              help="The broker's statement shows no execution for its orderRef: it never traded.")
@result_option
@pass_ctx
def orders_resolve(c: Invocation, order_id, outcome, as_json):
    """Settle an order of unknown outcome (the broker no longer reports it) from the broker's statement.

    Check the statement for the order's orderRef first. If it traded: `tradeledger import flex FILE`
    books its executions (exactly once), then --filled. If it has no execution: --never-sent.
    Until then the order counts as in flight and its instrument is not traded."""
    if outcome is None:
        raise click.UsageError("say what the broker's statement shows: --filled or --never-sent")
    with open_session(c) as session:
        said_text = _cycle.resolve_order(session, order_id, outcome, _getpass.getuser())
    said(as_json, {"order": order_id, "resolved": outcome, "detail": said_text}, said_text)


@click.group("fills")
def fills_group():
    """Executions: sync from the broker, and the blotter."""


@fills_group.command("sync")
@json_option
@pass_ctx
def fills_sync(c: Invocation, as_json):
    """Book every execution the broker reports that is not booked yet (and late commissions).

    Exits non-zero when an execution could not be booked (each one is listed with the error), or
    when a roll's spread is found stopped with unequal legs (raised as interrupted_roll)."""
    from tradeledger.engine.futures.interrupted import check_spreads

    with open_session(c) as session:
        report = _fills.sync_fills(session, session.broker)
        interrupted = check_spreads(session, session.broker, session.now())  # raised as interrupted_roll
    if as_json:
        emit_json(_sync_json(report) | {"interrupted_rolls": interrupted})
    else:
        _echo_sync(report, "fills sync")
        for line in interrupted:
            click.echo(f"error: {line}", err=True)
    if report.failed or interrupted:
        sys.exit(1)


@fills_group.command("list")
@click.option("--limit", type=int, default=None, help="Only the last N fills.")
@json_option
@pass_ctx
def fills_list(c: Invocation, limit, as_json):
    """The blotter: fill id, order, strategy, contract, quantity, price, time, commission (or pending)."""
    env = c.open()
    with db.read_connection(env.engine) as conn:
        rows = _fills.list_fills(conn, env.ledger, limit)
    names = _names(env)
    # The user's names in both faces; JSON keeps the name a name (`attributed_to` says the rest).
    rows = [r | {"strategy": names.listed(r["strategy"]), "allocation": names.keys(r["allocation"]),
                 "attributed_to": r["attributed_to"] and names.strategy(r["attributed_to"])} for r in rows]
    if as_json:
        emit_json(rows)
        return
    table("fills", ["fill", "execution", "order", "strategy", "contract", "side", "qty", "price", "time",
                    "commission"],
          [(r["fill_id"], r["exec_id"], r["order"] or "-",
            r["strategy"] + (" (attributed)" if r["attributed_to"] else ""), r["contract"], r["side"], r["quantity"],
            r["price"], r["time"][:19], r["commission"]) for r in rows],
          empty="no fills", optional=["fill", "order", "time"])  # the execution id holds the fill's


@click.command("mark")
@click.option("--date", "day", default=None, help="Settlement date (YYYY-MM-DD; default: today).")
@json_option
@pass_ctx
def mark(c: Invocation, day, as_json):
    """Book the day's settlement variation margin per strategy and contract, once per date (never a
    future date; today's before the settlement time is booked at the present moment).

    Never a day whose marks something later has moved on from (the next day's settlement, a fill
    after the close): the mark chain runs forward, and a late settlement is refused, exit 1."""
    with open_session(c) as session:
        day, done = _marking.mark_settlements(session, parse_date(day, "--date"))
    booked, missing = done.booked, done.missing
    if as_json:
        emit_json({"date": day, "booked": booked, "missing_settlement": missing,
                   "marked_later": [{"contract": code, "marks_moved_at": at} for code, at in done.later]})
    else:
        say(f"{day}: settlement booked for {len(booked)} contracts"
                   + (f"; no settlement price for {', '.join(missing)}" if missing else ""))
    for code, at in done.later:
        click.echo(f"error: {code} not marked for {day}: its marks moved on at {at:%Y-%m-%d %H:%M:%S} UTC, after that day's "
                   f"settlement, and what moved them carries the variation margin (a late settlement is never "
                   f"booked backwards)", err=True)
    if missing or done.later:
        sys.exit(1)


@click.command("positions")
@click.option("--strategy", default=None, help="Only this strategy (or 'unattributed').")
@json_option
@pass_ctx
def positions_cmd(c: Invocation, strategy, as_json):
    """Positions per strategy and contract, from the ledger."""
    # the read path without SQLAlchemy when it can vouch for the environment, else the full one
    rows = _quick_positions(c.home, c.env, c.db_url, strategy)
    if rows is None:
        rows = _pnl.positions(c.open(), strategy)
    if as_json:
        emit_json(rows)
        return
    positions_table(rows)


def positions_table(rows) -> None:
    """The one layout of positions (`positions`, the demo, `cycle --approve`)."""
    table("positions", ["strategy", "contract", "qty", "mark", "last", "unrealized", "currency"],
          [(r["strategy"], r["contract"], r["qty"], r.get("mark"), r.get("last"), r.get("unrealized"),
            r.get("currency")) for r in rows])


@click.command("pnl")
@click.option("--by", type=click.Choice(["strategy", "instrument", "day"]), default="strategy", show_default=True,
              help="One row per strategy, per instrument or per day (with a TOTAL row).")
@click.option("--since", default=None, help="From this date (YYYY-MM-DD), inclusive.")
@click.option("--until", default=None, help="Up to this date (YYYY-MM-DD), exclusive.")
@click.option("--cumulative", is_flag=True, help="With --by day: the cumulative P&L of the period too.")
@json_option
@pass_ctx
def pnl_cmd(c: Invocation, by, since, until, cumulative, as_json):
    """Realized (variation margin and lot gains), change in unrealized, commissions and net, in the base
    currency; the days of any period add up to its total."""
    if cumulative and by != "day":
        raise click.UsageError("--cumulative goes with --by day")
    since, until = parse_date(since, "--since"), parse_date(until, "--until")
    result = None
    if by in ("strategy", "instrument") and until is None:  # the read path without SQLAlchemy
        result = _quick_pnl(c.home, c.env, c.db_url, by, since)
    if result is None:  # the replay's rows, resumed from a valid checkpoint without SQLAlchemy
        result = _quick_series_pnl(c.home, c.env, c.db_url, by, since, until, cumulative)
    if result is None:
        result = _pnl.pnl(c.open(), by, since, until, cumulative=cumulative)
    if as_json:
        emit_json(result)
        return
    pnl_table(result, by, cumulative)


def pnl_table(result: dict, by: str = "strategy", cumulative: bool = False) -> None:
    """The one layout of P&L (`pnl`, the demo, `cycle --approve`): base currency, a TOTAL row."""
    columns = ["realized", "unrealized", "income", "commissions", "net"] + (["cumulative"] if cumulative else [])
    rows = [(r[by], *(r[k] for k in columns)) for r in result["rows"]]
    summed = [k for k in columns if k != "cumulative"]
    if len(rows) > 1 and all(r[k] is not None for r in result["rows"] for k in summed):
        total = [sum(r[k] for r in result["rows"]) for k in summed]  # base currency: they add up
        rows.append(("TOTAL", *total, *([total[-1]] if cumulative else [])))
    table(f"P&L by {by} ({result['currency']})", [by, *columns], rows)
    if result["missing_fx"]:
        click.echo(f"warning: no FX rate for {', '.join(result['missing_fx'])}: base totals left blank", err=True)


@click.group("sim")
def sim_group():
    """The simulated broker's own screen: trades outside tradeledger, prices, settlement, faults."""


def _sim_contract(session, code):
    from tradeledger.engine.setup.config import instrument_of_contract, to_contract

    instrument = instrument_of_contract(session.config, code)
    if instrument is None:
        known = session.exchange().contract(code)
        if known is None:
            raise UnknownName("contract", code, None, see="tradeledger instruments list")
        return known
    expiry = ""
    if instrument.is_future:
        from tradeledger.engine.setup.config import MONTH_CODES

        expiry = f"20{code[-2:]}{MONTH_CODES.index(code[-3]) + 1:02d}"
    return to_contract(instrument, code, expiry)


@sim_group.group("clock")
def sim_clock():
    """The simulated exchange's clock: every command of a sim environment reads the time from it."""


def _parse_when(text: str) -> _dt.datetime:
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC unless a zone "
                                 f"is given)", param_hint="WHEN") from None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def _parse_duration(text: str) -> _dt.timedelta:
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise click.BadParameter(f"{text!r} is not a duration such as 1d, 6h, 30m", param_hint="DURATION")
    return _dt.timedelta(**{units[unit]: int(number)})


@sim_group.command("day-window")
@click.argument("zone", required=False)
@click.option("--off", is_flag=True, help="Remember every order and execution again (the default).")
@result_option
@pass_ctx
def sim_day_window(c: Invocation, zone, off, as_json):
    """Make the exchange forget like IB: no order done and no execution made before midnight in ZONE
    (an IANA name, e.g. America/New_York) is reported any more. Without ZONE: show the setting."""
    if zone and off:
        raise click.UsageError("give a ZONE or --off, not both")
    with open_session(c) as session:
        exchange = session.exchange()
        if zone or off:
            try:
                exchange.set_day_window(None if off else zone)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="ZONE") from None
        current, since = exchange.day_window(), exchange.memory_since()
    said(as_json, {"day_window": current, "memory_since": since},
         f"day window: midnight {current}; the exchange remembers since {since.isoformat()}" if current
         else "day window: off; the exchange remembers every order and execution")


@sim_clock.command("show")
@result_option
@pass_ctx
def sim_clock_show(c: Invocation, as_json):
    """Print the exchange's time (UTC)."""
    with open_session(c) as session:
        now = session.exchange().now()
    said(as_json, {"clock": now}, now.isoformat())


@sim_clock.command("set")
@click.argument("when")
@result_option
@pass_ctx
def sim_clock_set(c: Invocation, when, as_json):
    """Set the exchange's clock to WHEN (2026-12-02 or 2026-12-02T15:00; UTC unless a zone is given)."""
    with open_session(c) as session:
        exchange = session.exchange()
        target = _parse_when(when)
        was = exchange.now()
        if target < was:
            raise click.BadParameter(f"{target.isoformat()} is before the exchange's time {was.isoformat()}:"
                                     " its clock only moves forward", param_hint="WHEN")
        exchange.set_clock(target)
        now = exchange.now()
    said(as_json, {"clock": now, "was": was}, f"exchange clock: {now.isoformat()}")


@sim_clock.command("advance")
@click.argument("duration")
@result_option
@pass_ctx
def sim_clock_advance(c: Invocation, duration, as_json):
    """Move the exchange's clock forward by DURATION (1d, 6h, 30m, 45s)."""
    delta = _parse_duration(duration)
    with open_session(c) as session:
        now = session.exchange().advance_clock(delta)
    said(as_json, {"clock": now, "was": now - delta}, f"exchange clock: {now.isoformat()}")


@sim_group.command("trade", context_settings=SIGNED)
@click.argument("contract")
@click.argument("qty")
@click.argument("price")
@result_option
@pass_ctx
def sim_trade(c: Invocation, contract, qty, price, as_json):
    """A trade made at the broker outside tradeledger (no orderRef): QTY signed, e.g. -2."""
    session = c.open()  # a Context: the simulated exchange needs no broker connection
    known = _sim_contract(session, contract)  # an unknown name is refused before any warning
    warn_far_from_market(session.exchange(), contract, _to_decimal(price, "PRICE"), trade=True)
    execution = session.exchange().external_trade(known, _to_decimal(qty, "QTY"), _to_decimal(price, "PRICE"))
    said(as_json, execution_json(execution),
         f"broker executed {execution.side} {execution.quantity} {contract} @ {execution.price} "
         f"({execution.exec_id}); `tradeledger fills sync` books it")


@sim_group.command("dividend", context_settings=SIGNED)
@click.argument("ticker")
@click.argument("per_share")
@click.option("--withholding", default="0", show_default=True, help="Fraction withheld at source, e.g. 0.15.")
@click.option("--pay-date", default=None, help="When the broker pays it (default: today, the ex-date).")
@result_option
@pass_ctx
def sim_dividend(c: Invocation, ticker, per_share, withholding, pay_date, as_json):
    """TICKER goes ex-dividend now (the exchange's clock): the position held now is paid PER_SHARE on the pay date."""
    with open_session(c) as session:
        exchange = session.exchange()
        amount, rate, paid = _to_decimal(per_share, "PER_SHARE"), _to_decimal(withholding, "--withholding"), \
            parse_date(pay_date, "--pay-date")
        shares = exchange.declare_dividend(ticker, amount, rate, paid)
        ex_date = exchange.now().date()
    said(as_json, {"ticker": ticker, "per_share": amount, "withholding": rate, "shares": shares, "ex_date": ex_date,
                   "pay_date": paid or ex_date},
         f"{ticker} ex-dividend {per_share} on {shares} shares; the ledger books it from "
         f"`tradeledger actions import` (or `import flex`) and `actions book`")


@sim_group.command("split")
@click.argument("ticker")
@click.argument("ratio")
@click.option("--cash-in-lieu", "cash_in_lieu", default=None,
              help="The price per new share the broker pays for a fraction of a share left over.")
@result_option
@pass_ctx
def sim_split(c: Invocation, ticker, ratio, cash_in_lieu, as_json):
    """The broker splits TICKER by RATIO (NEW:OLD, e.g. 2:1, or 1:10 for a reverse split) today."""
    from tradeledger.engine.accounting.actions import parse_ratio

    try:
        new, old = parse_ratio(ratio)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="RATIO") from None
    price = cash_in_lieu and _to_decimal(cash_in_lieu, "--cash-in-lieu")
    with open_session(c) as session:
        after = session.exchange().split(ticker, new, old, price)
        day = session.exchange().now().date()
    said(as_json, {"ticker": ticker, "new": new, "old": old, "date": day, "holds": after, "cash_in_lieu": price or None},
         f"broker split {ticker} {ratio}: the account now holds {after}; `tradeledger actions sync` "
         f"stores it, `actions book` (or reconcile) books it")


def _sim_account_cash(c: Invocation, kind: str, amount: str, currency: str, ref: str | None, as_json: bool) -> None:
    number = _to_decimal(amount, "AMOUNT")
    if number == 0:
        raise click.BadParameter(f"a {kind} of 0 moves nothing", param_hint="AMOUNT")
    if kind == "fee" and number > 0:
        raise click.BadParameter("a fee takes cash: give it negative (a refund is an adjustment)",
                                 param_hint="AMOUNT")
    ref = _sim_ref(ref)
    with open_session(c) as session:
        exchange = session.exchange()
        moved = exchange.account_cash(currency.upper(), number, kind, ref or "")
    day = moved.line.at.date()
    # Nothing is booked here: the ledger books it by hand, keyed by the same reference as a statement would
    said(as_json, {"kind": kind, "amount": number, "currency": currency.upper(), "date": day, "ref": ref or None,
                   "moved": moved.moved},
         _again(moved) + f"broker {kind}: {number} {currency.upper()} on {day}; the ledger books it with "
         f"`tradeledger actions {kind} {number} {currency.upper()} --date {day}"
         + (f" --ref {ref}" if ref else "") + " --reason ...` (or IB's Flex statement)")


def _sim_ref(ref: str | None) -> str | None:
    """The broker's reference as the ledger keys it (`9006`; `flex-9006` is the same), refused when it cannot be."""
    from tradeledger.engine.trust.cash_moves import normal_ref

    return None if ref is None else normal_ref(ref)


def _again(moved) -> str:
    """What the broker's screen says when the reference named a movement it had made already."""
    if moved.moved:
        return ""
    return f"already moved at the broker under ref {moved.line.ref} ({moved.line.at.isoformat()}); nothing moved: "


@sim_group.command("interest", context_settings=SIGNED)
@click.argument("amount")
@click.argument("currency")
@click.option("--ref", default=None, help="The broker's reference for it.")
@result_option
@pass_ctx
def sim_interest(c: Invocation, amount, currency, ref, as_json):
    """The broker credits (AMOUNT > 0) or charges (< 0) interest on the account today (CURRENCY AMOUNT works too)."""
    currency, amount = currency_and_amount(currency, amount)
    _sim_account_cash(c, "interest", amount, currency, ref, as_json)


@sim_group.command("fee", context_settings=SIGNED)
@click.argument("amount")
@click.argument("currency")
@click.option("--ref", default=None, help="The broker's reference for it.")
@result_option
@pass_ctx
def sim_fee(c: Invocation, amount, currency, ref, as_json):
    """The broker charges a fee (AMOUNT < 0, e.g. market data) on the account today (CURRENCY AMOUNT works too)."""
    currency, amount = currency_and_amount(currency, amount)
    _sim_account_cash(c, "fee", amount, currency, ref, as_json)


@sim_group.command("deposit", context_settings=SIGNED)
@click.argument("currency")
@click.argument("amount")
@click.option("--kind", type=click.Choice(["deposit", "withdrawal", "transfer"]), default="deposit", show_default=True,
              help="What the broker calls the cash movement.")
@click.option("--ref", default=None,
              help="The broker's reference for it (as IB's transactionID): reconciliation proposes it with --ref, "
                   "and the same REF again moves nothing twice (another movement under it is refused).")
@result_option
@pass_ctx
def sim_deposit(c: Invocation, currency, amount, kind, ref, as_json):
    """Cash arriving (AMOUNT > 0) or leaving (< 0) at the broker without a trade (AMOUNT CURRENCY works too)."""
    currency, amount = currency_and_amount(currency, amount)
    session = c.open()  # a Context: the simulated exchange needs no broker connection
    number = _to_decimal(amount, "AMOUNT")
    ref = _sim_ref(ref)
    moved = session.exchange().deposit(currency, number, kind, ref or "")
    said(as_json, {"kind": kind, "amount": number, "currency": currency.upper(), "at": moved.line.at,
                   "ref": ref or None, "moved": moved.moved},
         _again(moved) + f"broker {kind}: {number} {currency.upper()}"
         + (f" (ref {ref})" if ref else "") + "; `tradeledger reconcile` proposes the entry")


@sim_group.command("transfer-in", context_settings=SIGNED)
@click.argument("contract")
@click.argument("qty")
@click.option("--price", default=None, help="Futures: the mark it arrives at (default: the market price).")
@click.option("--cost", default=None, help="Shares: the cost per unit it arrives with (default: the price).")
@define_contract_options
@result_option
@pass_ctx
def sim_transfer_in(c: Invocation, contract, qty, price, cost, sec_type, currency, multiplier, venue, as_json):
    """A position arriving at the broker without an execution (QTY signed; also seeds an account)."""
    session = c.open()  # a Context: the simulated exchange needs no broker connection
    k = described_contract(contract, sec_type, currency, multiplier, venue) or _sim_contract(session, contract)
    number = _to_decimal(qty, "QTY")
    price, cost = price and _to_decimal(price, "--price"), cost and _to_decimal(cost, "--cost")
    session.exchange().transfer_in(k, number, price, cost)
    said(as_json, {"contract": k.code, "quantity": number, "price": price or None, "cost": cost or None,
                   "at": session.exchange().now()},
         f"broker received {number} {contract} without an execution; `tradeledger reconcile` adopts it")


@sim_group.command("price", context_settings=SIGNED)
@click.argument("contract")
@click.argument("price")
@result_option
@pass_ctx
def sim_price(c: Invocation, contract, price, as_json):
    """Set the simulated market price of a contract."""
    session = c.open()  # a Context: the simulated exchange needs no broker connection
    exchange = session.exchange()
    exchange.add_contract(_sim_contract(session, contract))
    number = _to_decimal(price, "PRICE")
    filled = exchange.set_price(contract, number)
    said(as_json, {"contract": contract, "price": number, "at": exchange.now(),
                   "filled": [execution_json(e) for e in filled]},
         f"{contract} at {price}" + (f"; {len(filled)} resting orders filled" if filled else ""))


@sim_group.command("settle", context_settings=SIGNED)
@click.argument("contract")
@click.argument("price")
@click.option("--date", "day", default=None, help="Settlement date (YYYY-MM-DD; default: the exchange's today).")
@result_option
@pass_ctx
def sim_settle(c: Invocation, contract, price, day, as_json):
    """Settle a contract at the exchange (cash moves) and record the settlement price for `mark`."""
    number = _to_decimal(price, "PRICE")
    with open_session(c) as session:
        day, cash = _marking.settle_at_sim_exchange(session, contract, number, parse_date(day, "--date"))
        known = session.exchange().contract(contract)
    currency = known.currency if known else None
    said(as_json, {"contract": contract, "price": number, "date": day, "cash": cash, "currency": currency},
         f"{contract} settled at {number} on {day}: {money_text(cash, currency)} {currency or ''} moved to cash "
         f"at the broker".replace("  ", " "))


@sim_group.command("fault")
@click.argument("kind", type=click.Choice(["partial-fill", "duplicate-executions", "late-commission",
                                           "disconnect", "correct"]))
@click.option("--qty", default=None, help="partial-fill: quantity that fills; correct: new quantity.")
@click.option("--price", default=None, help="correct: the corrected price.")
@click.option("--exec-id", default=None, help="correct: the execution to correct.")
@click.option("--count", type=int, default=1, help="How many calls/polls the fault lasts.")
@result_option
@pass_ctx
def sim_fault(c: Invocation, kind, qty, price, exec_id, count, as_json):
    """Arm a fault at the simulated broker, to see tradeledger handle it."""
    exchange = c.open().exchange()
    data: dict = {"fault": kind}
    if kind == "partial-fill":
        data["qty"] = _to_decimal(qty or "1", "--qty")
        exchange.fault_partial_fill(qty=data["qty"])
    elif kind == "duplicate-executions":
        exchange.fault_duplicate_executions(count)
        data["count"] = count
    elif kind == "late-commission":
        exchange.fault_late_commission(count)
        data["count"] = count
    elif kind == "disconnect":
        exchange.fault_disconnect(count)
        data["count"] = count
    else:
        if not exec_id:
            raise click.UsageError("correct needs --exec-id")
        data["corrected"] = execution_json(exchange.correct_execution(
            exec_id, price and _to_decimal(price, "--price"), qty and _to_decimal(qty, "--qty")))
    said(as_json, data, f"fault armed: {kind}")


@click.command("cycle")
@click.option("--approve", is_flag=True, help="Execute a reviewed run: the one named by --run, else the newest "
              "(only when no older run awaits review).")
@click.option("--run", "run_id", type=int, default=None, help="With --approve: the run to execute.")
@click.option("--unattended", is_flag=True, help="Compute a run and trade it with no person's review (recorded "
              "on the run); refused while a run awaits review.")
@click.option("--as-of", default=None, help="Compute from data up to this date (YYYY-MM-DD).")
@click.option("--wait", "wait", type=float, default=None, help="Seconds to wait for fills "
              "(default: [trading] fill_wait_seconds, 30).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (live environments ask).")
@json_option
@pass_ctx
def cycle_cmd(c: Invocation, approve, run_id, unattended, as_of, wait, yes, as_json):
    """Compute a run and stop for review; --approve [--run N] executes exactly the reviewed run.

    Exits non-zero when a limit refused a line, the broker rejected an order, an execution could not
    be booked, an order is still working when the wait ends (the next cycle counts it), or a roll
    spread stopped with one leg filled (the next cycle completes it)."""
    if run_id is not None and not approve:
        raise click.UsageError("--run names the run to execute: use it with --approve")
    if unattended and (approve or run_id is not None):
        raise click.UsageError("--unattended computes its own run: not with --approve or --run")
    with open_session(c) as session:
        names = _names(session)
        if (approve or unattended) and session.name == "live" and not yes:
            click.confirm(f"Trade LIVE account {session.settings.account}"
                          + (" with no person's review?" if unattended else "?"), abort=True)
        if approve or unattended:
            result = _cycle.execute(session, run_id, _getpass.getuser(), wait, unattended=unattended,
                                    as_of=parse_date(as_of, "--as-of"))
        else:
            result = _cycle.compute_for_review(session, parse_date(as_of, "--as-of"))
        data = {"run": result.run_id, "approved": result.approved, "notes": result.notes,
                "command": f"tradeledger cycle --approve --run {result.run_id}"}
        if result.execution is not None:
            data |= _execution_json(result.execution, _names(session), result.fills, result.still_working)
            data["interrupted_rolls"] = result.interrupted
            data |= {"positions": _pnl.positions(session), "pnl": _pnl.pnl(session)}
        elif result.preview is not None:
            data["preview"] = _plan_json(result.preview, _names(session))
    if as_json:
        emit_json(data)
    else:
        for note in result.notes:
            say(note)
        if result.execution is not None:
            _echo_execution(result.execution, names, result.fills, result.still_working)
            for line in result.interrupted:
                click.echo(f"error: {line}", err=True)
            positions_table(data["positions"])
            pnl_table(data["pnl"])
        elif result.preview is not None:
            _show_plan(result.preview, names)
            for code, why in result.preview.refusals:
                click.echo(f"warning: {code} will be refused if executed now: {why}", err=True)
            for code, why in result.preview.clips:
                click.echo(f"warning: {code} will be clipped if executed now: {why}", err=True)
            say(f"execute exactly this run with: tradeledger cycle --approve --run {result.run_id}")
    if not result.ok:
        sys.exit(1)


# --- the demo ---


@click.command("demo")
@click.option("--days", type=click.IntRange(1, 290), default=3, show_default=True,
              help="Trading days to play (a year is about 260: every quarterly roll and expiry).")
@pass_ctx
def demo_cmd(c: Invocation, days):
    """Play a few simulated trading days in a NEW home (--home, or a fresh directory it names)."""
    import tempfile

    from tradeledger.engine.setup.demo import run_demo

    home = Path(c.home) if c.home else Path(tempfile.mkdtemp(prefix="tradeledger-demo-"))
    if (home / "paper").exists() or (home / "live").exists():
        raise click.UsageError(f"{home} already holds an environment; the demo only runs in a new home")
    click.echo(f"demo home: {home}")
    session = run_demo(home, days, progress=lambda message: click.echo(f"  {message}"))
    try:
        positions_table(_pnl.positions(session))
        pnl_table(_pnl.pnl(session))
        export_ledger(session, session.config)
        checked = check_ledger(session.ledger, session.ledger_path)
        from tradeledger.engine.trust.reconcile import reconcile_session

        reconciled = reconcile_session(session, who="demo")
    finally:
        session.close()
    click.echo(f"check: {'clean' if checked.ok else 'NOT CLEAN'} ({checked.entries} entries, "
               f"{len(checked.errors)} beancount errors, {len(checked.differences)} differences)")
    click.echo(f"reconcile: {'clean' if reconciled.clean else 'NOT CLEAN'} (every contract and currency "
               f"against the broker; the trade made at its screen sits in Unattributed)")
    click.echo(f"explore it: tradeledger --home {home} positions | pnl --by instrument | fills list | targets list")
    click.echo(f"browse it:  tradeledger --home {home} fava")
    if not (checked.ok and reconciled.clean):
        sys.exit(1)


COMMANDS = [orders_group, fills_group, mark, positions_cmd, pnl_cmd, sim_group, cycle_cmd, demo_cmd]
