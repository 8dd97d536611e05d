"""Contract calendars: when each dated contract of a future expires, when it is rolled, and
which contract new positions go into. Pure functions of the instrument's rules and a date.

An instrument lists contract months (`expiry_months = "HMUZ"`) and one explicit *expiry rule*
that gives each contract's last trading day:

    third_friday                   third Friday of the contract month (CME equity index, Eurex FESX)
    last_friday                    last Friday of the contract month (CME Micro Bitcoin)
    day:D                          day D of the contract month (the last day if the month is shorter)
    bdays_before_month_end:N       N business days before the contract month's last business day
                                   (CBOT Treasury notes: 7)
    bdays_before_day:N:D:M         N business days before day D (or the business day before it) of
                                   the month M months from the contract month (NYMEX crude: 3:25:-1;
                                   Eurex FGBL: 2:10:0)

A day that falls on a holiday moves to the business day before. Business days are weekdays less
the exchange's holidays (`holidays`: US for CME/CBOT/NYMEX/COMEX, EU for Eurex/ICE Europe), the
fixed and Easter-based closures only; when connected to IB its contract details are the truth
(`engine/futures/contracts.py` stores them) and a difference from the rule is reported.

Physically delivered contracts have a *first notice day* (`first_notice = "prev_month_end"`: the
last business day of the month before the contract month); a long holder must be out before it,
so the roll works towards the *deadline*: first notice if there is one, else the last trading day.

The roll window, in calendar days before the deadline: from `roll_offset_days` the roll is
*passive* (reductions trade the old contract, increases the new), from `force_days` it is
*forced* (what is left of the old contract moves to the new as a calendar spread). The *current*
contract on a date, the one new positions go into and the one that is priced, is the first
whose roll window has not opened yet.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

MONTH_CODES = "FGHJKMNQUVXZ"
RULE_KINDS = ("third_friday", "last_friday", "day", "bdays_before_month_end", "bdays_before_day")
_EU_EXCHANGES = {"EUREX", "ICEEU", "ICE", "LIFFE", "MONEP", "IDEM", "MEFF"}


class CalendarError(ValueError):
    """A rule that cannot be read or applied; the message names it."""


@dataclass(frozen=True)
class ExpiryRule:
    kind: str
    n: int = 0
    day: int = 0
    month_offset: int = 0

    @property
    def spec(self) -> str:
        if self.kind == "day":
            return f"day:{self.day}"
        if self.kind == "bdays_before_month_end":
            return f"bdays_before_month_end:{self.n}"
        if self.kind == "bdays_before_day":
            return f"bdays_before_day:{self.n}:{self.day}:{self.month_offset}"
        return self.kind


def parse_rule(text: str) -> ExpiryRule:
    """`third_friday`, `last_friday`, `day:D`, `bdays_before_month_end:N`, `bdays_before_day:N:D:M`."""
    kind, *args = str(text).strip().split(":")
    try:
        numbers = [int(a) for a in args]
    except ValueError:
        raise CalendarError(f"expiry rule {text!r}: arguments must be whole numbers") from None
    expected = {"third_friday": 0, "last_friday": 0, "day": 1, "bdays_before_month_end": 1, "bdays_before_day": 3}
    if kind not in expected:
        raise CalendarError(f"expiry rule {text!r}: must be one of {', '.join(RULE_KINDS)}")
    if len(numbers) != expected[kind]:
        raise CalendarError(f"expiry rule {text!r}: {kind} takes {expected[kind]} number(s)")
    if kind == "day":
        if not 1 <= numbers[0] <= 31:
            raise CalendarError(f"expiry rule {text!r}: day must be 1..31")
        return ExpiryRule(kind, day=numbers[0])
    if kind == "bdays_before_month_end":
        if not 0 <= numbers[0] <= 20:
            raise CalendarError(f"expiry rule {text!r}: N must be 0..20")
        return ExpiryRule(kind, n=numbers[0])
    if kind == "bdays_before_day":
        n, day, offset = numbers
        if not (0 <= n <= 20 and 1 <= day <= 31 and -2 <= offset <= 1):
            raise CalendarError(f"expiry rule {text!r}: N 0..20, D 1..31, M -2..1")
        return ExpiryRule(kind, n=n, day=day, month_offset=offset)
    return ExpiryRule(kind)


# -- business days ---------------------------------------------------------------------------


def _easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (the anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month = (h + l_ - 7 * m + 114) // 31
    day = (h + l_ - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th (1-based; -1 the last) `weekday` (Mon=0) of a month."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = dt.date(year, month, _cal.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=1) if day.weekday() == 6 else day - dt.timedelta(days=1) \
        if day.weekday() == 5 else day


@lru_cache(maxsize=256)
def holidays(year: int, region: str) -> frozenset[dt.date]:
    """Full-day exchange closures of a year: US (NYSE/CME style) or EU (Eurex/ICE Europe)."""
    easter = _easter(year)
    if region == "EU":
        days = {dt.date(year, 1, 1), easter - dt.timedelta(days=2), easter + dt.timedelta(days=1),
                dt.date(year, 5, 1), dt.date(year, 12, 24), dt.date(year, 12, 25), dt.date(year, 12, 26),
                dt.date(year, 12, 31)}
    else:
        days = {_observed(dt.date(year, 1, 1)), _nth_weekday(year, 1, 0, 3), _nth_weekday(year, 2, 0, 3),
                easter - dt.timedelta(days=2), _nth_weekday(year, 5, 0, -1), _observed(dt.date(year, 6, 19)),
                _observed(dt.date(year, 7, 4)), _nth_weekday(year, 9, 0, 1), _nth_weekday(year, 11, 3, 4),
                _observed(dt.date(year, 12, 25))}
    return frozenset(d for d in days if d.year == year and d.weekday() < 5)


def region_of(exchange: str) -> str:
    return "EU" if exchange.upper() in _EU_EXCHANGES else "US"


def is_business_day(day: dt.date, region: str = "US") -> bool:
    return day.weekday() < 5 and day not in holidays(day.year, region)


def business_day_on_or_before(day: dt.date, region: str = "US") -> dt.date:
    while not is_business_day(day, region):
        day -= dt.timedelta(days=1)
    return day


def business_days_before(day: dt.date, n: int, region: str = "US") -> dt.date:
    """The business day n business days before `day` (n = 0: `day` itself if a business day)."""
    day = business_day_on_or_before(day, region)
    for _ in range(n):
        day = business_day_on_or_before(day - dt.timedelta(days=1), region)
    return day


def _shift_month(year: int, month: int, offset: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + offset
    return index // 12, index % 12 + 1


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, _cal.monthrange(year, month)[1])


def last_trading_day(rule: ExpiryRule, year: int, month: int, region: str = "US") -> dt.date:
    """The last trading day of the contract of (year, month) under `rule`."""
    if rule.kind == "third_friday":
        day = _nth_weekday(year, month, 4, 3)
    elif rule.kind == "last_friday":
        day = _nth_weekday(year, month, 4, -1)
    elif rule.kind == "day":
        day = dt.date(year, month, min(rule.day, _cal.monthrange(year, month)[1]))
    elif rule.kind == "bdays_before_month_end":
        return business_days_before(_month_end(year, month), rule.n, region)
    elif rule.kind == "bdays_before_day":
        y, m = _shift_month(year, month, rule.month_offset)
        return business_days_before(dt.date(y, m, min(rule.day, _cal.monthrange(y, m)[1])), rule.n, region)
    else:  # pragma: no cover - parse_rule refuses anything else
        raise CalendarError(f"unknown expiry rule {rule.kind}")
    return business_day_on_or_before(day, region)


def first_notice_day(kind: str, year: int, month: int, region: str = "US") -> dt.date | None:
    """`prev_month_end`: the last business day of the month before the contract month; "" : none."""
    if not kind:
        return None
    if kind != "prev_month_end":
        raise CalendarError(f"first_notice {kind!r}: must be prev_month_end or empty")
    y, m = _shift_month(year, month, -1)
    return business_day_on_or_before(_month_end(y, m), region)


# -- contracts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """What the calendar needs of an instrument (built from `config.Instrument.schedule`)."""

    root: str  # the contract code's root (commodity_root of the instrument's name)
    months: str  # month codes listed
    rule: ExpiryRule
    region: str = "US"
    roll_offset_days: int = 5  # passive roll opens this many calendar days before the deadline
    force_days: int = 1  # the calendar forces the roll this many calendar days before the deadline
    first_notice: str = ""  # "" or prev_month_end


@dataclass(frozen=True)
class ContractDates:
    """One dated contract and its calendar."""

    code: str
    year: int
    month: int
    last_trade: dt.date
    first_notice: dt.date | None
    roll_start: dt.date  # passive from this day
    force_from: dt.date  # forced from this day

    @property
    def deadline(self) -> dt.date:
        return self.first_notice or self.last_trade

    @property
    def expiry(self) -> str:
        return f"{self.year}{self.month:02d}"


def contract_code(root: str, year: int, month: int) -> str:
    return f"{root}{MONTH_CODES[month - 1]}{year % 100:02d}"


@lru_cache(maxsize=16384)
def contract_dates(schedule: Schedule, year: int, month: int, last_trade: dt.date | None = None) -> ContractDates:
    """The calendar of one contract; `last_trade` overrides the rule (IB's contract details)."""
    last = last_trade or last_trading_day(schedule.rule, year, month, schedule.region)
    notice = first_notice_day(schedule.first_notice, year, month, schedule.region)
    deadline = notice or last
    return ContractDates(contract_code(schedule.root, year, month), year, month, last, notice,
                         deadline - dt.timedelta(days=schedule.roll_offset_days),
                         deadline - dt.timedelta(days=schedule.force_days))


def chain(schedule: Schedule, start: dt.date, count: int, overrides: dict | None = None) -> list[ContractDates]:
    """`count` listed contracts in expiry order, the first being the first not yet expired on `start`
    (`overrides`: code -> last trading day, from the broker)."""
    if not overrides:
        return list(_chain_cached(schedule, start, count))
    return _chain(schedule, start, count, overrides)


@lru_cache(maxsize=16384)
def _chain_cached(schedule: Schedule, start: dt.date, count: int) -> tuple[ContractDates, ...]:
    return tuple(_chain(schedule, start, count, {}))


def _chain(schedule: Schedule, start: dt.date, count: int, overrides: dict) -> list[ContractDates]:
    result: list[ContractDates] = []
    year, month = _shift_month(start.year, start.month, -2)  # a bdays_before_day rule expires early
    for _ in range(12 * 12):
        if MONTH_CODES[month - 1] in schedule.months:
            code = contract_code(schedule.root, year, month)
            dates = contract_dates(schedule, year, month, overrides.get(code))
            if dates.last_trade >= start:
                result.append(dates)
                if len(result) == count:
                    return result
        year, month = _shift_month(year, month, 1)
    raise CalendarError(f"{schedule.root}: no contract found in its expiry calendar after {start}")


def current(schedule: Schedule, on: dt.date, overrides: dict | None = None) -> ContractDates:
    """The contract new positions go into on `on`: the first whose roll window is not open."""
    if not overrides:
        return _current_cached(schedule, on)
    return _current(schedule, on, overrides)


@lru_cache(maxsize=4096)
def _current_cached(schedule: Schedule, on: dt.date) -> ContractDates:
    return _current(schedule, on, None)


def _current(schedule: Schedule, on: dt.date, overrides: dict | None) -> ContractDates:
    for dates in chain(schedule, on, 6, overrides):
        if on < dates.roll_start:
            return dates
    raise CalendarError(f"{schedule.root}: roll windows overlap; check roll_offset_days")


def find(schedule: Schedule, code: str, overrides: dict | None = None) -> ContractDates:
    """The calendar of a contract code of this schedule."""
    month = MONTH_CODES.index(code[len(schedule.root)]) + 1
    year = 2000 + int(code[-2:])
    return contract_dates(schedule, year, month, (overrides or {}).get(code))
