"""Environments: where the home is, paper and live strictly apart, init idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.setup.environment import (
    ConfigError, check_identity, default_db_url, init_environment, open_environment, resolve_home,
)
from tradeledger.ledger import db
from tradeledger.ledger.db import DatabaseError


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def live(home: Path, db_url: str | None = None):
    return init_environment(home, "live", "ib", "U7654321", db_url=db_url, ib_port=4001)


# -- the home ----------------------------------------------------------------------------------

def test_home_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("TRADELEDGER_HOME", raising=False)
    assert resolve_home(None) == tmp_path / "user" / ".tradeledger"
    monkeypatch.setenv("TRADELEDGER_HOME", str(tmp_path / "from-env"))
    assert resolve_home(None) == tmp_path / "from-env"
    assert resolve_home(tmp_path / "explicit") == tmp_path / "explicit"  # --home wins
    assert resolve_home("~/x") == tmp_path / "user" / "x"


def test_cli_uses_tradeledger_home_then_home_option(tmp_path):
    env_home, opt_home = tmp_path / "env-home", tmp_path / "opt-home"
    result = run("init", "--json", env={"TRADELEDGER_HOME": str(env_home)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dir"] == str(env_home / "paper")
    assert (env_home / "paper" / "config.toml").is_file()
    result = run("--home", str(opt_home), "init", env={"TRADELEDGER_HOME": str(env_home)})
    assert result.exit_code == 0
    assert (opt_home / "paper" / "tradeledger.db").is_file()
    status = run("status", "--json", env={"TRADELEDGER_HOME": str(env_home)})
    assert json.loads(status.stdout)["database"].endswith(str(env_home / "paper" / "tradeledger.db"))


# -- paper and live apart ----------------------------------------------------------------------

def test_paper_and_live_each_have_their_own_directory_and_database(tmp_path):
    paper = init_environment(tmp_path, "paper", "sim", None)
    live_env = live(tmp_path)
    assert paper.dir == tmp_path / "paper" and live_env.dir == tmp_path / "live"
    assert paper.engine.url != live_env.engine.url
    assert db.read_meta(paper.engine)["environment"] == "paper"
    meta = db.read_meta(live_env.engine)
    assert (meta["environment"], meta["broker_account"], meta["broker"]) == ("live", "U7654321", "ib")
    assert open_environment(tmp_path, "live").settings.ib_port == 4001


def test_two_environments_refuse_to_share_one_database_url(tmp_path):
    paper = init_environment(tmp_path, "paper", "sim", None)
    paper_url = default_db_url(tmp_path / "paper")
    with pytest.raises(ConfigError, match="environment 'paper' already uses the database"):
        live(tmp_path, db_url=paper_url)
    assert not (tmp_path / "live" / "config.toml").exists()
    # the same file spelled another way is still refused, by the identity the database records
    other_spelling = "sqlite:///" + str(tmp_path / "live" / ".." / "paper" / "tradeledger.db")
    assert other_spelling != paper_url
    with pytest.raises(DatabaseError, match="recorded with environment = 'paper', not 'live'"):
        live(tmp_path, db_url=other_spelling)
    assert not (tmp_path / "live" / "config.toml").exists()
    assert db.read_meta(paper.engine)["environment"] == "paper"
    # and through the CLI, one line
    result = run("--home", str(tmp_path), "--env", "live", "--db-url", paper_url, "init", "--broker", "ib",
                 "--account", "U7654321", "--ib-port", "4001")
    assert result.exit_code == 1 and result.stderr.startswith("error: environment 'paper' already uses")


def test_shared_url_refused_in_either_order(tmp_path):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    live(tmp_path, db_url=shared)
    with pytest.raises(ConfigError, match="environment 'live' already uses the database"):
        init_environment(tmp_path, "paper", "sim", None, db_url=shared)


def test_init_is_idempotent(tmp_path):
    first = init_environment(tmp_path, "paper", "sim", None)
    config = (tmp_path / "paper" / "config.toml").read_bytes()
    accounts = first.ledger.accounts()
    meta = db.read_meta(first.engine)
    revision = db.current_revision(first.engine)
    first.engine.dispose()
    second = init_environment(tmp_path, "paper", "sim", None)
    assert (tmp_path / "paper" / "config.toml").read_bytes() == config
    assert second.ledger.accounts() == accounts
    assert db.read_meta(second.engine) == meta
    assert db.current_revision(second.engine) == revision
    assert second.ledger.count() == (0, 0)
    result = run("--home", str(tmp_path), "init")
    assert result.exit_code == 0 and len(open_environment(tmp_path, "paper").ledger.accounts()) == len(accounts)
    # re-init with another identity is refused, and the config stays as it was
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        init_environment(tmp_path, "paper", "ib", "DU7777777")
    assert (tmp_path / "paper" / "config.toml").read_bytes() == config


def test_database_refuses_another_identity(tmp_path):
    init_environment(tmp_path, "paper", "sim", None)
    config = tmp_path / "paper" / "config.toml"
    config.write_text(config.read_text().replace("DU1234567", "DU7654321"))
    with pytest.raises(DatabaseError, match="belongs to broker_account 'DU1234567', not 'DU7654321'"):
        open_environment(tmp_path, "paper")


@pytest.mark.parametrize("env, broker, account, port, message", [
    ("live", "ib", "DU1234567", 4001, "paper account"),
    ("live", "sim", "U1234567", None, "needs a real broker"),
    ("live", "ib", "U1234567", 7497, "paper trading port"),
    ("paper", "ib", "U1234567", 4002, "not a paper account"),
    ("paper", "ib", "DU1234567", 4001, "live trading port"),
    ("staging", "sim", "DU1", None, "unknown environment"),
    ("paper", "ib", "", 4002, "invalid broker account id"),
])
def test_identity_rules(env, broker, account, port, message):
    with pytest.raises(ConfigError, match=message):
        check_identity(env, broker, account, port)


@pytest.mark.parametrize("env, broker, account, port", [
    ("paper", "sim", "DU1234567", None), ("paper", "ib", "DU1234567", 4002), ("live", "ib", "U1234567", 4001),
    ("live", "ib", "U1234567", 7496),
])
def test_identity_rules_accept_the_right_pairs(env, broker, account, port):
    check_identity(env, broker, account, port)
