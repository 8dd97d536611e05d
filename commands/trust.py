"""`tradeledger` commands: trust: maintenance adjustments, the daemon, snapshots, reconciliation and exceptions.

Registered on the `main` group of cli.py, which imports this module; each command opens its
environment, calls the engine, and prints a table or JSON.
"""

from __future__ import annotations

import getpass as _getpass
import os
import shlex
import sys

import click
from tradeledger.commands.common import Invocation, SIGNED, currency_and_amount, fail, json_option, lazy, lazy_function, open_session, parse_date, pass_ctx, reason_option, result_option, said
from tradeledger.engine.trust import CASH_KINDS
from tradeledger.errors import AdjustError
from tradeledger.ledger.numbers import to_decimal as _to_decimal
from tradeledger.reports.render import display, emit_json, say, table
from tradeledger.ledger.times import table_time

# --- adjust, daemon ---
# Imported on first use (commands/common.py: lazy): starting the CLI imports no engine.
_adjust = lazy("tradeledger.engine.trust.adjust")
_cash_moves = lazy("tradeledger.engine.trust.cash_moves")
_fills = lazy("tradeledger.engine.trading.fills")
_Session = lazy_function("tradeledger.engine.setup.session", "Session")
db = lazy("tradeledger.ledger.db")


def _adjust_run(c: Invocation, kind: str, planner, yes: bool, as_json: bool, before=None) -> None:
    """Dry run first (the entry, its postings, what it resolves), then book on confirmation; a cash
    movement already booked under its reference is a replay: said, nothing booked, exit 0."""
    try:
        _adjust_steps(c, kind, planner, yes, as_json, before)
    except AdjustError as exc:
        if not isinstance(exc, _cash_moves.Replay):
            raise
        _replayed(exc, as_json)


def _replayed(replay, as_json: bool) -> None:
    m = replay.movement
    said(as_json, {"kind": "cash", "booked": False, "replay": True, "entry": replay.entry, "ref": replay.ref,
                   "cash_kind": m.kind, "currency": m.currency, "amount": m.amount, "date": m.day},
         f"already booked as entry {replay.entry}: {m.said()}" + (f", ref {replay.ref}" if replay.ref else "")
         + "; nothing booked")


def _adjust_steps(c: Invocation, kind: str, planner, yes: bool, as_json: bool, before) -> None:
    with open_session(c) as session:
        if before is not None:
            before(session)
        ctx, now, key = session, session.now(), _adjust.new_key(kind, session.chart)
        with db.read_connection(session.engine) as conn:
            plan = planner(conn, ctx, now, key)
        summary = plan.summary()
        if not as_json:
            click.echo(f"dry run: {summary['narration']}" + ("" if plan.txn.time == now else
                                                           f" (dated {plan.txn.time.isoformat()})")
                       + (f" (ref {plan.ref})" if plan.ref else ""))
            for e in plan.earlier:  # --again, or another reference: the trader sees what stands already
                click.echo(f"already booked that day: entry {e.entry}" + (f" (ref {e.ref})" if e.ref else "")
                           + f": {e.narration}")
            currencies = {com.name for com in session.ledger.commodities() if com.kind == "currency"}
            def rows(postings):
                return [(account, display(units, "amount" if commodity in currencies else "units", currency=commodity),
                         commodity) for account, units, commodity in postings]
            table(f"entry ({kind})", ["account", "units", "commodity"], rows(summary["postings"]))
            for also in summary["also"]:  # booked with it, in the same transaction
                click.echo(f"and: {also['narration']}")
                table("entry", ["account", "units", "commodity"], rows(also["postings"]))
            if summary["resolves"]:
                click.echo(f"resolves, if open: {', '.join(summary['resolves'])}")
            if summary["reopens"]:  # an attribution's reversal: the fill is Unattributed's again
                click.echo(f"re-opens: {', '.join(summary['reopens'])}")
        if not yes and not click.confirm("Book these entries?" if summary["also"] else "Book this entry?",
                                         default=False):
            if as_json:
                emit_json(summary | {"booked": False} | ({"replay": False} if kind == "cash" else {}))
            else:
                click.echo("not booked")
            return
        booked = _adjust.book(ctx, lambda conn: planner(conn, ctx, now, key), _getpass.getuser(),
                              expect=plan.fingerprint())
    if as_json:
        emit_json(summary | {"booked": True, "entry": booked.txn_id, "adjustment": booked.adjustment_id,
                             "resolved": list(booked.resolved), "reopened": list(booked.reopened)}
                  | ({"replay": False} if kind == "cash" else {}))
    else:
        click.echo(f"booked entry {booked.txn_id} (adjustment {booked.adjustment_id})"
                   + (f"; resolved {', '.join(booked.resolved)}" if booked.resolved else "")
                   + (f"; re-opened {', '.join(booked.reopened)}" if booked.reopened else ""))


_yes_option = click.option("--yes", is_flag=True, help="Book at once, without the dry run's confirmation.")
_reason_option = reason_option(help="Why: kept with the entry.")


@click.group("adjust")
def adjust_group():
    """Repair the books when something happened outside tradeledger: each a ledger entry with a reason."""


@adjust_group.command("attribute")
@click.argument("fill")
@click.option("--strategy", required=True, help="The strategy the fill was for.")
@reason_option(required=False, default="attributed by hand")
@_yes_option
@json_option
@pass_ctx
def adjust_attribute(c: Invocation, fill, strategy, reason, yes, as_json):
    """Move an unattributed fill's position to a strategy, at the fill price."""
    _adjust_run(c, "attribute", lambda conn, ctx, now, key: _adjust.plan_attribute(
        conn, ctx, fill, strategy, reason, now, key), yes, as_json)


@adjust_group.command("adopt", context_settings=SIGNED)
@click.argument("contract")
@click.argument("qty")
@click.option("--strategy", required=True, help="The strategy that takes the position on.")
@click.option("--price", default=None, help="Price to adopt at (default: the current mark).")
@reason_option(required=False, default="adopted from unattributed")
@_yes_option
@json_option
@pass_ctx
def adjust_adopt(c: Invocation, contract, qty, strategy, price, reason, yes, as_json):
    """Move QTY of an unattributed position into a strategy, at the current mark."""
    qty, price = _to_decimal(qty, "QTY"), price and _to_decimal(price, "--price")
    _adjust_run(c, "adopt", lambda conn, ctx, now, key: _adjust.plan_adopt(
        conn, ctx, contract, qty, strategy, reason, now, key, price), yes, as_json)


@adjust_group.command("transfer", context_settings=SIGNED)
@click.argument("contract")
@click.argument("qty")
@click.option("--from", "source", required=True, help="The strategy giving the position (or unattributed).")
@click.option("--to", "target", required=True, help="The strategy taking it (or unattributed).")
@click.option("--price", default=None, help="Transfer price (default: the giver's current mark).")
@_reason_option
@_yes_option
@json_option
@pass_ctx
def adjust_transfer(c: Invocation, contract, qty, source, target, price, reason, yes, as_json):
    """Move QTY of a position from one strategy to another, at the current mark."""
    qty, price = _to_decimal(qty, "QTY"), price and _to_decimal(price, "--price")
    _adjust_run(c, "transfer", lambda conn, ctx, now, key: _adjust.plan_transfer(
        conn, ctx, contract, qty, source, target, reason, now, key, price), yes, as_json)


@adjust_group.command("manual-close")
@click.argument("contract")
@click.option("--strategy", required=True, help="Whose position it was (a strategy, or unattributed with --price).")
@click.option("--price", default=None, help="The price it was closed at (no broker execution).")
@click.option("--exec", "exec_id", default=None, help="The broker's execution that closed it.")
@click.option("--qty", default=None, help="With --price: close only this many units (default: the whole position).")
@reason_option(required=False, default="closed outside tradeledger")
@_yes_option
@json_option
@pass_ctx
def adjust_manual_close(c: Invocation, contract, strategy, price, exec_id, qty, reason, yes, as_json):
    """Book a position closed outside tradeledger: from the broker's execution, or at a price."""
    if (price is None) == (exec_id is None):
        raise click.UsageError("give exactly one of --price or --exec")
    price = price and _to_decimal(price, "--price")
    qty = qty and _to_decimal(qty, "--qty")

    def sync_first(session):  # the execution is booked (to Unattributed) before it is attributed
        if exec_id is not None:
            _fills.sync_fills(session, session.broker)

    _adjust_run(c, "manual-close", lambda conn, ctx, now, key: _adjust.plan_manual_close(
        conn, ctx, contract, strategy, reason, now, key, price, exec_id, qty), yes, as_json, before=sync_first)


@adjust_group.command("reverse")
@click.argument("entry", type=int)
@_reason_option
@_yes_option
@json_option
@pass_ctx
def adjust_reverse(c: Invocation, entry, reason, yes, as_json):
    """Book the exact opposite of an entry, linked to it."""
    _adjust_run(c, "reverse", lambda conn, ctx, now, key: _adjust.plan_reverse(conn, ctx, entry, reason, now, key),
                yes, as_json)


@adjust_group.command("cash", context_settings={"ignore_unknown_options": True})
@click.argument("currency")
@click.argument("amount")
@click.option("--kind", "cash_kind", type=click.Choice(CASH_KINDS), default="adjustment", show_default=True,
              help="What the cash movement is (a deposit is > 0, a withdrawal < 0).")
@click.option("--date", "date", default=None,
              help="The day the cash moved at the broker, when it was found later (default: now).")
@click.option("--ref", default=None,
              help="The broker's reference of the movement (IB: the transaction id on the statement): booked "
                   "once under it, however often it is run; the same REF again books nothing.")
@click.option("--again", is_flag=True,
              help="Book it though an equal movement (kind, currency, amount, day) is booked already: a real "
                   "second one (without --ref such a run is refused).")
@_reason_option
@_yes_option
@json_option
@pass_ctx
def adjust_cash(c: Invocation, currency, amount, cash_kind, reason, date, ref, again, yes, as_json):
    """Book a cash movement (AMOUNT signed: + in, - out): interest, fees, deposits, withdrawals (AMOUNT CURRENCY works too).

    Booked once: with --ref, a run again with the same REF books nothing ("already booked as entry
    N") and one whose amount, currency, kind or --date differs is refused; without --ref, a run is
    refused when an equal movement is booked for the same day, unless --again."""
    currency, amount = currency_and_amount(currency, amount)
    amount = _to_decimal(amount, "AMOUNT")
    day = parse_date(date, "--date")
    if ref is not None and again:
        raise click.UsageError("--again is for a movement without --ref: a reference already says which one it is")
    ref = None if ref is None else _cash_moves.normal_ref(ref)
    _adjust_run(c, "cash", lambda conn, ctx, now, key: _adjust.plan_cash_move(
        conn, ctx, currency, amount, reason, _adjust.cash_time(now, day), key, cash_kind, ref, again,
        dated=day is not None), yes, as_json)


@adjust_group.command("list")
@json_option
@pass_ctx
def adjust_list(c: Invocation, as_json):
    """Every maintenance entry booked: what, why, who, its ledger entry and, for a cash movement (and its
    reversal), the broker's reference it was booked under."""
    env = c.open()
    with db.read_connection(env.engine) as conn:
        rows = _adjust.list_adjustments(conn, _adjust.user_names(env), env.ledger, env.chart.broker_account)
    if as_json:
        emit_json(rows)
        return
    table("adjustments", ["id", "kind", "subject", "from", "to", "qty", "price", "entry", "ref", "who", "reason"],
          [(r["id"], r["kind"], r["subject"], r["from"], r["to"], r["quantity"], r["price"], r["entry"], r["ref"],
            r["who"], r["reason"]) for r in rows])


@click.command("daemon")
@click.option("--once", is_flag=True, help="Run every job once and exit (0 if all succeeded, 1 if not).")
@click.option("--json", "as_json", is_flag=True, help="With --once: print each job's result as JSON.")
@pass_ctx
def daemon_cmd(c: Invocation, once, as_json):
    """Run the scheduler: fill sync, reconciliation, settlement marks, data and targets from [daemon]."""
    from tradeledger.engine.ops.daemon import Daemon, DaemonAlreadyRunning

    if as_json and not once:
        raise click.UsageError("--json goes with --once (a running daemon reports in its log and `status`)")
    env = c.open()
    daemon = Daemon(env)
    try:
        daemon.acquire()
    except DaemonAlreadyRunning as exc:
        fail(str(exc))
    try:
        if once:
            ok = daemon.run_once()
            said(as_json, {"ok": ok, "jobs": [{"job": r.name, "ok": r.ok, "result": r.result, "at": r.at}
                                              for r in daemon.results]},
                 "\n".join(f"{r.name}: {r.result}" for r in daemon.results) or None)
        else:
            click.echo(f"daemon running for {env.settings.env} (pid {os.getpid()}); logs in "
                       f"{daemon.log.handlers[0].baseFilename}")
            daemon.serve()
            ok = daemon.stopped_because is None
    finally:
        daemon.release()
    if daemon.stopped_because is not None:
        fail(f"the daemon stopped: {daemon.stopped_because}")
    sys.exit(0 if ok else 1)


# --- reconciliation, exceptions ---------------------------------------------------------------

_exceptions = lazy("tradeledger.engine.trust.exceptions")
_reconcile = lazy("tradeledger.engine.trust.reconcile")
_snapshots = lazy("tradeledger.engine.trust.snapshots")


def _recon_tables(result) -> None:
    table("breaks", ["account", "contract", "kind", "ledger", "broker", "qty diff"],
          [(b.account, b.contract or "", b.kind, b.ledger_qty, b.broker_qty, b.diff) for b in result.breaks],
          empty="no position breaks")
    # Every figure of the cash arithmetic: expected = broker + unsettled + marks; diff = ledger - expected.
    table("cash", ["currency", "ledger", "broker", "unsettled", "marks", "expected", "diff", "tolerance", "status"],
          [(c.currency, c.ledger, c.broker, c.unsettled, c.marks, c.broker + c.unsettled + c.marks, c.diff,
            c.tolerance, c.status) for c in result.cash])
    if result.unattributed:
        table("unattributed", ["contract", "qty", "adopted now"],
              [(u["contract"], u["qty"], "yes" if u["adopted"] else "") for u in result.unattributed])


@click.command("reconcile")
@json_option
@pass_ctx
def reconcile_cmd(c: Invocation, as_json):
    """Snapshot the broker, book its executions, adopt old positions, compare; exit 1 unless clean."""
    with open_session(c) as session:
        result = _reconcile.reconcile_session(session, who=_getpass.getuser())
    if as_json:
        emit_json(result.as_json())
    else:
        _recon_tables(result)
        for note in result.notes:
            say(note)
        prefix = "tradeledger" + (f" --home {shlex.quote(str(c.home))}" if c.home else "") + (f" --env {c.env}" if c.env != "paper" else "")
        for line in result.cash:
            for proposal in line.proposals:
                say(f"cash {line.currency} moved without a trade? proposed (not booked): {prefix} {proposal}")
            if not line.proposals and line.explained:
                say(f"cash {line.currency}: {line.explained}")
        say(f"reconciliation {result.reconciliation_id}: {'clean' if result.clean else 'NOT CLEAN'}")
    sys.exit(0 if result.clean else 1)


@click.command("monitor")
@json_option
@pass_ctx
def monitor_cmd(c: Invocation, as_json):
    """Look for overdue commissions, stuck orders, missing FX, stale prices and a silent daemon;
    raise each as an exception, resolve those that cleared; exit 1 if anything is found."""
    from tradeledger.engine.trust.monitor import check

    with open_session(c) as session:
        found = check(session, who=_getpass.getuser())
    if as_json:
        emit_json([{"kind": f.kind, "subject": f.subject, "severity": f.severity, "detail": f.detail}
                   for f in found])
    else:
        table("findings", ["severity", "kind", "subject", "detail"],
              [(f.severity, f.kind, f.subject, f.detail) for f in found], empty="0 findings")
    sys.exit(1 if found else 0)


@click.command("snapshot")
@json_option
@pass_ctx
def snapshot_cmd(c: Invocation, as_json):
    """Take and store a broker snapshot (positions, cash, unsettled P&L, open orders); exit 1 if it fails."""
    with open_session(c) as session:
        result = _snapshots.snapshot_session(session)
    data = _snapshots.snapshot_json(result)
    if as_json:
        emit_json(data)
    elif result.ok:
        table(f"snapshot {result.id} at {table_time(data['taken_at'])} UTC", ["contract", "type", "qty", "avg cost"],
              [(p["contract"], p["sec_type"], p["qty"], p["avg_cost"]) for p in data["positions"]])
        table("cash", ["currency", "cash", "unsettled"], [(r["currency"], r["cash"], r["unsettled"]) for r in data["cash"]])
        say(f"{len(data['open_orders'])} open orders")
    else:
        click.echo(f"snapshot {result.id} FAILED: {result.error}")
    sys.exit(0 if result.ok else 1)


@click.group("exceptions")
def exceptions_group():
    """Exceptions: list, show, acknowledge, resolve."""


@exceptions_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved exceptions.")
@json_option
@pass_ctx
def exceptions_list(c: Invocation, show_all, as_json):
    """Open (and acknowledged) exceptions; with --all, the resolved ones too."""
    with db.read_connection(c.open().engine) as conn:
        rows = _exceptions.list_exceptions(conn, None if show_all else "open")
    if as_json:
        emit_json(rows)
        return
    table("exceptions", ["id", "state", "severity", "kind", "subject", "count", "last seen", "detail"],
          [(r["id"], r["state"], r["severity"], r["kind"], r["subject"], r["count"], r["last_seen"],
            r["detail"]) for r in rows], empty="no open exceptions" if not show_all else "no exceptions",
          optional=("count", "last seen"))


def _done(step: dict | None) -> str | None:
    """An acknowledgement or resolution as a person reads it: `2026-12-05 15:00:00 by ann: why`."""
    from tradeledger.ledger.times import table_time

    return None if step is None else f"{table_time(step['at'])} by {step['by']}: {step['why']}"


@exceptions_group.command("show")
@click.argument("exception_id", type=int)
@json_option
@pass_ctx
def exceptions_show(c: Invocation, exception_id, as_json):
    """One exception with its whole history: seen when, how often, who acknowledged or resolved it and why."""
    with db.read_connection(c.open().engine) as conn:
        info = _exceptions.get_exception(conn, exception_id)
    if as_json:
        emit_json(info)
        return
    from tradeledger.ledger.times import table_time

    rows = [(k, _done(v) if k in ("acknowledged", "resolved") else v) for k, v in info.items() if k != "locks"]
    rows += [(f"lock {lk['key']}", f"{'active' if lk['unlocked_at'] is None else 'released ' + table_time(lk['unlocked_at'])}"
              f": {lk['reason']}") for lk in info["locks"]]
    table(f"exception {exception_id}", ["field", "value"], rows)


@exceptions_group.command("ack")
@click.argument("exception_id", type=int)
@reason_option(help="Who takes it on, what is being done.")
@result_option
@pass_ctx
def exceptions_ack(c: Invocation, exception_id, reason, as_json):
    """Acknowledge an exception: someone is on it (it stays visible until resolved)."""
    env = c.open()
    now = env.now()  # the environment's clock: the simulated exchange's on sim
    with env.engine.begin() as conn:
        _exceptions.acknowledge(conn, exception_id, _getpass.getuser(), reason, now=now)
        info = _exceptions.get_exception(conn, exception_id)
    said(as_json, info, f"exception {exception_id} acknowledged")


@exceptions_group.command("resolve")
@click.argument("exception_id", type=int)
@reason_option(help="Why it is resolved.")
@result_option
@pass_ctx
def exceptions_resolve(c: Invocation, exception_id, reason, as_json):
    """Resolve an exception with a reason; the locks it holds are released."""
    env = c.open()
    now = env.now()
    with env.engine.begin() as conn:
        _exceptions.resolve(conn, exception_id, _getpass.getuser(), reason, now=now)
        info = _exceptions.get_exception(conn, exception_id)
    said(as_json, info, f"exception {exception_id} resolved (its locks released)")


COMMANDS = [adjust_group, daemon_cmd, reconcile_cmd, monitor_cmd, snapshot_cmd, exceptions_group]
