"""Trade-cycle benchmark: prints figures; not a test.

    python bench/bench_cycle.py [--strategies 10] [--instruments 100] [--days 250] [--out DIR]

1. One full cycle for S strategies x N futures on the embedded simulated broker, timed step by
   step: compute the target run (forecasts from 300 days of history, sizing, the snapshot),
   approve, plan (netting), record (crosses booked, orders recorded), send, and book the fills.
   Target (issue 3): at most 3 s on this 2-core machine.
2. The P&L query on a year of such trading: D days, each with a fill per contract allocated to
   two strategies and a settlement per contract, booked through the same entry builders as the
   engine (`engine.booking`), then `pnl --by strategy|instrument|day` timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

import numpy as np

from tradeledger.engine.context import Books, Context
from tradeledger.engine.targets import prices
from tradeledger.engine.accounting.entries import FillShare, Holding, fill_entry, settlement_entry
from tradeledger.engine.setup.config import current_contract
from tradeledger.engine.trading.cycle import plan_run, submit_run, wait_for_fills
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import approve_run, compute_run
from tradeledger.reports import pnl

UTC = dt.timezone.utc
START = dt.date(2026, 12, 1)


def config_text(n_strategies: int, n_instruments: int) -> str:
    lines = ['[portfolio]', 'capital = "50000000"', "", "[limits]", "max_order_qty = 100000",
             "max_daily_qty = 1000000", "", "[sim]", 'commission_per_contract = "1.25"', ""]
    for i in range(n_instruments):
        lines += [f"[instruments.I{i:03d}]", 'type = "future"', 'currency = "USD"', 'multiplier = "10"',
                  'exchange = "SIM"', 'tick_size = "0.01"', 'expiry_months = "HMUZ"', "expiry_day = 20", ""]
    names = [f"I{i:03d}" for i in range(n_instruments)]
    rules = ["ewmac_8_32", "ewmac_16_64", "ewmac_32_128"]
    for s in range(n_strategies):
        weights = ", ".join(f'{n} = "{D(1) / n_instruments}"' for n in names)
        lines += [f"[strategies.s{s:02d}]", f'capital_share = "{D(1) / n_strategies}"', 'idm = "2.5"',
                  f'rules = {{ {rules[s % 3]} = "1" }}', f"instruments = {{ {weights} }}", ""]
    return "\n".join(lines)


def seed_prices(ctx: Context, session, n_instruments: int, days: int = 300) -> dict[str, D]:
    rng = np.random.default_rng(11)
    dates, day = [], START - dt.timedelta(days=1)
    while len(dates) < days:
        if day.weekday() < 5:
            dates.append(day)
        day -= dt.timedelta(days=1)
    dates.reverse()
    rows, last = ["date,instrument,close"], {}
    for i in range(n_instruments):
        drift = rng.normal(0, 0.001)
        path = 100 * np.exp(np.cumsum(rng.normal(drift, 0.01, len(dates))))
        for d, p in zip(dates, path):
            rows.append(f"{d.isoformat()},I{i:03d},{p:.2f}")
        last[f"I{i:03d}"] = D(f"{path[-1]:.2f}")
    parsed = prices.parse_prices_csv("\n".join(rows) + "\n", session.config, "USD", "bench")
    prices.store_rows(ctx, parsed, "bench")
    return last


def timed(label: str, fn, figures: dict):
    start = time.perf_counter()
    result = fn()
    figures[label] = time.perf_counter() - start
    print(f"  {label:<44} {figures[label] * 1000:8.0f} ms", flush=True)
    return result


def bench_cycle(home: Path, n_strategies: int, n_instruments: int) -> Session:
    env = init_environment(home, "paper", "sim", None, config_extra="\n" + config_text(n_strategies, n_instruments))
    session = Session(env)
    last = seed_prices(env, session, n_instruments)
    when = dt.datetime.combine(START, dt.time(15), tzinfo=UTC)
    exchange = session.exchange()
    exchange.set_clock(when)
    for name, instrument in session.config.instruments.items():
        contract = current_contract(instrument, START)
        exchange.add_contract(contract)
        exchange.set_price(contract.code, last[name], when)
    print(f"one cycle, {n_strategies} strategies x {n_instruments} instruments (sim broker, SQLite)")
    figures: dict[str, float] = {}
    total = time.perf_counter()
    run_id = timed("compute target run", lambda: compute_run(env, START, when), figures)
    timed("approve", lambda: approve_run(env, run_id, "bench", None, when), figures)
    order_plan = timed("plan (netting, limits)", lambda: plan_run(session, run_id, when), figures)
    report = timed("record + cross + send", lambda: submit_run(session, run_id, when), figures).submitted
    fills = timed("book fills", lambda: wait_for_fills(session, run_id, timeout=60), figures)
    elapsed = time.perf_counter() - total
    crosses = sum(len(c.crosses) for c in order_plan.contracts)
    print(f"  {'whole cycle':<44} {elapsed * 1000:8.0f} ms   ({len(report.sent)} orders, {crosses} crosses, "
          f"{len(fills.booked)} fills)  target <= 3000 ms: {'met' if elapsed <= 3 else 'MISSED'}")
    return session


def bench_year(home: Path, n_strategies: int, n_instruments: int, days: int) -> None:
    env = init_environment(home, "paper", "sim", None, config_extra="\n" + config_text(n_strategies, n_instruments))
    session = Session(env)
    chart, ledger = env.chart, env.ledger
    rng = random.Random(5)
    contracts = [current_contract(i, START) for i in session.config.instruments.values()]
    holders = [s.account_name for s in session.config.strategies.values()]
    with env.engine.begin() as conn:
        for contract in contracts:
            ensure_contract(conn, ledger, contract, START)
        for holder in holders:
            ensure_holder(conn, Books(ledger, chart), holder)
    state = {(h, c.code): Holding() for h in holders for c in contracts}
    price = {c.code: D(100) for c in contracts}
    start, entries, day = time.perf_counter(), 0, START
    for n in range(days):
        day = START + dt.timedelta(days=n)
        batch = []
        for k, contract in enumerate(contracts):
            when = dt.datetime.combine(day, dt.time(15), tzinfo=UTC) + dt.timedelta(seconds=k)
            price[contract.code] += D(rng.randint(-100, 100)) / 100
            a, b = rng.sample(holders, 2)
            shares = [FillShare(a, D(rng.randint(-3, 3) or 1), D("1.25")), FillShare(b, D(rng.randint(-3, 3) or 1), D("1.25"))]
            holdings = {h: state[(h, contract.code)] for h in (a, b)}
            txn, after = fill_entry(chart, contract, f"E{n}-{k}", price[contract.code], when, shares, holdings,
                                    "USD", "", "bench fill")
            batch.append(txn)
            for h, holding in after.items():
                state[(h, contract.code)] = holding
            settle = price[contract.code] + D(rng.randint(-50, 50)) / 100
            held = {h: state[(h, contract.code)] for h in holders if state[(h, contract.code)].position}
            txn, after = settlement_entry(chart, contract, day, when.replace(hour=21), settle, held)
            if txn is not None:
                batch.append(txn)
                for h, holding in after.items():
                    state[(h, contract.code)] = holding
        ledger.book_many(batch)
        entries += len(batch)
    txns, postings = ledger.count()
    print(f"a year of such trading: {days} days, {txns:,} entries, {postings:,} postings "
          f"(booked in {time.perf_counter() - start:.1f} s)")
    for by in ("strategy", "instrument", "day"):
        samples = []
        for _ in range(3):
            t = time.perf_counter()
            result = pnl.pnl(session, by)
            samples.append(time.perf_counter() - t)
        print(f"  pnl --by {by:<11} {statistics.median(samples) * 1000:8.0f} ms  ({len(result['rows'])} rows)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", type=int, default=10)
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-cycle-"))
    bench_cycle(out / "cycle", args.strategies, args.instruments)
    bench_year(out / "year", args.strategies, args.instruments, args.days)
    print(f"(python {sys.version.split()[0]}; files in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
