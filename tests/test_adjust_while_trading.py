"""A strategy's position moves by hand only while nobody trades: `adjust` takes the trading lease.

A cycle plans from the positions it reads, then records the plan and sends it. Before the fix an
`adjust adopt` (or transfer, attribute, manual-close, reverse) booked between the two: the cycle
sent the plan made from the positions before it, so the strategy ended beyond its run's target by
what the adjustment moved, and the cycle exited 0 saying it was done. Now every `adjust` books
under the environment's trading lease: while a cycle holds it, `adjust` waits
`[trading] lease_wait_seconds`, then refuses with one line naming the holder; once the cycle is
done, it books.
"""

from __future__ import annotations

import json
from decimal import Decimal as D

from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.trading.orders import holder_positions
from test_never_twice import cli, current_mes, demo_home, run_targets, start, tl, wait_for_lease


def test_an_adoption_while_a_cycle_plans_is_refused_then_books(tmp_path):
    home = demo_home(tmp_path / "home", trading="lease_wait_seconds = 1")
    mes = current_mes(home)
    cli(home, "sim", "transfer-in", mes, 2, "--price", "6000")
    assert json.loads(cli(home, "reconcile", "--json").stdout)["clean"]  # 2 MES adopted into Unattributed
    go = tmp_path / "go"
    cycle = start(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_PAUSE_AT": f"planned:@{go}"})
    try:
        wait_for_lease(home)
        adopt = ("adjust", "adopt", mes, 2, "--strategy", "trend_fast", "--reason", "mine", "--yes")
        refused = tl(home, *adopt)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and "being traded by `cycle --approve`" in line, line
    finally:
        go.touch()
    out, err = cycle.communicate(timeout=300)
    assert cycle.returncode == 0, (out, err)
    env = open_environment(home, "paper")
    try:
        per_holder, _ = run_targets(env, 1)
        held = holder_positions(env.ledger, env.chart)
        for key, target in per_holder.items():  # every strategy at its run's target, MES too
            assert held.get(key, D(0)) == target, (key, held.get(key), target)
        assert held[(None, mes)] == 2
    finally:
        env.engine.dispose()
    booked = tl(home, *adopt)  # nobody trades now
    assert booked.returncode == 0, booked.stderr
