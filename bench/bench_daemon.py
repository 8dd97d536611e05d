"""Daemon memory benchmark: resident memory over an hour of simulated jobs; prints figures, not a test.

    python bench/bench_daemon.py [--hours 1] [--sync-seconds 10] [--reconcile-seconds 60] [--out DIR]

One paper environment on SQLite with the simulated broker. An hour of the daemon's schedule is
run in a tight loop through `Daemon.run_job` (the code path every scheduled job takes: the job,
its exception bookkeeping, the heartbeat): a fill sync every `--sync-seconds` of simulated time
with a new execution at the broker before each (so every sync books a fill and replays all the
earlier ones), a reconciliation every `--reconcile-seconds`, and the CME settlement once per
simulated day boundary. Resident memory (VmRSS from /proc) is reported at the start, every
simulated quarter hour, and at the end, with the peak (VmHWM).

Target (issue 4): under 200 MB resident.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

UTC = dt.timezone.utc
CONFIG = """
[instruments.MBT]
type = "future"
currency = "USD"
multiplier = 0.1
exchange = "CME"

[strategies.trend]
instruments = { MBT = 1 }

[daemon]
settlement_times = { CME = "21:00" }
"""


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--sync-seconds", type=int, default=10)
    parser.add_argument("--reconcile-seconds", type=int, default=60)
    parser.add_argument("--out", default=None, help="directory for the environment (default: a temporary one)")
    args = parser.parse_args()

    from tradeledger.engine.setup.config import to_contract
    from tradeledger.engine.ops.daemon import Daemon
    from tradeledger.engine.setup.environment import init_environment
    from tradeledger.engine.targets.prices import parse_prices_csv, store_rows

    base = Path(args.out or tempfile.mkdtemp(prefix="tl-bench-daemon-"))
    env = init_environment(base / "home", "paper", "sim", None, config_extra=CONFIG)
    daemon = Daemon(env)
    daemon.acquire()
    exchange = daemon.session.exchange()
    start_clock = dt.datetime(2026, 12, 1, 20, 30, tzinfo=UTC)
    exchange.set_clock(start_clock)
    exchange.add_contract(to_contract(daemon.session.config.instruments["MBT"], "MBTZ26", "202612"))
    exchange.set_price("MBTZ26", Decimal(90000))

    total = int(args.hours * 3600)
    print(f"simulating {args.hours} h: fill sync every {args.sync_seconds} s, reconcile every "
          f"{args.reconcile_seconds} s, CME settlement at 21:00 UTC")
    start_rss, started = rss_mb(), time.perf_counter()
    print(f"RSS at start: {start_rss:.1f} MB")
    runs = {"fill_sync": 0, "reconcile": 0, "settle:CME": 0}
    failed = 0
    settled_days = set()
    for second in range(0, total + 1, args.sync_seconds):
        now = start_clock + dt.timedelta(seconds=second)
        exchange.set_clock(now)
        price = Decimal(90000 + (second // args.sync_seconds) % 50)
        exchange.set_price("MBTZ26", price)
        exchange.external_trade("MBTZ26", Decimal(1 if (second // args.sync_seconds) % 2 == 0 else -1), price)
        jobs = ["fill_sync"]
        if second % args.reconcile_seconds == 0:
            jobs.append("reconcile")
        if now.hour >= 21 and now.date() not in settled_days:
            exchange.settle("MBTZ26", price, now.date())
            csv = f"date,contract,settle\n{now.date()},MBTZ26,{price}\n"
            store_rows(env, parse_prices_csv(csv, daemon.session.config, "USD", "bench"), "bench", replace=True)
            settled_days.add(now.date())
            jobs.append("settle:CME")
        for job in jobs:
            result = daemon.run_job(job)
            runs[job] += 1
            failed += not result.ok
            if not result.ok:
                print(f"  {job} failed: {result.result}", file=sys.stderr)
        if second and second % 900 < args.sync_seconds:
            print(f"  t+{second // 60:3d} min: RSS {rss_mb():.1f} MB ({sum(runs.values())} jobs, "
                  f"{time.perf_counter() - started:.1f} s wall)")
    end_rss, peak = rss_mb(), rss_mb("VmHWM")
    daemon.release()
    print(f"jobs run: {runs}, failed: {failed}, wall time {time.perf_counter() - started:.1f} s")
    print(f"RSS at start {start_rss:.1f} MB, at end {end_rss:.1f} MB, peak {peak:.1f} MB "
          f"(target < 200 MB: {'met' if peak < 200 else 'NOT met'})")
    return 0 if peak < 200 and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
