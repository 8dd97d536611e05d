"""`tradeledger config check`: read and validate an environment's config.toml, and say what applies.

Everything the environment would read is parsed as the commands parse it (the [environment] and
[ib] settings, the trading configuration, the daemon's table with [backup] and [alerts], and the
[reconcile], [monitor], [health] and [service] tables), without opening the database, so a
broken or unreachable database does not hide a config mistake and a config mistake is found before
anything runs. A mistake raises ConfigError with one line naming the file, the key and what is
allowed; otherwise the result lists every value in force, defaults included. docs/config.md
documents each key.
"""

from __future__ import annotations

import sqlalchemy as sa

from tradeledger.engine.ops.jobs import parse_daemon_config
from tradeledger.engine.setup.config import parse_trading_config
from tradeledger.engine.setup.environment import ConfigError, parse_settings, resolve_home


def check_config(home, env: str) -> dict:
    path = resolve_home(home) / env / "config.toml"
    settings = parse_settings(path, env)
    try:
        trading = parse_trading_config(settings.raw)
        daemon = parse_daemon_config(settings.raw)
        others = _other_tables(settings.raw, env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    s = str
    return {
        "file": s(path),
        "environment": {"name": settings.env, "broker": settings.broker, "account": settings.account,
                        "base_currency": settings.base_currency,
                        "database": sa.engine.make_url(settings.db_url).render_as_string(hide_password=True) if settings.db_url else "sqlite (the environment's file)",
                        **({"ib": f"{settings.ib_host}:{settings.ib_port} client {settings.ib_client_id}"}
                           if settings.broker == "ib" else {})},
        "portfolio": {"capital": trading.capital, "buffer_fraction": trading.buffer_fraction,
                      "max_run_age_hours": trading.max_run_age_hours},
        "instruments": [{"name": i.name, "type": i.type, "currency": i.currency, "multiplier": i.multiplier,
                         "exchange": i.exchange} for i in trading.instruments.values()],
        "mappings": dict(trading.mappings),
        "strategies": [{"name": st.name, "kind": st.kind, "capital_share": st.capital_share,
                        "instruments": ", ".join(i for i, _ in st.instruments),
                        "rules": ", ".join(r for r, _ in st.rules) if not st.is_allocation else st.allocation.rule}
                       for st in trading.strategies.values()],
        "limits": _limits(trading),
        "account_cash": {"interest": trading.interest_allocation, "fees": trading.fee_allocation},
        **others,
        "daemon": {"jobs": daemon.job_names(),
                   "settlement_times": {x: t.strftime("%H:%M UTC") for x, t in sorted(daemon.settlement_times.items())},
                   "fill_sync_seconds": daemon.fill_sync_seconds, "reconcile_seconds": daemon.reconcile_seconds},
    }


def _other_tables(raw: dict, env: str) -> dict:
    """[reconcile], [monitor], [health] and [service], read by the functions their commands use."""
    from tradeledger.engine.ops.health import parse_health_config
    from tradeledger.engine.ops.services import fava_port
    from tradeledger.engine.trust.monitor import thresholds
    from tradeledger.engine.trust.reconcile import cash_tolerance

    try:
        tolerance, limits = cash_tolerance(raw), thresholds(raw)
    except ConfigError:
        raise
    except ValueError as exc:  # a number that does not parse (NumberError) says no table
        message = str(exc)
        raise ConfigError(message if message.startswith("config:") else f"config: {message}") from None
    health = parse_health_config(raw)
    return {"reconcile": {"cash_tolerance": tolerance},
            "monitor": {k: getattr(limits, k) for k in limits.__dataclass_fields__},
            "health": {"endpoint": f"{health.host}:{health.port}" if health.port is not None else "off"},
            "service": {"fava_port": fava_port(raw, env)}}


def _limits(trading) -> dict:
    """The limits in force: the defaults per kind of instrument, then each instrument that has its
    own (in its own units: contracts of a future, shares of a share; notionals in the base currency)."""
    limits = trading.limits
    out = {"max_order_qty (contracts)": limits.max_order_qty, "max_daily_qty (contracts)": limits.max_daily_qty,
           "max_order_shares": limits.max_order_shares, "max_daily_shares": limits.max_daily_shares,
           "max_order_notional": limits.max_order_notional, "clip": ", ".join(sorted(limits.clip)) or "-"}
    for name in sorted(limits.instruments):
        instrument = trading.instruments[name]
        own = limits.for_instrument(name, instrument.is_future)
        unit = "contracts" if instrument.is_future else "shares"
        parts = [f"{key} {value}" + (f" {unit}" if key.endswith(("_qty", "position")) else "")
                 for key in ("max_order_qty", "max_daily_qty", "max_position", "max_notional", "max_order_notional")
                 if (value := getattr(own, key)) is not None]
        if own.clip:
            parts.append("clips: " + ", ".join(sorted(own.clip)))
        out[f"instrument {name}"] = "; ".join(parts)
    out |= {"halted": sorted(limits.halted), "reduce_only": sorted(limits.reduce_only)}
    return out
