"""Ledger benchmark: prints figures; not a test.

    python bench/bench_ledger.py [--fills 100000] [--durable 3000] [--out DIR] [--skip-beancount]

Generates a futures ledger on SQLite: N broker fills, each allocated to two of four strategies
(per strategy: the variation margin from its mark to the fill price, the position change at
zero cost - split into close and open when it crosses zero - and the commission: about 10
postings per fill), plus a daily settlement per contract. It then reports:

- batch import: `Ledger.book_many`, 1,000 entries per commit (entries/s, postings/s);
- durable booking: `Ledger.book`, one entry per commit, synchronous=FULL, onto the full ledger;
- positions + income per account over the whole ledger (median of several runs);
- export to beancount;
- beancount's own load of that file, and a beanquery balance-by-account query on it;
- the ratio between our query and beancount's.

Targets (issue 2): durable >= 2,000/s, batch >= 25,000/s, positions+income <= 150 ms,
export <= 10 s for 100k transactions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from decimal import Decimal as D
from pathlib import Path

from tradeledger.ledger import db
from tradeledger.ledger.export import export_beancount
from tradeledger.ledger.model import Account, Cost, Posting, Transaction
from tradeledger.ledger.store import Commodity, Ledger

UTC = dt.timezone.utc
ACCT = "DU1234567"
CASH = f"Assets:Broker:{ACCT}:Cash"
STRATEGIES = ["Trend", "Carry", "Breakout", "Meanrev"]
# contract: (multiplier, tick, start price)
CONTRACTS = {
    "MESZ26": (D(5), D("0.25"), D(6000)),
    "MNQZ26": (D(2), D("0.25"), D(21000)),
    "MBTZ26": (D("0.1"), D(5), D(90000)),
    "ZNZ26": (D(1000), D("0.015625"), D(110)),
}
ZERO = Cost(D(0), "USD")
COMMISSION = D("0.62")


def holdings(s: str) -> str:
    return f"Assets:Broker:{ACCT}:Strategy:{s}"


class Generator:
    """A deterministic stream of balanced entries: fills and daily settlements."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.position: dict[tuple[str, str], D] = defaultdict(D)
        self.mark: dict[tuple[str, str], D] = {}
        self.price = {c: spec[2] for c, spec in CONTRACTS.items()}
        self.time = dt.datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
        self.fill_no = 0
        self.postings = 0

    def _vm(self, s: str, contract: str, price: D) -> list[Posting]:
        held, mark = self.position[(s, contract)], self.mark.get((s, contract))
        self.mark[(s, contract)] = price
        if not held or mark is None or mark == price:
            return []
        amount = held * (price - mark) * CONTRACTS[contract][0]
        return [Posting(CASH, amount, "USD"), Posting(f"Income:Trading:{s}", -amount, "USD")]

    def settlement(self, day: dt.date) -> list[Transaction]:
        entries = []
        when = dt.datetime.combine(day, dt.time(21, 0), UTC)
        for contract in CONTRACTS:
            postings = []
            for s in STRATEGIES:
                postings += self._vm(s, contract, self.price[contract])
            if postings:
                entries.append(Transaction(when, "settlement", f"Settle {contract} {self.price[contract]}",
                                           tuple(postings), meta=(("settlement_price", str(self.price[contract])),),
                                           key=f"settle:{contract}:{day}"))
        return entries

    def entries(self, n_fills: int):
        """Yield entries until n_fills fills have been generated."""
        target = self.fill_no + n_fills
        rng = self.rng
        while self.fill_no < target:
            before = self.time
            self.time += dt.timedelta(seconds=60)
            if self.time.date() != before.date() or self.time.hour >= 21:
                for entry in self.settlement(before.date()):
                    self.postings += len(entry.postings)
                    yield entry
                next_day = before.date() + dt.timedelta(days=1)
                self.time = dt.datetime.combine(next_day, dt.time(14, 30), UTC)
            contract = rng.choice(list(CONTRACTS))
            multiplier, tick, _ = CONTRACTS[contract]
            self.price[contract] += tick * rng.randint(-8, 8)
            price = self.price[contract]
            self.fill_no += 1
            exec_id = f"0000e859.{self.fill_no:08x}.01"
            postings: list[Posting] = []
            for s in rng.sample(STRATEGIES, 2):
                qty = D(rng.choice([-3, -2, -1, 1, 2, 3]))
                postings += self._vm(s, contract, price)
                held = self.position[(s, contract)]
                after = held + qty
                if held and after and (held > 0) != (after > 0):
                    postings += [Posting(holdings(s), -held, contract, ZERO), Posting(holdings(s), after, contract, ZERO)]
                else:
                    postings.append(Posting(holdings(s), qty, contract, ZERO))
                self.position[(s, contract)] = after
                fee = COMMISSION * abs(qty)
                postings += [Posting(f"Expenses:Commissions:{s}", fee, "USD"), Posting(CASH, -fee, "USD")]
            self.postings += len(postings)
            yield Transaction(self.time, "fill", f"fill {exec_id} {contract} @ {price}", tuple(postings),
                              links=(f"fill-{exec_id}",), meta=(("exec_id", exec_id),),
                              key=f"fill:{ACCT}:{exec_id}")


def setup(ledger: Ledger) -> None:
    opened = dt.date(2025, 1, 1)
    with ledger.engine.begin() as conn:
        ledger.open_account(Account(CASH, opened), conn)
        for s in STRATEGIES:
            ledger.open_account(Account(holdings(s), opened, booking="FIFO"), conn)
            ledger.open_account(Account(f"Income:Trading:{s}", opened), conn)
            ledger.open_account(Account(f"Expenses:Commissions:{s}", opened), conn)
        ledger.ensure_commodity(Commodity("USD", "currency", None, D(1), opened), conn)
        for contract, (multiplier, _, _) in CONTRACTS.items():
            ledger.ensure_commodity(Commodity(contract, "future", "USD", multiplier, opened), conn)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--durable", type=int, default=3_000, help="fills booked one per commit")
    parser.add_argument("--batch", type=int, default=1_000, help="entries per commit in the import")
    parser.add_argument("--runs", type=int, default=7, help="runs of the query timing (median)")
    parser.add_argument("--out", type=Path, default=None, help="directory for the database and export")
    parser.add_argument("--skip-beancount", action="store_true", help="skip beancount's load and beanquery")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="tl-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    engine = db.make_engine(f"sqlite:///{db_path}", synchronous="FULL")
    db.upgrade(engine)
    ledger = Ledger(engine)
    setup(ledger)
    figures: dict[str, str] = {}
    print(f"tradeledger ledger benchmark: {args.fills:,} fills on SQLite (synchronous=FULL) in {out}")

    # 1. batch import: generate, then book 1,000 entries per commit
    gen = Generator()
    start = time.perf_counter()
    entries = list(gen.entries(args.fills))
    generate_s = time.perf_counter() - start
    print(f"  generated {len(entries):,} entries, {gen.postings:,} postings in {generate_s:.1f} s")
    start = time.perf_counter()
    for i in range(0, len(entries), args.batch):
        ledger.book_many(entries[i:i + args.batch])
    batch_s = time.perf_counter() - start
    batch_rate = len(entries) / batch_s
    figures["batch import (book_many, 1,000/commit)"] = (
        f"{batch_rate:,.0f} entries/s ({gen.postings / batch_s:,.0f} postings/s; {len(entries):,} entries "
        f"in {batch_s:.1f} s)")
    del entries

    # 2. durable booking, one entry per commit, onto the full ledger
    more = list(gen.entries(args.durable))
    start = time.perf_counter()
    for entry in more:
        ledger.book(entry)
    durable_s = time.perf_counter() - start
    figures["durable booking (book, 1/commit, FULL)"] = (
        f"{len(more) / durable_s:,.0f} entries/s ({len(more):,} entries in {durable_s:.2f} s)")
    del more

    # the same on a RAM disk, when there is one: what the code costs without the fsync
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        ram_path = shm / f"tl-bench-{os.getpid()}.db"
        ram_engine = db.make_engine(f"sqlite:///{ram_path}", synchronous="FULL")
        try:
            db.upgrade(ram_engine)
            ram = Ledger(ram_engine)
            setup(ram)
            sample = list(Generator(seed=11).entries(args.durable))
            start = time.perf_counter()
            for entry in sample:
                ram.book(entry)
            ram_s = time.perf_counter() - start
            figures["durable booking on /dev/shm (no fsync cost)"] = f"{len(sample) / ram_s:,.0f} entries/s"
        finally:
            ram_engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(str(ram_path) + suffix).unlink(missing_ok=True)

    txns, postings = ledger.count()
    figures["ledger size"] = f"{txns:,} transactions, {postings:,} postings"

    # 3. positions + income per account over the whole ledger
    ledger.positions(), ledger.income()  # warm the page cache once
    runs = []
    for _ in range(args.runs):
        start = time.perf_counter()
        positions = ledger.positions()
        income = ledger.income()
        runs.append(time.perf_counter() - start)
    ours_s = statistics.median(runs)
    figures["positions + income (median)"] = (
        f"{ours_s * 1000:,.0f} ms (min {min(runs) * 1000:,.0f}, max {max(runs) * 1000:,.0f}; "
        f"{len(positions)} positions, {len(income)} income rows)")
    runs = []
    for _ in range(args.runs):
        start = time.perf_counter()
        balances = ledger.balances()
        runs.append(time.perf_counter() - start)
    figures["balances, every account (median)"] = f"{statistics.median(runs) * 1000:,.0f} ms ({len(balances)} rows)"

    # 4. export
    path = out / "bench.beancount"
    export_s, size = timed(export_beancount, ledger, path)
    figures["export to beancount"] = f"{export_s:.1f} s ({size / 1e6:,.0f} MB)"

    # 5. beancount's own load and a beanquery balance query
    if not args.skip_beancount:
        from beancount import loader
        import beanquery

        loader.initialize(use_cache=False)  # time real loads, not beancount's pickle cache
        load_s, (bc_entries, errors, _opts) = timed(loader.load_file, str(path))
        figures["beancount load_file"] = f"{load_s:.1f} s ({len(bc_entries):,} directives, {len(errors)} errors)"
        del bc_entries, _opts
        connect_s, connection = timed(beanquery.connect, "beancount:" + str(path))
        query = "SELECT account, sum(position) AS balance GROUP BY account ORDER BY account"

        def run_query():
            cursor = connection.execute(query)
            return cursor.fetchall()

        query_s, rows = timed(run_query)
        figures["beanquery connect (loads the file)"] = f"{connect_s:.1f} s"
        figures["beanquery balance by account"] = f"{query_s:.2f} s ({len(rows)} rows)"
        figures["ratio beanquery query / ours"] = f"{query_s / ours_s:,.0f}x (load + query: {(load_s + query_s) / ours_s:,.0f}x)"
        if errors:
            print(f"  beancount reported {len(errors)} errors, first: {errors[0].message}", file=sys.stderr)

    width = max(len(k) for k in figures)
    print()
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")
    print()
    targets = [
        ("durable booking >= 2,000/s", args.durable / durable_s >= 2000),
        ("batch import >= 25,000/s", batch_rate >= 25000),
        ("positions + income <= 150 ms", ours_s <= 0.150),
        ("export <= 10 s per 100k transactions", export_s <= 10 * max(1.0, txns / 100_000)),
    ]
    for name, ok in targets:
        print(f"  {'met   ' if ok else 'MISSED'} {name}")
    print(f"  (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
