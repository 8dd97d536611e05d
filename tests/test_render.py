"""One figure format (reports/render.py): prices at their instrument's tick precision, money at
its currency's minor unit, whole quantities as integers, times in a table as UTC to the second;
JSON keeps exact strings and ISO 8601 times with a zone. Then the same on a demo home, piped."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.ledger.numbers import jsonable
from tradeledger.ledger.times import iso_time, table_time
from tradeledger.reports.render import display, places_of


@pytest.mark.parametrize("value, tick, shown", [
    (D("4590.25"), D("0.25"), "4590.25"),
    (D("4590"), D("0.25"), "4590.00"),
    (D("1.08455"), D("0.00005"), "1.08455"),
    (D("1.0845"), D("0.00005"), "1.08450"),
    (D("4728"), D("1"), "4728"),
    (D("358920"), D("5"), "358920"),
    (D("5930.5"), D("0.5"), "5930.5"),
    (D("112.46875"), D("0.0078125"), "112.4687500"),  # ZF: 1/128 of a point
    (D("114.578125"), D("0.015625"), "114.578125"),  # ZN: 1/64
    (D("4590.3333"), D("0.25"), "4590.3333"),  # an average finer than the tick: never rounded
])
def test_prices_at_their_tick_precision(value, tick, shown):
    assert display(value, "price", tick=tick) == shown
    assert display(str(value), "mark", tick=tick) == shown


def test_money_at_the_minor_unit_quantities_whole():
    assert display(D("21975.045"), "cash") == "21975.04"  # to the cent, half to even; --json keeps 21975.045
    assert display(D("-175.5"), "realized") == "-175.50"
    assert display(D("1500"), "amount", currency="JPY") == "1500"
    assert display(D("0.004"), "diff") == "0.004"  # a sub-cent amount is shown as it is, never as 0.00
    assert display(D("3.000"), "qty") == "3"
    assert display(D("2.5"), "qty") == "2.5"
    assert places_of(D("0.25")) == 2 and places_of(D("5")) == 0 and places_of(D("0.00005")) == 5


def test_times_in_json_and_in_tables():
    stored = "2026-12-01 15:00:00.000000"
    assert iso_time(stored) == "2026-12-01T15:00:00+00:00"
    assert iso_time("2026-12-01 15:00:00.250000") == "2026-12-01T15:00:00.250000+00:00"
    assert iso_time(dt.datetime(2026, 12, 1, 15)) == "2026-12-01T15:00:00+00:00"  # naive is UTC
    cet = dt.timezone(dt.timedelta(hours=1))
    assert iso_time(dt.datetime(2026, 12, 1, 16, tzinfo=cet)) == "2026-12-01T16:00:00+01:00"
    assert table_time(dt.datetime(2026, 12, 1, 16, tzinfo=cet)) == "2026-12-01 15:00:00"
    assert display(stored, "time") == "2026-12-01 15:00:00"
    assert jsonable({"t": stored, "d": dt.date(2026, 12, 1), "n": "2026-12-01", "x": D("1.50")}) == \
        {"t": "2026-12-01T15:00:00+00:00", "d": "2026-12-01", "n": "2026-12-01", "x": "1.50"}
    assert iso_time("taken 2026-12-01 15:00:00") == "taken 2026-12-01 15:00:00"  # a sentence is left alone


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("render") / "home"
    result = CliRunner().invoke(main, ["--home", str(home), "demo"])
    assert result.exit_code == 0, result.output
    (home.parent / "demo.out").write_text(result.output)
    return home


def test_one_layout_of_positions_and_of_pnl(home):
    """The demo prints the same positions and P&L tables as `positions` and `pnl` (and a TOTAL)."""
    demo = (home.parent / "demo.out").read_text()
    for command in (["positions"], ["pnl"]):
        own = CliRunner().invoke(main, ["--home", str(home), *command]).output
        title, header = own.splitlines()[:2]
        lines = demo.splitlines()
        assert title in lines, title
        assert lines[lines.index(title) + 1].split() == header.split(), (command, header)
    assert re.search(r"^TOTAL ", demo, re.M)
    shown = CliRunner().invoke(main, ["--home", str(home), "positions"]).output
    assert shown in demo  # the same figures, formatted the same way (prices at their ticks)


def _rows(home, *args):
    """A table's cells as shown (CSV: the same cells a piped table aligns)."""
    output = CliRunner().invoke(main, ["--home", str(home), *args, "--csv"]).stdout
    return list(csv.DictReader(io.StringIO(output)))


def test_a_piped_table_shows_prices_at_their_ticks_and_json_keeps_them_exact(home):
    fills = _rows(home, "fills", "list")
    ticks = {"MES": 2, "MNQ": 2, "ZF": 7, "ZN": 6, "GC": 1, "CL": 2, "FESX": 0, "MBT": 0, "Z": 1, "FGBL": 2}
    seen = set()
    for fill in fills:
        root = re.sub(r"[FGHJKMNQUVXZ]\d\d$", "", fill["contract"])
        if root in ticks:
            decimals = fill["price"].split(".")[1] if "." in fill["price"] else ""
            assert len(decimals) == ticks[root], fill
            seen.add(root)
    assert {"MES", "ZF", "FESX"} <= seen
    exact = json.loads(CliRunner().invoke(main, ["--home", str(home), "fills", "list", "--json"]).stdout)
    mes = next(f for f in exact if f["contract"].startswith("MES"))
    assert mes["price"] == format(D(mes["price"]), "f") and not mes["price"].endswith("0")
    positions = _rows(home, "positions")  # the quick read path (no environment opened) too
    for row in positions:
        root = re.sub(r"[FGHJKMNQUVXZ]\d\d$", "", row["contract"])
        if root in ticks and row["mark"]:
            assert len(row["mark"].split(".")[1] if "." in row["mark"] else "") == ticks[root], row
    assert all(re.fullmatch(r"-?\d+", p["qty"]) for p in positions)
    assert all(re.fullmatch(r"-?\d+\.\d\d", p["unrealized"]) for p in positions)


def test_status_says_todays_pnl_in_the_base_currency_too(home):
    status = json.loads(CliRunner().invoke(main, ["--home", str(home), "status", "--no-broker", "--json"]).stdout)
    days = json.loads(CliRunner().invoke(main, ["--home", str(home), "pnl", "--by", "day", "--json"]).stdout)
    today = status["pnl_today"]
    assert D(today["net (USD)"]) == D(next(r["net"] for r in days["rows"] if r["day"] == today["date"]))
    shown = CliRunner().invoke(main, ["--home", str(home), "status", "--no-broker"]).output
    line = next(line for line in shown.splitlines() if line.startswith("pnl_today"))
    assert all(re.fullmatch(r"-?\d+\.\d\d", part.split("=")[1]) for part in line.split(", ")[1:]), line
