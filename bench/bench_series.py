"""The trader's curves at 10k and 100k entries, beside their ceiling, in one run; not a test.

    python bench/bench_series.py [--entries 10000,100000] [--runs 3] [--out DIR]

`pnl --by day` and `report performance` replay the ledger day by day (reports/series.py): every
posting of the holdings, P&L, cash and deposits is read, in booking order, and each day's moves
are folded as they stream by. A read stores the replay's state at the end of the day before the
ledger's last (reports/series_checkpoint.py), and the next read resumes there. At each size a
ledger of bench_ledger.py's futures fills (about 10 postings an entry, 390 entries a day) is made
by bench/bulk.py with an environment over it, and, as whole processes (a user's commands: wall,
CPU and peak RSS, median of --runs):

- each command from the first entry (TRADELEDGER_SERIES_REPLAY=full: the replay as it was);
- the same command with no checkpoint stored (the replay, and the checkpoint written);
- the same command again (the second read: resumed from the checkpoint, on the read path
  without SQLAlchemy, reports/series_fast.py, since the checkpoint is the newest the full path
  would keep);
- the ceilings: raw sqlite3 in a fresh process reading the same rows the full replay reads (the
  postings in booking order, every entry's metadata beside them), and the rows the resumed read
  reads (the checkpoint rows, the last day's postings and metadata, the prices after the day);
- `report daily` of the ledger's last day from the first entry (TRADELEDGER_SERIES_REPLAY=full:
  the curves replayed, the positions and NAV at the day's end summed from the first posting) and
  from the nearer end (curves resumed, balances the maintained ones less the entries after the
  day), as whole processes (which also draw the plots and write the HTML) and, for its figures
  alone, in one process: the ratio light / full replay, both in the same run (`--daily-only`).

Printed as ratios (ceiling / ours) in the run; the figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bulk  # noqa: E402
from bench_read import CLI, PEAK, process  # noqa: E402

# What the replay reads (series.posting_moves: the same statements), fetched and dropped.
RAW = PEAK + """import sqlite3
conn = sqlite3.connect(sys.argv[1])
accounts = [i for i, name in conn.execute("SELECT id, name FROM account")
            if name.startswith(("Income:", "Expenses:", "Assets:", "Equity:Deposits"))]
rows = conn.execute("SELECT t.ts, t.id, p.account_id, p.commodity, p.units, p.weight, p.cost FROM txn t "
                    "JOIN posting p ON p.txn_id = t.id WHERE p.account_id IN (%s) ORDER BY t.ts, t.id, p.id"
                    % ", ".join(map(str, accounts)))
metas = conn.execute("SELECT id, meta FROM txn ORDER BY ts, id")
n = 0
while True:
    got = rows.fetchmany(5000)
    if not got:
        break
    n += len(got)
while metas.fetchmany(5000):
    pass
print(n)
"""


# What a resumed read reads (series_checkpoint.build_resumed: the checkpoint rows, then the entries
# after the checkpoint's day as posting_moves reads them, and the prices after it), fetched and dropped.
RAW_RESUMED = PEAK + """import sqlite3
conn = sqlite3.connect(sys.argv[1])
day, = conn.execute("SELECT MIN(day) FROM series_checkpoint").fetchone()
after = conn.execute("SELECT date(?, '+1 day')", (day,)).fetchone()[0]
payloads = conn.execute("SELECT payload FROM series_checkpoint").fetchall()
accounts = [i for i, name in conn.execute("SELECT id, name FROM account")
            if name.startswith(("Income:", "Expenses:", "Assets:", "Equity:Deposits"))]
rows = conn.execute("SELECT t.ts, t.id, p.account_id, p.commodity, p.units, p.weight, p.cost FROM txn t "
                    "JOIN posting p ON p.txn_id = t.id WHERE p.account_id IN (%s) AND t.ts >= ? "
                    "ORDER BY t.ts, t.id, p.id" % ", ".join(map(str, accounts)), (after,))
n = 0
while True:
    got = rows.fetchmany(5000)
    if not got:
        break
    n += len(got)
metas = conn.execute("SELECT id, meta FROM txn WHERE ts >= ? ORDER BY ts, id", (after,))
while metas.fetchmany(5000):
    pass
for table in ("price_bar", "settlement", "fx_rate"):
    conn.execute("SELECT * FROM %s WHERE date > ?" % table, (day,)).fetchall()
print(n, sum(len(p[0]) for p in payloads))
"""
# The series alone, in one process (no start-up, no imports): the full replay, then the resumed read.
IN_PROCESS = PEAK + """import sys, time, statistics
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.reports import series, series_checkpoint
session = Session(open_environment(sys.argv[1], "paper"))
bys = ("strategy", "total")
def best(fn):
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
full = best(lambda: series.full_replay(session, bys))
series_checkpoint.build_resumed(session, bys)  # writes the checkpoints, if there are none
report = {}
resumed = best(lambda: series_checkpoint.build_resumed(session, bys, None, report))
assert report["resumed"] is not None, report
assert repr(series.full_replay(session, bys)) == repr(series_checkpoint.build_resumed(session, bys))
print(full, resumed, report["resumed"])
"""
FULL = PEAK + "import os\nos.environ['TRADELEDGER_SERIES_REPLAY'] = 'full'\n" + CLI[len(PEAK):]
# The daily report's figures alone, in one process (no start-up, no HTML): from the first entry
# (the curves replayed, the balances at the day's end summed from the first posting), then from the
# nearer end (the curves resumed from the checkpoint, the balances the maintained ones less the day
# after), asserted equal.
DAILY_IN_PROCESS = PEAK + """import sys, time, statistics, datetime as dt
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.reports.daily import daily
session = Session(open_environment(sys.argv[1], "paper"))
day = dt.date.fromisoformat(sys.argv[3])
def best(fn):
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
daily(session, day)  # writes the checkpoints, if there are none
full = best(lambda: daily(session, day, full=True))
light = best(lambda: daily(session, day, full=False))
assert repr(daily(session, day, full=True)) == repr(daily(session, day, full=False))
print(full, light)
"""


def last_day(path: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(path)
    day = conn.execute("SELECT MAX(ts) FROM txn").fetchone()[0][:10]
    conn.close()
    return day


def forget(path: Path) -> None:
    """No checkpoint stored: the next read replays from the first entry and writes one."""
    import sqlite3

    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM series_checkpoint")
    conn.close()


def measure(argv: list[str], runs: int, before=None) -> tuple[float, float, float]:
    """Median wall (s), CPU (s) and peak RSS (MB) of fresh processes, after one to warm caches;
    `before()` runs ahead of each."""
    (before or (lambda: None))()
    process(argv)
    got = []
    for _ in range(runs):
        (before or (lambda: None))()
        got.append(process(argv)[:3])
    return tuple(statistics.median(g[i] for g in got) for i in range(3))  # type: ignore[return-value]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", default="10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--daily-only", action="store_true", help="Only `report daily` (light / full replay).")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-series-"))
    print("entries | postings | command | read | wall s | cpu s | peak MB | ceiling wall s (ratio ceiling/ours) "
          "| full replay / this")
    for size in (int(s) for s in args.entries.split(",")):
        home = out / f"home-{size}"
        home.mkdir(parents=True, exist_ok=True)
        path = home / "ledger.db"
        entries, postings = bulk.make(path, entries=size, home=home, progress=lambda *a: None)
        daily_report(home, path, entries, postings, args.runs)
        if args.daily_only:
            continue
        ceiling = measure([sys.executable, "-c", RAW, str(path)], args.runs)
        for command in (["pnl", "--by", "day", "--json"], ["report", "performance", "--json"]):
            cli = ["--home", str(home), *command]
            full = measure([sys.executable, "-c", FULL, *cli], args.runs)
            first = measure([sys.executable, "-c", CLI, *cli], args.runs, before=lambda: forget(path))
            second = measure([sys.executable, "-c", CLI, *cli], args.runs)
            resumed_ceiling = measure([sys.executable, "-c", RAW_RESUMED, str(path)], args.runs)
            name = " ".join(command[:-1])
            for read, (wall, cpu, peak), top in (("full replay", full, ceiling), ("first (writes)", first, ceiling),
                                                 ("second (resumed)", second, resumed_ceiling)):
                print(f"{entries:,} | {postings:,} | {name} | {read} | {wall:.2f} | {cpu:.2f} | {peak:.0f} | "
                      f"{top[0]:.2f} ({top[0] / wall:.2f}) | {full[0] / wall:.1f}x", flush=True)
        got = process([sys.executable, "-c", IN_PROCESS, str(home), str(args.runs)])[3].split()
        print(f"{entries:,} | {postings:,} | series (strategy, total) in one process | full replay {float(got[0]):.3f} s, "
              f"resumed from {got[2]} {float(got[1]):.3f} s | {float(got[0]) / float(got[1]):.0f}x", flush=True)
    return 0


def daily_report(home: Path, path: Path, entries: int, postings: int, runs: int) -> None:
    """`report daily` of the ledger's last day, from the first entry (TRADELEDGER_SERIES_REPLAY=full)
    and from the nearer end (the second read: the checkpoint stored), whole processes and in one
    process; printed as ratios light / full replay, in this run."""
    day = last_day(path)
    cli = ["--home", str(home), "report", "daily", "--date", day, "--json"]
    process([sys.executable, "-c", CLI, *cli])  # the first read: writes the checkpoints
    full = measure([sys.executable, "-c", FULL, *cli], runs)
    light = measure([sys.executable, "-c", CLI, *cli], runs)
    for read, (wall, cpu, peak) in (("full replay", full), ("light (resumed, balances from the end)", light)):
        print(f"{entries:,} | {postings:,} | report daily | {read} | {wall:.2f} | {cpu:.2f} | {peak:.0f} | "
              f"light / full replay {wall / full[0]:.2f} (wall), {cpu / full[1]:.2f} (cpu)", flush=True)
    got = process([sys.executable, "-c", DAILY_IN_PROCESS, str(home), str(runs), day])[3].split()
    print(f"{entries:,} | {postings:,} | report daily's figures in one process (no HTML) | full replay "
          f"{float(got[0]):.3f} s, light {float(got[1]):.3f} s | light / full replay "
          f"{float(got[1]) / float(got[0]):.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
