"""The first connection to a real account: the ledger opens where the broker is.

Every scenario runs twice: on the embedded simulated broker, and on an `ib` environment talking to
the simulated IB gateway (IBSimServer over a SimExchange file) through the real ib_async client
on a real socket. The account is seeded at the broker before tradeledger first reaches it, with
positions in three currencies (MES and SPY in USD, FESX in EUR, an unconfigured GBP share) and
cash in each, as a trader's existing account would be.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import tomllib
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.broker.base import Contract
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.cli import main
from tradeledger.engine.accounting.holdings import marks
from tradeledger.engine.setup.config import Limits, current_contract, parse_trading_config
from tradeledger.engine.setup.demo import demo_config
from tradeledger.engine.setup.environment import init_environment, open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.tables import broker_order
from tradeledger.engine.tables import opening as opening_table
from tradeledger.engine.trading.cycle import wait_for_fills
from tradeledger.engine.trading.orders import TargetLine, holder_positions, plan, record_plan, send_planned
from tradeledger.engine.trust.exceptions import active_locks, list_exceptions
from tradeledger.engine.trust.opening import NoOpening, get_opening, open_at_init, open_session_account
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.export import check, export_beancount

UTC = dt.timezone.utc
ACCOUNT = "DU1234567"
CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"
expiry_months = "HMUZ"

[instruments.FESX]
type = "future"
currency = "EUR"
multiplier = 10
exchange = "EUREX"
ib_symbol = "ESTX50"
trading_class = "FESX"
expiry_months = "HMUZ"

[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.trend]
capital_share = 1
instruments = { MES = "0.5", FESX = "0.5" }

[sim]
commission_per_contract = "1.25"
"""
ISF = Contract("ISF", "STK", "ISF", "LSE", "GBP")  # a GBP share tradeledger does not trade
CASH = {"USD": D(1_000_000), "EUR": D(50_000), "GBP": D(20_000)}


class Account:
    """One environment and the broker behind it (sim: its own exchange; ib: a gateway over one)."""

    def __init__(self, kind: str, tmp_path, seed: bool = True, open_at_start: bool = True):
        self.kind, self.tmp, self.home = kind, tmp_path, tmp_path / "home"
        today = dt.datetime.now(UTC).date()
        if kind == "ib":
            self.exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT)
            self.server = IBSimServer(self.exchange, poll_interval=0.02).start()
            self.env = init_environment(self.home, "paper", "ib", ACCOUNT, ib_port=self.server.port,
                                        config_extra=CONFIG)
            self.session = Session(self.env)
        else:
            self.server = None
            self.env = init_environment(self.home, "paper", "sim", None, config_extra=CONFIG)
            self.session = Session(self.env)
            self.exchange = self.session.exchange()
        config = self.session.config
        self.mes = current_contract(config.instruments["MES"], today)
        self.fesx = current_contract(config.instruments["FESX"], today)
        self.spy = current_contract(config.instruments["SPY"], today)
        for k, price in ((self.mes, D(6000)), (self.fesx, D(4900)), (self.spy, D("610.00")), (ISF, D("8.50"))):
            self.exchange.add_contract(k)
            self.exchange.set_price(k.code, price)
        if seed:
            self.seed()
        if open_at_start:
            self.opening = open_at_init(self.env)[0]

    def seed(self) -> None:
        """The trader's account before tradeledger: positions (no executions) and cash."""
        self.exchange.transfer_in(self.mes, D(2), D("5990.25"))
        self.exchange.transfer_in(self.fesx, D(-1), D(4890))
        self.exchange.transfer_in(self.spy, D(10), cost=D("601.50"))
        self.exchange.transfer_in(ISF, D(300), cost=D("8.10"))
        for ccy, amount in CASH.items():
            self.exchange.deposit(ccy, amount)

    def restart(self) -> None:
        """A new process: the environment opened again, a new connection to the broker."""
        self.session.close()
        self.env = open_environment(self.home, "paper")
        self.session = Session(self.env)
        if self.kind == "sim":
            self.exchange = self.session.exchange()

    def cycle(self, run_id: int, targets: dict) -> None:
        """Plan, record, send and book one run's orders (what `cycle --approve` does once approved)."""
        lines = [TargetLine("Trend", name, k, D(t), self.exchange.price(k.code) or D(1))
                 for name, k, t in ((n, getattr(self, n.lower()), t) for n, t in targets.items())]
        env = self.env
        order_plan = plan(run_id, lines, holder_positions(env.ledger, env.chart), Limits(max_order_qty=D(1000),
                                                                                          max_daily_qty=D(10000)), {},
                          self._locks())
        assert order_plan.refusals == []
        now = dt.datetime.now(UTC)
        record_plan(env, order_plan, now)
        send_planned(env, self.session.broker, run_id, now)
        wait_for_fills(self.session, run_id, timeout=10)

    def _locks(self):
        with read_connection(self.env.engine) as conn:
            return active_locks(conn)

    def open_exceptions(self, kind: str):
        with read_connection(self.env.engine) as conn:
            return [e for e in list_exceptions(conn, "open") if e["kind"] == kind]

    def books_ok(self) -> None:
        path = self.tmp / "check.beancount"
        export_beancount(self.env.ledger, path)
        result = check(self.env.ledger, path)
        assert result.ok, result

    def close(self) -> None:
        self.session.close()
        if self.server is not None:
            self.server.stop()
            self.exchange.close()


@pytest.fixture(params=["sim", "ib"])
def kind(request):
    return request.param


@pytest.fixture
def account(kind, tmp_path):
    a = Account(kind, tmp_path)
    yield a
    a.close()


def _unattributed(env) -> dict:
    return {code: units for (holder, code), units in holder_positions(env.ledger, env.chart).items()
            if holder is None and units}


def _kinds(env) -> list:
    with read_connection(env.engine) as conn:
        return list(conn.execute(sa.select(schema.txn.c.kind).order_by(schema.txn.c.id)).scalars())


def _cash(env) -> dict:
    return {ccy: units for (name, ccy), units in env.ledger.balances().items() if name == env.chart.cash}


def test_an_account_in_three_currencies_opens_trades_and_reconciles_clean(account):
    env, opening = account.env, account.opening
    assert opening is not None and opening.created and opening.txn_id is not None
    # One entry, linked, against Equity:Opening-Balances: every position into Unattributed, and the cash.
    entry = env.ledger.get(opening.txn_id)
    assert entry.kind == "opening" and entry.links == ("opening-DU1234567",)
    assert {p.account for p in entry.postings} == {env.chart.unattributed, env.chart.cash, "Equity:Opening-Balances"}
    assert _unattributed(env) == {account.mes.code: D(2), account.fesx.code: D(-1), "SPY": D(10), "ISF": D(300)}
    assert _cash(env) == CASH
    with read_connection(env.engine) as conn:  # futures at zero cost, marked from the broker's mark
        held_marks = marks(conn)
    assert held_marks[(None, account.mes.code)] == D("5990.25") and held_marks[(None, account.fesx.code)] == D(4890)
    assert [(c.number, u) for c, u in env.ledger.lots(env.chart.unattributed, "SPY")] == [(D("601.50"), D(10))]
    assert [(c.number, u) for c, u in env.ledger.lots(env.chart.unattributed, "ISF")] == [(D("8.10"), D(300))]
    opening_balances = {ccy: -units for (name, ccy), units in env.ledger.balances().items()
                        if name == "Equity:Opening-Balances"}
    assert opening_balances == {"USD": D(1_000_000) + D("6015.00"), "EUR": D(50_000), "GBP": D(20_000) + D(2430)}
    # A cycle: the strategy trades MES and FESX beside the trader's own holdings.
    account.cycle(1, {"MES": 3, "FESX": 2})
    assert holder_positions(env.ledger, env.chart)[("Trend", account.mes.code)] == D(3)
    result = reconcile_session(account.session)
    assert result.clean, result.as_json()
    assert {(b["contract"]) for b in result.as_json()["breaks"]} == set()
    assert {u["contract"]: u["qty"] for u in result.unattributed} == _unattributed(env)
    assert not any(u["adopted"] for u in result.unattributed)  # the opening had them already
    assert account.open_exceptions("reconciliation_break") == []
    account.books_ok()


def test_a_cycle_before_any_reconcile_on_an_account_with_holdings(kind, tmp_path):
    """The issue's second case: no opening at init, a first cycle, then reconcile: no break."""
    a = Account(kind, tmp_path, open_at_start=False)
    try:
        with read_connection(a.env.engine) as conn:
            assert get_opening(conn) is None
        a.cycle(1, {"MES": 19})  # the gate takes the opening before anything is sent
        with read_connection(a.env.engine) as conn:
            opened = get_opening(conn)
        assert opened is not None and opened.source == "submit"
        assert _unattributed(a.env)[a.mes.code] == D(2)  # the trader's 2 MES are theirs, not the strategy's
        result = reconcile_session(a.session)
        assert result.clean and result.breaks == [], result.as_json()
        assert dict((p.contract.code, p.quantity) for p in a.exchange.positions())[a.mes.code] == D(21)
        assert a._locks() == {}
        a.books_ok()
    finally:
        a.close()


def test_no_order_is_sent_when_the_opening_cannot_be_taken(kind, tmp_path):
    a = Account(kind, tmp_path, open_at_start=False)
    try:
        a.session.broker  # connected; then the broker cannot be read
        if kind == "ib":
            a.server.stop()
        else:
            a.exchange.fault_disconnect(1)
        with pytest.raises(NoOpening, match="no opening for account DU1234567: the broker could not be read"):
            a.cycle(1, {"MES": 1})
        assert a.exchange.orders() == []  # nothing reached the broker
        with read_connection(a.env.engine) as conn:
            assert get_opening(conn) is None
            assert conn.execute(sa.select(broker_order.c.state)).scalars().all() == ["planned"]
            ref = conn.execute(sa.select(broker_order.c.order_ref)).scalar()
        if kind == "sim":  # once the broker answers, the opening is taken and the order goes out
            a.session.broker.connect()
            send_planned(a.env, a.session.broker, 1, dt.datetime.now(UTC))
            assert [o.order_ref for o in a.exchange.orders()] == [ref]
    finally:
        a.session.close()
        if kind == "ib":
            a.exchange.close()


def test_a_position_transferred_in_later_is_adopted_for_review(account):
    env = account.env
    account.cycle(1, {"MES": 3})
    account.exchange.transfer_in(account.spy, D(5), cost=D("590.00"))  # shares from another broker
    account.exchange.transfer_in(account.mes, D(1), D(6000))  # a future opened on another platform
    result = reconcile_session(account.session)
    assert result.clean, result.as_json()
    adopted = {u["contract"]: (u["qty"], u["adopted"]) for u in result.unattributed}
    assert adopted[account.mes.code] == (D(3), True) and adopted["SPY"] == (D(15), True)
    assert _kinds(env).count("adoption") == 2  # one entry per contract
    # The arriving shares' own cost is not in a position snapshot: they arrive at the broker's average cost.
    average = [p.avg_cost for p in account.exchange.positions() if p.contract.code == "SPY"][0]
    assert average == D("597.666666667")  # (10 x 601.50 + 5 x 590) / 15, to the broker's 9 places
    assert [(c.number, u) for c, u in env.ledger.lots(env.chart.unattributed, "SPY")] == [
        (D("601.50"), D(10)), (average, D(5))]
    reviews = {e["subject"]: e for e in account.open_exceptions("unattributed_position")}
    assert set(reviews) == {account.mes.code, "SPY"} and reviews[account.mes.code]["severity"] == "warning"
    assert account._locks() == {}
    account.cycle(2, {"MES": 4})  # strategies keep trading
    again = reconcile_session(account.session)
    assert again.clean and not any(u["adopted"] for u in again.unattributed)
    assert _kinds(env).count("adoption") == 2
    account.books_ok()


def test_a_deposit_at_the_broker_is_proposed_never_booked(account):
    env = account.env
    account.exchange.deposit("EUR", D("25000.50"))
    account.exchange.deposit("USD", D(-1000), kind="withdrawal")
    before = env.ledger.count()
    result = reconcile_session(account.session)
    assert not result.clean and env.ledger.count() == before  # found, not booked
    proposals = {c.currency: c.proposal for c in result.cash if c.proposal}
    assert proposals == {
        "EUR": 'adjust cash EUR 25000.5 --kind deposit --reason "deposit found by reconciliation at the broker"',
        "USD": 'adjust cash USD -1000 --kind withdrawal --reason "withdrawal found by reconciliation at the broker"'}
    breaks = {e["subject"]: e["detail"] for e in account.open_exceptions("reconciliation_break")}
    assert "adjust cash EUR 25000.5 --kind deposit" in breaks["cash EUR"]
    assert account._locks() == {}  # cash never locks trading
    for proposal in proposals.values():  # the printed commands, run as a person would
        result = CliRunner().invoke(main, ["--home", str(account.home), *shlex.split(proposal), "--yes"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert reconcile_session(account.session).clean
    assert account.open_exceptions("reconciliation_break") == []
    account.books_ok()


def test_the_opening_replayed_books_nothing_twice(account):
    env = account.env
    before = env.ledger.count()
    again, _ = open_at_init(init_environment(account.home, "paper", account.kind, ACCOUNT,
                                             ib_port=account.server.port if account.server else 4002))
    assert again.id == account.opening.id and not again.created  # a second init
    account.restart()  # a restart: a new process, a new connection
    assert open_session_account(account.session, "reconcile").id == account.opening.id
    assert reconcile_session(account.session).clean
    assert account.env.ledger.count() == before
    with read_connection(account.env.engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(opening_table)).scalar() == 1
    account.books_ok()


def test_init_takes_the_opening_and_status_shows_it(tmp_path):
    home = tmp_path / "home"

    def run(*args):
        result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT)
    server = IBSimServer(exchange, poll_interval=0.02).start()
    try:
        mes = Contract("MESZ26", "FUT", "MES", "CME", "USD", D(5), "202612", "MES")
        exchange.transfer_in(mes, D(2), D("5990.25"))
        exchange.transfer_in(Contract("SPY", "STK", "SPY", "ARCA", "USD"), D(10), D("610"), cost=D("601.50"))
        exchange.deposit("USD", D(1_000_000))
        out = run("init", "--broker", "ib", "--account", ACCOUNT, "--ib-port", str(server.port))
        assert "opening taken: taken" in out and "2 MESZ26" in out and "1000000 USD" in out
        assert "opening already taken" in run("init", "--broker", "ib", "--account", ACCOUNT, "--ib-port", str(server.port))
        info = json.loads(run("status", "--json", "--no-broker"))
        assert "10 SPY" in info["opening"] and "1000000 USD" in info["opening"]
        result = json.loads(run("reconcile", "--json"))
        assert result["clean"] is True
    finally:
        server.stop()
        exchange.close()


def test_init_without_a_broker_defers_the_opening(tmp_path):
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "init", "--broker", "ib", "--account", ACCOUNT, "--ib-port", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "opening deferred" in result.output, result.output
    status = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "status", "--json", "--no-broker"])
    assert json.loads(status.output)["opening"].startswith("none yet")


def test_sim_seeding_and_deposit_commands(tmp_path):
    home = tmp_path / "home"

    def run(*args, ok=True):
        result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    (home / "paper").mkdir(parents=True)
    run("init")  # an empty simulated account: the opening books nothing
    run("sim", "transfer-in", "VOD", "100", "--price", "0.72", "--sec-type", "STK", "--currency", "GBP")
    run("sim", "deposit", "GBP", "5000")
    out = run("reconcile", ok=False)  # the shares are adopted; the cash is proposed
    assert "proposed (not booked): tradeledger --home" in out and "adjust cash GBP 5000 --kind deposit" in out
    proposal = out.split("proposed (not booked): ")[1].splitlines()[0]
    assert CliRunner().invoke(main, shlex.split(proposal)[1:] + ["--yes"]).exit_code == 0
    assert json.loads(run("reconcile", "--json"))["clean"] is True
    assert "transfer-in" in run("sim", "--help") and "deposit" in run("ibsim", "--help")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("gateway_at_init", [True, False])
def test_the_issues_account_through_the_gateway_as_a_user_would(tmp_path, gateway_at_init):
    """The issue, as written: a paper account holding 2 MES (5,990.25), 10 SPY (601.50) and
    1,000,000 USD; `init --broker ib` (with the gateway up, or down: the opening is deferred),
    `ibsim seed-demo`, a first `cycle --approve` before any reconcile, then `reconcile`: clean,
    no cash break, no position break, the trader's holdings in Unattributed."""
    home = tmp_path / "home"
    (home / "paper").mkdir(parents=True)

    def run(*args, ok=True):
        result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    # MES's contract of the day as the demo's calendar has it (`ibsim seed-demo` prices it by the wall
    # clock): held in MESZ26, the account's MES expired on 2026-12-18 and the cycle refused MES
    mes = current_contract(parse_trading_config(tomllib.loads(demo_config())).instruments["MES"],
                           dt.datetime.now(UTC).date())
    exchange = SimExchange(home / "paper" / "ibsim.db", ACCOUNT)
    exchange.transfer_in(mes, D(2), D("5990.25"))
    exchange.transfer_in(Contract("SPY", "STK", "SPY", "ARCA", "USD"), D(10), D("601.50"))
    exchange.deposit("USD", D(1_000_000))
    port = _free_port()
    server = IBSimServer(exchange, port=port, poll_interval=0.02).start() if gateway_at_init else None
    try:
        out = run("init", "--broker", "ib", "--account", ACCOUNT, "--ib-port", str(port))
        assert ("opening taken" in out) == gateway_at_init and ("opening deferred" in out) != gateway_at_init
        if server is None:
            server = IBSimServer(exchange, port=port, poll_interval=0.02).start()
        run("ibsim", "seed-demo")
        computed = json.loads(run("cycle", "--json"))  # computed for review; the approval names the run
        cycle = json.loads(run("cycle", "--approve", "--run", str(computed["run"]), "--json"))
        assert cycle["sent"] and len(cycle["fills_booked"]) == len(cycle["sent"])
        result = json.loads(run("reconcile", "--json"))
        assert result["clean"] is True and result["breaks"] == []
        assert {u["contract"]: D(u["qty"]) for u in result["unattributed"]} == {mes.code: D(2), "SPY": D(10)}
        assert {c["currency"]: D(c["diff"]) for c in result["cash"]}["USD"] == 0
        status = json.loads(run("status", "--json", "--no-broker"))
        assert f"2 {mes.code}, 10 SPY" in status["opening"] and "1000000 USD" in status["opening"]
        assert ("(init)" if gateway_at_init else "(submit)") in status["opening"]  # deferred: taken before the orders
        assert json.loads(run("check", "--json"))["ok"] is True
    finally:
        if server is not None:
            server.stop()
        exchange.close()


def test_a_shortfall_of_the_traders_own_holdings_is_said_whose_and_the_cash_proposed(account):
    """4 of the trader's 10 SPY leave the account without an execution (transferred out): a break that
    locks SPY until a person says they were Unattributed's; the proceeds it books are then a cash
    difference, proposed as a withdrawal: two commands, then clean."""
    def cli(*args):
        result = CliRunner().invoke(main, ["--home", str(account.home), *args], catch_exceptions=False)
        assert result.exit_code in (0, 1), result.output
        return result

    account.exchange.transfer_in(account.spy, D(-4))
    result = reconcile_session(account.session)
    assert [(b.contract, b.ledger_qty, b.broker_qty) for b in result.breaks] == [("SPY", D(10), D(6))]
    assert "SPY" in account._locks()
    account.session.close()  # the commands below connect with the environment's own client id
    account.session = Session(account.env)
    closed = cli("adjust", "manual-close", "SPY", "--strategy", "unattributed", "--qty", "4", "--price", "610",
                 "--reason", "transferred to another broker", "--yes")
    assert closed.exit_code == 0 and "booked entry" in closed.output
    assert [(c.number, u) for c, u in account.env.ledger.lots(account.env.chart.unattributed, "SPY")] == [
        (D("601.50"), D(6))]
    out = cli("reconcile").output
    assert "adjust cash USD -2440 --kind withdrawal" in out and account._locks() == {}
    proposal = out.split("proposed (not booked): ")[1].splitlines()[0]
    assert cli(*shlex.split(proposal)[3:], "--yes").exit_code == 0  # after `tradeledger --home H`
    assert reconcile_session(account.session).clean
    account.books_ok()
