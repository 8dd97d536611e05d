"""A year of the demo: 260 trading days through every quarterly and monthly roll and expiry of its
futures, one strategy on carry + trend; the ledger exports to a beancount file that loads with zero
errors and whose balances equal ours, and the broker reconciles clean."""

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine import tables
from tradeledger.engine.setup.environment import open_environment
from tradeledger.ledger.db import read_connection


@pytest.mark.slow
def test_a_year_of_demo_trading(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["--home", str(home), "demo", "--days", "260"], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-2000:]
    assert "check: clean" in result.output and "reconcile: clean" in result.output
    checked = json.loads(CliRunner().invoke(main, ["--home", str(home), "check", "--json"]).output)
    assert checked["ok"] is True
    env = open_environment(home, "paper")
    with read_connection(env.engine) as conn:
        spreads = conn.execute(sa.select(tables.broker_order.c.contract).where(
            tables.broker_order.c.contract.like("%/%"))).scalars().all()
        runs = conn.execute(sa.select(tables.target_line.c.explain).where(
            tables.target_line.c.strategy == "trend_slow")).scalars().all()
    rolled = {code.split("/")[0][:-3] for code in spreads}
    # every quarterly future the demo holds rolled by spread at least once (MES, MNQ: four times)
    assert {"MES", "MNQ"} <= rolled
    assert sum(1 for code in spreads if code.startswith("MESZ26") or code.startswith("MESH27")
               or code.startswith("MESM27") or code.startswith("MESU27")) >= 3
    # the carry + trend strategy's runs carry each rule's forecast and the carry figures
    last = json.loads(runs[-1])
    assert set(last["rule_forecasts"]) == {"carry", "ewmac_32_128"}
    assert last["carry"]["priced_contract"] and last["carry"]["next_contract"]
    # its trend rule and volatility read the back-adjusted series, never the spliced closes
    assert last["signal_prices"] == f"{last['signal_instrument']} back-adjusted (Panama)"
    # nothing left in an expired contract
    positions = json.loads(CliRunner().invoke(main, ["--home", str(home), "positions", "--json"]).output)
    rows = positions if isinstance(positions, list) else positions["rows"]
    assert all(not r["contract"].endswith(("26",)) for r in rows if r["contract"] not in ("SPY", "TLT", "GLD", "EFA", "IEF"))
