"""tradeledger's pages inside Fava: Targets, Orders and fills, Reconciliation, Exceptions, Strategies.

The export names this module in a `custom "fava-extension"` directive whose config gives the
environment (`{'home': ..., 'env': ...}`); each page class opens that environment (its config,
its database) and renders a template of its own from the same report functions the CLI prints
(reports/ and the engine's list functions). Nothing is written: the pages only read.

Fava collects every subclass of FavaExtensionBase in this module, so the shared behaviour is a
plain mixin, and each page is `class X(_Pages, FavaExtensionBase)` with its `report_title`.
"""

from __future__ import annotations

import os
from decimal import Decimal

from fava.ext import FavaExtensionBase
from flask import request

from tradeledger.engine.context import Context
from tradeledger.ledger.db import read_connection

ROWS_SHOWN = 500  # the blotter shows the newest orders and fills; `orders list`, `report costs --fills` have all
DB_URL_VARIABLE = "TRADELEDGER_FAVA_DB_URL"  # `tradeledger fava --db-url` passes it this way, never in the file


def money(value) -> str:
    """Decimals as the CLI prints them, None as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def fingerprint(ctx: Context) -> tuple:
    """What the pages' figures depend on, read cheaply: entries, prices, runs, orders, fills, checks."""
    import sqlalchemy as sa

    from tradeledger.engine import tables

    with read_connection(ctx.engine) as conn:
        parts = [ctx.ledger.entries_mark(conn)]
        parts += [conn.execute(sa.select(sa.func.max(t.c.id), sa.func.count())).one()
                  for t in (tables.target_run, tables.broker_order, tables.fill, tables.reconciliation,
                           tables.tl_exception)]
        parts += [conn.execute(sa.select(sa.func.max(t.c.date), sa.func.count())).one()
                  for t in (tables.price_bar, tables.settlement, tables.fx_rate)]
        parts.append(conn.execute(sa.select(sa.func.max(tables.tl_exception.c.last_seen))).scalar())
    return tuple(tuple(p) if isinstance(p, sa.Row) else p for p in parts)


class _Pages:
    """Opens the configured environment once; every page reads through it. Figures that take a
    while (a year of daily P&L, the plots) are kept until the database's fingerprint changes."""

    _session = None
    _cache: dict | None = None

    def session(self):
        if self._session is None:
            from tradeledger.engine.setup.environment import open_environment
            from tradeledger.engine.setup.session import Session

            config = self.config or {}
            env = open_environment(config.get("home"), config.get("env", "paper"), os.environ.get(DB_URL_VARIABLE))
            self._session = Session(env)
        return self._session

    def money(self, value) -> str:
        return money(value)

    def cached(self, name: str, compute):
        import threading

        if self._cache is None:
            self._cache, self._lock = {}, threading.Lock()
        with self._lock:
            key = fingerprint(self.session())
            hit = self._cache.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
            value = compute()
            self._cache[name] = (key, value)
            return value

    def arg(self, name: str, default=None):
        return request.args.get(name, default)

    def warm(self) -> None:
        """Work out what the page keeps (see `cached`); nothing by default."""

    def after_load_file(self) -> None:
        """Fava (re)loaded the export: work the kept figures out now, so the page is ready when opened."""
        import threading

        def warm():
            try:
                self.warm()
            except Exception:  # the page itself shows the error when it is opened
                pass

        threading.Thread(target=warm, name=f"tradeledger-warm-{self.name}", daemon=True).start()


class TradeledgerTargets(_Pages, FavaExtensionBase):
    """Target runs, and one run's lines with every figure they were sized from."""

    report_title = "Targets"

    def runs(self):
        from tradeledger.engine.targets.runs import list_runs

        return sorted(list_runs(self.session(), self.session().now()), key=lambda r: -r.id)  # newest first

    def run(self):
        from tradeledger.engine.targets.runs import show_run

        runs = self.runs()
        if not runs:
            return None
        wanted = self.arg("run")
        run_id = int(wanted) if wanted and wanted.isdigit() else runs[0].id
        return show_run(self.session(), run_id, self.session().now())


class TradeledgerOrders(_Pages, FavaExtensionBase):
    """The blotter: orders, and every fill with its reference price, slippage and commission."""

    report_title = "Orders and fills"

    def orders(self):
        from tradeledger.engine.trading.orders import list_orders

        with read_connection(self.session().engine) as conn:
            return list(reversed(list_orders(conn)))[:ROWS_SHOWN]

    def fills(self):
        from tradeledger.reports.exposure import fills_with_costs

        return list(reversed(fills_with_costs(self.session(), limit=ROWS_SHOWN)))

    def costs(self):
        from tradeledger.reports.exposure import costs

        return self.cached("costs", lambda: costs(self.session()))

    def warm(self) -> None:
        self.costs()


class TradeledgerReconciliation(_Pages, FavaExtensionBase):
    """The latest reconciliation: breaks, cash per currency, unattributed positions; the history."""

    report_title = "Reconciliation"

    def latest(self):
        from tradeledger.reports.trust import latest_reconciliation

        return latest_reconciliation(self.session())


class TradeledgerExceptions(_Pages, FavaExtensionBase):
    """Open exceptions, locks, and the whole history."""

    report_title = "Exceptions"

    def exceptions(self):
        from tradeledger.reports.trust import exceptions

        return exceptions(self.session())


class TradeledgerStrategies(_Pages, FavaExtensionBase):
    """Per strategy: P&L, NAV, drawdown, return, volatility, Sharpe; the curves as plots; exposure."""

    report_title = "Strategies"

    def figures(self) -> dict:
        """Performance, exposure and their plots (kept while the database is unchanged)."""
        return self.cached("strategies", self._figures)

    def _figures(self) -> dict:
        from tradeledger.reports import plots
        from tradeledger.reports.exposure import exposure
        from tradeledger.reports.performance import performance

        perf, exp = performance(self.session()), exposure(self.session())
        images = []
        if perf["total"]["curve"]:
            images.append(("P&L curves and drawdown", plots.data_uri(plots.equity_and_drawdown(perf))))
            images.append(("Daily P&L", plots.data_uri(plots.daily_bars(perf))))
        if exp["rows"]:
            images.append(("Exposure by instrument", plots.data_uri(plots.exposure_bars(exp, exp["on"] or "the latest prices"))))
        return {"performance": perf, "exposure": exp, "plots": images}

    def warm(self) -> None:
        self.figures()
