"""An unknown strategy, instrument or contract is an error in every command that takes one: one line
naming the unknown thing and listing (or pointing to) the known ones, exit 1, nothing booked.

The options and arguments that take a name are found by walking the command tree (by parameter
name), so a new one fails `test_every_name_taking_parameter_has_a_case` until it is given one."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from tradeledger.broker.simexchange import SimExchange
from tradeledger.cli import main
from tradeledger.errors import UnknownName

NAME_PARAMS = {"strategy", "source", "target", "contract", "instrument", "instruments", "signal", "execution",
               "ticker"}
BAD = "NOSUCH"

# (command path, parameter) -> the command line with {bad} where the unknown name goes.
CASES: dict[tuple[tuple[str, ...], str], list[str]] = {
    (("adjust", "adopt"), "contract"): ["{bad}", "1", "--strategy", "tactical", "--reason", "x", "--yes"],
    (("adjust", "adopt"), "strategy"): ["SPY", "1", "--strategy", "{bad}", "--reason", "x", "--yes"],
    (("adjust", "attribute"), "strategy"): ["any.fill", "--strategy", "{bad}", "--reason", "x", "--yes"],
    (("adjust", "manual-close"), "contract"): ["{bad}", "--strategy", "tactical", "--price", "1", "--qty", "1",
                                               "--reason", "x", "--yes"],
    (("adjust", "manual-close"), "strategy"): ["GLD", "--strategy", "{bad}", "--price", "1", "--qty", "1",
                                               "--reason", "x", "--yes"],
    (("adjust", "transfer"), "contract"): ["{bad}", "1", "--from", "tactical", "--to", "etf_trend", "--reason", "x",
                                           "--yes"],
    (("adjust", "transfer"), "source"): ["GLD", "1", "--from", "{bad}", "--to", "etf_trend", "--reason", "x", "--yes"],
    (("adjust", "transfer"), "target"): ["GLD", "1", "--from", "tactical", "--to", "{bad}", "--reason", "x", "--yes"],
    (("data", "adjusted"), "instrument"): ["{bad}"],
    (("data", "fetch"), "instruments"): ["MES", "{bad}"],
    (("instruments", "contracts"), "instrument"): ["{bad}"],
    (("instruments", "map"), "signal"): ["{bad}", "MES"],
    (("instruments", "map"), "execution"): ["MES", "{bad}"],
    (("positions",), "strategy"): ["--strategy", "{bad}"],
    (("roll", "set"), "instrument"): ["{bad}", "force"],
    (("sim", "price"), "contract"): ["{bad}", "100"],
    (("sim", "settle"), "contract"): ["{bad}", "100"],
    (("sim", "trade"), "contract"): ["{bad}", "1", "100"],
    (("sim", "transfer-in"), "contract"): ["{bad}", "1", "--price", "100"],
    (("sim", "dividend"), "ticker"): ["{bad}", "0.10"],
    (("sim", "split"), "ticker"): ["{bad}", "2:1"],
    (("ibsim", "price"), "contract"): ["{bad}", "100", "--state", "{state}"],
    (("ibsim", "trade"), "contract"): ["{bad}", "1", "100", "--state", "{state}"],
    (("ibsim", "transfer-in"), "contract"): ["{bad}", "1", "--price", "100", "--state", "{state}"],
}


def _walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _walk(command, path + (name,))
        else:
            for param in command.params:
                if param.name in NAME_PARAMS:
                    yield path + (name,), param.name


def test_every_name_taking_parameter_has_a_case():
    assert set(_walk(main)) == set(CASES)


def test_the_message_names_it_suggests_and_lists():
    message = str(UnknownName("strategy", "trend_slwo", ["trend_fast", "trend_slow"]))
    assert message == "unknown strategy 'trend_slwo' (did you mean 'trend_slow'?; known: trend_fast, trend_slow)"
    assert "see `tradeledger positions`" in str(UnknownName("contract", "X", None, see="tradeledger positions"))
    many = str(UnknownName("contract", "X", [f"C{i}" for i in range(40)], see="tradeledger instruments list"))
    assert "C39" not in many and "see `tradeledger instruments list`" in many


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unknown")
    result = CliRunner().invoke(main, ["--home", str(tmp / "home"), "demo", "--days", "1"])
    assert result.exit_code == 0, result.output
    # an IB environment whose gateway is not running: its state file is all the ibsim commands act on
    made = CliRunner().invoke(main, ["--home", str(tmp / "ib"), "init", "--broker", "ib", "--ib-port", "1",
                                     "--account", "DU1234567"])
    assert made.exit_code == 0, made.output
    SimExchange(tmp / "ibsim.db", "DU1234567").close()
    seeded = CliRunner().invoke(main, ["--home", str(tmp / "ib"), "ibsim", "seed-demo", "--state", str(tmp / "ibsim.db")])
    assert seeded.exit_code == 0, seeded.output
    return tmp


@pytest.mark.parametrize("path, param", list(CASES), ids=[f"{' '.join(p)} {n}" for p, n in CASES])
def test_an_unknown_name_is_one_line_naming_it_and_the_known_ones(home, path, param):
    args = [a.format(bad=BAD, state=home / "ibsim.db") for a in CASES[(path, param)]]
    where = str(home / ("ib" if path[0] == "ibsim" else "home"))
    before = CliRunner().invoke(main, ["--home", where, "accounts", "--json"]).stdout
    result = CliRunner().invoke(main, ["--home", where, *path, *args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown "), result.output
    assert repr(BAD) in lines[0] and ("known: " in lines[0] or "see `tradeledger" in lines[0]), lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output
    after = CliRunner().invoke(main, ["--home", where, "accounts", "--json"]).stdout
    assert after == before  # nothing booked
