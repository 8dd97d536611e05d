"""What a valid account and commodity name is, as beancount defines it, and the error the ledger
refuses with: apart from the records (ledger/model.py) so that a command that only maps user names
onto the chart of accounts (ledger/accounts.py: the read commands) does not build them to start.
ledger/model.py re-exports all of it.
"""

from __future__ import annotations

import re

from tradeledger.errors import UserError

ACCOUNT_TYPES = ("Assets", "Liabilities", "Equity", "Income", "Expenses")
_COMPONENT = re.compile(r"^[A-Z0-9][A-Za-z0-9-]*$")
_COMMODITY = re.compile(r"^[A-Z][A-Z0-9'._-]{0,22}[A-Z0-9]$|^[A-Z]$")


class LedgerError(UserError):
    """An entry or request the ledger refuses; the message says why."""


def is_valid_account(name: str) -> bool:
    parts = name.split(":")
    return len(parts) >= 2 and parts[0] in ACCOUNT_TYPES and all(_COMPONENT.match(p) for p in parts[1:])


def is_valid_commodity(name: str) -> bool:
    return bool(_COMMODITY.match(name))
