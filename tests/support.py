"""Setup that several test files share (imported as `support`: pyproject puts tests/ on sys.path).

`sim_world` initialises a paper environment on the simulated broker, sets the exchange's clock
and lists contracts at their first prices: what the cycle, daemon, reconciliation and monitor
tests all start from. The fixtures in conftest.py use the same helpers.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path

from tradeledger.broker.base import Broker, Contract
from tradeledger.engine.context import Context
from tradeledger.engine.setup.config import TradingConfig, to_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.trading.fills import SyncReport, sync_fills

Listing = Callable[[TradingConfig], Iterable[tuple[Contract, Decimal]]]


# One share (SPY) and one strategy holding it: what the cash, actions and Flex tests configure.
SPY_CORE_CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.core]
instruments = { SPY = 1 }
"""


def future(instrument: str, code: str, expiry: str, price) -> Listing:
    """A futures contract of a configured instrument, listed at `price`."""
    return lambda config: [(to_contract(config.instruments[instrument], code, expiry), Decimal(price))]


def sim_world(home: Path, config: str, clock: dt.datetime, *listings: Listing, db_url: str | None = None,
              connect: bool = False) -> tuple[Context, Session]:
    """An initialised sim environment (config.toml's extra tables: `config`) and its Session, the
    exchange's clock at `clock`, every listed contract added at its price; connected if asked."""
    env = init_environment(home, "paper", "sim", None, db_url=db_url, config_extra=config)
    session = Session(env)
    exchange = session.exchange()
    exchange.set_clock(clock)
    for listing in listings:
        for contract, price in listing(session.config):
            exchange.add_contract(contract)
            exchange.set_price(contract.code, price)
    if connect:
        session.broker
    return env, session


def tl(home: Path, *args, code: int | None = 0):
    """`tradeledger --home HOME ARGS...` as a user types it, in this process (click's runner); its
    exit code is asserted unless `code` is None."""
    from click.testing import CliRunner
    from tradeledger.cli import main
    result = CliRunner().invoke(main, ["--home", str(home), *map(str, args)], catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, (args, result.exit_code, result.stdout[-3000:], result.stderr[-2000:])
    return result


def tl_json(home: Path, *args, code: int | None = 0):
    """`tl` with `--json`, its output read."""
    return json.loads(tl(home, *args, "--json", code=code).stdout)


def booked_once(processes) -> list[dict]:
    """Processes racing to book one thing (each printing its `--json` result): all exit 0, exactly
    one booked it and the others are replays of that entry. Their results, for more checks."""
    outs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), outs
    said = [json.loads(out) for out, _ in outs]
    assert sorted(s["booked"] for s in said) == [False] * (len(said) - 1) + [True], said
    [booked] = [s for s in said if s["booked"]]
    assert all(s["replay"] and s["entry"] == booked["entry"] for s in said if not s["booked"]), said
    return said


def one_line_error(result) -> str:
    """A refusal's stderr: exactly one line, `error: ...` (what every refusal prints)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def demo_home(tmp_path_factory, name: str) -> Path:
    """A home the demo ran in (`tradeledger --home HOME demo`), for a module's read-only walks."""
    from click.testing import CliRunner
    from tradeledger.cli import main
    home = tmp_path_factory.mktemp(name) / "home"
    result = CliRunner().invoke(main, ["--home", str(home), "demo"])
    assert result.exit_code == 0, result.output
    return home


def sync_until_commissions_booked(ctx: Context, broker: Broker, timeout: float = 10.0) -> SyncReport:
    """Sync fills until none waits for its commission; what those syncs did (they book no new fill).

    IB reports an execution (execDetails) and its commission (commissionReport) as two messages,
    and the gateway may send the second later. A sync that runs between the two books the fill
    with its commission pending -- by design: a later sync books it -- and `wait_for_fills`
    returns as soon as the orders are filled, whatever their commissions. So a test that goes on
    to check commissions (or counts the next sync's replays) waits here for that condition, not
    for a time. The simulated gateway sends both in one burst, yet a loaded machine can stall it
    between them; with its `commission_delay` the spread test's `replays >= 2` and
    test_ib_faults' commission check failed every time without this wait."""
    deadline = time.monotonic() + timeout
    total = SyncReport()
    while True:
        report = sync_fills(ctx, broker)
        total = total.then(report)
        if not report.pending_commissions:
            break
        assert time.monotonic() < deadline, f"commissions still pending after {timeout}s: {report}"
        time.sleep(0.02)
    assert not total.booked and not total.failed, total  # only late commissions may come in here
    return total
