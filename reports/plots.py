"""PNG plots of the performance and exposure reports (matplotlib's Agg backend, no display).

Every plot has a title, titled axes with the currency, and dates on the x axis; each is returned
as PNG bytes, and `data_uri` makes it embeddable, so an HTML report is one self-contained file.
"""

from __future__ import annotations

import base64
import io


class _Figures:
    """matplotlib's object API on the Agg canvas: no pyplot, no display, nothing global."""

    @staticmethod
    def subplots(rows: int = 1, cols: int = 1, figsize=(10, 4), **kwargs):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, **kwargs)
        return fig, axes


def _pyplot():
    return _Figures


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    return out.getvalue()


def _date_axis(ax, days) -> None:
    """Dates as YYYY-MM-DD, one tick per day for short spans."""
    import matplotlib.dates as mdates

    span = (max(days) - min(days)).days if days else 0
    if span <= 14:
        ax.xaxis.set_major_locator(mdates.DayLocator())
    else:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _series(perf_entry: dict, field: str):
    points = [(p["day"], p[field]) for p in perf_entry["curve"] if p[field] is not None]
    return [d for d, _ in points], [float(v) for _, v in points]


def equity_and_drawdown(perf: dict) -> bytes:
    """Cumulative P&L per strategy and in total, and each one's drawdown below its peak."""
    plt = _pyplot()
    ccy = perf["currency"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[3, 2])
    for entry in perf["strategies"] + [perf["total"]]:
        days, values = _series(entry, "cumulative")
        if days:
            top.plot(days, values, marker="." if len(days) < 30 else None, label=entry["strategy"],
                     linewidth=2.4 if entry is perf["total"] else 1.4)
        days, values = _series(entry, "drawdown_pct")
        if days:
            bottom.plot(days, values, label=entry["strategy"], linewidth=2.4 if entry is perf["total"] else 1.2)
    top.set_title(f"Equity curve: cumulative P&L per strategy and total ({ccy})")
    top.set_ylabel(f"cumulative P&L ({ccy})")
    top.axhline(0, color="grey", linewidth=0.6)
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_title("Drawdown below the running NAV peak (%)")
    bottom.set_ylabel("drawdown (% of NAV)")
    bottom.set_xlabel("date")
    bottom.grid(alpha=0.3)
    _date_axis(bottom, [p["day"] for p in perf["total"]["curve"]])
    fig.autofmt_xdate()
    return _png(fig)


def daily_bars(perf: dict) -> bytes:
    """The account's daily net P&L as bars (green up, red down)."""
    plt = _pyplot()
    ccy = perf["currency"]
    days, values = _series(perf["total"], "net")
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.bar(days, values, color=["#2a9d4b" if v >= 0 else "#c0392b" for v in values])
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_title(f"Daily P&L, whole account ({ccy}): realized + change in unrealized")
    ax.set_ylabel(f"net P&L ({ccy})")
    ax.set_xlabel("date")
    ax.grid(alpha=0.3, axis="y")
    _date_axis(ax, days)
    fig.autofmt_xdate()
    return _png(fig)


def exposure_bars(exposure: dict, on) -> bytes:
    """Net notional per instrument, stacked by strategy."""
    plt = _pyplot()
    ccy = exposure["currency"]
    instruments = sorted({r["instrument"] for r in exposure["rows"] if r["notional"] is not None})
    strategies = sorted({r["strategy"] for r in exposure["rows"] if r["notional"] is not None})
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.35 * len(instruments) + 1.2)))
    left_pos = [0.0] * len(instruments)
    left_neg = [0.0] * len(instruments)
    for strategy in strategies:
        values = []
        for name in instruments:
            values.append(sum(float(r["notional"]) for r in exposure["rows"]
                              if r["strategy"] == strategy and r["instrument"] == name and r["notional"] is not None))
        lefts = [lp if v >= 0 else ln for v, lp, ln in zip(values, left_pos, left_neg)]
        ax.barh(instruments, values, left=lefts, label=strategy)
        for i, v in enumerate(values):
            if v >= 0:
                left_pos[i] += v
            else:
                left_neg[i] += v
    ax.axvline(0, color="grey", linewidth=0.6)
    ax.set_title(f"Exposure by instrument on {on}: net notional per strategy ({ccy})")
    ax.set_xlabel(f"notional ({ccy}); short < 0 < long")
    ax.set_ylabel("instrument")
    if strategies:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)
