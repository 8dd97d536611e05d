"""Opening the ledger database: engines, migrations, and the identity the database records.

SQLite (the default) runs in WAL mode with foreign keys on, a busy timeout, and every write
transaction begun IMMEDIATE, so that two writers queue instead of failing half-way. PostgreSQL
is any SQLAlchemy URL (`postgresql+psycopg://...`).

A database records which environment (paper or live) and which broker account it belongs to
in `tl_meta`; `open_database` refuses a database whose schema is behind the code (naming
`tradeledger db upgrade`) or whose recorded identity differs from the one asked for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tradeledger.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# SQLAlchemy (and the tables, ledger/schema.py) are imported by the functions that use them: the
# read path without SQLAlchemy (ledger/reading.py, the read commands) takes HEAD, DatabaseError
# and mask_secrets from here.

MIGRATIONS = Path(__file__).parent / "migrations"
_PACKAGED_MIGRATIONS = MIGRATIONS

# The head of the packaged migration chain. Opening a database compares its revision with this
# constant, so that no command imports alembic (about a tenth of a second) just to start;
# tests/test_migrations_head.py holds it equal to the chain alembic reads from versions/.
HEAD = "0017"


class DatabaseError(UserError, RuntimeError):
    """The database cannot be used as asked; the message says what to do."""


_SECRET = re.compile(r"(://[^:/@\s]*:)[^@\s]+@|((?:password|passwd|pwd|secret|token)\s*=\s*)[^\s&;,'\"]+", re.I)


def mask_secrets(text: str) -> str:
    """Any message with its secrets masked: a URL's password (`user:***@host`) and key=value
    passwords, secrets and tokens. Every line a user or a log sees passes through this."""
    return _SECRET.sub(lambda m: (m.group(1) + "***@") if m.group(1) else (m.group(2) + "***"), text)


def make_engine(url: str, synchronous: str = "FULL") -> Engine:
    """An engine for `url`, with SQLite set up for safe concurrent use."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
        why = str(exc)
        if isinstance(exc, ValueError) and "int()" in why:
            why = "the port must be a number (host:5432)"
        raise DatabaseError(mask_secrets(f"invalid database URL {url!r}: {why}")) from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, synchronous)
    return engine


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA trusted_schema = ON")  # the posting trigger reads pragma_foreign_keys
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA cache_size = -65536")  # 64 MB: keeps the posting indexes in memory
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        # IMMEDIATE takes the write lock up front, so no lock upgrade can fail mid-transaction
        # (WAL answers a late upgrade with SQLITE_BUSY_SNAPSHOT, without waiting). Readers that
        # say so (`read_connection`) begin DEFERRED and never block a writer.
        if conn.get_execution_options().get("tl_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def read_connection(engine: Engine):
    """A connection for reading only, each of its transactions one snapshot on both backends: on
    SQLite a deferred read transaction (it takes no write lock); on PostgreSQL REPEATABLE READ, where
    READ COMMITTED would let each statement see the latest commit (the planner read positions and
    the orders in flight on either side of a fill's booking, and sent that fill again)."""
    conn = engine.connect()
    conn.execution_options(tl_read_only=True)
    if engine.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def _config():
    from alembic.config import Config

    from tradeledger.logs import quiet

    quiet("alembic")  # its migration steps stay out of the user's terminal (tradeledger/logs.py)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def chain_head() -> str:
    """The head revision as alembic reads it from the migration scripts (imports alembic)."""
    return _script().get_current_head()


def head_revision() -> str:
    """The revision this code needs: the packaged constant, or the chain of another directory."""
    return HEAD if MIGRATIONS == _PACKAGED_MIGRATIONS else chain_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is stamped with (alembic's own table), None when unstamped."""
    import sqlalchemy as sa

    with read_connection(engine) as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    if len(rows) > 1:
        raise DatabaseError(f"the database has several schema heads {sorted(rows)}: it was not made by tradeledger")
    return rows[0] if rows else None


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _unknown_revision(revision: str) -> DatabaseError:
    return DatabaseError(f"the database schema is at revision {revision!r}, which this version of tradeledger "
                         "does not know (made by a newer tradeledger?): use a tradeledger that knows it")


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the code's head revision; returns (before, after)."""
    before = current_revision(engine)
    if before is not None and not _known(before):
        raise _unknown_revision(before)
    config = _config()
    from alembic import command

    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, head_revision()


def check_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current is None:
        raise DatabaseError("the database has no tradeledger schema: run `tradeledger init` "
                            "(or `tradeledger db upgrade`)")
    if current != head and not _known(current):
        raise _unknown_revision(current)
    if current != head:
        raise DatabaseError(f"the database schema is at revision {current}, the code needs {head}: "
                            "run `tradeledger db upgrade`")


def read_meta(engine: Engine) -> dict[str, str]:
    import sqlalchemy as sa
    from tradeledger.ledger import schema

    with read_connection(engine) as conn:
        rows = conn.execute(sa.select(schema.meta.c.key, schema.meta.c.value)).all()
    return {key: value for key, value in rows}


def write_meta(engine: Engine, values: dict[str, str]) -> None:
    """Record identity values; an existing key may not be changed (identity is permanent)."""
    import sqlalchemy as sa
    from tradeledger.ledger import schema

    with engine.begin() as conn:
        existing = dict(conn.execute(sa.select(schema.meta.c.key, schema.meta.c.value)).all())
        for key, value in values.items():
            if key in existing:
                if existing[key] != value:
                    raise DatabaseError(f"the database is recorded with {key} = {existing[key]!r}, "
                                        f"not {value!r}")
                continue
            conn.execute(schema.meta.insert().values(key=key, value=value))


def verify_identity(engine: Engine, expected: dict[str, str]) -> None:
    recorded = read_meta(engine)
    for key, value in expected.items():
        have = recorded.get(key)
        if have is None:
            raise DatabaseError(f"the database records no {key}: it was not made by `tradeledger init`")
        if have != value:
            raise DatabaseError(f"this database belongs to {key} {have!r}, not {value!r}: refusing to "
                                "open it (paper and live never share a database)")


def connectivity_error(url: str, exc: Exception) -> DatabaseError:
    import sqlalchemy as sa

    safe = sa.engine.make_url(url).render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    return DatabaseError(f"cannot reach the database at {safe}: {reason}")
