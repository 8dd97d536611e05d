"""The trader's view on a year of trading: prints figures; not a test.

    python bench/bench_view.py [--strategies 10] [--instruments 20] [--days 250] [--out DIR]

A year-long demo run through the whole cycle would take far longer than a benchmark may, so the
ledger is generated another way, through the engine's own entry builders (`fill_entry`,
`settlement_entry`): S strategies x N instruments (16 USD/EUR futures and 4 ETFs when N = 20),
every business day one fill per instrument allocated to two strategies, a settlement per future,
the closes, settlements and FX rates of the day, a target run per day (one line per strategy and
instrument) with its orders and fills in the engine's tables, and the initial deposit. Then:

* the export (`tradeledger export beancount`): time and size, and beancount's own load of it;
* Fava's start (`tradeledger fava --no-export`, until its first page is served), target <= 10 s;
* every tradeledger page in Fava (first load and warm), target <= 1 s each;
* `report daily` for the last day, target <= 5 s.
Times are also given as ratios to beancount's load of the same file, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal as D
from pathlib import Path

from tradeledger.engine.context import Books
from tradeledger.engine import tables
from tradeledger.engine.accounting.booking import FillShare, Holding, fill_entry, settlement_entry
from tradeledger.engine.accounting.export import export_ledger
from tradeledger.engine.accounting.holdings import ensure_contract, ensure_holder
from tradeledger.engine.setup.config import current_contract
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.funding import fund
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets import prices
from tradeledger.ledger.numbers import to_scaled
from tradeledger.ledger.store import fmt_ts

UTC = dt.timezone.utc
START = dt.date(2027, 1, 4)  # December contracts trade all year: no roll inside the benchmark
PAGES = ("TradeledgerTargets", "TradeledgerOrders", "TradeledgerReconciliation", "TradeledgerExceptions",
         "TradeledgerStrategies")


def config_text(n_strategies: int, n_instruments: int) -> tuple[str, list[tuple[str, str, str]]]:
    instruments = []
    for i in range(n_instruments):
        if i % 5 == 4:
            instruments.append((f"E{i:02d}", "share", "USD"))
        else:
            instruments.append((f"F{i:02d}", "future", "EUR" if i % 5 == 3 else "USD"))
    lines = ['[portfolio]', 'capital = "50000000"', 'capital_mode = "compounding"', "", "[limits]",
             "max_order_qty = 100000", "max_daily_qty = 1000000", ""]
    for name, kind, ccy in instruments:
        lines += [f"[instruments.{name}]", f'type = "{kind}"', f'currency = "{ccy}"', 'exchange = "SIM"',
                  'tick_size = "0.01"', f'multiplier = "{10 if kind == "future" else 1}"']
        if kind == "future":
            lines += ['expiry_months = "Z"', "expiry_day = 20"]
        lines.append("")
    for s in range(n_strategies):
        weights = ", ".join(f'{n} = "{D(1) / n_instruments}"' for n, _, _ in instruments)
        lines += [f"[strategies.s{s:02d}]", f'capital_share = "{D(1) / n_strategies}"',
                  f"instruments = {{ {weights} }}", ""]
    return "\n".join(lines), instruments


def business_days(start: dt.date, count: int) -> list[dt.date]:
    days, day = [], start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def generate(home: Path, n_strategies: int, n_instruments: int, days: int) -> Session:
    text, instruments = config_text(n_strategies, n_instruments)
    env = init_environment(home, "paper", "sim", None, config_extra="\n" + text)
    fund(env, D(50_000_000), "USD", dt.datetime.combine(START - dt.timedelta(days=3), dt.time(), tzinfo=UTC), "bench")
    session = Session(env)
    chart, ledger, config = env.chart, env.ledger, session.config
    rng = random.Random(5)
    contracts = [current_contract(config.instruments[name], START) for name, _, _ in instruments]
    holders = [s.account_name for s in config.strategies.values()]
    names = {s.account_name: s.name for s in config.strategies.values()}
    with env.engine.begin() as conn:
        for contract in contracts:
            ensure_contract(conn, ledger, contract, START)
        for holder in holders:
            ensure_holder(conn, Books(ledger, chart), holder)
    state = {(h, c.code): Holding() for h in holders for c in contracts}
    price = {c.code: D(100) for c in contracts}
    fx = D("1.08")
    order_id = fill_id = 0
    for n, day in enumerate(business_days(START, days), start=1):
        batch, runs, lines, orders, allocs, fills, fill_allocs, closes, settles = [], [], [], [], [], [], [], [], []
        fx += D(rng.randint(-50, 50)) / 10000
        when = dt.datetime.combine(day, dt.time(15), tzinfo=UTC)
        runs.append({"id": n, "created_at": fmt_ts(when), "as_of": day.isoformat(), "state": "approved",
                     "inputs": json.dumps({"base_currency": "USD", "strategy_capital": {
                         names[h]: {"capital": "50000000", "share": str(D(1) / n_strategies),
                                    "amount": str(D(50_000_000) / n_strategies), "source": "bench"} for h in holders}}),
                     "reviewed_at": fmt_ts(when), "reviewed_by": "bench", "review_note": None})
        for k, contract in enumerate(contracts):
            at = when + dt.timedelta(seconds=k)
            reference = price[contract.code]
            price[contract.code] = reference + D(rng.randint(-100, 100)) / 100
            a, b = rng.sample(holders, 2)
            shares = [FillShare(a, D(rng.randint(-3, 3) or 1), D("1.25")), FillShare(b, D(rng.randint(-3, 3) or 1), D("1.25"))]
            if contract.sec_type != "FUT":  # shares: never sell more than the lots hold (no shorts here)
                shares = [FillShare(s.holder, abs(s.qty) * (1 if state[(s.holder, contract.code)].position < 10 else -1),
                                    s.commission) for s in shares]
            net = sum((s.qty for s in shares), D(0))
            holdings = {h: state[(h, contract.code)] for h in (a, b)}
            exec_key = f"B{n}-{k}"
            txn, after = fill_entry(chart, contract, exec_key, price[contract.code], at, shares, holdings,
                                    contract.currency, f"tl-paper-{order_id + 1}", f"bench fill {contract.code}")
            batch.append(txn)
            state.update({(h, contract.code): v for h, v in after.items()})
            for holder in holders:
                lines.append({"run_id": n, "strategy": names[holder], "instrument": contract.code if contract.sec_type != "FUT" else contract.code[:3],
                              "contract": contract.code, "current": to_scaled(D(0)), "target": to_scaled(D(0)),
                              "explain": json.dumps({"execution_instrument": contract.code if contract.sec_type != "FUT" else contract.code[:3],
                                                     "price": str(reference), "volatility": "1.2", "forecast": "5",
                                                     "capital": "50000000", "capital_share": str(D(1) / n_strategies)})})
            if net != 0:
                order_id += 1
                fill_id += 1
                side = "BUY" if net > 0 else "SELL"
                orders.append({"id": order_id, "order_ref": f"tl-paper-{order_id}", "run_id": n, "contract": contract.code,
                               "contract_spec": "{}", "side": side, "quantity": to_scaled(abs(net)), "order_type": "MKT",
                               "state": "filled", "filled": to_scaled(abs(net)), "created_at": fmt_ts(at), "sent_at": fmt_ts(at)})
                fills.append({"id": fill_id, "account": chart.broker_account, "exec_key": exec_key, "exec_id": exec_key,
                              "order_id": order_id, "order_ref": f"tl-paper-{order_id}", "contract": contract.code,
                              "side": side, "quantity": to_scaled(abs(net)), "price": to_scaled(price[contract.code]),
                              "time": fmt_ts(at), "commission": to_scaled(D("2.50")), "commission_currency": contract.currency,
                              "txn_id": 0})
                fill_allocs += [{"fill_id": fill_id, "holder": s.holder, "quantity": to_scaled(s.qty)} for s in shares]
            closes.append(f"{day.isoformat()},{contract.code if contract.sec_type != 'FUT' else contract.code[:3]},{price[contract.code]}")
            if contract.sec_type == "FUT":
                settle = price[contract.code] + D(rng.randint(-50, 50)) / 100
                held = {h: state[(h, contract.code)] for h in holders if state[(h, contract.code)].position}
                txn, after = settlement_entry(chart, contract, day, at.replace(hour=21), settle, held)
                settles.append(f"{day.isoformat()},{contract.code},{settle}")
                if txn is not None:
                    batch.append(txn)
                    state.update({(h, contract.code): v for h, v in after.items()})
        booked = ledger.book_many(batch)
        keys = {dict(t.meta).get("exec"): b.id for t, b in zip(batch, booked) if t.kind == "fill"}
        for f in fills:
            f["txn_id"] = keys[f["exec_key"]]
        with env.engine.begin() as conn:
            conn.execute(tables.target_run.insert(), runs)
            conn.execute(tables.target_line.insert(), lines)
            if orders:
                conn.execute(tables.broker_order.insert(), orders)
                conn.execute(tables.fill.insert(), fills)
                conn.execute(tables.fill_alloc.insert(), fill_allocs)
        csv = ("date,instrument,close\n" + "\n".join(closes) + "\n", "date,contract,settle\n" + "\n".join(settles) + "\n",
               f"date,currency,rate\n{day.isoformat()},EUR,{fx}\n")
        for text in csv:
            prices.store_rows(env, prices.parse_prices_csv(text, config, "USD", "bench"), "bench")
    return session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as response:
        body = response.read()
        return time.perf_counter() - started, response.status, response.geturl()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", type=int, default=10)
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-view-"))
    home = out / "home"
    started = time.perf_counter()
    session = generate(home, args.strategies, args.instruments, args.days)
    env = session
    txns, postings = env.ledger.count()
    print(f"generated {args.days} days, {args.strategies} strategies x {args.instruments} instruments: "
          f"{txns:,} entries, {postings:,} postings ({time.perf_counter() - started:.1f} s)")

    t = time.perf_counter()
    size = export_ledger(env, session.config)
    export_s = time.perf_counter() - t
    from beancount import loader

    t = time.perf_counter()
    _entries, errors, _ = loader.load_file(str(env.ledger_path))
    load_s = time.perf_counter() - t
    print(f"  export                      {export_s:6.2f} s  {size / 1e6:6.1f} MB   (ratio to beancount load {export_s / load_s:.2f})")
    print(f"  beancount load of it        {load_s:6.2f} s  ({len(errors)} errors)   <- the ratios' unit")

    from tradeledger.reports.daily import write_daily

    last_day = business_days(START, args.days)[-1]
    t = time.perf_counter()
    write_daily(session, last_day)
    daily_s = time.perf_counter() - t
    print(f"  report daily                {daily_s:6.2f} s   target <= 5 s: {'met' if daily_s <= 5 else 'MISSED'}"
          f"   (ratio {daily_s / load_s:.2f})")

    port = _free_port()
    script = Path(sys.executable).with_name("tradeledger")
    command = ([str(script)] if script.exists() else [sys.executable, "-m", "tradeledger.cli"])
    t = time.perf_counter()
    fava = subprocess.Popen(command + ["--home", str(home), "fava", "--no-export", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                _, status, landing = _get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                if fava.poll() is not None:
                    raise RuntimeError("fava exited")
                time.sleep(0.1)
        start_s = time.perf_counter() - t
        print(f"  Fava start to first page    {start_s:6.2f} s   target <= 10 s: {'met' if start_s <= 10 else 'MISSED'}"
              f"   (ratio {start_s / load_s:.2f})")
        base = landing.split("/balance_sheet")[0]
        for page in PAGES:
            first = _get(f"{base}/extension/{page}/")[0]
            warm = statistics.median(_get(f"{base}/extension/{page}/")[0] for _ in range(3))
            print(f"  page {page:<26} first {first:5.2f} s, warm {warm:5.2f} s   target <= 1 s: "
                  f"{'met' if warm <= 1 else 'MISSED'}")
    finally:
        fava.send_signal(signal.SIGTERM)
        fava.wait(timeout=30)
    session.close()
    print(f"(python {sys.version.split()[0]}; files in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
