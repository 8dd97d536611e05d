"""A trading session: an opened environment (a Context, engine/context.py) with its broker.

`Session` is what every trading command works with. It builds the broker the environment's
config names: the embedded simulated broker (its exchange state in `<env>/sim.db`) or
Interactive Brokers through ib_async. It holds no trading state of its own: positions, orders
and fills are in the database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import fields
from functools import cached_property
from pathlib import Path

from tradeledger.broker.base import Broker
from tradeledger.engine.setup.config import TradingConfig
from tradeledger.engine.context import Context

UTC = dt.timezone.utc


def sim_exchange_path(ctx: Context) -> Path:
    return ctx.dir / "sim.db"


class Session(Context):
    """A Context that owns its broker: connected on first use, closed by `close()` or `with`."""

    def __init__(self, ctx: Context):
        for f in fields(Context):
            object.__setattr__(self, f.name, getattr(ctx, f.name))
        for cached in ("chart", "config", "_exchange"):  # what the context already computed
            if cached in ctx.__dict__:
                self.__dict__[cached] = ctx.__dict__[cached]

    @cached_property
    def broker(self) -> Broker:
        if self.settings.broker == "sim":  # the broker's screen and its API: one exchange
            from tradeledger.broker.sim import SimBroker

            broker = SimBroker(self.exchange(), self.settings.account)
        else:
            broker = ib_broker(self, self.config)
        broker.connect()
        return broker

    def close(self) -> None:
        if "broker" in self.__dict__:
            self.broker.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def ib_broker(ctx: Context, config: TradingConfig) -> Broker:
    """Interactive Brokers through ib_async, as the environment's [ib] table says."""
    from tradeledger.broker.ib import IBBroker
    from tradeledger.engine.setup.contracts_ib import ib_contract_namer

    settings = ctx.settings
    # Executions come back named by IB (symbol BRR, local symbol BTCZ6); the namer gives
    # them tradeledger's code (BTCZ26) from the configured instrument.
    return IBBroker(settings.ib_host, settings.ib_port, settings.ib_client_id, settings.account,
                    contract_namer=ib_contract_namer(config), day_timezone=settings.ib_day_timezone,
                    timeout=settings.ib_connect_timeout)


def open_sim_exchange(ctx: Context, config: TradingConfig):
    """The environment's simulated exchange, with the configured commission schedule."""
    from tradeledger.broker.simexchange import SimExchange

    return SimExchange.configured(sim_exchange_path(ctx), ctx.settings.account, config.sim_commission,
                                  config.sim_share_commission,
                                  [i.name for i in config.instruments.values() if not i.is_future])
