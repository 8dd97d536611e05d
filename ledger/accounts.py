"""The chart of accounts, and the one-to-one mapping of user names onto beancount names.

    Assets:Broker:<Acct>:Cash                  cash per currency
    Assets:Broker:<Acct>:Strategy:<Strategy>   the strategy's contracts and shares
    Assets:Broker:<Acct>:Unattributed          positions no strategy owns
    Income:Trading:<Strategy>                  realized and variation-margin P&L (also :Unattributed)
    Expenses:Commissions:<Strategy>            commissions (also :Unattributed)
    Equity:Opening-Balances, Equity:Deposits   capital
    Income:Adjustments, Expenses:Adjustments   booked cash differences, with a reason
    Income:Dividends:<Strategy>                dividends (also :Unattributed)
    Expenses:Taxes:Withholding:<Strategy>      tax withheld from dividends
    Assets:Receivable:<Acct>:Dividends         dividends between ex-date and pay date
    Income:Interest:<Holder>, Expenses:Interest:<Holder>, Expenses:Fees:<Holder>
                                               the account's interest and fees, per strategy or
                                               unallocated (:Account)

User names (a strategy `trend_fast`, a futures root `6E`) are mapped onto valid beancount names
(`Trend-fast`, `X6E`). The mapping is injective over the names configured together: `names_map`
refuses a set where two user names would land on the same beancount name.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tradeledger.ledger.names import LedgerError, is_valid_account, is_valid_commodity

UNATTRIBUTED = "Unattributed"
_BAD = re.compile(r"[^A-Za-z0-9-]")


def account_component(user_name: str) -> str:
    """`trend_fast` -> `Trend-fast`: capital first, letters/digits/hyphens only."""
    if not user_name or not user_name.strip():
        raise LedgerError("empty name")
    text = _BAD.sub("-", user_name.strip())
    text = text[0].upper() + text[1:]
    if not text[0].isalnum():
        text = "X" + text
    if text == UNATTRIBUTED:
        raise LedgerError(f"{user_name!r} is reserved for positions no strategy owns")
    return text


@lru_cache(maxsize=4096)
def commodity_root(user_root: str) -> str:
    """A futures root or ticker as a commodity prefix: upper case, starting with a letter."""
    text = re.sub(r"[^A-Z0-9'._-]", "", user_root.strip().upper())
    if not text:
        raise LedgerError(f"{user_root!r} cannot be a commodity name")
    if not text[0].isalpha():
        text = "X" + text
    return text


def names_map(user_names: list[str], mapper=account_component) -> dict[str, str]:
    """Map every user name, refusing two that collide."""
    result: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in user_names:
        mapped = mapper(name)
        if mapped in taken and taken[mapped] != name:
            raise LedgerError(f"names {taken[mapped]!r} and {name!r} both map to {mapped!r}; rename one")
        taken[mapped] = name
        result[name] = mapped
    return result


class Chart:
    """Account names for one broker account. `strategy` arguments are already-mapped components."""

    def __init__(self, broker_account: str):
        if not is_valid_account(f"Assets:Broker:{broker_account}"):
            raise LedgerError(f"broker account id {broker_account!r} is not usable in an account name")
        self.broker_account = broker_account
        self.root = f"Assets:Broker:{broker_account}"

    @property
    def cash(self) -> str:
        return f"{self.root}:Cash"

    @property
    def unattributed(self) -> str:
        return f"{self.root}:{UNATTRIBUTED}"

    def holdings(self, strategy: str | None) -> str:
        return self.unattributed if strategy is None else f"{self.root}:Strategy:{strategy}"

    @staticmethod
    def trading(strategy: str | None) -> str:
        return f"Income:Trading:{strategy or UNATTRIBUTED}"

    @staticmethod
    def commissions(strategy: str | None) -> str:
        return f"Expenses:Commissions:{strategy or UNATTRIBUTED}"

    @staticmethod
    def dividends(strategy: str | None) -> str:
        return f"Income:Dividends:{strategy or UNATTRIBUTED}"

    @staticmethod
    def withholding(strategy: str | None) -> str:
        return f"Expenses:Taxes:Withholding:{strategy or UNATTRIBUTED}"

    @property
    def dividends_receivable(self) -> str:
        return f"Assets:Receivable:{self.broker_account}:Dividends"

    @staticmethod
    def interest_income(holder: str) -> str:
        return f"Income:Interest:{holder}"

    @staticmethod
    def interest_expense(holder: str) -> str:
        return f"Expenses:Interest:{holder}"

    @staticmethod
    def fees(holder: str) -> str:
        return f"Expenses:Fees:{holder}"

    opening_balances = "Equity:Opening-Balances"
    deposits = "Equity:Deposits"
    income_adjustments = "Income:Adjustments"
    expense_adjustments = "Expenses:Adjustments"

    def strategy_of(self, account: str) -> str | None:
        """The strategy component of a holdings/income/commission account, None for unattributed."""
        last = account.rsplit(":", 1)[-1]
        return None if last == UNATTRIBUTED else last


def contract_code(root: str, month_code: str, year: int) -> str:
    """MBT, Z, 2026 -> MBTZ26."""
    code = f"{commodity_root(root)}{month_code}{year % 100:02d}"
    if not is_valid_commodity(code):
        raise LedgerError(f"{code!r} is not a valid commodity name")
    return code
