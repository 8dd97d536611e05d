"""A ledger restored from a backup trades again, and an orderRef names one order of ours, ever.

The broker is the world: restoring the books does not take the account back in time. After a
restore the broker still has every order sent since the backup, with its orderRef, and the
restored ledger has none of them. Before the fix an orderRef was `tl-<env>-<order id>`, and the
restored database hands out the same ids again: run 2's orders got the orderRefs run 1 had used
after the backup, `send_planned` found them "already at the broker" and sent nothing (13 of 13
orders), the cycle waited for fills that never came, and every later run counted them in flight
for good (their cancel never confirmed: the broker's order is filled, the restored row is not), so
the strategies never reached a target again. The same happens to a new home started on an
account that traded today. An orderRef now carries a random part recorded with the planned order.

The simulated exchange's file is part of a sim environment's backup; the test puts the file as
it stands back after the restore, as an IB account would be.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from decimal import Decimal as D

from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading.orders import holder_positions
from tradeledger.engine.trust.reconcile import reconcile_session
from test_never_twice import cli, demo_home, run_targets, start, tl, wait_for_lease


def the_account_as_it_stands(home, restored) -> None:
    """The restored home's exchange file replaced by the live one (its WAL included: SQLite's backup)."""
    source, destination = sqlite3.connect(home / "paper" / "sim.db"), sqlite3.connect(restored / "paper" / "sim.db")
    try:
        source.backup(destination)
    finally:
        source.close()
        destination.close()


def test_a_restored_ledger_sends_its_new_run_and_reaches_the_target(tmp_path):
    home = demo_home(tmp_path / "home")  # run 1 computed, pending review
    backup = tmp_path / "before-run-1.tar.gz"
    cli(home, "backup", "--out", backup)
    first = json.loads(cli(home, "cycle", "--approve", "--run", 1, "--json").stdout)
    assert first["sent"]

    restored = tmp_path / "restored"
    cli(restored, "restore", backup)
    the_account_as_it_stands(home, restored)
    synced = json.loads(cli(restored, "fills", "sync", "--json").stdout)
    assert len(synced["booked"]) == len(first["sent"])  # run 1's fills, unknown to the restored books

    run_id = json.loads(cli(restored, "cycle", "--json").stdout)["run"]
    second = cli(restored, "cycle", "--approve", "--run", run_id, "--wait", "5", "--json", code=None)
    result = json.loads(second.stdout)
    assert second.exit_code == 0, (second.stdout[-2000:], second.stderr)
    assert result["already_at_broker"] == [] and len(result["sent"]) > 0, result
    assert not set(result["sent"]) & set(first["sent"]), (result["sent"], first["sent"])
    orders = json.loads(cli(restored, "orders", "list", "--json").stdout)
    assert all(re.fullmatch(rf"tl-paper-{o['id']}-[0-9a-f]{{6}}", o["order_ref"]) for o in orders), orders
    assert {o["state"] for o in orders} == {"filled"}, orders
    # run 1's fills sit in Unattributed (the restored books never planned them): every strategy is
    # at run 2's target, each orderRef reached the broker once, and the books agree with the broker
    env = open_environment(restored, "paper")
    session = Session(env)
    try:
        per_holder, _ = run_targets(env, run_id)
        held = holder_positions(env.ledger, env.chart)
        for key, target in per_holder.items():
            assert held.get(key, D(0)) == target, (key, held.get(key), target)
        refs = Counter(o.order_ref for o in session.broker.orders())
        assert all(n == 1 for n in refs.values()), refs
        assert reconcile_session(session, "test").clean
    finally:
        session.close()
        env.engine.dispose()


def test_a_backup_taken_mid_cycle_restores_with_no_trader(tmp_path):
    """A backup taken while a cycle holds the trading lease (paused after its fill sync) restores a
    copy nobody trades: before the fix the copy kept the lease row, so on this host, while the
    original cycle lived, the restored environment's own `orders submit` was refused as "being
    traded by `cycle --approve` (pid ...)", a process of another environment."""
    home = demo_home(tmp_path / "home", trading="lease_wait_seconds = 1")
    go = tmp_path / "go"
    first = start(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_PAUSE_AT": f"settled:@{go}"})
    try:
        wait_for_lease(home)
        reached = tmp_path / "go.reached"  # the cycle is at its pause point: run 1's approval committed
        deadline = time.monotonic() + 120
        while not reached.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reached.exists(), "the cycle never reached its pause point"
        backup = tmp_path / "mid-cycle.tar.gz"
        cli(home, "backup", "--out", backup)
        restored = tmp_path / "restored"
        cli(restored, "restore", backup)
        submitted = tl(restored, "orders", "submit", 1, "--wait", "5")
        assert "being traded" not in submitted.stderr, submitted.stderr
        assert submitted.returncode == 0, (submitted.stdout, submitted.stderr)
    finally:
        go.touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, (out, err)
