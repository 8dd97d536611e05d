"""The trader's curves at 10k and 100k entries, beside their ceiling, in one run; not a test.

    python bench/bench_series.py [--entries 10000,100000] [--runs 3] [--out DIR]

`pnl --by day` and `report performance` replay the ledger day by day (reports/series.py): every
posting of the holdings, P&L, cash and deposits is read, in booking order, and each day's moves
are folded as they stream by. At each size a ledger of bench_ledger.py's futures fills (about 10
postings an entry) is made by bench/bulk.py with an environment over it, and, as whole processes
(a user's commands: wall, CPU and peak RSS, median of --runs):

- `tradeledger pnl --by day --json` and `tradeledger report performance --json`;
- the ceiling: raw sqlite3 in a fresh process reading the same rows the replay reads (the
  postings in booking order, every entry's metadata beside them) and nothing else.

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


def measure(argv: list[str], runs: int) -> tuple[float, float, float]:
    """Median wall (s), CPU (s) and peak RSS (MB) of fresh processes, after one to warm caches."""
    process(argv)
    got = [process(argv)[:3] for _ in range(runs)]
    return tuple(statistics.median(g[i] for g in got) for i in range(3))  # type: ignore[return-value]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", default="10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-series-"))
    print("entries | postings | command | wall s | cpu s | peak MB | ceiling wall s (ratio) | ceiling MB")
    for size in (int(s) for s in args.entries.split(",")):
        home = out / f"home-{size}"
        home.mkdir(parents=True, exist_ok=True)
        path = home / "ledger.db"
        entries, postings = bulk.make(path, entries=size, home=home, progress=lambda *a: None)
        ceiling = measure([sys.executable, "-c", RAW, str(path)], args.runs)
        for command in (["pnl", "--by", "day", "--json"], ["report", "performance", "--json"]):
            wall, cpu, peak = measure([sys.executable, "-c", CLI, "--home", str(home), *command], args.runs)
            print(f"{entries:,} | {postings:,} | {' '.join(command[:-1])} | {wall:.2f} | {cpu:.2f} | {peak:.0f} | "
                  f"{ceiling[0]:.2f} ({ceiling[0] / wall:.2f}) | {ceiling[2]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
