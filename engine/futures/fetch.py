"""Prices and contract dates from the broker: `tradeledger data fetch` and the daemon's data job.

Daily bars per contract. For each configured instrument (or those named) the broker is asked
for the daily bars of the last `days` days (IB: `reqHistoricalData`, "1 day" TRADES bars; the
embedded broker and the simulated gateway answer from the simulated exchange's prices, a
settlement being its day's last price):

* a future: every contract whose closes matter on the day -- the one being rolled out of while it
  still trades, the priced (current) one, the next ones carry reads (`carry_offset`), and any
  contract still held -- stored as contract closes (`contract_bar`, the table `data import` writes
  from `date,contract,close`), from which the back-adjusted series and carry are read;
* a share: its daily closes (`price_bar`, as `date,instrument,close`).

The rows go through the same store as an import (`prices.store_rows`), in one transaction, with
`replace=True`: the broker's latest bar is the truth (today's bar may still move), so a rerun
stores nothing new (`unchanged`) and a revised bar replaces the stored one (`replaced`).

Contract dates (`refresh_contract_details`). For each configured future the broker lists its
contracts (IB: one `reqContractDetails` per instrument, without a month, returns every listed
contract with `lastTradeDateOrContractMonth` and `realExpirationDate`). They are stored by
`status.store_contract_details`: from then on the broker's last trading day is the truth for the
calendar, and a difference from the rule is raised as a `contract_dates_differ` exception and
returned as a line. A broker that gives no day (the embedded one, unless its exchange was given
dates) leaves the rule in force.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from tradeledger.engine.context import Context
from tradeledger.broker.base import BrokerError, Contract
from tradeledger.engine.futures import calendar as cal
from tradeledger.engine.futures.state import old_and_new, overrides
from tradeledger.engine.futures.status import store_contract_details
from tradeledger.engine.setup.config import Instrument, TradingConfig, contract_of_code, instrument_of_contract
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.engine.targets import prices
from tradeledger.errors import UnknownName
from tradeledger.ledger.db import read_connection

DEFAULT_DAYS = 5


@dataclass
class FetchReport:
    """What a fetch did: rows per kind (inserted, unchanged, replaced) and what the broker lacked."""

    contracts: list[str] = field(default_factory=list)  # codes asked for
    bars: int = 0
    inserted: int = 0
    unchanged: int = 0
    replaced: int = 0
    missing: list[str] = field(default_factory=list)  # "CODE: why" for contracts without bars
    differences: list[str] = field(default_factory=list)  # contract dates that differ from the rule

    def as_json(self) -> dict:
        return {"contracts": self.contracts, "bars": self.bars, "inserted": self.inserted,
                "unchanged": self.unchanged, "replaced": self.replaced, "missing": self.missing,
                "differences": self.differences}

    def __str__(self) -> str:
        text = (f"{self.bars} bars of {len(self.contracts)} contracts: {self.inserted} new, "
                f"{self.unchanged} unchanged, {self.replaced} replaced")
        if self.missing:
            text += f"; no bars for {', '.join(m.split(':')[0] for m in self.missing)}"
        if self.differences:
            text += f"; {len(self.differences)} contract date(s) differ from the rule"
        return text


def selected(config: TradingConfig, names) -> list[Instrument]:
    """The instruments named (all configured ones when none are), unknown names refused."""
    names = list(names or [])
    unknown = [n for n in names if n not in config.instruments]
    if unknown:
        raise UnknownName("instrument", unknown[0], config.instruments)
    return [config.instruments[n] for n in (names or sorted(config.instruments))]


def codes_to_price(instrument: Instrument, on: dt.date, held: set[str], known: dict | None = None) -> list[str]:
    """The contracts of a future whose closes matter on `on` (pure): the old one while it trades,
    the current one, the next `carry_offset` ones, and those still held that have not expired."""
    old, current = old_and_new(instrument, on, known)
    later = cal.chain(instrument.schedule, current.last_trade + dt.timedelta(days=1), instrument.carry_offset, known)
    codes = ([old.code] if old else []) + [current.code] + [d.code for d in later]
    for code in sorted(held):
        if code not in codes and cal.find(instrument.schedule, code, known).last_trade >= on:
            codes.append(code)
    return codes


def _held_codes(ctx: Context, config: TradingConfig) -> dict[str, set[str]]:
    """instrument -> contract codes held by anyone (the ledger's positions)."""
    result: dict[str, set[str]] = {}
    for (_account, code), units in ctx.ledger.positions(prefix=ctx.chart.root).items():
        instrument = instrument_of_contract(config, code)
        if units and instrument is not None and instrument.is_future:
            result.setdefault(instrument.name, set()).add(code)
    return result


def refresh_contract_details(session, names=(), now: dt.datetime | None = None) -> list[str]:
    """Ask the broker for the listed contracts of each configured future (or those named) and
    store their dates; returns the differences from the rule, one line each."""
    config = session.config
    rows = []
    for instrument in selected(config, names):
        if not instrument.is_future:
            continue
        pattern = Contract(instrument.name, "FUT", instrument.ib_symbol, instrument.exchange, instrument.currency,
                           instrument.multiplier, "", instrument.trading_class)
        for listed in session.broker.listed_contracts(pattern):
            code = listed.contract.code
            if not listed.last_trade_date or instrument_of_contract(config, code) is not instrument \
                    or code[-3] not in instrument.expiry_months:
                continue
            rows.append({"instrument": instrument.name, "code": code, "last_trade_date": listed.last_trade_date,
                         "real_expiration": listed.real_expiration, "con_id": listed.contract.con_id or None})
    return store_contract_details(session, rows, now=now) if rows else []


def fetch_bars(session, names=(), days: int = DEFAULT_DAYS, on: dt.date | None = None,
               details: bool = True, now: dt.datetime | None = None) -> FetchReport:
    """`tradeledger data fetch`: the broker's contract dates (when `details`), then the daily bars
    of every contract that matters on `on` (default: the session's today), stored (see above)."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"--days must be a whole number of days >= 1, not {days!r}")
    env, config = session, session.config
    now = now or session.now()
    on = on or now.date()
    report = FetchReport()
    instruments = selected(config, names)
    if details and any(i.is_future for i in instruments):
        report.differences = refresh_contract_details(session, [i.name for i in instruments], now)
    with read_connection(env.engine) as conn:
        known = overrides(conn)
    held = _held_codes(env, config)
    closes: list[prices.PriceRow] = []
    shares: list[prices.PriceRow] = []
    for instrument in instruments:
        if instrument.is_future:
            wanted = [(code, contract_of_code(instrument, code))
                      for code in codes_to_price(instrument, on, held.get(instrument.name, set()), known)]
        else:
            wanted = [(instrument.name, contract_of_code(instrument, instrument.name))]
        for code, contract in wanted:
            report.contracts.append(code)
            try:
                bars = session.broker.daily_bars(contract, days)
            except BrokerError as exc:
                report.missing.append(f"{code}: {exc}")
                continue
            bars = [b for b in bars if b.date <= on]
            if not bars:
                report.missing.append(f"{code}: the broker has no bars in the last {days} days")
            report.bars += len(bars)
            target = closes if instrument.is_future else shares
            target += [prices.PriceRow(0, b.date, code, b.close) for b in bars]
    for kind, rows in (("contract_close", closes), ("price", shares)):
        if rows:
            stored = prices.store_rows(session, prices.ParsedImport(kind, tuple(rows)), "broker bars", replace=True)
            report.inserted += stored.inserted
            report.unchanged += stored.unchanged
            report.replaced += stored.replaced
    return report


def contracts_with_refresh(session, name: str, on: dt.date, count: int, refresh: bool
                           ) -> tuple[list[dict], list[str]]:
    """`instruments contracts [--refresh]`: the listed contracts (status.contracts), after asking
    the broker for their dates when `refresh`; returns (rows, differences from the rule)."""
    from tradeledger.engine.futures.status import contracts

    differences = refresh_contract_details(session, [name]) if refresh else []
    return contracts(session, name, on, count), differences
