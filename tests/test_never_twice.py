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

from tradeledger.engine.setup.config import current_contract
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
    path.write_text(re.sub(r"(?m)^port = \d+", f"port = {port}", path.read_text()))


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


def current_mes(home) -> str:
    """The MES contract the demo trades today (its exchange's clock is the wall clock): named, it was
    MESZ26, which expires on 2026-12-18 and is no longer traded from the 10th."""
    env = open_environment(home, "paper")
    session = Session(env)
    try:
        return current_contract(session.config.instruments["MES"], env.now().date()).code
    finally:
        session.close()
        env.engine.dispose()


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


# -- partial fills and timeouts ---------------------------------------------------------------------


def test_a_partial_fill_is_said_and_the_next_cycle_counts_it(template, tmp_path):
    """The issue's partial fill: the first order placed fills 1 and is held. The cycle stops waiting,
    names the order still working and exits non-zero; a rerun of the same run sends nothing (the
    order is its own, counted); a new run cancels it (confirmed) and trades only the rest."""
    home = copy_home(template, tmp_path / "home")
    assert tl(home, "sim", "fault", "partial-fill", "--qty", "1").returncode == 0
    first = tl(home, "cycle", "--approve", "--run", 1, "--wait", "0.5")
    assert first.returncode == 1, first
    working = [line for line in first.stderr.splitlines() if "still working" in line]
    assert len(working) == 1 and "(1 filled, partial" in working[0], first.stderr
    ref = re.search(r"(tl-paper-\d+-[0-9a-f]+)", working[0]).group(1)
    again = tl(home, "cycle", "--approve", "--run", 1, "--wait", "0.5")
    assert again.returncode == 1 and sent_count(again.stdout) == 0, again
    computed = json.loads(tl(home, "cycle", "--json").stdout)
    second = tl(home, "cycle", "--approve", "--run", computed["run"], "--wait", "5")
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert f"{ref} " in second.stdout and "cancelled at the broker (confirmed)" in second.stdout
    assert_agrees(home, computed["run"], tmp_path)


# -- what was reviewed is what trades ----------------------------------------------------------------


def test_the_reviewed_run_is_the_run_that_trades(template, tmp_path):
    """A person reviews run 1; `cycle --approve` executes run 1 (no new run, nothing superseded).
    With two runs pending, `--approve` alone refuses and names both the older run and the command;
    an unattended cycle refuses while a run awaits review, and records it when it trades."""
    home = copy_home(template, tmp_path / "home")
    shown = cli(home, "targets", "show", 1, "--json")
    assert json.loads(shown.stdout)["state"] == "pending"
    traded = cli(home, "cycle", "--approve", "--json")
    result = json.loads(traded.stdout)
    assert result["run"] == 1 and result["sent"]
    runs = json.loads(cli(home, "targets", "list", "--json").stdout)
    assert [(r["id"], r["state"]) for r in runs] == [(1, "approved")]
    assert_agrees(home, 1, tmp_path)

    computed = cli(home, "cycle")
    assert "execute exactly this run with: tradeledger cycle --approve --run 2" in computed.stdout
    cli(home, "cycle")  # run 3; run 2 was pending: said, not silent
    refused = cli(home, "cycle", "--approve", code=1)
    assert "run 2" in refused.stderr and "pending review" in refused.stderr
    assert "tradeledger cycle --approve --run 3" in refused.stderr
    unattended = cli(home, "cycle", "--unattended", code=1)
    assert "pending review" in unattended.stderr
    cli(home, "targets", "reject", 2, "--note", "superseded by 3")
    cli(home, "targets", "reject", 3, "--note", "not today")
    done = json.loads(cli(home, "cycle", "--unattended", "--json").stdout)
    run = json.loads(cli(home, "targets", "show", done["run"], "--json").stdout)
    assert run["unattended"] is True and "no person reviewed" in run["review_note"]
    assert_agrees(home, done["run"], tmp_path)


# -- limits that speak ---------------------------------------------------------------------------------


def test_a_refused_order_exits_non_zero_and_a_resubmission_says_why(template, tmp_path):
    """TLT's own limit (shares) refuses its order: `targets show` flags it before approval, the
    cycle trades every other line and exits 1 with one line for TLT; raising the limit and
    submitting the run again sends nothing and says why (a run is planned once); a new run under a
    clipping limit sends what the limit allows."""
    home = copy_home(template, tmp_path / "home")
    add_config(home, "[limits.instruments.TLT]\nmax_order_qty = 1000")
    shown = cli(home, "targets", "show", 1)
    assert "TLT will be refused by a limit" in shown.stderr and "1000 shares" in shown.stderr
    cycle = tl(home, "cycle", "--approve", "--run", 1)
    assert cycle.returncode == 1, cycle
    refused = [line for line in cycle.stderr.splitlines() if "refused" in line]
    assert len(refused) == 1 and refused[0].startswith("error: TLT refused: order of") and \
        "exceeds TLT's max_order_qty 1000 shares" in refused[0], cycle.stderr
    assert_agrees(home, 1, tmp_path, except_contracts=frozenset({"TLT"}))

    path = Path(home) / "paper" / "config.toml"
    path.write_text(path.read_text().replace("max_order_qty = 1000", "max_order_qty = 1000\nclip = [\"max_order_qty\"]"))
    again = tl(home, "orders", "submit", 1)
    assert again.returncode == 1 and sent_count(again.stdout) == 0
    assert "TLT: refused: order of" in again.stdout and "a run is planned once" in again.stdout
    assert f"{current_mes(home)}: already sent" in again.stdout

    computed = json.loads(tl(home, "cycle", "--json").stdout)
    clipped = tl(home, "cycle", "--approve", "--run", computed["run"])
    assert clipped.returncode == 0, clipped
    assert "TLT clipped" in clipped.stderr and "clipped to 1000 shares" in clipped.stderr
    env = open_environment(home, "paper")
    try:
        held = sum((q for (_, code), q in holder_positions(env.ledger, env.chart).items() if code == "TLT"), D(0))
        assert held == 1000
    finally:
        env.engine.dispose()
    assert_agrees(home, computed["run"], tmp_path, except_contracts=frozenset({"TLT"}))


# -- failures are loud ----------------------------------------------------------------------------------


def test_an_unbookable_execution_fails_fills_sync_and_the_cycle(template, tmp_path):
    """`sim trade MESZ26 1.5` (MES's contract of the day): half a contract cannot be booked. `fills
    sync` lists it with the error and exits 1; so does the cycle, which trades its run all the same."""
    home = copy_home(template, tmp_path / "home")
    trade = tl(home, "sim", "trade", current_mes(home), "1.5", "6000")
    exec_id = re.search(r"\((\S+)\)", trade.stdout).group(1)
    sync = tl(home, "fills", "sync")
    assert sync.returncode == 1
    assert "1 executions could not be booked" in sync.stderr
    assert f"execution {exec_id} not booked" in sync.stderr and "whole number" in sync.stderr
    as_json = json.loads(tl(home, "fills", "sync", "--json").stdout)
    assert [f["exec_id"] for f in as_json["failed"]] == [exec_id]
    cycle = tl(home, "cycle", "--approve", "--run", 1)
    assert cycle.returncode == 1 and f"execution {exec_id} not booked" in cycle.stderr
    assert sent_count(cycle.stdout) > 0


# -- whole contracts, and interrupted runs found ---------------------------------------------------------


def test_futures_move_in_whole_contracts_on_every_path(template, tmp_path):
    """Transfer, adopt, attribute and manual close refuse half a contract, as fills do."""
    home = copy_home(template, tmp_path / "home")
    cli(home, "cycle", "--approve", "--run", 1)
    mes = current_mes(home)
    assert tl(home, "sim", "trade", mes, "1", "6000").returncode == 0  # one unattributed contract to adopt
    assert tl(home, "fills", "sync").returncode == 0
    for args in (("adjust", "transfer", mes, "0.5", "--from", "trend_fast", "--to", "trend_slow"),
                 ("adjust", "adopt", mes, "0.5", "--strategy", "trend_fast")):
        refused = cli(home, *args, "--reason", "test", "--yes", code=1)
        assert f"{mes} is a future: whole contracts only, not 0.5" in refused.output, refused.output
    assert_agrees(home, 1, tmp_path, except_contracts=frozenset({mes}))


def test_monitor_finds_the_planned_orders_of_an_interrupted_run(template, tmp_path):
    """Killed right after its plan was recorded, a run leaves planned orders: `monitor` raises each
    at once as order_stuck, naming the command that resumes the run; the rerun clears them."""
    home = copy_home(template, tmp_path / "home")
    killed = tl(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_KILL_AT": "recorded"})
    assert killed.returncode == -9
    monitor = tl(home, "monitor", "--json")
    assert monitor.returncode == 1
    stuck = [f for f in json.loads(monitor.stdout) if f["kind"] == "order_stuck"]
    assert stuck and all("tradeledger cycle --approve --run 1" in f["detail"] for f in stuck), monitor.stdout
    assert tl(home, "cycle", "--approve").returncode == 0
    again = json.loads(tl(home, "monitor", "--json").stdout)
    assert not [f for f in again if f["kind"] == "order_stuck"]
    assert_agrees(home, 1, tmp_path)


# -- through the simulated IB gateway ------------------------------------------------------------------


class Gateway:
    """`tradeledger ibsim serve --port 0` as its own process, on a home's gateway state file."""

    def __init__(self, home: Path):
        self.process = start(home, "ibsim", "serve", "--port", 0)
        line = self.process.stdout.readline()
        found = re.search(r"listening on [\d.]+:(\d+)", line)
        assert found, (line, self.process.stderr.read() if self.process.poll() is not None else "")
        self.port = int(found.group(1))

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=30)


@pytest.fixture(scope="module")
def ib_template(tmp_path_factory) -> Path:
    """A demo over the gateway: run 1 computed (pending), the gateway's state beside it."""
    home = tmp_path_factory.mktemp("ib-template") / "home"
    (home / "paper").mkdir(parents=True)
    gateway = Gateway(home)
    try:
        for args in (("init", "--broker", "ib", "--ib-port", gateway.port, "--account", "DU1234567"),
                     ("ibsim", "seed-demo"), ("cycle",)):
            done = tl(home, *args)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
    finally:
        gateway.stop()
    return home


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(point=st.sampled_from(["settled", "placed:1", "placed:4", "marked:2", "waited"]))
def test_killed_anywhere_then_rerun_through_the_ib_gateway(ib_template, point):
    """The same property over the TWS protocol: `cycle --approve` killed at a named point while
    talking to `tradeledger ibsim serve`, then run again: every order reaches the gateway once and
    the gateway's account ends at the run's target, the books agreeing with it."""
    tmp = Path(tempfile.mkdtemp(prefix="tl-ib-kill-"))
    try:
        home = copy_home(ib_template, tmp / "home")
        gateway = Gateway(home)
        try:
            set_ib_port(home, gateway.port)
            killed = tl(home, "cycle", "--approve", "--run", 1, env={"TRADELEDGER_KILL_AT": point})
            assert killed.returncode == -9, (point, killed.stdout, killed.stderr)
            again = tl(home, "cycle", "--approve")
            assert again.returncode == 0, (point, again.stdout, again.stderr)
            assert_agrees(home, 1, tmp)
        finally:
            gateway.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
