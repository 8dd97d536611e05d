"""Right across time: a hypothesis state machine drives the real system through many runs.

One sim environment (a real SQLite ledger file, the simulated broker's own file, config.toml) is
driven through random sequences of what happens to a trader over days, each step through the
`tradeledger` command as a user types it (click's runner, in this process) or, for the crash,
as its own process killed at a random moment:

- a cycle: forecasts imported for today, a run computed, approved and executed (`cycle --approve`);
- a trade made at the broker's own screen, then `fills sync`;
- a late commission (armed at the broker before a cycle) or a commission the broker changes for a
  booked execution, then `fills sync`;
- cash that arrives without a trade: a deposit or withdrawal (found by `reconcile`, booked with
  `adjust cash`), interest or a fee (`actions interest|fee`), a dividend on SPY (`sim dividend`,
  `actions sync`, `actions book`);
- an intraday price move; new days: the close (settlement at the exchange, `mark`, the day's
  closes imported), the clock across midnight and weekends, the next open; MESZ37 expires at the
  exchange on its last trading day (no execution: the position disappears) and the ledger books the
  final settlement through `reconcile`; the calendar rolls MES from Z37 to H38 inside its window;
- a rerun of the last step, which must book and send nothing new;
- a crash: `cycle --approve --run N` as its own process, SIGKILLed after a random delay, then the
  same command again.

After every step, whatever happened: `db verify` is clean; `reconcile` is clean (it syncs the
broker's executions first, then compares every contract and currency) and the ledger's holders
add up to the broker's position in every contract; no orderRef reached the broker twice and every
order at the broker is one the ledger planned; `check` (the beancount export loaded by beancount,
its balances against ours) is clean. A cycle that exits 0 leaves every strategy at its run's target.

The simulated exchange is the world, not part of tradeledger: the test plays it (its clock, prices,
settlement, expiry, dividends) through `sim` commands and, where no command exists (an expiry, a
changed commission), its own methods. Nothing of tradeledger's database is mocked.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from decimal import Decimal as D
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from support import tl, tl_json
from tradeledger.engine import tables
from tradeledger.engine.futures.expiry import last_trading_day
from tradeledger.engine.futures.state import old_and_new
from tradeledger.engine.setup.config import instrument_of_contract
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import show_run
from tradeledger.engine.trading.orders import holder_positions
from tradeledger.ledger import schema
from tradeledger.ledger.db import read_connection

UTC = dt.timezone.utc
START = dt.date(2037, 12, 7)  # a Monday: MESZ37 is current; its roll window opens on the 10th, it expires on the 18th
LAST_Z37 = dt.date(2037, 12, 18)
ROLL_DATES = (dt.date(2037, 12, 10), dt.date(2037, 12, 16), LAST_Z37, dt.date(2037, 12, 21))  # passive, force, last, gone
CONFIG = """
[portfolio]
capital = "1000000"
capital_mode = "fixed"
buffer_fraction = "0"

[instruments.MES]
type = "future"
currency = "USD"
multiplier = 5
exchange = "CME"
tick_size = "0.25"
expiry_months = "HMUZ"
expiry_rule = "third_friday"
roll_offset_days = 8
force_days = 2

[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[strategies.a]
capital_share = "0.5"
instruments = { MES = "0.5", SPY = "0.5" }

[strategies.b]
capital_share = "0.5"
instruments = { MES = "1" }

[sim]
commission_per_contract = "1.25"
commission_per_share = "0.005"
"""
PAIRS = (("a", "MES"), ("a", "SPY"), ("b", "MES"))
BASIS = {"Z": D(0), "H": D(20), "M": D(40), "U": D(60)}  # a later MES contract trades above the nearer one


def _business_days_before(day: dt.date, count: int) -> list[dt.date]:
    days = []
    while len(days) < count:
        day -= dt.timedelta(days=1)
        if day.weekday() < 5:
            days.append(day)
    return days[::-1]


def next_business_day(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day




def note(what: str) -> None:
    """What a step did, for `--hypothesis-show-statistics` (how often an expiry, a roll... came up)."""
    if currently_in_test_context():
        event(what)


_TEMPLATE: list[Path] = []


def template() -> Path:
    """An environment funded with 1,000,000 USD, 60 days of closes, the exchange open on START:
    made once per process, copied for every example."""
    if _TEMPLATE:
        return _TEMPLATE[0]
    root = Path(tempfile.mkdtemp(prefix="tl-across-template-"))
    atexit.register(shutil.rmtree, root, True)
    home = root / "home"
    tl(home, "init", "--capital", "1000000")
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text() + CONFIG)
    rng = random.Random(1)
    mes, spy = 6000.0, 600.0
    rows = ["date,instrument,close"]
    for day in _business_days_before(START, 60):
        mes *= 1 + rng.gauss(0, 0.01)
        spy *= 1 + rng.gauss(0, 0.01)
        rows += [f"{day},MES,{round(mes * 4) / 4}", f"{day},SPY,{round(spy, 2)}"]
    (home / "closes.csv").write_text("\n".join(rows) + "\n")
    tl(home, "data", "import", home / "closes.csv")
    _TEMPLATE.append(home)
    return home


class AcrossRuns(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="tl-across-"))
        self.home = self.tmp / "home"
        shutil.copytree(template(), self.home)
        self.day = START
        self.level = {"MES": D(6000), "SPY": D(600)}  # the underlying's level; contracts trade off it
        self.last: tuple | None = None  # the last step, for a rerun
        self.spy_traded_on: dt.date | None = None
        self.dividend_on: dt.date | None = None
        self.files = 0
        self.moved: set = set()  # (day, amount) of the deposits and withdrawals booked by `adjust cash`
        self.open_market()

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the world: the exchange, its clock and prices -------------------------------------------

    @contextmanager
    def session(self):
        env = open_environment(self.home, "paper")
        session = Session(env)
        try:
            yield session
        finally:
            session.close()
            env.engine.dispose()

    def write(self, text: str) -> Path:
        self.files += 1
        path = self.tmp / f"file-{self.files}.csv"
        path.write_text(text)
        return path

    def contracts_trading(self) -> list[str]:
        """MES's contracts the market lists today (the old one inside its roll window) and SPY."""
        with self.session() as session:
            old, new = old_and_new(session.config.instruments["MES"], self.day)
        return [d.code for d in (old, new) if d is not None] + ["SPY"]

    def price(self, code: str) -> D:
        if code == "SPY":
            return self.level["SPY"]
        return self.level["MES"] + BASIS[code[-3]]

    def set_clock(self, when: dt.datetime) -> None:
        tl(self.home, "sim", "clock", "set", when.strftime("%Y-%m-%dT%H:%M"))

    def open_market(self) -> None:
        self.set_clock(dt.datetime.combine(self.day, dt.time(15, 0), tzinfo=UTC))
        for code in self.contracts_trading():
            tl(self.home, "sim", "price", code, self.price(code))
        with self.session() as session:
            session.exchange().pay_due_dividends()

    def futures_held(self) -> set[str]:
        with self.session() as session:
            at_broker = {p.contract.code for p in session.exchange().positions() if p.contract.sec_type == "FUT"}
            in_ledger = {code for (_h, code), units in holder_positions(session.ledger, session.chart).items()
                         if units and code != "SPY"}
        return at_broker | in_ledger

    def close_market(self) -> None:
        """The day's close: every held future settles at the exchange and is marked in the ledger,
        the day's closes are imported, and a contract on its last trading day expires."""
        self.set_clock(dt.datetime.combine(self.day, dt.time(21, 0), tzinfo=UTC))
        held = sorted(self.futures_held())
        for code in held:
            tl(self.home, "sim", "settle", code, self.price(code), "--date", self.day)
        marked = tl_json(self.home, "mark", "--date", self.day)
        assert sorted(marked["missing_settlement"]) == [], marked
        current = [c for c in self.contracts_trading() if c != "SPY"][-1]
        closes = (f"date,instrument,close\n{self.day},MES,{self.price(current)}\n{self.day},SPY,{self.price('SPY')}\n")
        tl(self.home, "data", "import", self.write(closes))
        contract_closes = "date,contract,close\n" + "".join(
            f"{self.day},{code},{self.price(code)}\n" for code in self.contracts_trading() if code != "SPY")
        tl(self.home, "data", "import", self.write(contract_closes))
        with self.session() as session:
            exchange = session.exchange()
            for position in exchange.positions():
                code = position.contract.code
                if position.contract.sec_type == "FUT" and \
                        last_trading_day(session.config, code, {}) == self.day:
                    exchange.expire(code, self.price(code), self.day)
                    note(f"{code} expired holding {position.quantity}")
        tl(self.home, "reconcile")  # books the expiry (the final settlement) before it compares

    # -- what a trader does ---------------------------------------------------------------------

    def import_forecasts(self, forecasts) -> None:
        rows = "".join(f"{self.day},{s},{i},{f}\n" for (s, i), f in zip(PAIRS, forecasts))
        tl(self.home, "signals", "import", self.write("date,strategy,instrument,forecast\n" + rows), "--replace")

    def compute_run(self, forecasts) -> int:
        self.import_forecasts(forecasts)
        return tl_json(self.home, "cycle")["run"]

    def execute(self, run_id: int) -> dict:
        done = tl(self.home, "cycle", "--approve", "--run", run_id, "--wait", "5", "--json", code=None)
        assert done.exit_code == 0, (run_id, done.stdout[-3000:], done.stderr)
        self.spy_traded_on = self.day
        self.assert_at_targets(run_id)
        result = json.loads(done.stdout)
        for line in result["contracts"]:
            note(f"cycle: {line['contract']} {line['outcome']}" + (" crossed" if line["crosses"] else ""))
        return result

    def assert_at_targets(self, run_id: int) -> None:
        """Every strategy's exposure (its positions over every contract of the instrument) is its target."""
        with self.session() as session:
            run = show_run(session, run_id)
            held = holder_positions(session.ledger, session.chart)
            for line in run.lines:
                exposure = sum((units for (holder, code), units in held.items()
                                if holder == line.explain["account"]
                                and instrument_of_contract(session.config, code).name == line.instrument), D(0))
                assert exposure == line.target, (run_id, line.strategy, line.instrument, exposure, line.target)

    def counts(self) -> tuple[int, int, Counter]:
        """(orders at the broker, fills booked, ledger entries by kind)."""
        with self.session() as session:
            orders = len(session.exchange().orders())
            with read_connection(session.engine) as conn:
                fills = conn.execute(sa.select(sa.func.count()).select_from(tables.fill)).scalar()
                kinds = Counter(dict(conn.execute(sa.select(schema.txn.c.kind, sa.func.count())
                                                  .group_by(schema.txn.c.kind)).all()))
            return orders, fills, kinds

    # -- rules ----------------------------------------------------------------------------------

    forecast = st.integers(-20, 20)

    @rule(forecasts=st.tuples(forecast, forecast, forecast))
    def cycle(self, forecasts):
        run_id = self.compute_run(forecasts)
        self.execute(run_id)
        self.last = ("cycle", run_id)

    @rule(code=st.sampled_from(["MES", "SPY"]), qty=st.integers(1, 3), sell=st.booleans())
    def trade_outside(self, code, qty, sell):
        if code == "MES":
            code = [c for c in self.contracts_trading() if c != "SPY"][-1]
        else:
            qty *= 10
            self.spy_traded_on = self.day
        tl(self.home, "sim", "trade", code, -qty if sell else qty, self.price(code))
        synced = tl_json(self.home, "fills", "sync")
        assert len(synced["booked"]) == 1, synced
        self.last = ("sync",)

    @rule(polls=st.integers(1, 2))
    def late_commission(self, polls):
        """The broker will report the next execution's commission only after `polls` polls."""
        tl(self.home, "sim", "fault", "late-commission", "--count", polls)

    @rule(pick=st.integers(0, 1000), cents=st.sampled_from([-25, 10, 100, 237]))
    def commission_changes(self, pick, cents):
        """The broker reports another commission for an execution already booked (same execId)."""
        fills = [f for f in tl_json(self.home, "fills", "list") if f["commission"] != "pending"]
        if not fills:
            return
        fill = fills[pick % len(fills)]
        new = max(D(fill["commission"]) + D(cents) / 100, D(0))
        with self.session() as session:
            session.exchange().revise_commission(fill["exec_id"], new)
        tl_json(self.home, "fills", "sync")
        self.last = ("sync",)

    @rule(pick=st.integers(0, 1000), ticks=st.integers(-8, 8).filter(bool))
    def correction(self, pick, ticks):
        """The broker corrects the price of a futures fill (a new version of the execution, same
        base id) in a contract still trading; the next sync books the correction once."""
        trading = set(self.contracts_trading()) - {"SPY"}
        held = {(r["strategy"], r["contract"]): D(r["qty"]) for r in tl_json(self.home, "positions")}

        def bookable(fill) -> bool:
            """Not a fill whose holder has since crossed zero: taking the fill out would flip the
            position, which a correction refuses by design (an exception for a person)."""
            for holder, units in fill["allocation"].items():
                now = held.get((holder, fill["contract"]), D(0))
                if now * (now - D(units)) < 0:
                    return False
            return True

        fills = [f for f in tl_json(self.home, "fills", "list") if f["contract"] in trading and bookable(f)]
        if not fills:
            return
        fill = fills[pick % len(fills)]
        price = D(fill["price"]) + D(ticks) / 4
        tl(self.home, "sim", "fault", "correct", "--exec-id", fill["exec_id"], "--price", price)
        synced = tl_json(self.home, "fills", "sync")
        assert synced["failed"] == [] and synced["corrections_not_booked"] == [], synced
        note("correction booked" if synced["corrected"] else "correction not booked")
        self.last = ("sync",)

    @rule(kind=st.sampled_from(["deposit", "withdrawal", "interest", "fee"]), cents=st.integers(100, 5_000_000))
    def cash_arrives(self, kind, cents):
        amount = D(cents) / 100
        if kind in ("withdrawal", "fee"):
            amount = -amount
        if kind in ("deposit", "withdrawal"):
            tl(self.home, "sim", "deposit", "USD", amount, "--kind", kind)
            found = tl_json(self.home, "reconcile", code=1)
            [line] = [c for c in found["cash"] if c["status"] != "ok"]
            assert D(line["diff"]) == -amount or D(line["diff"]) == amount, line
            booking = ("adjust", "cash", "USD", amount, "--kind", kind, "--reason", "found by reconcile", "--yes")
            if (self.day, amount) in self.moved:  # a second equal one today: said so, or refused
                refused = tl(self.home, *booking, code=1)
                assert "is already booked as entry" in refused.stderr and "--again" in refused.stderr, refused.stderr
                booking += ("--again",)
            tl(self.home, *booking)
            self.moved.add((self.day, amount))
            self.last = ("adjust", booking[:9])
        else:  # the broker's reference tells two credits of one amount on one day apart
            self.files += 1
            ref = f"ref-{self.files}"
            tl(self.home, "sim", kind, amount, "USD", "--ref", ref)
            self.book_cash(kind, amount, ref)
            self.last = ("cash", kind, amount, ref)

    def book_cash(self, kind, amount, ref):
        tl(self.home, "actions", kind, amount, "USD", "--date", self.day, "--reason", f"{kind} at the broker",
           "--ref", ref)

    @precondition(lambda self: self.spy_traded_on != self.day and self.dividend_on != self.day)
    @rule(cents=st.integers(1, 300), withholding=st.sampled_from(["0", "0.15"]))
    def dividend(self, cents, withholding):
        """SPY goes ex-dividend this morning (nothing traded in it today) and pays at once."""
        with self.session() as session:
            held = {p.contract.code: p.quantity for p in session.exchange().positions()}
        if not held.get("SPY"):
            return
        tl(self.home, "sim", "dividend", "SPY", D(cents) / 100, "--withholding", withholding)
        with self.session() as session:
            session.exchange().pay_due_dividends()
        tl(self.home, "actions", "sync")
        tl(self.home, "actions", "book", "--date", self.day)
        self.dividend_on = self.day
        self.last = ("actions",)

    @rule(ticks=st.integers(-40, 40), spy_cents=st.integers(-500, 500), minutes=st.integers(1, 300))
    def price_moves(self, ticks, spy_cents, minutes):
        """Prices move during the day (the clock moves too, never past the close)."""
        self.level["MES"] += D(ticks) / 4
        self.level["SPY"] = max(self.level["SPY"] + D(spy_cents) / 100, D(1))
        with self.session() as session:
            now = session.exchange().now()
        later = min(now + dt.timedelta(minutes=minutes), dt.datetime.combine(self.day, dt.time(20, 59), tzinfo=UTC))
        if later > now:
            self.set_clock(later)
        for code in self.contracts_trading():
            tl(self.home, "sim", "price", code, self.price(code))

    @rule(days=st.integers(1, 5), seed=st.integers(0, 2**16))
    def some_days(self, days, seed):
        self.new_days(days, seed)

    def new_days(self, days, seed):
        """The close, midnight (and weekends), the next open, `days` times: the prices walk."""
        rng = random.Random(seed)
        for _ in range(days):
            self.close_market()
            self.last = ("mark", self.day)
            self.day = next_business_day(self.day)
            self.level["MES"] += D(rng.randint(-240, 240)) / 4
            self.level["SPY"] = max(self.level["SPY"] + D(rng.randint(-1500, 1500)) / 100, D(1))
            self.open_market()

    @precondition(lambda self: self.day <= LAST_Z37)
    @rule(until=st.sampled_from(ROLL_DATES), seed=st.integers(0, 2**16))
    def to_a_roll_date(self, until, seed):
        """Days go by to a date of MESZ37's life: its passive roll window, the forced roll, its last
        trading day, the day after it expired (if that date is still ahead)."""
        days, day = 0, self.day
        while day < until:
            day = next_business_day(day)
            days += 1
        if days:
            self.new_days(days, seed)

    @precondition(lambda self: self.last is not None)
    @rule()
    def rerun(self):
        """Run the last step again: nothing is sent and nothing is booked twice."""
        before = self.counts()
        kind = self.last[0]
        if kind == "cycle":
            again = self.execute(self.last[1])
            assert again["sent"] == [], again["sent"]
        elif kind == "sync":
            assert tl_json(self.home, "fills", "sync")["booked"] == []
        elif kind == "mark":
            previous = self.last[1]
            assert tl_json(self.home, "mark", "--date", previous)["booked"] == []
        elif kind == "cash":
            self.book_cash(*self.last[1:])
        elif kind == "actions":
            tl(self.home, "actions", "sync")
            tl(self.home, "actions", "book", "--date", self.day)
        elif kind == "adjust":  # the same deposit typed again (shell history): refused, not booked twice
            refused = tl(self.home, *self.last[1], code=1)
            assert "is already booked as entry" in refused.stderr, refused.stderr
            tl(self.home, "reconcile")
        else:
            tl(self.home, "reconcile")
        after = self.counts()
        assert after[:2] == before[:2], (self.last, before, after)  # no order sent, no fill booked
        new = after[2] - before[2]
        assert set(new) <= {"commission"}, (self.last, new)  # nothing booked again (a late commission may arrive)

    @rule(step=st.sampled_from(["cycle", "fills sync", "reconcile"]), forecasts=st.tuples(forecast, forecast, forecast),
          tenths=st.integers(6, 22))
    def crash(self, step, forecasts, tenths):
        """A step in its own process, SIGKILLed after a random delay (the process takes 1-2 s: its
        imports, then the work), then the same step again: `cycle --approve --run N` on a new run,
        or `fills sync` / `reconcile` with a trade made at the broker's screen to book."""
        if step == "cycle":
            run_id = self.compute_run(forecasts)
            args = ["cycle", "--approve", "--run", str(run_id), "--wait", "5"]
        else:
            code = [c for c in self.contracts_trading() if c != "SPY"][-1]
            tl(self.home, "sim", "trade", code, 1, self.price(code))
            args = step.split()
        process = subprocess.Popen([sys.executable, "-m", "tradeledger.cli", "--home", str(self.home), *args],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        try:
            process.wait(timeout=tenths / 10)
            note(f"crash: {step} finished first")
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            note(f"crash: {step} killed")
        if step == "cycle":
            self.execute(run_id)
            self.last = ("cycle", run_id)
        else:
            tl(self.home, *args)
            self.last = ("sync",)

    # -- what holds after every step ------------------------------------------------------------

    @invariant()
    def books_agree_with_the_broker(self):
        assert tl_json(self.home, "db", "verify")["ok"]
        reconciled = tl_json(self.home, "reconcile", code=None)
        assert reconciled["clean"], reconciled
        with self.session() as session:
            exchange = session.exchange()
            broker = {p.contract.code: p.quantity for p in exchange.positions() if p.quantity}
            held: dict[str, D] = {}
            for (_holder, code), units in holder_positions(session.ledger, session.chart).items():
                held[code] = held.get(code, D(0)) + units
            assert {c: q for c, q in held.items() if q} == broker
            refs = Counter(o.order_ref for o in exchange.orders() if o.order_ref)
            assert all(n == 1 for n in refs.values()), refs  # no order reached the broker twice
            with read_connection(session.engine) as conn:
                ours = set(conn.execute(sa.select(tables.broker_order.c.order_ref)).scalars())
            assert set(refs) <= ours, set(refs) - ours  # every order at the broker is one we planned
        checked = tl_json(self.home, "check", code=None)
        assert checked["ok"], checked


# TRADELEDGER_ACROSS_EXAMPLES=100 TRADELEDGER_ACROSS_STEPS=20 explores longer (10-20 minutes); the
# suite's budget stays small (about 20 s on a quiet 2-core machine)
AcrossRuns.TestCase.settings = settings(max_examples=int(os.environ.get("TRADELEDGER_ACROSS_EXAMPLES", 6)),
                                        stateful_step_count=int(os.environ.get("TRADELEDGER_ACROSS_STEPS", 8)), deadline=None,
                                        suppress_health_check=list(HealthCheck))
test_across_runs = AcrossRuns.TestCase
