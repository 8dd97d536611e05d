"""The trading configuration: instruments, signal-to-execution mappings, strategies, limits.

Read from the environment's config.toml and validated once, with errors that name the table and
field. Everything here is an immutable record; `current_contract` is a pure function of an
instrument's expiry calendar and a date.

An *instrument* is what a strategy has an opinion about (BTC); a *contract* is what trades
(MBTZ26). A mapping lets a strategy signal on one instrument and execute on another: sizing then
uses the execution instrument's multiplier, currency and price.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from tradeledger.broker.base import Contract
from tradeledger.engine.futures.calendar import CalendarError, Schedule, first_notice_day, parse_rule, region_of
from tradeledger.engine.futures import calendar as futures_calendar
from tradeledger.engine.setup import ConfigError
from tradeledger.engine.setup.names import MONTH_CODES, belongs_to
from tradeledger.ledger.accounts import account_component, commodity_root, names_map
from tradeledger.ledger.model import LedgerError
from tradeledger.ledger.numbers import NumberError, to_decimal

INSTRUMENT_TYPES = ("future", "share")
ALLOCATION_RULES = ("none", "capital")
STRATEGY_KINDS = ("trend", "allocation")  # how the account's interest and fees reach the strategies


@dataclass(frozen=True)
class Instrument:
    name: str
    type: str
    currency: str
    multiplier: Decimal
    exchange: str
    ib_symbol: str
    trading_class: str = ""
    tick_size: Decimal = Decimal("0.01")
    expiry_months: str = MONTH_CODES
    expiry_day: int = 15
    roll_offset_days: int = 5
    expiry_rule: str = ""  # engine/futures/calendar.py; "" means day:<expiry_day>
    force_days: int = 1
    first_notice: str = ""  # "" (cash settled) or prev_month_end
    carry_offset: int = 1  # carry: compare the current contract with the one this many listed months later

    @property
    def is_future(self) -> bool:
        return self.type == "future"

    @property
    def schedule(self) -> Schedule:
        return Schedule(commodity_root(self.name), self.expiry_months,
                        parse_rule(self.expiry_rule or f"day:{self.expiry_day}"), region_of(self.exchange),
                        self.roll_offset_days, self.force_days, self.first_notice)


@dataclass(frozen=True)
class AllocationSpec:
    """How an allocation strategy finds its target weights and when it rebalances.

    rule: "momentum" (built in: relative momentum over `lookback` closes, the `top_n` best, each
    1/top_n, only those with a positive return when `absolute_filter`), "file" (weights imported
    with `tradeledger weights import`), or a plug-in "module:function".
    A line is rebalanced when its weight has drifted from the target by more than
    min(band_abs, band_rel x target weight): whichever band is crossed first (the "5/25" rule).
    """

    rule: str = "momentum"
    lookback: int = 126
    top_n: int = 3
    absolute_filter: bool = True
    band_abs: Decimal = Decimal("0.05")
    band_rel: Decimal = Decimal("0.25")


@dataclass(frozen=True)
class Strategy:
    name: str  # the user's name
    account_name: str  # its beancount component
    capital_share: Decimal
    risk_target: Decimal
    idm: Decimal
    fdm: Decimal
    rules: tuple[tuple[str, Decimal], ...]  # (rule spec, weight)
    instruments: tuple[tuple[str, Decimal], ...]  # (signal instrument, weight); an allocation's universe
    kind: str = "trend"  # trend (forecasts, volatility sizing) | allocation (target weights in shares)
    allocation: AllocationSpec | None = None
    capital: Decimal | None = None  # a fixed amount (base currency) instead of a share of capital

    @property
    def is_allocation(self) -> bool:
        return self.kind == "allocation"


LIMIT_NAMES = ("max_order_qty", "max_daily_qty", "max_position", "max_notional", "max_order_notional")


@dataclass(frozen=True)
class LimitSet:
    """One instrument's limits, quantities in its own units (contracts of a future, shares of a
    share), notionals in the base currency; None: no such limit. `clip` names the limits that clip
    an order to what they allow instead of refusing it."""
    max_order_qty: Decimal | None = None
    max_daily_qty: Decimal | None = None
    max_position: Decimal | None = None
    max_notional: Decimal | None = None  # of the whole position after the order
    max_order_notional: Decimal | None = None  # of one order
    clip: frozenset = frozenset()


@dataclass(frozen=True)
class Limits:
    """`[limits]`: defaults per kind of instrument, in that kind's units, and each instrument's own.

    `max_order_qty`/`max_daily_qty` are contracts and apply to futures; `max_order_shares`/
    `max_daily_shares` are shares and apply to shares; `max_order_notional` (base currency)
    applies to both. `[limits.instruments.X]` sets X's own limits in X's units; `clip = [...]`
    (at either level) makes the named limits clip instead of refuse."""
    max_order_qty: Decimal = Decimal(1000)
    max_daily_qty: Decimal = Decimal(5000)
    max_order_shares: Decimal = Decimal(10000)
    max_daily_shares: Decimal = Decimal(50000)
    max_order_notional: Decimal | None = None
    clip: frozenset = frozenset()
    instruments: dict = field(default_factory=dict)  # instrument -> LimitSet of its own (None: default)
    halted: frozenset = frozenset()  # instrument or strategy names
    reduce_only: frozenset = frozenset()

    def for_instrument(self, name: str, is_future: bool) -> LimitSet:
        own = self.instruments.get(name, LimitSet())

        def pick(value, default):
            return default if value is None else value
        return LimitSet(
            max_order_qty=pick(own.max_order_qty, self.max_order_qty if is_future else self.max_order_shares),
            max_daily_qty=pick(own.max_daily_qty, self.max_daily_qty if is_future else self.max_daily_shares),
            max_position=own.max_position, max_notional=own.max_notional,
            max_order_notional=pick(own.max_order_notional, self.max_order_notional),
            clip=own.clip if name in self.instruments and own.clip else self.clip)


@dataclass(frozen=True)
class TradingConfig:
    capital: Decimal
    buffer_fraction: Decimal
    max_run_age_hours: Decimal
    instruments: dict  # name -> Instrument
    mappings: dict  # signal instrument -> execution instrument
    strategies: dict  # name -> Strategy
    limits: Limits
    rules: dict  # rule name -> "module:function"
    sim_commission: Decimal = Decimal("1.00")
    sim_share_commission: Decimal = Decimal("0.005")
    interest_allocation: str = "none"  # [account_cash] interest: "capital" (by capital share) or "none"
    fee_allocation: str = "none"  # [account_cash] fees: the same choice
    capital_mode: str = "fixed"  # fixed: [portfolio] capital; compounding: the account's NAV

    def execution_instrument(self, signal: str) -> Instrument:
        return self.instruments[self.mappings.get(signal, signal)]

    def forecasting_strategies(self) -> list[Strategy]:
        """The strategies whose targets come from forecasts (not allocation weights)."""
        return [s for s in self.strategies.values() if not s.is_allocation]

    def strategy_by_account(self, component: str) -> Strategy | None:
        return next((s for s in self.strategies.values() if s.account_name == component), None)


def _dec(table: str, key: str, value, positive: bool = False, allow_zero: bool = True) -> Decimal:
    try:
        number = to_decimal(str(value) if isinstance(value, float) else value, f"{table}.{key}")
    except NumberError as exc:
        raise ConfigError(f"config: {exc}") from None
    if positive and (number < 0 or (number == 0 and not allow_zero)):
        raise ConfigError(f"config: {table}.{key} must be {'positive' if not allow_zero else 'non-negative'}, "
                          f"not {number}")
    return number


def _whole(where: str, raw: dict, key: str, default: int) -> int:
    """A whole-number key, as a TOML integer (never through int(): "15" or 5.5 is refused, naming it)."""
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"config: {where}.{key} must be a whole number (unquoted), not {value!r}")
    return value


def _switch(where: str, table: dict, key: str) -> bool:
    """A switch, as a TOML boolean (never by truthiness: "no" would mean yes)."""
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"config: {where}.{key} must be true or false (a TOML boolean, unquoted), not {value!r}")
    return value


def _instrument(name: str, raw: dict) -> Instrument:
    where = f"instruments.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"config: [{where}] must be a table")
    kind = raw.get("type")
    if kind not in INSTRUMENT_TYPES:
        raise ConfigError(f"config: {where}.type must be one of {', '.join(INSTRUMENT_TYPES)}, not {kind!r}")
    multiplier = _dec(where, "multiplier", raw.get("multiplier", 1), positive=True, allow_zero=False)
    currency = str(raw.get("currency", "")).upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ConfigError(f"config: {where}.currency must be a 3-letter currency code")
    months = str(raw.get("expiry_months", MONTH_CODES)).upper()
    if kind == "future" and (not months or any(m not in MONTH_CODES for m in months)):
        raise ConfigError(f"config: {where}.expiry_months must be month codes from {MONTH_CODES}")
    try:
        commodity_root(name)
    except LedgerError as exc:
        raise ConfigError(f"config: {where}: {exc}") from None
    rule = str(raw.get("expiry_rule", ""))
    first_notice = str(raw.get("first_notice", ""))
    try:
        if rule:
            parse_rule(rule)
        first_notice_day(first_notice, 2026, 3)
    except CalendarError as exc:
        raise ConfigError(f"config: {where}: {exc}") from None
    roll_offset, force_days = _whole(where, raw, "roll_offset_days", 5), _whole(where, raw, "force_days", 1)
    if not 0 <= force_days <= roll_offset <= 60:
        raise ConfigError(f"config: {where}: need 0 <= force_days ({force_days}) <= roll_offset_days "
                          f"({roll_offset}) <= 60")
    return Instrument(
        name=name, type=kind, currency=currency, multiplier=multiplier,
        exchange=str(raw.get("exchange", "SMART")), ib_symbol=str(raw.get("ib_symbol", name)),
        trading_class=str(raw.get("trading_class", "")),
        tick_size=_dec(where, "tick_size", raw.get("tick_size", "0.01"), positive=True, allow_zero=False),
        expiry_months="".join(sorted(set(months), key=MONTH_CODES.index)),
        expiry_day=_whole(where, raw, "expiry_day", 15), roll_offset_days=roll_offset,
        expiry_rule=rule, force_days=force_days, first_notice=first_notice,
        carry_offset=_whole(where, raw, "carry_offset", 1),
    )


def _allocation(where: str, raw) -> AllocationSpec:
    where = f"{where}.allocation"
    if not isinstance(raw, dict):
        raise ConfigError(f"config: [{where}] must be a table")
    unknown = set(raw) - {"rule", "lookback", "top_n", "absolute_filter", "band_abs", "band_rel"}
    if unknown:
        raise ConfigError(f"config: {where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: rule, lookback, "
                          f"top_n, absolute_filter, band_abs, band_rel)")
    rule = str(raw.get("rule", "momentum"))
    if rule not in ("momentum", "file") and ":" not in rule:
        raise ConfigError(f"config: {where}.rule must be momentum, file or a plug-in 'module:function', not {rule!r}")
    ints = {}
    for key, default in (("lookback", 126), ("top_n", 3)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"config: {where}.{key} must be a whole number >= 1, not {value!r}")
        ints[key] = value
    absolute = raw.get("absolute_filter", True)
    if not isinstance(absolute, bool):
        raise ConfigError(f"config: {where}.absolute_filter must be true or false, not {absolute!r}")
    bands = {k: _dec(where, k, raw.get(k, d), positive=True) for k, d in (("band_abs", "0.05"), ("band_rel", "0.25"))}
    return AllocationSpec(rule=rule, absolute_filter=absolute, **ints, **bands)


def _weights(where: str, raw) -> tuple[tuple[str, Decimal], ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"config: {where} must be a non-empty table of weights")
    return tuple((k, _dec(where, k, v, positive=True)) for k, v in sorted(raw.items()))


def parse_trading_config(raw: dict) -> TradingConfig:
    portfolio = raw.get("portfolio", {})
    instruments = {name: _instrument(name, spec) for name, spec in raw.get("instruments", {}).items()}
    try:
        names_map(list(instruments), commodity_root)
    except LedgerError as exc:
        raise ConfigError(f"config: instruments: {exc}") from None
    mappings = {str(k): str(v) for k, v in raw.get("mappings", {}).items()}
    for signal, target in mappings.items():
        if signal not in instruments or target not in instruments:
            raise ConfigError(f"config: mapping {signal} -> {target} names an unknown instrument")
    strategies_raw = raw.get("strategies", {})
    try:
        components = names_map(list(strategies_raw), account_component)
    except LedgerError as exc:
        raise ConfigError(f"config: strategies: {exc}") from None
    strategies = {}
    for name, spec in strategies_raw.items():
        where = f"strategies.{name}"
        weights = _weights(f"{where}.instruments", spec.get("instruments"))
        for instrument, _ in weights:
            if instrument not in instruments:
                raise ConfigError(f"config: {where}.instruments names unknown instrument {instrument!r}")
        kind = str(spec.get("kind", "trend"))
        if kind not in STRATEGY_KINDS:
            raise ConfigError(f"config: {where}.kind must be one of {', '.join(STRATEGY_KINDS)}, not {kind!r}")
        allocation = _allocation(where, spec.get("allocation", {})) if kind == "allocation" else None
        if allocation is not None:
            futures = [i for i, _ in weights if instruments[i].is_future]
            if futures:
                raise ConfigError(f"config: {where}: an allocation strategy holds shares and ETFs, not futures "
                                  f"({', '.join(futures)})")
        strategies[name] = Strategy(
            kind=kind, allocation=allocation,
            name=name, account_name=components[name],
            capital_share=_dec(where, "capital_share", spec.get("capital_share", 1), positive=True),
            risk_target=_dec(where, "risk_target", spec.get("risk_target", "0.2"), positive=True, allow_zero=False),
            idm=_dec(where, "idm", spec.get("idm", 1), positive=True, allow_zero=False),
            fdm=_dec(where, "fdm", spec.get("fdm", 1), positive=True, allow_zero=False),
            rules=_weights(f"{where}.rules", spec.get("rules", {"ewmac_16_64": 1})),
            instruments=weights,
            capital=(_dec(where, "capital", spec["capital"], positive=True, allow_zero=False)
                     if "capital" in spec else None),
        )
    limits = parse_limits(raw.get("limits", {}), instruments)
    account_cash = raw.get("account_cash", {})
    allocation = {}
    for key in ("interest", "fees"):
        allocation[key] = str(account_cash.get(key, "none"))
        if allocation[key] not in ALLOCATION_RULES:
            raise ConfigError(f"config: account_cash.{key} must be one of {', '.join(ALLOCATION_RULES)}, "
                              f"not {allocation[key]!r}")
    return TradingConfig(
        interest_allocation=allocation["interest"], fee_allocation=allocation["fees"],
        capital=_dec("portfolio", "capital", portfolio.get("capital", "1000000"), positive=True),
        buffer_fraction=_dec("portfolio", "buffer_fraction", portfolio.get("buffer_fraction", "0.1"), positive=True),
        max_run_age_hours=_dec("portfolio", "max_run_age_hours", portfolio.get("max_run_age_hours", 24), positive=True),
        instruments=instruments, mappings=mappings, strategies=strategies, limits=limits,
        rules={k: str(v) for k, v in raw.get("rules", {}).items()},
        capital_mode=_capital_mode(portfolio.get("capital_mode", "fixed")),
        sim_commission=_dec("sim", "commission_per_contract", raw.get("sim", {}).get("commission_per_contract", "1.00"),
                            positive=True),
        sim_share_commission=_dec("sim", "commission_per_share", raw.get("sim", {}).get("commission_per_share", "0.005"),
                                  positive=True),
    )


CAPITAL_MODES = ("fixed", "compounding")


def _capital_mode(value) -> str:
    if value not in CAPITAL_MODES:
        raise ConfigError(f"config: portfolio.capital_mode must be one of {', '.join(CAPITAL_MODES)}, not {value!r}")
    return value


def _clip(where: str, raw) -> frozenset:
    if raw is None:
        return frozenset()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or any(name not in LIMIT_NAMES for name in raw):
        raise ConfigError(f"config: {where}.clip must list limits among {', '.join(LIMIT_NAMES)}, not {raw!r}")
    return frozenset(raw)


def parse_limits(raw: dict, instruments: dict) -> Limits:
    """`[limits]` and `[limits.instruments.X]`, `[limits.strategies.S]` (halt, reduce_only)."""
    if not isinstance(raw, dict):
        raise ConfigError("config: [limits] must be a table")
    per = raw.get("instruments", {})
    per_strategy = raw.get("strategies", {})

    def opt(where, table, key):
        return _dec(where, key, table[key], positive=True) if key in table else None
    own = {}
    for name, table in per.items():
        where = f"limits.instruments.{name}"
        if name not in instruments:
            raise ConfigError(f"config: [{where}] names unknown instrument {name!r}")
        if not isinstance(table, dict):
            raise ConfigError(f"config: [{where}] must be a table")
        unknown = set(table) - set(LIMIT_NAMES) - {"clip", "halt", "reduce_only"}
        if unknown:
            raise ConfigError(f"config: [{where}] has unknown keys {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(LIMIT_NAMES)}, clip, halt, reduce_only)")
        own[name] = LimitSet(*(opt(where, table, key) for key in LIMIT_NAMES), clip=_clip(where, table.get("clip")))
    defaults = Limits()
    return Limits(
        max_order_qty=_dec("limits", "max_order_qty", raw.get("max_order_qty", defaults.max_order_qty), positive=True),
        max_daily_qty=_dec("limits", "max_daily_qty", raw.get("max_daily_qty", defaults.max_daily_qty), positive=True),
        max_order_shares=_dec("limits", "max_order_shares", raw.get("max_order_shares", defaults.max_order_shares),
                              positive=True),
        max_daily_shares=_dec("limits", "max_daily_shares", raw.get("max_daily_shares", defaults.max_daily_shares),
                              positive=True),
        max_order_notional=opt("limits", raw, "max_order_notional"),
        clip=_clip("limits", raw.get("clip")), instruments=own,
        halted=frozenset(k for where, tables in (("limits.instruments", per), ("limits.strategies", per_strategy))
                         for k, v in tables.items() if _switch(f"{where}.{k}", v, "halt")),
        reduce_only=frozenset(k for where, tables in (("limits.instruments", per), ("limits.strategies", per_strategy))
                              for k, v in tables.items() if _switch(f"{where}.{k}", v, "reduce_only")),
    )


def current_contract(instrument: Instrument, on: dt.date, overrides: dict | None = None) -> Contract:
    """The contract to trade on a date: the first whose roll window has not opened
    (engine/futures/calendar.py; `overrides`: code -> last trading day from the broker)."""
    if not instrument.is_future:
        return to_contract(instrument, instrument.name, "")
    try:
        dates = futures_calendar.current(instrument.schedule, on, overrides)
    except CalendarError as exc:
        raise ConfigError(f"instrument {instrument.name}: {exc}") from None
    return to_contract(instrument, dates.code, dates.expiry)


def contract_of_code(instrument: Instrument, code: str) -> Contract:
    """The broker contract of one of the instrument's codes (the calendar gives its month)."""
    if not instrument.is_future:
        return to_contract(instrument, instrument.name, "")
    dates = futures_calendar.find(instrument.schedule, code)
    return to_contract(instrument, code, dates.expiry)


def to_contract(instrument: Instrument, code: str, expiry: str) -> Contract:
    return Contract(
        code=code, sec_type="FUT" if instrument.is_future else "STK", symbol=instrument.ib_symbol,
        exchange=instrument.exchange, currency=instrument.currency, multiplier=instrument.multiplier,
        expiry=expiry, trading_class=instrument.trading_class,
    )


def instrument_of_contract(config: TradingConfig, code: str) -> Instrument | None:
    """The configured instrument a contract code belongs to (by root), or None (engine/setup/names.py)."""
    return next((i for i in config.instruments.values() if belongs_to(i.name, i.is_future, code)), None)
