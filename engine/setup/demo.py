"""The demo: a multi-strategy book trading a few simulated days, from an empty home to a clean check.

`DEMO_CONFIG` is a complete trading configuration: three strategies, fourteen futures in USD,
EUR and GBP (including BTC signalled on CME's bitcoin future and executed in the micro MBT), and
three ETFs. `seed_history` generates a deterministic price history (a seeded random walk rounded
to each instrument's tick) and FX rates, enough for the slowest trend rule to warm up.

`run_demo` then plays trading days on the simulated broker, each through the same engine
functions the CLI uses: compute the target run, approve it, plan, cross, send, book the fills,
and at the close import the day's prices, settle at the exchange and mark the ledger. On the
second day someone trades at the broker's own screen, and the fill lands in Unattributed. A
fourth strategy allocates across five ETFs by momentum; SPY goes ex-dividend on day 2 (paid on
day 3) and GLD splits 2:1 at the start of day 3, at the broker and, through an imported
corporate-actions file, in the ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from tradeledger.engine.context import Context
from tradeledger.engine.targets import prices
from tradeledger.engine.futures import calendar as futures_calendar
from tradeledger.engine.futures.state import old_and_new
from tradeledger.engine.setup.config import current_contract, instrument_of_contract, to_contract
from tradeledger.engine.trading.cycle import submit_run, wait_for_fills
from tradeledger.engine.setup.environment import init_environment
from tradeledger.engine.setup.funding import fund
from tradeledger.engine.trading.fills import sync_fills
from tradeledger.engine.accounting.holdings import known_contracts
from tradeledger.engine.trading.marking import futures_held, mark_day
from tradeledger.engine.setup.session import Session
from tradeledger.engine.targets.runs import approve_run, compute_run

UTC = dt.timezone.utc
DEMO_START = dt.date(2026, 12, 1)
DEMO_HORIZON_DAYS = 420  # calendar days of seeded history after the start: room for a year and more
MAX_DEMO_DAYS = 290  # trading days
DEMO_CAPITAL = Decimal(2000000)  # deposited at the start; strategies size on their share of NAV

# name: (type, currency, multiplier, exchange, ib symbol, trading class, tick, months, start price, daily vol)
_INSTRUMENTS = {
    "ES": ("future", "USD", "50", "CME", "ES", "ES", "0.25", "HMUZ", 6000, 0.011),
    "MES": ("future", "USD", "5", "CME", "MES", "MES", "0.25", "HMUZ", 6000, 0.011),
    "NQ": ("future", "USD", "20", "CME", "NQ", "NQ", "0.25", "HMUZ", 21000, 0.014),
    "MNQ": ("future", "USD", "2", "CME", "MNQ", "MNQ", "0.25", "HMUZ", 21000, 0.014),
    "ZN": ("future", "USD", "1000", "CBOT", "ZN", "ZN", "0.015625", "HMUZ", 110, 0.004),
    "ZF": ("future", "USD", "1000", "CBOT", "ZF", "ZF", "0.0078125", "HMUZ", 107, 0.003),
    "GC": ("future", "USD", "100", "COMEX", "GC", "GC", "0.1", "GJMQVZ", 2600, 0.009),
    "CL": ("future", "USD", "1000", "NYMEX", "CL", "CL", "0.01", "FGHJKMNQUVXZ", 70, 0.02),
    "BTC": ("future", "USD", "5", "CME", "BRR", "BTC", "5", "FGHJKMNQUVXZ", 90000, 0.03),
    "MBT": ("future", "USD", "0.1", "CME", "MBT", "MBT", "5", "FGHJKMNQUVXZ", 90000, 0.03),
    "FESX": ("future", "EUR", "10", "EUREX", "ESTX50", "FESX", "1", "HMUZ", 4900, 0.011),
    "FGBL": ("future", "EUR", "1000", "EUREX", "GBL", "FGBL", "0.01", "HMUZ", 132, 0.004),
    "Z": ("future", "GBP", "10", "ICEEU", "Z", "Z", "0.5", "HMUZ", 8300, 0.009),
    "NKD": ("future", "USD", "5", "CME", "NKD", "NKD", "5", "HMUZ", 39000, 0.013),
    "SPY": ("share", "USD", "1", "ARCA", "SPY", "", "0.01", "", 600, 0.011),
    "TLT": ("share", "USD", "1", "NASDAQ", "TLT", "", "0.01", "", 90, 0.009),
    "GLD": ("share", "USD", "1", "ARCA", "GLD", "", "0.01", "", 240, 0.009),
    "EFA": ("share", "USD", "1", "ARCA", "EFA", "", "0.01", "", 85, 0.010),
    "IEF": ("share", "USD", "1", "NASDAQ", "IEF", "", "0.01", "", 95, 0.005),
}
# name: (expiry rule, roll_offset_days, force_days, first notice) -- engine/futures/calendar.py
_CALENDARS = {
    "ES": ("third_friday", 8, 2, ""), "MES": ("third_friday", 8, 2, ""), "NQ": ("third_friday", 8, 2, ""),
    "MNQ": ("third_friday", 8, 2, ""), "NKD": ("third_friday", 8, 2, ""), "FESX": ("third_friday", 8, 2, ""),
    "Z": ("third_friday", 8, 2, ""),
    "ZN": ("bdays_before_month_end:7", 10, 3, "prev_month_end"),
    "ZF": ("bdays_before_month_end:7", 10, 3, "prev_month_end"),
    "GC": ("bdays_before_month_end:3", 10, 3, "prev_month_end"),
    "CL": ("bdays_before_day:3:25:-1", 6, 2, ""),
    "FGBL": ("bdays_before_day:2:10:0", 8, 2, ""),
    "BTC": ("last_friday", 6, 2, ""), "MBT": ("last_friday", 6, 2, ""),
}
# name: annual basis of a contract over the underlying (contango > 0, backwardation < 0): a contract
# closes at underlying x (1 + basis x years to its last trading day), so contracts differ, a roll
# spread has a price and carry has something to say
_BASIS = {"ES": 0.01, "MES": 0.01, "NQ": 0.012, "MNQ": 0.012, "ZN": -0.01, "ZF": -0.008, "GC": 0.03,
          "CL": -0.06, "BTC": 0.06, "MBT": 0.06, "FESX": 0.0, "FGBL": -0.01, "Z": -0.02, "NKD": 0.01}
_FX = {"EUR": (1.08, 0.004), "GBP": (1.27, 0.004)}

_STRATEGIES = """
[strategies.trend_fast]
capital_share = "0.35"
risk_target = "0.20"
idm = "1.5"
rules = { ewmac_8_32 = "0.5", ewmac_16_64 = "0.5" }
instruments = { MES = "0.15", MNQ = "0.15", ZN = "0.15", GC = "0.15", BTC = "0.1", FESX = "0.15", Z = "0.15" }

[strategies.trend_slow]
capital_share = "0.35"
risk_target = "0.20"
idm = "1.5"
rules = { ewmac_32_128 = "0.6", carry = "0.4" }
fdm = "1.1"
instruments = { MES = "0.2", MNQ = "0.2", ZF = "0.2", FGBL = "0.2", CL = "0.2" }

[strategies.etf_trend]
capital_share = "0.1"
risk_target = "0.15"
idm = "1.2"
rules = { ewmac_16_64 = "1" }
instruments = { SPY = "0.4", TLT = "0.3", GLD = "0.3" }

[strategies.tactical]
kind = "allocation"
capital_share = "0.05"
instruments = { SPY = 1, TLT = 1, GLD = 1, EFA = 1, IEF = 1 }

[strategies.tactical.allocation]
rule = "momentum"
lookback = 126
top_n = 3
absolute_filter = true
band_abs = "0.05"
band_rel = "0.25"
"""

# Corporate actions during the demo, by trading day number: SPY goes ex-dividend on day 2 (paid on
# day 3, 15% withheld) and GLD splits 2:1 at the start of day 3.
DIVIDEND = ("SPY", Decimal("1.85"), Decimal("0.15"), 2, 3)  # ticker, per share, withholding, ex day, pay day
SPLIT = ("GLD", Decimal(2), Decimal(1), 3)  # ticker, new, old, day


def demo_config(capital_mode: str = "fixed") -> str:
    """The [portfolio], [instruments.*], [mappings], [strategies.*], [limits] and [sim] tables.

    The demo itself deposits its capital and compounds on NAV; the same tables seeded into an
    account that is still to be opened (`ibsim seed-demo`) size on the fixed capital until the
    ledger knows what the account holds."""
    lines = ['[portfolio]', f'capital = "{DEMO_CAPITAL}"', f'capital_mode = "{capital_mode}"', 'buffer_fraction = "0.10"', 'max_run_age_hours = 24', '']
    for name, (kind, ccy, mult, exch, sym, tclass, tick, months, *_rest) in _INSTRUMENTS.items():
        lines += [f"[instruments.{name}]", f'type = "{kind}"', f'currency = "{ccy}"', f'multiplier = "{mult}"',
                  f'exchange = "{exch}"', f'ib_symbol = "{sym}"', f'tick_size = "{tick}"']
        if kind == "future":
            rule, roll_days, force_days, notice = _CALENDARS[name]
            lines += [f'trading_class = "{tclass}"', f'expiry_months = "{months}"', f'expiry_rule = "{rule}"',
                      f"roll_offset_days = {roll_days}", f"force_days = {force_days}"]
            if notice:
                lines.append(f'first_notice = "{notice}"')
        lines.append("")
    lines += ["[mappings]", 'BTC = "MBT"', ""]
    lines += [_STRATEGIES.strip(), ""]
    lines += ["[limits]", "max_order_qty = 500", "max_daily_qty = 2000", "",
              "[sim]", 'commission_per_contract = "1.25"', 'commission_per_share = "0.005"', ""]
    return "\n".join(lines)


def price_at_latest_closes(ctx: Context, exchange) -> list[str]:
    """Price every configured instrument's current contract at a gateway's exchange at its latest
    imported close; the contracts priced."""
    opened = []
    for name, instrument in sorted(ctx.config.instruments.items()):
        try:
            _, close = prices.latest_price(ctx, name)
        except prices.PriceError:
            continue
        contract = current_contract(instrument, ctx.now().date())
        exchange.add_contract(contract)
        exchange.set_price(contract.code, close)
        opened.append(contract.code)
    return opened


def _business_days(end: dt.date, count: int) -> list[dt.date]:
    days, day = [], end
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    return days[::-1]


def _tick(value: float, tick: Decimal) -> Decimal:
    return (Decimal(repr(value)) / tick).quantize(Decimal(1)) * tick


@dataclass(frozen=True)
class History:
    closes: dict[str, dict[dt.date, Decimal]]  # instrument -> date -> close
    fx: dict[str, dict[dt.date, Decimal]]


def seed_history(end: dt.date, days: int = 300 + 300, seed: int = 7) -> History:
    """A deterministic random-walk history up to and including `end` (business days)."""
    rng = np.random.default_rng(seed)
    dates = _business_days(end, days)
    closes: dict[str, dict[dt.date, Decimal]] = {}
    for name, (*_head, tick, _months, start, vol) in _INSTRUMENTS.items():
        drift = rng.normal(0, vol / 20)  # some trend so the rules have something to say
        path = start * np.exp(np.cumsum(rng.normal(drift, vol, len(dates))))
        closes[name] = {d: _tick(float(p), Decimal(tick)) for d, p in zip(dates, path)}
    closes["MBT"] = dict(closes["BTC"])  # one underlying, two contract sizes
    ticker, new, old, day_number = SPLIT
    split_day = demo_days(day_number)[-1]
    closes[ticker] = {d: (_tick(float(p * old / new), Decimal("0.01")) if d >= split_day else p)
                      for d, p in closes[ticker].items()}  # quoted as the market quotes them
    fx = {}
    for ccy, (start, vol) in _FX.items():
        path = start * np.exp(np.cumsum(rng.normal(0, vol, len(dates))))
        fx[ccy] = {d: Decimal(repr(round(float(p), 5))) for d, p in zip(dates, path)}
    return History(closes, fx)


def history_csvs(history: History, until: dt.date | None = None) -> tuple[str, str]:
    """(closes CSV, FX CSV) of the history up to `until` inclusive."""
    closes = ["date,instrument,close"] + [f"{d.isoformat()},{name},{p}" for name, series in history.closes.items()
                                           for d, p in series.items() if until is None or d <= until]
    fx = ["date,currency,rate"] + [f"{d.isoformat()},{ccy},{r}" for ccy, series in history.fx.items()
                                   for d, r in series.items() if until is None or d <= until]
    return "\n".join(closes) + "\n", "\n".join(fx) + "\n"


def init_demo(home, env: str = "paper", db_url: str | None = None, start: dt.date = DEMO_START):
    """An environment with the demo configuration and the price history of the days before
    `start` (the demo's first trading day; `init --demo` starts today, by the wall clock)."""
    environment = init_environment(home, env, "sim", None, db_url=db_url, config_extra="\n" + demo_config("compounding"))
    fund(environment, DEMO_CAPITAL, environment.settings.base_currency,
         dt.datetime.combine(start - dt.timedelta(days=1), dt.time(0, 0), tzinfo=UTC), who="demo")
    history = seed_history(start + dt.timedelta(days=DEMO_HORIZON_DAYS))
    closes, fx = history_csvs(history, until=start - dt.timedelta(days=1))
    session = Session(environment)
    # contract closes for the whole history: the back-adjusted series signals read goes back as far
    # as the instrument closes (engine/futures/panama.py), and carry reads the curve
    days = [d for d in history.closes["ES"] if d < start]
    contract_closes = contract_closes_csv(session, history, days)
    for text, source in ((closes, "demo closes"), (fx, "demo fx"), (contract_closes, "demo contract closes")):
        parsed = prices.parse_prices_csv(text, session.config, environment.settings.base_currency, source)
        prices.store_rows(session, parsed, source)
    return environment, history


def contract_close(session: Session, history: History, code: str, day: dt.date) -> Decimal:
    """A contract's close: the underlying's close x (1 + basis x years to its last trading day)."""
    instrument = instrument_of_contract(session.config, code)
    last = futures_calendar.find(instrument.schedule, code).last_trade
    years = max((last - day).days, 0) / 365
    return _tick(float(history.closes[instrument.name][day]) * (1 + _BASIS[instrument.name] * years),
                 instrument.tick_size)


def _curve_codes(instrument, day: dt.date) -> list[str]:
    """The contracts whose closes the demo publishes: the one being rolled out of (while it trades),
    the current one and the next ones carry reads."""
    old, current = old_and_new(instrument, day)
    later = futures_calendar.chain(instrument.schedule, current.last_trade + dt.timedelta(days=1),
                                   instrument.carry_offset)
    return ([old.code] if old else []) + [current.code] + [d.code for d in later]


def contract_closes_csv(session: Session, history: History, days: list[dt.date]) -> str:
    rows = ["date,contract,close"]
    for name, instrument in session.config.instruments.items():
        if instrument.is_future:
            for day in days:
                rows += [f"{day.isoformat()},{code},{contract_close(session, history, code, day)}"
                         for code in _curve_codes(instrument, day)]
    return "\n".join(rows) + "\n"


def _import_day(session: Session, history: History, day: dt.date) -> None:
    closes = "date,instrument,close\n" + "".join(f"{day.isoformat()},{n},{s[day]}\n" for n, s in history.closes.items())
    fx = "date,currency,rate\n" + "".join(f"{day.isoformat()},{c},{s[day]}\n" for c, s in history.fx.items())
    for text in (closes, fx, contract_closes_csv(session, history, [day])):
        parsed = prices.parse_prices_csv(text, session.config, session.settings.base_currency, "demo day")
        prices.store_rows(session, parsed, "demo day")


def _settle_day(session: Session, history: History, day: dt.date) -> list[str]:
    """Settle every held future at the exchange and in the ledger at the day's close."""
    env, exchange = session, session.exchange()
    close = dt.datetime.combine(day, dt.time(21, 0), tzinfo=UTC)
    exchange.set_clock(close)  # the exchange settles at its close, and its clock says so
    codes = futures_held(env)
    rows = []
    for code in codes:
        price = contract_close(session, history, code, day)
        exchange.settle(code, price, day)
        rows.append(f"{day.isoformat()},{code},{price}")
    if rows:
        parsed = prices.parse_prices_csv("date,contract,settle\n" + "\n".join(rows) + "\n", session.config,
                                         env.settings.base_currency, "demo settle")
        prices.store_rows(env, parsed, "demo settle")
    mark_day(env, known_contracts(env.ledger), day,
             {code: contract_close(session, history, code, day) for code in codes}, close)
    _expire_day(session, history, day, close)
    return codes


def _expire_day(session: Session, history: History, day: dt.date, close: dt.datetime) -> None:
    """Contracts whose last trading day is today expire at the exchange at today's settlement (no
    execution; the position disappears), and the ledger books the final settlement per holder."""
    from tradeledger.engine.futures.expiry import last_trading_day, settle_expired

    env, exchange = session, session.exchange()
    for position in exchange.positions():
        code = position.contract.code
        if position.contract.sec_type == "FUT" and last_trading_day(session.config, code, {}) == day:
            exchange.expire(code, contract_close(session, history, code, day), day)
    at_broker = {p.contract.code for p in exchange.positions() if p.quantity}
    settle_expired(env, at_broker, day + dt.timedelta(days=1), close)


def _open_market(session: Session, history: History, day: dt.date, when: dt.datetime) -> None:
    """The simulated market opens near yesterday's close: every contract gets a price."""
    exchange = session.exchange()
    exchange.set_clock(when)
    previous = max(d for d in history.closes["ES"] if d < day)
    for name, instrument in session.config.instruments.items():
        before = history.closes[name][previous]
        if name == SPLIT[0] and previous < demo_days(SPLIT[3])[-1] <= day:
            before = before * SPLIT[2] / SPLIT[1]  # yesterday's close in today's (post-split) units
        midpoint = float(before + history.closes[name][day]) / 2
        for contract in _trading_contracts(instrument, day):
            exchange.add_contract(contract)
            if instrument.is_future:  # the contract's own level: the underlying's plus its basis
                last = futures_calendar.find(instrument.schedule, contract.code).last_trade
                factor = 1 + _BASIS[name] * max((last - day).days, 0) / 365
                exchange.set_price(contract.code, _tick(midpoint * factor, instrument.tick_size), when)
            else:
                exchange.set_price(contract.code, _tick(midpoint, instrument.tick_size), when)


def _trading_contracts(instrument, day: dt.date) -> list:
    """The current contract and, inside a roll window, the one being rolled out of."""
    if not instrument.is_future:
        return [current_contract(instrument, day)]
    old, new = old_and_new(instrument, day)
    return [to_contract(instrument, d.code, d.expiry) for d in (old, new) if d is not None]


def _corporate_actions(session: Session, schedule: list[dt.date], number: int, day: dt.date, progress) -> None:
    """Before the day's trading: the broker's split and dividend payment, and the ledger's import and booking
    of the same actions (as a trader would import the broker's announcement)."""
    from tradeledger.engine.accounting.actions import book_due, import_actions_csv

    env, exchange = session, session.exchange()
    exchange.set_clock(dt.datetime.combine(day, dt.time(13, 0), tzinfo=UTC))
    ticker, per_share, withholding, ex_day, pay_day = DIVIDEND
    split_ticker, new, old, split_day = SPLIT
    if number == 1:
        path = env.dir / "corporate-actions.csv"
        path.write_text("kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio\n"
                        f"dividend,{ticker},{schedule[ex_day - 1]},{schedule[pay_day - 1]},{per_share},USD,{withholding},\n"
                        f"split,{split_ticker},{schedule[split_day - 1]},,,,,{new}:{old}\n")
        import_actions_csv(env, path)
        progress(f"day 1 ({day}): imported the corporate actions announced ({path.name})")
    if number == split_day:
        exchange.split(split_ticker, new, old)
        progress(f"day {number} ({day}): {split_ticker} splits {new}:{old}")
    if number == ex_day:
        shares = exchange.declare_dividend(ticker, per_share, withholding, schedule[pay_day - 1])
        progress(f"day {number} ({day}): {ticker} goes ex-dividend ({per_share} per share on {shares} shares)")
    exchange.pay_due_dividends()  # the exchange's clock pays it on the day; a real-time clock pays here
    if number == pay_day:
        progress(f"day {number} ({day}): {ticker} pays its dividend")
    book_due(env, day)


def demo_days(count: int) -> list[dt.date]:
    days, day = [], DEMO_START
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def run_demo(home, days: int = 3, progress=lambda message: None, db_url: str | None = None) -> Session:
    """Play `days` trading days in a new environment under `home`; returns the session."""
    progress("initialising the demo environment and its price history")
    environment, history = init_demo(home, db_url=db_url)
    session = Session(environment)
    schedule = demo_days(max(days, DIVIDEND[4], SPLIT[3]))
    for number, day in enumerate(demo_days(days), start=1):
        when = dt.datetime.combine(day, dt.time(15, 0), tzinfo=UTC)
        _corporate_actions(session, schedule, number, day, progress)
        _open_market(session, history, day, when)
        progress(f"day {number} ({day}): computing targets")
        run_id = compute_run(environment, day, when)
        approve_run(environment, run_id, "demo", "approved by the demo", when)
        progress(f"day {number} ({day}): trading run {run_id}")
        submit_run(session, run_id, when, what="demo")
        wait_for_fills(session, run_id, timeout=10)
        if number == 2:
            spy = to_contract(session.config.instruments["SPY"], "SPY", "")
            progress(f"day {number} ({day}): someone buys 25 SPY at the broker's own screen")
            session.exchange().external_trade(spy, Decimal(25), session.exchange().price("SPY"))
            sync_fills(environment, session.broker)
        progress(f"day {number} ({day}): closing prices, settlement and marks")
        _import_day(session, history, day)
        _settle_day(session, history, day)
    return session
