"""The bulk import of a big file on SQLite with stagers (`ledger/stager.py`): processes beside the
writer make each chunk's rows and send them as an SQLite image. It must leave exactly what the
import without them leaves (the same rows, ids, fingerprints, maintained sums), refuse what it
refuses, skip replays, keep nothing when a stager or the importer dies, and leave no process behind."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from tradeledger.ledger import db, jsonl
from tradeledger.ledger.bulk import Importing
from tradeledger.ledger.maintained import verify_balances
from tradeledger.ledger.model import IdempotencyConflict, LedgerError, Posting, Transaction
from tradeledger.ledger.store import Ledger
from tradeledger.ledger.verify import verify

from sample_books import B, CASH, FEES, INC, entries, open_books, t

TABLES = ("SELECT id, ts, kind, narration, links, meta, idem_key, fingerprint, reverses_id FROM txn ORDER BY id",
          "SELECT * FROM posting ORDER BY id", "SELECT * FROM balance ORDER BY 1, 2",
          "SELECT * FROM lot_balance ORDER BY 1, 2, 3, 4, 5, 6")


def _ledger(path: Path) -> Ledger:
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    return open_books(Ledger(engine))


def _rows(ledger: Ledger) -> list:
    with ledger.engine.connect() as c:
        return [c.exec_driver_sql(q).all() for q in TABLES]


def _schema(ledger: Ledger) -> list:
    with ledger.engine.connect() as c:
        return sorted(c.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all())


def _write(path: Path, items) -> Path:
    lines = []
    for item in items:
        item = item if isinstance(item, Importing) else Importing(item)
        reverses = {"key": item.reverses_key} if item.reverses_key else (
            {"ref": item.reverses_ref} if item.reverses_ref else None)
        lines.append(jsonl.entry_line(item.txn, item.ref, reverses))
    path.write_text("\n".join(lines) + "\n")
    return path


def _import(ledger: Ledger, path: Path, stagers: int, chunk: int = 2):
    """The file through EntriesFile, as `import entries` reads it; with stagers or without."""
    with open(path, encoding="utf-8") as handle:
        source = jsonl.EntriesFile(handle, name=path.name)
        lines = sum(1 for line in path.read_text().splitlines() if line.strip())
        return ledger.import_entries(source.entries(), expected=lines, chunk=chunk, stagers=stagers,
                                     stage_from=source.stage_source())


# Every stager this module starts inherits this mark in its environment (the importer's, then
# its stagers', as `subprocess` passes os.environ on). Only stagers that carry it are ours: on a
# shared machine another test run imports with stagers too, and counting (or killing) its
# stagers failed this module's tests, and that run's, at random.
MARK = f"TRADELEDGER_TEST_STAGERS_OF={os.getpid()}".encode()


@pytest.fixture(autouse=True)
def _marked(monkeypatch):
    name, value = MARK.decode().split("=")
    monkeypatch.setenv(name, value)


def _stagers_running() -> list[int]:
    mine = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"tradeledger.ledger.stager" in cmdline and MARK in environ:
                mine.append(int(pid))
    return mine


def _fills(n: int, seed: int = 0) -> list[Transaction]:
    """n simple entries (cash against income, a fee), keyed, over several days."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        amount = D(rng.randint(-10**6, 10**6)) / D(100) or D(1)
        out.append(Transaction(t(1) + dt.timedelta(hours=k), "adj", f"e{seed}-{k}",
                               (Posting(CASH, amount - D("1.25"), "USD"), Posting(FEES, D("1.25"), "USD"),
                                Posting(INC, -amount, "USD")), meta=(("n", str(k)),), key=f"k{seed}-{k}"))
    return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # shrinking restarts stagers thousands of times
@given(seed=st.integers(0, 10**6), n=st.integers(8, 40), chunk=st.integers(1, 4), booked=st.integers(0, 10),
       parts=st.integers(1, 3))
def test_stagers_leave_what_the_import_without_them_leaves(tmp_path_factory, seed, n, chunk, booked, parts):
    """Property: random entries, some booked before (replays), repeated keys in the file, cut into
    any chunks among 1 to 3 stagers: the same rows (ids, fingerprints, postings, maintained
    balances and lots) as the import in one process, and `db verify` clean."""
    tmp = tmp_path_factory.mktemp("staged")
    made = _fills(n, seed) + entries()
    made = made + random.Random(seed).sample(made, 3)  # the same entries again, later in the file
    path = _write(tmp / "in.jsonl", made)
    alone, staged = _ledger(tmp / "alone.db"), _ledger(tmp / "staged.db")
    for ledger in (alone, staged):
        ledger.book_many(made[:booked])
    expected = _import(alone, path, stagers=0, chunk=chunk)
    result = _import(staged, path, stagers=parts, chunk=chunk)
    assert result == expected and result.replays == booked + 3
    assert _rows(staged) == _rows(alone)
    assert _schema(staged) == _schema(alone)  # triggers and indexes back
    assert verify(staged).ok and verify_balances(staged.engine) == []
    # Again: all replays, nothing written.
    again = _import(staged, path, stagers=parts, chunk=chunk)
    assert (again.booked, again.replays) == (0, len(made))
    assert _rows(staged) == _rows(alone)


def test_a_chunk_with_a_reversal_a_ref_or_a_labelled_lot_is_booked_by_the_writer(tmp_path):
    """Such a chunk needs the ledger to decide it: it comes back as entries, booked in order
    between the staged chunks, and the result is the one-process import's."""
    original = entries()[2]
    postings = tuple(p._replace(units=-p.units) for p in original.postings)
    reversal = Transaction(original.time + dt.timedelta(hours=1), "reversal", "reverses d3", postings, key="r-d3")
    unkeyed = Transaction(t(4, 9), "cash-adjust", "no key", (Posting(CASH, D(5), "USD"), Posting(INC, D(-5), "USD")))
    undo = Transaction(t(4, 10), "reversal", "undo", (Posting(CASH, D(-5), "USD"), Posting(INC, D(5), "USD")))
    items = _fills(9, 1) + entries() + _fills(9, 2) + [Importing(reversal, reverses_key="d3"),
                                                        Importing(unkeyed, ref="u"), Importing(undo, reverses_ref="u")]
    path = _write(tmp_path / "in.jsonl", items + _fills(9, 3))
    alone, staged = _ledger(tmp_path / "alone.db"), _ledger(tmp_path / "staged.db")
    assert _import(alone, path, stagers=0) == _import(staged, path, stagers=2)
    assert _rows(staged) == _rows(alone)
    assert staged.lots(B, "SPY") == alone.lots(B, "SPY") and staged.lots(B, "SPY")
    assert verify(staged).ok and verify_balances(staged.engine) == []


def test_refusals_name_the_entry_and_import_nothing(tmp_path):
    staged = _ledger(tmp_path / "staged.db")
    schema = _schema(staged)
    good = _fills(20)
    # A line that is not an entry, in a chunk of the second stager.
    path = _write(tmp_path / "bad.jsonl", good)
    lines = path.read_text().splitlines()
    lines[14] = '{"time": "2026-12-01T00:00:00", "kind": "x"}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError, match="bad.jsonl, line 15: not an entry"):
        _import(staged, path, stagers=2)
    # An entry the ledger refuses (unknown account), in a later chunk.
    stranger = Transaction(t(9), "adj", "x", (Posting("Assets:Nowhere", D(1), "USD"), Posting(INC, D(-1), "USD")))
    with pytest.raises(LedgerError, match="entry 18 of the import: unknown account Assets:Nowhere"):
        _import(staged, _write(tmp_path / "stranger.jsonl", good[:17] + [stranger] + good[17:]), stagers=2)
    # A key booked with other content: a conflict, named by its place.
    staged.book(good[12])
    other = dataclasses.replace(good[12], narration="another narration")
    with pytest.raises(IdempotencyConflict, match="entry 13 of the import: an entry with key 'k0-12'"):
        _import(staged, _write(tmp_path / "conflict.jsonl", good[:12] + [other] + good[13:]), stagers=2)
    # The same key twice in the file with other content.
    with pytest.raises(IdempotencyConflict, match="entry 21 of the import: an entry with key 'k0-3'"):
        _import(staged, _write(tmp_path / "twice.jsonl", good + [dataclasses.replace(good[3], narration="y")]),
                stagers=2)
    assert staged.count() == (1, 3)
    assert _schema(staged) == schema
    assert verify(staged).ok and verify_balances(staged.engine) == []
    assert not _stagers_running()


def test_a_stager_that_dies_ends_the_import_with_nothing_kept(tmp_path):
    """A stager killed mid-import: the writer says so, rolls back, and stops the other."""
    staged = _ledger(tmp_path / "staged.db")
    path = _write(tmp_path / "in.jsonl", _fills(6000))
    killed, scanning = [], []

    def kill_one(signum, frame):  # from the writer's own process, every 20 ms: the first stager it finds
        if killed or scanning:  # one scan at a time: on a loaded machine a scan of /proc outlasts 20 ms
            return
        scanning.append(True)
        try:
            for pid in _stagers_running():
                if not killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            scanning.clear()

    signal.signal(signal.SIGALRM, kill_one)
    signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
    try:
        with pytest.raises(LedgerError, match="stager stopped"):
            _import(staged, path, stagers=2, chunk=20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert killed
    assert staged.count() == (0, 0)
    assert verify(staged).ok and verify_balances(staged.engine) == []
    assert not _stagers_running()
    assert _import(staged, path, stagers=2, chunk=20).booked == 6000


def test_the_importer_killed_at_any_point_then_run_again_books_the_file_once(tmp_path):
    """`tradeledger import entries` of a file big enough for stagers, killed at a random point and
    run again: the file is booked once, `db verify` is clean, and no stager outlives its importer."""
    home = tmp_path / "home"
    env = {**os.environ, "NO_COLOR": "1", "TRADELEDGER_STAGERS": "2"}  # whatever the machine's load
    cli = [sys.executable, "-m", "tradeledger.cli", "--home", str(home)]
    subprocess.run(cli + ["init"], check=True, capture_output=True, env=env)
    from tradeledger.engine.setup.environment import open_environment

    ledger = open_books(open_environment(str(home), "paper").ledger)
    ledger.engine.dispose()
    made = _fills(24_000)
    path = _write(tmp_path / "in.jsonl", made)
    rng = random.Random(7)
    for attempt in range(3):
        proc = subprocess.Popen(cli + ["import", "entries", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.kill()
        proc.communicate()
        deadline = time.monotonic() + 10
        while _stagers_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _stagers_running()
    bad = subprocess.run(cli + ["import", "entries", str(path)], capture_output=True, text=True,
                         env={**env, "TRADELEDGER_STAGERS": "some"})
    assert bad.returncode != 0 and "TRADELEDGER_STAGERS is a number of processes" in bad.stderr
    done = subprocess.run(cli + ["import", "entries", str(path), "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(cli + ["import", "entries", str(path), "--json"], capture_output=True, text=True, env=env)
    assert '"booked": 0' in again.stdout and f'"replays": {len(made)}' in again.stdout
    ledger = open_environment(str(home), "paper").ledger
    assert ledger.count()[0] == len(made)
    assert verify(ledger).ok and verify_balances(ledger.engine) == []
    with sqlite3.connect(ledger.engine.url.database) as c:
        assert c.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] > 0


def test_stagers_that_cannot_start_refuse_the_import_clearly(tmp_path, monkeypatch):
    """No Python to start them with: a refusal that says so and how to import without them, nothing
    imported, the ledger's triggers back, and the connection left as it was (nothing attached)."""
    staged = _ledger(tmp_path / "staged.db")
    schema = _schema(staged)
    path = _write(tmp_path / "in.jsonl", _fills(20))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(LedgerError, match="stagers could not start .*TRADELEDGER_STAGERS=0"):
        _import(staged, path, stagers=1)
    assert staged.count() == (0, 0) and _schema(staged) == schema
    monkeypatch.undo()
    assert _import(staged, path, stagers=0).booked == 20
    with staged.engine.connect() as c:
        assert "tl_stage" not in [row[1] for row in c.exec_driver_sql("PRAGMA database_list").all()]
