"""The `tradeledger` command: a thin click layer over the engine and the ledger.

Every command opens its environment (`--home`, `--env`, `--db-url`), calls one engine or ledger
function, and prints the result as a table or, with `--json`, as data. A mistake a user can
make (unknown account, bad number, wrong environment, unreachable database, malformed config)
ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import sqlalchemy as sa

from tradeledger.broker.base import BrokerError
from tradeledger.engine.environment import (
    ENVIRONMENTS, ConfigError, Environment, init_environment, open_environment, parse_settings,
    resolve_home, default_db_url,
)
from tradeledger.ledger import db
from tradeledger.ledger.db import DatabaseError
from tradeledger.ledger.export import check as check_ledger, export_beancount
from tradeledger.ledger.model import LedgerError
from tradeledger.ledger.numbers import NumberError
from tradeledger.reports.render import emit_json, table

USER_ERRORS = (LedgerError, DatabaseError, ConfigError, NumberError, BrokerError, ValueError, OSError)


class Group(click.Group):
    """Turns every user-facing failure into one line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except USER_ERRORS as exc:
            _fail(str(exc))
        except sa.exc.DBAPIError as exc:
            _fail(f"database error: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}")
        except Exception as exc:  # a bug: still one line, the traceback on request
            if os.environ.get("TRADELEDGER_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set TRADELEDGER_DEBUG=1 for details)")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class Context:
    def __init__(self, home: str | None, env: str, db_url: str | None):
        self.home, self.env, self.db_url = home, env, db_url
        self._environment: Environment | None = None

    def open(self) -> Environment:
        if self._environment is None:
            self._environment = open_environment(self.home, self.env, self.db_url)
        return self._environment


pass_ctx = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group(cls=Group)
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="tradeledger home (default: $TRADELEDGER_HOME or ~/.tradeledger).")
@click.option("--env", "env", type=click.Choice(ENVIRONMENTS), default="paper", show_default=True,
              help="Environment: paper or live, strictly apart.")
@click.option("--db-url", default=None, help="Database URL (overrides the environment's config).")
@click.version_option(package_name="tradeledger")
@click.pass_context
def main(ctx, home, env, db_url):
    """tradeledger: signals -> targets -> orders -> fills -> positions -> P&L, on a double-entry ledger."""
    ctx.obj = Context(home, env, db_url)


@main.command()
@click.option("--broker", type=click.Choice(["sim", "ib"]), default="sim", show_default=True)
@click.option("--account", default=None, help="Broker account id (paper: DU..., default DU1234567 on sim).")
@click.option("--base-currency", default="USD", show_default=True)
@click.option("--ib-host", default="127.0.0.1", show_default=True)
@click.option("--ib-port", default=4002, type=int, show_default=True)
@click.option("--ib-client-id", default=1, type=int, show_default=True)
@click.option("--demo", is_flag=True, help="Write the demo configuration and seed its price history (sim only).")
@json_option
@pass_ctx
def init(c: Context, broker, account, base_currency, ib_host, ib_port, ib_client_id, demo, as_json):
    """Create the environment: directory, config, database schema and base accounts."""
    if demo:
        if broker != "sim" or c.env != "paper":
            raise click.UsageError("--demo is for the simulated broker in the paper environment")
        from tradeledger.engine.demo import init_demo

        environment, _history = init_demo(c.home, db_url=c.db_url)
    else:
        environment = init_environment(c.home, c.env, broker, account, base_currency, c.db_url,
                                       ib_host, ib_port, ib_client_id)
    info = {"environment": c.env, "dir": str(environment.dir), "broker": environment.settings.broker,
            "account": environment.settings.account, "revision": db.current_revision(environment.engine)}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"initialised {c.env} environment in {environment.dir} "
                   f"({info['broker']} broker, account {info['account']})")


@main.command()
@click.option("--no-broker", is_flag=True, help="Do not try to reach the broker.")
@json_option
@pass_ctx
def status(c: Context, no_broker, as_json):
    """Environment, account, database, ledger, broker, reconciliation, exceptions, locks, daemon at a glance."""
    environment = c.open()
    txns, postings = environment.ledger.count()
    info = {
        "environment": environment.settings.env, "account": environment.settings.account,
        "broker": environment.settings.broker,
        "database": environment.engine.url.render_as_string(hide_password=True),
        "schema_revision": db.current_revision(environment.engine),
        "accounts": len(environment.ledger.accounts()), "transactions": txns, "postings": postings,
        "ledger_file": str(environment.ledger_path) if environment.ledger_path.exists() else None,
    }
    info |= _operations_status(environment, probe_broker=not no_broker)
    if as_json:
        emit_json(info)
    else:
        table("status", ["item", "value"], [(k, _status_value(v)) for k, v in info.items()])


@main.command()
@json_option
@pass_ctx
def accounts(c: Context, as_json):
    """Accounts with their balances."""
    environment = c.open()
    balances = environment.ledger.balances()
    rows = []
    for account in environment.ledger.accounts():
        held = {com: units for (name, com), units in balances.items() if name == account.name}
        rows.append({"account": account.name, "open": account.open_date, "booking": account.booking,
                     "balances": held})
    if as_json:
        emit_json(rows)
    else:
        table("accounts", ["account", "open", "booking", "balance"],
              [(r["account"], r["open"], r["booking"],
                ", ".join(f"{v} {k}" for k, v in sorted(r["balances"].items()))) for r in rows])


@main.group("db")
def db_group():
    """Database maintenance."""


@db_group.command("upgrade")
@pass_ctx
def db_upgrade(c: Context):
    """Bring the database schema up to this version of tradeledger."""
    home = resolve_home(c.home)
    settings = parse_settings(home / c.env / "config.toml", c.env)
    url = c.db_url or settings.db_url or default_db_url(home / c.env)
    engine = db.make_engine(url)
    try:
        before, after = db.upgrade(engine)
    except sa.exc.OperationalError as exc:
        raise db.connectivity_error(url, exc) from None
    db.verify_identity(engine, {"environment": settings.env, "broker_account": settings.account})
    click.echo(f"schema at revision {after}" + ("" if before == after else f" (was {before})"))


@main.group("export")
def export_group():
    """Export the ledger."""


@export_group.command("beancount")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: the environment's ledger.beancount).")
@pass_ctx
def export_beancount_cmd(c: Context, out):
    """Write the whole ledger as a beancount file, atomically."""
    environment = c.open()
    path = Path(out) if out else environment.ledger_path
    size = export_beancount(environment.ledger, path, title=f"tradeledger {environment.settings.env} "
                            f"{environment.settings.account}", operating_currency=environment.settings.base_currency)
    click.echo(f"wrote {path} ({size} bytes)")


@main.command()
@click.option("--file", "path", type=click.Path(dir_okay=False), default=None,
              help="Check this file instead of a fresh export.")
@json_option
@pass_ctx
def check(c: Context, path, as_json):
    """Export, load with beancount, and compare every balance with the ledger's own."""
    environment = c.open()
    target = Path(path) if path else environment.ledger_path
    if not path:
        export_beancount(environment.ledger, target, operating_currency=environment.settings.base_currency)
    result = check_ledger(environment.ledger, target)
    if as_json:
        emit_json(result.as_json())
    else:
        for error in result.errors:
            click.echo(f"beancount error: {error}")
        if result.differences:
            table("differences", ["account", "commodity", "ledger", "beancount"], result.differences)
        click.echo(f"{'clean' if result.ok else 'NOT CLEAN'}: {result.entries} entries, "
                   f"{result.accounts} accounts, {len(result.errors)} beancount errors, "
                   f"{len(result.differences)} differences")
    if not result.ok:
        sys.exit(1)


# --- data, instruments, signals, targets ---------------------------------------------------------
# Prices and FX (engine/prices.py), instruments and mappings, forecasts (engine/forecasts.py) and
# target runs (engine/targets.py).

import datetime as _dt
import getpass as _getpass

from tradeledger.engine import forecasts as _forecasts, prices as _prices, targets as _targets


def _date_arg(value: str | None) -> _dt.date | None:
    return None if value is None else _prices.parse_date(value)


def _import_summary(report) -> str:
    return (f"{report.source}: {report.rows} {report.kind} rows: {report.inserted} new, "
            f"{report.unchanged} unchanged, {report.replaced} replaced")


@main.group("data")
def data_group():
    """Price history, settlement prices and FX rates."""


@data_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Let the file change values already stored.")
@json_option
@pass_ctx
def data_import(c: Context, file, replace, as_json):
    """Import a CSV of closes (date,instrument,close), settlements (date,contract,settle) or FX
    rates (date,currency,rate). Any bad row: every one reported by line, nothing stored."""
    report = _prices.import_prices_csv(c.open(), file, replace=replace)
    emit_json(report.as_json()) if as_json else click.echo(_import_summary(report))


@main.group("instruments")
def instruments_group():
    """Configured instruments and signal-to-execution mappings."""


@instruments_group.command("list")
@json_option
@pass_ctx
def instruments_list(c: Context, as_json):
    """Instruments with their current contract, mapping and latest price."""
    rows = _targets.list_instruments(c.open())
    if as_json:
        emit_json(rows)
        return
    table("instruments", ["name", "type", "currency", "multiplier", "contract", "executes in", "price", "date"],
          [(r["name"], r["type"], r["currency"], r["multiplier"], r["contract"],
            "" if r["executes_in"] == r["name"] else r["executes_in"], r["price"], r["price_date"]) for r in rows])


@instruments_group.command("map")
@click.argument("signal")
@click.argument("execution")
@pass_ctx
def instruments_map(c: Context, signal, execution):
    """Make strategies signalling on SIGNAL trade EXECUTION (the same name removes the mapping)."""
    change = _targets.set_mapping(c.open(), signal, execution)
    if change.old == change.new:
        click.echo(f"{signal} already executes in {execution}; nothing changed")
        return
    click.echo(f"{signal} now executes in {change.new} (was {change.old})")
    for account, contract, qty in change.holders:
        click.echo(f"warning: {account} still holds {qty} {contract}; the next run targets {change.new}, "
                   f"so close or transfer it yourself", err=True)


@main.group("signals")
def signals_group():
    """Forecasts per strategy and signal instrument."""


def _forecast_rows(forecasts):
    return [(f.strategy, f.instrument, f.date, f.value, f.source) for f in forecasts]


@signals_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Let the file change imported forecasts already stored.")
@json_option
@pass_ctx
def signals_import(c: Context, file, replace, as_json):
    """Import forecasts made elsewhere (date,strategy,instrument,forecast), all or nothing."""
    report = _forecasts.import_forecasts_csv(c.open(), file, replace=replace)
    emit_json(report.as_json()) if as_json else click.echo(_import_summary(report))


@signals_group.command("compute")
@click.option("--as-of", default=None, help="Use prices up to this date (YYYY-MM-DD).")
@json_option
@pass_ctx
def signals_compute(c: Context, as_of, as_json):
    """Compute and store every strategy's forecasts from its rules (imports take precedence)."""
    result = _forecasts.compute_forecasts(c.open(), _date_arg(as_of))
    if as_json:
        emit_json([f.as_json() for f in result])
    else:
        table("forecasts", ["strategy", "instrument", "date", "forecast", "source"], _forecast_rows(result))


@main.group("targets")
def targets_group():
    """Target runs: compute, review, approve or reject."""


def _show_run(run, as_json):
    if as_json:
        emit_json(run.as_json())
        return
    reviewed = f", {run.state} by {run.reviewed_by} at {run.reviewed_at:%Y-%m-%d %H:%M} UTC" if run.reviewed_at else ""
    note = f": {run.review_note}" if run.review_note else ""
    click.echo(f"run {run.id} as of {run.as_of}, created {run.created_at:%Y-%m-%d %H:%M} UTC: "
               f"{run.status}{reviewed}{note}")
    rows = []
    for line in run.lines:
        e = line.explain
        rows.append((line.strategy, line.instrument, line.contract, e["forecast"], e["volatility"], e["price"],
                     e["multiplier"], e["fx_rate"], e["capital"], f"[{e['buffer_lower']}, {e['buffer_upper']}]",
                     line.current, line.target, line.change))
    table(f"run {run.id}", ["strategy", "instrument", "contract", "forecast", "vol", "price", "mult", "fx",
                            "capital", "buffer", "current", "target", "change"], rows)
    for line in run.lines:
        e = line.explain
        click.echo(f"{line.strategy}/{line.instrument} -> {line.contract}: forecast {e['forecast']} "
                   f"({e['forecast_source']} {e['forecast_date']}), price {e['price']} {e['currency']} "
                   f"({e['price_source']} {e['price_date']}), vol {e['volatility']} ({e['volatility_source']}), "
                   f"x{e['multiplier']}, fx {e['fx_rate']}; cash vol target {e['daily_cash_vol_target']} / "
                   f"value vol {e['value_vol']} = {e['vol_scalar']}; unrounded {e['unrounded_target']}, "
                   f"buffer [{e['buffer_lower']}, {e['buffer_upper']}]; {line.current} -> {line.target}")


@targets_group.command("compute")
@click.option("--as-of", default=None, help="Compute from data up to this date (YYYY-MM-DD; default today).")
@json_option
@pass_ctx
def targets_compute(c: Context, as_of, as_json):
    """Size every strategy x instrument and store the run for review."""
    environment = c.open()
    run_id = _targets.compute_run(environment, _date_arg(as_of))
    run = _targets.show_run(environment, run_id)
    _show_run(run, as_json)
    if not as_json:
        click.echo(f"review it, then: tradeledger targets approve {run_id}  (or reject {run_id} --note ...)")


@targets_group.command("list")
@json_option
@pass_ctx
def targets_list(c: Context, as_json):
    """Every target run, newest first, with its status."""
    runs = _targets.list_runs(c.open())
    if as_json:
        emit_json([r.as_json(with_lines=False) for r in runs])
    else:
        table("target runs", ["run", "as of", "created", "status", "reviewed by", "note"],
              [(r.id, r.as_of, f"{r.created_at:%Y-%m-%d %H:%M}", r.status, r.reviewed_by, r.review_note)
               for r in runs])


@targets_group.command("show")
@click.argument("run_id", type=int)
@json_option
@pass_ctx
def targets_show(c: Context, run_id, as_json):
    """One run, every line explained."""
    _show_run(_targets.show_run(c.open(), run_id), as_json)


@targets_group.command("approve")
@click.argument("run_id", type=int)
@click.option("--note", default=None)
@pass_ctx
def targets_approve(c: Context, run_id, note):
    """Approve a pending run so that it can be executed."""
    run = _targets.approve_run(c.open(), run_id, _getpass.getuser(), note)
    click.echo(f"run {run.id} approved by {run.reviewed_by}")


@targets_group.command("reject")
@click.argument("run_id", type=int)
@click.option("--note", required=True, help="Why the run is rejected.")
@pass_ctx
def targets_reject(c: Context, run_id, note):
    """Reject a pending run; it can never be executed."""
    run = _targets.reject_run(c.open(), run_id, _getpass.getuser(), note)
    click.echo(f"run {run.id} rejected by {run.reviewed_by}: {run.review_note}")


# --- orders, fills, marks, positions, P&L, the simulated broker's screen, the cycle ---

from tradeledger.engine import cycle as _cycle, fills as _fills, marking as _marking, orders as _orders
from tradeledger.engine.holdings import known_contracts as _known_contracts
from tradeledger.engine.session import Session as _Session
from tradeledger.ledger.numbers import to_decimal as _to_decimal
from tradeledger.reports import pnl as _pnl


class _session:
    """A Session for one command, its broker closed afterwards."""

    def __init__(self, c: Context):
        self.session = _Session(c.open())

    def __enter__(self) -> _Session:
        return self.session

    def __exit__(self, *exc):
        self.session.close()
        return False


def _date(text: str | None, what: str) -> _dt.date | None:
    if text is None:
        return None
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=what) from None


def _plan_rows(order_plan):
    for cp in order_plan.contracts:
        crosses = "; ".join(f"{x.seller}->{x.buyer} {x.quantity}" for x in cp.crosses)
        order = f"{cp.side} {cp.quantity}" if cp.side else ""
        yield (cp.contract.code, ", ".join(f"{h} {q:+}" for h, q in cp.changes), crosses, order,
               ", ".join(f"{h} {q}" for h, q in cp.shares), cp.reference_price, cp.refused or "ok")


def _plan_json(order_plan):
    return {"run": order_plan.run_id, "contracts": [{
        "contract": cp.contract.code, "instrument": cp.instrument, "reference_price": cp.reference_price,
        "changes": dict(cp.changes), "crosses": [{"seller": x.seller, "buyer": x.buyer, "qty": x.quantity}
                                                 for x in cp.crosses],
        "order": {"side": cp.side, "qty": cp.quantity, "allocation": dict(cp.shares)} if cp.side else None,
        "refused": cp.refused or None} for cp in order_plan.contracts]}


def _show_plan(order_plan):
    table(f"plan for run {order_plan.run_id}", ["contract", "changes", "crosses", "order", "allocation",
                                                "reference", "limits"], _plan_rows(order_plan))


@main.group("orders")
def orders_group():
    """Orders from an approved target run."""


@orders_group.command("plan")
@click.argument("run_id", type=int)
@json_option
@pass_ctx
def orders_plan(c: Context, run_id, as_json):
    """Preview the crosses and broker orders of an approved run; nothing is recorded or sent."""
    session = _Session(c.open())
    order_plan = _cycle.plan_run(session, run_id, session.now())
    emit_json(_plan_json(order_plan)) if as_json else _show_plan(order_plan)


@orders_group.command("submit")
@click.argument("run_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (live environments ask).")
@json_option
@pass_ctx
def orders_submit(c: Context, run_id, yes, as_json):
    """Book the crosses, record the orders, then send them (each with an orderRef naming it)."""
    with _session(c) as session:
        if session.env.settings.env == "live" and not yes:
            click.confirm(f"Send run {run_id}'s orders to LIVE account {session.env.settings.account}?", abort=True)
        order_plan, report = _cycle.submit_run(session, run_id, session.now())
        fills = _cycle.wait_for_fills(session, run_id, timeout=10.0)
    if as_json:
        emit_json(_plan_json(order_plan) | {"sent": report.sent, "already_at_broker": report.already_at_broker,
                                            "rejected": report.rejected, "fills_booked": fills.booked})
        return
    _show_plan(order_plan)
    click.echo(f"{report.crosses} crosses booked, {len(report.sent)} orders sent, {len(report.rejected)} rejected, "
               f"{len(fills.booked)} fills booked")
    for ref, why in report.rejected:
        click.echo(f"rejected {ref}: {why}")
    for code, why in report.refusals:
        click.echo(f"refused {code}: {why}")


@orders_group.command("list")
@json_option
@pass_ctx
def orders_list(c: Context, as_json):
    """Every order: state, quantity, filled, allocation."""
    env = c.open()
    with db.read_connection(env.engine) as conn:
        rows = _orders.list_orders(conn)
    if as_json:
        emit_json(rows)
        return
    table("orders", ["id", "order_ref", "run", "contract", "side", "qty", "filled", "state", "allocation"],
          [(r["id"], r["order_ref"], r["run"], r["contract"], r["side"], r["quantity"], r["filled"], r["state"],
            ", ".join(f"{k} {v}" for k, v in r["allocation"].items())) for r in rows])


@orders_group.command("cancel")
@click.argument("order_id", type=int)
@pass_ctx
def orders_cancel(c: Context, order_id):
    """Cancel an order that is not done; what already filled stays booked."""
    with _session(c) as session:
        ref = _orders.cancel(session.env.engine, session.broker, order_id, session.now())
    click.echo(f"cancelled order {order_id} ({ref})")


@main.group("fills")
def fills_group():
    """Executions: sync from the broker, and the blotter."""


@fills_group.command("sync")
@json_option
@pass_ctx
def fills_sync(c: Context, as_json):
    """Book every execution the broker reports that is not booked yet (and late commissions)."""
    with _session(c) as session:
        env = session.env
        report = _fills.sync_fills(env.engine, env.ledger, env.chart, session.broker)
    data = {"booked": report.booked, "commissions": report.commissions, "replays": report.replays,
            "unattributed": report.unattributed, "pending_commissions": report.pending_commissions,
            "corrections_not_booked": report.corrections}
    if as_json:
        emit_json(data)
        return
    click.echo(f"{len(report.booked)} fills booked, {len(report.commissions)} late commissions booked, "
               f"{report.replays} already booked, {len(report.pending_commissions)} commissions pending")
    for key in report.unattributed:
        click.echo(f"warning: fill {key} has no order of ours: booked to Unattributed", err=True)
    for key in report.corrections:
        click.echo(f"warning: execution correction {key} is not booked; see `tradeledger fills list`", err=True)


@fills_group.command("list")
@click.option("--limit", type=int, default=None, help="Only the last N fills.")
@json_option
@pass_ctx
def fills_list(c: Context, limit, as_json):
    """The blotter: fill id, order, strategy, contract, quantity, price, time, commission (or pending)."""
    env = c.open()
    with db.read_connection(env.engine) as conn:
        rows = _fills.list_fills(conn, limit)
    if as_json:
        emit_json(rows)
        return
    table("fills", ["fill", "order", "strategy", "contract", "side", "qty", "price", "time", "commission"],
          [(r["fill_id"], r["order"] or "-", r["strategy"], r["contract"], r["side"], r["quantity"], r["price"],
            r["time"][:19], r["commission"]) for r in rows])


@main.command("mark")
@click.option("--date", "day", default=None, help="Settlement date (YYYY-MM-DD; default: today).")
@json_option
@pass_ctx
def mark(c: Context, day, as_json):
    """Book the day's settlement variation margin per strategy and contract, once per date."""
    session = _Session(c.open())
    env = session.env
    day = _date(day, "--date") or session.now().date()
    prices = _marking.settlement_prices(env.engine, day)
    when = _dt.datetime.combine(day, _dt.time(21, 0), tzinfo=_dt.timezone.utc)
    booked, missing = _marking.mark_day(env.engine, env.ledger, env.chart, _known_contracts(env.ledger), day,
                                        prices, when)
    if as_json:
        emit_json({"date": day, "booked": booked, "missing_settlement": missing})
    else:
        click.echo(f"{day}: settlement booked for {len(booked)} contracts"
                   + (f"; no settlement price for {', '.join(missing)}" if missing else ""))
    if missing:
        sys.exit(1)


@main.command("positions")
@click.option("--strategy", default=None, help="Only this strategy (or 'unattributed').")
@json_option
@pass_ctx
def positions_cmd(c: Context, strategy, as_json):
    """Positions per strategy and contract, from the ledger."""
    rows = _pnl.positions(_Session(c.open()), strategy)
    if as_json:
        emit_json(rows)
        return
    table("positions", ["strategy", "contract", "qty", "mark", "last", "unrealized", "currency"],
          [(r["strategy"], r["contract"], r["qty"], r["mark"], r["last"], r["unrealized"], r["currency"])
           for r in rows])


@main.command("pnl")
@click.option("--by", type=click.Choice(["strategy", "instrument", "day"]), default="strategy", show_default=True)
@click.option("--since", default=None, help="From this date (YYYY-MM-DD), inclusive.")
@click.option("--until", default=None, help="Up to this date (YYYY-MM-DD), exclusive.")
@json_option
@pass_ctx
def pnl_cmd(c: Context, by, since, until, as_json):
    """Realized (variation margin and lot gains), unrealized, commissions and net, in the base currency."""
    result = _pnl.pnl(_Session(c.open()), by, _date(since, "--since"), _date(until, "--until"))
    if as_json:
        emit_json(result)
        return
    table(f"P&L by {by} ({result['currency']})", [by, "realized", "unrealized", "commissions", "net"],
          [(r[by], r["realized"], r["unrealized"], r["commissions"], r["net"]) for r in result["rows"]])
    if result["missing_fx"]:
        click.echo(f"warning: no FX rate for {', '.join(result['missing_fx'])}: base totals left blank", err=True)


@main.group("sim")
def sim_group():
    """The simulated broker's own screen: trades outside tradeledger, prices, settlement, faults."""


def _sim_contract(session, code):
    from tradeledger.engine.config import instrument_of_contract, to_contract

    instrument = instrument_of_contract(session.config, code)
    if instrument is None:
        known = session.exchange().contract(code)
        if known is None:
            raise ValueError(f"unknown contract {code}: not a configured instrument's contract")
        return known
    expiry = ""
    if instrument.is_future:
        from tradeledger.engine.config import MONTH_CODES

        expiry = f"20{code[-2:]}{MONTH_CODES.index(code[-3]) + 1:02d}"
    return to_contract(instrument, code, expiry)


@sim_group.command("trade")
@click.argument("contract")
@click.argument("qty")
@click.argument("price")
@pass_ctx
def sim_trade(c: Context, contract, qty, price):
    """A trade made at the broker outside tradeledger (no orderRef): QTY signed, e.g. -2."""
    session = _Session(c.open())
    execution = session.exchange().external_trade(_sim_contract(session, contract), _to_decimal(qty, "QTY"),
                                                   _to_decimal(price, "PRICE"))
    click.echo(f"broker executed {execution.side} {execution.quantity} {contract} @ {execution.price} "
               f"({execution.exec_id}); `tradeledger fills sync` books it")


@sim_group.command("price")
@click.argument("contract")
@click.argument("price")
@pass_ctx
def sim_price(c: Context, contract, price):
    """Set the simulated market price of a contract."""
    session = _Session(c.open())
    exchange = session.exchange()
    exchange.add_contract(_sim_contract(session, contract))
    filled = exchange.set_price(contract, _to_decimal(price, "PRICE"))
    click.echo(f"{contract} at {price}" + (f"; {len(filled)} resting orders filled" if filled else ""))


@sim_group.command("settle")
@click.argument("contract")
@click.argument("price")
@click.option("--date", "day", default=None)
@pass_ctx
def sim_settle(c: Context, contract, price, day):
    """Settle a contract at the exchange (cash moves) and record the settlement price for `mark`."""
    session = _Session(c.open())
    day = _date(day, "--date") or session.now().date()
    number = _to_decimal(price, "PRICE")
    cash = session.exchange().settle(contract, number, day)
    csv_text = f"date,contract,settle\n{day.isoformat()},{contract},{number}\n"
    from tradeledger.engine import prices as _p

    _p.store_rows(session.env, _p.parse_prices_csv(csv_text, session.config, session.env.settings.base_currency,
                                                   "sim settle"), "sim settle", replace=True)
    click.echo(f"{contract} settled at {number} on {day}: {cash} moved to cash at the broker")


@sim_group.command("fault")
@click.argument("kind", type=click.Choice(["partial-fill", "duplicate-executions", "late-commission",
                                           "disconnect", "correct"]))
@click.option("--qty", default=None, help="partial-fill: quantity that fills; correct: new quantity.")
@click.option("--price", default=None, help="correct: the corrected price.")
@click.option("--exec-id", default=None, help="correct: the execution to correct.")
@click.option("--count", type=int, default=1, help="How many calls/polls the fault lasts.")
@pass_ctx
def sim_fault(c: Context, kind, qty, price, exec_id, count):
    """Arm a fault at the simulated broker, to see tradeledger handle it."""
    exchange = _Session(c.open()).exchange()
    if kind == "partial-fill":
        exchange.fault_partial_fill(qty=_to_decimal(qty or "1", "--qty"))
    elif kind == "duplicate-executions":
        exchange.fault_duplicate_executions(count)
    elif kind == "late-commission":
        exchange.fault_late_commission(count)
    elif kind == "disconnect":
        exchange.fault_disconnect(count)
    else:
        if not exec_id:
            raise click.UsageError("correct needs --exec-id")
        exchange.correct_execution(exec_id, price and _to_decimal(price, "--price"), qty and _to_decimal(qty, "--qty"))
    click.echo(f"fault armed: {kind}")


@main.command("cycle")
@click.option("--approve", is_flag=True, help="Approve the computed run and trade it now.")
@click.option("--as-of", default=None, help="Compute from data up to this date (YYYY-MM-DD).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (live environments ask).")
@json_option
@pass_ctx
def cycle_cmd(c: Context, approve, as_of, yes, as_json):
    """Compute targets and stop for review; with --approve: plan, submit, wait for fills, book, report."""
    with _session(c) as session:
        if approve and session.env.settings.env == "live" and not yes:
            click.confirm(f"Trade LIVE account {session.env.settings.account} without reviewing the run?", abort=True)
        result = _cycle.run_cycle(session, approve, _date(as_of, "--as-of"), who=_getpass.getuser())
        data = {"run": result.run_id, "approved": result.approved, "notes": result.notes}
        if result.approved:
            data |= {"plan": _plan_json(result.plan), "sent": result.submitted.sent,
                     "rejected": result.submitted.rejected, "fills_booked": result.fills.booked,
                     "positions": _pnl.positions(session), "pnl": _pnl.pnl(session)}
    if as_json:
        emit_json(data)
        return
    for note in result.notes:
        click.echo(note)
    if result.approved:
        _show_plan(result.plan)
        click.echo(f"{len(result.submitted.sent)} orders sent, {len(result.fills.booked)} fills booked")
        table("positions", ["strategy", "contract", "qty"], [(r["strategy"], r["contract"], r["qty"])
                                                            for r in data["positions"]])
        table("P&L", ["strategy", "realized", "unrealized", "commissions", "net"],
              [(r["strategy"], r["realized"], r["unrealized"], r["commissions"], r["net"])
               for r in data["pnl"]["rows"]])


# --- the demo ---


@main.command("demo")
@click.option("--days", type=click.IntRange(1, 20), default=3, show_default=True)
@pass_ctx
def demo_cmd(c: Context, days):
    """Play a few simulated trading days in a NEW home (--home, or a fresh directory it names)."""
    import tempfile

    from tradeledger.engine.demo import run_demo

    home = Path(c.home) if c.home else Path(tempfile.mkdtemp(prefix="tradeledger-demo-"))
    if (home / "paper").exists() or (home / "live").exists():
        raise click.UsageError(f"{home} already holds an environment; the demo only runs in a new home")
    click.echo(f"demo home: {home}")
    session = run_demo(home, days, progress=lambda message: click.echo(f"  {message}"))
    try:
        env = session.env
        rows = _pnl.positions(session)
        table("positions", ["strategy", "contract", "qty", "mark", "last", "unrealized"],
              [(r["strategy"], r["contract"], r["qty"], r["mark"], r["last"], r["unrealized"]) for r in rows])
        result = _pnl.pnl(session)
        table(f"P&L by strategy ({result['currency']})", ["strategy", "realized", "unrealized", "commissions", "net"],
              [(r["strategy"], r["realized"], r["unrealized"], r["commissions"], r["net"]) for r in result["rows"]])
        export_beancount(env.ledger, env.ledger_path, operating_currency=env.settings.base_currency)
        checked = check_ledger(env.ledger, env.ledger_path)
        from tradeledger.engine.reconcile import reconcile_session

        reconciled = reconcile_session(session, who="demo")
    finally:
        session.close()
    click.echo(f"check: {'clean' if checked.ok else 'NOT CLEAN'} ({checked.entries} entries, "
               f"{len(checked.errors)} beancount errors, {len(checked.differences)} differences)")
    click.echo(f"reconcile: {'clean' if reconciled.clean else 'NOT CLEAN'} (every contract and currency "
               f"against the broker; the trade made at its screen sits in Unattributed)")
    click.echo(f"explore it: tradeledger --home {home} positions | pnl --by instrument | fills list | targets list")
    click.echo(f"browse it:  fava {env.ledger_path}")
    if not (checked.ok and reconciled.clean):
        sys.exit(1)


# --- adjust, daemon ---

from tradeledger.engine import adjust as _adjust


def _adjust_context(session) -> _adjust.Context:
    strategies = {name: s.account_name for name, s in session.config.strategies.items()}
    return _adjust.Context(session.env.ledger, session.env.chart, strategies)


def _adjust_run(c: Context, kind: str, planner, yes: bool, as_json: bool, before=None) -> None:
    """Dry run first (the entry, its postings, what it resolves), then book on confirmation."""
    with _session(c) as session:
        env = session.env
        if before is not None:
            before(session)
        ctx, now, key = _adjust_context(session), session.now(), _adjust.new_key(kind, env.chart)
        with db.read_connection(env.engine) as conn:
            plan = planner(conn, ctx, now, key)
        summary = plan.summary()
        if not as_json:
            click.echo(f"dry run: {summary['narration']}")
            table(f"entry ({kind})", ["account", "units", "commodity"], summary["postings"])
            if summary["resolves"]:
                click.echo(f"resolves, if open: {', '.join(summary['resolves'])}")
        if not yes and not click.confirm("Book this entry?", default=False):
            if as_json:
                emit_json(summary | {"booked": False})
            else:
                click.echo("not booked")
            return
        booked = _adjust.book(env.engine, ctx, lambda conn: planner(conn, ctx, now, key), _getpass.getuser(),
                              expect=plan.txn.fingerprint())
    if as_json:
        emit_json(summary | {"booked": True, "entry": booked.txn_id, "adjustment": booked.adjustment_id,
                             "resolved": list(booked.resolved)})
    else:
        click.echo(f"booked entry {booked.txn_id} (adjustment {booked.adjustment_id})"
                   + (f"; resolved {', '.join(booked.resolved)}" if booked.resolved else ""))


_yes_option = click.option("--yes", is_flag=True, help="Book at once, without the dry run's confirmation.")
_reason_option = click.option("--reason", required=True, help="Why: kept with the entry.")


@main.group("adjust")
def adjust_group():
    """Repair the books when something happened outside tradeledger: each a ledger entry with a reason."""


@adjust_group.command("attribute")
@click.argument("fill")
@click.option("--strategy", required=True)
@click.option("--reason", default="attributed by hand", show_default=True)
@_yes_option
@json_option
@pass_ctx
def adjust_attribute(c: Context, fill, strategy, reason, yes, as_json):
    """Move an unattributed fill's position to a strategy, at the fill price."""
    _adjust_run(c, "attribute", lambda conn, ctx, now, key: _adjust.plan_attribute(
        conn, ctx, fill, strategy, reason, now, key), yes, as_json)


@adjust_group.command("adopt")
@click.argument("contract")
@click.argument("qty")
@click.option("--strategy", required=True)
@click.option("--price", default=None, help="Price to adopt at (default: the current mark).")
@click.option("--reason", default="adopted from unattributed", show_default=True)
@_yes_option
@json_option
@pass_ctx
def adjust_adopt(c: Context, contract, qty, strategy, price, reason, yes, as_json):
    """Move QTY of an unattributed position into a strategy, at the current mark."""
    qty, price = _to_decimal(qty, "QTY"), price and _to_decimal(price, "--price")
    _adjust_run(c, "adopt", lambda conn, ctx, now, key: _adjust.plan_adopt(
        conn, ctx, contract, qty, strategy, reason, now, key, price), yes, as_json)


@adjust_group.command("transfer")
@click.argument("contract")
@click.argument("qty")
@click.option("--from", "source", required=True)
@click.option("--to", "target", required=True)
@click.option("--price", default=None, help="Transfer price (default: the giver's current mark).")
@_reason_option
@_yes_option
@json_option
@pass_ctx
def adjust_transfer(c: Context, contract, qty, source, target, price, reason, yes, as_json):
    """Move QTY of a position from one strategy to another, at the current mark."""
    qty, price = _to_decimal(qty, "QTY"), price and _to_decimal(price, "--price")
    _adjust_run(c, "transfer", lambda conn, ctx, now, key: _adjust.plan_transfer(
        conn, ctx, contract, qty, source, target, reason, now, key, price), yes, as_json)


@adjust_group.command("manual-close")
@click.argument("contract")
@click.option("--strategy", required=True)
@click.option("--price", default=None, help="The price it was closed at (no broker execution).")
@click.option("--exec", "exec_id", default=None, help="The broker's execution that closed it.")
@click.option("--reason", default="closed outside tradeledger", show_default=True)
@_yes_option
@json_option
@pass_ctx
def adjust_manual_close(c: Context, contract, strategy, price, exec_id, reason, yes, as_json):
    """Book a position closed outside tradeledger: from the broker's execution, or at a price."""
    if (price is None) == (exec_id is None):
        raise click.UsageError("give exactly one of --price or --exec")
    price = price and _to_decimal(price, "--price")

    def sync_first(session):  # the execution is booked (to Unattributed) before it is attributed
        if exec_id is not None:
            _fills.sync_fills(session.env.engine, session.env.ledger, session.env.chart, session.broker)

    _adjust_run(c, "manual-close", lambda conn, ctx, now, key: _adjust.plan_manual_close(
        conn, ctx, contract, strategy, reason, now, key, price, exec_id), yes, as_json, before=sync_first)


@adjust_group.command("reverse")
@click.argument("entry", type=int)
@_reason_option
@_yes_option
@json_option
@pass_ctx
def adjust_reverse(c: Context, entry, reason, yes, as_json):
    """Book the exact opposite of an entry, linked to it."""
    _adjust_run(c, "reverse", lambda conn, ctx, now, key: _adjust.plan_reverse(conn, ctx, entry, reason, now, key),
                yes, as_json)


@adjust_group.command("cash", context_settings={"ignore_unknown_options": True})
@click.argument("currency")
@click.argument("amount")
@click.option("--kind", "cash_kind", type=click.Choice(_adjust.CASH_KINDS), default="adjustment", show_default=True)
@_reason_option
@_yes_option
@json_option
@pass_ctx
def adjust_cash(c: Context, currency, amount, cash_kind, reason, yes, as_json):
    """Book a cash movement (AMOUNT signed: + in, - out): interest, fees, deposits, withdrawals."""
    amount = _to_decimal(amount, "AMOUNT")
    _adjust_run(c, "cash", lambda conn, ctx, now, key: _adjust.plan_cash(
        conn, ctx, currency, amount, reason, now, key, cash_kind), yes, as_json)


@adjust_group.command("list")
@json_option
@pass_ctx
def adjust_list(c: Context, as_json):
    """Every maintenance entry booked: what, why, who, and its ledger entry."""
    env = c.open()
    with db.read_connection(env.engine) as conn:
        rows = _adjust.list_adjustments(conn)
    if as_json:
        emit_json(rows)
        return
    table("adjustments", ["id", "kind", "subject", "from", "to", "qty", "price", "entry", "who", "reason"],
          [(r["id"], r["kind"], r["subject"], r["from"], r["to"], r["quantity"], r["price"], r["entry"], r["who"],
            r["reason"]) for r in rows])


@main.command("daemon")
@click.option("--once", is_flag=True, help="Run every job once and exit (0 if all succeeded, 1 if not).")
@pass_ctx
def daemon_cmd(c: Context, once):
    """Run the scheduler: fill sync, reconciliation, settlement marks, data and targets from [daemon]."""
    from tradeledger.engine.daemon import Daemon, DaemonAlreadyRunning

    env = c.open()
    daemon = Daemon(env)
    try:
        daemon.acquire()
    except DaemonAlreadyRunning as exc:
        _fail(str(exc))
    try:
        if once:
            ok = daemon.run_once()
            for r in daemon.results:
                click.echo(f"{r.name}: {r.result}")
        else:
            click.echo(f"daemon running for {env.settings.env} (pid {os.getpid()}); logs in "
                       f"{daemon.log.handlers[0].baseFilename}")
            daemon.serve()
            ok = True
    finally:
        daemon.release()
    sys.exit(0 if ok else 1)


# --- reconciliation, exceptions ---------------------------------------------------------------

from tradeledger.engine import exceptions as _exceptions, reconcile as _reconcile, snapshots as _snapshots


def _recon_tables(result) -> None:
    table("breaks", ["account", "contract", "kind", "ledger", "broker", "diff"],
          [(b.account, b.contract or "", b.kind, b.ledger_qty, b.broker_qty, b.diff) for b in result.breaks])
    table("cash", ["currency", "ledger", "broker", "unsettled", "diff", "status"],
          [(c.currency, c.ledger, c.broker, c.unsettled, c.diff, c.status) for c in result.cash])
    if result.unattributed:
        table("unattributed", ["contract", "qty", "adopted now"],
              [(u["contract"], u["qty"], "yes" if u["adopted"] else "") for u in result.unattributed])


@main.command("reconcile")
@json_option
@pass_ctx
def reconcile_cmd(c: Context, as_json):
    """Snapshot the broker, book its executions, adopt old positions, compare; exit 1 unless clean."""
    with _session(c) as session:
        result = _reconcile.reconcile_session(session, who=_getpass.getuser())
    if as_json:
        emit_json(result.as_json())
    else:
        _recon_tables(result)
        for note in result.notes:
            click.echo(note)
        click.echo(f"reconciliation {result.reconciliation_id}: {'clean' if result.clean else 'NOT CLEAN'}")
    sys.exit(0 if result.clean else 1)


@main.command("snapshot")
@json_option
@pass_ctx
def snapshot_cmd(c: Context, as_json):
    """Take and store a broker snapshot (positions, cash, unsettled P&L, open orders); exit 1 if it fails."""
    with _session(c) as session:
        env = session.env
        now = _reconcile.session_now(session)
        try:
            broker = session.broker
        except Exception as exc:  # unreachable: recorded as a failed snapshot
            with env.engine.begin() as conn:
                sid = _snapshots.record_failed(conn, env.settings.account, now, f"{type(exc).__name__}: {exc}")
            result = _snapshots.SnapshotResult(sid, None, str(exc))
        else:
            result = _snapshots.take_snapshot(env.engine, broker, env.settings.account, now)
    data = _snapshots.snapshot_json(result)
    if as_json:
        emit_json(data)
    elif result.ok:
        table(f"snapshot {result.id} at {data['taken_at']}", ["contract", "type", "qty", "avg cost"],
              [(p["contract"], p["sec_type"], p["qty"], p["avg_cost"]) for p in data["positions"]])
        table("cash", ["currency", "cash", "unsettled"], [(r["currency"], r["cash"], r["unsettled"]) for r in data["cash"]])
        click.echo(f"{len(data['open_orders'])} open orders")
    else:
        click.echo(f"snapshot {result.id} FAILED: {result.error}")
    sys.exit(0 if result.ok else 1)


@main.group("exceptions")
def exceptions_group():
    """Exceptions: list, show, acknowledge, resolve."""


@exceptions_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved exceptions.")
@json_option
@pass_ctx
def exceptions_list(c: Context, show_all, as_json):
    with db.read_connection(c.open().engine) as conn:
        rows = _exceptions.list_exceptions(conn, None if show_all else "open")
    if as_json:
        emit_json(rows)
        return
    table("exceptions", ["id", "state", "severity", "kind", "subject", "count", "last seen", "detail"],
          [(r["id"], r["state"], r["severity"], r["kind"], r["subject"], r["count"], r["last_seen"],
            r["detail"][:80]) for r in rows])


@exceptions_group.command("show")
@click.argument("exception_id", type=int)
@json_option
@pass_ctx
def exceptions_show(c: Context, exception_id, as_json):
    with db.read_connection(c.open().engine) as conn:
        info = _exceptions.get_exception(conn, exception_id)
    if as_json:
        emit_json(info)
        return
    rows = [(k, v) for k, v in info.items() if k != "locks"]
    rows += [(f"lock {lk['key']}", f"{'active' if lk['unlocked_at'] is None else 'released ' + lk['unlocked_at']}: "
              f"{lk['reason']}") for lk in info["locks"]]
    table(f"exception {exception_id}", ["field", "value"], rows)


@exceptions_group.command("ack")
@click.argument("exception_id", type=int)
@click.option("--why", required=True, help="Why (who takes it on, what is being done).")
@pass_ctx
def exceptions_ack(c: Context, exception_id, why):
    with c.open().engine.begin() as conn:
        _exceptions.acknowledge(conn, exception_id, _getpass.getuser(), why)
    click.echo(f"exception {exception_id} acknowledged")


@exceptions_group.command("resolve")
@click.argument("exception_id", type=int)
@click.option("--why", required=True, help="Why it is resolved.")
@pass_ctx
def exceptions_resolve(c: Context, exception_id, why):
    with c.open().engine.begin() as conn:
        _exceptions.resolve(conn, exception_id, _getpass.getuser(), why)
    click.echo(f"exception {exception_id} resolved (its locks released)")


def _operations_status(environment, probe_broker: bool) -> dict:
    """Broker, snapshot, reconciliation, exceptions, locks, target run, today's P&L, daemon (for `status`)."""
    from tradeledger.engine.tables import target_run

    info: dict = {}
    session = _Session(environment)
    try:
        if probe_broker:
            try:
                session.broker
                info["broker_reachable"] = True
            except Exception as exc:  # reachable or not is the answer, not an error
                info["broker_reachable"] = False
                info["broker_error"] = f"{type(exc).__name__}: {exc}"
        else:
            info["broker_reachable"] = "not checked"
        today = _reconcile.session_now(session).date()
    finally:
        session.close()
    with db.read_connection(environment.engine) as conn:
        info["last_snapshot"] = _snapshots.latest_snapshot(conn, environment.settings.account)
        info["last_reconciliation"] = _reconcile.last_reconciliation(conn)
        info["open_exceptions"] = _exceptions.open_counts(conn)
        info["locks"] = _exceptions.active_locks(conn)
        run = conn.execute(sa.select(target_run).order_by(target_run.c.id.desc()).limit(1)).first()
        info["latest_target_run"] = None if run is None else {"id": run.id, "as_of": run.as_of, "state": run.state}
        info["daemon_heartbeat"] = _heartbeat(conn, environment.settings.env)
    pnl: dict = {}
    for (account, currency), amount in environment.ledger.income(since=today).items():
        if account.startswith(("Income:Trading:", "Expenses:Commissions:")):
            pnl[currency] = pnl.get(currency, 0) - amount
    info["pnl_today"] = {"date": today.isoformat(), **pnl}
    return info


def _heartbeat(conn, env_name: str):
    """The daemon's last heartbeat, if the daemon's tables exist and it ever ran; else "never"."""
    if not sa.inspect(conn).has_table("daemon_heartbeat"):
        return "never"
    row = conn.execute(sa.text("SELECT * FROM daemon_heartbeat WHERE env = :env"), {"env": env_name}).mappings().first()
    if row is None:
        return "never"
    return {k: row[k] for k in ("at", "state", "last_job", "last_result") if k in row}


def _status_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_status_value(v)}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


# --- ibsim ---
# The simulated IB gateway (broker/ibsim) as a process, and its market screen. Its state is a
# SimExchange file: by default <home>/<env>/ibsim.db, with the environment's account.


def _ibsim_state(c: Context, state: str | None) -> tuple[Path, str | None]:
    """(state file, the environment's account if the environment exists)."""
    env_dir = resolve_home(c.home) / c.env
    account = None
    if (env_dir / "config.toml").exists():
        account = parse_settings(env_dir / "config.toml", c.env).account
    if state:
        return Path(state), account
    env_dir.mkdir(parents=True, exist_ok=True)
    return env_dir / "ibsim.db", account


def _ibsim_exchange(c: Context, state: str | None):
    import sqlite3

    from tradeledger.broker.simexchange import SimExchange

    path, account = _ibsim_state(c, state)
    if not path.exists():
        raise click.UsageError(f"no simulated gateway state at {path}: start `tradeledger ibsim serve` first")
    with sqlite3.connect(path) as raw:
        stored = raw.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
    return SimExchange(path, stored[0] if stored else (account or "DU1234567"))


def _ibsim_contract(c: Context, code: str, exchange):
    from tradeledger.engine.config import MONTH_CODES, instrument_of_contract, to_contract

    instrument = instrument_of_contract(_Session(c.open()).config, code)
    if instrument is None:
        known = exchange.contract(code)
        if known is None:
            raise ValueError(f"unknown contract {code}: not a configured instrument's contract")
        return known
    expiry = f"20{code[-2:]}{MONTH_CODES.index(code[-3]) + 1:02d}" if instrument.is_future else ""
    return to_contract(instrument, code, expiry)


def _ibsim_open(c: Context, exchange) -> list[str]:
    """Price every configured instrument's current contract at its latest imported close."""
    from tradeledger.engine import tables as _tables
    from tradeledger.engine.config import current_contract
    from tradeledger.ledger.numbers import from_scaled

    session = _Session(c.open())
    bars, opened = _tables.price_bar, []
    with db.read_connection(session.env.engine) as conn:
        for name, instrument in sorted(session.config.instruments.items()):
            close = conn.execute(sa.select(bars.c.close).where(bars.c.instrument == name)
                                 .order_by(bars.c.date.desc()).limit(1)).scalar()
            if close is None:
                continue
            contract = current_contract(instrument, session.now().date())
            exchange.add_contract(contract)
            exchange.set_price(contract.code, from_scaled(close))
            opened.append(contract.code)
    return opened


@main.group("ibsim")
def ibsim_group():
    """The simulated IB gateway: serve the TWS API on a port, and act on its market."""


@ibsim_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4002, type=int, show_default=True, help="0: any free port.")
@click.option("--account", default=None, help="Managed account (default: the environment's, else DU1234567).")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="SimExchange file (default: <home>/<env>/ibsim.db).")
@click.option("--commission", default=None, help="Commission per contract/share (kept in the state file).")
@pass_ctx
def ibsim_serve(c: Context, host, port, account, state, commission):
    """Run the simulated gateway until Ctrl-C or SIGTERM."""
    import asyncio
    import signal

    from tradeledger.broker.ibsim import IBSimServer
    from tradeledger.broker.simexchange import SimExchange

    path, env_account = _ibsim_state(c, state)
    account = account or env_account or "DU1234567"
    rate = commission and _to_decimal(commission, "--commission")
    exchange = SimExchange(path, account, commission_per_contract=rate)

    async def serve() -> None:
        server = IBSimServer(exchange, host=host, port=port, account=account)
        await server.start_async()
        click.echo(f"IB simulated gateway for {account} listening on {host}:{server.port} (state {path})")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop_async()

    try:
        asyncio.run(serve())
    finally:
        exchange.close()
    click.echo("IB simulated gateway stopped")


@ibsim_group.command("price")
@click.argument("contract")
@click.argument("price")
@click.option("--state", type=click.Path(dir_okay=False), default=None)
@pass_ctx
def ibsim_price(c: Context, contract, price, state):
    """Set a contract's market price at the gateway (known from the environment's instruments)."""
    exchange = _ibsim_exchange(c, state)
    exchange.add_contract(_ibsim_contract(c, contract, exchange))
    filled = exchange.set_price(contract, _to_decimal(price, "PRICE"))
    click.echo(f"{contract} at {price}" + (f"; {len(filled)} resting orders filled" if filled else ""))


@ibsim_group.command("open")
@click.option("--state", type=click.Path(dir_okay=False), default=None)
@pass_ctx
def ibsim_open(c: Context, state):
    """Price every configured instrument's current contract at its latest imported close."""
    opened = _ibsim_open(c, _ibsim_exchange(c, state))
    click.echo(f"{len(opened)} contracts priced at the gateway: {', '.join(opened)}")


@ibsim_group.command("seed-demo")
@click.option("--state", type=click.Path(dir_okay=False), default=None)
@pass_ctx
def ibsim_seed_demo(c: Context, state):
    """Give a paper IB environment the demo's instruments, strategies and price history up to
    yesterday, and price their contracts at the gateway: `cycle --approve` then trades."""
    from tradeledger.engine import demo as _demo, prices as _p

    env = c.open()
    if env.settings.broker != "ib" or env.settings.env != "paper":
        raise click.UsageError("seed-demo is for a paper environment whose broker is ib")
    if "instruments" in env.settings.raw:
        raise click.UsageError(f"{env.config_path} already configures instruments; not adding the demo's")
    exchange = _ibsim_exchange(c, state)
    with env.config_path.open("a", encoding="utf-8") as fh:
        fh.write("\n" + _demo.demo_config())
    c._environment = None
    env = c.open()
    yesterday = _dt.date.today() - _dt.timedelta(days=1)
    closes, fx = _demo.history_csvs(_demo.seed_history(yesterday))
    config = _Session(env).config
    for text, source in ((closes, "demo closes"), (fx, "demo fx")):
        _p.store_rows(env, _p.parse_prices_csv(text, config, env.settings.base_currency, source), source)
    opened = _ibsim_open(c, exchange)
    click.echo(f"demo instruments and history up to {yesterday} added to {env.config_path}; "
               f"{len(opened)} contracts priced at the gateway")


@ibsim_group.command("trade")
@click.argument("contract")
@click.argument("qty")
@click.argument("price")
@click.option("--state", type=click.Path(dir_okay=False), default=None)
@pass_ctx
def ibsim_trade(c: Context, contract, qty, price, state):
    """A trade made at the gateway outside tradeledger (no orderRef): QTY signed."""
    exchange = _ibsim_exchange(c, state)
    execution = exchange.external_trade(_ibsim_contract(c, contract, exchange), _to_decimal(qty, "QTY"),
                                        _to_decimal(price, "PRICE"))
    click.echo(f"gateway executed {execution.side} {execution.quantity} {contract} @ {execution.price} "
               f"({execution.exec_id})")


@ibsim_group.command("correct")
@click.argument("exec_id")
@click.option("--price", default=None)
@click.option("--qty", default=None)
@click.option("--state", type=click.Path(dir_okay=False), default=None)
@pass_ctx
def ibsim_correct(c: Context, exec_id, price, qty, state):
    """Correct an execution at the gateway (.01 -> .02); `fills sync` books it by reversal."""
    ex = _ibsim_exchange(c, state).correct_execution(
        exec_id, price and _to_decimal(price, "--price"), qty and _to_decimal(qty, "--qty"))
    click.echo(f"corrected: {ex.exec_id} {ex.side} {ex.quantity} @ {ex.price}")


if __name__ == "__main__":  # pragma: no cover
    main()
