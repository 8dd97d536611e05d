"""The shape of config.toml, checked before anything reads it: one line per mistake.

`parse_settings` and `parse_trading_config` read config.toml's values; a value of the wrong
*shape* (a string where a table belongs, a table where a number belongs) used to reach them and
end as an AttributeError or a TypeError. This module states the shape of every table those
readers use as pydantic models, validated once when the file is read, so that any mistake ends
as one line: the file, the key's full path, what is allowed, and what was found:

    config.toml: strategies.x must be a table like [strategies.x], not the string 'oops'

Values the readers check themselves (an instrument type, a month code, a positive number) keep
their own messages. Tables this module does not name are left to their own readers ([daemon],
[health], ...); keys it does not name are allowed (extra="allow"), so a table can grow.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

Number = Union[StrictInt, Decimal, float, StrictStr]  # the readers turn these into exact Decimals
Day = Annotated[StrictInt, Field(ge=1, le=31)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class Environment(_Table):
    name: StrictStr
    broker: StrictStr
    account: StrictStr
    base_currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    db_url: StrictStr | None = None
    db_password_env: StrictStr | None = None
    db_password_file: StrictStr | None = None


class IB(_Table):
    host: StrictStr = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 4002
    client_id: Annotated[StrictInt, Field(ge=0)] = 1
    day_timezone: StrictStr = "America/New_York"


class Instrument(_Table):
    type: StrictStr
    currency: StrictStr = ""
    multiplier: Number = 1
    exchange: StrictStr = "SMART"
    ib_symbol: StrictStr | None = None
    trading_class: StrictStr = ""
    tick_size: Number = "0.01"
    expiry_months: StrictStr = "FGHJKMNQUVXZ"
    expiry_day: Day = 15
    roll_offset_days: Annotated[StrictInt, Field(ge=0, le=60)] = 5
    force_days: Annotated[StrictInt, Field(ge=0, le=60)] = 1
    carry_offset: Annotated[StrictInt, Field(ge=1)] = 1


class Strategy(_Table):
    instruments: dict[str, Number]
    rules: dict[str, Number] | None = None
    kind: StrictStr = "trend"
    capital_share: Number = 1
    risk_target: Number = "0.2"
    idm: Number = 1
    fdm: Number = 1
    allocation: dict[str, Any] | None = None


class InstrumentLimit(_Table):
    max_position: Number | None = None
    max_notional: Number | None = None
    halt: StrictBool = False
    reduce_only: StrictBool = False


class StrategyLimit(_Table):
    halt: StrictBool = False
    reduce_only: StrictBool = False


class Limits(_Table):
    max_order_qty: Number = 1000
    max_daily_qty: Number = 5000
    instruments: dict[str, InstrumentLimit] = {}
    strategies: dict[str, StrategyLimit] = {}


class Config(_Table):
    environment: Environment
    ib: IB = IB()
    portfolio: dict[str, Number] = {}
    instruments: dict[str, Instrument] = {}
    mappings: dict[str, StrictStr] = {}
    strategies: dict[str, Strategy] = {}
    limits: Limits = Limits()
    rules: dict[str, StrictStr] = {}
    sim: dict[str, Number] = {}
    account_cash: dict[str, StrictStr] = {}
    daemon: dict[str, Any] = {}


_EXPECTED = {
    "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
    "string_type": "a string in quotes", "int_type": "a whole number", "bool_type": "true or false",
    "missing": "present", "greater_than_equal": "at least {ge}", "less_than_equal": "at most {le}",
    "string_pattern_mismatch": "a 3-letter code in capitals (USD)",
}


def _found(value: Any) -> str:
    kind = {str: "the string", bool: "the boolean", int: "the number", float: "the number",
            dict: "a table", list: "the list"}.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict) else "{" + ", ".join(list(value)[:3]) + "}"
    return f"{kind} {shown}" if not isinstance(value, dict) else f"a table {shown}"


_BRANCHES = {"int", "decimal", "float", "str", "bool", "none", "dict", "list"}  # pydantic's union tags


def _path(loc: tuple) -> str:
    parts = list(loc)
    while parts and isinstance(parts[-1], str) and parts[-1] in _BRANCHES and len(parts) > 1:
        parts.pop()  # a union's branch, not the user's key
    return ".".join(str(p) for p in parts)


def explain(error: dict, union_of_numbers: bool = False) -> str:
    """One validation error as one clause: key path, what is allowed, what was found."""
    path = _path(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "missing":
        return f"{path} is missing"
    expected = "a number" if union_of_numbers else _EXPECTED.get(error["type"], error["msg"].lower()).format(**ctx)
    if expected == "a table" and "." in path:
        expected = f"a table like [{path}]"
    return f"{path} must be {expected}, not {_found(error.get('input'))}"


def check_shape(raw: dict, path: Path | str) -> None:
    """Raise ConfigError naming the file and the first wrong key, if config.toml is misshapen."""
    from tradeledger.engine.setup.environment import ConfigError

    try:
        Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # one line: the first mistake (a union reports one error per branch: keep the first)
        first = _path(errors[0]["loc"])
        numbers = any(_path(e["loc"]) == first and e["loc"][-1] == "decimal" for e in errors)
        raise ConfigError(f"{path}: {explain(errors[0], numbers)}"
                          + (f" (and {len(_distinct(errors)) - 1} more)" if len(_distinct(errors)) > 1 else "")) \
            from None


def shape_problems(raw: dict) -> list[str]:
    """Every mistake of shape, one line each (one per key: a union's branches are one mistake)."""
    try:
        Config.model_validate(raw)
    except ValidationError as exc:
        errors, seen, out = exc.errors(), set(), []
        for error in errors:
            path = _path(error["loc"])
            if path in seen:
                continue
            seen.add(path)
            numbers = any(_path(e["loc"]) == path and e["loc"][-1] == "decimal" for e in errors)
            out.append(explain(error, numbers))
        return out
    return []


def _distinct(errors: list[dict]) -> set[str]:
    return {_path(e["loc"]) for e in errors}
