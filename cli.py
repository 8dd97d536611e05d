"""The `tradeledger` command: a thin click layer over the engine and the ledger.

Every command opens its environment (`--home`, `--env`, `--db-url`), calls one engine or ledger
function, and prints the result as a table or, with `--json`, as data. A mistake a user can
make (unknown account, bad number, wrong environment, unreachable database, malformed config)
ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path

import click
import sqlalchemy as sa
from tradeledger.broker.base import BrokerError
from tradeledger.engine.setup.environment import (
    ENVIRONMENTS,
    ConfigError,
    Environment,
    default_db_url,
    init_environment,
    open_environment,
    parse_settings,
    resolve_home,
)
from tradeledger.engine.setup.session import Session as _Session
from tradeledger.ledger import db
from tradeledger.ledger.db import DatabaseError
from tradeledger.ledger.export import check as check_ledger
from tradeledger.ledger.export import export_beancount
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
@click.option("--db-url", "init_db_url", default=None,
              help="Database URL to record in the config (the same as the global --db-url).")
@json_option
@pass_ctx
def init(c: Context, broker, account, base_currency, ib_host, ib_port, ib_client_id, demo, init_db_url, as_json):
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
    from tradeledger.cli_trust import _operations_status, _status_value

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


# Helpers the command modules share.

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


# The command groups live in modules of their own; importing them registers them on `main`.
from tradeledger import cli_ibsim, cli_targets, cli_trading, cli_trust  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover - `python -m tradeledger.cli`
    # Run the imported module's group: the command modules registered themselves on it, not on
    # this __main__ copy.
    from tradeledger.cli import main as _main

    _main()
