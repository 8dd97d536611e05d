"""The last reconciliation's age, as the health endpoint exports it, is the database's clock's.

`tradeledger_reconciliation_age_seconds` (GET /metrics) is what a monitor's rule calls stale. It
was the daemon host's wall clock minus `run_at`, the environment's clock of whichever process
reconciled: on a sim environment the exchange's clock (a domain time, days from the machine's when
a walk-through sets it), elsewhere that process's host's. A reconciliation just run on a host 20
minutes behind was 20 minutes old, one on a host ahead minus 20 minutes, and one on a sim
environment whose exchange's day is a week back a week old. Now the row's `written_at` is stamped
by the database's clock in the insert and the age measured against that clock in the query that
reads it; `run_at` stays the environment's clock (what the reconciliation is about).

The host whose clock is off is `tradeledger reconcile` in a real process under libfaketime
(tests/skewed_host.py), on PostgreSQL; the sim environment's exchange's clock on both backends.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tradeledger.engine.ops.health import Probe
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.trust.reconcile import last_reconciliation
from tradeledger.ledger.db import read_connection
from tradeledger.ledger.store import parse_ts
from skewed_host import tl_at

UTC = dt.timezone.utc
SKEW = 20 * 60


def reconciliation_age(env) -> float:
    """tradeledger_reconciliation_age_seconds as /metrics reads it now, in this (unskewed) process."""
    [family] = [m for m in Probe(env).collect() if m.name == "tradeledger_reconciliation_age_seconds"]
    return family.samples[0].value


def last_run_at(env) -> dt.datetime:
    with read_connection(env.engine) as conn:
        return parse_ts(last_reconciliation(conn)["run_at"])


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_reconciliation_run_on_a_host_whose_clock_is_off_is_as_old_as_it_is(pg_url, tmp_path, skew):
    """A sim environment whose exchange follows the machine's clock (none set): `run_at` is the
    reconciling host's clock, 20 minutes off. Its age here is seconds, not 20 minutes or minus 20."""
    env = init_environment(tmp_path / "home", "paper", "sim", None, db_url=pg_url)
    result = tl_at(skew, tmp_path / "home", "reconcile")
    assert result.returncode == 0, result.stderr
    assert abs((last_run_at(env) - dt.datetime.now(UTC)).total_seconds() - skew) < 60  # the host's clock, as before
    assert 0 <= reconciliation_age(env) < 60
    env.engine.dispose()


def test_a_sim_reconciliation_is_aged_by_the_database_not_the_exchange(db_url, tmp_path):
    """The exchange's clock is a week back (the trading day a walk-through plays): the reconciliation
    is dated by it (`run_at`, a domain time) and is seconds old by the database's clock."""
    from tradeledger.engine.setup.session import Session

    env = init_environment(tmp_path / "home", "paper", "sim", None, db_url=db_url)
    week_ago = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=7)
    from tradeledger.engine.trust.reconcile import reconcile_session
    with Session(env) as session:
        session.exchange().set_clock(week_ago)
        reconcile_session(session)
    assert last_run_at(env) == week_ago
    assert 0 <= reconciliation_age(env) < 60
    env.engine.dispose()
