"""`status` says the latest target run's state as `targets show` does: the state as it stands (an
approved or pending run past `max_run_age_hours` is expired), not the review state stored with it.
Driven through the CLI on a sim environment whose exchange clock moves the runs through every state."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tradeledger.cli import main

CONFIG = """
[portfolio]
max_run_age_hours = 24

[instruments.SPY]
type = "share"
currency = "USD"

[strategies.tactical]
kind = "allocation"
capital_share = 1
instruments = { SPY = 1 }

[strategies.tactical.allocation]
rule = "file"
"""


def run(home, *args):
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result


def data(home, *args):
    return json.loads(run(home, *args, "--json").stdout)


def agreed(home, run_id: int) -> str:
    """The latest run's state, once `status` and `targets show` are seen to say the same."""
    latest = data(home, "status", "--no-broker")["latest_target_run"]
    shown = data(home, "targets", "show", str(run_id))
    assert latest["id"] == run_id and latest["state"] == shown["state"], (latest, shown["state"])
    assert [r["state"] for r in data(home, "targets", "list") if r["id"] == run_id] == [shown["state"]]
    return shown["state"]


def test_status_and_targets_say_the_same_state_of_the_latest_run(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    with (home / "paper" / "config.toml").open("a", encoding="utf-8") as fh:
        fh.write(CONFIG)
    (tmp_path / "closes.csv").write_text("date,instrument,close\n2031-03-03,SPY,500\n")
    (tmp_path / "weights.csv").write_text("date,strategy,ticker,weight\n2031-03-03,tactical,SPY,1\n")
    run(home, "sim", "clock", "set", "2031-03-04T14:00")
    run(home, "data", "import", str(tmp_path / "closes.csv"))
    run(home, "weights", "import", str(tmp_path / "weights.csv"))

    first = data(home, "targets", "compute")["id"]
    assert agreed(home, first) == "pending"
    run(home, "targets", "approve", str(first), "--reason", "fine")
    assert agreed(home, first) == "approved"
    run(home, "sim", "clock", "advance", "25h")
    assert agreed(home, first) == "expired"  # stored: approved

    second = data(home, "targets", "compute")["id"]
    assert agreed(home, second) == "pending"
    assert data(home, "targets", "show", str(first))["state"] == "superseded"
    run(home, "targets", "reject", str(second), "--reason", "not today")
    assert agreed(home, second) == "rejected"
    run(home, "sim", "clock", "advance", "25h")
    assert agreed(home, second) == "rejected"  # rejected stays rejected

    third = data(home, "targets", "compute")["id"]
    assert agreed(home, third) == "pending"
    run(home, "sim", "clock", "advance", "25h")
    assert agreed(home, third) == "expired"  # stored: pending
