"""Every key config.toml may hold, and the mistakes a reader of one table cannot see.

Each table's reader (engine/setup/config.py, engine/ops/jobs.py, ...) parses the keys it uses; a
misspelt key (`max_postion`) would otherwise be read by nobody and silently do nothing. `KEYS`
names every table and its keys (docs/config.md documents each, and a test holds the two equal);
`problems` walks a parsed config.toml and returns one line per mistake, all of them:

* an unknown table or key, with the closest known spelling and the known keys
  (`[limits.instruments.MES] unknown key 'max_postion' (did you mean 'max_position'?; known: ...)`);
* a `[limits.instruments.NAME]` or `[limits.strategies.NAME]` naming no configured instrument or
  strategy.

Values of the wrong shape (a switch that is not a TOML boolean, a whole number that is not a TOML
integer, a string where a table belongs) are config_shape.py's. `parse_settings` refuses a file with
any mistake of either kind (`ConfigProblems`: the first, and how many more); `tradeledger config
check` lists them all. `problems` is pure: a dict in, lines out.
"""

from __future__ import annotations

from tradeledger.engine.setup import ConfigError
from tradeledger.errors import UnknownName

FREE = None  # a table whose keys are names the user chooses (checked by its reader, if at all)

# table path ("*" stands for a name the user chooses) -> its keys, or FREE
KEYS: dict[str, frozenset | None] = {
    "environment": frozenset({"name", "broker", "account", "base_currency", "db_url", "db_password_file",
                              "db_password_env"}),
    "ib": frozenset({"host", "port", "client_id", "day_timezone", "connect_timeout"}),
    "portfolio": frozenset({"capital", "capital_mode", "buffer_fraction", "max_run_age_hours"}),
    "instruments": FREE,
    "instruments.*": frozenset({"type", "currency", "multiplier", "exchange", "ib_symbol", "trading_class", "tick_size",
                                "expiry_months", "expiry_rule", "expiry_day", "roll_offset_days", "force_days",
                                "first_notice", "carry_offset"}),
    "mappings": FREE,
    "strategies": FREE,
    "strategies.*": frozenset({"kind", "instruments", "capital_share", "capital", "risk_target", "idm", "fdm",
                               "rules", "allocation"}),
    "strategies.*.instruments": FREE,
    "strategies.*.rules": FREE,
    "strategies.*.allocation": frozenset({"rule", "lookback", "top_n", "absolute_filter", "band_abs", "band_rel"}),
    "rules": FREE,
    "limits": frozenset({"max_order_qty", "max_daily_qty", "max_order_shares", "max_daily_shares",
                         "max_order_notional", "clip", "instruments", "strategies"}),
    "limits.instruments": FREE,
    "limits.instruments.*": frozenset({"max_order_qty", "max_daily_qty", "max_order_notional", "max_position",
                                       "max_notional", "clip", "halt", "reduce_only"}),
    "limits.strategies": FREE,
    "limits.strategies.*": frozenset({"halt", "reduce_only"}),
    "trading": frozenset({"lease_wait_seconds", "fill_wait_seconds", "cancel_wait_seconds"}),
    "sim": frozenset({"commission_per_contract", "commission_per_share"}),
    "account_cash": frozenset({"interest", "fees"}),
    "daemon": frozenset({"fill_sync_seconds", "reconcile_seconds", "settlement_times", "data_csv", "data_time",
                         "targets_time", "lease_seconds", "heartbeat_seconds", "retry_seconds", "verify_time",
                         "log_file", "log_max_bytes", "log_backups", "data_fetch", "data_fetch_days"}),
    "daemon.settlement_times": FREE,
    "reconcile": frozenset({"cash_tolerance"}),
    "monitor": frozenset({"commission_overdue_minutes", "order_stuck_minutes", "stale_price_days",
                          "daemon_silence_minutes"}),
    "backup": frozenset({"daily", "keep", "dir"}),
    "alerts": frozenset({"urls", "min_severity", "max_per_hour", "max_attempts", "every_seconds", "summary_time"}),
    "health": frozenset({"port", "host"}),
    "service": frozenset({"fava_port"}),
}
TOP = frozenset(k for k in KEYS if "." not in k)


def _pattern(path: tuple[str, ...]) -> str | None:
    """The KEYS entry of a table path: each part literal or, where KEYS says so, any name (*)."""
    for pattern in KEYS:
        parts = pattern.split(".")
        if len(parts) == len(path) and all(p == "*" or p == q for p, q in zip(parts, path)):
            return pattern
    return None


def _child(path: tuple[str, ...], key: str) -> str | None:
    """The KEYS entry a sub-table `key` of `path` would be (None: `key` holds no table)."""
    return _pattern(path + (key,))


def problems(raw: dict) -> list[str]:
    """Every mistake of the kinds above, one line each, in the file's order (pure)."""
    out: list[str] = []
    for key in raw:
        if key not in TOP:
            out.append(f"{UnknownName('table', f'[{key}]', [f'[{t}]' for t in TOP])}")
    for key, value in raw.items():
        if key in TOP and isinstance(value, dict):
            _walk((key,), value, out)
    out += _names(raw)
    return out


def _walk(path: tuple[str, ...], table: dict, out: list[str]) -> None:
    pattern = _pattern(path)
    where = ".".join(path)
    known = KEYS.get(pattern) if pattern else FREE
    for key, value in table.items():
        if known is not FREE and key not in known:
            out.append(f"[{where}] {UnknownName('key', key, known)}")
            continue
        if isinstance(value, dict) and _child(path, key) is not None:
            _walk(path + (key,), value, out)


def _names(raw: dict) -> list[str]:
    """[limits.instruments.NAME] and [limits.strategies.NAME] name configured things."""
    out = []
    limits = raw.get("limits")
    if not isinstance(limits, dict):
        return out
    for table, kind in (("instruments", "instrument"), ("strategies", "strategy")):
        configured = raw.get(table) if isinstance(raw.get(table), dict) else {}
        named = limits.get(table)
        if not isinstance(named, dict):
            continue
        for name in named:
            if name not in configured:
                out.append(f"[limits.{table}.{name}] {UnknownName(kind, name, configured)}")
    return out


class ConfigProblems(ConfigError):
    """config.toml has mistakes: the message is the first (and how many more); `lines` all of them."""

    def __init__(self, path, found: list[str]):
        self.path, self.problems = path, list(found)
        more = len(found) - 1
        super().__init__(f"{path}: {found[0]}" + (f" (and {more} more: `tradeledger config check` lists them)"
                                                 if more else ""))

    def lines(self) -> list[str]:
        return [f"{self.path}: {problem}" for problem in self.problems]


def check_keys(raw: dict, path) -> None:
    """Raise ConfigProblems if config.toml has unknown keys or names, or values of the wrong shape."""
    from tradeledger.engine.setup.config_shape import shape_problems

    found = problems(raw) + shape_problems(raw)
    if found:
        raise ConfigProblems(path, found)
