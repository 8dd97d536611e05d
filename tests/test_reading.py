"""The read path without SQLAlchemy gives exactly what the full path gives, on SQLite and PostgreSQL.

- `ledger.reading.Reader` (raw sqlite3 / psycopg) against `Ledger` (SQLAlchemy): balances,
  positions, lots, commodities, over random ledgers (test_ledger_properties.py's independent model
  of fills, settlements, lots and deposits);
- `quick_positions` against `reports.pnl.positions` on a demo environment (futures with marks,
  ETFs in lots, an unattributed trade), for every strategy filter;
- when it cannot vouch for the environment (a config changed since it was checked, another schema
  revision or identity), the fast path steps aside and the command says what the full path says.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from tradeledger.cli import main
from tradeledger.ledger import db
from tradeledger.ledger.reading import open_reader, shown_url
from tradeledger.ledger.store import Ledger


def _sibling(name: str):
    """A module of this directory (pytest imports tests by path, not as a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(f"_reading_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# The random ledgers of test_ledger_properties.py: its model, written apart from the engine.
_model = _sibling("test_ledger_properties")
PROPERTY, STRATEGIES, events = _model.PROPERTY, _model.STRATEGIES, _model.events
book_all, build, setup_example = _model.book_all, _model.build, _model.setup_example
PG_URL = os.environ.get("TRADELEDGER_TEST_PG_URL")


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@PROPERTY
@given(ops=events, batch=st.booleans())
def test_the_raw_reader_answers_as_the_ledger_does(ledger: Ledger, ops, batch):
    names = setup_example(ledger)
    book_all(ledger, build(names, ops), batch)
    root = f"Assets:Broker:{names.ns}"
    with open_reader(_url(ledger.engine)) as reader:
        assert reader.revision() == db.HEAD
        assert reader.balances(prefix=root) == ledger.balances(prefix=root)
        assert reader.balances() == ledger.balances()
        assert reader.positions(prefix=root) == ledger.positions(prefix=root)
        assert reader.count() == ledger.count()
        assert len(reader.account_names()) == len(ledger.accounts())
        assert reader.commodities() == [(c.name, c.kind, c.currency, c.multiplier) for c in ledger.commodities()]
        for s in range(STRATEGIES):
            expected = [(cost.number, cost.currency, cost.date, cost.label, units)
                        for cost, units in ledger.lots(names.holdings(s), "SPY")]
            assert reader.lots(names.holdings(s), "SPY") == expected


def test_the_reader_sees_one_snapshot(ledger: Ledger):
    """Rows booked after the reader's first read are not in its answers (one read transaction)."""
    names = setup_example(ledger)
    root = f"Assets:Broker:{names.ns}"
    book_all(ledger, build(names, [(("deposit", 500), 1)]), batch=False)
    with open_reader(_url(ledger.engine)) as reader:
        before = reader.balances(prefix=root)
        book_all(ledger, build(names, [(("deposit", 700), 1), (("deposit", 900), 1)])[1:], batch=False)
        assert reader.balances(prefix=root) == before
    assert ledger.balances(prefix=root) != before


URL_PARTS = st.tuples(
    st.sampled_from(["sqlite", "sqlite+pysqlite", "postgresql+psycopg", "postgresql"]),
    st.none() | st.text("ab%@:/?+ 4", max_size=6),  # user
    st.none() | st.text("ab%@:/?+ 4", max_size=6),  # password
    st.none() | st.sampled_from(["", "127.0.0.1", "db.example", "[::1]", "h%20x"]),
    st.none() | st.sampled_from(["", "5432", "05432", "x1"]),
    st.none() | st.text("ab%/ 4.+?", max_size=8),  # database
    st.none() | st.lists(st.tuples(st.sampled_from(["options", "a", "b"]), st.text("=%& x-", max_size=5)), max_size=3))


def _url_text(scheme, user, password, host, port, database, query) -> str:
    auth = "" if user is None else user + ("" if password is None else ":" + password) + "@"
    text = f"{scheme}://{auth}{host or ''}" + ("" if port is None else ":" + port)
    text += "" if database is None else "/" + database
    return text + ("" if query is None else "?" + "&".join(f"{k}={v}" for k, v in query))


@given(parts=URL_PARTS)
def test_a_url_is_shown_as_sqlalchemy_shows_it(parts):
    """status's `database` on the read path: SQLAlchemy's rendering with the password hidden, or None."""
    import sqlalchemy as sa

    url = _url_text(*parts)
    shown = shown_url(url)
    if shown is not None:
        assert shown == sa.engine.make_url(url).render_as_string(hide_password=True), url
    for fixed in ("sqlite:////tmp/x/tradeledger.db", "postgresql+psycopg://postgres@127.0.0.1:5432/test",
                  "postgresql+psycopg://u:s3cret@h:5432/db?options=-csearch_path%3Dt_1"):
        assert shown_url(fixed) == sa.engine.make_url(fixed).render_as_string(hide_password=True)


def test_urls_the_reader_cannot_open_as_sqlalchemy_would_give_none(tmp_path):
    assert open_reader(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert open_reader("sqlite://") is None
    assert open_reader("mysql://x@localhost/db") is None
    assert open_reader("postgresql+psycopg://x@localhost:notaport/db") is None


# -- the command: fast path and full path print the same --------------------------------------

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo(request, tmp_path_factory):
    """A demo environment (2 days: futures marked, ETFs in lots, a trade at the broker's screen)."""
    from tradeledger.engine.setup.demo import run_demo

    home = tmp_path_factory.mktemp("reading") / "home"
    if request.param == "sqlite":
        url = f"sqlite:///{home.parent / 'demo.db'}"
    else:
        url = _pg_schema(request)
    run_demo(home, 2, db_url=url).close()
    return home, url


def _pg_schema(request) -> str:
    """A URL on a schema of its own, dropped after the module (as conftest's `engine` does)."""
    import sqlalchemy as sa

    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("TRADELEDGER_TEST_PG_URL is not set under CI: the PostgreSQL tests must run")
        pytest.skip("TRADELEDGER_TEST_PG_URL not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop():
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    request.addfinalizer(drop)
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _full(home, url, strategy=None):
    from tradeledger.engine.setup.environment import open_environment
    from tradeledger.engine.setup.session import Session
    from tradeledger.reports import pnl

    env = open_environment(home, "paper", url)  # and records the checked config's stamp
    try:
        return pnl.positions(Session(env), strategy)
    finally:
        env.engine.dispose()


def test_fast_positions_equal_the_full_path_for_every_filter(demo):
    from tradeledger.reports.positions import quick_positions

    home, url = demo
    rows = _full(home, url)
    assert {r["strategy"] for r in rows} >= {"trend_fast", "etf_trend", "unattributed"}
    assert any(r["mark"] is not None for r in rows) and any(r["contract"] == "SPY" for r in rows)
    assert quick_positions(home, "paper", url) == rows
    for strategy in sorted({r["strategy"] for r in rows}) + ["trend_slow"]:
        assert quick_positions(home, "paper", url, strategy) == _full(home, url, strategy)
    assert quick_positions(home, "paper", url, "nobody") is None  # the full path names the strategies


def test_the_command_prints_the_same_either_way(demo):
    home, url = demo
    _full(home, url)
    stamp = home / "paper" / ".config-checked"
    fast = CliRunner().invoke(main, ["--home", str(home), "--db-url", url, "positions", "--json"])
    table = CliRunner().invoke(main, ["--home", str(home), "--db-url", url, "positions"])
    stamp.unlink()  # the next command cannot vouch for the config: the full path
    full = CliRunner().invoke(main, ["--home", str(home), "--db-url", url, "positions", "--json"])
    assert stamp.exists()  # ... which checked it and recorded it again
    assert fast.exit_code == full.exit_code == 0, fast.output + full.output
    assert fast.output == full.output and json.loads(fast.output)
    full_table = CliRunner().invoke(main, ["--home", str(home), "--db-url", url, "positions"])
    assert table.output == full_table.output


def test_a_changed_config_is_checked_again_before_anything_is_read(demo, tmp_path):
    from tradeledger.reports.positions import quick_positions

    home, url = demo
    _full(home, url)
    config = home / "paper" / "config.toml"
    original = config.read_text()
    try:
        config.write_text(original + "\n[instruments.ZZZ]\ntype = \"bond\"\ncurrency = \"USD\"\n")
        assert quick_positions(home, "paper", url) is None
        result = CliRunner().invoke(main, ["--home", str(home), "--db-url", url, "positions", "--json"])
        assert result.exit_code == 1 and "instruments.ZZZ.type" in result.output, result.output
        config.write_text(original + "\n[instruments.ZZZ]\ntype = \"share\"\ncurrency = \"USD\"\n")
        assert quick_positions(home, "paper", url) is None  # valid, but not checked yet
        _full(home, url)
        assert quick_positions(home, "paper", url) == _full(home, url)
        config.write_text(config.read_text() + "\n# a comment: the parsed config, all the checks read, is the same\n")
        assert quick_positions(home, "paper", url) == _full(home, url)
    finally:
        config.write_text(original)
        _full(home, url)


def test_the_stamp_covers_the_name_rules_the_checks_apply():
    """The config checks map names by ledger/accounts.py, which applies ledger/names.py's rules: a
    change to either is a change to the checking code, and the stamp no longer vouches."""
    from tradeledger.engine.setup import quick

    keyed = {(part, name) for part, name, _size, _mtime in quick._code_key()}
    assert {("ledger/accounts.py", "accounts.py"), ("ledger/names.py", "names.py")} <= keyed
    assert ("engine/setup", "config.py") in keyed


def test_another_identity_or_schema_revision_takes_the_full_path(demo, monkeypatch):
    from tradeledger.engine.setup import quick
    from tradeledger.reports.positions import quick_positions

    home, url = demo
    _full(home, url)
    assert quick_positions(home, "paper", url) is not None
    monkeypatch.setattr(db, "HEAD", "9999")  # the code needs another revision (db.head_revision)
    assert quick_positions(home, "paper", url) is None
    monkeypatch.undo()
    assert quick.open_for_reading(home, "live", url) is None  # no such environment
    assert quick.open_for_reading(home / "elsewhere", "paper", url) is None


def test_positions_on_a_checked_environment_import_no_sqlalchemy_pydantic_or_engine_tables(demo):
    home, url = demo
    _full(home, url)
    probe = ("import json, sys\nsys.argv = ['tradeledger', *sys.argv[1:]]\nfrom tradeledger.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "--home", str(home), "--db-url", url, "positions", "--json"],
                          capture_output=True, text=True, timeout=120)
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert json.loads(proc.stdout)
    driver = () if url.startswith("postgresql") else ("psycopg",)  # PostgreSQL's reads go through psycopg
    heavy = {m for m in loaded if m.split(".")[0] in ("sqlalchemy", "pydantic", "alembic", "pandas", *driver)}
    assert not heavy, sorted(heavy)
    assert not {m for m in loaded if m in ("tradeledger.engine.tables", "tradeledger.ledger.store",
                                           "tradeledger.engine.setup.config", "tradeledger.reports.pnl")}
