"""A trading session: an opened environment with its trading config and its broker.

`Session` is what every trading command works with. It builds the broker the environment's
config names: the embedded simulated broker (its exchange state in `<env>/sim.db`) or
Interactive Brokers through ib_async. It holds no trading state of its own: positions, orders
and fills are in the database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tradeledger.broker.base import Broker
from tradeledger.engine.setup.config import TradingConfig, parse_trading_config
from tradeledger.engine.setup.environment import Environment
from tradeledger.errors import UserError

UTC = dt.timezone.utc


def sim_exchange_path(env: Environment) -> Path:
    return env.dir / "sim.db"


@dataclass
class Session:
    env: Environment

    @cached_property
    def config(self) -> TradingConfig:
        return parse_trading_config(self.env.settings.raw)

    @cached_property
    def broker(self) -> Broker:
        if self.env.settings.broker == "sim":  # the broker's screen and its API: one exchange
            from tradeledger.broker.sim import SimBroker

            broker = SimBroker(self.exchange(), self.env.settings.account)
        else:
            broker = ib_broker(self.env, self.config)
        broker.connect()
        return broker

    def close(self) -> None:
        if "broker" in self.__dict__:
            self.broker.close()

    def now(self) -> dt.datetime:
        """The session's clock: the simulated exchange's clock on sim, else the wall clock."""
        if self.env.settings.broker == "sim":
            return self.exchange().now()
        return dt.datetime.now(UTC)

    def exchange(self):
        """The simulated exchange behind a sim environment (the broker's own screen)."""
        if self.env.settings.broker != "sim":
            raise UserError("this environment trades at IB, not on the simulated exchange")
        if "_exchange" not in self.__dict__:
            self._exchange = open_sim_exchange(self.env, self.config)
        return self._exchange


def ib_broker(env: Environment, config: TradingConfig) -> Broker:
    """Interactive Brokers through ib_async, as the environment's [ib] table says."""
    from tradeledger.broker.ib import IBBroker
    from tradeledger.engine.setup.contracts_ib import ib_contract_namer

    settings = env.settings
    # Executions come back named by IB (symbol BRR, local symbol BTCZ6); the namer gives
    # them tradeledger's code (BTCZ26) from the configured instrument.
    return IBBroker(settings.ib_host, settings.ib_port, settings.ib_client_id, settings.account,
                    contract_namer=ib_contract_namer(config))


def open_sim_exchange(env: Environment, config: TradingConfig):
    """The environment's simulated exchange, with the configured commission schedule."""
    from tradeledger.broker.simexchange import SimExchange

    exchange = SimExchange(sim_exchange_path(env), env.settings.account,
                           commission_per_contract=config.sim_commission)
    for instrument in config.instruments.values():
        if not instrument.is_future:
            exchange.set_commission(config.sim_share_commission, instrument.name)
    return exchange
