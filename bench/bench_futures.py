"""Futures benchmarks (issue 11): prints figures and ratios; not a test.

    python bench/bench_futures.py [--days 260] [--strategies 10] [--instruments 100] [--out DIR] [--skip-year]

1. A year of the demo: `run_demo` for D trading days (every quarterly and monthly roll and expiry
   on the way), timed against the issue's ceiling of 60 s (ratio = time / 60 s).
2. A roll day: S strategies x N futures all holding the expiring contract; on its force day one
   cycle (compute, approve, plan, record + cross + send, book) rolls every instrument as one
   calendar spread (N spreads) together with the day's exposure changes. Its ceiling is the same
   cycle on an ordinary day in the same run (ratio = roll day / ordinary day), and the issue-3
   target of 3 s for a cycle of this size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

from tradeledger.engine.futures.state import old_and_new
from tradeledger.engine.setup.config import to_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import approve_run, compute_run
from tradeledger.engine.trading.cycle import submit_run, wait_for_fills

sys.path.insert(0, str(Path(__file__).parent))
from bench_cycle import seed_prices  # noqa: E402

UTC = dt.timezone.utc
START = dt.date(2026, 12, 1)
ROLL_DAY = dt.date(2026, 12, 16)  # force day of every Z26 contract (third Friday 18th - 2 days)


def config_text(n_strategies: int, n_instruments: int) -> str:
    lines = ['[portfolio]', 'capital = "50000000"', 'max_run_age_hours = 10000', "", "[limits]",
             "max_order_qty = 100000", "max_daily_qty = 10000000", "", "[sim]", 'commission_per_contract = "1.25"', ""]
    for i in range(n_instruments):
        lines += [f"[instruments.I{i:03d}]", 'type = "future"', 'currency = "USD"', 'multiplier = "10"',
                  'exchange = "SIM"', 'tick_size = "0.01"', 'expiry_months = "HMUZ"', 'expiry_rule = "third_friday"',
                  "roll_offset_days = 8", "force_days = 2", ""]
    names = [f"I{i:03d}" for i in range(n_instruments)]
    rules = ["ewmac_8_32", "ewmac_16_64", "ewmac_32_128"]
    for s in range(n_strategies):
        weights = ", ".join(f'{n} = "{D(1) / n_instruments}"' for n in names)
        lines += [f"[strategies.s{s:02d}]", f'capital_share = "{D(1) / n_strategies}"', 'idm = "2.5"',
                  f'rules = {{ {rules[s % 3]} = "1" }}', f"instruments = {{ {weights} }}", ""]
    return "\n".join(lines)


def cycle(session: Session, day: dt.date, prices: dict) -> tuple[float, int, int]:
    env, exchange = session, session.exchange()
    when = dt.datetime.combine(day, dt.time(15), tzinfo=UTC)
    exchange.set_clock(when)
    for name, instrument in session.config.instruments.items():
        old, new = old_and_new(instrument, day)
        for dates in (old, new):
            if dates is not None:
                contract = to_contract(instrument, dates.code, dates.expiry)
                exchange.add_contract(contract)
                exchange.set_price(contract.code, prices[name] + (D(1) if dates is new else D(0)), when)
    start = time.perf_counter()
    run_id = compute_run(env, day, when)
    approve_run(env, run_id, "bench", None, when)
    order_plan = submit_run(session, run_id, when, what="bench").plan
    fills = wait_for_fills(session, run_id, timeout=120)
    elapsed = time.perf_counter() - start
    return elapsed, sum(1 for s in order_plan.spreads if s.old_side), len(fills.booked)


def bench_roll_day(home: Path, n_strategies: int, n_instruments: int) -> None:
    env = init_environment(home, "paper", "sim", None, config_extra="\n" + config_text(n_strategies, n_instruments))
    session = Session(env)
    last = seed_prices(env, session, n_instruments)
    print(f"a roll day: {n_strategies} strategies x {n_instruments} futures (sim broker, SQLite)")
    t0, _, booked0 = cycle(session, START, last)
    print(f"  first cycle (opens the positions)          {t0 * 1000:8.0f} ms  ({booked0} fills)")
    t1, _, booked1 = cycle(session, START + dt.timedelta(days=1), last)
    print(f"  ordinary day (the ceiling)                 {t1 * 1000:8.0f} ms  ({booked1} fills)")
    t2, spreads, booked2 = cycle(session, ROLL_DAY, last)
    print(f"  roll day                                   {t2 * 1000:8.0f} ms  ({spreads} spreads, {booked2} fills)")
    print(f"  ratio roll day / ordinary day: {t2 / t1:.2f}; roll day / 3 s target: {t2 / 3:.2f}")
    session.close()


def bench_year(home: Path, days: int) -> None:
    from beancount import loader

    from tradeledger.engine.setup.demo import run_demo
    from tradeledger.ledger.export import export_beancount

    start, cpu = time.perf_counter(), time.process_time()
    session = run_demo(home, days)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    txns, postings = session.ledger.count()
    export_beancount(session.ledger, session.ledger_path)
    session.close()
    t0 = time.perf_counter()
    _entries, errors, _options = loader.load_file(str(session.ledger_path))
    load = time.perf_counter() - t0
    print(f"a year of the demo: {days} trading days in {elapsed:.1f} s wall, {cpu:.1f} s CPU "
          f"({txns:,} entries, {postings:,} postings)")
    print(f"  ratio to the 60 s ceiling (issue 11): wall {elapsed / 60:.2f}, CPU {cpu / 60:.2f}")
    print(f"  beancount loading the same year's export: {load:.2f} s ({len(errors)} errors); "
          f"the year is {elapsed / load:.0f}x its load, {elapsed / days * 1000:.0f} ms wall per trading day")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=260)
    parser.add_argument("--strategies", type=int, default=10)
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-year", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-futures-"))
    if not args.skip_year:
        bench_year(out / "year", args.days)
    bench_roll_day(out / "roll", args.strategies, args.instruments)
    print(f"(python {sys.version.split()[0]}; files in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
