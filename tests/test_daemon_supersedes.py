"""The daemon's targets job across days, through the real `daemon --once`: a run it computes
supersedes the run before it, and that is never silent. Day 1 it computes run 1 and nobody reviews
it; day 2 its run 2 supersedes run 1 (pending review, not executed): the job's result, the daemon's
log, `targets list` and `status` say so, and approving run 1 is refused naming run 2. The trader
approves run 2 and does not execute it; day 3 the daemon's run 3 supersedes it: a person's approval
is discarded, so besides the same sentences an `approval_discarded` exception (error: it alerts) is
raised, in the transaction that stored run 3; executing run 2 is refused naming run 3. The trader
approves run 3 (the exception resolves in that review's transaction) and executes it; day 4 the
daemon's run 4 supersedes an executed run: nothing to say, nothing raised. On SQLite and
PostgreSQL; `status` says the same by its raw read path and its full one."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.setup.quick import STAMP

CONFIG = """
[portfolio]
max_run_age_hours = 36

[instruments.SPY]
type = "share"
currency = "USD"

[strategies.tactical]
kind = "allocation"
capital_share = 1
instruments = { SPY = 1 }

[strategies.tactical.allocation]
rule = "file"

[daemon]
targets_time = "22:00"
"""


URL: list[str] = []  # the test's database (a parameter of the test; one test per process at a time)


def tl(home, *args, code: int = 0):
    url = ["--db-url", URL[0]] if URL else []
    result = CliRunner().invoke(main, ["--home", str(home), *url, *map(str, args)], catch_exceptions=False)
    assert result.exit_code == code, (args, result.exit_code, result.stdout[-2000:], result.stderr[-2000:])
    return result


def tl_json(home, *args, code: int = 0):
    return json.loads(tl(home, *args, "--json", code=code).stdout)


def once(home, day: str) -> str:
    """The evening's `daemon --once` on `day`: the targets job's result line."""
    tl(home, "sim", "clock", "set", f"{day}T22:00")
    out = tl(home, "daemon", "--once").stdout
    [line] = [line for line in out.splitlines() if line.strip().startswith("targets:")]
    return line.strip()


def discarded(home) -> list[dict]:
    return [e for e in tl_json(home, "exceptions", "list", "--all") if e["kind"] == "approval_discarded"]


def listed(home, run_id: int) -> dict:
    [row] = [r for r in tl_json(home, "targets", "list") if r["id"] == run_id]
    return row


def status_both_ways(home) -> dict:
    """`status --json --no-broker` by the raw read path, then by the full path: the same."""
    assert (home / "paper" / STAMP).exists()  # the config checked: status takes the raw read path
    quick = tl(home, "status", "--json", "--no-broker").stdout
    (home / "paper" / STAMP).unlink(missing_ok=True)  # without the stamp, status takes the full path
    full = tl(home, "status", "--json", "--no-broker").stdout
    assert quick == full
    return json.loads(full)


def test_the_daemon_says_every_run_it_supersedes_and_raises_an_approval_it_discards(tmp_path, db_url):
    URL[:] = [db_url]
    try:
        _walk(tmp_path)
    finally:
        URL.clear()


def _walk(tmp_path):
    home = tmp_path / "home"
    tl(home, "init")
    with (home / "paper" / "config.toml").open("a", encoding="utf-8") as fh:
        fh.write(CONFIG)
    (tmp_path / "closes.csv").write_text("date,instrument,close\n2031-03-03,SPY,500\n2031-03-04,SPY,502\n"
                                         "2031-03-05,SPY,503\n2031-03-06,SPY,501\n")
    (tmp_path / "weights.csv").write_text("date,strategy,ticker,weight\n2031-03-03,tactical,SPY,1\n")
    tl(home, "sim", "clock", "set", "2031-03-04T14:00")
    tl(home, "sim", "price", "SPY", 502)
    tl(home, "data", "import", tmp_path / "closes.csv")
    tl(home, "weights", "import", tmp_path / "weights.csv")
    log = home / "paper" / "logs" / "daemon.log"

    # day 1: run 1, nothing before it
    assert once(home, "2031-03-04") == "targets: ok: target run 1 computed, pending review"
    assert listed(home, 1)["state"] == "pending" and listed(home, 1)["superseded"] is None

    # day 2: run 2 supersedes run 1, which nobody reviewed
    said = "run 1 superseded by run 2 (it was pending review, not executed)"
    assert once(home, "2031-03-05") == f"targets: ok: target run 2 computed, pending review; {said}"
    assert f"WARNING [" in log.read_text() and f"targets: {said}" in log.read_text()
    first = listed(home, 1)
    assert (first["state"], first["superseded_by"], first["executed"]) == ("superseded", 2, False)
    assert first["superseded"] == "superseded by run 2 (it was pending review, not executed)"
    assert "superseded by run 2 (it was pending review, not executed)" in tl(home, "targets", "list").stdout
    status = status_both_ways(home)
    assert status["latest_target_run"]["supersedes"] == said
    assert discarded(home) == []  # nobody's approval was lost
    refused = tl(home, "targets", "approve", 1, code=1)
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: run 1 is superseded by run 2 (a newer run; `tradeledger targets list` says why): review run 2 instead")

    # the trader approves run 2 and means to execute it in the morning
    tl(home, "targets", "approve", 2, "--reason", "fine")

    # day 3: the daemon's run 3 supersedes run 2, approved and not executed: the approval is discarded
    said = "run 2 superseded by run 3 (it was approved by"
    result = once(home, "2031-03-06")
    assert result.startswith(f"targets: ok: target run 3 computed, pending review; {said}")
    assert result.endswith("not executed); its approval is discarded: raised as approval_discarded")
    assert said in log.read_text()
    [raised] = discarded(home)
    assert (raised["state"], raised["severity"], raised["subject"]) == ("open", "error", "run 2")
    assert raised["detail"].startswith(said) and "review run 3" in raised["detail"]
    assert raised["first_seen"].startswith("2031-03-06T22:00")  # stamped with run 3, by the exchange's clock
    second = listed(home, 2)
    assert (second["state"], second["superseded_by"], second["executed"]) == ("superseded", 3, False)
    assert second["superseded"].startswith("superseded by run 3 (it was approved by")
    status = status_both_ways(home)
    assert status["latest_target_run"]["supersedes"].startswith(said)
    assert status["open_exceptions"]["error"] >= 1
    refused = tl(home, "cycle", "--approve", "--run", 2, code=1)
    assert "run 2 cannot be executed: it is superseded by run 3 (a newer run)" in refused.stderr

    # the trader reviews run 3: the discarded approval is taken up, in that review's transaction
    tl(home, "targets", "approve", 3, "--reason", "looked again")
    [resolved] = discarded(home)
    assert resolved["state"] == "resolved" and resolved["resolved"]["why"].startswith("run 3 approved by")
    tl(home, "cycle", "--approve", "--run", 3)

    # day 4: run 4 supersedes an executed run: nothing of a person's is lost
    assert once(home, "2031-03-07") == "targets: ok: target run 4 computed, pending review"
    third = listed(home, 3)
    assert (third["state"], third["executed"], third["superseded"]) == ("superseded", True, None)
    assert [e["state"] for e in discarded(home)] == ["resolved"]

    # by hand the person computing is told at once (no exception: nobody else lost anything unseen)
    tl(home, "targets", "approve", 4, "--reason", "fine")
    computed = tl(home, "targets", "compute")
    assert "warning: run 4 superseded by run 5 (it was approved by" in computed.stderr
    assert computed.stderr.rstrip().endswith("not executed): its approval is discarded")
    tl(home, "targets", "approve", 5, "--reason", "fine")
    notes = tl_json(home, "cycle")["notes"]
    assert any(n.startswith("warning: run 5 superseded by run 6 (it was approved by") for n in notes), notes
    assert [e["state"] for e in discarded(home)] == ["resolved"]
