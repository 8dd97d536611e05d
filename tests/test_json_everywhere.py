"""Every command that takes `--json`, run on a demo home: its JSON parses, every time in it is
ISO 8601 with a zone (`2026-12-01T15:00:00+00:00`, never the ledger's stored
`2026-12-01 15:00:00.000000`), and no object names the same thing twice (`state` and `status`).

The commands are walked from the root group, so a new `--json` command fails `test_every_json_command_has_a_recipe`
until it is given a way to run here."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from tradeledger.cli import main

# How to run each --json command on the demo home, in this order (later ones book things).
RECIPES: dict[tuple[str, ...], list[str]] = {
    ("accounts",): [],
    ("actions", "list"): [],
    ("adjust", "list"): [],
    ("check",): [],
    ("config", "check"): [],
    ("data", "adjusted"): ["MES"],
    ("db", "verify"): [],
    ("exceptions", "list"): ["--all"],
    ("exceptions", "show"): ["1"],
    ("fills", "list"): [],
    ("instruments", "contracts"): ["MES"],
    ("instruments", "list"): [],
    ("monitor",): [],
    ("orders", "list"): [],
    ("orders", "plan"): ["3"],
    ("pnl",): [],
    ("positions",): [],
    ("reconcile",): [],
    ("report", "costs"): [],
    ("report", "daily"): [],
    ("report", "exposure"): [],
    ("report", "nav"): [],
    ("report", "performance"): [],
    ("roll", "plan"): [],
    ("roll", "status"): [],
    ("service", "status"): ["--unit-dir", "{tmp}/units"],
    ("snapshot",): [],
    ("status",): [],
    ("targets", "list"): [],
    ("targets", "show"): ["3"],
    ("fills", "sync"): [],
    ("mark",): [],
    ("actions", "sync"): [],
    ("actions", "import"): ["{tmp}/actions.csv"],
    ("actions", "book"): [],
    ("actions", "fee"): ["-2.50", "USD", "--date", "2026-12-03", "--reason", "a data fee"],
    ("actions", "interest"): ["3.10", "USD", "--date", "2026-12-03", "--reason", "interest on cash"],
    ("adjust", "cash"): ["USD", "5", "--kind", "adjustment", "--reason", "a test", "--yes"],
    ("adjust", "adopt"): ["SPY", "5", "--strategy", "tactical", "--reason", "a test", "--yes"],
    ("adjust", "attribute"): ["{unattributed_fill}", "--strategy", "tactical", "--reason", "mine", "--yes"],
    ("adjust", "transfer"): ["GLD", "1", "--from", "tactical", "--to", "etf_trend", "--reason", "a test", "--yes"],
    ("adjust", "manual-close"): ["GLD", "--strategy", "etf_trend", "--qty", "1", "--price", "177.16",
                                 "--reason", "a test", "--yes"],
    ("adjust", "reverse"): ["{last_adjustment}", "--reason", "a test", "--yes"],
    ("data", "import"): ["{tmp}/closes.csv"],
    ("data", "fetch"): ["MES", "GLD"],
    ("signals", "import"): ["{tmp}/forecasts.csv"],
    ("signals", "compute"): [],
    ("targets", "compute"): [],
    ("targets", "reject"): ["{pending_run}", "--reason", "not this one"],
    ("cycle",): [],
    ("targets", "approve"): ["{pending_run}", "--reason", "reviewed"],
    ("orders", "submit"): ["{pending_run}", "--yes"],
    ("orders", "cancel"): ["{last_order}"],  # refused: the sim fills every order at once
    ("orders", "resolve"): ["{last_order}", "--never-sent"],  # refused: the order's outcome is known
    ("roll", "execute"): [],
    ("import", "flex"): ["{data}/flex_december.xml"],
    # The action commands: what was done, as JSON.
    ("sim", "clock", "show"): [],
    ("sim", "day-window"): [],
    ("sim", "clock", "advance"): ["1d"],  # a day the demo has not settled: sim settle, daemon below
    ("sim", "clock", "set"): ["{clock_later}"],
    ("sim", "price"): ["GLD", "177.16"],
    ("sim", "trade"): ["GLD", "-1", "177.16"],
    ("sim", "transfer-in"): ["GLD", "2"],
    ("sim", "deposit"): ["USD", "100"],
    ("sim", "interest"): ["1.50", "USD"],
    ("sim", "fee"): ["-1", "USD"],
    ("sim", "dividend"): ["SPY", "0.25"],
    ("sim", "split"): ["TLT", "2:1"],
    ("sim", "settle"): ["{future}", "{future_price}"],
    ("sim", "fault"): ["correct", "--exec-id", "{exec_id}", "--price", "177.20"],
    ("ibsim", "price"): ["GLD", "177.16", "--state", "{sim_state}"],
    ("ibsim", "trade"): ["GLD", "1", "177.16", "--state", "{sim_state}"],
    ("ibsim", "correct"): ["{exec_id}", "--qty", "2", "--state", "{sim_state}"],
    ("ibsim", "deposit"): ["USD", "50", "--state", "{sim_state}"],
    ("ibsim", "transfer-in"): ["GLD", "1", "--state", "{sim_state}"],
    ("ibsim", "open"): ["--state", "{sim_state}"],
    ("ibsim", "seed-demo"): ["--state", "{sim_state}"],  # refused: the demo's broker is sim, not ib
    ("roll", "set"): ["MES", "auto", "--reason", "the calendar decides"],
    ("instruments", "map"): ["BTC", "MBT"],
    ("weights", "import"): ["{tmp}/weights.csv"],  # refused: no strategy's rule is file
    ("exceptions", "ack"): ["{open_exception}", "--reason", "on it"],
    ("exceptions", "resolve"): ["{open_exception}", "--reason", "done"],
    ("export", "beancount"): ["--out", "{tmp}/walk.beancount"],
    ("export", "entries"): ["--out", "{tmp}/walk.jsonl"],
    ("db", "upgrade"): [],
    ("alerts", "send"): [],  # refused: no alert channels
    ("alerts", "test"): [],  # refused: no alert channels
    ("service", "install"): ["--unit-dir", "{tmp}/units"],
    ("daemon",): ["--once"],
    ("backup",): ["--out", "{tmp}/backup.tar.gz"],
    ("import", "entries"): ["{tmp}/entries.jsonl"],
    ("restore",): ["{tmp}/backup.tar.gz"],
    ("init",): [],
}
# Run with a home of their own (they create one).
OWN_HOME = {("restore",), ("init",)}
# Refused on the demo home whatever they print (their JSON, if any, is still checked): no working
# order to cancel, no alert channel to test, a sim environment where seed-demo wants ib.
REFUSED_HERE = {("orders", "cancel"), ("orders", "resolve"), ("alerts", "test"), ("ibsim", "seed-demo")}

TIME_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}")
ISO_WITH_ZONE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)")


def _walk(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _walk(command, path + (name,))
        elif any(getattr(p, "name", None) == "as_json" for p in command.params):
            yield path + (name,)


def _values(value, where=""):
    if isinstance(value, dict):
        yield where, value
        for key, item in value.items():
            yield from _values(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _values(item, f"{where}[{i}]")
    else:
        yield where, value


def test_every_json_command_has_a_recipe():
    assert set(_walk(main)) == set(RECIPES)


def time_problems(data) -> list[str]:
    """Every time-like text that is not ISO 8601 with a zone, and objects with both state and status.
    A value that is a time must be ISO 8601 with its zone; a sentence (a note, a summary) may say a
    time as a person reads it, with its zone spelt out: `computed 2026-12-03 21:00 UTC`."""
    problems = []
    for where, value in _values(data):
        if isinstance(value, dict) and {"state", "status"} <= set(value):
            problems.append(f"{where}: both state and status")
        elif isinstance(value, str) and TIME_LIKE.search(value):
            if TIME_LIKE.match(value) and not ISO_WITH_ZONE.fullmatch(value):
                problems.append(f"{where}: {value!r}")
                continue
            for match in re.finditer(r"\d{4}-\d{2}-\d{2}[ T][0-9:.+\-Z]*( UTC)?", value):
                if not (ISO_WITH_ZONE.fullmatch(match.group(0)) or match.group(0).endswith(" UTC")):
                    problems.append(f"{where}: {value!r}")
    return problems


def test_the_checker_fails_on_a_time_without_zone():
    assert time_problems({"a": [{"t": "2026-12-01 15:00:00.000000"}]}) == [".a[0].t: '2026-12-01 15:00:00.000000'"]
    assert time_problems({"t": "2026-12-01T15:00:00+00:00", "d": "2026-12-01"}) == []
    assert time_problems({"x": {"state": "a", "status": "a"}})
    assert time_problems({"note": "taken 2026-12-01T15:00:00 (x)"})
    assert time_problems({"note": "taken 2026-12-01 15:00:00.000000 (x)"})
    assert time_problems({"note": "computed 2026-12-03 21:00 UTC, pending"}) == []


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("json")
    result = CliRunner().invoke(main, ["--home", str(tmp / "home"), "demo"])
    assert result.exit_code == 0 and "check: clean" in result.output, result.output
    (tmp / "actions.csv").write_text("kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio\n"
                                     "dividend,TLT,2026-12-03,2026-12-03,0.25,USD,0,\n")
    (tmp / "closes.csv").write_text("date,instrument,close\n2026-12-03,GLD,177.16\n")
    exported = CliRunner().invoke(main, ["--home", str(tmp / "home"), "export", "entries", "--out",
                                         str(tmp / "entries.jsonl")])
    assert exported.exit_code == 0, exported.output
    (tmp / "forecasts.csv").write_text("date,strategy,instrument,forecast\n2026-12-03,trend_fast,MES,5\n")
    (tmp / "weights.csv").write_text("date,strategy,ticker,weight\n2026-12-03,tactical,SPY,1\n")
    return tmp


def _data(tmp, *args):
    result = CliRunner().invoke(main, ["--home", str(tmp / "home"), *args, "--json"])
    return json.loads(result.stdout)


def _argv(tmp, path, recipe) -> list[str]:
    """The command line of one recipe; its placeholders read the home as it stands now."""
    from pathlib import Path

    values = {"tmp": str(tmp), "data": str(Path(__file__).parent / "data")}
    text = " ".join(recipe)
    if "{unattributed_fill}" in text:
        values["unattributed_fill"] = next(f["fill_id"] for f in _data(tmp, "fills", "list")
                                           if f["strategy"] == "unattributed")
    if "{last_adjustment}" in text:
        values["last_adjustment"] = str(max(a["entry"] for a in _data(tmp, "adjust", "list")))
    if "{pending_run}" in text:
        values["pending_run"] = str(max(r["id"] for r in _data(tmp, "targets", "list")))
    if "{last_order}" in text:
        values["last_order"] = str(max(o["id"] for o in _data(tmp, "orders", "list")))
    if "{clock_later}" in text:
        import datetime as dt

        now = dt.datetime.fromisoformat(_data(tmp, "sim", "clock", "show")["clock"])
        values["clock_later"] = (now + dt.timedelta(hours=1)).isoformat()
    if "{future}" in text:
        row = next(r for r in _data(tmp, "instruments", "list") if r["name"] == "MES")
        values["future"], values["future_price"] = row["contract"], row["price"]
    if "{exec_id}" in text:
        values["exec_id"] = next(f["exec_id"] for f in reversed(_data(tmp, "fills", "list"))
                                 if f["contract"] == "GLD")
    if "{open_exception}" in text:
        values["open_exception"] = str(min(e["id"] for e in _data(tmp, "exceptions", "list")))
    values["sim_state"] = str(tmp / "home" / "paper" / "sim.db")
    home = tmp / ("own-" + "-".join(path)) if path in OWN_HOME else tmp / "home"
    return ["--home", str(home), *path, *(arg.format(**values) for arg in recipe), "--json"]


def test_every_json_time_has_a_zone_and_every_name_is_said_once(home):
    problems, failed = [], []
    for path, recipe in RECIPES.items():
        result = CliRunner().invoke(main, _argv(home, path, recipe))
        if result.exit_code != 0 and path not in REFUSED_HERE:  # a refusal is fine (one line); its JSON, if any, is still checked
            failed.append(f"{' '.join(path)}: {result.output.strip()[-200:]}")
        try:
            data = json.loads(result.stdout) if result.stdout.strip() else None
        except json.JSONDecodeError:
            problems.append(f"{' '.join(path)}: not JSON: {result.stdout[:200]!r}")
            continue
        problems += [f"{' '.join(path)} {p}" for p in time_problems(data)]
    print("\n".join(failed))
    assert not problems, "\n".join(problems)
    # most commands succeed here: the walk is not a walk over error messages
    assert len(failed) <= 5, "\n".join(failed)
