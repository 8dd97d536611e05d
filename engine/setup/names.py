"""Which configured instrument a contract belongs to, and which strategy owns an account: the
rules by themselves, on plain names, so that the read commands (reports/positions.py) apply them
to config.toml without building the whole trading configuration (engine/setup/config.py, which
applies the same functions to its records).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from tradeledger.ledger.accounts import account_component, commodity_root, names_map

MONTH_CODES = "FGHJKMNQUVXZ"


def belongs_to(name: str, is_future: bool, code: str) -> bool:
    """Whether contract `code` is instrument `name`'s: a share by its name, a future by its root,
    a month code and two digits of year (MESZ26)."""
    if not is_future:
        return code == name
    root = commodity_root(name)
    return code.startswith(root) and len(code) == len(root) + 3 and code[len(root)] in MONTH_CODES \
        and code[-2:].isdigit()


def instrument_of_contract(instruments: Iterable[tuple[str, bool]], code: str) -> str | None:
    """The first of (name, is_future) in configured order that `code` belongs to, or None."""
    return next((name for name, is_future in instruments if belongs_to(name, is_future, code)), None)


def strategy_accounts(strategy_names: list[str]) -> dict[str, str]:
    """Strategy name -> its account component (`trend_fast` -> `Trend-fast`), refusing collisions."""
    return names_map(strategy_names, account_component)


def from_raw(raw: dict) -> tuple[list[tuple[str, bool]], dict[str, str]]:
    """(instruments as (name, is_future) in order, account component -> strategy name) from a
    config.toml already checked (parse_trading_config accepted it)."""
    instruments = [(name, spec.get("type") == "future") for name, spec in raw.get("instruments", {}).items()]
    components = strategy_accounts(list(raw.get("strategies", {})))
    owners: dict[str, str] = {}
    for name, component in components.items():
        owners.setdefault(component, name)  # TradingConfig.strategy_by_account: the first one
    return instruments, owners


def sim_commissions(raw: dict) -> tuple[Decimal, Decimal, list[str]]:
    """(commission per contract, per share, the share instruments it applies to) of the simulated
    broker, from a config.toml already checked, as parse_trading_config reads them."""
    from tradeledger.ledger.numbers import to_decimal

    sim = raw.get("sim", {})
    per_contract, per_share = (to_decimal(str(v) if isinstance(v, float) else v, f"sim.{key}") for key, v in (
        ("commission_per_contract", sim.get("commission_per_contract", "1.00")),
        ("commission_per_share", sim.get("commission_per_share", "0.005"))))
    return per_contract, per_share, [name for name, spec in raw.get("instruments", {}).items()
                                     if spec.get("type") != "future"]


def tick_of(instruments: dict, code: str):
    """The tick size (Decimal) of instrument `code` or of the instrument whose contract `code` is, from
    config.toml's [instruments] table as written (default 0.01); None when no instrument claims it."""
    from decimal import Decimal, InvalidOperation

    for name, spec in instruments.items():
        if not isinstance(spec, dict):
            continue
        if name == code or belongs_to(name, spec.get("type") == "future", code):
            try:
                tick = Decimal(str(spec.get("tick_size", "0.01")))
            except InvalidOperation:
                return None
            return tick if tick.is_finite() and tick > 0 else None
    return None
