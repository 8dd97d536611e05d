"""Futures across days, as a trader lives them through the real CLI: two strategies holding MES,
a trade at the broker's own screen left in Unattributed, the roll window, the forced roll, the
last trading day and the day after. Every figure is checked against a hand computation.

The world is the simulated exchange driven by `sim` commands (its clock, prices, settlements); an
expiry, which has no command, is the exchange's own `expire`. Strategy a holds +24 MESZ37 and b
-9 (run 1 on 2037-12-07, b's 9 crossed to a at 6,000, a's 15 bought at 6,000), then settles
through 6,010 (12-07), 6,020 (12-08); Unattributed bought 2 at 6,021 on 12-08.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from support import tl, tl_json
from tradeledger.engine.futures.state import reference_prices
from tradeledger.engine.setup.environment import open_environment
from tradeledger.engine.setup.session import Session

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

[strategies.a]
capital_share = "0.5"
instruments = { MES = "1" }

[strategies.b]
capital_share = "0.5"
instruments = { MES = "1" }

[sim]
commission_per_contract = "1.25"
"""
START = dt.date(2037, 12, 7)  # a Monday: MESZ37 is priced; its roll opens on the 10th, is forced from the 16th




class World:
    def __init__(self, home: Path):
        self.home = home
        self.files = 0

    def write(self, text: str) -> Path:
        self.files += 1
        path = self.home / f"file-{self.files}.csv"
        path.write_text(text)
        return path

    def at(self, day: str, hour: int = 15) -> None:
        tl(self.home, "sim", "clock", "set", f"{day}T{hour:02d}:00")

    def prices(self, **prices) -> None:
        for code, price in prices.items():
            tl(self.home, "sim", "price", code, price)

    def cycle(self, day: str, a: int, b: int, code: int | None = 0) -> dict:
        """Forecasts for a and b, a run computed for review, then executed."""
        rows = f"date,strategy,instrument,forecast\n{day},a,MES,{a}\n{day},b,MES,{b}\n"
        tl(self.home, "signals", "import", self.write(rows), "--replace")
        run = tl_json(self.home, "cycle")["run"]
        return tl_json(self.home, "cycle", "--approve", "--run", run, "--wait", "3", code=code)

    def settle(self, day: str, marked: bool = True, **prices) -> None:
        """The day's close: the exchange settles each contract; `mark` books it unless not `marked`."""
        self.at(day, 21)
        for code, price in prices.items():
            tl(self.home, "sim", "settle", code, price, "--date", day)
        if marked:
            tl(self.home, "mark", "--date", day)

    def exchange(self, what):
        env = open_environment(self.home, "paper")
        session = Session(env)
        try:
            return what(session.exchange())
        finally:
            session.close()
            env.engine.dispose()

    def positions(self) -> dict:
        return {(r["strategy"], r["contract"]): D(r["qty"]) for r in tl_json(self.home, "positions")}

    def realized(self) -> dict:
        return {r["strategy"]: D(r["realized"]) for r in tl_json(self.home, "pnl", "--by", "strategy")["rows"]
                if r["strategy"] != "TOTAL"}

    def clean(self) -> None:
        assert tl_json(self.home, "reconcile")["clean"]
        assert tl_json(self.home, "check")["ok"]
        assert tl_json(self.home, "db", "verify")["ok"]


_TEMPLATE: list[Path] = []


def _template(root: Path) -> Path:
    """Funded, 60 days of MES closes ending at 6,000, and the first two days traded and settled."""
    home = root / "home"
    tl(home, "init", "--capital", "1000000")
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text() + CONFIG)
    rng, level, walk, day = random.Random(1), 6000.0, [], START
    while len(walk) < 60:
        day -= dt.timedelta(days=1)
        if day.weekday() < 5:
            level *= 1 + rng.gauss(0, 0.01)
            walk.append((day, level))
    scale = 6000 / walk[0][1]
    world = World(home)
    tl(home, "data", "import", world.write("date,instrument,close\n" + "".join(
        f"{d},MES,{round(x * scale * 4) / 4}\n" for d, x in reversed(walk))))
    world.at("2037-12-07")
    world.prices(MESZ37=6000, MESH38=6020)
    world.cycle("2037-12-07", 10, -4)
    world.settle("2037-12-07", MESZ37=6010, MESH38=6030)
    world.at("2037-12-08")
    world.prices(MESZ37=6020, MESH38=6040)
    tl(home, "sim", "trade", "MESZ37", 2, 6021)
    tl(home, "fills", "sync")
    world.settle("2037-12-08", MESZ37=6020, MESH38=6040)
    return home


@pytest.fixture
def world(tmp_path_factory, tmp_path) -> World:
    if not _TEMPLATE:
        _TEMPLATE.append(_template(tmp_path_factory.mktemp("futures-days")))
    home = tmp_path / "home"
    shutil.copytree(_TEMPLATE[0], home)
    w = World(home)
    assert w.positions() == {("a", "MESZ37"): 24, ("b", "MESZ37"): -9, ("unattributed", "MESZ37"): 2}
    # a: 24 from 6,000 to 6,020 = +2,400; b: -9 = -900; Unattributed: 2 from 6,021 to 6,020 = -10
    assert w.realized() == {"a": D("2400.00"), "b": D("-900.00"), "unattributed": D("-10.00")}
    return w


def test_held_into_expiry_is_said_by_roll_status_and_raised_by_monitoring_until_gone(world):
    """The day before MESZ37's last trading day, Unattributed still holds 2 (tradeledger never
    rolls them): `roll status` says so and raises `held_into_expiry` (it crashed on its own
    exception before: `now` None), the daemon's monitoring raises it too, and resolves it once
    the expiry is booked."""
    home = world.home
    world.at("2037-12-16")
    world.prices(MESZ37=6040, MESH38=6060)
    world.cycle("2037-12-16", 10, -4)  # the forced roll moves a and b to H38, not Unattributed
    assert {k: v for k, v in world.positions().items() if k[1] == "MESZ37"} == {("unattributed", "MESZ37"): 2}
    world.settle("2037-12-16", MESZ37=6045, MESH38=6065)
    world.at("2037-12-17")
    status = tl(home, "roll", "status")
    assert "warning: unattributed still holds 2 MESZ37, whose last trading day is 2037-12-18" in status.stderr
    assert "adjust adopt MESZ37 2 --strategy NAME" in status.stderr
    [raised] = [e for e in tl_json(home, "exceptions", "list") if e["kind"] == "held_into_expiry"]
    assert raised["subject"] == "MESZ37 unattributed" and raised["state"] == "open"
    found = tl_json(home, "monitor", code=1)
    assert [f["subject"] for f in found if f["kind"] == "held_into_expiry"] == ["MESZ37 unattributed"]
    assert len([e for e in tl_json(home, "exceptions", "list") if e["kind"] == "held_into_expiry"]) == 1

    world.settle("2037-12-18", marked=False, MESZ37="6047.50", MESH38=6070)  # the final settlement
    world.exchange(lambda x: x.expire("MESZ37", D("6047.50"), dt.date(2037, 12, 18)))
    tl(home, "mark", "--date", "2037-12-18")
    world.at("2037-12-21")
    world.clean()  # books the expiry: 2 x (6,047.50 - 6,045) x 5 = +25 for Unattributed
    assert world.positions() == {("a", "MESH38"): 24, ("b", "MESH38"): -9}
    tl(home, "monitor", code=None)
    assert [e for e in tl_json(home, "exceptions", "list") if e["kind"] == "held_into_expiry"] == []


def test_a_settlement_that_arrives_late_never_marks_backwards(world):
    """No settlement price reached the ledger on 12-09 (the exchange settled at 6,100); on 12-10
    Unattributed buys 1 at 6,080 and the day settles at 6,090, marked. When 12-09's price arrives
    and is marked, the 12-10 marks already carry the variation margin from 6,020: marking 12-09 now
    would move every holder's mark back to 6,100, on 12-10's positions, dated before the trade (it
    did: a's realized became 12,000 and its mark 6,100 above the 6,090 settlement). It is refused,
    nothing is booked, and the next day marks forward from 6,090."""
    home = world.home
    world.at("2037-12-09", 21)
    world.exchange(lambda x: x.settle("MESZ37", D(6100), dt.date(2037, 12, 9)))  # the ledger never hears of it
    assert tl_json(home, "mark", "--date", "2037-12-09", code=1)["missing_settlement"] == ["MESZ37"]
    world.at("2037-12-10")
    world.prices(MESZ37=6080, MESH38=6100)
    tl(home, "sim", "trade", "MESZ37", 1, 6080)
    tl(home, "fills", "sync")
    world.settle("2037-12-10", MESZ37=6090)
    # a: 24 x 70 x 5 = 8,400; b: -9 x 70 x 5 = -3,150; Unattributed: 2 x 60 x 5 + 3 x 10 x 5 = 750
    expected = {"a": D("10800.00"), "b": D("-4050.00"), "unattributed": D("740.00")}
    assert world.realized() == expected

    tl(home, "data", "import", world.write("date,contract,settle\n2037-12-09,MESZ37,6100\n"))
    late = tl(home, "mark", "--date", "2037-12-09", code=1)
    assert late.stderr.startswith("error: MESZ37 not marked for 2037-12-09: its marks moved on at 2037-12-10 21:00:00")
    assert tl_json(home, "mark", "--date", "2037-12-09", code=1)["marked_later"] == [
        {"contract": "MESZ37", "marks_moved_at": "2037-12-10T21:00:00+00:00"}]  # the latest move: 12-10's settlement
    assert world.realized() == expected
    assert {(r["strategy"], D(r["mark"])) for r in tl_json(home, "positions")} == {
        ("a", D(6090)), ("b", D(6090)), ("unattributed", D(6090))}
    world.clean()

    world.at("2037-12-11")
    world.settle("2037-12-11", MESZ37=6095)  # forward from 6,090: a +600, b -225, Unattributed +75
    assert world.realized() == {"a": D("11400.00"), "b": D("-4275.00"), "unattributed": D("815.00")}
    world.clean()


def test_a_roll_reviewed_is_shown_and_one_stopped_by_half_is_said_then_completed_the_next_day(world):
    """12-16, the forced roll: the run's review shows the spread (it showed only the outright BUY,
    while approving sent a 15-lot spread with crosses on both legs), netted: b's -9 crosses a's
    +24 on each leg at the latest settlements (Z 6,020, H 6,040: H crossed at 6,000 before, the
    close of 12-04 the run was sized with, though H had settled since) and a's 15 go as one spread. The
    broker fills the Z leg only (SELL 15 at 6,040) and cancels the rest: the cycle exits 1 and
    says so (it exited 0 in silence), a rerun sends nothing, and on 12-17 the next cycle buys the
    15 H38 that a lacks, once."""
    home = world.home
    world.at("2037-12-16")
    world.prices(MESZ37=6040, MESH38=6060)
    tl(home, "signals", "import", world.write("date,strategy,instrument,forecast\n2037-12-16,a,MES,10\n"
                                              "2037-12-16,b,MES,-4\n"), "--replace")
    [rolls] = tl_json(home, "roll", "plan")  # the roll alone, in the user's strategy names (it said A, B)
    assert (rolls["moves"], rolls["allocation"], rolls["quantity"]) == ({"a": "24", "b": "-9"}, {"a": "15"}, "15")
    review = tl(home, "cycle")
    [row] = [line for line in review.stdout.splitlines() if line.startswith("MESZ37/MESH38")]
    assert row.split()[:9] == ["MESZ37/MESH38", "roll", "a", "+24,", "b", "-9", "a->b", "9", "spread"]
    assert "spread 15: SELL MESZ37, BUY MESH38" in row and "6020 / 6040" in row
    computed = tl_json(home, "cycle")  # a run superseding the one just shown: the same plan
    run, [spread] = computed["run"], computed["preview"]["spreads"]
    assert (spread["order"]["qty"], spread["order"]["allocation"], spread["crosses"]) == (
        "15", {"a": "15"}, [{"seller": "a", "buyer": "b", "qty": "9"}])

    world.exchange(lambda x: x.fault_leg_only())
    done = tl(home, "cycle", "--approve", "--run", run, "--wait", "3", code=1)
    assert "2 crosses booked, 1 orders sent" in done.stdout
    assert re.search(r"error: spread tl-paper-2-[0-9a-f]{6} \(MESZ37/MESH38\) stopped with unequal legs: "
                     r"MESH38 0 of 15, MESZ37 15 of 15", done.stderr), done.stderr
    again = tl_json(home, "cycle", "--approve", "--run", run, "--wait", "3", code=1)
    assert again["sent"] == [] and len(again["interrupted_rolls"]) == 1
    assert world.positions() == {("a", "MESH38"): 9, ("b", "MESH38"): -9, ("unattributed", "MESZ37"): 2}
    # a: 9 Z crossed at its mark 6,020 (0), 15 sold at 6,040: +1,500; b: crossed at the marks (0)
    assert world.realized() == {"a": D("3900.00"), "b": D("-900.00"), "unattributed": D("-10.00")}
    [raised] = [e for e in tl_json(home, "exceptions", "list") if e["kind"] == "interrupted_roll"]
    assert raised["state"] == "open"
    world.settle("2037-12-16", MESZ37=6045, MESH38=6065)  # H from the cross at 6,040: a +1,125, b -1,125
    world.clean()

    world.at("2037-12-17")
    world.prices(MESZ37=6050, MESH38=6070)
    completed = world.cycle("2037-12-17", 10, -4)
    assert [(c["contract"], c["order"]["side"], c["order"]["qty"]) for c in completed["contracts"] if c["order"]] == [
        ("MESH38", "BUY", "15")]
    assert completed["spreads"] == [] and completed["interrupted_rolls"] == []
    assert world.positions() == {("a", "MESH38"): 24, ("b", "MESH38"): -9, ("unattributed", "MESZ37"): 2}
    world.settle("2037-12-17", MESZ37=6050, MESH38=6072)
    # a: 3,900 + 9 x 25 x 5 (12-16) + 9 x 5 x 5 (to the fill at 6,070) + 24 x 2 x 5 (12-17) = 5,490;
    # b: -900 - 9 x 25 x 5 - 9 x 7 x 5 = -2,340; Unattributed: -10 + 2 x 25 x 5 + 2 x 5 x 5 = 290
    assert world.realized() == {"a": D("5490.00"), "b": D("-2340.00"), "unattributed": D("290.00")}
    world.clean()


def test_reference_prices_are_the_newer_of_the_settlement_and_the_sizing_close():
    """Crosses trade at the reference: each contract's latest settlement (its holders' mark); the
    priced contract's is the run's sizing close only when that close is newer (or it never settled)."""
    settled = {"MESZ37": (dt.date(2037, 12, 8), D(6020)), "MESH38": (dt.date(2037, 12, 8), D(6040))}
    codes = ["MESH38", "MESZ37"]
    assert reference_prices(codes, settled, "MESH38", D(6000), dt.date(2037, 12, 4)) == {
        "MESZ37": D(6020), "MESH38": D(6040)}
    assert reference_prices(codes, settled, "MESH38", D(6000), dt.date(2037, 12, 8)) == {
        "MESZ37": D(6020), "MESH38": D(6040)}  # the same day: the settlement is the mark
    assert reference_prices(codes, settled, "MESH38", D(6050), dt.date(2037, 12, 9)) == {
        "MESZ37": D(6020), "MESH38": D(6050)}
    assert reference_prices(codes, {"MESZ37": settled["MESZ37"]}, "MESH38", D(6000), None) == {
        "MESZ37": D(6020), "MESH38": D(6000)}
    assert reference_prices(codes, {}, "MESH38", D(6000), None) == {"MESZ37": D(6000), "MESH38": D(6000)}
    assert reference_prices(codes, settled, "MESH38", None, None) == {"MESZ37": D(6020), "MESH38": D(6040)}


def test_an_expiry_whose_price_is_not_in_yet_is_named_and_never_proposed_as_a_deposit(world):
    """The evening of MESZ37's last trading day: the exchange settled it at 6,047.50 and the broker
    no longer holds Unattributed's 2, but no final settlement price reached the ledger. The
    reconciliation is not clean (nothing is booked by guess) and says what to do: the break is an
    expiry awaiting its price, with the row to import (it said `adjust manual-close`), and its
    cash difference (the 25.00 of variation margin the broker paid) is not proposed as a deposit
    (it was: following it would have counted the 25.00 twice once the price came in). The price
    imported, the next reconciliation books the expiry once and is clean."""
    home = world.home
    world.at("2037-12-16")
    world.prices(MESZ37=6040, MESH38=6060)
    world.cycle("2037-12-16", 10, -4)
    world.settle("2037-12-16", MESZ37=6045, MESH38=6065)
    world.at("2037-12-18")
    world.settle("2037-12-18", marked=False, MESH38=6070)
    world.exchange(lambda x: x.expire("MESZ37", D("6047.50"), dt.date(2037, 12, 18)))  # the ledger has no price
    marked = tl_json(home, "mark", "--date", "2037-12-18", code=1)  # H38; the ledger still holds MESZ37
    assert (marked["booked"], marked["missing_settlement"]) == (["MESH38"], ["MESZ37"])
    found = tl(home, "reconcile", code=1)
    assert "MESZ37    position    2.00    0.00" in found.stdout
    assert "proposed (not booked)" not in found.stdout
    assert "cash USD: the position breaks in MESZ37 come first" in found.stdout
    [cash] = tl_json(home, "reconcile", code=1)["cash"]
    assert (D(cash["diff"]), cash["proposal"], cash["behind"]) == (D("-25.00"), None, ["MESZ37"])
    breaks = [e["detail"] for e in tl_json(home, "exceptions", "list") if e["kind"] == "reconciliation_break"]
    assert any(d.startswith("MESZ37: ledger 2, broker 0") and "it has expired; import its final settlement "
               "(`date,contract,settle`, the row `2037-12-18,MESZ37,PRICE`)" in d for d in breaks), breaks
    assert any(d.startswith("cash USD") and "the position breaks in MESZ37 come first" in d for d in breaks), breaks
    assert not any("adjust cash" in d or "manual-close" in d for d in breaks), breaks

    tl(home, "data", "import", world.write("date,contract,settle\n2037-12-18,MESZ37,6047.50\n"))
    world.clean()  # books the expiry: 2 x 2.50 x 5 = 25.00 for Unattributed
    assert world.positions() == {("a", "MESH38"): 24, ("b", "MESH38"): -9}
    # Unattributed: -10 + 2 x 25 x 5 (12-16) + 25 = 265; H from the crosses at 6,040 to 6,070
    assert world.realized()["unattributed"] == D("265.00")
    assert {e["kind"] for e in tl_json(home, "exceptions", "list")} == {"unattributed_fill"}  # the rest resolved
    world.clean()


def test_held_into_expiry_is_said_the_business_day_before_the_deadline_and_first_notice_counts():
    """A physically delivered contract's deadline is its first notice day (delivery), not its last
    trading day: ZNH27, first notice 2027-02-26, last trade 03-19, is said from 02-25 (it was said
    only from 03-18, three weeks into the delivery window). FDAXH27's last day is a Monday
    (03-15): said from the Friday before (it was said on the Sunday, with one session left)."""
    import tomllib

    from tradeledger.engine.futures.status import held_into_expiry
    from tradeledger.engine.setup.config import parse_trading_config

    config = parse_trading_config(tomllib.loads("""
[instruments.ZN]
type = "future"
currency = "USD"
multiplier = 1000
exchange = "CBOT"
expiry_months = "HMUZ"
expiry_rule = "bdays_before_month_end:7"
first_notice = "prev_month_end"

[instruments.FDAX]
type = "future"
currency = "EUR"
multiplier = 25
exchange = "EUREX"
expiry_months = "HMUZ"
expiry_rule = "day:15"
"""))
    held = {("trend", "ZN"): {"ZNH27": D(2)}, ("unattributed", "FDAX"): {"FDAXH27": D(-1)}}

    def said(on: str) -> list[tuple]:
        return [(h.code, h.holder, h.deadline.isoformat(), h.notice)
                for h in held_into_expiry(config, held, dt.date.fromisoformat(on), {})]

    assert said("2027-02-24") == []
    assert said("2027-02-25") == [("ZNH27", "trend", "2027-02-26", True)]
    assert said("2027-03-11") == [("ZNH27", "trend", "2027-02-26", True)]
    assert said("2027-03-12") == [("FDAXH27", "unattributed", "2027-03-15", False),
                                  ("ZNH27", "trend", "2027-02-26", True)]
    [zn] = held_into_expiry(config, held, dt.date(2027, 2, 25), {})
    assert zn.describe().startswith("trend still holds 2 ZNH27, whose first notice day is 2027-02-26: roll or close it")


def test_a_day_without_its_settlement_stays_said_until_it_is_marked(world):
    """12-09 at the close, no settlement price: the daemon's settle job raises it (stale_prices,
    settlement CME 2037-12-09) and its monitor job, in the same pass, resolved it as "no longer
    found by monitoring" (the kinds are shared; monitoring never raised it): the day's missing
    marks went unsaid. It stays open; when the price is in, the settle job marks the day and
    resolves it, once."""
    home = world.home
    world.at("2037-12-09", 21)
    tl(home, "daemon", "--once", code=None)
    [missing] = [e for e in tl_json(home, "exceptions", "list") if e["kind"] == "stale_prices"]
    assert (missing["subject"], missing["state"]) == ("settlement CME 2037-12-09", "open")
    assert "no settlement price on 2037-12-09 for MESZ37" in missing["detail"]
    tl(home, "monitor", code=None)
    assert [e["subject"] for e in tl_json(home, "exceptions", "list") if e["kind"] == "stale_prices"] == [
        "settlement CME 2037-12-09"]

    world.settle("2037-12-09", marked=False, MESZ37=6025)
    tl(home, "daemon", "--once", code=None)
    assert [e for e in tl_json(home, "exceptions", "list") if e["kind"] == "stale_prices"] == []
    # marked once: a 24 x 5 x 5 = +600, b -9 x 5 x 5 = -225, Unattributed 2 x 5 x 5 = +50
    assert world.realized() == {"a": D("3000.00"), "b": D("-1125.00"), "unattributed": D("40.00")}
    tl(home, "daemon", "--once", code=None)
    assert world.realized() == {"a": D("3000.00"), "b": D("-1125.00"), "unattributed": D("40.00")}
    world.clean()


def test_a_cycle_never_counts_a_contract_past_its_expiry_as_live(world):
    """Nobody rolled (no_roll pinned): a +24, b -9 and Unattributed +2 hold MESZ37 through its last
    trading day, 12-18, when the exchange settles it at 6,047.50 and the broker drops it. Monday
    12-21, before any reconciliation, a cycle: a's exposure counted the 24 dead MESZ37 as live, so
    a target of 9 sent SELL 15 MESH38 (a short 15 at the broker once the expiry was booked). MES is
    refused, naming the contract and `reconcile`; reconciled (the expiry booked once), a new run
    trades the whole target in MESH38."""
    home = world.home
    tl(home, "roll", "set", "MES", "no_roll")
    world.at("2037-12-18")
    world.settle("2037-12-18", marked=False, MESZ37="6047.50", MESH38=6070)
    world.exchange(lambda x: x.expire("MESZ37", D("6047.50"), dt.date(2037, 12, 18)))
    tl(home, "roll", "set", "MES", "auto")
    world.at("2037-12-21")
    world.prices(MESH38=6080)
    refused = world.cycle("2037-12-21", 4, -8, code=1)
    assert refused["sent"] == [] and refused["contracts"][0]["refused"].startswith(
        "MES is locked: MESZ37 expired on 2037-12-18 and its expiry is not booked yet")
    assert world.positions() == {("a", "MESZ37"): 24, ("b", "MESZ37"): -9, ("unattributed", "MESZ37"): 2}

    world.clean()  # books the expiry at 6,047.50: a +24 x 27.50 x 5, b -9 x 27.50 x 5, Unattributed 2 x 27.50 x 5
    assert world.positions() == {}
    assert world.realized() == {"a": D("5700.00"), "b": D("-2137.50"), "unattributed": D("265.00")}
    done = world.cycle("2037-12-21", 4, -8)
    assert {(c["contract"], c["order"]["side"]) for c in done["contracts"] if c["order"]} == {("MESH38", "SELL")}
    held = world.positions()
    assert set(held) == {("a", "MESH38"), ("b", "MESH38")} and held[("a", "MESH38")] > 0 > held[("b", "MESH38")]
    world.clean()


def test_the_evening_of_the_last_trading_day_is_after_the_expiry_too(world):
    """12-18 at the close MESZ37's final settlement is in (6,047.50) and the exchange has dropped
    it: a cycle that evening, before any reconciliation, would count a's 24 as live as well. MES is
    refused; the reconciliation books the expiry and the next run trades."""
    home = world.home
    tl(home, "roll", "set", "MES", "no_roll")
    world.at("2037-12-18")
    world.settle("2037-12-18", marked=False, MESZ37="6047.50", MESH38=6070)
    world.exchange(lambda x: x.expire("MESZ37", D("6047.50"), dt.date(2037, 12, 18)))
    tl(home, "roll", "set", "MES", "auto")
    world.at("2037-12-18", 22)
    world.prices(MESH38=6070)
    refused = world.cycle("2037-12-18", 4, -8, code=1)
    assert refused["contracts"][0]["refused"].startswith("MES is locked: MESZ37 expired on 2037-12-18")
    world.clean()
    world.cycle("2037-12-18", 4, -8)
    assert {code for (_s, code) in world.positions()} == {"MESH38"}
    world.clean()


def _interrupted(home) -> list[dict]:
    return [e for e in tl_json(home, "exceptions", "list", "--all") if e["kind"] == "interrupted_roll"]


def test_a_roll_killed_after_its_spread_went_half_filled_is_raised_then_resolved_by_the_next_days_cycle(world):
    """12-16, the forced roll: `cycle --approve` is SIGKILLed just after the spread is marked sent
    (kill point `marked`), and the broker fills only the Z leg. The next `fills sync` says it and
    raises `interrupted_roll` (nothing said it before the next plan); it stays open while a's
    exposure is 9 of its target 24, through a run computed on 12-17 and not executed yet; the
    12-17 cycle buys the 15 H38 a lacks and the exception is resolved in that fill's transaction,
    saying why. It never opens again."""
    home = world.home
    world.at("2037-12-16")
    world.prices(MESZ37=6040, MESH38=6060)
    tl(home, "signals", "import", world.write("date,strategy,instrument,forecast\n2037-12-16,a,MES,10\n"
                                              "2037-12-16,b,MES,-4\n"), "--replace")
    run = tl_json(home, "cycle")["run"]
    world.exchange(lambda x: x.fault_leg_only())
    killed = subprocess.run([sys.executable, "-m", "tradeledger.cli", "--home", str(home), "cycle", "--approve",
                             "--run", str(run), "--wait", "3"], capture_output=True, text=True, timeout=180,
                            env={**os.environ, "TRADELEDGER_KILL_AT": "marked"})
    assert killed.returncode == -9, (killed.stdout, killed.stderr)
    assert _interrupted(home) == []  # nobody has looked yet
    synced = tl(home, "fills", "sync", code=1)
    assert re.search(r"error: spread tl-paper-\d+-[0-9a-f]{6} \(MESZ37/MESH38\) stopped with unequal legs: "
                     r"MESH38 0 of 15, MESZ37 15 of 15", synced.stderr), synced.stderr
    [raised] = _interrupted(home)
    assert raised["state"] == "open" and raised["severity"] == "error"
    assert world.positions() == {("a", "MESH38"): 9, ("b", "MESH38"): -9, ("unattributed", "MESZ37"): 2}
    assert tl_json(home, "fills", "sync")["interrupted_rolls"] == []  # said once; the exception stays
    world.settle("2037-12-16", MESZ37=6045, MESH38=6065)
    assert [e["state"] for e in _interrupted(home)] == ["open"]

    world.at("2037-12-17")
    world.prices(MESZ37=6050, MESH38=6070)
    tl(home, "signals", "import", world.write("date,strategy,instrument,forecast\n2037-12-17,a,MES,10\n"
                                              "2037-12-17,b,MES,-4\n"), "--replace")
    pending = tl_json(home, "cycle")["run"]  # computed for review, not executed: a still holds 9
    assert [e["state"] for e in _interrupted(home)] == ["open"]
    done = tl_json(home, "cycle", "--approve", "--run", pending, "--wait", "3")
    assert [(c["contract"], c["order"]["side"], c["order"]["qty"]) for c in done["contracts"] if c["order"]] == [
        ("MESH38", "BUY", "15")]
    assert world.positions() == {("a", "MESH38"): 24, ("b", "MESH38"): -9, ("unattributed", "MESZ37"): 2}
    [resolved] = _interrupted(home)
    assert resolved["id"] == raised["id"] and resolved["state"] == "resolved"
    assert resolved["resolved"]["by"] == "tradeledger"
    assert resolved["resolved"]["why"] == f"roll completed: a holds 24 MES, its target in run {pending}"
    assert resolved["resolved"]["at"].startswith("2037-12-17")
    assert [e for e in tl_json(home, "exceptions", "list") if e["kind"] == "interrupted_roll"] == []
    tl(home, "fills", "sync")
    assert [e["state"] for e in _interrupted(home)] == ["resolved"]  # a later sync opens nothing again
    world.settle("2037-12-17", MESZ37=6050, MESH38=6072)
    world.clean()


def test_an_interrupted_roll_stays_open_while_its_holder_is_short_and_a_roll_execute_completes_it(world):
    """12-16 the spread stops half filled (a holds 9 of its 24). 12-17: the cycle's BUY 15 H38 fills
    5 and the rest is held, then cancelled: a holds 14 of 24, the exception stays open (a later run
    executed is not enough; its holder must be at its target). 12-18: `roll execute` (before: it
    targeted a's half-rolled exposure and sent nothing) targets a at 24 and buys the 10; resolved."""
    home = world.home
    world.at("2037-12-16")
    world.prices(MESZ37=6040, MESH38=6060)
    world.exchange(lambda x: x.fault_leg_only())
    world.cycle("2037-12-16", 10, -4, code=1)
    [raised] = _interrupted(home)
    assert raised["state"] == "open"
    world.settle("2037-12-16", MESZ37=6045, MESH38=6065)

    world.at("2037-12-17")
    world.prices(MESZ37=6050, MESH38=6070)
    world.exchange(lambda x: x.fault_partial_fill(qty=D(5)))
    partial = world.cycle("2037-12-17", 10, -4, code=1)
    assert len(partial["still_working"]) == 1
    assert world.positions()[("a", "MESH38")] == 14
    assert [e["state"] for e in _interrupted(home)] == ["open"]
    [order] = [o for o in tl_json(home, "orders", "list") if o["state"] == "partial"]
    tl(home, "orders", "cancel", order["id"])
    tl(home, "fills", "sync")
    assert world.positions()[("a", "MESH38")] == 14
    assert [e["state"] for e in _interrupted(home)] == ["open"]  # a is 10 short of its target still
    world.settle("2037-12-17", MESZ37=6050, MESH38=6072)

    world.at("2037-12-18")
    world.prices(MESH38=6080)
    rolled = tl_json(home, "roll", "execute")
    assert rolled["outright"] == 1 and rolled["spreads"] == 0
    assert world.positions() == {("a", "MESH38"): 24, ("b", "MESH38"): -9, ("unattributed", "MESZ37"): 2}
    [resolved] = _interrupted(home)
    assert resolved["state"] == "resolved"
    assert resolved["resolved"]["why"].startswith(f"roll completed: a holds 24 MES, its target in run {rolled['run']}")
