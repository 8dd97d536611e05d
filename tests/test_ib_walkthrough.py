"""docs/ib.md's walk-through, run as written against the simulated gateway: every command of
"The whole demo against the simulated gateway" through the real ib_async client on a socket, each
exiting 0, every price it types within 2% of the market `ibsim seed-demo` made (a trade at the
screen far from the market would put a large P&L into Unattributed without a word), the external
trade booked once into Unattributed and `reconcile` clean."""

from __future__ import annotations

import json
import re
import shlex
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner

from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "ib.md"
ACCOUNT = "DU1234567"
NEAR = D("0.02")


def walkthrough() -> list[list[str]]:
    """The section's commands in order (the gateway's own `ibsim serve` left out: the test runs it)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The whole demo against the simulated gateway", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        line = line.strip()
        if line.startswith("tradeledger "):
            words = shlex.split(line.split("#", 1)[0])
            if words[1:2] == ["--home"] and words[3:5] != ["ibsim", "serve"]:
                commands.append(words[3:])
    return commands


def test_the_walkthrough_is_found():
    commands = walkthrough()
    assert ["init", "--broker", "ib", "--ib-port", "4002", "--account", ACCOUNT] in commands
    assert any(c[:2] == ["ibsim", "trade"] for c in commands) and any(c[:2] == ["ibsim", "correct"] for c in commands)


def typed_price(args: list[str]) -> tuple[str, D] | None:
    """(contract, price) a walk-through command types, if it types one."""
    if args[:2] == ["ibsim", "trade"]:
        return args[2], D(args[4])
    if args[:2] == ["ibsim", "price"]:
        return args[2], D(args[3])
    return None


@pytest.fixture
def gateway(tmp_path):
    home = tmp_path / "tl-ib"
    (home / "paper").mkdir(parents=True)
    exchange = SimExchange(home / "paper" / "ibsim.db", ACCOUNT)  # what `ibsim serve` opens
    server = IBSimServer(exchange, poll_interval=0.02).start()
    yield home, exchange, server.port
    server.stop()
    exchange.close()


DATED = re.compile(r"([A-Z]+)[FGHJKMNQUVXZ]\d\d")


def of_the_day(exchange, code: str) -> str:
    """The contract the gateway trades for a dated code the docs type: `ibsim seed-demo` prices
    each instrument's current contract by the wall clock, so the docs' BTCZ26 (December 2026's) is
    read as BTC's contract priced at the gateway today (itself while it is current)."""
    match = DATED.fullmatch(code)
    if match is None or exchange.price(code) is not None:
        return code
    [today] = [c.code for c in exchange.contracts() if DATED.fullmatch(c.code) and
               DATED.fullmatch(c.code).group(1) == match.group(1) and exchange.price(c.code) is not None]
    return today


def _run(home, args):
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    assert result.exit_code == 0, f"{' '.join(args)}: {result.output}"
    return result.stdout


def test_the_walkthrough_runs_at_the_seeded_market(gateway):
    home, exchange, port = gateway
    for args in walkthrough():
        args = [str(port) if a == "4002" else of_the_day(exchange, a) for a in args]
        if "EXEC_ID" in args:
            fills = json.loads(_run(home, ["fills", "list", "--json"]))
            fill = next(f for f in fills if f["contract"].startswith("MES"))
            market = exchange.price(fill["contract"])
            price = D(args[args.index("--price") + 1])
            assert abs(price - market) <= NEAR * market, f"{' '.join(args)}: the market is {market}"
            args = [fill["exec_id"] if a == "EXEC_ID" else a for a in args]
        typed = typed_price(args)
        if typed is not None:
            contract, price = typed
            market = exchange.price(contract)
            assert market is not None and abs(price - market) <= NEAR * market, \
                f"{' '.join(args)}: the seeded market is {market}"
        output = _run(home, args)
        if args == ["reconcile"]:
            assert "clean" in output, output
        if args[:2] == ["fills", "sync"] and any(a[:2] == ["ibsim", "trade"] for a in walkthrough()):
            positions = json.loads(_run(home, ["positions", "--json"]))
            assert any(p["strategy"] == "unattributed" for p in positions), positions


def test_a_price_far_from_the_market_is_warned_about(gateway):
    home, exchange, port = gateway
    _run(home, ["init", "--broker", "ib", "--ib-port", str(port), "--account", ACCOUNT])
    _run(home, ["ibsim", "seed-demo"])
    btc = of_the_day(exchange, "BTCZ26")
    market = exchange.price(btc)
    far = CliRunner().invoke(main, ["--home", str(home), "ibsim", "trade", btc, "1", "90005"])
    assert far.exit_code == 0 and f"warning: 90005 is 89% away from {btc}'s market price {market}" in far.stderr
    near = CliRunner().invoke(main, ["--home", str(home), "ibsim", "trade", btc, "1", str(market + 5)])
    assert near.exit_code == 0 and "warning" not in near.stderr
