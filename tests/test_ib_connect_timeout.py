"""`[ib] connect_timeout`: how long a connect waits for the handshake and each start-up sync request.

A big account's sync (many orders, many fills) can take longer than the default 4 s, and a connect
whose sync is not complete in time fails; so the environment's config.toml sets it. A value that is
not a number of seconds in (0, 600] is refused when the file is read, in one line naming the key.
"""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from test_ib_faults import ACCOUNT
from tradeledger.broker.base import BrokerDisconnected
from tradeledger.broker.ibsim import IBSimServer
from tradeledger.broker.simexchange import SimExchange
from tradeledger.cli import main
from tradeledger.engine.setup.environment import (
    MAX_CONNECT_TIMEOUT, check_connect_timeout, init_environment, open_environment,
)
from tradeledger.engine.setup.session import Session


def ib_home(tmp_path, port: int, line: str = ""):
    home = tmp_path / "home"
    init_environment(home, "paper", "ib", ACCOUNT, ib_port=port)
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text().replace("[ib]\n", f"[ib]\n{line}\n", 1))
    return home


def test_the_default_is_four_seconds(tmp_path):
    session = Session(open_environment(ib_home(tmp_path, 4002), "paper"))
    assert session.settings.ib_connect_timeout == 4.0


def test_the_configured_timeout_governs_the_connect(tmp_path):
    exchange = SimExchange(tmp_path / "ibsim.db", ACCOUNT)
    server = IBSimServer(exchange, poll_interval=0.02).start()
    try:
        server.withhold_answers("executions")  # a sync that never completes: the timeout decides
        session = Session(open_environment(ib_home(tmp_path, server.port, "connect_timeout = 0.75"), "paper"))
        with pytest.raises(BrokerDisconnected, match=r"executions request timed out within 0\.75s"):
            session.broker
    finally:
        server.stop()
        exchange.close()


@pytest.mark.parametrize("value", ["0", "-1", "601", '"30"', "true", "nan", "inf"])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, value):
    home = ib_home(tmp_path, 4002, f"connect_timeout = {value}")
    result = CliRunner().invoke(main, ["--home", str(home), "config", "check"], catch_exceptions=False)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "config.toml" in line and "ib.connect_timeout must be a number of seconds" in line, line


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(), st.text(),
                 st.none()))
def test_a_timeout_is_accepted_exactly_when_it_is_seconds_in_range(value):
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and not math.isnan(value) and 0 < value <= MAX_CONNECT_TIMEOUT)
    if ok:
        assert check_connect_timeout(value) == float(value)
    else:
        with pytest.raises(ValueError, match="ib.connect_timeout must be a number of seconds"):
            check_connect_timeout(value)
