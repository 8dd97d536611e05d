"""Environments: where a paper or live tradeledger keeps its config, database, ledger file and logs.

    <home>/                 --home, else $TRADELEDGER_HOME, else ~/.tradeledger
      paper/                the default environment
        config.toml         broker, account, base currency, database URL, instruments, ...
        tradeledger.db      the ledger database (unless config names another URL)
        ledger.beancount    the beancount export (Fava reads this)
        logs/
      live/                 the same, strictly apart

The database records its environment and broker account at `init` and refuses to be opened as
anything else; paper accounts at IB start with `DU`, so a live environment may not name one and
a paper environment may not name anything else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from tradeledger.broker.base import check_zone
from tradeledger.engine.context import Context
from tradeledger.engine.setup import quick, secrets
from tradeledger.ledger import db
from tradeledger.ledger.model import Account
from tradeledger.engine.setup import ENVIRONMENTS, ConfigError, default_db_url, resolve_home  # noqa: F401 (re-exported)
from tradeledger.ledger.store import Commodity, Ledger

BROKERS = ("sim", "ib")
DEFAULT_SIM_ACCOUNT = "DU1234567"


@dataclass(frozen=True)
class Settings:
    """The [environment] and [ib] tables of config.toml, validated."""

    env: str
    broker: str
    account: str
    base_currency: str = "USD"
    db_url: str | None = None
    ib_host: str = "127.0.0.1"
    ib_port: int = 4002
    ib_client_id: int = 1
    ib_day_timezone: str = "America/New_York"  # whose midnight starts IB's day (broker/ib.py, memory_since)
    ib_connect_timeout: float = 4.0  # seconds for the handshake and for each start-up sync request
    raw: dict = field(default_factory=dict, compare=False)
    db_password_env: str | None = None  # the database password: from this environment variable ...
    db_password_file: str | None = None  # ... or this file (engine/setup/secrets.py), never the URL


def check_identity(env: str, broker: str, account: str, ib_port: int | None = None) -> None:
    """Paper and live never mix: refuse any combination that could send paper orders live."""
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}: use paper or live")
    if broker not in BROKERS:
        raise ConfigError(f"unknown broker {broker!r}: use sim or ib")
    if env == "live" and broker == "sim":
        raise ConfigError("a live environment needs a real broker (--broker ib), not the simulator")
    if not account or not account.replace("-", "").isalnum() or not account[0].isalpha():
        raise ConfigError(f"invalid broker account id {account!r} (give --account)")
    is_paper_account = account.startswith("DU")
    if env == "live":
        if is_paper_account:
            raise ConfigError(f"account {account} is a paper account (DU...): it cannot be used live")
        if ib_port in (7497, 4002):
            raise ConfigError(f"port {ib_port} is a paper trading port: a live environment cannot use it")
    else:
        if broker == "ib" and not is_paper_account:
            raise ConfigError(f"account {account} is not a paper account (DU...): use --env live for it")
        if broker == "ib" and ib_port in (7496, 4001):
            raise ConfigError(f"port {ib_port} is a live trading port: a paper environment cannot use it")


MAX_CONNECT_TIMEOUT = 600  # ten minutes: beyond that a daemon would sit on a hung gateway, not a big account


def check_connect_timeout(value: object) -> float:
    """`[ib] connect_timeout` as seconds, else a ValueError saying what is allowed.

    It bounds the handshake and each start-up sync request (positions, orders, account values,
    executions): an account with many orders or fills may need more than the default 4. Not 0:
    ib_async reads 0 as "no timeout", and a connect to a hung gateway would then wait forever."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 < value <= MAX_CONNECT_TIMEOUT):  # NaN fails the comparison too
        raise ValueError(f"ib.connect_timeout must be a number of seconds more than 0 and at most "
                         f"{MAX_CONNECT_TIMEOUT}, not {value!r}")
    return float(value)


def parse_settings(path: Path, env: str) -> Settings:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no environment {env!r} at {path.parent}: run `tradeledger --env {env} init`") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    section = raw.get("environment")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: missing [environment] table")
    from tradeledger.engine.setup.config_keys import check_keys
    from tradeledger.engine.setup.config_shape import check_shape

    check_keys(raw, path)  # unknown tables, keys and [limits] names, values of the wrong shape: all of them
    check_shape(raw, path)
    _check_tables(raw, path)
    ib = raw.get("ib", {})
    try:
        settings = Settings(
            env=str(section.get("name", "")), broker=str(section.get("broker", "")),
            account=str(section.get("account", "")), base_currency=str(section.get("base_currency", "USD")),
            db_url=section.get("db_url"), ib_host=str(ib.get("host", "127.0.0.1")),
            ib_port=int(ib.get("port", 4002)), ib_client_id=int(ib.get("client_id", 1)), raw=raw,
            ib_day_timezone=check_zone(str(ib.get("day_timezone", "America/New_York")), "ib.day_timezone"),
            ib_connect_timeout=check_connect_timeout(ib.get("connect_timeout", 4.0)),
            db_password_env=section.get("db_password_env"), db_password_file=section.get("db_password_file"),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid value: {exc}") from None
    if settings.env != env:
        raise ConfigError(f"{path} describes environment {settings.env!r}, not {env!r}")
    try:
        check_identity(settings.env, settings.broker, settings.account,
                       settings.ib_port if settings.broker == "ib" else None)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings


def _check_tables(raw: dict, path: Path) -> None:
    """The trading and daemon tables validated as the file is read, their errors naming it."""
    from tradeledger.engine.ops.jobs import parse_daemon_config
    from tradeledger.engine.setup.config import parse_trading_config

    for parse in (parse_trading_config, parse_daemon_config):
        try:
            parse(raw)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(f"{path}: {message.removeprefix('config: ')}") from None


def render_config(s: Settings, extra: str = "") -> str:
    """The config.toml `init` writes: the environment's identity, commented, and the tables a trader adds
    next as commented examples (every key, its unit and default: docs/config.md)."""
    lines = [
        "# tradeledger environment configuration. Every key, its unit and its default: docs/config.md.",
        "# Check it with `tradeledger config check` after an edit.",
        "[environment]",
        f'name = "{s.env}"                 # paper or live; the database records it and refuses the other',
        f'broker = "{s.broker}"                # sim (the embedded simulated broker) or ib',
        f'account = "{s.account}"         # the broker account id (paper accounts start with DU)',
        f'base_currency = "{s.base_currency}"        # the currency reports convert to; recorded, never changed later',
    ]
    if s.db_url:
        lines.append(f'db_url = "{s.db_url}"  # SQLAlchemy URL (default: tradeledger.db beside this file)')
    if s.db_password_file:
        lines.append(f'db_password_file = "{s.db_password_file}"  # the database password (0600)')
    if s.db_password_env:
        lines.append(f'db_password_env = "{s.db_password_env}"  # the database password from this variable')
    if s.broker == "ib":
        lines += ["", "[ib]", f'host = "{s.ib_host}"', f"port = {s.ib_port}                      # Gateway paper 4002, TWS paper 7497",
                  f"client_id = {s.ib_client_id}                    # unique per connection to the same gateway"]
    if not extra.strip():
        lines += ["", _EXAMPLE.strip()]
    return "\n".join(lines) + "\n" + extra


_EXAMPLE = """
# -- what to add next (uncomment and edit; `tradeledger config check` validates) --------------------
# [portfolio]
# capital = "1000000"          # base currency; strategies get capital_share of it
# buffer_fraction = "0.10"     # no trade while the position is within 10% of the average position
# max_run_age_hours = 24       # an approved run older than this is not executed
#
# [instruments.MES]            # a future: type, currency, multiplier, exchange (its settlement time)
# type = "future"
# currency = "USD"
# multiplier = "5"
# exchange = "CME"
#
# [instruments.SPY]            # a share or ETF
# type = "share"
# currency = "USD"
# exchange = "ARCA"
#
# [strategies.trend]           # forecasts (EWMAC rules) sized by volatility targeting
# capital_share = "0.5"
# risk_target = "0.20"         # annualised
# rules = { ewmac_16_64 = "1" }
# instruments = { MES = "1" }
#
# [strategies.tactical]        # target weights in ETFs (docs/etf.md)
# kind = "allocation"
# capital_share = "0.5"
# instruments = { SPY = 1 }
#
# [limits]
# max_order_qty = 1000         # per order, in the instrument's units
#
# [daemon]                     # `tradeledger daemon`: fill sync, settlement, reconciliation
# fill_sync_seconds = 60
# reconcile_seconds = 300
"""




def database_url(settings: Settings, env_dir: Path) -> str:
    """The environment's database URL with its password from where the config says it is."""
    url = settings.db_url or default_db_url(env_dir)
    return secrets.with_password(url, secrets.read_password(env_dir / "config.toml", env_dir, settings.db_password_env,
                                                            settings.db_password_file))


def _connect(url: str) -> sa.engine.Engine:
    engine = db.make_engine(url)
    try:
        with db.read_connection(engine) as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        raise db.connectivity_error(url, exc) from None
    return engine


def open_environment(home: str | Path | None, env: str, db_url: str | None = None) -> Context:
    """Open an initialised environment, refusing a wrong identity or an outdated schema."""
    home = resolve_home(home)
    settings = parse_settings(home / env / "config.toml", env)
    url = db_url or database_url(settings, home / env)
    _refuse_a_lost_database(url, home / env)
    engine = _connect(url)
    try:
        db.check_schema(engine)
    except db.DatabaseError:
        history = environment_history(home / env, url)
        if history and db.current_revision(engine) is None:
            raise db.DatabaseError(_lost_message(url, "has no tradeledger schema", history)) from None
        raise
    environment = Context(home, settings, engine, Ledger(engine))
    db.verify_identity(engine, environment.identity())
    verify_base_currency(engine, home / env / "config.toml", settings.base_currency)
    quick.record_checked(home / env, settings.raw, env)  # the read commands may now skip the checks
    return environment


def environment_history(env_dir: Path, url: str) -> list[str]:
    """What shows that this environment has kept books before: an export, logs, backups; any
    non-empty file but its config, its secrets, the database itself and the simulated broker's
    own state (the broker's side is not the ledger's history)."""
    database = sa.engine.make_url(url).database if url.startswith("sqlite") else None
    skip = {env_dir / "config.toml", env_dir / quick.STAMP} | ({Path(database + x) for x in ("", "-wal", "-shm", "-journal")}
                                       if database else set())
    found = []
    for path in sorted(env_dir.rglob("*")) if env_dir.is_dir() else []:
        if path.is_file() and path not in skip and "secrets" not in path.relative_to(env_dir).parts \
                and not path.name.endswith((".tmp", "-wal", "-shm", "-journal")) \
                and not path.name.startswith("sim.db") and path.stat().st_size > 0:
            found.append(str(path.relative_to(env_dir)))
    return found


def _lost_message(url: str, what: str, history: list[str]) -> str:
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    listed = ", ".join(history[:3]) + (f" and {len(history) - 3} more" if len(history) > 3 else "")
    return (f"the database {shown} {what}, but this environment has kept books ({listed}): restore the "
            "database from a backup; do not run `tradeledger init`, which would start an empty ledger")


def _refuse_a_lost_database(url: str, env_dir: Path, initialising: bool = False) -> None:
    """A missing or empty SQLite file is never silently created or initialised over."""
    if not url.startswith("sqlite"):
        return
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        return
    path = Path(database)
    what = "does not exist" if not path.exists() else "is empty (0 bytes)" if path.stat().st_size == 0 else None
    if what is None:
        return
    history = environment_history(env_dir, url)
    if history:
        raise db.DatabaseError(_lost_message(url, what, history))
    if not initialising:
        raise db.DatabaseError(f"the database {path} {what}: run `tradeledger init` to create the ledger")


def verify_base_currency(engine: sa.engine.Engine, config_path: Path, configured: str) -> None:
    """The base currency is part of the books' identity: stored FX rates, commissions and P&L in
    base are all in it. A database made before it was recorded gets it recorded now."""
    recorded = db.read_meta(engine).get("base_currency")
    if recorded is None:
        db.write_meta(engine, {"base_currency": configured})
    elif recorded != configured:
        raise ConfigError(
            f"{config_path}: base_currency = {configured!r}, but this ledger is kept in {recorded} (recorded at "
            f"init; its FX rates and P&L are in {recorded}): set base_currency = \"{recorded}\" again; a ledger's "
            f"base currency never changes, so for {configured} books start a new environment "
            f"(tradeledger --home OTHER_HOME init --base-currency {configured})")


def init_environment(home: str | Path | None, env: str, broker: str, account: str | None,
                     base_currency: str = "USD", db_url: str | None = None, ib_host: str = "127.0.0.1",
                     ib_port: int = 4002, ib_client_id: int = 1, config_extra: str = "") -> Context:
    """Create (or re-open unchanged) an environment: directory, config, schema, identity, accounts."""
    home = resolve_home(home)
    account = account or (DEFAULT_SIM_ACCOUNT if broker == "sim" and env == "paper" else "")
    check_identity(env, broker, account, ib_port if broker == "ib" else None)
    env_dir = home / env
    bare_url, password = secrets.split_password(db_url) if db_url else (None, None)
    settings = Settings(env, broker, account, base_currency.upper(), bare_url, ib_host, ib_port, ib_client_id,
                        db_password_file=secrets.PASSWORD_FILE if password is not None else None)
    config_path = env_dir / "config.toml"
    if config_path.exists():
        existing = parse_settings(config_path, env)
        if (existing.broker, existing.account) != (broker, account):
            raise ConfigError(f"{config_path} already exists for broker {existing.broker}, account "
                              f"{existing.account}; refusing to overwrite it")
        configured = existing.db_url or default_db_url(env_dir)
        if db_url and bare_url != configured:
            shown = sa.engine.make_url(configured).render_as_string(hide_password=True)
            raise ConfigError(f"{config_path} already uses the database {shown}; refusing to "
                              "initialise another one with --db-url")
        settings = existing
        password = None  # the configured source holds it
    _check_shared_database(home, env, settings.db_url or default_db_url(env_dir))
    raw = settings.raw or tomllib.loads(render_config(settings, config_extra))
    check_apart(home, env, Settings(**{**settings.__dict__, "raw": raw}))
    env_dir.mkdir(parents=True, exist_ok=True)
    (env_dir / "logs").mkdir(exist_ok=True)
    if password is not None:
        secrets.write_private(env_dir / secrets.PASSWORD_FILE, password + "\n")
    url = database_url(settings, env_dir)
    if config_path.exists():
        _refuse_a_lost_database(url, env_dir, initialising=True)
    engine = _connect(url)
    if config_path.exists() and db.current_revision(engine) is None:
        history = environment_history(env_dir, url)
        if history:  # the ledger was lost, not never made: an empty one would hide that
            raise db.DatabaseError(_lost_message(url, "has no tradeledger schema", history))
    db.upgrade(engine)
    environment = Context(home, settings, engine, Ledger(engine))
    db.write_meta(engine, environment.identity() | {"broker": settings.broker,
                                                    "base_currency": settings.base_currency})
    if not config_path.exists():
        text = render_config(settings, config_extra)
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the configuration to write is not valid TOML: {exc}") from None
        secrets.write_private(config_path, text)  # 0600: it names the database and may hold secrets
    environment = dataclasses.replace(environment, settings=parse_settings(config_path, env))  # what is on disk, with every table
    open_base_accounts(environment)
    quick.record_checked(env_dir, environment.settings.raw, env)
    return environment


def open_base_accounts(ctx: Context, date: dt.date = dt.date(2000, 1, 1)) -> None:
    ledger, chart = ctx.ledger, ctx.chart
    with ctx.engine.begin() as conn:
        for name in (chart.cash, chart.opening_balances, chart.deposits, chart.income_adjustments,
                     chart.expense_adjustments, chart.trading(None), chart.commissions(None)):
            ledger.open_account(Account(name, date), conn)
        ledger.open_account(Account(chart.unattributed, date, booking="FIFO"), conn)
        base = ctx.settings.base_currency
        ledger.ensure_commodity(Commodity(base, "currency", None, Decimal(1), date), conn)


def _check_shared_database(home: Path, env: str, url: str) -> None:
    """Two environments may never share one database."""
    for other in ENVIRONMENTS:
        if other == env:
            continue
        path = home / other / "config.toml"
        if path.exists():
            other_settings = parse_settings(path, other)
            if (other_settings.db_url or default_db_url(home / other)) == url:
                raise ConfigError(f"environment {other!r} already uses the database {url}")


def daemon_log_file(home: Path, env: str, raw: dict) -> Path:
    """The daemon's log file: `[daemon] log_file`, relative to the environment's directory."""
    daemon = raw.get("daemon", {}) if isinstance(raw.get("daemon", {}), dict) else {}
    path = Path(str(daemon.get("log_file", "logs/daemon.log"))).expanduser()
    return (path if path.is_absolute() else home / env / path).resolve()


def check_apart(home: Path, env: str, settings: Settings) -> None:
    """Paper and live share no log file and no IB client id (beside no database)."""
    for other in ENVIRONMENTS:
        path = home / other / "config.toml"
        if other == env or not path.exists():
            continue
        theirs = parse_settings(path, other)
        if daemon_log_file(home, other, theirs.raw) == daemon_log_file(home, env, settings.raw):
            raise ConfigError(f"environment {other!r} already logs to {daemon_log_file(home, other, theirs.raw)}: "
                              "give this one its own [daemon] log_file")
        if settings.broker == theirs.broker == "ib" and settings.ib_client_id == theirs.ib_client_id:
            raise ConfigError(f"environment {other!r} already uses IB client id {theirs.ib_client_id}: "
                              "give this one another (--ib-client-id)")
