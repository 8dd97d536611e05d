"""Shared fixtures: real databases on both backends.

`engine` runs a test once on a fresh SQLite file and once on PostgreSQL, in a schema of its own
that is dropped afterwards. PostgreSQL comes from TRADELEDGER_TEST_PG_URL; without it the
PostgreSQL half is skipped locally, and fails under CI (CI=true) so that it can never be
skipped silently there.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import sqlalchemy as sa

from tradeledger.ledger import db
from tradeledger.ledger.store import Ledger

PG_URL = os.environ.get("TRADELEDGER_TEST_PG_URL")


def pg_schema_url(base_url: str, schema: str) -> str:
    """A URL whose connections use `schema` first (psycopg passes `options` to the server)."""
    url = sa.engine.make_url(base_url)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def _pg_engine(request):
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("TRADELEDGER_TEST_PG_URL is not set under CI: the PostgreSQL tests must run")
        pytest.skip("TRADELEDGER_TEST_PG_URL not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = db.make_engine(pg_schema_url(PG_URL, schema))

    def drop():
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    request.addfinalizer(drop)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A database URL on each backend, with the ledger schema not yet created."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return _pg_engine(request).url.render_as_string(hide_password=False)


@pytest.fixture(params=["postgresql"])
def pg_url(request):
    """A PostgreSQL URL only (a schema of its own): for what happens only between hosts, such as two
    processes whose clocks disagree on one database (a SQLite file has one host's clock)."""
    return _pg_engine(request).url.render_as_string(hide_password=False)


@pytest.fixture
def engine(db_url):
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine):
    return Ledger(engine)


def pytest_collection_modifyitems(items):
    """Every test that runs on PostgreSQL (a fixture parametrized "postgresql") is marked `pg`, so
    `-m pg` runs exactly the PostgreSQL half and `-m "not pg"` the rest; `slow` is set by hand."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values():
            item.add_marker(pytest.mark.pg)


def _wait_for(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


@pytest.fixture
def wait_for():
    """Await a condition instead of sleeping a fixed time: `assert wait_for(lambda: ..., timeout)`."""
    return _wait_for
