"""The read side at 1k, 100k and 1M entries, each figure beside its ceiling, in one run; not a test.

    python bench/bench_read.py [--entries 1000,100000,1000000] [--runs 7] [--out DIR]
                               [--beancount-upto 100000] [--verify-upto 1000000]

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
    raw.close()
    engine.dispose()

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
