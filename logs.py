"""Libraries' own log lines (ib_async's "Make sure API port on TWS/IBG is open", alembic's migration
steps, apscheduler's job runs) stay out of the user's terminal: tradeledger says what failed in its
own one line. A NullHandler on the library's logger keeps Python from printing its records by the
last-resort handler, while a handler the daemon installs (its log file) still receives them;
TRADELEDGER_DEBUG=1 shows them.

Each module that imports one of these libraries quiets it as it does (broker/ib.py, ledger/db.py,
engine/ops/daemon.py), so that a command that never loads them does not import `logging` to start.
"""

from __future__ import annotations

import logging
import os


def quiet(name: str) -> None:
    """A NullHandler on library logger `name`, once; nothing with TRADELEDGER_DEBUG set."""
    if os.environ.get("TRADELEDGER_DEBUG"):
        return
    logger = logging.getLogger(name)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
