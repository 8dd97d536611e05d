"""How much capital a strategy sizes with, and where that figure came from.

pysystemtrade's choice, by config:

* `[portfolio] capital_mode = "fixed"` (the default): the strategy trades `capital_share` of
  `[portfolio] capital`, whatever the account has earned or lost;
* `capital_mode = "compounding"`: it trades `capital_share` of the account's NAV (deposits plus
  everything earned, the query in engine/accounting/valuation.py), so profits are reinvested and
  losses shrink positions;
* `[strategies.X] capital = "250000"`: that strategy trades a fixed amount in either mode.

`strategy_capital` is a pure decision; the NAV it may use is read once per target run.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tradeledger.errors import UserError
from tradeledger.engine.setup.config import Strategy, TradingConfig


@dataclass(frozen=True)
class Capital:
    capital: Decimal  # the base the share applies to (base currency)
    share: Decimal  # the strategy's fraction of it
    source: str  # where it came from, for a person

    @property
    def amount(self) -> Decimal:
        return self.capital * self.share


def strategy_capital(config: TradingConfig, strategy: Strategy, nav: Decimal | None, nav_note: str = "") -> Capital:
    """The capital a strategy sizes with; `nav` is the account's NAV (needed when compounding)."""
    if strategy.capital is not None:
        return Capital(strategy.capital, Decimal(1), f"fixed: strategies.{strategy.name}.capital")
    if config.capital_mode == "compounding":
        if nav is None:
            raise UserError(f"compounding capital needs the account's NAV, unknown{nav_note}")
        if nav <= 0:
            raise UserError(f"compounding capital: the account's NAV is {nav}: deposit capital first "
                             "(`tradeledger init --capital` or `adjust cash --kind deposit`)")
        return Capital(nav, strategy.capital_share, f"compounding: NAV {nav}{nav_note} x share {strategy.capital_share}")
    return Capital(config.capital, strategy.capital_share,
                   f"fixed: [portfolio] capital {config.capital} x share {strategy.capital_share}")
