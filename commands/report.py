"""Reports: `report nav|performance|exposure|costs|daily`, each a table, `--json` or `--csv`.

The figures come from reports/ (the same functions the daily HTML report and the Fava pages use).
"""

from __future__ import annotations

import click
from tradeledger.commands.common import Invocation, json_option, pass_ctx, parse_date
from tradeledger.reports.render import csv_enabled, emit_csv, emit_json, table

since_option = click.option("--since", default=None, help="From this date (YYYY-MM-DD), inclusive.")
until_option = click.option("--until", default=None, help="Up to this date (YYYY-MM-DD), exclusive.")


def _out(data, rows, columns, title, as_json, as_csv=None, optional=()):
    """JSON (exact), CSV (exact decimals, one row per record) or a table (`optional`: the columns a
    narrow terminal leaves out first)."""
    as_csv = csv_enabled() if as_csv is None else as_csv
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    if as_json:
        emit_json(data)
    elif as_csv:
        emit_csv(rows, columns)
    else:
        table(title, columns, [[row.get(c) for c in columns] for row in rows], optional=optional)


@click.group("report")
def report_group():
    """NAV, performance, exposure, costs and the daily HTML report."""


@report_group.command("nav")
@click.option("--date", "day", default=None, help="At the end of this day (default: now).")
@json_option
@pass_ctx
def report_nav(c: Invocation, day, as_json):
    """The account's NAV: cash, shares at market, futures' unsettled margin, in the base currency."""
    from tradeledger.engine.accounting.valuation import nav

    ctx = c.open()
    value = nav(ctx, ctx.config, parse_date(day, "--date"))
    rows = [{"part": part, "currency": ccy, "amount": amount}
            for part in ("cash", "shares", "futures", "deposits") for ccy, amount in sorted(getattr(value, part).items())]
    rows.append({"part": "NAV", "currency": value.currency, "amount": value.total})
    _out(value.as_json(), rows, ["part", "currency", "amount"], f"NAV ({value.currency})", as_json)
    if value.missing_fx:
        click.echo(f"warning: no FX rate for {', '.join(value.missing_fx)}: NAV unknown", err=True)


@report_group.command("performance")
@since_option
@until_option
@json_option
@pass_ctx
def report_performance(c: Invocation, since, until, as_json):
    """Per strategy and in total: P&L, annualised return, volatility, Sharpe, max drawdown (CSV: the daily curves)."""
    from tradeledger.reports.series_fast import quick_performance

    since, until = parse_date(since, "--since"), parse_date(until, "--until")
    data = quick_performance(c.home, c.env, c.db_url, since, until)  # resumed without SQLAlchemy, or None
    if data is None:
        from tradeledger.reports.performance import performance

        data = performance(c.open(), since, until)
    entries = data["strategies"] + [data["total"]]
    if csv_enabled():
        rows = [{"strategy": e["strategy"], **p} for e in entries for p in e["curve"]]
        _out(data, rows, ["strategy", "day", "net", "cumulative", "nav", "drawdown", "drawdown_pct"], "", False, True)
        return
    rows = [{"strategy": e["strategy"], "capital": e["capital"], **e["stats"]} for e in entries]
    _out(data, rows, ["strategy", "capital", "days", "pnl", "annual_return_pct", "annual_vol_pct", "sharpe",
                      "max_drawdown", "max_drawdown_pct"], f"performance ({data['currency']})", as_json,
         optional=("days", "max_drawdown_pct", "capital"))


@report_group.command("exposure")
@click.option("--date", "day", default=None, help="At the end of this day (default: now).")
@json_option
@pass_ctx
def report_exposure(c: Invocation, day, as_json):
    """Notional per strategy and instrument in the base currency, % of capital, expected annual risk."""
    from tradeledger.reports.exposure import exposure

    data = exposure(c.open(), parse_date(day, "--date"))
    _out(data, data["rows"], ["strategy", "instrument", "contracts", "qty", "notional", "pct_capital", "annual_risk"],
         f"exposure ({data['currency']}; NAV {data['nav']})", as_json)


@report_group.command("costs")
@since_option
@until_option
@click.option("--fills", "per_fill", is_flag=True, help="One row per fill instead of per strategy.")
@json_option
@pass_ctx
def report_costs(c: Invocation, since, until, per_fill, as_json):
    """Slippage against the run's reference price and commissions, per strategy, in money and bps."""
    from tradeledger.reports.exposure import costs, fills_with_costs

    ctx = c.open()
    since, until = parse_date(since, "--since"), parse_date(until, "--until")
    if per_fill:
        rows = [f for f in fills_with_costs(ctx)
                if (since is None or f["time"][:10] >= since.isoformat())
                and (until is None or f["time"][:10] < until.isoformat())]
        _out(rows, rows, ["time", "fill_id", "contract", "side", "quantity", "price", "reference", "slippage",
                          "slippage_bps", "commission", "currency"], "fills with costs", as_json)
        return
    data = costs(ctx, since, until)
    _out(data, data["rows"], ["strategy", "fills", "notional", "slippage", "slippage_bps", "commissions",
                              "commission_bps", "pending_commissions"], f"costs ({data['currency']})", as_json)


@report_group.command("daily")
@click.option("--date", "day", default=None, help="The report's date (default: today by the ctx's clock).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of <env>/reports/daily-<date>.html.")
@json_option
@pass_ctx
def report_daily(c: Invocation, day, out, as_json):
    """Write the day's self-contained HTML report (plots, positions, fills, reconciliation, exceptions)."""
    from tradeledger.reports.daily import write_daily

    ctx = c.open()
    day = parse_date(day, "--date") or ctx.now().date()
    path, data = write_daily(ctx, day, out)
    if as_json:
        emit_json({"path": str(path), **data})
    elif csv_enabled():
        emit_csv([{"strategy": e["strategy"], **p} for e in data["performance"]["strategies"]
                  + [data["performance"]["total"]] for p in e["curve"] if p["day"] == day],
                 ["strategy", "day", "net", "cumulative", "nav", "drawdown", "drawdown_pct"])
    else:
        click.echo(f"wrote {path}: NAV {data['nav']} {data['currency']}, P&L of {day} {data['day_pnl']}, "
                   f"{len(data['fills'])} fills, {len(data['exceptions'])} open exceptions")


COMMANDS = [report_group]
