"""The read side at 1k, 100k and 1M entries, each figure beside its ceiling, in one run; not a test.

    python bench/bench_read.py [--entries 1000,100000,1000000] [--runs 7] [--out DIR]
                               [--beancount-upto 100000] [--verify-upto 1000000]
                               [--replay-upto 100000] [--pg-upto 100000] [--pg-url URL]

At each size a SQLite ledger of bench_ledger.py's futures fills (about 10 postings an entry, so
1M entries is 10M postings) is made by bench/bulk.py (raw rows, triggers and indexes set aside,
maintained balances summed once) and checked by `db verify`'s own code. An environment is put
over it (`init_environment` with the file as its database), and then, side by side:

- **positions + income** in-process (`Ledger.positions()` + `Ledger.income()`, median of --runs)
  against its ceiling, raw sqlite3 reading the same maintained `balance` rows;
- **`tradeledger positions --json`**, the whole process as a user runs it (bytecode cached, see
  bench_start.py), against beancount's own load of the same ledger's export (a fresh process,
  `loader.load_file`, cache off; only up to --beancount-upto entries: beyond, it takes too long
  and too much memory to be run here) and the interpreter's floor (`python -c pass`); its peak
  RSS (VmHWM);
- **`export beancount`** (the streaming export) against raw sqlite3 reading the same rows in the
  same order (both streams fetched and dropped), with its peak RSS; beancount then loads the
  file (zero errors expected) and `check` compares every balance (up to --beancount-upto).

- **pnl** (by strategy, all time) on the command's read path (`quick_pnl`: maintained balances,
  lots and marks) against raw sqlite3 reading those same rows, and, up to --replay-upto entries,
  the replay it replaces (reports/series.py, every posting), whose rows it must equal;
- **pnl --by instrument** (all time) on the read path (`quick_pnl(..., "instrument")`: the same
  rows and one GROUP BY of the P&L postings by their entry's contract) against raw sqlite3
  running the same reads and statement, and, up to --replay-upto, the replay it replaces;
- **pnl --since** the first of the ledger's last month (a month to date), by strategy and by
  instrument (reports/pnl_period.py: the end less the day before), against raw sqlite3 reading the
  maintained rows and summing the period's P&L postings, and up to --replay-upto the replay;
- **status's P&L of today** (`pnl_today`, at the ledger's last day) against the same ceiling and,
  up to --replay-upto, the `pnl --by day` sum it must equal; `pnl --json` and `status --json`
  (--no-broker) as whole processes;
- **PostgreSQL** (up to --pg-upto entries, with --pg-url or $TRADELEDGER_TEST_PG_URL): the same
  ledger copied into a schema of its own (bench/pg_copy.py), the same reads beside raw psycopg
  reading the same rows, and the same whole processes.

Issue 15 targets: positions + income <= 20 ms and flat to 10M postings; `positions --json` <= 250
ms and faster than beancount's load; peak RSS of `positions` <= 80 MB at any size; the export
3-4 s per 1M postings in bounded memory.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bulk  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="tl-bench-pycache-")  # as bench_start.py
PEAK = ("import atexit, sys\n"
        "atexit.register(lambda: print([l.split()[1] for l in open('/proc/self/status') "
        "if l.startswith('VmHWM')][0], file=sys.stderr))\n")
CLI = PEAK + "sys.argv = ['tradeledger', *sys.argv[1:]]\nfrom tradeledger.cli import run\nrun()\n"
BEANCOUNT = PEAK + ("from beancount import loader\nloader.initialize(use_cache=False)\n"
                    "entries, errors, _ = loader.load_file(sys.argv[1])\nprint(len(entries), len(errors))\n")
EXPORT = PEAK + ("from tradeledger.ledger import db\nfrom tradeledger.ledger.export import export_beancount\n"
                 "from tradeledger.ledger.store import Ledger\nimport time\nledger = Ledger(db.make_engine(sys.argv[1]))\n"
                 "start = time.perf_counter()\nexport_beancount(ledger, sys.argv[2])\n"
                 "print(time.perf_counter() - start)\n")


def process(argv: list[str]) -> tuple[float, float, float, str]:
    """(wall s, cpu s, peak RSS MB, stdout) of one fresh process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {proc.stderr[-800:]}")
    peak = int(proc.stderr.strip().splitlines()[-1]) / 1024
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), peak, proc.stdout


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


PNL_ROWS = ("SELECT account_id, commodity, whole, nanos FROM balance",
            "SELECT account_id, commodity, cost, whole, nanos FROM lot_balance",
            "SELECT holder, contract, price FROM position_mark")


def raw_rows(conn, statements) -> None:
    """The ceiling of a read: the driver's own cursor fetching the rows the read reads."""
    for sql in statements:
        cursor = conn.cursor()
        cursor.execute(sql)
        cursor.fetchall()


def whole_process(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (ms) of fresh processes, the first (file and bytecode cache) dropped."""
    process(argv)
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, _peak, _ = process(argv)
        walls.append(wall), cpus.append(cpu)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def reads(row: dict, prefix: str, home: Path, url: str, conn, args) -> None:
    """pnl and status's P&L of today on the read path, their ceiling, and (small sizes) the replay
    they replace, whose answers they must equal; `pnl --json` and `status --json` as processes."""
    from tradeledger.ledger.reading import open_reader
    from tradeledger.reports.pnl_fast import quick_pnl
    from tradeledger.reports.pnl_today import pnl_today

    fast = quick_pnl(home, "paper", url)
    assert fast is not None and fast["rows"], "the read path stepped aside"
    row[f"{prefix}pnl_ms"] = median_ms(lambda: quick_pnl(home, "paper", url), args.runs)
    row[f"{prefix}pnl_floor_ms"] = median_ms(lambda: raw_rows(conn, PNL_ROWS), args.runs)
    by = quick_pnl(home, "paper", url, "instrument")
    assert by is not None and by["rows"], "the read path by instrument stepped aside"
    row[f"{prefix}instrument_ms"] = median_ms(lambda: quick_pnl(home, "paper", url, "instrument"), args.runs)
    with open_reader(url) as reader:
        last = reader.first_and_last_day(list(reader.account_names()))[1]
        from tradeledger.ledger.reading import contract_sums_sql
        from tradeledger.reports.pnl_fast import CARRY_ACCOUNTS, COMMISSIONS, TRADING

        names, root = reader.account_names(), f"Assets:Broker:{bulk.ACCT}"
        sums = contract_sums_sql(reader.dialect,
                                 [i for i, n in names.items() if n.startswith((TRADING, COMMISSIONS, *CARRY_ACCOUNTS))],
                                 [i for i, n in names.items() if n.startswith(root + ":Strategy:")
                                  or n == root + ":Unattributed"], "USD")
    if reader.dialect != "sqlite":
        sums = (sums[0].replace("%", "%%").replace("?", "%s"), sums[1])  # psycopg's placeholders (Reader.rows)
    # its ceiling: the driver's own cursor running the same rows' reads and its one GROUP BY
    row[f"{prefix}instrument_floor_ms"] = median_ms(
        lambda: (raw_rows(conn, PNL_ROWS), conn.cursor().execute(*sums).fetchall()), args.runs)
    today = __import__("datetime").date.fromisoformat(last)
    # a trader's month to date: `pnl --since <the first of the ledger's last month>`, by strategy
    # and by instrument (reports/pnl_period.py), beside raw sqlite3 reading the maintained rows and
    # summing the P&L postings of the period along ix_posting_period (what its cost should follow)
    since = today.replace(day=1)
    for grouping in ("strategy", "instrument"):
        period = quick_pnl(home, "paper", url, grouping, since)
        assert period is not None and period["rows"], f"the read path of a period by {grouping} stepped aside"
        row[f"{prefix}since_{grouping}_ms"] = median_ms(lambda: quick_pnl(home, "paper", url, grouping, since),
                                                        args.runs)
    with open_reader(url) as reader:
        pnl_ids = [i for i, n in reader.account_names().items() if n.startswith(("Income:", "Expenses:"))]
        hint = " INDEXED BY ix_posting_period" if reader.dialect == "sqlite" else ""
        mark = "?" if reader.dialect == "sqlite" else "%s"
        in_period = (f"SELECT account_id, commodity, SUM(units) FROM posting{hint} WHERE account_id IN "
                     f"({', '.join(map(str, pnl_ids))}) AND ts >= {mark} GROUP BY account_id, commodity")
        row[f"{prefix}since_postings"] = reader.rows("SELECT COUNT(*) FROM posting WHERE ts >= ?",
                                                     (since.isoformat(),)).fetchone()[0]
    row[f"{prefix}since_floor_ms"] = median_ms(
        lambda: (raw_rows(conn, PNL_ROWS), conn.cursor().execute(in_period, (since.isoformat(),)).fetchall()),
        args.runs)

    def today_net():
        with open_reader(url) as reader:
            return pnl_today(reader, f"Assets:Broker:{bulk.ACCT}", "USD", lambda c: c, lambda c: c, today)

    net = today_net()
    assert net is not None, "status's P&L of today stepped aside"
    row[f"{prefix}today_ms"] = median_ms(today_net, args.runs)
    if row["entries"] <= args.replay_upto:
        from tradeledger.engine.setup.environment import open_environment
        from tradeledger.engine.setup.session import Session
        from tradeledger.reports import pnl as pnl_report

        env = open_environment(home, "paper", url)
        session = Session(env)
        start = time.perf_counter()
        replayed = pnl_report.replayed_pnl(session)
        row[f"{prefix}pnl_replay_ms"] = (time.perf_counter() - start) * 1000
        assert replayed == fast, "pnl: the read path and the replay differ"
        start = time.perf_counter()
        replayed = pnl_report.replayed_pnl(session, "instrument")
        row[f"{prefix}instrument_replay_ms"] = (time.perf_counter() - start) * 1000
        assert replayed == by, "pnl --by instrument: the read path and the replay differ"
        for grouping in ("strategy", "instrument"):
            start = time.perf_counter()
            replayed = pnl_report.replayed_pnl(session, grouping, since)
            row[f"{prefix}since_{grouping}_replay_ms"] = (time.perf_counter() - start) * 1000
            assert replayed == quick_pnl(home, "paper", url, grouping, since), f"pnl --since by {grouping} differs"
        start = time.perf_counter()
        days = pnl_report.replayed_pnl(session, "day", today, None)["rows"]
        row[f"{prefix}today_replay_ms"] = (time.perf_counter() - start) * 1000
        assert sum((r["net"] for r in days if r["net"] is not None), 0) == net, "today: read path and replay differ"
        env.engine.dispose()
    # status's "today" is the environment's clock (the simulated exchange's, which only moves
    # forward): moved to the ledger's last day where that is later (bench_ledger's entries run
    # years past the machine's date at 1M), so that today's P&L has today's entries to read
    subprocess.run([sys.executable, "-c", CLI, "--home", str(home), "sim", "clock", "set", f"{last}T22:00"],
                   env=ENV, check=False, capture_output=True)
    for command in ("pnl", "status"):
        argv = [sys.executable, "-c", CLI, "--home", str(home), command, "--json"]
        row[f"{prefix}{command}_proc_ms"], row[f"{prefix}{command}_proc_cpu_ms"] = whole_process(
            argv + (["--no-broker"] if command == "status" else []), max(3, args.runs // 2))
    row[f"{prefix}instrument_proc_ms"], row[f"{prefix}instrument_proc_cpu_ms"] = whole_process(
        [sys.executable, "-c", CLI, "--home", str(home), "pnl", "--by", "instrument", "--json"], max(3, args.runs // 2))


def postgresql(row: dict, path: Path, out: Path, size: int, args) -> None:
    """The same ledger on PostgreSQL: the reads beside raw psycopg reading the same rows."""
    import pg_copy
    import psycopg

    from tradeledger.ledger import db
    from tradeledger.ledger.reading import open_reader, postgresql_params
    from tradeledger.ledger.store import Ledger

    home = out / f"home-pg-{size}"
    started = time.perf_counter()
    schema, url = pg_copy.copy(path, args.pg_url, home, bulk.ACCT, progress=lambda _m: None)
    row["pg_copy_s"] = time.perf_counter() - started
    try:
        subprocess.run([sys.executable, "-c", CLI, "--home", str(home), "status", "--no-broker"],
                       env=ENV, check=True, capture_output=True)  # the full opening records the checked config
        engine = db.make_engine(url)
        ledger = Ledger(engine)
        row["pg_query_ms"] = median_ms(lambda: (ledger.positions(), ledger.income()), args.runs)
        engine.dispose()
        raw = psycopg.connect(**postgresql_params(url))
        with open_reader(url) as reader:
            row["pg_reader_ms"] = median_ms(lambda: reader.positions(prefix=f"Assets:Broker:{bulk.ACCT}"), args.runs)
        row["pg_query_floor_ms"] = median_ms(lambda: raw_rows(raw, PNL_ROWS[:1]), args.runs)
        reads(row, "pg_", home, url, raw, args)
        row["pg_positions_proc_ms"], row["pg_positions_proc_cpu_ms"] = whole_process(
            [sys.executable, "-c", CLI, "--home", str(home), "positions", "--json"], max(3, args.runs // 2))
        raw.close()
    finally:
        pg_copy.drop(args.pg_url, schema)


def read_floor(path: Path) -> float:
    """Raw sqlite3 reading the export's two row streams (headers, postings) in order: seconds."""
    from tradeledger.ledger import export

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA cache_size = -8192")
    start = time.perf_counter()
    for sql in (export._HEADERS, export._POSTINGS):
        cursor = conn.execute(sql)
        while cursor.fetchmany(5000):
            pass
    conn.close()
    return time.perf_counter() - start


def measure(size: int, out: Path, args) -> dict:
    from tradeledger.ledger import db
    from tradeledger.ledger.store import Ledger

    path = out / f"ledger-{size}.db"
    url = f"sqlite:///{path}"
    made = time.perf_counter()
    home = out / f"home-{size}"
    entries, postings = bulk.make(path, entries=size, progress=lambda _m: None, home=home)
    row: dict = {"entries": entries, "postings": postings, "made_s": time.perf_counter() - made}
    if size <= args.verify_upto:
        ok, row["verify"] = bulk.check(path)
        assert ok, row["verify"]

    engine = db.make_engine(url)
    ledger = Ledger(engine)
    raw = sqlite3.connect(path)
    row["query_ms"] = median_ms(lambda: (ledger.positions(), ledger.income()), args.runs)
    from tradeledger.ledger.reading import open_reader

    with open_reader(url) as reader:
        row["reader_ms"] = median_ms(lambda: reader.positions(prefix=f"Assets:Broker:{bulk.ACCT}"), args.runs)
    row["query_floor_ms"] = median_ms(lambda: raw.execute(
        "SELECT account_id, commodity, whole, nanos FROM balance").fetchall(), args.runs)
    subprocess.run([sys.executable, "-c", CLI, "--home", str(home), "status", "--no-broker"],
                   env=ENV, check=True, capture_output=True)  # the full opening records the checked config
    reads(row, "", home, url, raw, args)
    raw.close()
    engine.dispose()
    if size <= args.pg_upto and args.pg_url:
        postgresql(row, path, out, size, args)

    export_path = out / f"ledger-{size}.beancount"
    cli = [sys.executable, "-c", CLI, "--home", str(home), "positions", "--json"]
    floor = [sys.executable, "-c", "pass"]
    process(cli)  # bytecode and file cache warm
    walls, cpus, peaks, floors = [], [], [], []
    for _ in range(args.runs):
        wall, cpu, peak, _ = process(cli)
        walls.append(wall), cpus.append(cpu), peaks.append(peak)
        start = time.perf_counter()
        subprocess.run(floor, env=ENV, check=True)
        floors.append(time.perf_counter() - start)
    row["positions_ms"], row["positions_cpu_ms"] = statistics.median(walls) * 1000, statistics.median(cpus) * 1000
    row["positions_rss"], row["floor_ms"] = max(peaks), statistics.median(floors) * 1000

    wall, cpu, peak, stdout = process([sys.executable, "-c", EXPORT, url, str(export_path)])
    row["export_s"], row["export_rss"] = float(stdout.split()[-1]), peak
    row["export_floor_s"] = min(read_floor(path) for _ in range(2))
    row["export_mb"] = export_path.stat().st_size / 1e6
    if size <= args.beancount_upto:
        wall, cpu, peak, stdout = process([sys.executable, "-c", BEANCOUNT, str(export_path)])
        row["beancount_s"], row["beancount_cpu_s"], row["beancount_rss"] = wall, cpu, peak
        row["beancount_errors"] = int(stdout.split()[1])
        from tradeledger.ledger.export import check

        engine = db.make_engine(url)
        result = check(Ledger(engine), export_path)
        engine.dispose()
        row["check"] = "equal" if result.ok else f"{len(result.errors)} errors, {len(result.differences)} differences"
    export_path.unlink()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", default="1000,100000,1000000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--beancount-upto", type=int, default=100_000)
    parser.add_argument("--verify-upto", type=int, default=1_000_000)
    parser.add_argument("--replay-upto", type=int, default=100_000)
    parser.add_argument("--pg-upto", type=int, default=100_000)
    parser.add_argument("--pg-url", default=os.environ.get("TRADELEDGER_TEST_PG_URL"))
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-read-"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(s) for s in args.entries.split(","))
    rows = []
    for size in sizes:
        print(f"... {size:,} entries", flush=True)
        rows.append(measure(size, out, args))
        print("   ", rows[-1], flush=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(out / f"ledger-{size}.db") + suffix).unlink(missing_ok=True)
    load = os.getloadavg()
    print(f"\nthe read side, SQLite, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cpus "
          f"(python -c pass: {statistics.median(r['floor_ms'] for r in rows):.0f} ms)")
    head = "".join(f"{r['entries']:>14,}" for r in rows)
    print(f"  {'entries':<54}{head}")
    print(f"  {'postings':<54}" + "".join(f"{r['postings']:>14,}" for r in rows))
    print(f"  {'made (bulk.py) and db verify':<54}" + "".join(
        f"{r['made_s']:>9.0f} s {'ok' if 'verify' in r else '--':>3}" for r in rows))

    def line(label, values):
        print(f"  {label:<54}" + "".join(f"{v:>14}" for v in values))

    line("positions + income, in-process (ms)", [f"{r['query_ms']:.2f}" for r in rows])
    line("  ceiling: raw sqlite3 reading `balance` (ms)", [f"{r['query_floor_ms']:.3f}" for r in rows])
    line("  ratio ceiling / ours", [f"{r['query_floor_ms'] / r['query_ms']:.3f}" for r in rows])
    line("  ratio to the 20 ms target", [f"{r['query_ms'] / 20:.3f}" for r in rows])
    line("positions, raw read path of the command (ms)", [f"{r['reader_ms']:.2f}" for r in rows])
    line("  ratio ceiling / ours", [f"{r['query_floor_ms'] / r['reader_ms']:.3f}" for r in rows])
    line("`positions --json`, whole process, wall (ms)", [f"{r['positions_ms']:.0f}" for r in rows])
    line("  cpu (ms)", [f"{r['positions_cpu_ms']:.0f}" for r in rows])
    line("  ceiling: beancount load_file of the export (s)",
         [f"{r['beancount_s']:.2f}" if "beancount_s" in r else "not run" for r in rows])
    line("  ratio beancount's load / ours", [f"{r['beancount_s'] * 1000 / r['positions_ms']:.1f}x"
                                             if "beancount_s" in r else "-" for r in rows])
    line("  ratio to the 250 ms target", [f"{r['positions_ms'] / 250:.2f}" for r in rows])
    line("  peak RSS (MB; target 80)", [f"{r['positions_rss']:.1f}" for r in rows])
    na = "-"

    def ms(r, key, digits=2):
        return f"{r[key]:.{digits}f}" if key in r else na

    def ratio(r, floor, ours, digits=3):
        return f"{r[floor] / r[ours]:.{digits}f}" if floor in r and ours in r else na

    line("pnl, read path of the command (`quick_pnl`, ms)", [ms(r, "pnl_ms") for r in rows])
    line("  ceiling: raw sqlite3 reading the same rows (ms)", [ms(r, "pnl_floor_ms", 3) for r in rows])
    line("  ratio ceiling / ours", [ratio(r, "pnl_floor_ms", "pnl_ms") for r in rows])
    line("  the replay it replaces, equal rows (ms)", [ms(r, "pnl_replay_ms", 0) for r in rows])
    line("pnl --by instrument, read path (`quick_pnl`, ms)", [ms(r, "instrument_ms") for r in rows])
    line("  ceiling: raw sqlite3, the same rows and GROUP BY (ms)", [ms(r, "instrument_floor_ms", 3) for r in rows])
    line("  ratio ceiling / ours", [ratio(r, "instrument_floor_ms", "instrument_ms") for r in rows])
    line("  per 1M postings (ms)", [f"{r['instrument_ms'] * 1e6 / r['postings']:.0f}" for r in rows])
    line("  the replay it replaces, equal rows (ms)", [ms(r, "instrument_replay_ms", 0) for r in rows])
    line("  `pnl --by instrument --json`, process, wall / cpu (ms)",
         [f"{r['instrument_proc_ms']:.0f} / {r['instrument_proc_cpu_ms']:.0f}" for r in rows])
    line("pnl --since <first of the last month>: postings since", [f"{r['since_postings']:,}" for r in rows])
    line("  by strategy, read path (ms)", [ms(r, "since_strategy_ms") for r in rows])
    line("  ceiling: raw sqlite3, the same rows + the period's sums", [ms(r, "since_floor_ms", 3) for r in rows])
    line("  ratio ceiling / ours", [ratio(r, "since_floor_ms", "since_strategy_ms") for r in rows])
    line("  the replay it replaces, equal rows (ms)", [ms(r, "since_strategy_replay_ms", 0) for r in rows])
    line("  by instrument, read path (ms)", [ms(r, "since_instrument_ms") for r in rows])
    line("  the replay it replaces, equal rows (ms)", [ms(r, "since_instrument_replay_ms", 0) for r in rows])
    line("status's P&L of today, read path (ms)", [ms(r, "today_ms") for r in rows])
    line("  ratio ceiling (pnl's rows) / ours", [ratio(r, "pnl_floor_ms", "today_ms") for r in rows])
    line("  the replay it replaces (`pnl --by day`), equal (ms)", [ms(r, "today_replay_ms", 0) for r in rows])
    line("`pnl --json`, whole process, wall / cpu (ms)",
         [f"{r['pnl_proc_ms']:.0f} / {r['pnl_proc_cpu_ms']:.0f}" for r in rows])
    line("  beancount's load / ours", [f"{r['beancount_s'] * 1000 / r['pnl_proc_ms']:.1f}x"
                                       if "beancount_s" in r else na for r in rows])
    line("`status --json --no-broker`, whole process (ms)",
         [f"{r['status_proc_ms']:.0f} / {r['status_proc_cpu_ms']:.0f}" for r in rows])
    line("  beancount's load / ours", [f"{r['beancount_s'] * 1000 / r['status_proc_ms']:.1f}x"
                                       if "beancount_s" in r else na for r in rows])
    if any("pg_query_ms" in r for r in rows):
        print("  PostgreSQL, the same ledger copied (bench/pg_copy.py):")
        line("  copied in (s)", [ms(r, "pg_copy_s", 0) for r in rows])
        line("  positions + income, in-process (`Ledger`, ms)", [ms(r, "pg_query_ms") for r in rows])
        line("    ceiling: raw psycopg reading `balance` (ms)", [ms(r, "pg_query_floor_ms", 3) for r in rows])
        line("    ratio ceiling / ours", [ratio(r, "pg_query_floor_ms", "pg_query_ms") for r in rows])
        line("  positions, raw read path (`Reader`, ms)", [ms(r, "pg_reader_ms") for r in rows])
        line("    ratio ceiling / ours", [ratio(r, "pg_query_floor_ms", "pg_reader_ms") for r in rows])
        line("  pnl, read path (ms)", [ms(r, "pg_pnl_ms") for r in rows])
        line("    ceiling: raw psycopg reading the same rows (ms)", [ms(r, "pg_pnl_floor_ms", 3) for r in rows])
        line("    ratio ceiling / ours", [ratio(r, "pg_pnl_floor_ms", "pg_pnl_ms") for r in rows])
        line("    the replay it replaces, equal rows (ms)", [ms(r, "pg_pnl_replay_ms", 0) for r in rows])
        line("  pnl --by instrument, read path (ms)", [ms(r, "pg_instrument_ms") for r in rows])
        line("    ceiling: raw psycopg, the same rows and GROUP BY (ms)",
             [ms(r, "pg_instrument_floor_ms", 3) for r in rows])
        line("    ratio ceiling / ours", [ratio(r, "pg_instrument_floor_ms", "pg_instrument_ms") for r in rows])
        line("    the replay it replaces, equal rows (ms)", [ms(r, "pg_instrument_replay_ms", 0) for r in rows])
        line("  pnl --since, by strategy / by instrument, read path (ms)",
             [f"{r['pg_since_strategy_ms']:.1f} / {r['pg_since_instrument_ms']:.1f}" if "pg_since_strategy_ms" in r
              else na for r in rows])
        line("    the replay it replaces, by strategy, equal (ms)",
             [ms(r, "pg_since_strategy_replay_ms", 0) for r in rows])
        line("  status's P&L of today, read path (ms)", [ms(r, "pg_today_ms") for r in rows])
        line("    the replay it replaces, equal (ms)", [ms(r, "pg_today_replay_ms", 0) for r in rows])
        for command in ("positions", "pnl", "status"):
            line(f"  `{command} --json`, whole process, wall / cpu (ms)",
                 [f"{r[f'pg_{command}_proc_ms']:.0f} / {r[f'pg_{command}_proc_cpu_ms']:.0f}"
                  if f"pg_{command}_proc_ms" in r else na for r in rows])
    line("`export beancount` (s)", [f"{r['export_s']:.2f}" for r in rows])
    line("  per 1M postings (s; target 3-4)", [f"{r['export_s'] * 1e6 / r['postings']:.2f}" for r in rows])
    line("  ceiling: raw sqlite3 reading the same rows (s)", [f"{r['export_floor_s']:.2f}" for r in rows])
    line("  ratio ceiling / ours", [f"{r['export_floor_s'] / r['export_s']:.2f}" for r in rows])
    line("  peak RSS (MB)", [f"{r['export_rss']:.1f}" for r in rows])
    line("  file (MB)", [f"{r['export_mb']:.1f}" for r in rows])
    line("  beancount: errors / check", [f"{r['beancount_errors']} / {r['check']}" if "check" in r else "not run"
                                         for r in rows])
    line("  beancount's load / our export", [f"{r['beancount_s'] / r['export_s']:.1f}x" if "beancount_s" in r
                                             else "-" for r in rows])
    line("  beancount's peak RSS (MB)", [f"{r['beancount_rss']:.0f}" if "beancount_rss" in r else "-" for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
