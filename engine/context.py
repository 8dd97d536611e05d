"""The context: one typed, immutable object for an opened environment, passed the same way everywhere.

The calling convention of the engine (docs/architecture.md, "One context"):

- **At the edges** (commands, daemon jobs, the demo, reports) and for every engine function that
  opens its own transactions, the first parameter is `ctx: Context`: the opened environment with
  its database engine, ledger, chart of accounts, settings, trading config, clock and name.
  A function that talks to the broker takes the broker after it: `sync_fills(ctx, broker)`.
- A `Session` (engine/setup/session.py) *is* a Context that also owns its broker, connected on
  first use and closed by `with Session(ctx) as session:`; functions that need the environment's
  own broker (the cycle, the daemon's jobs) take `session: Session` first.
- **Inside a transaction** a function takes the connection and the books: `(conn, books, ...)`,
  where `Books` is the ledger and its chart; pure functions take only the values they decide on.

A Context never changes once opened (a changed config is a new Context); what it computes on
first use (the trading config, the simulated exchange behind a sim environment) is cached.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tradeledger.errors import UserError
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.store import Ledger

if TYPE_CHECKING:
    from tradeledger.engine.setup.config import TradingConfig
    from tradeledger.engine.setup.environment import Settings

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Books:
    """What an entry is booked into inside a transaction: the ledger and its chart of accounts."""

    ledger: Ledger
    chart: Chart


@dataclass(frozen=True)
class Context:
    """An opened environment: its home, settings, database engine and ledger (and what follows)."""

    home: Path
    settings: Settings
    engine: sa.engine.Engine
    ledger: Ledger

    @cached_property
    def chart(self) -> Chart:
        return Chart(self.settings.account)

    @property
    def books(self) -> Books:
        return Books(self.ledger, self.chart)

    @property
    def name(self) -> str:
        """The environment's name: paper or live."""
        return self.settings.env

    @cached_property
    def config(self) -> TradingConfig:
        from tradeledger.engine.setup.config import parse_trading_config

        return parse_trading_config(self.settings.raw)

    @property
    def strategies(self) -> dict[str, str]:
        """A strategy's user name -> its account component (its holder)."""
        return {s.name: s.account_name for s in self.config.strategies.values()}

    @property
    def dir(self) -> Path:
        return self.home / self.settings.env

    @property
    def config_path(self) -> Path:
        return self.dir / "config.toml"

    @property
    def ledger_path(self) -> Path:
        return self.dir / "ledger.beancount"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    def identity(self) -> dict[str, str]:
        return {"environment": self.settings.env, "broker_account": self.settings.account}

    def now(self) -> dt.datetime:
        """The environment's clock: the simulated exchange's on sim, a domain time (the trading day
        the exchange says, which a walk-through sets days or years from the machine's); elsewhere
        the database's (ledger/dbclock.py), read now. Hosts sharing one PostgreSQL ledger (a trader
        on one, `tradeledger monitor` by cron on another) stamp what they record and judge its age
        by that one clock: by each host's own, a monitor 20 minutes ahead called an order sent a
        minute ago stuck, and one behind saw a stuck order 20 minutes late."""
        if self.settings.broker == "sim":
            return self.exchange().now()
        from tradeledger.ledger import dbclock
        from tradeledger.ledger.db import read_connection
        from tradeledger.ledger.store import parse_ts

        with read_connection(self.engine) as conn:
            return parse_ts(dbclock.read(conn))

    def exchange(self):
        """The simulated exchange behind a sim environment (the broker's own screen)."""
        if self.settings.broker != "sim":
            raise UserError("this environment trades at IB, not on the simulated exchange")
        if "_exchange" not in self.__dict__:
            from tradeledger.engine.setup.session import open_sim_exchange

            self.__dict__["_exchange"] = open_sim_exchange(self, self.config)  # cached, like a cached_property
        return self.__dict__["_exchange"]
