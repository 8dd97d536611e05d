"""A PostgreSQL copy of a SQLite ledger made by bulk.py, for the read benchmarks; not a test.

An environment is initialised on a schema of its own (`init_environment`: the schema head, the
triggers, the identity), then every table the SQLite file holds rows in is copied over with
COPY, row for row, triggers off for the session (`session_replication_role = replica`: the rows
were checked by `db verify` on SQLite already), the sequences set past the copied ids, ANALYZE.
The maintained `balance` and `lot_balance` rows come over as they are (their deltas stay empty).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

SKIP = {"alembic_version", "tl_meta", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4"}


def schema_url(base_url: str, schema: str) -> str:
    import sqlalchemy as sa

    url = sa.engine.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def copy(sqlite_path: Path, base_url: str, home: Path, account: str, progress=print) -> tuple[str, str]:
    """(schema, URL) of a new schema holding `sqlite_path`'s rows, with a paper environment at `home`."""
    import psycopg

    from tradeledger.engine.setup.environment import init_environment
    from tradeledger.ledger.reading import postgresql_params

    schema = f"bench_read_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(**postgresql_params(base_url), autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    admin.close()
    url = schema_url(base_url, schema)
    try:
        _fill(sqlite_path, url, home, account, progress)
    except BaseException:
        drop(base_url, schema)
        raise
    return schema, url


def _fill(sqlite_path: Path, url: str, home: Path, account: str, progress) -> None:
    import psycopg

    from tradeledger.engine.setup.environment import init_environment
    from tradeledger.ledger.reading import postgresql_params

    init_environment(home, "paper", "sim", account, db_url=url).engine.dispose()
    source = sqlite3.connect(sqlite_path)
    tables = [name for (name,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if name not in SKIP]
    started = time.perf_counter()
    conn = psycopg.connect(**postgresql_params(url))
    with conn:
        conn.execute("SET session_replication_role = replica")  # the copied rows' triggers stay off
        for table in tables:
            conn.execute(f"DELETE FROM {table}")
        for table in tables:
            columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
            listed = ", ".join(columns)
            n = 0
            with conn.cursor().copy(f"COPY {table} ({listed}) FROM STDIN") as out:
                for row in source.execute(f"SELECT {listed} FROM {table}"):
                    out.write_row(row)
                    n += 1
            if n:
                progress(f"  {table}: {n:,} rows ({time.perf_counter() - started:.0f} s)")
        for sequence, table in conn.execute(
                "SELECT s.relname, t.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
                "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = s.relnamespace "
                "WHERE s.relkind = 'S' AND n.nspname = current_schema()").fetchall():
            conn.execute(f"SELECT setval('{sequence}', (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)")
        if "txn" in tables:  # txn ids come from their own sequence (store._allocate_ids)
            conn.execute("SELECT setval('txn_id_seq', (SELECT COALESCE(MAX(id), 0) + 1 FROM txn), false)")
    conn = psycopg.connect(**postgresql_params(url), autocommit=True)  # `with` closed the first
    conn.execute("ANALYZE")
    conn.close()
    source.close()


def drop(base_url: str, schema: str) -> None:
    import psycopg

    from tradeledger.ledger.reading import postgresql_params

    admin = psycopg.connect(**postgresql_params(base_url), autocommit=True)
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()
