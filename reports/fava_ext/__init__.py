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

from tradeledger.ledger.db import read_connection

DB_URL_VARIABLE = "TRADELEDGER_FAVA_DB_URL"  # `tradeledger fava --db-url` passes it this way, never in the file


def money(value) -> str:
    """Decimals as the CLI prints them, None as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


class _Pages:
    """Opens the configured environment once; every page reads through it."""

    _session = None

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

    def arg(self, name: str, default=None):
        return request.args.get(name, default)


class TradeledgerTargets(_Pages, FavaExtensionBase):
    """Target runs, and one run's lines with every figure they were sized from."""

    report_title = "Targets"

    def runs(self):
        from tradeledger.engine.targets.runs import list_runs

        return sorted(list_runs(self.session().env, self.session().now()), key=lambda r: -r.id)  # newest first

    def run(self):
        from tradeledger.engine.targets.runs import show_run

        runs = self.runs()
        if not runs:
            return None
        wanted = self.arg("run")
        run_id = int(wanted) if wanted and wanted.isdigit() else runs[0].id
        return show_run(self.session().env, run_id, self.session().now())


class TradeledgerOrders(_Pages, FavaExtensionBase):
    """The blotter: orders, and every fill with its reference price, slippage and commission."""

    report_title = "Orders and fills"

    def orders(self):
        from tradeledger.engine.trading.orders import list_orders

        with read_connection(self.session().env.engine) as conn:
            return list(reversed(list_orders(conn)))

    def fills(self):
        from tradeledger.reports.exposure import fills_with_costs

        return list(reversed(fills_with_costs(self.session())))

    def costs(self):
        from tradeledger.reports.exposure import costs

        return costs(self.session())


class TradeledgerReconciliation(_Pages, FavaExtensionBase):
    """The latest reconciliation: breaks, cash per currency, unattributed positions; the history."""

    report_title = "Reconciliation"

    def latest(self):
        from tradeledger.reports.trust import latest_reconciliation

        return latest_reconciliation(self.session().env)


class TradeledgerExceptions(_Pages, FavaExtensionBase):
    """Open exceptions, locks, and the whole history."""

    report_title = "Exceptions"

    def exceptions(self):
        from tradeledger.reports.trust import exceptions

        return exceptions(self.session().env)


class TradeledgerStrategies(_Pages, FavaExtensionBase):
    """Per strategy: P&L, NAV, drawdown, return, volatility, Sharpe; the curves as plots; exposure."""

    report_title = "Strategies"

    def performance(self):
        from tradeledger.reports.performance import performance

        return performance(self.session())

    def exposure(self):
        from tradeledger.reports.exposure import exposure

        return exposure(self.session())

    def plots(self, perf, exposure) -> list[tuple[str, str]]:
        from tradeledger.reports import plots

        out = []
        if perf["total"]["curve"]:
            out.append(("P&L curves and drawdown", plots.data_uri(plots.equity_and_drawdown(perf))))
            out.append(("Daily P&L", plots.data_uri(plots.daily_bars(perf))))
        if exposure["rows"]:
            on = exposure["on"] or "the latest prices"
            out.append(("Exposure by instrument", plots.data_uri(plots.exposure_bars(exposure, on))))
        return out
