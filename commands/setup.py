"""Setting up: `init`, `status` and `db upgrade`."""

from __future__ import annotations

import datetime as _dt
import sys

import click
from tradeledger.commands.common import Invocation, json_option, lazy, lazy_function, pass_ctx, result_option, said
from tradeledger.reports.render import emit_json, say, table

# Imported on first use (commands/common.py: lazy): starting the CLI imports no engine.
sa = lazy("sqlalchemy")
database_url = lazy_function("tradeledger.engine.setup.environment", "database_url")
init_environment = lazy_function("tradeledger.engine.setup.environment", "init_environment")
parse_settings = lazy_function("tradeledger.engine.setup.environment", "parse_settings")
resolve_home = lazy_function("tradeledger.engine.setup.environment", "resolve_home")
db = lazy("tradeledger.ledger.db")


@click.command()
@click.option("--broker", type=click.Choice(["sim", "ib"]), default="sim", show_default=True,
              help="sim: the simulated broker; ib: Interactive Brokers (TWS or IB Gateway, docs/ib.md).")
@click.option("--account", default=None, help="Broker account id (paper: DU..., default DU1234567 on sim).")
@click.option("--base-currency", default="USD", show_default=True, help="The currency NAV and P&L totals are in.")
@click.option("--ib-host", default="127.0.0.1", show_default=True, help="--broker ib: the host TWS/IB Gateway runs on.")
@click.option("--ib-port", default=4002, type=int, show_default=True, help="--broker ib: its API port (4002: IB Gateway paper).")
@click.option("--ib-client-id", default=1, type=int, show_default=True, help="--broker ib: the API client id tradeledger uses.")
@click.option("--capital", default=None, help="Book this initial deposit (Equity:Deposits against cash) and fund "
              "the simulated broker with it.")
@click.option("--currency", default=None, help="Currency of --capital (default: the base currency).")
@click.option("--demo", is_flag=True, help="Write the demo configuration and seed its price history (sim only).")
@click.option("--db-url", "init_db_url", default=None,
              help="Database URL to record in the config (the same as the global --db-url).")
@json_option
@pass_ctx
def init(c: Invocation, broker, account, base_currency, ib_host, ib_port, ib_client_id, capital, currency, demo,
         init_db_url, as_json):
    """Create the environment: directory, config, database schema and base accounts."""
    if init_db_url and c.db_url and init_db_url != c.db_url:
        raise click.UsageError("two different database URLs given (--db-url before and after init)")
    c.db_url = init_db_url or c.db_url
    if demo:
        if broker != "sim" or c.env != "paper":
            raise click.UsageError("--demo is for the simulated broker in the paper environment")
        from tradeledger.engine.setup.demo import init_demo

        environment, _history = init_demo(c.home, db_url=c.db_url, start=_dt.datetime.now(_dt.timezone.utc).date())
    else:
        environment = init_environment(c.home, c.env, broker, account, base_currency, c.db_url,
                                       ib_host, ib_port, ib_client_id)
    capital_info = None
    if capital is not None:  # the deposit first: the opening then books what the broker holds beyond it
        from tradeledger.engine.setup.funding import fund
        from tradeledger.ledger.numbers import NumberError, to_decimal

        try:
            amount = to_decimal(capital, "--capital")
        except NumberError as exc:
            raise click.BadParameter(str(exc), param_hint="--capital") from None
        funded = fund(environment, amount, currency or environment.settings.base_currency, environment.now())
        capital_info = {"amount": funded.amount, "currency": funded.currency, "entry": funded.entry,
                        "broker_funded": funded.broker}
    from tradeledger.engine.trust.opening import open_at_init

    opening, deferred = open_at_init(environment)
    info = {"environment": c.env, "dir": str(environment.dir), "broker": environment.settings.broker,
            "account": environment.settings.account, "revision": db.current_revision(environment.engine),
            "opening": opening.as_json() if opening else None}
    if capital_info is not None:
        info["capital"] = capital_info
    if as_json:
        emit_json(info)
    else:
        click.echo(f"initialised {c.env} environment in {environment.dir} "
                   f"({info['broker']} broker, account {info['account']})")
        if "capital" in info:
            cap = info["capital"]
            click.echo(f"capital: {cap['amount']} {cap['currency']} deposited"
                       + (f" (entry {cap['entry']})" if cap["entry"] else " (already booked)")
                       + (f"; the simulated broker ({cap['broker_funded']}) holds the same cash" if cap["broker_funded"] else ""))
        if opening is not None:
            click.echo(f"opening {'taken' if opening.created else 'already taken'}: {opening.summary()}")
        else:
            click.echo(f"opening deferred: {deferred}")


@click.command()
@click.option("--no-broker", is_flag=True, help="Do not try to reach the broker.")
@json_option
@pass_ctx
def status(c: Invocation, no_broker, as_json):
    """Environment, account, database, ledger, broker, reconciliation, exceptions, locks, daemon at a glance."""
    from tradeledger.engine.ops.status_quick import quick_status
    from tradeledger.reports.pnl_fast import quick_pnl_today

    # the read path without SQLAlchemy when it can vouch for the answer, else the full one
    info = quick_status(c.home, c.env, c.db_url, not no_broker, quick_pnl_today)
    if info is None:
        from tradeledger.engine.ops.status import environment_status

        ctx = c.open()
        info = environment_status(ctx, probe_broker=not no_broker)
        info["pnl_today"] |= _pnl_today_in_base(ctx, _dt.date.fromisoformat(info["pnl_today"]["date"]))
    if as_json:
        emit_json(info)
    else:
        table("status", ["item", "value"], [(k, _status_value(v)) for k, v in info.items()])


def _pnl_today_in_base(ctx, today) -> dict:
    """Today's net P&L in the base currency, as `pnl --by day` counts it (marks and FX of the day)."""
    from tradeledger.reports import pnl as _pnl_report

    net = _pnl_report.maintained_pnl_today(ctx, today)  # without replaying the ledger, where it can
    if net is None:
        result = _pnl_report.pnl(ctx, "day", today, None)
        net = sum((r["net"] for r in result["rows"] if r["net"] is not None), 0)
    return {f"net ({ctx.settings.base_currency})": net}


def _status_value(value, key: str = "") -> str:
    """One status item as a person reads it: times in UTC to the second, an amount keyed by its
    currency at its minor unit, nested items as key=value."""
    from tradeledger.reports.render import display

    if isinstance(value, dict):
        return ", ".join(f"{k}={_status_value(v, k)}" for k, v in value.items()) or "none"
    if value is None:
        return "none"
    if len(key) == 3 and key.isupper():  # pnl_today: USD=115.255 -> 115.26
        return display(value, "amount", currency=key)
    if key.startswith("net ("):  # pnl_today in the base currency
        return display(value, "net", currency=key[5:8])
    return display(value, key) if not isinstance(value, (bool, int)) else str(value)


@click.group("db")
def db_group():
    """Database maintenance."""


@db_group.command("upgrade")
@result_option
@pass_ctx
def db_upgrade(c: Invocation, as_json):
    """Bring the database schema up to this version of tradeledger."""
    home = resolve_home(c.home)
    settings = parse_settings(home / c.env / "config.toml", c.env)
    url = c.db_url or database_url(settings, home / c.env)
    engine = db.make_engine(url)
    try:
        before, after = db.upgrade(engine)
    except sa.exc.OperationalError as exc:
        raise db.connectivity_error(url, exc) from None
    db.verify_identity(engine, {"environment": settings.env, "broker_account": settings.account})
    said(as_json, {"revision": after, "was": before, "upgraded": before != after},
         f"schema at revision {after}" + ("" if before == after else f" (was {before})"))


@click.group("config")
def config_group():
    """The environment's config.toml (every key: docs/config.md)."""


@config_group.command("check")
@json_option
@pass_ctx
def config_check(c: Invocation, as_json):
    """Validate config.toml as the commands read it and print what applies, defaults included (exit 1 on a
    mistake, with the file, the key and what is allowed). Does not open the database."""
    from tradeledger.engine.setup.config_check import check_config
    from tradeledger.engine.setup.config_keys import ConfigProblems

    try:
        info = check_config(c.home, c.env)
    except ConfigProblems as exc:  # every mistake, one line each
        for line in exc.lines():
            click.echo(f"error: {line}", err=True)
        sys.exit(1)
    if as_json:
        emit_json(info)
        return
    say(f"{info['file']}: valid")
    table("environment", ["key", "value"], list(info["environment"].items()))
    table("portfolio", ["key", "value"], list(info["portfolio"].items()))
    table("instruments", ["name", "type", "currency", "multiplier", "exchange"],
          [(i["name"], i["type"], i["currency"], i["multiplier"], i["exchange"]) for i in info["instruments"]],
          empty="no instruments configured ([instruments.NAME] tables)")
    table("strategies", ["name", "kind", "capital share", "instruments", "rules"],
          [(s["name"], s["kind"], s["capital_share"], s["instruments"], s["rules"]) for s in info["strategies"]],
          empty="no strategies configured ([strategies.NAME] tables)")
    table("limits", ["key", "value"], [(k, v if not isinstance(v, (dict, list)) else (v or "-"))
                                       for k, v in info["limits"].items()])
    table("daemon", ["key", "value"], [(k, ", ".join(v) if isinstance(v, list) else
                                        (", ".join(f"{x} {t}" for x, t in v.items()) or "-") if isinstance(v, dict)
                                        else v) for k, v in info["daemon"].items()])
    for name in ("reconcile", "monitor", "health", "service"):
        table(name, ["key", "value"], list(info[name].items()))



@db_group.command("verify")
@json_option
@pass_ctx
def db_verify(c: Invocation, as_json):
    """Integrity check, every entry re-summed, balances and lots re-derived and compared, reversal links,
    every futures position's mark, and no cash movement booked twice under one broker reference."""
    from tradeledger.commands.ledger import print_findings
    from tradeledger.engine.accounting.holdings import verify_books

    env = c.open()
    result = verify_books(env.ledger, env.chart)
    if as_json:
        emit_json(result.as_json())
    else:
        if result.findings:
            print_findings(result)
        say(f"{'verified' if result.ok else 'NOT VERIFIED'}: {result.entries} entries, {result.postings} "
                   f"postings, {len(result.findings)} findings")
    if not result.ok:
        sys.exit(1)


COMMANDS = [config_group, init, status, db_group]
