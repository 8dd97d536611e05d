"""An IB environment's clock is the database's: a trader on one host and a monitor on another agree.

`ctx.now()` is the environment's clock, what it stamps what it records (orders' `created_at` and
`sent_at`, runs, exceptions, locks, snapshots, `reconciliation.run_at`) and judges them by (an
order stuck after `[monitor] order_stuck_minutes`, a run expired after `max_run_age_hours`, the
day's orders). On sim it is the simulated exchange's clock, a domain time (the trading day the
exchange says, days or years from the machine's), and stays so. On IB it was the host's wall clock:
hosts sharing one PostgreSQL ledger each stamped and judged by their own, so a `tradeledger monitor`
by cron on a host 20 minutes ahead called an order sent a minute ago stuck (an error exception and
an alert), and one 20 minutes behind saw an order stuck for 12 minutes as sent 8 minutes in the
future. Now it is the database's clock (ledger/dbclock.py), read when the command reads its time.

The other host is a real process under libfaketime (tests/skewed_host.py), on PostgreSQL (a SQLite
file has one host, whose clock the database's is). The order is written as the trader's host
stamped it by the database's clock (`dbclock.now(dialect, seconds)`): sending it needs a gateway,
and what is judged is its stamp against the monitor's clock.
"""

from __future__ import annotations

import json

import pytest

from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.tables import broker_order
from tradeledger.engine.trust.exceptions import get_exception, raise_exception
from tradeledger.ledger import dbclock
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.store import parse_ts
from skewed_host import database_now, tl_at

SKEW = 20 * 60
MONITOR = "[monitor]\norder_stuck_minutes = 10\n"


def ib_env(tmp_path, db_url, extra=""):
    return init_environment(tmp_path / "home", "paper", "ib", "DU1111111", db_url=db_url, ib_port=4002,
                            config_extra=extra)


def sent_order(env, seconds_ago: float) -> None:
    """An order sent `seconds_ago` by the database's clock (as the trader's host now stamps it)."""
    with env.engine.begin() as conn:
        at = dbclock.now(conn.dialect.name, -seconds_ago)
        conn.execute(broker_order.insert().values(
            order_ref="tl-paper-1-abcdef", run_id=1, contract="MESZ26", contract_spec="{}", side="BUY",
            quantity=1, order_type="MKT", state="sent", created_at=at, sent_at=at))


def stuck(home, skew: int) -> list[dict]:
    """The order_stuck findings of `tradeledger monitor --json` on a host `skew` seconds off."""
    result = tl_at(skew, home, "monitor", "--json")
    assert result.returncode in (0, 1), result.stderr
    return [f for f in json.loads(result.stdout) if f["kind"] == "order_stuck"]


def test_a_monitor_twenty_minutes_ahead_does_not_call_a_fresh_order_stuck(pg_url, tmp_path):
    env = ib_env(tmp_path, pg_url, MONITOR)
    sent_order(env, 60)
    assert stuck(tmp_path / "home", SKEW) == []
    env.engine.dispose()


def test_a_monitor_twenty_minutes_behind_sees_an_order_stuck_for_twelve_minutes(pg_url, tmp_path):
    env = ib_env(tmp_path, pg_url, MONITOR)
    sent_order(env, 12 * 60)
    [finding] = stuck(tmp_path / "home", -SKEW)
    assert finding["severity"] == "error" and "is still sent after 12 minutes" in finding["detail"], finding
    env.engine.dispose()


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_what_a_host_off_records_on_ib_is_stamped_by_the_database_clock(pg_url, tmp_path, skew):
    """`exceptions ack` on a host 20 minutes off stamps the database's time, not its own."""
    env = ib_env(tmp_path, pg_url)
    with env.engine.begin() as conn:
        exception_id = raise_exception(conn, "order_stuck", "tl-paper-1", "stuck", "error", now=env.now())
    result = tl_at(skew, tmp_path / "home", "exceptions", "ack", exception_id, "--reason", "on it")
    assert result.returncode == 0, result.stderr
    with read_connection(env.engine) as conn:
        acknowledged = parse_ts(get_exception(conn, exception_id)["acknowledged"]["at"])
    assert abs((database_now(env.engine) - acknowledged).total_seconds()) < 60
    env.engine.dispose()
