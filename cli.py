"""The `tradeledger` command: the root group, the error policy, and the command modules it registers.

The commands live in `commands/` by area (setup, ledger, targets, trading, trust, ibsim); each
opens its environment (`--home`, `--env`, `--db-url`), calls one engine or ledger function and
prints the result as a table or, with `--json`, as data. A mistake a user can make (unknown
account, bad number, wrong environment, unreachable database, malformed config) ends as one line
on stderr and a non-zero exit, never a traceback. Nothing imports this module.
"""

from __future__ import annotations

import os
import sys

import importlib
from gettext import gettext

import click
from tradeledger.commands.common import Invocation, fail
from tradeledger.engine.setup import ENVIRONMENTS
from tradeledger.errors import UserError

# What a user can cause or fix: one line and exit 1. Every tradeledger error meant for a person
# derives from errors.UserError (LedgerError, NumberError, ConfigError, DatabaseError, PriceError,
# TargetError, AdjustError, ...); a bare ValueError is a bug and is reported as an internal error.
# The broker's errors are looked up only once something failed, and only if the broker module was
# imported (an exception's class always is), so starting the CLI imports no broker or SQLAlchemy.


def user_errors() -> tuple[type[BaseException], ...]:
    broker = sys.modules.get("tradeledger.broker.errors")
    return (UserError, OSError, *((broker.BrokerError,) if broker is not None else ()))


def _database_error(exc: BaseException) -> bool:
    """Whether `exc` is SQLAlchemy's wrapper of a database driver's error, or sqlite3's own (the
    simulator's state file); looked up only in modules already imported."""
    sa_exc, sqlite3 = sys.modules.get("sqlalchemy.exc"), sys.modules.get("sqlite3")
    return ((sa_exc is not None and isinstance(exc, sa_exc.DBAPIError))
            or (sqlite3 is not None and isinstance(exc, sqlite3.Error)))


# Which module of commands/ holds each command. A command's module is imported when the command
# runs (or --help lists them all), so `positions` does not pay for importing the other ten;
# tests/test_start_imports.py holds this table equal to the modules' COMMANDS lists.
COMMAND_MODULES = {
    "setup": ("config", "init", "status", "db"),
    "ledger": ("accounts", "export", "check"),
    "targets": ("data", "instruments", "signals", "targets"),
    "trading": ("orders", "fills", "mark", "positions", "pnl", "sim", "cycle", "demo"),
    "trust": ("adjust", "daemon", "reconcile", "monitor", "snapshot", "exceptions"),
    "actions": ("actions", "weights", "import"),
    "futures": ("roll",),
    "ops": ("backup", "restore", "alerts", "service"),
    "ibsim": ("ibsim",),
    "report": ("report",),
    "fava": ("fava",),
}
_MODULE_OF = {name: module for module, names in COMMAND_MODULES.items() for name in names}
# Each command's help up to its first blank line, from which click makes the one line `--help` lists,
# so that `tradeledger --help` lists every command without importing the eleven modules (a third of
# its time); tests/test_start_imports.py holds it equal to the commands' own help.
SHORT_HELP = {
    'config': "The environment's config.toml (every key: docs/config.md).",
    'init': 'Create the environment: directory, config, database schema and base accounts.',
    'status': 'Environment, account, database, ledger, broker, reconciliation, exceptions, locks, daemon at a glance.',
    'db': 'Database maintenance.',
    'accounts': 'Accounts with their balances.',
    'export': 'Export the ledger.',
    'check': "Verify the database (`db verify`), then export, load with beancount, and compare every balance with the ledger's own.",
    'data': 'Price history, settlement prices and FX rates.',
    'instruments': 'Configured instruments and signal-to-execution mappings.',
    'signals': 'Forecasts per strategy and signal instrument.',
    'targets': 'Target runs: compute, review, approve or reject.',
    'orders': 'Orders from an approved target run.',
    'fills': 'Executions: sync from the broker, and the blotter.',
    'mark': "Book the day's settlement variation margin per strategy and contract, once per date (never a future date; today's before the settlement time is booked at the present moment).",
    'positions': 'Positions per strategy and contract, from the ledger.',
    'pnl': 'Realized (variation margin and lot gains), change in unrealized, commissions and net, in the base currency; the days of any period add up to its total.',
    'sim': "The simulated broker's own screen: trades outside tradeledger, prices, settlement, faults.",
    'cycle': 'Compute a run and stop for review; --approve [--run N] executes exactly the reviewed run.',
    'demo': 'Play a few simulated trading days in a NEW home (--home, or a fresh directory it names).',
    'adjust': 'Repair the books when something happened outside tradeledger: each a ledger entry with a reason.',
    'daemon': 'Run the scheduler: fill sync, reconciliation, settlement marks, data and targets from [daemon].',
    'reconcile': 'Snapshot the broker, book its executions, adopt old positions, compare; exit 1 unless clean.',
    'monitor': 'Look for overdue commissions, stuck orders, missing FX, stale prices and a silent daemon; raise each as an exception, resolve those that cleared; exit 1 if anything is found.',
    'snapshot': 'Take and store a broker snapshot (positions, cash, unsettled P&L, open orders); exit 1 if it fails.',
    'exceptions': 'Exceptions: list, show, acknowledge, resolve.',
    'actions': "Dividends and splits (imported, booked once when due), and the account's interest and fees.",
    'weights': 'Target weights of allocation strategies whose rule is `file`.',
    'import': 'Broker statements, and ledger entries in bulk.',
    'roll': 'Roll states per instrument: status, set, plan, execute.',
    'backup': 'A consistent online copy of the environment (database, config, manifest) in one file.',
    'restore': 'Restore a backup into a new home (--home) or new database (--db-url); never over a ledger.',
    'alerts': 'Alerts to the configured channels ([alerts] urls, $TRADELEDGER_ALERT_URLS).',
    'service': 'systemd units for the daemon and Fava of one environment.',
    'ibsim': 'The simulated IB gateway: serve the TWS API on a port, and act on its market.',
    'report': 'NAV, performance, exposure, costs and the daily HTML report.',
    'fava': 'Export the ledger and serve it in Fava with the Targets, Orders and fills, Reconciliation, Exceptions and Strategies pages (Ctrl-C stops it).',
}


class Group(click.Group):
    """Turns every user-facing failure into one line and exit code 1; imports a command's module
    when the command is first looked up (`commands` itself holds them all, imported)."""

    @property
    def commands(self) -> dict:
        for module in COMMAND_MODULES:
            self._load(module)
        return self._commands

    @commands.setter
    def commands(self, value: dict) -> None:
        self._commands, self._loaded = value, set()

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            for command in importlib.import_module(f"tradeledger.commands.{module}").COMMANDS:
                self._commands[command.name] = command

    def add_command(self, cmd, name=None) -> None:
        self._commands[name or cmd.name] = cmd

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self._commands and cmd_name in _MODULE_OF:
            self._load(_MODULE_OF[cmd_name])
        return self._commands.get(cmd_name)

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(self._commands) | set(_MODULE_OF))

    def format_commands(self, ctx, formatter) -> None:
        """click's listing of the commands, each not yet imported described by SHORT_HELP."""
        commands = [(name, self._commands.get(name) or click.Command(name, help=SHORT_HELP[name]))
                    for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in commands if not cmd.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section(gettext("Commands")):  # click's own words
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if isinstance(exc, user_errors()):
                fail(str(exc))
            if _database_error(exc):  # sqlite3: the simulator's own state file
                fail(database_failure(exc))
            # a bug: still one line, the traceback on request
            if os.environ.get("TRADELEDGER_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (set TRADELEDGER_DEBUG=1 for details)")


def database_failure(exc: BaseException) -> str:
    """One line for a failure the database reported, with what to do where there is something."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    if "disk is full" in reason or "no space left" in reason.lower():
        where = getattr(exc, "database", None) or "the database"
        return (f"database error: {reason} ({where}): free space on its disk and run the command again; "
                "the transaction was rolled back, nothing was half-written")
    sa_exc, sqlite3 = sys.modules.get("sqlalchemy.exc"), sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error) and not (
            sa_exc is not None and isinstance(exc, sa_exc.DBAPIError)):
        return f"simulator state error: {reason}"
    return f"database error: {reason}"


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
    ctx.obj = Invocation(home, env, db_url)


def run() -> None:
    """The console script: a closed pipe (`tradeledger ... | head`) ends the command quietly."""
    import signal

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()


if __name__ == "__main__":  # pragma: no cover - `python -m tradeledger.cli`
    run()
