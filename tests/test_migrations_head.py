"""The schema head the code checks at start (a constant, so that no command imports alembic)
is the head of the migration chain alembic reads, and opening a database leaves alembic unloaded."""

from __future__ import annotations

import subprocess
import sys

from tradeledger.ledger import db


def test_head_constant_is_the_chain_head():
    assert db.HEAD == db.chain_head()
    assert db.head_revision() == db.HEAD


def test_a_fresh_database_is_at_the_head(engine):
    assert db.current_revision(engine) == db.HEAD
    db.check_schema(engine)


def test_an_unstamped_database_has_no_revision(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert db.current_revision(engine) is None
    engine.dispose()


def test_checking_a_schema_does_not_import_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    code = ("import sys; from tradeledger.ledger import db; e = db.make_engine(sys.argv[1]); db.check_schema(e); "
            "print(db.current_revision(e), 'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True).stdout
    assert out.split() == [db.HEAD, "False"]
