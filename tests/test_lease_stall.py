"""A trader whose lease was taken over sends nothing more, from the moment it was taken.

A holder that stalls past its lease's expiry (a stopped process, a VM paused, a renewal that could
not reach a busy database for 30 s) is taken over by the next trader, which then sends the run's
planned orders the broker does not have. When the stalled holder goes on, its next send must be
refused. Before the fix `Lease.check()` only read a flag that the renewing thread sets at its next
tick (every 10 s): a holder that went on between the takeover and that tick sent every order it
reached in the meantime, the same planned orders as the newcomer (on the simulated broker the
second of the two is refused as a duplicate orderRef; at IB, where another client's orders are not
in this client's list, it trades twice). Now each check confirms the lease in the database (and
renews it), so the stalled holder stops at its very next send.

The takeover is the real one: a newcomer's `try_acquire` at a time past the lease's expiry (by the
database's clock: `ahead`, the test's way of being later without waiting).
"""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from tradeledger.engine import tables
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading import lease
from tradeledger.engine.trading.cycle import plan_run
from tradeledger.engine.trading.orders import record_plan, send_planned
from test_never_twice import cli, demo_home


def take_over(session) -> None:
    """Another trader arrives after the lease has expired (its holder stalled) and takes it."""
    assert lease.try_acquire(session.engine, session.name, "elsewhere:4242:feedbeef", "cycle --approve (run 1)",
                             lease.LEASE_SECONDS, ahead=lease.LEASE_SECONDS + 1) is None


def test_a_holder_whose_lease_was_taken_over_sends_nothing_more(tmp_path):
    home = demo_home(tmp_path / "home")
    cli(home, "targets", "approve", 1)
    env = open_environment(home, "paper")
    session = Session(env)
    try:
        now = session.now()
        with pytest.raises(lease.LeaseLost):
            with lease.hold(session, "cycle --approve (run 1)") as held:
                record_plan(session, plan_run(session, 1, now), now)
                take_over(session)
                send_planned(session, session.broker, 1, now, guard=held.check)
        assert session.broker.orders() == []  # nothing reached the broker after the takeover
        with env.engine.connect() as conn:
            states = conn.execute(sa.select(tables.broker_order.c.state)).scalars().all()
            holder = conn.execute(sa.select(tables.trading_lease.c.owner)).scalar()
        assert states and set(states) == {"planned"}  # the newcomer sends them, once
        assert holder == "elsewhere:4242:feedbeef"  # leaving the block never released the newcomer's lease
    finally:
        session.close()
        env.engine.dispose()


def test_a_check_renews_the_lease(tmp_path):
    """A holder that checks its lease holds it for a whole lease from then on."""
    home = demo_home(tmp_path / "home")
    env = open_environment(home, "paper")
    try:
        with lease.hold(env, "orders submit (run 1)") as held:
            with env.engine.begin() as conn:  # as if the renewing thread had not run for a while
                conn.execute(tables.trading_lease.update().values(expires_at="2000-01-01 00:00:00.000000"))
            held.check()
            holder = lease.live_holder(env.engine, env.name)
            assert holder is not None and holder.owner == held.owner
    finally:
        env.engine.dispose()
