"""The `tradeledger` command: init, status, accounts, db upgrade, export, check.

Mostly through click's CliRunner (in process), and a few times as a real subprocess, so that
the console script itself is covered. Every user mistake must end as exactly one line on stderr
starting with `error:`, a non-zero exit code, and no traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
from decimal import Decimal as D
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.setup.environment import open_environment
from tradeledger.ledger import db
from tradeledger.ledger.model import Posting, Transaction

UTC = dt.timezone.utc
CASH = "Assets:Broker:DU1234567:Cash"
BASE_ACCOUNTS = 8  # cash, opening balances, deposits, income/expense adjustments, unattributed x3


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def user_error(result, *fragments: str) -> str:
    """One line `error: ...` on stderr, a non-zero exit, no traceback; returns the line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in result.output
    assert "internal error" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    ok(run("--home", str(home), "init"))
    return home


def book_deposit(home: Path, amount: str, db_url: str | None = None) -> None:
    environment = open_environment(home, "paper", db_url)
    environment.ledger.book(Transaction(
        dt.datetime(2026, 12, 1, 15, tzinfo=UTC), "deposit", "deposit",
        (Posting(CASH, D(amount), "USD"), Posting("Equity:Deposits", -D(amount), "USD"))))
    environment.engine.dispose()


# -- the commands ------------------------------------------------------------------------------

def test_init_status_accounts_check(tmp_path):
    home = tmp_path / "home"
    info = json.loads(ok(run("--home", str(home), "init", "--json")).stdout)
    assert info["environment"] == "paper" and info["broker"] == "sim" and info["account"] == "DU1234567"
    assert info["revision"] == db.head_revision()
    assert (home / "paper" / "config.toml").is_file() and (home / "paper" / "tradeledger.db").is_file()
    assert (home / "paper" / "logs").is_dir()

    status = json.loads(ok(run("--home", str(home), "status", "--json")).stdout)
    assert status["environment"] == "paper" and status["account"] == "DU1234567"
    assert status["schema_revision"] == db.head_revision()
    assert (status["accounts"], status["transactions"], status["postings"]) == (BASE_ACCOUNTS, 0, 0)
    text = ok(run("--home", str(home), "status")).stdout
    assert "DU1234567" in text and "paper" in text

    book_deposit(home, "2500.50")
    accounts = json.loads(ok(run("--home", str(home), "accounts", "--json")).stdout)
    by_name = {a["account"]: a for a in accounts}
    assert len(by_name) == BASE_ACCOUNTS
    assert by_name[CASH]["balances"] == {"USD": "2500.5"}
    assert by_name["Equity:Deposits"]["balances"] == {"USD": "-2500.5"}
    assert by_name["Assets:Broker:DU1234567:Unattributed"]["booking"] == "FIFO"
    assert "2500.50 USD" in ok(run("--home", str(home), "accounts")).stdout

    checked = ok(run("--home", str(home), "check"))
    assert "clean: 1 entries" in checked.stdout
    assert (home / "paper" / "ledger.beancount").is_file()
    report = json.loads(ok(run("--home", str(home), "check", "--json")).stdout)
    assert report["ok"] is True and report["entries"] == 1 and report["differences"] == []
    status = json.loads(ok(run("--home", str(home), "status", "--json")).stdout)
    assert status["transactions"] == 1 and status["ledger_file"].endswith("ledger.beancount")


def test_export_and_check_of_a_tampered_file(home, tmp_path):
    book_deposit(home, "100")
    out = tmp_path / "exported.beancount"
    assert f"wrote {out}" in ok(run("--home", str(home), "export", "beancount", "--out", str(out))).stdout
    ok(run("--home", str(home), "check", "--file", str(out)))
    out.write_text(out.read_text().replace(f"  {CASH}  100 USD", f"  {CASH}  90 USD")
                   .replace("  Equity:Deposits  -100 USD", "  Equity:Deposits  -90 USD"))
    result = run("--home", str(home), "check", "--file", str(out))
    assert result.exit_code == 1
    assert "NOT CLEAN" in result.stdout and "1 differences" not in result.stdout
    assert "2 differences" in result.stdout
    report = json.loads(run("--home", str(home), "check", "--file", str(out), "--json").stdout)
    assert report["ok"] is False
    assert {(d["account"], d["ledger"], d["beancount"]) for d in report["differences"]} == {
        (CASH, "100", "90"), ("Equity:Deposits", "-100", "-90")}
    # a file beancount refuses
    out.write_text(out.read_text() + '\n2026-12-02 * "x"\n  Assets:Nowhere  1 USD\n  Equity:Deposits  -1 USD\n')
    result = run("--home", str(home), "check", "--file", str(out))
    assert result.exit_code == 1 and "beancount error:" in result.stdout


def test_help_for_every_command():
    for args in (["--help"], ["init", "--help"], ["status", "--help"], ["accounts", "--help"],
                 ["db", "upgrade", "--help"], ["export", "beancount", "--help"], ["check", "--help"]):
        assert ok(run(*args)).stdout.startswith("Usage:")


# -- user mistakes -----------------------------------------------------------------------------

def test_unknown_environment_directory(tmp_path):
    user_error(run("--home", str(tmp_path / "nothing"), "status"), "no environment 'paper'", "tradeledger --env paper init")
    user_error(run("--home", str(tmp_path / "nothing"), "check"), "no environment")


def test_live_not_initialised_next_to_paper(home):
    user_error(run("--home", str(home), "--env", "live", "status"), "no environment 'live'")


@pytest.mark.parametrize("config, message", [
    ("[environment\nname = 'paper'\n", "malformed TOML"),
    ("name = 'paper'\n", "missing [environment] table"),
    ("[environment]\nname = 'paper'\nbroker = 'nasdaq'\naccount = 'DU1'\n", "unknown broker 'nasdaq'"),
    ("[environment]\nname = 'live'\nbroker = 'ib'\naccount = 'U1'\n", "describes environment 'live', not 'paper'"),
    ("[environment]\nname = 'paper'\nbroker = 'ib'\naccount = 'DU1'\n[ib]\nport = 'x'\n", "ib.port must be a whole number, not the string 'x'"),
])
def test_malformed_config(home, config, message):
    (home / "paper" / "config.toml").write_text(config)
    line = user_error(run("--home", str(home), "status"), message)
    assert "config.toml" in line or "environment" in line


@pytest.mark.parametrize("args, message", [
    (["--env", "live", "init", "--broker", "ib", "--account", "DU1234567", "--ib-port", "4001"],
     "DU1234567 is a paper account"),
    (["--env", "live", "init"], "needs a real broker"),
    (["--env", "live", "init", "--broker", "sim", "--account", "U1234567"], "needs a real broker"),
    (["--env", "live", "init", "--broker", "ib", "--account", "U1234567"], "port 4002 is a paper trading port"),
    (["init", "--broker", "ib", "--account", "U1234567"], "not a paper account"),
    (["init", "--broker", "ib", "--account", "DU1234567", "--ib-port", "7496"], "live trading port"),
    (["init", "--account", "DU 12"], "invalid broker account id"),
])
def test_environment_mistakes_at_init(tmp_path, args, message):
    home = tmp_path / "home"
    user_error(run("--home", str(home), *args), message)
    assert not (home / "live" / "config.toml").exists()


UNREACHABLE = "postgresql+psycopg://postgres:secret@127.0.0.1:1/nowhere"


@pytest.mark.parametrize("command", [["status"], ["accounts"], ["db", "upgrade"], ["check"]])
def test_unreachable_database(home, command):
    line = user_error(run("--home", str(home), "--db-url", UNREACHABLE, *command),
                      "cannot reach the database at postgresql+psycopg://postgres:***@127.0.0.1:1/nowhere")
    assert "secret" not in line


def test_unreachable_database_at_init(tmp_path):
    line = user_error(run("--home", str(tmp_path / "home"), "--db-url", UNREACHABLE, "init"),
                      "cannot reach the database at postgresql+psycopg://postgres:***@127.0.0.1:1/nowhere")
    assert "secret" not in line
    assert not (tmp_path / "home" / "paper" / "config.toml").exists()


def test_init_again_with_another_database_is_refused(home):
    user_error(run("--home", str(home), "--db-url", UNREACHABLE, "init"), "already uses the database",
               "refusing to initialise another one")


def test_invalid_database_url(home):
    user_error(run("--home", str(home), "--db-url", "nonsense-url", "status"), "invalid database URL")


def test_a_paper_database_opened_as_live(home):
    live = home / "live"
    live.mkdir()
    (live / "config.toml").write_text('[environment]\nname = "live"\nbroker = "ib"\naccount = "U7654321"\n'
                                      '[ib]\nport = 4001\n')
    source = sqlite3.connect(home / "paper" / "tradeledger.db")
    copy = sqlite3.connect(live / "tradeledger.db")
    source.backup(copy)
    source.close(), copy.close()
    user_error(run("--home", str(home), "--env", "live", "status"),
               "belongs to environment 'paper', not 'live'")
    user_error(run("--home", str(home), "--env", "live", "db", "upgrade"), "'paper', not 'live'")
    # the same through --db-url at the paper file
    paper_url = f"sqlite:///{home / 'paper' / 'tradeledger.db'}"
    user_error(run("--home", str(home), "--env", "live", "--db-url", paper_url, "check"), "'paper', not 'live'")
    ok(run("--home", str(home), "status"))  # paper itself is fine


def _stamp(home: Path, revision: str) -> None:
    with sqlite3.connect(home / "paper" / "tradeledger.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_schema_behind_the_code_then_db_upgrade(home, tmp_path, monkeypatch):
    """The code gains a migration 0002; the database at 0001 is refused until `db upgrade`."""
    head = db.head_revision()
    migrations = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "9999_test.py").write_text(
        f'revision = "9999test"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n'
        "from alembic import op\n\n\ndef upgrade():\n"
        '    op.execute("CREATE INDEX ix_test_9999 ON account (open_date)")\n')
    monkeypatch.setattr(db, "MIGRATIONS", migrations)
    assert db.head_revision() == "9999test"
    for command in (["status"], ["accounts"], ["check"]):
        user_error(run("--home", str(home), *command), f"revision {head}", "needs 9999test",
                   "tradeledger db upgrade")
    assert f"schema at revision 9999test (was {head})" in ok(run("--home", str(home), "db", "upgrade")).stdout
    assert json.loads(ok(run("--home", str(home), "status", "--json")).stdout)["schema_revision"] == "9999test"
    assert "schema at revision 9999test" in ok(run("--home", str(home), "db", "upgrade")).stdout  # idempotent
    with sqlite3.connect(home / "paper" / "tradeledger.db") as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'ix_test_9999'").fetchone()


def test_schema_stamped_with_a_revision_the_code_does_not_know(home):
    _stamp(home, "0000fake")
    user_error(run("--home", str(home), "status"), "0000fake", "does not know")
    user_error(run("--home", str(home), "db", "upgrade"), "0000fake", "does not know")
    _stamp(home, db.head_revision())
    ok(run("--home", str(home), "status"))


def test_no_schema_names_init_and_db_upgrade(home):
    with sqlite3.connect(home / "paper" / "tradeledger.db") as conn:
        conn.execute("DELETE FROM alembic_version")
    user_error(run("--home", str(home), "status"), "no tradeledger schema", "tradeledger init")


def test_user_errors_as_a_real_process(tmp_path, home):
    """The installed console script: one line, exit code 1, no traceback."""
    for args, fragment in [(["--home", str(tmp_path / "none"), "status"], "no environment"),
                           (["--home", str(home), "--db-url", "postgresql+psycopg://u@127.0.0.1:1/x", "status"],
                            "cannot reach the database")]:
        proc = subprocess.run(["tradeledger", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
        assert fragment in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(["tradeledger", "--home", str(home), "status", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["environment"] == "paper"


# -- PostgreSQL by URL -------------------------------------------------------------------------

@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_init_status_check_on_postgresql(tmp_path, db_url):
    home = tmp_path / "home"
    info = json.loads(ok(run("--home", str(home), "--db-url", db_url, "init", "--json")).stdout)
    assert info["revision"] == db.head_revision()
    assert not (home / "paper" / "tradeledger.db").exists()
    status = json.loads(ok(run("--home", str(home), "--db-url", db_url, "status", "--json")).stdout)
    assert status["database"].startswith("postgresql+psycopg://") and status["accounts"] == BASE_ACCOUNTS
    # the URL is recorded in the config: later commands find it without --db-url
    assert json.loads(ok(run("--home", str(home), "status", "--json")).stdout)["database"] == status["database"]
    book_deposit(home, "42.42")
    report = json.loads(ok(run("--home", str(home), "--db-url", db_url, "check", "--json")).stdout)
    assert report == {"ok": True, "entries": 1, "accounts": BASE_ACCOUNTS, "errors": [], "differences": [],
                      "database": {"ok": True, "entries": 1, "postings": 2, "findings": []}}
    with sa.create_engine(db_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM tl_meta WHERE key = 'environment'").scalar_one() == "paper"
    ok(run("--home", str(home), "--db-url", db_url, "init"))  # again: unchanged


def test_init_takes_the_database_url_as_its_own_option_too(tmp_path):
    from click.testing import CliRunner

    from tradeledger.cli import main

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    home = str(tmp_path / "home")
    result = CliRunner().invoke(main, ["--home", home, "init", "--db-url", url])
    assert result.exit_code == 0, result.output
    status = CliRunner().invoke(main, ["--home", home, "status", "--no-broker", "--json"])
    assert json.loads(status.output)["database"] == url
    clash = CliRunner().invoke(main, ["--home", home, "--db-url", url + "x", "init", "--db-url", url])
    assert clash.exit_code != 0 and "two different database URLs" in clash.output
