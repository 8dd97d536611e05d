"""The daily report: one self-contained HTML file per environment and date.

`daily(session, day)` gathers the day's figures from the same report functions the CLI prints
(performance, exposure, positions, fills with costs, reconciliation, exceptions); `render_html`
lays them out with the plots embedded as data URIs (no file beside it, no network);
`write_daily` writes `<env dir>/reports/daily-<date>.html` atomically.

What grows with the history is read from the nearer end: the curves resume from the stored
checkpoint (reports/series_checkpoint.py: the days after it are folded, and the first read of a
new day keeps the next one), and the positions and the NAV at the day's end are the maintained
balances less the entries after the day (`Ledger.balances`' `from_end`), for a recent day. With
`full` (TRADELEDGER_SERIES_REPLAY=full, as for the other curves) both are read from the first
entry: the oracle tests/test_daily_light.py holds these figures equal to.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import tempfile
from pathlib import Path

from tradeledger.engine.setup.session import Session
from tradeledger.reports import exposure as exposure_mod
from tradeledger.reports import performance as performance_mod
from tradeledger.reports import plots
from tradeledger.reports import trust as trust_mod
from tradeledger.ledger.numbers import jsonable as _plain


def daily(ctx: Session, day: dt.date, full: bool | None = None) -> dict:
    """Everything the daily report shows for `day` (figures up to that day's end). `full`: every
    figure from the first entry (None: as TRADELEDGER_SERIES_REPLAY says)."""
    if full is None:
        full = os.environ.get("TRADELEDGER_SERIES_REPLAY", "") == "full"
    until = day + dt.timedelta(days=1)
    perf = performance_mod.performance(ctx, None, until, checkpoints=False if full else None)
    fills = [f for f in exposure_mod.fills_with_costs(ctx, day)]
    total_day = next((p for p in perf["total"]["curve"] if p["day"] == day), None)
    positions = exposure_mod.held(ctx, day, from_end=False if full else None)
    return {
        "environment": ctx.name, "account": ctx.settings.account, "date": day,
        "currency": ctx.settings.base_currency,
        "nav": total_day["nav"] if total_day else None, "day_pnl": total_day["net"] if total_day else None,
        "performance": perf,
        "exposure": exposure_mod.exposure(ctx, day, positions, from_end=False if full else None),
        "positions": positions, "fills": fills,
        "costs": exposure_mod.costs(ctx, day, until),
        "reconciliation": trust_mod.latest_reconciliation(ctx),
        "exceptions": trust_mod.exceptions(ctx)["open"],
    }


def _cell(value) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        value = ", ".join(map(str, value)) if isinstance(value, list) else ", ".join(f"{k} {v}" for k, v in value.items())
    return html.escape(str(value))


def _table(title: str, columns: list[str], rows: list[list], empty: str = "none") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="empty">{html.escape(empty)}</td></tr>'
    return f"<h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px}td{text-align:right}td:first-child{text-align:left}
th{background:#f0f0f0}.empty{text-align:center;color:#777}img{max-width:100%;display:block;margin:8px 0 20px}
.ok{color:#2a7d3b}.bad{color:#b02a2a}"""


def render_html(data: dict) -> str:
    ccy, day = data["currency"], data["date"]
    perf = data["performance"]
    stats = [[e["strategy"], e["capital"], e["stats"]["pnl"], e["stats"]["annual_return_pct"],
              e["stats"]["annual_vol_pct"], e["stats"]["sharpe"], e["stats"]["max_drawdown"],
              e["stats"]["max_drawdown_pct"]] for e in perf["strategies"] + [perf["total"]]]
    images = []
    if perf["total"]["curve"]:
        images.append(("Equity curve and drawdown", plots.equity_and_drawdown(perf)))
        images.append(("Daily P&L", plots.daily_bars(perf)))
    if data["exposure"]["rows"]:
        images.append(("Exposure by instrument", plots.exposure_bars(data["exposure"], day)))
    recon = data["reconciliation"]
    if recon is None:
        recon_html = "<h2>Reconciliation</h2><p>never reconciled</p>"
    else:
        state = '<span class="ok">clean</span>' if recon["clean"] else f'<span class="bad">{recon["break_count"]} breaks</span>'
        recon_html = (f"<h2>Reconciliation</h2><p>latest: {html.escape(str(recon['run_at']))} UTC, {state}</p>"
                      + _table("Breaks", ["kind", "subject", "detail"],
                               [[b.get("kind"), b.get("contract") or b.get("subject"), b.get("detail")]
                                for b in recon["breaks"]])
                      + _table("Cash", ["currency", "ledger", "broker", "unsettled", "diff", "status"],
                               [[c["currency"], c["ledger"], c["broker"], c["unsettled"], c["diff"], c["status"]]
                                for c in recon["cash"]]))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tradeledger daily {day} "
        f"({html.escape(data['environment'])})</title><style>{_STYLE}</style></head><body>",
        f"<h1>tradeledger daily report: {day}</h1>",
        f"<p>environment <b>{html.escape(data['environment'])}</b>, account {html.escape(data['account'])}; "
        f"NAV <b>{_cell(data['nav'])} {ccy}</b>; P&amp;L of the day <b>{_cell(data['day_pnl'])} {ccy}</b></p>",
        _table(f"Performance to {day} ({ccy})", ["strategy", "capital", "P&L", "annual return %", "annual vol %",
                                                  "Sharpe", "max drawdown", "max drawdown %"], stats),
        f"<p>NAV moved by the strategies' P&amp;L, deposits, and the base-currency value of cash held in other "
        f"currencies (FX translation: {_cell(perf['total']['stats'].get('fx_translation'))} {ccy} over the period).</p>",
    ]
    parts += [f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{plots.data_uri(png)}'>"
              for title, png in images]
    exp = data["exposure"]
    parts.append(_table(f"Exposure on {day} ({ccy})", ["strategy", "instrument", "contracts", "qty", "notional",
                                                        "% of capital", "expected annual risk"],
                        [[r["strategy"], r["instrument"], r["contracts"], r["qty"], r["notional"], r["pct_capital"],
                          r["annual_risk"]] for r in exp["rows"]]))
    parts.append(_table(f"Positions at the end of {day}", ["strategy", "contract", "qty", "price", "currency",
                                                           f"notional ({ccy})"],
                        [[p["strategy"], p["contract"], p["qty"], p["price"], p["currency"], p["notional"]]
                         for p in data["positions"]]))
    parts.append(_table(f"Fills on {day}", ["time", "strategy", "contract", "side", "qty", "price", "reference",
                                            "slippage", "slippage bps", "commission", "currency"],
                        [[f["time"][11:19], ", ".join(p["strategy"] for p in f["strategies"]), f["contract"], f["side"],
                          f["quantity"], f["price"], f["reference"], f["slippage"], f["slippage_bps"],
                          f["commission"], f["currency"]] for f in data["fills"]], "no fills"))
    parts.append(_table(f"Costs on {day} ({ccy})", ["strategy", "fills", "slippage", "slippage bps", "commissions",
                                                    "commission bps"],
                        [[r["strategy"], r["fills"], r["slippage"], r["slippage_bps"], r["commissions"],
                          r["commission_bps"]] for r in data["costs"]["rows"]], "no fills"))
    parts.append(recon_html)
    parts.append(_table("Open exceptions", ["id", "kind", "severity", "subject", "detail", "since", "state"],
                        [[e["id"], e["kind"], e["severity"], e["subject"], e["detail"], e["first_seen"][:19], e["state"]]
                         for e in data["exceptions"]], "no open exceptions"))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def report_path(ctx: Session, day: dt.date) -> Path:
    return ctx.dir / "reports" / f"daily-{day.isoformat()}.html"


def write_daily(ctx: Session, day: dt.date, path: Path | None = None) -> tuple[Path, dict]:
    """Write the day's report atomically; returns (path, the data it shows)."""
    data = daily(ctx, day)
    text = render_html(data)
    path = Path(path) if path else report_path(ctx, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, data
