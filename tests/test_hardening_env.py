"""An unlucky user's and an attacker's mistakes around the books: each ends as one clear line.

Issue 10's cases, through the real `tradeledger` command on real databases: a balance beyond
SQLite's 64-bit SUM, a base currency changed under the books, passwords in URLs and files,
`db verify` (and `check`) on sound, bypassed and corrupted databases, a lost database in an
environment that has history, and every config and input mistake the issue lists.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import stat
from decimal import Decimal as D
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.broker.base import BrokerError, Contract
from tradeledger.broker.simexchange import SimExchange
from tradeledger.cli import database_failure, main
from tradeledger.engine.setup.environment import open_environment
from tradeledger.ledger.db import mask_secrets
from tradeledger.ledger.verify import verify

CASH = "Assets:Broker:DU1234567:Cash"


def run(*args: str, env: dict | None = None):
    return CliRunner(env=env).invoke(main, list(args))


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "internal error" not in line and "Traceback" not in result.output, line
    for fragment in fragments:
        assert fragment in line, line
    return line


def database_file(db_url: str) -> Path:
    return Path(sa.engine.make_url(db_url).database)


@pytest.fixture
def home(tmp_path, db_url) -> Path:
    home = tmp_path / "home"
    ok(run("--home", str(home), "init", "--db-url", db_url))
    return home


# -- balances past 64 bits, through every command the issue names ------------------------------

def test_two_deposits_of_five_billion_yen_and_every_command_reads(home):
    for n in range(2):  # two deposits of one amount on one day: the second says it is one (--again)
        ok(run("--home", str(home), "adjust", "cash", "JPY", "5000000000", "--kind", "deposit", "--reason", "a",
               "--yes", *(["--again"] if n else [])))
    accounts = json.loads(ok(run("--home", str(home), "accounts", "--json")).stdout)
    cash = next(a for a in accounts if a["account"] == CASH)
    assert D(str(cash["balances"]["JPY"])) == D(10**10)
    assert json.loads(ok(run("--home", str(home), "check", "--json")).stdout)["ok"] is True
    for command in (["pnl"], ["positions"], ["status", "--no-broker"], ["db", "verify"]):
        ok(run("--home", str(home), *command))
    reconciled = run("--home", str(home), "reconcile")  # a break (the sim holds no yen), not an overflow
    assert "overflow" not in reconciled.output and "internal error" not in reconciled.output


# -- the base currency is part of the books' identity ------------------------------------------

def test_a_changed_base_currency_is_refused_with_the_way_out(home):
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text().replace('base_currency = "USD"', 'base_currency = "EUR"'))
    line = one_line_error(run("--home", str(home), "status", "--no-broker"), str(config), "kept in USD",
                          'set base_currency = "USD" again', "--base-currency EUR")
    assert "EUR" in line
    config.write_text(config.read_text().replace('base_currency = "EUR"', 'base_currency = "USD"'))
    ok(run("--home", str(home), "status", "--no-broker"))


# -- secrets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("url, fragment", [
    ("nosuchdriver://trader:hunter2@localhost/db", "invalid database URL 'nosuchdriver://trader:***@localhost/db'"),
    ("postgresql+psycopg://trader:hunter2@localhost:notaport/db", "the port must be a number"),
])
def test_a_bad_database_url_never_shows_its_password(home, url, fragment):
    line = one_line_error(run("--home", str(home), "--db-url", url, "status"), fragment)
    assert "hunter2" not in line


def test_masking_covers_urls_and_key_values():
    assert mask_secrets("postgresql://u:p%40ss@h/db password=x&token=y ok") == \
        "postgresql://u:***@h/db password=***&token=*** ok"
    assert mask_secrets("nothing secret: a://host/db") == "nothing secret: a://host/db"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_password_goes_to_a_private_file_never_into_config(tmp_path, db_url):
    home = tmp_path / "home"
    with_password = sa.engine.make_url(db_url).set(password="hunter2").render_as_string(hide_password=False)
    ok(run("--home", str(home), "init", "--db-url", with_password))
    config, secret = home / "paper" / "config.toml", home / "paper" / "secrets" / "db_password"
    assert "hunter2" not in config.read_text() and 'db_password_file = "secrets/db_password"' in config.read_text()
    assert secret.read_text() == "hunter2\n"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    environment = open_environment(home, "paper")
    assert environment.engine.url.password == "hunter2"  # the URL used carries it
    status = ok(run("--home", str(home), "status", "--no-broker", "--json")).stdout
    assert "hunter2" not in status
    ok(run("--home", str(home), "init", "--db-url", with_password))  # again: the same database
    secret.chmod(0o644)
    one_line_error(run("--home", str(home), "status"), "readable by others", f"chmod 600 {secret}")
    secret.chmod(0o600)
    # or from an environment variable
    config.write_text(config.read_text().replace('db_password_file = "secrets/db_password"',
                                                 'db_password_env = "TL_TEST_DB_PASSWORD"'))
    one_line_error(run("--home", str(home), "status"), "db_password_env names $TL_TEST_DB_PASSWORD, which is not set")
    ok(run("--home", str(home), "status", "--no-broker", env={"TL_TEST_DB_PASSWORD": "hunter2"}))


def test_config_is_written_private(home):
    assert stat.S_IMODE((home / "paper" / "config.toml").stat().st_mode) == 0o600


# -- db verify ---------------------------------------------------------------------------------

def test_verify_a_sound_ledger(home):
    ok(run("--home", str(home), "adjust", "cash", "USD", "100", "--kind", "deposit", "--reason", "a", "--yes"))
    ok(run("--home", str(home), "adjust", "reverse", "2", "--reason", "undo", "--yes"))
    report = json.loads(ok(run("--home", str(home), "db", "verify", "--json")).stdout)
    assert report["ok"] is True and report["findings"] == [] and report["entries"] >= 2


def _bypass(engine, statements: list[str]) -> None:
    """What no ordinary caller can do: write with the database's rules switched off."""
    if engine.dialect.name == "sqlite":
        conn = sqlite3.connect(engine.url.database)
        conn.execute("PRAGMA writable_schema = 0")
        triggers = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
        return
    with engine.begin() as conn:
        conn.exec_driver_sql("SET session_replication_role = replica")  # no triggers, no foreign keys
        for statement in statements:
            conn.exec_driver_sql(statement)


def test_verify_and_check_find_what_bypassed_the_rules(home):
    ok(run("--home", str(home), "adjust", "cash", "USD", "100", "--kind", "deposit", "--reason", "a", "--yes"))
    environment = open_environment(home, "paper")
    with environment.engine.connect() as conn:
        cash = conn.exec_driver_sql(f"SELECT id FROM account WHERE name = '{CASH}'").scalar_one()
        entry, ts = conn.exec_driver_sql("SELECT id, ts FROM txn").first()
    _bypass(environment.engine, [
        "INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
        f"VALUES ({entry}, '{ts}', {cash}, 'USD', 3750000000, 3750000000, 'USD')",  # unbalances the entry
        "INSERT INTO posting (txn_id, ts, account_id, commodity, units, weight, weight_currency) "
        f"VALUES (9003, '{ts}', {cash}, 'USD', 1000000000, 1000000000, 'USD')",  # no header
        "INSERT INTO txn (id, ts, kind, narration, links, meta, fingerprint, reverses_id, booked_at) "
        f"VALUES (9100, '{ts}', 'reversal', 'x', '', '{{}}', 'x', 9999, '{ts}')",  # reverses nothing, no postings
    ])
    result = verify(environment.ledger)
    found = {(f.check, f.detail) for f in result.findings}
    assert ("entries", f"entry {entry} does not balance: 3.75 USD") in found
    assert ("entries", "entry 9100 has no postings") in found
    assert ("links", "entry 9100 reverses entry 9999, which does not exist") in found
    assert any(check == "storage" and "9003" in detail for check, detail in found)
    line = run("--home", str(home), "check")
    assert line.exit_code == 1 and "NOT CLEAN: the database fails verification" in line.output
    assert run("--home", str(home), "db", "verify").exit_code == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_check_is_not_clean_on_a_corrupted_file(home, db_url):
    ok(run("--home", str(home), "adjust", "cash", "USD", "100", "--kind", "deposit", "--reason", "a", "--yes"))
    path = database_file(db_url)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'posting' "
                        "AND sql IS NOT NULL ORDER BY name LIMIT 1").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as fh:  # scribble over an index page: the table still reads, the index lies
        fh.seek((page - 1) * size + 8)
        fh.write(b"\x00" * 64)
    result = run("--home", str(home), "check")
    assert result.exit_code == 1 and "clean:" not in result.output.replace("NOT CLEAN", "")
    assert "storage" in result.output


# -- a lost database ---------------------------------------------------------------------------

@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_lost_database_is_never_initialised_over_when_there_is_history(home, db_url, damage):
    ok(run("--home", str(home), "adjust", "cash", "USD", "100", "--kind", "deposit", "--reason", "a", "--yes"))
    ok(run("--home", str(home), "export", "beancount"))
    path = database_file(db_url)
    gc.collect()  # the commands above ran in this process: their connections to the file are gone
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b"")
    for command in (["status"], ["reconcile"], ["init"]):
        line = one_line_error(run("--home", str(home), *command), "restore the database from a backup",
                              "ledger.beancount", "do not run `tradeledger init`")
        assert "does not exist" in line or "empty" in line or "no tradeledger schema" in line


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_missing_database_without_history_points_to_init(home, db_url):
    path = database_file(db_url)
    path.unlink()
    one_line_error(run("--home", str(home), "status"), "does not exist: run `tradeledger init`")
    assert not path.exists()  # not created by looking


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_lost_postgresql_schema_with_history(home, db_url):
    ok(run("--home", str(home), "export", "beancount"))
    (home / "paper" / "ledger.beancount").write_text("; kept books\n")
    engine = sa.create_engine(db_url)
    schema = sa.engine.make_url(db_url).query["options"].split("=")[1]
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    one_line_error(run("--home", str(home), "status"), "has no tradeledger schema", "restore the database")
    one_line_error(run("--home", str(home), "init"), "restore the database")


# -- config and input mistakes: one line naming the file, the key, what is allowed --------------

INSTRUMENT = '[instruments.ES]\ntype = "future"\ncurrency = "USD"\nmultiplier = 50\nexchange = "CME"\n'


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("extra, fragments", [
    ('[strategies]\nx = "oops"\n', ["strategies.x must be a table like [strategies.x], not the string 'oops'"]),
    (INSTRUMENT + "[limits]\ninstruments = {ES = 5}\n",
     ["limits.instruments.ES must be a table like [limits.instruments.ES], not the number 5"]),
    (INSTRUMENT + 'expiry_day = "x"\n', ["instruments.ES.expiry_day must be a whole number, not the string 'x'"]),
    (INSTRUMENT + "expiry_day = 40\n", ["instruments.ES.expiry_day must be at most 31"]),
    (INSTRUMENT + '[strategies.s]\ninstruments = {ES = "x"}\n', ["strategies.s.instruments.ES", "not a number"]),
    (INSTRUMENT + '[limits.instruments.ES]\nhalt = "yes"\n', ["limits.instruments.ES.halt must be true or false"]),
    ('[portfolio]\ncapital = [1]\n', ["portfolio.capital must be a number, not the list [1]"]),
    ("[daemon]\nfill_sync_seconds = 0\n", ["daemon.fill_sync_seconds must be a positive whole number"]),
])
def test_config_mistakes_end_as_one_line(home, extra, fragments):
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text() + extra)
    for command in (["status", "--no-broker"], ["targets", "list"]):
        one_line_error(run("--home", str(home), *command), str(config), *fragments)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_binary_file_to_signals_import_names_the_file(home, tmp_path):
    binary = tmp_path / "forecasts.csv"
    binary.write_bytes(b"date,strategy\n\xd0\xff\xfe\x00garbage")
    one_line_error(run("--home", str(home), "signals", "import", str(binary)), str(binary), "not a UTF-8 text file")


def test_a_traded_contracts_currency_cannot_change(tmp_path):
    exchange = SimExchange(tmp_path / "sim.db")
    exchange.add_contract(Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612"))
    with pytest.raises(BrokerError) as excinfo:
        exchange.add_contract(Contract("MESZ26", "FUT", "MES", "CME", "EUR", D(5), "202612"))
    message = str(excinfo.value)
    assert "Contract(" not in message and "already traded as FUT in USD" in message and "EUR" in message


def test_a_full_disk_is_one_line_saying_what_to_do(tmp_path):
    """A real SQLITE_FULL (the file may not grow), from the simulator's raw connection and from
    the ledger's engine, each ends as one line that says to free space."""
    raw = sqlite3.connect(tmp_path / "full.db")
    raw.execute("CREATE TABLE t (x BLOB)")
    raw.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as excinfo:
        raw.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert "free space" in database_failure(excinfo.value)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    with pytest.raises(sa.exc.OperationalError) as excinfo:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA max_page_count = 3")
            conn.exec_driver_sql("INSERT INTO t VALUES (zeroblob(100000))")
    line = database_failure(excinfo.value)
    assert line.startswith("database error: database or disk is full") and "free space" in line
    assert "\n" not in line
