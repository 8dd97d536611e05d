"""Money in the ledger: the initial deposit, later deposits, NAV, and the capital strategies size with."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.accounting.valuation import nav
from tradeledger.engine.setup.config import parse_trading_config
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.capital import strategy_capital

DEPOSITS = "Equity:Deposits"
CASH = "Assets:Broker:DU1234567:Cash"


def run(home, *args, code=0):
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    assert result.exit_code == code, result.output + (result.stderr or "") + repr(result.exception)
    return result


def as_json(home, *args, code=0):
    return json.loads(run(home, *args, "--json", code=code).output)


@pytest.fixture
def funded(tmp_path):
    home = tmp_path / "home"
    info = as_json(home, "init", "--capital", "1000000")
    assert info["capital"]["amount"] == "1000000" and info["capital"]["currency"] == "USD"
    # the money model: the opening books what the broker holds minus what the ledger holds: nothing
    assert info["opening"]["entry"] is None
    assert [(c["currency"], c["booked"]) for c in info["opening"]["cash"]] == [("USD", "0")]
    return home


def test_init_capital_is_a_deposit_the_broker_holds_too(funded):
    env = open_environment(funded, "paper")
    balances = env.ledger.balances()
    assert balances[(CASH, "USD")] == D(1000000)
    assert balances[(DEPOSITS, "USD")] == D(-1000000)
    session = Session(env)
    assert session.exchange().cash() == {"USD": D(1000000)}
    value = nav(env, session.config)
    assert value.total == D("1000000.00") and value.deposits == {"USD": D(1000000)}
    # reconciliation holds from day one: cash on both sides
    result = as_json(funded, "reconcile")
    assert [c["status"] for c in result["cash"]] == ["ok"]
    assert as_json(funded, "check")["ok"] is True


def test_init_capital_again_books_nothing_and_another_figure_is_refused(funded):
    again = as_json(funded, "init", "--capital", "1000000")
    assert again["capital"]["entry"] is None
    env = open_environment(funded, "paper")
    assert env.ledger.balances()[(DEPOSITS, "USD")] == D(-1000000)
    assert Session(env).exchange().cash() == {"USD": D(1000000)}
    refused = run(funded, "init", "--capital", "5", code=1)
    assert "already booked" in refused.stderr and refused.stderr.count("\n") == 1


def test_a_deposit_at_the_broker_booked_by_adjust_keeps_reconciliation_clean(funded):
    run(funded, "sim", "deposit", "EUR", "25000")
    broken = as_json(funded, "reconcile", code=1)
    assert {c["currency"]: c["status"] for c in broken["cash"]}["EUR"] != "ok"
    run(funded, "adjust", "cash", "EUR", "25000", "--kind", "deposit", "--reason", "wire", "--yes")
    clean = as_json(funded, "reconcile")
    assert {c["currency"]: c["status"] for c in clean["cash"]} == {"EUR": "ok", "USD": "ok"}
    env = open_environment(funded, "paper")
    assert nav(env, Session(env).config).deposits == {"USD": D(1000000), "EUR": D(25000)}


def test_nav_without_an_fx_rate_is_unknown_not_assumed(funded):
    run(funded, "adjust", "cash", "GBP", "100", "--kind", "deposit", "--reason", "wire", "--yes")
    env = open_environment(funded, "paper")
    value = nav(env, Session(env).config)
    assert value.total is None and value.missing_fx == ("GBP",)


def _config(extra: str):
    import tomllib

    return parse_trading_config(tomllib.loads(extra))


def test_capital_fixed_compounding_and_a_strategy_amount():
    base = ('[instruments.SPY]\ntype = "share"\ncurrency = "USD"\n'
            '[strategies.a]\ncapital_share = "0.25"\ninstruments = { SPY = "1" }\n'
            '[strategies.b]\ncapital = "300000"\ninstruments = { SPY = "1" }\n')
    fixed = _config('[portfolio]\ncapital = "2000000"\n' + base)
    a, b = fixed.strategies["a"], fixed.strategies["b"]
    assert strategy_capital(fixed, a, None).amount == D(500000)
    assert "fixed: [portfolio] capital 2000000" in strategy_capital(fixed, a, None).source
    growing = _config('[portfolio]\ncapital_mode = "compounding"\n' + base)
    got = strategy_capital(growing, a, D("1100000.00"), " USD")
    assert got.amount == D("275000") and "compounding: NAV 1100000.00 USD x share 0.25" == got.source
    assert strategy_capital(growing, b, D(1)).amount == D(300000)  # a fixed amount in either mode
    with pytest.raises(ValueError, match="deposit capital first"):
        strategy_capital(growing, a, D(0))


def test_targets_show_prints_the_capital_and_where_it_came_from(tmp_path):
    from tradeledger.engine.setup.demo import DEMO_START, init_demo
    from tradeledger.engine.targets.runs import compute_run

    home = tmp_path / "home"
    env, _ = init_demo(home)
    when = dt.datetime.combine(DEMO_START, dt.time(15), tzinfo=dt.timezone.utc)
    run_id = compute_run(env, DEMO_START, when)
    shown = run(home, "targets", "show", str(run_id)).output
    assert "capital of trend_fast: 700000.00 USD (compounding: NAV 2000000.00 USD x share 0.35)" in shown
    data = as_json(home, "targets", "show", str(run_id))
    assert data["inputs"]["nav"] == "2000000.00"
    assert all(line["explain"]["capital_source"].startswith("compounding") for line in data["lines"])


def test_init_capital_on_ib_funds_the_simulated_gateway(tmp_path):
    from tradeledger.broker.simexchange import SimExchange

    home = tmp_path / "home"
    info = as_json(home, "init", "--broker", "ib", "--account", "DU7654321", "--ib-port", "4002",
                   "--capital", "250000", "--currency", "EUR")
    state = home / "paper" / "ibsim.db"
    assert info["capital"]["broker_funded"] == str(state)
    exchange = SimExchange(state, "DU7654321")
    try:
        assert exchange.cash() == {"EUR": D(250000)}
    finally:
        exchange.close()
    env = open_environment(home, "paper")
    assert env.ledger.balances()[(DEPOSITS, "EUR")] == D(-250000)
