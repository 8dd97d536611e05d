"""The invariants a trader relies on, over random sequences of days and events, through the
`tradeledger` command on one simulated account (a hypothesis state machine).

The world: SPY (USD) and EXSA (EUR, at a EUR/USD rate that walks), held by strategies a and b and by
the trader at the broker's screen (unattributed). Events: trades, deposits and withdrawals in the
middle of a day, interest and fees, a dividend going ex one day and paid that day or the next
business day, a 2:1 split of SPY or EXSA while several holders hold it, and closes (each day's prices
and EUR rate, and a reconciliation). After every close:

* the books agree with the broker (reconcile clean, `check` clean, nothing booked by a rerun);
* `report nav --date D` is the broker's cash plus its positions at the day's closes and rate,
  plus the dividends gone ex but not paid yet, computed here by hand, to the cent;
* the P&L of the whole ledger is the same sum whichever way it is cut: `pnl --by day` summed,
  `pnl --by strategy` summed, `pnl --by instrument` summed, the cumulative of the last day;
* a day's NAV change is its P&L plus the money deposited that day plus the FX translation of the
  EUR the P&L had brought in until the day before (EUR x the change of the rate), within the
  roundings of the cent (each NAV and cumulative is rounded once);
* `report performance`'s drawdown is of the NAV less the net deposits, below its peak: no jump on a
  deposit or withdrawal day.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from contextlib import contextmanager
from decimal import Decimal as D
from pathlib import Path

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from support import tl, tl_json
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session

CENT = D("0.01")
START = dt.date(2031, 3, 4)  # a Tuesday, after the day `init` books the first deposit (the real clock)
CONFIG = """
[portfolio]
capital = "1000000"

[instruments.SPY]
type = "share"
currency = "USD"
exchange = "ARCA"

[instruments.EXSA]
type = "share"
currency = "EUR"
exchange = "IBIS"

[strategies.a]
capital_share = "0.5"
instruments = { SPY = "0.5", EXSA = "0.5" }

[strategies.b]
capital_share = "0.5"
instruments = { SPY = "1", EXSA = "1" }

[sim]
commission_per_share = "0.005"
"""
CURRENCY = {"SPY": "USD", "EXSA": "EUR"}
HOLDERS = ("a", "b", None)  # None: the trader at the broker's screen (unattributed)




def next_business_day(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


class MoneyAcrossTime(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="tl-money-"))
        self.home = self.tmp / "home"
        tl(self.home, "init", "--capital", "1000000")
        config = self.home / "paper" / "config.toml"
        config.write_text(config.read_text() + CONFIG)
        self.files = 0
        self.day = START
        self.price = {"SPY": D(600), "EXSA": D(50)}
        self.eur = D("1.1000")
        self.held: dict = {}  # (holder, code) -> units, as the ledger should hold them
        self.traded: dict = {}  # code -> the last day it traded
        self.acted: dict = {}  # code -> the last day of a dividend or split
        self.closed: list[dt.date] = []
        self.deposits: dict = {}  # day -> [(currency, amount)] deposited (< 0 withdrawn) that day
        self.rates: dict = {START - dt.timedelta(days=1): self.eur}  # closed day -> EUR rate
        self.closes = dict(self.price)  # the newest closes (the day before START's: as the sim starts)
        self.receivable: list = []  # (pay date, currency, net) of the dividends gone ex and not paid
        self.checked = True
        eve = START - dt.timedelta(days=1)
        self.write(f"date,currency,rate\n{eve},EUR,{self.eur}\n", "data", "import")
        self.write(f"date,instrument,close\n{eve},SPY,{self.price['SPY']}\n{eve},EXSA,{self.price['EXSA']}\n",
                   "data", "import")
        self.day = eve  # the eve: both strategies and the trader hold both, at the eve's closes
        self.at(15)
        for code, price in self.price.items():
            tl(self.home, "sim", "price", code, price)
        for code, holder, qty in (("SPY", "a", 40), ("SPY", "b", 25), ("SPY", None, 10), ("EXSA", "a", 100),
                                  ("EXSA", "b", 60), ("EXSA", None, 30)):
            self.trade(code, holder, qty, 0)
        self.day = START
        self.open_day()

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, text: str, *command) -> None:
        self.files += 1
        path = self.tmp / f"file-{self.files}.csv"
        path.write_text(text)
        tl(self.home, *command, path)

    @contextmanager
    def exchange(self):
        env = open_environment(self.home, "paper")
        session = Session(env)
        try:
            yield session.exchange()
        finally:
            session.close()
            env.engine.dispose()

    def at(self, hour: int, minute: int = 0) -> None:
        tl(self.home, "sim", "clock", "set", f"{self.day}T{hour:02d}:{minute:02d}")

    def open_day(self) -> None:
        self.at(14)
        tl(self.home, "actions", "book", "--date", self.day)  # a dividend paid today turns cash
        for code, price in self.price.items():
            tl(self.home, "sim", "price", code, price)

    # -- what happens during a day ----------------------------------------------------------------

    @rule(code=st.sampled_from(["SPY", "EXSA"]), holder=st.sampled_from(HOLDERS), qty=st.integers(-30, 60).filter(bool),
          ticks=st.integers(-50, 50))
    def trade(self, code, holder, qty, ticks):
        """A trade at the broker's screen, given to a strategy (`adjust attribute`) or kept by the trader."""
        have = self.held.get((holder, code), D(0))
        if qty < 0 and have + qty < 0:
            qty = -int(have)
        if qty < 0 and holder is not None and self.held.get((None, code)):
            return  # a sell is given to a strategy only while the trader holds none (adjust attribute's rule)
        if qty == 0:
            return
        self.price[code] = max(self.price[code] + D(ticks) / 100, D(1))
        tl(self.home, "sim", "price", code, self.price[code])
        tl(self.home, "sim", "trade", code, qty, self.price[code])
        [fill] = tl_json(self.home, "fills", "sync")["booked"]
        if holder is not None:
            tl(self.home, "adjust", "attribute", fill, "--strategy", holder, "--yes")
        self.held[(holder, code)] = have + qty
        self.traded[code] = self.day
        self.checked = False

    @rule(kind=st.sampled_from(["deposit", "withdrawal"]), cents=st.integers(100, 5_000_000),
          ccy=st.sampled_from(["USD", "EUR"]))
    def money_moves(self, kind, cents, ccy):
        """Money arrives at or leaves the broker in the middle of the day; the trader books it."""
        amount = D(cents) / 100 * (-1 if kind == "withdrawal" else 1)
        tl(self.home, "sim", "deposit", ccy, amount, "--kind", kind)
        booking = ("adjust", "cash", ccy, amount, "--kind", kind, "--reason", "at the bank", "--yes")
        if (ccy, amount) in self.deposits.get(self.day, []):  # a second equal one today: said so, or refused
            refused = tl(self.home, *booking, code=1)
            assert "is already booked as entry" in refused.stderr and "--again" in refused.stderr, refused.stderr
            booking += ("--again",)
        tl(self.home, *booking)
        self.deposits.setdefault(self.day, []).append((ccy, amount))
        event(f"{kind} in {ccy}")
        self.checked = False

    @rule(kind=st.sampled_from(["interest", "fee"]), cents=st.integers(1, 100_000), ccy=st.sampled_from(["USD", "EUR"]))
    def account_cash(self, kind, cents, ccy):
        amount = D(cents) / 100 * (-1 if kind == "fee" else 1)
        self.files += 1
        ref = f"{kind}-{self.files}"
        tl(self.home, "sim", kind, amount, ccy, "--ref", ref)
        for _ in range(2):  # the same command twice books once
            tl(self.home, "actions", kind, amount, ccy, "--date", self.day, "--reason", f"{kind} at the broker",
               "--ref", ref)
        self.checked = False

    @rule(code=st.sampled_from(["SPY", "EXSA"]), cents=st.integers(1, 300), withholding=st.sampled_from(["0", "0.15"]),
          later=st.booleans())
    def dividend(self, code, cents, withholding, later):
        """CODE goes ex-dividend today (before anything traded in it today), paid today or the next
        business day (the ledger's receivable becomes cash then)."""
        if self.traded.get(code) == self.day or self.acted.get(code) == self.day:
            return
        if not any(units for (_, c), units in self.held.items() if c == code):
            return
        pay = next_business_day(self.day) if later else self.day
        event("dividend paid the next business day" if later else "dividend paid on its ex-date")
        if later:  # the ledger's receivable until then, the broker's account-level figure
            gross = sum((units for (_, c), units in self.held.items() if c == code), D(0)) * D(cents) / 100
            tax = (gross * D(withholding)).quantize(CENT) if gross > 0 else D(0)
            self.receivable.append((pay, CURRENCY[code], gross - tax))
        tl(self.home, "sim", "dividend", code, D(cents) / 100, "--withholding", withholding, "--pay-date", pay)
        for _ in range(2):
            tl(self.home, "actions", "sync")
            tl(self.home, "actions", "book", "--date", self.day)
        self.acted[code] = self.day
        self.checked = False

    @rule(code=st.sampled_from(["SPY", "EXSA"]))
    def split(self, code):
        """CODE splits 2:1 today, before it trades; its price halves."""
        if self.traded.get(code) == self.day or self.acted.get(code) == self.day:
            return
        tl(self.home, "sim", "split", code, "2:1")
        event(f"split while {sum(1 for (_, c), units in self.held.items() if c == code and units)} holders hold")
        for _ in range(2):
            tl(self.home, "actions", "sync")
            tl(self.home, "actions", "book", "--date", self.day)
        self.price[code] = (self.price[code] / 2).quantize(CENT)
        tl(self.home, "sim", "price", code, self.price[code])
        self.held = {key: units * 2 if key[1] == code else units for key, units in self.held.items()}
        self.acted[code] = self.day
        self.checked = False
        # before the day's close the newest close is in the old units: the new shares at half of it
        self.closes[code] = self.closes[code] / 2
        assert D(tl_json(self.home, "report", "nav")["nav"]) == self.by_hand(self.closes)

    @rule(spy=st.integers(-1500, 1500), exsa=st.integers(-200, 200), eur=st.integers(-300, 300), days=st.integers(1, 3))
    def close(self, spy, exsa, eur, days):
        """The day closes at these prices and rate (imported, then reconciled); the next days open."""
        for _ in range(days):
            self.price["SPY"] = max(self.price["SPY"] + D(spy) / 100, D(1))
            self.price["EXSA"] = max(self.price["EXSA"] + D(exsa) / 100, D(1))
            self.eur = max(self.eur + D(eur) / 10000, D("0.5"))
            self.at(21)
            self.write(f"date,instrument,close\n{self.day},SPY,{self.price['SPY']}\n{self.day},EXSA,{self.price['EXSA']}\n",
                       "data", "import")
            self.write(f"date,currency,rate\n{self.day},EUR,{self.eur}\n", "data", "import")
            self.rates[self.day] = self.eur
            self.closes = dict(self.price)
            self.closed.append(self.day)
            self.check_the_day()
            event(f"{len(self.closed) // 5 * 5}+ days closed")
            self.day = next_business_day(self.day)
            self.open_day()
        self.checked = True

    # -- what holds ---------------------------------------------------------------------------------

    def rate_on(self, day: dt.date) -> D:
        """The EUR rate the ledger uses on `day`: the newest imported on or before it (0 before any:
        nothing is in EUR then)."""
        known = [d for d in self.rates if d <= day]
        return self.rates[max(known)] if known else D(0)

    def check_the_day(self) -> None:
        """The books against the broker and a hand computation, at the close of self.day."""
        reconciled = tl_json(self.home, "reconcile", code=None)
        assert reconciled["clean"], reconciled
        assert tl_json(self.home, "check")["ok"]
        assert D(tl_json(self.home, "report", "nav", "--date", self.day)["nav"]) == self.by_hand(self.price)

    def by_hand(self, prices: dict) -> D:
        """The broker's cash and positions at `prices` and the EUR rate of the day, and the dividends
        gone ex but not paid yet, to the cent."""
        with self.exchange() as exchange:
            cash = exchange.cash()
            held = {p.contract.code: p.quantity for p in exchange.positions()}
        rate = {"USD": D(1), "EUR": self.eur}
        nav = sum((amount * rate[ccy] for ccy, amount in cash.items()), D(0)) + sum(
            (units * prices[code] * rate[CURRENCY[code]] for code, units in held.items()), D(0)) + sum(
            (amount * rate[ccy] for pay, ccy, amount in self.receivable if pay > self.day), D(0))
        return nav.quantize(CENT)

    @precondition(lambda self: self.closed and self.checked)
    @invariant()
    def pnl_adds_up_whichever_way_it_is_cut(self):
        until = next_business_day(self.closed[-1])
        span = ("--until", until)
        days = tl_json(self.home, "pnl", "--by", "day", "--cumulative", *span)["rows"]
        total = sum((D(r["net"]) for r in days), D(0))
        assert total == (D(days[-1]["cumulative"]) if days else 0)
        by_strategy = sum((D(r["net"]) for r in tl_json(self.home, "pnl", "--by", "strategy", *span)["rows"]), D(0))
        by_instrument = sum((D(r["net"]) for r in tl_json(self.home, "pnl", "--by", "instrument", *span)["rows"]), D(0))
        fast = sum((D(r["net"]) for r in tl_json(self.home, "pnl")["rows"]), D(0))
        assert total == by_strategy == by_instrument == fast, (total, by_strategy, by_instrument, fast)
        # a period's total is the sum of its days, for the period from the second closed day on
        if len(self.closed) > 1:
            since = self.closed[1]
            part = tl_json(self.home, "pnl", "--by", "strategy", "--since", since, *span)["rows"]
            assert sum((D(r["net"]) for r in part), D(0)) == sum(
                (D(r["net"]) for r in days if dt.date.fromisoformat(r["day"]) >= since), D(0))
        # NAV moves by the P&L, the deposits and the FX translation of the EUR the P&L brought in
        perf = tl_json(self.home, "report", "performance", *span)["total"]
        nav = {dt.date.fromisoformat(p["day"]): D(p["nav"]) for p in perf["curve"]}
        net = {dt.date.fromisoformat(r["day"]): D(r["net"]) for r in days}
        if not days:
            return
        # from the day before the first day with P&L: its NAV, its EUR rate
        first = dt.date.fromisoformat(days[0]["day"])
        origin = first - dt.timedelta(days=1)
        previous = peak = D(tl_json(self.home, "report", "nav", "--date", origin)["nav"])
        rate_before = self.rate_on(origin)
        eur_in, since_first = D(0), D(0)
        for point in perf["curve"]:
            day = dt.date.fromisoformat(point["day"])
            row = next(r for r in days if r["day"] == point["day"])
            rate = self.rate_on(day)
            # the days between rows (no P&L, nothing held) are in no curve: their deposits count here,
            # each at its day's rate (as the ledger counts them), and EUR deposited translates after
            between = [(d, ccy, amount) for d, moves in self.deposits.items() if origin < d <= day
                       for ccy, amount in moves]
            deposited = sum((amount * (self.rate_on(d) if ccy == "EUR" else 1) for d, ccy, amount in between), D(0))
            translation = eur_in * (rate - rate_before) + sum(
                (amount * (rate - self.rate_on(d)) for d, ccy, amount in between if ccy == "EUR"), D(0))
            moved = nav[day] - previous - deposited - net[day]
            assert abs(moved - translation) <= 3 * CENT, (day, moved, translation)
            eur_in += sum((amount for d, ccy, amount in between if ccy == "EUR"), D(0))
            since_first += deposited
            # a drawdown is of the NAV less the money deposited since the day before, below its peak
            adjusted = nav[day] - since_first.quantize(CENT)
            peak = max(peak, adjusted)
            assert D(point["drawdown"]) == adjusted - peak, (day, point, adjusted, peak)
            for native in row.get("native", []):
                if native["currency"] == "EUR":
                    eur_in += D(native["realized"]) + D(native["income"]) - D(native["commissions"])
            previous, rate_before, origin = nav[day], rate, day
        # a rerun of a report changes nothing
        assert tl_json(self.home, "pnl", "--by", "day", "--cumulative", *span)["rows"] == days


# TRADELEDGER_MONEY_EXAMPLES=40 TRADELEDGER_MONEY_STEPS=30 explores longer; no shrinking (minutes through
# the command): the failing steps are printed as they were
MoneyAcrossTime.TestCase.settings = settings(
    max_examples=int(os.environ.get("TRADELEDGER_MONEY_EXAMPLES", 6)),
    stateful_step_count=int(os.environ.get("TRADELEDGER_MONEY_STEPS", 12)), deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=list(HealthCheck))
test_money_properties = MoneyAcrossTime.TestCase
