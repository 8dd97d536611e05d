"""Positions and income as the ledger grows, against their ceiling, in one run; not a test.

    python bench/bench_balances.py [--sizes 10000,100000,1000000] [--runs 7] [--out DIR]

One SQLite ledger (bench_ledger.py's futures fills, about 10 postings each) grows through the
given posting counts. At each size it times `Ledger.positions()` + `Ledger.income()` (median of
--runs), beside two references measured at the same moment on the same file:

- the ceiling: raw sqlite3 reading the same rows from the maintained `balance` table (what the
  ledger's queries read since migration 0011), with no Python around it;
- the sum over postings: the GROUP BY the queries ran before it (what grows with history).

and the peak RSS of a fresh process that opens the ledger and runs the same two queries (after a
WAL checkpoint, as a command finds a quiet ledger). Issue 15
targets: positions + income at most 20 ms, flat from 10k to 10M postings; RSS at most 80 MB.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_ledger import Generator, setup  # noqa: E402
from tradeledger.ledger import db  # noqa: E402
from tradeledger.ledger.store import Ledger  # noqa: E402

F = 10**9
# Peak RSS from /proc (VmHWM): getrusage's ru_maxrss would carry over the forking parent's size.
RSS_PROBE = """
import sys
from tradeledger.ledger import db
from tradeledger.ledger.store import Ledger
ledger = Ledger(db.make_engine(sys.argv[1]))
ledger.positions(), ledger.income()
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="posting counts to measure at")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-balances-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "balances.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    engine = db.make_engine(url, synchronous="NORMAL")
    db.upgrade(engine)
    ledger = Ledger(engine)
    setup(ledger)
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA cache_size = -65536")
    gen = Generator()
    stream = gen.entries(10**9)

    def ceiling():
        return raw.execute("SELECT account_id, commodity, whole, nanos FROM balance").fetchall()

    def old_sums():
        return raw.execute(f"SELECT account_id, commodity, SUM(units / {F}), SUM(units % {F}) FROM posting "
                           "GROUP BY account_id, commodity").fetchall()

    print(f"positions + income as the ledger grows (SQLite, {path})")
    print(f"  {'postings':>10} {'entries':>9}   {'ours':>8} {'ceiling':>8} {'ratio':>6}   "
          f"{'sum over postings':>17}   {'peak RSS':>9}")
    for size in sizes:
        while gen.postings < size:
            batch = [next(stream) for _ in range(max(1, min(1000, (size - gen.postings) // 10)))]
            ledger.book_many(batch)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a quiet ledger, as a command finds it
        txns, postings = ledger.count()
        ours = median_ms(lambda: (ledger.positions(), ledger.income()), args.runs)
        floor = median_ms(ceiling, args.runs)
        summed = median_ms(old_sums, max(1, min(args.runs, 3)))
        rss = int(subprocess.run([sys.executable, "-c", RSS_PROBE, url], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]) / 1024
        print(f"  {postings:>10,} {txns:>9,}   {ours:6.2f}ms {floor:6.2f}ms {floor / ours:6.2f}   "
              f"{summed:15.1f}ms   {rss:7.1f}MB", flush=True)
    print("  targets: ours <= 20 ms at every size (flat), peak RSS <= 80 MB")
    raw.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
