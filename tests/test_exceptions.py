"""Exceptions and locks: dedupe, lifecycle, locks released with their exception; SQLite and PostgreSQL.

Plus the CLI over a sim environment: `reconcile --json` exit codes, `exceptions list/show/ack/resolve`,
`snapshot`, and the extended `status`.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.trust import exceptions as ex
from tradeledger.engine.tables import tl_exception

UTC = dt.timezone.utc
T = dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_one_open_exception_per_cause(engine):
    with engine.begin() as conn:
        a = ex.raise_exception(conn, "reconciliation_break", "MESZ26", "ledger 2, broker 0", now=T)
        b = ex.raise_exception(conn, "reconciliation_break", "MESZ26", "ledger 2, broker 1", severity="error",
                               now=T + dt.timedelta(minutes=5))
        c = ex.raise_exception(conn, "reconciliation_break", "MESZ26", "again", severity="info",
                               now=T + dt.timedelta(minutes=6))
        other = ex.raise_exception(conn, "reconciliation_break", "MBTZ26", "x", dedupe_key="custom:key", now=T)
    assert a == b == c != other
    with engine.begin() as conn:
        [row] = [e for e in ex.list_exceptions(conn) if e["id"] == a]
        assert (row["count"], row["severity"], row["detail"]) == (3, "error", "again")  # highest severity kept
        assert row["first_seen"] < row["last_seen"] and row["dedupe_key"] == "reconciliation_break:MESZ26"
        assert ex.open_counts(conn) == {"info": 0, "warning": 1, "error": 1, "critical": 0}


def test_lifecycle_with_who_when_why(engine):
    with engine.begin() as conn:
        eid = ex.raise_exception(conn, "order_stuck", "tl-paper-7", "sent 2h ago, no status", now=T)
        ex.acknowledge(conn, eid, "ana", "asked the broker", now=T + dt.timedelta(minutes=1))
        # Raised again while acknowledged: still the same exception, still acknowledged.
        assert ex.raise_exception(conn, "order_stuck", "tl-paper-7", "still stuck", now=T) == eid
        assert ex.get_exception(conn, eid)["state"] == "acknowledged"
        with pytest.raises(ex.ExceptionStateError):
            ex.acknowledge(conn, eid, "ana", "twice", now=T)
        with pytest.raises(ex.ExceptionStateError):
            ex.resolve(conn, eid, "ana", "  ", now=T)  # a reason is required
        ex.resolve(conn, eid, "bob", "cancelled at the broker", now=T + dt.timedelta(minutes=2))
        info = ex.get_exception(conn, eid)
        assert info["acknowledged"]["by"] == "ana" and info["resolved"] == {
            "at": "2026-12-01 12:02:00.000000", "by": "bob", "why": "cancelled at the broker"}
        with pytest.raises(ex.ExceptionStateError):
            ex.resolve(conn, eid, "bob", "again", now=T)
        # The same cause after resolution is a new exception.
        again = ex.raise_exception(conn, "order_stuck", "tl-paper-7", "stuck again", now=T)
        assert again != eid
        assert [e["id"] for e in ex.list_exceptions(conn, "open")] == [again]
        assert [e["id"] for e in ex.list_exceptions(conn, "resolved")] == [eid]
        assert ex.resolve_by_key(conn, "order_stuck:tl-paper-7", "bob", "done", now=T) is True
        assert ex.resolve_by_key(conn, "order_stuck:tl-paper-7", "bob", "done", now=T) is False
        with pytest.raises(ex.ExceptionStateError):
            ex.raise_exception(conn, "no_such_kind", "x", "y", now=T)
        with pytest.raises(ex.ExceptionStateError):
            ex.raise_exception(conn, "limit_hit", "x", "y", severity="fatal", now=T)
        with pytest.raises(ex.ExceptionStateError):
            ex.get_exception(conn, 999)


def test_the_database_keeps_one_open_row_per_key(engine):
    with engine.begin() as conn:
        ex.raise_exception(conn, "stale_prices", "MES", "no close for 3 days", now=T)
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(tl_exception.insert().values(
                kind="stale_prices", severity="warning", subject="MES", detail="dup", dedupe_key="stale_prices:MES",
                state="open", first_seen="x", last_seen="x", count=1))


def test_locks_follow_their_exception(engine):
    with engine.begin() as conn:
        e1 = ex.raise_exception(conn, "reconciliation_break", "MESZ26", "d", now=T)
        e2 = ex.raise_exception(conn, "reconciliation_break", "MESH27", "d", now=T)
        ex.lock(conn, "MES", "break on MESZ26", e1, now=T)
        ex.lock(conn, "MES", "break on MESZ26", e1, now=T)  # idempotent
        ex.lock(conn, "MES", "break on MESH27", e2, now=T)
        ex.lock(conn, "SPY", "by hand", None, now=T)
        assert ex.active_locks(conn) == {"MES": "break on MESZ26; break on MESH27", "SPY": "by hand"}
        ex.resolve(conn, e1, "ana", "fixed", now=T)  # MES stays locked by the other break
        assert ex.active_locks(conn) == {"MES": "break on MESH27", "SPY": "by hand"}
        assert ex.unlock(conn, "MES", "ana", "checked by hand", now=T) == 1
        assert ex.unlock(conn, "SPY", "ana", "done", now=T) == 1
        assert ex.active_locks(conn) == {}
        locks = ex.get_exception(conn, e1)["locks"]
        assert [(lk["key"], lk["unlocked_by"]) for lk in locks] == [("MES", "ana")]
        with pytest.raises(ex.ExceptionStateError):
            ex.unlock(conn, "MES", "ana", "", now=T)


# -- the CLI ------------------------------------------------------------------------------------

CONFIG = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
expiry_months = "HMUZ"

[strategies.trend]
capital_share = 1
instruments = { MES = 1 }

[sim]
commission_per_contract = "0"
"""


def run(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args])


def test_cli_reconcile_exceptions_status(tmp_path):
    from tradeledger.engine.setup.environment import init_environment, open_environment
    from tradeledger.engine.setup.session import Session

    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None, config_extra=CONFIG)
    assert run(home, "sim", "price", "MESZ26", "5000").exit_code == 0, run(home, "sim", "price", "MESZ26", "5000").output
    result = run(home, "reconcile", "--json")
    assert result.exit_code == 0 and json.loads(result.output) == {"clean": True, "breaks": [], "cash": [],
                                                                   "unattributed": []}
    # A trade made at the broker's screen: booked to Unattributed, an exception, still clean.
    session = Session(open_environment(home, "paper"))
    exchange = session.exchange()
    exchange.external_trade("MESZ26", D(1))
    assert run(home, "reconcile", "--json").exit_code == 0  # booked to Unattributed: clean
    exchange.fault_disconnect(1)
    failed = run(home, "reconcile", "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.output)["breaks"][0]["kind"] == "broker_unreachable"
    listed = json.loads(run(home, "exceptions", "list", "--json").output)
    kinds = {e["kind"]: e["id"] for e in listed}
    assert set(kinds) == {"unattributed_fill", "broker_disconnected"}
    eid = kinds["unattributed_fill"]
    assert run(home, "exceptions", "ack", str(eid)).exit_code != 0  # --why is required
    assert run(home, "exceptions", "ack", str(eid), "--why", "mine, a hedge").exit_code == 0
    shown = json.loads(run(home, "exceptions", "show", str(eid), "--json").output)
    assert shown["state"] == "acknowledged" and shown["acknowledged"]["why"] == "mine, a hedge"
    assert run(home, "exceptions", "resolve", str(eid), "--why", "kept by hand").exit_code == 0
    again = run(home, "exceptions", "resolve", str(eid), "--why", "again")
    assert again.exit_code == 1 and again.output.startswith("error:")
    assert run(home, "exceptions", "show", "999").output.startswith("error: no exception 999")
    assert eid not in [e["id"] for e in json.loads(run(home, "exceptions", "list", "--json").output)]
    assert eid in [e["id"] for e in json.loads(run(home, "exceptions", "list", "--all", "--json").output)]
    assert run(home, "exceptions", "list", "--all").exit_code == 0

    snap = run(home, "snapshot", "--json")
    assert snap.exit_code == 0 and json.loads(snap.output)["positions"][0]["contract"] == "MESZ26"
    status = json.loads(run(home, "status", "--json").output)
    assert status["broker_reachable"] is True
    assert status["last_snapshot"]["status"] == "ok"
    assert status["last_reconciliation"]["clean"] is False  # the failed one
    assert status["open_exceptions"] == {"info": 0, "warning": 0, "error": 0, "critical": 0}  # snapshot resolved it
    assert status["locks"] == {} and status["latest_target_run"] is None
    assert status["daemon_heartbeat"] == "never" and "date" in status["pnl_today"]
    assert run(home, "status").exit_code == 0
    offline = json.loads(run(home, "status", "--no-broker", "--json").output)
    assert offline["broker_reachable"] == "not checked"
    exchange.close()
