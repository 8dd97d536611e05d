"""What the never-trade-twice tests share: the `tradeledger` command as a real process, homes
copied from a template, and the one check every test ends with (`assert_agrees`): the broker's
final position equals the approved run's target in every contract, nothing was sent twice, and
the ledger, beancount and the broker agree (positions per holder, `check`, reconciliation)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from decimal import Decimal as D
from pathlib import Path

from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import show_run
from tradeledger.engine.trading.orders import holder_positions
from tradeledger.engine.trust.reconcile import reconcile_session
from tradeledger.ledger.export import check, export_beancount

CLI = [sys.executable, "-m", "tradeledger.cli"]


def tl(home, *args, env: dict | None = None, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
    """Run `tradeledger --home HOME ARGS...` as its own process."""
    return subprocess.run([*CLI, "--home", str(home), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **popen)


def start(home, *args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--home", str(home), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def copy_home(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


def add_config(home: Path, text: str) -> None:
    path = Path(home) / "paper" / "config.toml"
    path.write_text(path.read_text() + "\n" + text + "\n")


def set_ib_port(home: Path, port: int) -> None:
    path = Path(home) / "paper" / "config.toml"
    path.write_text(re.sub(r"(?m)^port = \d+$", f"port = {port}", path.read_text()))


def run_targets(env, run_id: int) -> tuple[dict, dict]:
    """((holder, contract) -> target, contract -> total target) of a run."""
    run = show_run(env, run_id)
    per_holder = {(line.explain["account"], line.contract): line.target for line in run.lines}
    totals: dict[str, D] = {}
    for (_, code), target in per_holder.items():
        totals[code] = totals.get(code, D(0)) + target
    return per_holder, totals


def assert_agrees(home: Path, run_id: int, tmp: Path, except_contracts: frozenset = frozenset()) -> None:
    """Broker == approved target per contract; each contract traded by the broker at most once per
    planned order and never beyond the target; ledger == broker per holder; beancount checks;
    reconciliation is clean."""
    env = open_environment(home, "paper")
    session = Session(env)
    try:
        per_holder, totals = run_targets(env, run_id)
        snap = session.broker.snapshot()
        broker = {p.contract.code: p.quantity for p in snap.positions if p.quantity}
        for code, total in totals.items():
            if code in except_contracts:
                continue
            assert broker.get(code, D(0)) == total, (code, broker.get(code), total)
        orders = session.broker.orders()
        refs = Counter(o.order_ref for o in orders)
        assert all(n == 1 for n in refs.values()), refs  # one broker order per orderRef
        ledger = holder_positions(env.ledger, env.chart)
        for key, target in per_holder.items():
            if key[1] in except_contracts:
                continue
            assert ledger.get(key, D(0)) == target, (key, ledger.get(key), target)
        held: dict[str, D] = {}
        for (_, code), qty in ledger.items():
            held[code] = held.get(code, D(0)) + qty
        assert {c: q for c, q in held.items() if q} == broker
        path = tmp / f"check-{run_id}.beancount"
        export_beancount(env.ledger, path)
        result = check(env.ledger, path)
        assert result.ok, result
        reconciled = reconcile_session(session, "test")
        assert reconciled.clean, (reconciled.breaks, reconciled.cash)
    finally:
        session.close()
        env.engine.dispose()


# -- homes -----------------------------------------------------------------------------------------

import tempfile  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tradeledger.cli import main  # noqa: E402
from tradeledger.engine import tables  # noqa: E402


def cli(home, *args, code: int | None = 0):
    result = CliRunner().invoke(main, ["--home", str(home), *map(str, args)], catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (result.output, result.stderr)
    return result


def demo_home(home: Path, db_url: str | None = None, trading: str = "") -> Path:
    """A demo environment with run 1 computed (pending review), as a user has it after `cycle`."""
    cli(home, "init", "--demo", *(["--db-url", db_url] if db_url else []))
    if trading:
        add_config(home, "[trading]\n" + trading)
    cli(home, "cycle")
    return home


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return demo_home(tmp_path_factory.mktemp("template") / "home")


def sent_count(output: str) -> int:
    found = re.findall(r"(\d+) orders sent", output)
    assert found, output
    return int(found[-1])


def orders_recorded(home) -> int:
    env = open_environment(home, "paper")
    try:
        with env.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(tables.broker_order)).scalar()
    finally:
        env.engine.dispose()


def wait_for_lease(home, timeout: float = 60) -> None:
    env = open_environment(home, "paper")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with env.engine.connect() as conn:
                if conn.execute(sa.select(tables.trading_lease)).first() is not None:
                    return
            time.sleep(0.05)
        raise AssertionError("the first cycle never took the trading lease")
    finally:
        env.engine.dispose()


# -- one trader per environment ---------------------------------------------------------------------


def test_two_cycles_at_once_trade_once(db_url, tmp_path):
    """The issue's `cycle --approve & cycle --approve`: two real processes on one environment
    (SQLite, PostgreSQL). One plans and sends; the other waits for the lease, then finds the run
    planned and sends nothing. The broker holds the target, not twice it."""
    home = demo_home(tmp_path / "home", None if db_url.startswith("sqlite") else db_url,
                     trading="lease_wait_seconds = 120")
    first, second = start(home, "cycle", "--approve", "--run", 1), start(home, "cycle", "--approve", "--run", 1)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    sent = sorted(sent_count(out) for out, _ in outs)
    assert sent[0] == 0 and sent[1] == orders_recorded(home) > 0, outs
    assert any("was planned before" in out for out, _ in outs)
    assert_agrees(home, 1, tmp_path)


def test_a_second_trader_is_refused_with_who_and_since(db_url, tmp_path):
    """While one cycle holds the lease (paused just after its fill sync), a second `cycle
    --approve` and an `orders submit` wait briefly, then refuse, naming the holder and since when."""
    home = demo_home(tmp_path / "home", None if db_url.startswith("sqlite") else db_url,
                     trading="lease_wait_seconds = 1")
    go = tmp_path / "go"
    first = start(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_PAUSE_AT": f"settled:@{go}"})
    try:
        wait_for_lease(home)
        for args in (("cycle", "--approve", "--run", 1), ("orders", "submit", 1)):
            refused = tl(home, *args)
            assert refused.returncode == 1, refused
            line = refused.stderr.strip()
            assert len(line.splitlines()) == 1, line
            assert "being traded by `cycle --approve`" in line and f"pid {first.pid}" in line and " since " in line
    finally:
        go.touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, (out, err)
    assert sent_count(out) == orders_recorded(home) > 0
    assert_agrees(home, 1, tmp_path)


# -- a kill anywhere, then a rerun --------------------------------------------------------------------

KILL_POINTS = ["synced", "settled", "recorded", "placed:1", "placed:6", "marked:1", "marked:9", "waited"]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(point=st.sampled_from(KILL_POINTS), rerun=st.sampled_from(["same run", "new run"]))
def test_killed_anywhere_then_rerun_on_the_sim_broker(template, point, rerun):
    """`cycle --approve` SIGKILLed at a named point of its order path, then run again (the same
    run, or a new run computed and executed): nothing already sent is sent again, and the broker
    ends at the executed run's target."""
    tmp = Path(tempfile.mkdtemp(prefix="tl-kill-"))
    try:
        home = copy_home(template, tmp / "home")
        killed = tl(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_KILL_AT": point})
        assert killed.returncode == -9, (point, killed.stdout, killed.stderr)
        if rerun == "same run":
            again, run_id = tl(home, "cycle", "--approve"), 1
        else:
            computed = tl(home, "cycle", "--json")
            assert computed.returncode == 0, computed.stderr
            run_id = json.loads(computed.stdout)["run"]
            again = tl(home, "cycle", "--approve", "--run", run_id)
        assert again.returncode == 0, (point, rerun, again.stdout, again.stderr)
        assert_agrees(home, run_id, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
