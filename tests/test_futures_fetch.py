"""Prices and contract dates from the broker: `tradeledger data fetch` and `instruments contracts
--refresh`, through the real ib_async client against the simulated gateway and on the embedded
broker; the daemon's data job without a CSV; IB's combo (BAG) execution report ignored.

The simulated exchange settles each contract at its day's close; a daily bar closes at that
settlement, so what is fetched can be checked figure by figure."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.cli import main
from tradeledger.engine import tables
from tradeledger.engine.futures import calendar as cal
from tradeledger.engine.futures.fetch import codes_to_price, fetch_bars
from tradeledger.engine.ops.jobs import data_update
from tradeledger.engine.setup.config import contract_of_code
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled

UTC = dt.timezone.utc
ACCOUNT = "DU1234567"
CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"
ib_symbol = "MES"
trading_class = "MES"
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8
force_days = 2

[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.a]
instruments = { MES = 1 }
"""


def _business_days_before(today: dt.date, n: int) -> list[dt.date]:
    days, day = [], today - dt.timedelta(days=1)
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    return days[::-1]


def _trade_days(exchange: SimExchange, codes: list[str], days: list[dt.date]) -> dict[tuple[str, dt.date], D]:
    """Each day: an opening price, then the settlement at 21:00 (the bar's close)."""
    settled = {}
    for i, day in enumerate(days):
        opening = dt.datetime.combine(day, dt.time(14, 30), tzinfo=UTC)
        close = dt.datetime.combine(day, dt.time(21, 0), tzinfo=UTC)
        exchange.set_clock(opening)
        for j, code in enumerate(codes):
            exchange.set_price(code, D(6000 + 10 * i + 40 * j), opening)
            if code != "SPY":
                exchange.set_clock(close)
                settled[(code, day)] = D(6000 + 10 * i + 40 * j) + D("2.25")
                exchange.settle(code, settled[(code, day)], day)
                exchange.set_clock(opening)
    exchange.set_clock(None)
    return settled


def _stored(env) -> dict[tuple[str, dt.date], D]:
    t = tables.contract_bar
    with read_connection(env.engine) as conn:
        return {(c, dt.date.fromisoformat(d)): from_scaled(p) for c, d, p in conn.execute(
            sa.select(t.c.contract, t.c.date, t.c.close))}


@pytest.fixture
def gateway(tmp_path):
    exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT)
    exchange.deposit("USD", D(1_000_000))
    server = IBSimServer(exchange, poll_interval=0.02).start()
    env = init_environment(tmp_path / "home", "paper", "ib", ACCOUNT, ib_port=server.port, config_extra=CONFIG)
    session = Session(env)
    yield session, exchange
    session.close()
    server.stop()
    exchange.close()


def test_data_fetch_through_the_ib_gateway_stores_contract_closes_once(gateway):
    session, exchange = gateway
    env = session
    mes = session.config.instruments["MES"]
    today = dt.datetime.now(UTC).date()
    codes = codes_to_price(mes, today, set())
    for code in codes:
        exchange.add_contract(contract_of_code(mes, code))
    days = _business_days_before(today, 4)
    settled = _trade_days(exchange, codes, days)

    report = fetch_bars(session, ["MES"], days=10)
    assert sorted(report.contracts) == sorted(codes) and not report.missing
    assert (report.inserted, report.unchanged, report.replaced) == (len(settled), 0, 0)
    assert _stored(env) == settled  # each day's close is the day's settlement, per contract
    again = fetch_bars(session, ["MES"], days=10)
    assert (again.inserted, again.unchanged, again.replaced) == (0, len(settled), 0)
    assert _stored(env) == settled


def test_contract_details_from_the_gateway_are_stored_and_a_difference_reported(gateway, tmp_path):
    session, exchange = gateway
    env = session
    mes = session.config.instruments["MES"]
    z, h = cal.chain(mes.schedule, dt.date(2026, 12, 1), 2)
    for dates in (z, h):
        exchange.add_contract(contract_of_code(mes, dates.code))
    # the venue says MESZ26 trades one day less than the rule; MESH27 as the rule says
    exchange.set_contract_dates(z.code, z.last_trade - dt.timedelta(days=1))
    exchange.set_contract_dates(h.code, h.last_trade, h.last_trade + dt.timedelta(days=1))
    home = str(tmp_path / "home")
    out = CliRunner().invoke(main, ["--home", home, "instruments", "contracts", "MES", "--date", "2026-12-01",
                                    "--refresh"])
    assert out.exit_code == 0, out.output
    assert f"{z.code}: the broker says last trading day {z.last_trade - dt.timedelta(days=1)}" in out.output
    out = CliRunner().invoke(main, ["--home", home, "instruments", "contracts", "MES", "--date", "2026-12-01",
                                    "--json"])
    rows = {r["contract"]: r for r in json.loads(out.output)}
    assert rows[z.code]["source"] == "broker" and rows[z.code]["differs_from_rule"]
    assert rows[z.code]["last_trade"] == (z.last_trade - dt.timedelta(days=1)).isoformat()
    assert rows[h.code]["source"] == "broker" and not rows[h.code]["differs_from_rule"]
    assert rows[h.code]["real_expiration"] == (h.last_trade + dt.timedelta(days=1)).isoformat()
    with read_connection(env.engine) as conn:
        raised = {(r.kind, r.subject) for r in conn.execute(sa.select(tables.tl_exception))}
    assert raised == {("contract_dates_differ", z.code)}


def test_data_fetch_on_the_embedded_broker_and_the_daemon_job(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    exchange = session.exchange()
    mes = session.config.instruments["MES"]
    today = dt.date(2026, 12, 3)
    codes = codes_to_price(mes, today, set())
    for code in codes:
        exchange.add_contract(contract_of_code(mes, code))
    exchange.add_contract(contract_of_code(session.config.instruments["SPY"], "SPY"))
    days = _business_days_before(today, 3)
    settled = _trade_days(exchange, codes + ["SPY"], days)
    exchange.set_clock(dt.datetime.combine(today, dt.time(9, 0), tzinfo=UTC))
    session.close()

    home = str(tmp_path / "home")
    out = CliRunner().invoke(main, ["--home", home, "data", "fetch", "--days", "7", "--json"])
    assert out.exit_code == 0, out.output
    first = json.loads(out.output)
    assert first["inserted"] == len(settled) + len(days) and not first["missing"]  # + SPY's closes
    assert _stored(env) == settled
    t = tables.price_bar
    with read_connection(env.engine) as conn:
        spy = dict(conn.execute(sa.select(t.c.date, t.c.close).where(t.c.instrument == "SPY")).all())
    assert {d: from_scaled(v) for d, v in spy.items()} == {
        day.isoformat(): D(6000 + 10 * i + 40 * len(codes)) for i, day in enumerate(days)}
    # the daemon's data job, without a CSV: the same fetch, nothing new
    session = Session(env)
    try:
        line = data_update(session, None, fetch=True, days=7)
    finally:
        session.close()
    assert "0 new" in line and f"{len(settled) + len(days)} unchanged" in line
    out = CliRunner().invoke(main, ["--home", home, "data", "fetch", "NOPE"])
    assert out.exit_code == 1 and "unknown instrument 'NOPE'" in out.output


def test_a_target_run_from_fetched_bars_alone(tmp_path):
    """No CSV at all: the broker's daily bars are the contract closes; the run sizes a future on
    its priced contract's own close and its signals read the back-adjusted series."""
    import numpy as np

    from tradeledger.engine.targets.runs import compute_run, show_run

    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra=CONFIG)
    session = Session(env)
    exchange = session.exchange()
    mes = session.config.instruments["MES"]
    today = dt.date(2026, 12, 3)
    days = _business_days_before(today, 40)
    codes = sorted({code for day in days for code in codes_to_price(mes, day, set())})
    for code in codes:
        exchange.add_contract(contract_of_code(mes, code))
    walk = 6000 + np.cumsum(np.random.default_rng(5).normal(0, 15, len(days)))
    for day, level in zip(days, walk):
        close = dt.datetime.combine(day, dt.time(21, 0), tzinfo=UTC)
        exchange.set_clock(close)
        for j, code in enumerate(codes):
            exchange.settle(code, D(repr(round(float(level) * 4) / 4)) + 40 * j, day)
    now = dt.datetime.combine(today, dt.time(15, 0), tzinfo=UTC)
    exchange.set_clock(now)
    report = fetch_bars(session, ["MES"], days=90)
    assert report.inserted == len(days) * len(codes) and not report.missing
    run_id = compute_run(env, today, now)
    [line] = show_run(env, run_id, now).lines
    current = codes_to_price(mes, today, set())[0]
    assert line.explain["price_source"] == f"{current} close"
    assert line.explain["signal_prices"] == "MES back-adjusted (Panama)"
    assert D(line.explain["price"]) == _stored(env)[(current, days[-1])]
    session.close()
