"""The simulated broker's screen warns about a trade a trader would not mean to make: at a price far
from the market, or in a contract that has no market at all (a code typed from a walk-through after
its contract rolled); the trade is still made, as typed, exit 0."""

import datetime as dt

from support import SPY_CORE_CONFIG, future, sim_world, tl

CONFIG = SPY_CORE_CONFIG + """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"

[strategies.trend]
instruments = { MES = 1 }
"""
T0 = dt.datetime(2031, 3, 4, 15, 0, tzinfo=dt.timezone.utc)


def test_a_trade_in_a_contract_without_a_market_is_warned_about(tmp_path):
    home = tmp_path / "home"
    sim_world(home, CONFIG, T0, future("MES", "MESM31", "20310620", "6000"))
    unpriced = tl(home, "sim", "trade", "MESH31", 1, 6000)
    assert "warning: MESH31 has no market at the simulated exchange" in unpriced.stderr
    assert "is MESH31 the contract of the day?" in unpriced.stderr
    assert "broker executed" in unpriced.stdout  # made as typed: the warning refuses nothing
    priced = tl(home, "sim", "trade", "MESM31", 1, 6001)
    assert "warning" not in priced.stderr
    far = tl(home, "sim", "trade", "MESM31", 1, 9000)
    assert "warning: 9000 is 50% away from MESM31's market price 6000" in far.stderr
    assert "no market" not in far.stderr

