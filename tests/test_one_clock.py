"""One clock per environment: a sim environment driven through the CLI with its exchange's clock set
far from today stamps everything it records by that clock, never by the machine's.

The scenario provokes several kinds of exceptions the way a trader would (a cash break found by
reconciliation, a trade made at the broker's screen, an order refused by a limit, a held contract
without a price, a daemon job that fails), acknowledges and resolves some, and reads the times back
from `--json`: each is on the exchange's days (2031-03-04 and -05), none on the machine's.

Plus a guard: every call of the functions that stamp exceptions and locks passes `now=` (the
parameter is required and keyword-only; a call on a path no test runs would still fail only at run
time, so the source is read here).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from click.testing import CliRunner

from tradeledger.cli import main

EXCHANGE_DAYS = ("2031-03-04", "2031-03-05")

CONFIG = """
[instruments.SPY]
type = "share"
currency = "USD"

[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"

[strategies.tactical]
kind = "allocation"
capital_share = 1
instruments = { SPY = 1 }

[strategies.tactical.allocation]
rule = "file"

[limits]
max_order_shares = 10

[daemon]
data_csv = "no-such-closes.csv"
data_time = "22:00"
"""


def run(home, *args, code=0):
    result = CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == code, (args, result.output)
    return result


def data(home, *args):
    return json.loads(run(home, *args, "--json").stdout)


def times(value, where=""):
    """(where, text) of every time-like string in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from times(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from times(item, f"{where}[{i}]")
    elif isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in "T ":
        yield where, value


def test_a_sim_environment_stamps_every_exception_by_its_exchange_clock(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    with (home / "paper" / "config.toml").open("a", encoding="utf-8") as fh:
        fh.write(CONFIG)
    (tmp_path / "closes.csv").write_text("date,instrument,close\n2031-03-03,SPY,500\n")
    (tmp_path / "weights.csv").write_text("date,strategy,ticker,weight\n2031-03-03,tactical,SPY,1\n")

    run(home, "sim", "clock", "set", "2031-03-04T14:00")
    run(home, "sim", "price", "SPY", "500")
    run(home, "sim", "price", "MESM31", "5000")
    run(home, "sim", "deposit", "USD", "1000000")
    run(home, "reconcile", code=1)  # a cash break: reconciliation_break
    [brk] = data(home, "exceptions", "list")
    run(home, "exceptions", "ack", str(brk["id"]), "--reason", "looking into it")
    run(home, "sim", "clock", "advance", "1h")
    run(home, "adjust", "cash", "USD", "1000000", "--kind", "deposit", "--reason", "funding", "--yes")  # resolves it
    run(home, "sim", "trade", "MESM31", "2", "5000")
    run(home, "fills", "sync")  # unattributed_fill
    run(home, "sim", "transfer-in", "SPY", "3")
    run(home, "reconcile")  # adopted: unattributed_position
    run(home, "data", "import", str(tmp_path / "closes.csv"))
    run(home, "weights", "import", str(tmp_path / "weights.csv"))
    run(home, "targets", "compute")
    run(home, "targets", "approve", "1", "--reason", "fine")
    run(home, "orders", "submit", "1", "--yes", code=1)  # 2000 shares > max_order_shares 10: limit_hit
    run(home, "monitor", code=1)  # MESM31 held without a price: stale_prices
    run(home, "sim", "clock", "advance", "1d")
    run(home, "daemon", "--once", code=1)  # data_update fails: job_failed (and the others run)
    limit = next(e for e in data(home, "exceptions", "list") if e["kind"] == "limit_hit")
    run(home, "exceptions", "resolve", str(limit["id"]), "--reason", "sized down by hand")

    exceptions = data(home, "exceptions", "list", "--all")
    assert {e["kind"] for e in exceptions} >= {"reconciliation_break", "unattributed_fill", "unattributed_position",
                                               "limit_hit", "stale_prices", "job_failed"}
    stamped = [(f"exception {e['id']} {e['kind']}{where}", text) for e in exceptions for where, text in times(e)]
    for e in exceptions:
        stamped += [(f"exception {e['id']} lock{where}", text)
                    for where, text in times(data(home, "exceptions", "show", str(e["id"]))["locks"])]
    assert {where.rsplit(".", 1)[-1] for where, _ in stamped} >= {"first_seen", "last_seen", "at"}
    acked = next(e for e in exceptions if e["id"] == brk["id"])
    assert acked["acknowledged"]["at"].startswith("2031-03-04T14:00") and acked["resolved"]["at"].startswith(
        "2031-03-04T15:00")
    # What else the scenario recorded, read the same way: the fill, the run and its review, the
    # adjustment, the snapshot and the reconciliation.
    for args in (("fills", "list"), ("targets", "list"), ("adjust", "list"), ("orders", "list")):
        stamped += [(" ".join(args) + where, text) for where, text in times(data(home, *args))]
    status = data(home, "status", "--no-broker")
    for part in ("last_snapshot", "last_reconciliation", "latest_target_run"):
        stamped += [(f"status.{part}{where}", text) for where, text in times(status[part])]
    wrong = [f"{where}: {text}" for where, text in stamped if not text.startswith(EXCHANGE_DAYS)]
    assert not wrong, "\n".join(wrong)
    assert len(stamped) >= 20


def test_a_day_is_settled_once_however_often_it_is_marked(tmp_path):
    """On the exchange's clock a day goes on after its settlement: a trade at another price, then
    `mark` (or the daemon's settle job) again the same day books nothing: the trade moved the marks to
    its own price and the next day's settlement marks from there. (It was an IdempotencyConflict.)"""
    home = tmp_path / "home"
    run(home, "init")
    with (home / "paper" / "config.toml").open("a", encoding="utf-8") as fh:
        fh.write(CONFIG)
    assert data(home, "sim", "clock", "set", "2031-03-04T14:00")["clock"] == "2031-03-04T14:00:00+00:00"
    run(home, "sim", "price", "MESM31", "5000")
    traded = data(home, "sim", "trade", "MESM31", "2", "5000")  # what was done, as the blotter will say it
    assert (traded["side"], traded["quantity"], traded["price"], traded["time"]) == (
        "BUY", "2", "5000", "2031-03-04T14:00:00+00:00")
    run(home, "fills", "sync")
    [fill] = data(home, "fills", "list")
    assert (fill["fill_id"], fill["exec_id"]) == (traded["fill_id"], traded["exec_id"])
    assert data(home, "sim", "settle", "MESM31", "5010") == {"contract": "MESM31", "price": "5010",
                                                              "date": "2031-03-04", "cash": "100", "currency": "USD"}
    assert data(home, "mark")["booked"] == ["MESM31"]
    run(home, "sim", "clock", "advance", "1h")
    run(home, "sim", "trade", "MESM31", "1", "5020")
    run(home, "fills", "sync")
    before = data(home, "status", "--no-broker")["transactions"]
    again = data(home, "mark")
    assert again["date"] == "2031-03-04" and again["booked"] == []
    assert data(home, "status", "--no-broker")["transactions"] == before
    run(home, "sim", "clock", "advance", "1d")
    run(home, "sim", "settle", "MESM31", "5030")
    assert data(home, "mark")["booked"] == ["MESM31"]  # the next day marks from the trade's price


# The functions that stamp a record with the time they are given: exceptions and locks, and the
# booking of executions (an unattributed one raises an exception).
STAMPING = {"raise_exception", "acknowledge", "resolve", "resolve_by_key", "lock", "unlock",
            "book_execution", "book_new_fills", "report_unattributed"}


def test_every_exception_and_lock_stamp_is_given_its_now():
    root = Path(__file__).resolve().parents[1]
    missing, checked = [], 0
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        # Only the project's own code: not its tests, and not a virtualenv made inside the checkout
        # (.ci/run makes .venv there; parsing all of site-packages took CI ten minutes).
        if parts[0] == "tests" or any(part.startswith(".") or part == "site-packages" for part in parts) \
                or ".egg-info" in str(path):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("tradeledger.") for alias in node.names}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            # ex.resolve(...), _exceptions.acknowledge(...), or a name imported from tradeledger
            name = f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                f.value.id in ("ex", "_exceptions", "exceptions") else (f.id if isinstance(f, ast.Name) and
                                                                       f.id in imported else None)
            if name in STAMPING:
                checked += 1
                if "now" not in {k.arg for k in node.keywords}:
                    missing.append(f"{path.relative_to(root)}:{node.lineno}: {name}(...) without now=")
    assert not missing, "\n".join(missing)
    assert checked >= 30  # the walk finds the calls (about forty), not nothing
