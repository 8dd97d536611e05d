"""`tradeledger` commands: prices, instruments and mappings, signals, and the review of target runs.

Registered on the `main` group of cli.py, which imports this module; each command opens its
environment, calls the engine, and prints a table or JSON.
"""

from __future__ import annotations

import datetime as _dt
import getpass as _getpass

import click
from tradeledger.commands.common import Invocation, json_option, open_session, pass_ctx, reason_option, lazy, result_option, said
from tradeledger.reports.render import emit_json, rounded, say, table

# --- data, instruments, signals, targets ---------------------------------------------------------
# Prices and FX (engine/prices.py), instruments and mappings, forecasts (engine/forecasts.py) and
# target runs (engine/targets.py).
# Imported on first use (commands/common.py: lazy): starting the CLI imports no engine.
_forecasts = lazy("tradeledger.engine.targets.forecasts")
_prices = lazy("tradeledger.engine.targets.prices")
_targets = lazy("tradeledger.engine.targets.runs")


def _date_arg(value: str | None) -> _dt.date | None:
    return None if value is None else _prices.parse_date(value)


def _import_summary(report) -> str:
    return (f"{report.source}: {report.rows} {report.kind} rows: {report.inserted} new, "
            f"{report.unchanged} unchanged, {report.replaced} replaced")


@click.group("data")
def data_group():
    """Price history, settlement prices and FX rates."""


@data_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Let the file change values already stored.")
@json_option
@pass_ctx
def data_import(c: Invocation, file, replace, as_json):
    """Import a CSV of closes (date,instrument,close), settlements (date,contract,settle) or FX
    rates (date,currency,rate). Any bad row: every one reported by line, nothing stored."""
    report = _prices.import_prices_csv(c.open(), file, replace=replace)
    emit_json(report.as_json()) if as_json else click.echo(_import_summary(report))


@click.group("instruments")
def instruments_group():
    """Configured instruments and signal-to-execution mappings."""


@instruments_group.command("list")
@json_option
@pass_ctx
def instruments_list(c: Invocation, as_json):
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
@result_option
@pass_ctx
def instruments_map(c: Invocation, signal, execution, as_json):
    """Make strategies signalling on SIGNAL trade EXECUTION (the same name removes the mapping)."""
    from tradeledger.engine.accounting.holders import holder_of
    from tradeledger.reports.names import Names

    env = c.open()
    change = _targets.set_mapping(env, signal, execution)
    names = Names(env.config)
    held = [(names.strategy(holder_of(env.chart, a) or None), k, q) for a, k, q in change.holders]
    data = {"signal": signal, "executes_in": change.new, "was": change.old, "changed": change.old != change.new,
            "still_held": [{"strategy": who, "contract": k, "qty": q} for who, k, q in held]}
    if change.old == change.new:
        said(as_json, data, f"{signal} already executes in {execution}; nothing changed")
        return
    said(as_json, data, f"{signal} now executes in {change.new} (was {change.old})")
    for who, contract, qty in held:
        click.echo(f"warning: {who} still holds {qty} {contract}; the next run targets {change.new}, "
                   f"so close or transfer it yourself", err=True)


@click.group("signals")
def signals_group():
    """Forecasts per strategy and signal instrument."""


def _forecast_rows(forecasts):
    return [(f.strategy, f.instrument, f.date, f.value, f.source) for f in forecasts]


@signals_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Let the file change imported forecasts already stored.")
@json_option
@pass_ctx
def signals_import(c: Invocation, file, replace, as_json):
    """Import forecasts made elsewhere (date,strategy,instrument,forecast), all or nothing."""
    report = _forecasts.import_forecasts_csv(c.open(), file, replace=replace)
    emit_json(report.as_json()) if as_json else click.echo(_import_summary(report))


@signals_group.command("compute")
@click.option("--as-of", default=None, help="Use prices up to this date (YYYY-MM-DD).")
@json_option
@pass_ctx
def signals_compute(c: Invocation, as_of, as_json):
    """Compute and store every strategy's forecasts from its rules (imports take precedence)."""
    result = _forecasts.compute_forecasts(c.open(), _date_arg(as_of))
    if as_json:
        emit_json([f.as_json() for f in result])
    else:
        table("forecasts", ["strategy", "instrument", "date", "forecast", "source"], _forecast_rows(result))


@click.group("targets")
def targets_group():
    """Target runs: compute, review, approve or reject."""


ALLOCATION_MONEY = {"capital", "cash_left", "target_value"}  # shown to the cent; weights, drift, returns to 4 places


def _for_reading(key: str, value) -> str:
    """One figure of an allocation's explanation as a person reads it (exact in --json): money to the
    cent, weights and returns to 4 places, a price and a whole number as they are, a nested record
    (the weights' source) as `(key value, ...)`."""
    from decimal import Decimal, InvalidOperation

    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_for_reading(k, v)}" for k, v in sorted(value.items())) + ")"
    if isinstance(value, bool) or key == "price":
        return str(value)
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    if not number.is_finite() or number == number.to_integral_value():
        return str(value)
    places = 2 if key in ALLOCATION_MONEY else 4
    return rounded(number, places) if -number.as_tuple().exponent > places else str(value)


def _show_run(run, as_json, flags=None, planned=False):
    flags = flags or {}
    if as_json:
        data = run.as_json()
        for line in data.get("lines", []):  # the strategy is named by "strategy"; its account component
            line["explain"] = {k: v for k, v in line["explain"].items()  # is beancount's, for the export
                               if k not in ("account", "holdings_account")}
        for strategy in data.get("inputs", {}).get("strategies", {}).values():
            strategy.pop("account", None)
        emit_json(data | {"limits": {code: {"outcome": o, "detail": d} for code, (o, d) in flags.items()},
                          "planned": planned})
        return
    reviewed = f", {run.state} by {run.reviewed_by} at {run.reviewed_at:%Y-%m-%d %H:%M} UTC" if run.reviewed_at else ""
    note = f": {run.review_note}" if run.review_note else ""
    say(f"run {run.id} as of {run.as_of}, created {run.created_at:%Y-%m-%d %H:%M} UTC: "
               f"{run.status}{reviewed}{note}")
    rows = []
    for line in run.lines:
        e = line.explain
        buffer = f"[{rounded(e['buffer_lower'], 2)}, {rounded(e['buffer_upper'], 2)}]" if "buffer_lower" in e else ""
        rows.append((line.strategy, line.instrument, line.contract, e.get("forecast"), e.get("volatility"), e.get("price"),
                     e.get("multiplier"), e.get("fx_rate"), e.get("capital"), buffer,
                     line.current, line.target, line.change))
    table(f"run {run.id}", ["strategy", "instrument", "contract", "forecast", "vol", "price", "mult", "fx",
                            "capital", "buffer", "current", "target", "change"], rows,
          optional=["fx", "mult", "buffer", "capital", "vol", "instrument"])
    base = run.inputs.get("base_currency", "")
    for name, cap in sorted(run.inputs.get("strategy_capital", {}).items()):
        say(f"capital of {name}: {rounded(cap['amount'], 2)} {base} ({cap['source']})")
    for line in run.lines:
        e = line.explain
        if e.get("kind") == "allocation":  # weights, not forecasts: every figure, rounded for reading
            say(f"{line.strategy}/{line.instrument}: " + ", ".join(
                f"{k} {_for_reading(k, v)}" for k, v in sorted(e.items())
                if k not in ("strategy", "account", "holdings_account", "kind")))
            continue
        r2, r4 = (lambda v: rounded(v, 2)), (lambda v: rounded(v, 4))  # exact figures: --json
        say(f"{line.strategy}/{line.instrument} -> {line.contract}: forecast {r2(e['forecast'])} "
                   f"({e['forecast_source']} {e['forecast_date']}), price {e['price']} {e['currency']} "
                   f"({e['price_source']} {e['price_date']}), vol {r4(e['volatility'])} ({e['volatility_source']}), "
                   f"x{e['multiplier']}, fx {e['fx_rate']}; cash vol target {r2(e['daily_cash_vol_target'])} / "
                   f"value vol {r2(e['value_vol'])} = {r4(e['vol_scalar'])}; unrounded {r2(e['unrounded_target'])}, "
                   f"buffer [{r2(e['buffer_lower'])}, {r2(e['buffer_upper'])}]; {line.current} -> {line.target}")
    for code, (outcome, detail) in sorted(flags.items()):
        if outcome in ("refused", "clipped"):
            when = "was" if planned else "will be"
            click.echo(f"warning: {code} {when} {outcome} by a limit: {detail}", err=True)
    if run.unattended:
        say(f"note: run {run.id} was approved unattended: no person reviewed it")


@targets_group.command("compute")
@click.option("--as-of", default=None, help="Compute from data up to this date (YYYY-MM-DD; default today).")
@json_option
@pass_ctx
def targets_compute(c: Invocation, as_of, as_json):
    """Size every strategy x instrument and store the run for review (stamped by the environment's clock)."""
    with open_session(c) as session:
        now = session.now()  # the simulated exchange's clock on sim, as the cycle uses
        run_id = _targets.compute_run(session, _date_arg(as_of) or now.date(), now)
        run = _targets.show_run(session, run_id, now)
        before = _targets.superseded_by_run(session, run_id)
    _show_run(run, as_json)
    if not as_json:
        if before is not None and before.state == "approved":
            click.echo(f"warning: {before.describe()}: its approval is discarded", err=True)
        elif before is not None:
            say(before.describe())
        say(f"review it, then: tradeledger targets approve {run_id}  (or reject {run_id} --reason ...)")


@targets_group.command("list")
@json_option
@pass_ctx
def targets_list(c: Invocation, as_json):
    """Every target run, newest first, with its state."""
    with open_session(c) as session:
        runs = _targets.list_runs(session, session.now())
    if as_json:
        emit_json([r.as_json(with_lines=False) for r in runs])
    else:
        table("target runs", ["run", "as of", "created", "state", "reviewed by", "note", "superseded"],
              [(r.id, r.as_of, r.created_at, r.status, r.reviewed_by, r.review_note, r.superseded_note())
               for r in runs], optional=("superseded",))


@targets_group.command("show")
@click.argument("run_id", type=int)
@json_option
@pass_ctx
def targets_show(c: Invocation, run_id, as_json):
    """One run, every line explained, and each contract a limit will refuse or clip flagged."""
    from tradeledger.engine.trading.cycle import review_run

    with open_session(c) as session:
        run, flags, planned = review_run(session, run_id)
    _show_run(run, as_json, flags, planned)


@targets_group.command("approve")
@click.argument("run_id", type=int)
@reason_option(required=False, help="A note kept with the review.")
@result_option
@pass_ctx
def targets_approve(c: Invocation, run_id, reason, as_json):
    """Approve a pending run so that it can be executed."""
    with open_session(c) as session:
        run = _targets.approve_run(session, run_id, _getpass.getuser(), reason, session.now())
    said(as_json, run.as_json(with_lines=False), f"run {run.id} approved by {run.reviewed_by}")


@targets_group.command("reject")
@click.argument("run_id", type=int)
@reason_option(help="Why the run is rejected.")
@result_option
@pass_ctx
def targets_reject(c: Invocation, run_id, reason, as_json):
    """Reject a pending run; it can never be executed."""
    with open_session(c) as session:
        run = _targets.reject_run(session, run_id, _getpass.getuser(), reason, session.now())
    said(as_json, run.as_json(with_lines=False), f"run {run.id} rejected by {run.reviewed_by}: {run.review_note}")


COMMANDS = [data_group, instruments_group, signals_group, targets_group]

# `instruments contracts`, `data adjusted` and `data fetch` live with the futures commands and join
# these groups when that module is imported: import it with the groups, so that they are there when
# the CLI loads only this module (cli.COMMAND_MODULES) to run `tradeledger data fetch`.
from tradeledger.commands import futures as _futures  # noqa: E402,F401
