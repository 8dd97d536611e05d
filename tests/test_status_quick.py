"""`status` by the read path without SQLAlchemy (engine/ops/status_quick.py) prints exactly what the
full path (engine/ops/status.py) prints: as JSON, as a table, with the broker probed and not, on
SQLite and PostgreSQL, on the demo's books and after the states `status` reports move: exceptions
and locks (two reasons on one key), a daemon heartbeat, a target run gone stale on the exchange's
clock, a pending disconnect fault at the simulated broker (which the probe consumes, once per run),
and an environment at IB looked at with --no-broker. Each comparison runs the read path first (the
config checked before: `.config-checked`), then the full one (the stamp removed), and asserts that
the read path did answer.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.ops import status as full_status
from tradeledger.engine.ops import status_quick
from tradeledger.engine.setup.config import parse_trading_config
from tradeledger.engine.setup.names import sim_commissions
from tradeledger.engine.setup.quick import STAMP
from tradeledger.engine.targets.run_state import max_run_age_hours
from tradeledger.engine.tables import daemon_heartbeat
from tradeledger.reports.pnl_fast import quick_pnl_today

UTC = dt.timezone.utc


def cli(home, url, *args):
    result = CliRunner().invoke(main, ["--home", str(home), *(["--db-url", url] if url else []), *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result.output


def read_path_answers(home, url) -> bool:
    return status_quick.quick_status(home, "paper", url, False, quick_pnl_today) is not None


def same_both_ways(home, url, before=lambda args: None) -> dict:
    """Every form of `status` by the read path, then by the full path: the same text."""
    outputs = []
    for stamp in (True, False):
        if not stamp:
            (home / "paper" / STAMP).unlink()
        else:
            assert (home / "paper" / STAMP).exists() and read_path_answers(home, url)
        seen = []
        for args in (["--json", "--no-broker"], ["--no-broker"], ["--json"], []):
            before(args)
            seen.append(cli(home, url, "status", *args))
        outputs.append(seen)
    light, full = outputs
    for a, b in zip(light, full):
        assert a == b
    return json.loads(light[0])


@pytest.fixture
def demo(db_url, tmp_path):
    from tradeledger.engine.setup.demo import run_demo

    home = tmp_path / "home"
    session = run_demo(home, 3, db_url=db_url)
    session.close()
    session.engine.dispose()
    cli(home, db_url, "status", "--no-broker")  # the full opening records the checked config
    return home, db_url


def test_status_by_the_read_path_is_the_full_paths(demo):
    home, url = demo
    shown = same_both_ways(home, url)
    assert shown["transactions"] > 50 and shown["pnl_today"]["net (USD)"] != "0"
    assert shown["latest_target_run"]["state"] == "approved" and shown["open_exceptions"]["warning"] == 1

    # exceptions and locks, two reasons on one key, one lock lifted; a daemon's heartbeat
    from tradeledger.engine.setup.environment import open_environment
    from tradeledger.engine.trust import exceptions

    env = open_environment(home, "paper", url)
    now = env.now()
    with env.engine.begin() as conn:
        kind = exceptions.ExceptionKind.RECONCILIATION_BREAK
        first = exceptions.raise_exception(conn, kind, "MESZ26", "qty differs", "error", now=now)
        second = exceptions.raise_exception(conn, kind, "SPY", "cash differs", "critical", now=now)
        third = exceptions.raise_exception(conn, kind, "FESX", "gone", "warning", now=now)
        exceptions.acknowledge(conn, second, "test", "seen", now=now)  # acknowledged: still open
        exceptions.resolve(conn, third, "test", "fixed", now=now)  # resolved: not counted
        exceptions.lock(conn, "MES", "a break in MESZ26", first, now=now)
        exceptions.lock(conn, "MES", "another break", second, now=now)
        exceptions.lock(conn, "SPY", "lifted later", second, now=now)
        exceptions.unlock(conn, "SPY", "test", "fixed", now=now)
        conn.execute(daemon_heartbeat.insert().values(
            env="paper", pid=4242, owner="test", started_at="2026-12-03 20:00:00.000000",
            at="2026-12-03 20:59:00.000000", state="running", last_job="settle", last_result="ok: 3 booked"))
    env.engine.dispose()
    shown = same_both_ways(home, url)
    assert shown["locks"] == {"MES": "a break in MESZ26; another break"}
    assert shown["open_exceptions"]["critical"] == 1 and shown["daemon_heartbeat"]["last_job"] == "settle"

    # the exchange's clock two days on: the approved run is expired, and today has no P&L yet
    cli(home, url, "sim", "clock", "advance", "48h")
    shown = same_both_ways(home, url)
    assert shown["latest_target_run"]["state"] == "expired"

    # a disconnect armed at the simulated broker before every probe: each probe meets one, and only one
    def arm(args):
        if "--no-broker" not in args:
            cli(home, url, "sim", "fault", "disconnect")

    same_both_ways(home, url, before=arm)
    arm([])
    probed = json.loads(cli(home, url, "status", "--json"))
    assert probed["broker_reachable"] is False and "disconnect" in probed["broker_error"]
    assert json.loads(cli(home, url, "status", "--json"))["broker_reachable"] is True


def test_an_ib_environment_without_the_broker_by_the_read_path(tmp_path):
    home = tmp_path / "home"
    cli(home, None, "init", "--broker", "ib", "--account", "DU7654321", "--ib-port", "1")  # nothing listens
    cli(home, None, "status", "--no-broker")
    assert read_path_answers(home, None)
    light = cli(home, None, "status", "--json", "--no-broker")
    (home / "paper" / STAMP).unlink()
    full = cli(home, None, "status", "--json", "--no-broker")
    assert light == full and json.loads(light)["broker"] == "ib"
    # reaching IB takes ib_async: the read path leaves it to the full path
    assert status_quick.quick_status(home, "paper", None, True, quick_pnl_today) is None


def test_the_read_path_reads_config_toml_as_the_trading_config_does():
    for sim, portfolio in (({}, {}), ({"commission_per_contract": 2, "commission_per_share": "0.01"},
                                      {"max_run_age_hours": 0.5}),
                           ({"commission_per_contract": 1.25}, {"max_run_age_hours": "36"})):
        raw = {"sim": sim, "portfolio": portfolio,
               "instruments": {"MES": {"type": "future", "currency": "USD", "multiplier": 5, "exchange": "CME"},
                               "SPY": {"type": "share", "currency": "USD", "exchange": "ARCA"}}}
        config = parse_trading_config(raw)
        assert sim_commissions(raw) == (config.sim_commission, config.sim_share_commission, ["SPY"])
        assert max_run_age_hours(raw) == config.max_run_age_hours
    assert status_quick.PNL_ACCOUNTS == full_status.PNL_ACCOUNTS
    assert set(status_quick.HEARTBEAT) <= set(daemon_heartbeat.c.keys())


def test_a_sim_exchange_that_cannot_open_is_said_alike(tmp_path):
    """sim.db holding another account: the probe says why and the clock is the wall clock's."""
    home = tmp_path / "home"
    cli(home, None, "init")
    with sqlite3.connect(home / "paper" / "sim.db") as db:
        db.execute("UPDATE meta SET value = 'DU0000001' WHERE key = 'account'")
    cli(home, None, "status", "--no-broker")
    assert read_path_answers(home, None)
    light = json.loads(cli(home, None, "status", "--json"))
    (home / "paper" / STAMP).unlink()
    full = json.loads(cli(home, None, "status", "--json"))
    assert light == full and light["broker_reachable"] is False and "DU0000001" in light["broker_error"]
