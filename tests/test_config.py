"""The trading configuration: validation with clear errors, and the expiry calendar."""

import datetime as dt
import tomllib
from decimal import Decimal

import pytest

from tradeledger.engine.setup.config import current_contract, instrument_of_contract, parse_trading_config
from tradeledger.engine.setup.environment import ConfigError

BASE = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = "0.1"
expiry_months = "FGHJKMNQUVXZ"
expiry_day = 20
roll_offset_days = 5

[instruments.ES]
type = "future"
currency = "USD"
multiplier = "50"
expiry_months = "HMUZ"
expiry_day = 15
roll_offset_days = 7

[instruments.6E]
type = "future"
currency = "USD"
multiplier = "125000"
expiry_months = "HMUZ"

[instruments.SPY]
type = "share"
currency = "USD"

[strategies.trend_fast]
instruments = { ES = "0.5", MBT = "0.5" }
"""


def parse(extra: str = "", base: str = BASE):
    return parse_trading_config(tomllib.loads(base + extra))


def test_a_valid_config():
    config = parse()
    assert config.instruments["MBT"].multiplier == Decimal("0.1")
    assert config.strategies["trend_fast"].account_name == "Trend_fast".replace("_", "-")


@pytest.mark.parametrize("base, extra, message", [
    (BASE.replace('multiplier = "0.1"', 'multiplier = "0"'), "", "instruments.MBT.multiplier must be positive"),
    (BASE.replace('multiplier = "0.1"', 'multiplier = "-1"'), "", "instruments.MBT.multiplier must be positive"),
    (BASE.replace('multiplier = "0.1"', 'multiplier = "nan"'), "", "not a finite number"),
    (BASE.replace('multiplier = "0.1"', 'multiplier = "ten"'), "", "not a number"),
    (BASE.replace('type = "share"', 'type = "bond"'), "", "instruments.SPY.type must be one of"),
    (BASE.replace('currency = "USD"\n\n[strategies', 'currency = "US"\n\n[strategies'), "", "3-letter currency"),
    (BASE.replace('expiry_months = "HMUZ"\nexpiry_day = 15', 'expiry_months = "HMUA"\nexpiry_day = 15'), "",
     "expiry_months must be month codes"),
    (BASE, '[mappings]\nBTC = "MBT"\n', "mapping BTC -> MBT names an unknown instrument"),
    (BASE, '[strategies.other]\ninstruments = { NOPE = "1" }\n', "unknown instrument 'NOPE'"),
    (BASE, '[strategies.trend-fast]\ninstruments = { ES = "1" }\n', "both map to 'Trend-fast'"),
    (BASE, '[strategies.Unattributed]\ninstruments = { ES = "1" }\n', "reserved"),
    (BASE, '[strategies.s2]\ninstruments = {}\n', "non-empty table of weights"),
    (BASE, '[strategies.s2]\nrisk_target = "0"\ninstruments = { ES = "1" }\n', "risk_target must be positive"),
    (BASE, '[portfolio]\ncapital = "-5"\n', "portfolio.capital must be"),
])
def test_bad_config_is_refused_with_the_field_named(base, extra, message):
    with pytest.raises(ConfigError, match="config: ") as error:
        parse(extra, base)
    assert message in str(error.value)


def test_the_current_contract_follows_the_expiry_calendar():
    config = parse()
    es, mbt = config.instruments["ES"], config.instruments["MBT"]
    # ES: quarterly, expiring on the 15th, rolled 7 days before
    assert current_contract(es, dt.date(2026, 12, 1)).code == "ESZ26"
    assert current_contract(es, dt.date(2026, 12, 8)).code == "ESH27"  # within the roll offset
    assert current_contract(es, dt.date(2026, 12, 8)).expiry == "202703"
    # MBT: monthly, expiring on the 20th (a Sunday in December 2026: the Friday before, the 18th),
    # rolled 5 days before
    assert current_contract(mbt, dt.date(2026, 12, 12)).code == "MBTZ26"
    assert current_contract(mbt, dt.date(2026, 12, 13)).code == "MBTF27"
    # a root that starts with a digit maps onto a valid commodity name
    assert current_contract(config.instruments["6E"], dt.date(2026, 1, 2)).code == "X6EH26"
    assert current_contract(config.instruments["SPY"], dt.date(2026, 1, 2)).code == "SPY"


def test_contracts_map_back_to_their_instrument():
    config = parse()
    assert instrument_of_contract(config, "MBTZ26").name == "MBT"
    assert instrument_of_contract(config, "X6EH26").name == "6E"
    assert instrument_of_contract(config, "SPY").name == "SPY"
    assert instrument_of_contract(config, "AAPL") is None
    assert instrument_of_contract(config, "ESZ2X") is None
