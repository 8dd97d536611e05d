"""`tradeledger` commands: the simulated IB gateway: serve the TWS API over a socket, and act on its market.

Registered on the `main` group of cli.py, which imports this module; each command opens its
environment, calls the engine, and prints a table or JSON.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import click
from tradeledger.commands.common import (
    Invocation, SIGNED, currency_and_amount, define_contract_options, described_contract, execution_json, pass_ctx, lazy, lazy_function,
    result_option, said, warn_far_from_market,
)
from tradeledger.ledger.numbers import to_decimal as _to_decimal
from tradeledger.errors import UnknownName, UserError


# --- ibsim ---
# The simulated IB gateway (broker/ibsim) as a process, and its market screen. Its state is a
# SimExchange file: by default <home>/<env>/ibsim.db, with the environment's account.
# Imported on first use (commands/common.py: lazy): starting the CLI imports no engine.
parse_settings = lazy_function("tradeledger.engine.setup.environment", "parse_settings")
resolve_home = lazy_function("tradeledger.engine.setup.environment", "resolve_home")
_demo = lazy("tradeledger.engine.setup.demo")


def _ibsim_state(c: Invocation, state: str | None) -> tuple[Path, str | None]:
    """(state file, the environment's account if the environment exists)."""
    env_dir = resolve_home(c.home) / c.env
    account = None
    if (env_dir / "config.toml").exists():
        account = parse_settings(env_dir / "config.toml", c.env).account
    if state:
        return Path(state), account
    env_dir.mkdir(parents=True, exist_ok=True)
    return env_dir / "ibsim.db", account


def _ibsim_exchange(c: Invocation, state: str | None):
    from tradeledger.broker.simexchange import SimExchange

    path, account = _ibsim_state(c, state)
    if not path.exists():
        raise click.UsageError(f"no simulated gateway state at {path}: start `tradeledger ibsim serve` first")
    return SimExchange.open_existing(path, account or "DU1234567")


def _ibsim_contract(c: Invocation, code: str, exchange):
    from tradeledger.engine.setup.config import (
        MONTH_CODES,
        instrument_of_contract,
        to_contract,
    )

    instrument = instrument_of_contract(c.open().config, code)
    if instrument is None:
        known = exchange.contract(code)
        if known is None:
            raise UnknownName("contract", code, None, see="tradeledger instruments list")
        return known
    expiry = f"20{code[-2:]}{MONTH_CODES.index(code[-3]) + 1:02d}" if instrument.is_future else ""
    return to_contract(instrument, code, expiry)


@click.group("ibsim")
def ibsim_group():
    """The simulated IB gateway: serve the TWS API on a port, and act on its market."""


@ibsim_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (this machine only by default).")
@click.option("--port", default=4002, type=int, show_default=True, help="0: any free port.")
@click.option("--account", default=None, help="Managed account (default: the environment's, else DU1234567).")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="SimExchange file (default: <home>/<env>/ibsim.db).")
@click.option("--commission", default=None, help="Commission per contract/share (kept in the state file).")
@pass_ctx
def ibsim_serve(c: Invocation, host, port, account, state, commission):
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


@ibsim_group.command("price", context_settings=SIGNED)
@click.argument("contract")
@click.argument("price")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_price(c: Invocation, contract, price, state, as_json):
    """Set a contract's market price at the gateway (known from the environment's instruments)."""
    exchange = _ibsim_exchange(c, state)
    exchange.add_contract(_ibsim_contract(c, contract, exchange))
    number = _to_decimal(price, "PRICE")
    warn_far_from_market(exchange, contract, number)
    filled = exchange.set_price(contract, number)
    said(as_json, {"contract": contract, "price": number, "at": exchange.now(),
                   "filled": [execution_json(e) for e in filled]},
         f"{contract} at {price}" + (f"; {len(filled)} resting orders filled" if filled else ""))


@ibsim_group.command("open")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_open(c: Invocation, state, as_json):
    """Price every configured instrument's current contract at its latest imported close."""
    opened = _demo.price_at_latest_closes(c.open(), _ibsim_exchange(c, state))
    said(as_json, {"priced": list(opened)}, f"{len(opened)} contracts priced at the gateway: {', '.join(opened)}")


@ibsim_group.command("seed-demo")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_seed_demo(c: Invocation, state, as_json):
    """Give a paper IB environment the demo's instruments, strategies and price history up to
    yesterday, and price their contracts at the gateway: `cycle --approve` then trades."""
    from tradeledger.engine.targets import prices as _p

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
    # the environment's clock (UTC on IB), as `init --demo` starts: the local date would seed up to
    # another day than the demo's contracts and calendar in a zone whose date differs from UTC's
    yesterday = env.now().date() - _dt.timedelta(days=1)
    history = _demo.seed_history(yesterday)
    closes, fx = _demo.history_csvs(history)
    session = env
    config = session.config
    days = sorted(history.closes["ES"])
    curve = _demo.contract_closes_csv(session, history, days)  # the back-adjusted series and carry read them
    for text, source in ((closes, "demo closes"), (fx, "demo fx"), (curve, "demo contract closes")):
        _p.store_rows(env, _p.parse_prices_csv(text, config, env.settings.base_currency, source), source)
    opened = _demo.price_at_latest_closes(c.open(), exchange)
    said(as_json, {"config": str(env.config_path), "history_until": yesterday, "priced": list(opened)},
         f"demo instruments and history up to {yesterday} added to {env.config_path}; "
         f"{len(opened)} contracts priced at the gateway")


@ibsim_group.command("trade", context_settings=SIGNED)
@click.argument("contract")
@click.argument("qty")
@click.argument("price")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_trade(c: Invocation, contract, qty, price, state, as_json):
    """A trade made at the gateway outside tradeledger (no orderRef): QTY signed."""
    exchange = _ibsim_exchange(c, state)
    known = _ibsim_contract(c, contract, exchange)  # an unknown name is refused before any warning
    warn_far_from_market(exchange, contract, _to_decimal(price, "PRICE"), trade=True)
    execution = exchange.external_trade(known, _to_decimal(qty, "QTY"), _to_decimal(price, "PRICE"))
    said(as_json, execution_json(execution),
         f"gateway executed {execution.side} {execution.quantity} {contract} @ {execution.price} ({execution.exec_id})")


@ibsim_group.command("deposit", context_settings={"ignore_unknown_options": True})
@click.argument("currency")
@click.argument("amount")
@click.option("--kind", type=click.Choice(["deposit", "withdrawal", "transfer"]), default="deposit", show_default=True,
              help="What the broker calls the cash movement.")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_deposit(c: Invocation, currency, amount, kind, state, as_json):
    """Cash arriving (AMOUNT > 0) or leaving (< 0) at the gateway's account without a trade (AMOUNT CURRENCY works too)."""
    currency, amount = currency_and_amount(currency, amount)
    number = _to_decimal(amount, "AMOUNT")
    exchange = _ibsim_exchange(c, state)
    exchange.deposit(currency, number, kind)
    said(as_json, {"kind": kind, "amount": number, "currency": currency.upper(), "at": exchange.now()},
         f"gateway {kind}: {number} {currency.upper()}")


@ibsim_group.command("transfer-in", context_settings={"ignore_unknown_options": True})
@click.argument("contract")
@click.argument("qty")
@click.option("--price", default=None, help="Futures: the mark it arrives at (default: the market price).")
@click.option("--cost", default=None, help="Shares: the cost per unit it arrives with (default: the price).")
@define_contract_options
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_transfer_in(c: Invocation, contract, qty, price, cost, sec_type, currency, multiplier, venue, state, as_json):
    """A position arriving at the gateway's account without an execution (QTY signed; seeds an account)."""
    exchange = _ibsim_exchange(c, state)
    k = described_contract(contract, sec_type, currency, multiplier, venue) or _ibsim_contract(c, contract, exchange)
    number = _to_decimal(qty, "QTY")
    price, cost = price and _to_decimal(price, "--price"), cost and _to_decimal(cost, "--cost")
    exchange.transfer_in(k, number, price, cost)
    said(as_json, {"contract": k.code, "quantity": number, "price": price or None, "cost": cost or None,
                   "at": exchange.now()},
         f"gateway account received {number} {contract} without an execution")


@ibsim_group.command("correct")
@click.argument("exec_id")
@click.option("--price", default=None, help="The corrected price (default: unchanged).")
@click.option("--qty", default=None, help="The corrected quantity (default: unchanged).")
@click.option("--state", type=click.Path(dir_okay=False), default=None,
              help="The gateway's SimExchange file (default: <home>/<env>/ibsim.db).")
@result_option
@pass_ctx
def ibsim_correct(c: Invocation, exec_id, price, qty, state, as_json):
    """Correct an execution at the gateway (.01 -> .02); `fills sync` books it by reversal."""
    ex = _ibsim_exchange(c, state).correct_execution(
        exec_id, price and _to_decimal(price, "--price"), qty and _to_decimal(qty, "--qty"))
    said(as_json, {"corrects": exec_id} | execution_json(ex), f"corrected: {ex.exec_id} {ex.side} {ex.quantity} @ {ex.price}")


COMMANDS = [ibsim_group]
