"""What the command modules share: the per-invocation context, the common options, one way to
fail, date parsing, and a session whose broker is closed afterwards.

A command module only parses its arguments, calls one engine function and prints; everything it
needs from the CLI's plumbing comes from here, never from `cli.py` (which nobody imports).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tradeledger.engine.setup.environment import Environment
    from tradeledger.engine.setup.session import Session as _Session


class lazy:
    """A module imported when a command first uses it, so that starting the CLI (and `--help`)
    imports none of the engine, SQLAlchemy or pandas; a command pays only for what it runs."""

    def __init__(self, module: str):
        self.__dict__["_lazy_module"] = module

    def __getattr__(self, name: str):
        return getattr(importlib.import_module(self.__dict__["_lazy_module"]), name)


def lazy_function(module: str, name: str):
    """A function (or class to call) of `module`, imported on its first call."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def fail(message: str) -> None:
    """End the command with one line on stderr and exit code 1."""
    from tradeledger.ledger.db import mask_secrets  # here: only a failure pays for its import

    click.echo(f"error: {mask_secrets(message)}", err=True)
    sys.exit(1)


class Invocation:
    """The root options of one invocation; the environment is opened on first use."""

    def __init__(self, home: str | None, env: str, db_url: str | None):
        from tradeledger.reports.render import set_csv, set_tick_source

        set_csv(False)  # a command without --csv prints tables (several invocations may share a process)
        self.home, self.env, self.db_url = home, env, db_url
        self._environment: Environment | None = None
        set_tick_source(config_ticks(self))  # every table of this invocation shows prices at their ticks

    def open(self) -> Environment:
        if self._environment is None:
            from tradeledger.engine.setup.environment import open_environment

            self._environment = open_environment(self.home, self.env, self.db_url)
        return self._environment


def config_ticks(c: Invocation):
    """A contract's or instrument's tick size, from the environment's config.toml as written, read on
    the first table that shows a price (the quick read path opens no environment, so neither does
    this): tables show prices at their instrument's tick precision."""
    cache: dict = {}

    def tick(code: str):
        if "instruments" not in cache:
            import tomllib

            from tradeledger.engine.setup import resolve_home

            try:
                raw = tomllib.loads((resolve_home(c.home) / c.env / "config.toml").read_text(encoding="utf-8"))
            except (OSError, ValueError):  # no or broken config: the command says so itself
                raw = {}
            cache["instruments"] = raw.get("instruments") if isinstance(raw.get("instruments"), dict) else {}
        if code not in cache:
            from tradeledger.engine.setup.names import tick_of

            cache[code] = tick_of(cache["instruments"], code)
        return cache[code]
    return tick


pass_ctx = click.make_pass_decorator(Invocation)
# For commands whose arguments are signed numbers: `sim trade MESZ26 -1 4590` reads -1 as a quantity.
SIGNED = {"ignore_unknown_options": True}
def _csv(ctx, param, value):
    from tradeledger.reports.render import set_csv

    set_csv(value)
    return value


def json_option(f):
    """`--json` (exact data for a program) and `--csv` (every table as comma-separated values)."""
    f = click.option("--csv", "as_csv", is_flag=True, expose_value=False, callback=_csv,
                     help="Print tables as CSV (with a header).")(f)
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def result_option(f):
    """`--json` on a command that does something: it prints what was done as one JSON object (ids,
    quantities as exact strings, times ISO 8601 with their zone) instead of a sentence."""
    return click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")(f)


def said(as_json: bool, data: dict, text: str | None, err: bool = False) -> None:
    """Print what a command did: `data` as JSON with --json, else the sentence `text` (None: nothing)."""
    if as_json:
        from tradeledger.reports.render import emit_json

        emit_json(data)
    elif text is not None:
        click.echo(text, err=err)


def execution_json(e) -> dict:
    """An execution made at a simulated screen (`sim trade`, `ibsim trade`, `ibsim correct`, a resting
    order `sim price` filled), as JSON: its full execution id (what `ibsim correct` and `sim fault
    correct` take) and the fill id `fills list` shows for it."""
    return {"exec_id": e.exec_id, "fill_id": e.base_exec_id, "account": e.account, "contract": e.contract.code,
            "side": e.side, "quantity": e.quantity, "price": e.price, "time": e.time, "commission": e.commission,
            "commission_currency": e.commission_currency or None}


def currency_and_amount(first: str, second: str) -> tuple[str, str]:
    """A cash command's two arguments in either order: `sim deposit USD 1000` and `sim deposit 1000
    USD` alike (some commands list CURRENCY first, some AMOUNT; a trader types either)."""
    def is_currency(text: str) -> bool:
        return len(text) == 3 and text.isalpha()
    return (second, first) if is_currency(second) and not is_currency(first) else (first, second)


def _nonblank(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("may not be empty: say why", param_hint="--reason")
    return value


def _alias(ctx, param, value):
    if value is not None:  # an old spelling (--why, --note): it fills --reason
        ctx.meta["reason_alias"] = _nonblank(ctx, param, value)
    return value


def reason_option(required: bool = True, default: str | None = None, help: str = "Why: kept with the record."):
    """The one reason flag, `--reason` (never empty); the old spellings `--why` and `--note` still work,
    hidden. The command receives it as `reason`."""
    def decorate(f):
        import functools

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            reason = kwargs.pop("reason")
            kwargs.pop("_reason_why", None), kwargs.pop("_reason_note", None)
            reason = reason if reason is not None else click.get_current_context().meta.get("reason_alias", default)
            if required and reason is None:
                raise click.UsageError("Missing option '--reason': say why.")
            return f(*args, reason=reason, **kwargs)

        wrapper = click.option("--note", "_reason_note", hidden=True, callback=_alias, expose_value=True)(wrapper)
        wrapper = click.option("--why", "_reason_why", hidden=True, callback=_alias, expose_value=True)(wrapper)
        return click.option("--reason", "reason", default=None, callback=_nonblank,
                            help=help + (f" [default: {default}]" if default else "") +
                            ("" if not required else " (required)"))(wrapper)
    return decorate


class open_session:
    """A Session for one command, its broker closed afterwards."""

    def __init__(self, c: Invocation):
        from tradeledger.engine.setup.session import Session

        self.session = Session(c.open())

    def __enter__(self) -> _Session:
        return self.session

    def __exit__(self, *exc):
        self.session.close()
        return False


def parse_date(text: str | None, what: str) -> _dt.date | None:
    if text is None:
        return None
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=what) from None


def define_contract_options(f):
    """Options that describe a contract tradeledger is not configured for (the broker's screen)."""
    for option in reversed([
        click.option("--sec-type", type=click.Choice(["STK", "FUT", "OPT"]), default=None,
                     help="For an unconfigured contract: its type (give --currency too)."),
        click.option("--currency", default=None, help="For an unconfigured contract: its currency."),
        click.option("--multiplier", default="1", show_default=True, help="For an unconfigured contract."),
        click.option("--exchange", "venue", default="SMART", show_default=True, help="For an unconfigured contract."),
    ]):
        f = option(f)
    return f


def described_contract(code: str, sec_type: str | None, currency: str | None, multiplier: str, venue: str):
    """The contract the options describe, or None when they describe none (use the configured one)."""
    if sec_type is None and currency is None:
        return None
    if not (sec_type and currency):
        raise click.UsageError("an unconfigured contract needs both --sec-type and --currency")
    from tradeledger.broker.base import Contract
    from tradeledger.ledger.numbers import to_decimal

    return Contract(code=code, sec_type=sec_type, symbol=code, exchange=venue, currency=currency.upper(),
                    multiplier=to_decimal(multiplier, "--multiplier"))


FAR_FROM_MARKET = 5  # percent: a price typed this far from the market is warned about


def warn_far_from_market(exchange, code: str, price, trade: bool = False) -> None:
    """A price typed at the simulated screen far from its market (a typo, an old walk-through) says
    so on stderr: a trade at it puts the difference into Unattributed P&L without another word. A
    `trade` in a contract with no market at all says that instead (a code typed from a walk-through
    after its roll: the contract of the day is another)."""
    market = exchange.price(code)
    if trade and not market:
        click.echo(f"warning: {code} has no market at the simulated exchange (no price was ever set for it); "
                   f"traded at {price} as typed: is {code} the contract of the day?", err=True)
        return
    if market and abs(price - market) * 100 > FAR_FROM_MARKET * market:
        click.echo(f"warning: {price} is {abs(price - market) / market:.0%} away from {code}'s market price "
                   f"{market}", err=True)
